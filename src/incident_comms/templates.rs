//! `[templates]`: the words of an incident's messages, in the team's own
//! runbook form. Each message has a default; `[templates]` replaces it for
//! every service and `[templates.services.NAME]` for one service.
//! Placeholders are `{name}` and are filled in one pass by
//! [`crate::backend::fill`], so a value (a reason someone typed) is never
//! read as a template. `check-config` reports an unknown placeholder at its
//! line and column, with the closest known name.

use crate::config::{closest, find_span, ConfigError};
use crate::config_file::Config;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use toml::Spanned;

/// One message written from a template.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Template {
    /// The incident's first message in the incident channel (its root).
    IncidentOpened,
    /// The thread update once the rollback is made and verified.
    RollbackComplete,
    /// The status page incident's name.
    StatusPageTitle,
    /// The status page incident's first body (Identified).
    StatusPageOpened,
    /// The status page update after the rollback (Monitoring).
    StatusPageMonitoring,
    /// The status page update when the service is back (Resolved).
    StatusPageResolved,
}

/// Known in every template.
pub const COMMON: &[&str] = &[
    "service",
    "from_version",
    "to_version",
    "verdict",
    "evidence",
    "impact",
    "actor",
    "reason",
    "incident_id",
    "since_start",
];

impl Template {
    pub const ALL: [Template; 6] = [
        Template::IncidentOpened,
        Template::RollbackComplete,
        Template::StatusPageTitle,
        Template::StatusPageOpened,
        Template::StatusPageMonitoring,
        Template::StatusPageResolved,
    ];

    /// Its key under `[templates]`.
    pub fn key(self) -> &'static str {
        match self {
            Template::IncidentOpened => "incident_opened",
            Template::RollbackComplete => "rollback_complete",
            Template::StatusPageTitle => "status_page_title",
            Template::StatusPageOpened => "status_page_opened",
            Template::StatusPageMonitoring => "status_page_monitoring",
            Template::StatusPageResolved => "status_page_resolved",
        }
    }

    /// Placeholders known only here: what is watched exists once the
    /// rollback is made, what was measured once the service is back.
    fn extra(self) -> &'static [&'static str] {
        match self {
            Template::RollbackComplete | Template::StatusPageMonitoring => &["watching"],
            Template::StatusPageResolved => &["recovery"],
            _ => &[],
        }
    }

    /// Every placeholder this template may use.
    pub fn placeholders(self) -> Vec<&'static str> {
        COMMON.iter().chain(self.extra()).copied().collect()
    }

    /// The runbook's wording: Initial incident (impact, preliminary root
    /// cause, next steps), Rollback complete (what was rolled back,
    /// verification, what happens next), and plain words for customers.
    pub fn default_text(self) -> &'static str {
        match self {
            Template::IncidentOpened => "Impact: {impact}.\n\
                Preliminary root cause: {service} {from_version} (the canary) was judged {verdict}: {evidence}.\n\
                Next steps: roll {service} back to {to_version}, then watch it until it is back at the baseline's level. Incident {incident_id}, {since_start} after the rollout started.",
            Template::RollbackComplete => "Rolled back: {service} {from_version} → {to_version} by {actor} ({reason}).\n\
                Verification: the backend confirmed that {to_version} serves again.\n\
                Next: monitoring until {watching}; this incident is resolved when that holds.",
            Template::StatusPageTitle => "{service} degraded after a change",
            Template::StatusPageOpened => "We identified the cause of degraded {service}: a change we are rolling back. Next update when the rollback is complete.",
            Template::StatusPageMonitoring => "The change to {service} was rolled back. We are monitoring until {watching}.",
            Template::StatusPageResolved => "{service} has recovered: {recovery}.",
        }
    }
}

/// The six keys, optional, for all services or for one.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateSet {
    pub incident_opened: Option<Spanned<String>>,
    pub rollback_complete: Option<Spanned<String>>,
    pub status_page_title: Option<Spanned<String>>,
    pub status_page_opened: Option<Spanned<String>>,
    pub status_page_monitoring: Option<Spanned<String>>,
    pub status_page_resolved: Option<Spanned<String>>,
}

impl TemplateSet {
    fn get(&self, t: Template) -> Option<&Spanned<String>> {
        match t {
            Template::IncidentOpened => self.incident_opened.as_ref(),
            Template::RollbackComplete => self.rollback_complete.as_ref(),
            Template::StatusPageTitle => self.status_page_title.as_ref(),
            Template::StatusPageOpened => self.status_page_opened.as_ref(),
            Template::StatusPageMonitoring => self.status_page_monitoring.as_ref(),
            Template::StatusPageResolved => self.status_page_resolved.as_ref(),
        }
    }
}

/// `[templates]`: the same keys as [`TemplateSet`] (written flat, since
/// serde's `flatten` does not combine with `deny_unknown_fields`) and
/// `[templates.services.NAME]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplatesConfig {
    pub incident_opened: Option<Spanned<String>>,
    pub rollback_complete: Option<Spanned<String>>,
    pub status_page_title: Option<Spanned<String>>,
    pub status_page_opened: Option<Spanned<String>>,
    pub status_page_monitoring: Option<Spanned<String>>,
    pub status_page_resolved: Option<Spanned<String>>,
    #[serde(default)]
    pub services: BTreeMap<String, TemplateSet>,
}

impl TemplatesConfig {
    fn get(&self, t: Template) -> Option<&Spanned<String>> {
        match t {
            Template::IncidentOpened => self.incident_opened.as_ref(),
            Template::RollbackComplete => self.rollback_complete.as_ref(),
            Template::StatusPageTitle => self.status_page_title.as_ref(),
            Template::StatusPageOpened => self.status_page_opened.as_ref(),
            Template::StatusPageMonitoring => self.status_page_monitoring.as_ref(),
            Template::StatusPageResolved => self.status_page_resolved.as_ref(),
        }
    }

    /// The template `service` uses for `t`: its own, else the common one,
    /// else the default.
    pub fn text(&self, service: &str, t: Template) -> &str {
        self.services
            .get(service)
            .and_then(|s| s.get(t))
            .or_else(|| self.get(t))
            .map(|s| s.get_ref().as_str())
            .unwrap_or_else(|| t.default_text())
    }

    /// `t` for `service`, filled with `values`.
    pub fn render(&self, service: &str, t: Template, values: &[(&str, String)]) -> String {
        let v: Vec<(&str, &str)> = values.iter().map(|(n, v)| (*n, v.as_str())).collect();
        crate::backend::fill(self.text(service, t), &v)
    }
}

/// The `{name}` placeholders of a template, with their byte offsets:
/// braces around a name of letters, digits and `_`. Anything else in
/// braces (a JSON example, `{ }`) is text and stays as written.
pub fn placeholders_in(text: &str) -> Vec<(usize, &str)> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(open) = text[from..].find('{').map(|i| i + from) {
        let rest = &text[open + 1..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if end > 0 && rest[end..].starts_with('}') {
            found.push((open, &rest[..end]));
        }
        from = open + 1;
    }
    found
}

/// Unknown placeholders in `[templates]` and `[templates.services.*]`,
/// each at its own line and column, and services that do not exist.
pub fn check(config: &Config, path: &Path, source: &str) -> Vec<ConfigError> {
    let t = &config.templates;
    let mut errors = Vec::new();
    for kind in Template::ALL {
        if let Some(s) = t.get(kind) {
            errors.extend(check_one(kind, s, "templates", path, source));
        }
    }
    let names = config.service_names();
    for (svc, set) in &t.services {
        let section = format!("templates.services.{svc}");
        if config.service(svc).is_none() {
            let e = ConfigError::at(
                path,
                source,
                find_span(source, &section).or(find_span(source, "templates")),
                format!("[{section}] names service `{svc}`, which is not defined"),
            );
            errors.push(match closest(svc, names.iter().copied()).first() {
                Some(n) => e.help(format!("did you mean `{n}`?")),
                None => e.help(format!("known services: {}", names.join(", "))),
            });
        }
        for kind in Template::ALL {
            if let Some(s) = set.get(kind) {
                errors.extend(check_one(kind, s, &section, path, source));
            }
        }
    }
    errors
}

fn check_one(
    kind: Template,
    value: &Spanned<String>,
    section: &str,
    path: &Path,
    source: &str,
) -> Vec<ConfigError> {
    let known = kind.placeholders();
    // Positions are looked up in the file as written (escapes and all),
    // so the column is the placeholder's, not the string's.
    let span = value.span();
    let raw = source.get(span.clone()).unwrap_or("");
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    let mut errors = Vec::new();
    for (_, name) in placeholders_in(value.get_ref()) {
        let nth = seen.entry(name).or_default();
        *nth += 1;
        if known.contains(&name) {
            continue;
        }
        let needle = format!("{{{name}}}");
        let at = raw
            .match_indices(&needle)
            .nth(*nth - 1)
            .map(|(i, _)| span.start + i..span.start + i + needle.len())
            .unwrap_or(span.clone());
        let e = ConfigError::at(
            path,
            source,
            Some(at),
            format!("[{section}] {}: unknown placeholder {needle}", kind.key()),
        );
        let elsewhere: Vec<&str> = Template::ALL
            .iter()
            .filter(|t| t.extra().contains(&name))
            .map(|t| t.key())
            .collect();
        errors.push(match closest(name, known.iter().copied()).first() {
            _ if !elsewhere.is_empty() => e.help(format!(
                "{needle} is known only in {}; here: {}",
                elsewhere.join(", "),
                braced(&known)
            )),
            Some(n) => e.help(format!(
                "did you mean {{{n}}}? Known here: {}",
                braced(&known)
            )),
            None => e.help(format!("known here: {}", braced(&known))),
        });
    }
    errors
}

fn braced(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("{{{n}}}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config_file::parse_errors as errors;

    const BASE: &str = r#"
[backends.sim]
type = "simulated"

[[services]]
name = "checkout"
backend = "sim"
"#;

    #[test]
    fn every_default_uses_only_its_own_placeholders() {
        for t in Template::ALL {
            for (_, name) in placeholders_in(t.default_text()) {
                assert!(t.placeholders().contains(&name), "{} uses {name}", t.key());
            }
        }
    }

    #[test]
    fn placeholders_are_names_in_braces_and_other_braces_are_text() {
        let found: Vec<&str> = placeholders_in(r#"{service} {"a": 1} { } {to_version}{x"#)
            .into_iter()
            .map(|(_, n)| n)
            .collect();
        assert_eq!(found, ["service", "to_version"]);
    }

    #[test]
    fn a_service_template_wins_over_the_common_one_which_wins_over_the_default() {
        let text = format!(
            "{BASE}\n[templates]\nstatus_page_title = \"{{service}} is slow\"\n[templates.services.checkout]\nstatus_page_resolved = \"Checkout is fine ({{recovery}})\"\n"
        );
        let c = Config::parse(Path::new("rollbot.toml"), &text).unwrap();
        let v = [
            ("service", "checkout".to_string()),
            ("recovery", "error rate 0.1%".into()),
        ];
        let t = &c.templates;
        assert_eq!(
            t.render("checkout", Template::StatusPageTitle, &v),
            "checkout is slow"
        );
        assert_eq!(
            t.render("checkout", Template::StatusPageResolved, &v),
            "Checkout is fine (error rate 0.1%)"
        );
        assert_eq!(
            t.render("search", Template::StatusPageResolved, &v),
            "checkout has recovered: error rate 0.1%."
        );
    }

    #[test]
    fn unknown_placeholders_are_reported_at_their_own_column_with_the_closest_name() {
        let text = format!(
            "{BASE}\n[templates]\nincident_opened = \"Impact: {{impact}}. Cause: {{sevrice}} {{recovery}}\"\n"
        );
        let e = errors(&text);
        // Line 10; `{sevrice}` starts at column 45 of that line.
        assert!(
            e.contains("rollbot.toml:10:45:") && e.contains("unknown placeholder {sevrice}"),
            "{e}"
        );
        assert!(e.contains("did you mean {service}?"), "{e}");
        assert!(
            e.contains("rollbot.toml:10:55:")
                && e.contains("{recovery} is known only in status_page_resolved"),
            "{e}"
        );
        let svc = format!(
            "{BASE}\n[templates.services.chekout]\nrollback_complete = \"\"\"\nDone.\n  {{watchng}}\"\"\"\n"
        );
        let e = errors(&svc);
        assert!(
            e.contains("names service `chekout`") && e.contains("did you mean `checkout`"),
            "{e}"
        );
        assert!(
            e.contains("rollbot.toml:12:3:") && e.contains("did you mean {watching}?"),
            "{e}"
        );
        let typo = format!("{BASE}\n[templates]\nincident_open = \"x\"\n");
        assert!(errors(&typo).contains("incident_open"), "{}", errors(&typo));
    }
}
