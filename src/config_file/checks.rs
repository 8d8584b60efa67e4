//! `[[services.checks]]` (custom metric checks) and `slo` (SLO burn-rate
//! checks) of a service, and their checks at load time.
//!
//! A check is a PromQL query with a condition (`above` / `below`, held for
//! `for`) or a comparison of canary with baseline (`compare = "baseline"`,
//! `tolerance`), and a `severity` that picks the controller's tier.

use super::service::ServiceConfig;
use super::Config;
use crate::config::{closest, ConfigError, HumanDuration};
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use toml::Spanned;

/// What the controller does when a check fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CheckSeverity {
    /// A line in the summary only.
    LogOnly,
    /// A Roll back / Continue prompt in the summary's thread.
    PageAndSuggest,
    /// Roll back at once (or ask, while automation is off).
    AutoRollback,
}

impl CheckSeverity {
    pub const NAMES: [&'static str; 3] = ["auto_rollback", "page_and_suggest", "log_only"];

    pub fn as_str(self) -> &'static str {
        match self {
            CheckSeverity::AutoRollback => "auto_rollback",
            CheckSeverity::PageAndSuggest => "page_and_suggest",
            CheckSeverity::LogOnly => "log_only",
        }
    }

    fn parse(text: &str) -> Result<Self, String> {
        match text {
            "auto_rollback" => Ok(CheckSeverity::AutoRollback),
            "page_and_suggest" => Ok(CheckSeverity::PageAndSuggest),
            "log_only" => Ok(CheckSeverity::LogOnly),
            other => Err(match closest(other, Self::NAMES).first() {
                Some(best) => format!(
                    "unknown severity `{other}`; did you mean `{best}`? (one of {})",
                    Self::NAMES.join(", ")
                ),
                None => format!(
                    "unknown severity `{other}`; write one of {}",
                    Self::NAMES.join(", ")
                ),
            }),
        }
    }
}

impl fmt::Display for CheckSeverity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// Read by hand so a misspelt severity gets a "did you mean" at its place.
impl<'de> Deserialize<'de> for CheckSeverity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        CheckSeverity::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// What a comparison check compares the canary with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compare {
    Baseline,
}

impl<'de> Deserialize<'de> for Compare {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        match text.as_str() {
            "baseline" => Ok(Compare::Baseline),
            other => Err(serde::de::Error::custom(format!(
                "unknown compare `{other}`; {}",
                match closest(other, ["baseline"]).first() {
                    Some(best) => format!("did you mean `{best}`?"),
                    None => "the only comparison is `baseline`".to_string(),
                }
            ))),
        }
    }
}

/// One `[[services.checks]]` table.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct CheckConfig {
    /// Shown in the summary and named in the audit entry of a decision.
    pub name: Spanned<String>,
    /// PromQL with `$service`, `$namespace`, `$window`, `$track`.
    pub query: Spanned<String>,
    /// The condition: the value is above this.
    pub above: Option<Spanned<f64>>,
    /// The condition: the value is below this.
    pub below: Option<Spanned<f64>>,
    /// How long the condition must hold before the check fires (default:
    /// the first tick it is seen). For a comparison, how long the canary
    /// must stay shown beyond tolerance (default: the judge's sustained_for).
    #[serde(rename = "for")]
    pub for_: Option<HumanDuration>,
    #[serde(default = "default_severity")]
    pub severity: CheckSeverity,
    /// `"baseline"`: judge canary against baseline with the judge's
    /// sequential test instead of a fixed bound.
    pub compare: Option<Spanned<Compare>>,
    /// For a comparison: the largest acceptable canary / baseline ratio.
    pub tolerance: Option<Spanned<f64>>,
}

fn default_severity() -> CheckSeverity {
    CheckSeverity::PageAndSuggest
}

/// The condition of a check, once checked.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Condition {
    Above(f64),
    Below(f64),
    /// canary ≤ tolerance × baseline, tested sequentially.
    Baseline {
        tolerance: f64,
    },
}

impl CheckConfig {
    pub fn name(&self) -> &str {
        self.name.as_ref()
    }

    /// The condition (the config was checked: exactly one is set).
    pub fn condition(&self) -> Condition {
        let value = |v: &Option<Spanned<f64>>| v.as_ref().map(|v| *v.get_ref());
        match (&self.compare, value(&self.above), value(&self.below)) {
            (Some(_), _, _) => Condition::Baseline {
                tolerance: value(&self.tolerance).unwrap_or(DEFAULT_TOLERANCE),
            },
            (None, Some(a), _) => Condition::Above(a),
            (None, None, Some(b)) => Condition::Below(b),
            (None, None, None) => Condition::Above(f64::INFINITY),
        }
    }
}

/// A comparison check's tolerance when none is written.
pub const DEFAULT_TOLERANCE: f64 = 1.2;

/// `slo = { objective = 0.999, window = "30d" }` of a service.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct SloConfig {
    /// The share of requests that must succeed, such as 0.999.
    pub objective: f64,
    /// The SLO's period (the error budget's window).
    #[serde(default = "default_slo_window")]
    pub window: HumanDuration,
    /// What a page-level burn does (default: ask).
    #[serde(default = "default_severity")]
    pub page: CheckSeverity,
}

fn default_slo_window() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(30 * 24 * 3600))
}

/// Placeholders a check's query may use.
pub const PLACEHOLDERS: [&str; 4] = ["service", "namespace", "window", "track"];

/// The `$words` of a query that are not placeholders, with their offsets.
pub fn unknown_placeholders(query: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (i, _) in query.match_indices('$') {
        let rest = &query[i + 1..];
        let rest = rest.strip_prefix('{').unwrap_or(rest);
        let word: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        // `$1` is a group reference of label_replace, not a placeholder.
        let group_reference = word.starts_with(|c: char| c.is_ascii_digit());
        if !group_reference && !PLACEHOLDERS.contains(&word.as_str()) {
            out.push((i, word));
        }
    }
    out
}

impl Config {
    /// Every service's checks and SLO.
    pub(super) fn check_service_checks(&self, path: &Path, source: &str) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        for s in &self.services {
            let mut seen = BTreeMap::new();
            for c in &s.checks {
                errors.extend(check_one(s, c, path, source));
                if seen.insert(c.name().to_string(), ()).is_some() {
                    errors.push(
                        ConfigError::at(
                            path,
                            source,
                            Some(c.name.span()),
                            format!(
                                "service `{}` has two checks named `{}`",
                                s.name(),
                                c.name()
                            ),
                        )
                        .help("give each check a unique name: the summary and the audit log name checks by it"),
                    );
                }
            }
            if let Some(slo) = &s.slo {
                errors.extend(check_slo(s, slo, path, source));
            }
        }
        errors
    }
}

fn check_one(s: &ServiceConfig, c: &CheckConfig, path: &Path, source: &str) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    let at =
        |span: std::ops::Range<usize>, msg: String| ConfigError::at(path, source, Some(span), msg);
    let what = format!("service `{}`, check `{}`", s.name(), c.name());
    if c.name().trim().is_empty() {
        errors.push(
            at(
                c.name.span(),
                format!("service `{}`: a check needs a name", s.name()),
            )
            .help("write name = \"crash loops\""),
        );
    }
    let query = c.query.as_ref();
    if query.trim().is_empty() {
        errors.push(
            at(c.query.span(), format!("{what}: the query is empty"))
                .help("write the PromQL to evaluate, such as 'sum(increase(kube_pod_container_status_restarts_total{namespace=\"$namespace\",pod=~\"$service-.*\"}[$window]))'"),
        );
    }
    // The span covers the quotes: the query's text starts one byte in.
    let text_start = c.query.span().start + 1;
    for (offset, word) in unknown_placeholders(query) {
        let near = closest(&word, PLACEHOLDERS);
        let help = match near.first() {
            Some(best) => format!("did you mean `${best}`?"),
            None => format!(
                "use one of {}",
                PLACEHOLDERS.map(|p| format!("${p}")).join(", ")
            ),
        };
        errors.push(
            at(
                text_start + offset..text_start + offset + 1 + word.len(),
                if word.is_empty() {
                    format!("{what}: `$` without a placeholder name in the query")
                } else {
                    format!("{what}: unknown placeholder `${word}` in the query")
                },
            )
            .help(help),
        );
    }
    let span = c.name.span();
    match (&c.compare, &c.above, &c.below) {
        (None, Some(_), Some(below)) => errors.push(
            at(below.span(), format!("{what} sets both `above` and `below`"))
                .help("a check has one condition: keep `above` or `below`, or write two checks"),
        ),
        (None, None, None) => errors.push(
            at(span.clone(), format!("{what} has no condition"))
                .help("add `above = …` or `below = …`, or `compare = \"baseline\"` with a `tolerance`"),
        ),
        (Some(_), a, b) if a.is_some() || b.is_some() => errors.push(
            at(
                a.as_ref().or(b.as_ref()).map(|v| v.span()).unwrap_or(span.clone()),
                format!("{what}: `compare = \"baseline\"` cannot have `above` or `below`"),
            )
            .help("a comparison fails when canary / baseline exceeds `tolerance`; remove `above` / `below`"),
        ),
        _ => {}
    }
    for (key, v) in [("above", &c.above), ("below", &c.below)] {
        if let Some(v) = v.as_ref().filter(|v| !v.get_ref().is_finite()) {
            errors.push(at(
                v.span(),
                format!("{what}: `{key}` must be a finite number"),
            ));
        }
    }
    match (&c.compare, &c.tolerance) {
        (None, Some(t)) => errors.push(
            at(
                t.span(),
                format!("{what}: `tolerance` is only for `compare = \"baseline\"`"),
            )
            .help("remove `tolerance`, or add `compare = \"baseline\"` and drop above/below"),
        ),
        (Some(_), Some(t)) if !(t.get_ref().is_finite() && *t.get_ref() >= 1.0) => errors.push(
            at(
                t.span(),
                format!(
                    "{what}: tolerance must be a ratio of at least 1 (it is {})",
                    t.get_ref()
                ),
            )
            .help("write tolerance = 1.2 to accept a canary up to 20% above the baseline"),
        ),
        _ => {}
    }
    if c.compare.is_some() && query.contains("$track") {
        errors.push(
            at(c.query.span(), format!("{what}: a comparison's query cannot use `$track`"))
                .help("rollbot sends one query per check: return one series per track instead, such as `sum by (track) (…)`"),
        );
    }
    errors
}

fn check_slo(
    s: &ServiceConfig,
    slo: &Spanned<SloConfig>,
    path: &Path,
    source: &str,
) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    let span = slo.span();
    let slo = slo.get_ref();
    if !(slo.objective > 0.0 && slo.objective < 1.0) {
        errors.push(
            ConfigError::at(
                path,
                source,
                Some(span.clone()),
                format!(
                    "service `{}`: slo objective must be between 0 and 1 (it is {})",
                    s.name(),
                    slo.objective
                ),
            )
            .help("write the share of good requests, such as objective = 0.999 for 99.9%"),
        );
    }
    if slo.window.0 < std::time::Duration::from_secs(3 * 24 * 3600) {
        errors.push(
            ConfigError::at(
                path,
                source,
                Some(span),
                format!(
                    "service `{}`: slo window must be at least 3d (the ticket's long window); it is {}",
                    s.name(),
                    crate::domain::human_duration(slo.window.0)
                ),
            )
            .help("write window = \"30d\" (or \"28d\")"),
        );
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config_file::Config;

    #[test]
    fn unknown_placeholders_are_found_with_their_place() {
        assert!(
            unknown_placeholders("x{service=\"$service\",ns=\"$namespace\"}[$window]").is_empty()
        );
        assert_eq!(
            unknown_placeholders("x{service=\"$servce\"}[$windw] $"),
            vec![
                (11, "servce".into()),
                (21, "windw".into()),
                (29, String::new())
            ]
        );
        // label_replace's group references are PromQL's own.
        assert!(
            unknown_placeholders("label_replace(x, \"pod\", \"$1\", \"p\", \"(.*)\")").is_empty()
        );
    }

    #[test]
    fn a_misspelt_severity_suggests_the_right_one() {
        let e = CheckSeverity::parse("auto_rollbak").unwrap_err();
        assert!(e.contains("did you mean `auto_rollback`"), "{e}");
        assert_eq!(
            CheckSeverity::parse("log_only").unwrap(),
            CheckSeverity::LogOnly
        );
    }

    const BASE: &str = "[backends.sim]\ntype = \"simulated\"\n\n[[services]]\nname = \"checkout\"\nbackend = \"sim\"\n";

    fn errors(extra: &str) -> Vec<ConfigError> {
        Config::parse(Path::new("rollbot.toml"), &format!("{BASE}{extra}"))
            .expect_err("config should be refused")
            .0
    }

    fn check(body: &str) -> String {
        format!("\n[[services.checks]]\nname = \"crash loops\"\n{body}")
    }

    const QUERY: &str = "query = 'sum(increase(restarts{pod=~\"$service-.*\"}[$window]))'\n";

    #[test]
    fn a_valid_check_and_slo_are_read() {
        let text = format!(
            "{BASE}slo = {{ objective = 0.999, window = \"30d\", page = \"auto_rollback\" }}\n{}{}",
            check(&format!("{QUERY}above = 3\nfor = \"1m\"\nseverity = \"log_only\"\n")),
            "\n[[services.checks]]\nname = \"p99\"\nquery = 'q'\ncompare = \"baseline\"\ntolerance = 1.5\n"
        );
        let c = Config::parse(Path::new("rollbot.toml"), &text).unwrap();
        let s = c.service("checkout").unwrap();
        assert_eq!(s.checks[0].condition(), Condition::Above(3.0));
        assert_eq!(s.checks[0].severity, CheckSeverity::LogOnly);
        assert_eq!(
            s.checks[1].condition(),
            Condition::Baseline { tolerance: 1.5 }
        );
        assert_eq!(s.checks[1].severity, CheckSeverity::PageAndSuggest);
        let slo = s.slo.as_ref().unwrap().get_ref();
        assert_eq!(slo.page, CheckSeverity::AutoRollback);
        assert_eq!(slo.window.0.as_secs(), 30 * 24 * 3600);
    }

    #[test]
    fn an_unknown_key_or_severity_gets_a_did_you_mean_at_its_place() {
        let e = errors(&check(&format!("{QUERY}abov = 3\n")));
        let key = e
            .iter()
            .find(|e| e.message.contains("unknown field `abov`"))
            .unwrap();
        assert_eq!((key.line, key.column), (11, 1), "{e:?}");
        assert_eq!(key.help.as_deref(), Some("did you mean `above`?"));
        let e = errors(&check(&format!(
            "{QUERY}above = 3\nseverity = \"page_and_sugest\"\n"
        )));
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!((e[0].line, e[0].column), (12, 12), "{e:?}");
        assert!(
            e[0].message.contains("did you mean `page_and_suggest`"),
            "{e:?}"
        );
    }

    #[test]
    fn both_or_neither_condition_is_refused() {
        let e = errors(&check(&format!("{QUERY}above = 3\nbelow = 1\n")));
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!((e[0].line, e[0].column), (12, 9), "{e:?}");
        assert!(
            e[0].message.contains("sets both `above` and `below`"),
            "{e:?}"
        );
        let e = errors(&check(QUERY));
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].line, 9, "{e:?}");
        assert!(e[0].message.contains("has no condition"), "{e:?}");
        let e = errors(&check(&format!(
            "{QUERY}compare = \"baseline\"\nabove = 2\n"
        )));
        assert!(
            e[0].message.contains("cannot have `above` or `below`"),
            "{e:?}"
        );
        let e = errors(&check(&format!("{QUERY}above = 2\ntolerance = 1.5\n")));
        assert!(e[0].message.contains("`tolerance` is only for"), "{e:?}");
    }

    #[test]
    fn bad_placeholders_are_reported_at_their_column() {
        let e = errors(&check(
            "query = 'up{service=\"$servce\"}[$window]'\nabove = 1\n",
        ));
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!((e[0].line, e[0].column), (10, 22), "{e:?}");
        assert!(
            e[0].message.contains("unknown placeholder `$servce`"),
            "{e:?}"
        );
        assert_eq!(e[0].help.as_deref(), Some("did you mean `$service`?"));
        let e = errors(&check(
            "query = 'x{track=\"$track\"}'\ncompare = \"baseline\"\n",
        ));
        assert!(e[0].message.contains("cannot use `$track`"), "{e:?}");
    }

    #[test]
    fn a_bad_slo_is_refused() {
        let e = errors("slo = { objective = 99.9 }\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!((e[0].line, e[0].column), (7, 7), "{e:?}");
        assert!(e[0].message.contains("between 0 and 1"), "{e:?}");
        let e = errors("slo = { objective = 0.999, windw = \"30d\" }\n");
        assert_eq!(
            e[0].help.as_deref(),
            Some("did you mean `window`?"),
            "{e:?}"
        );
    }
}
