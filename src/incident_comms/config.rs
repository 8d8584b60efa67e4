//! `[status_page]` and `[paging]`, and each service's `status_page` mode:
//! read here, checked here, with line and column.

use crate::config::{closest, find_span, ConfigError, EnvRef, SecretSource};
use crate::config_file::Config;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const STATUSPAGE_URL: &str = "https://api.statuspage.io";
pub const PAGERDUTY_URL: &str = "https://events.pagerduty.com";

/// Whether an incident of a service goes to the status page.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StatusPageMode {
    /// Posted when the incident is identified, updated until resolved.
    Auto,
    /// Ask in the incident thread first (Post to status page / Not
    /// customer-facing), see `engine/status_page_ask.rs`.
    Ask,
    /// Never posted.
    Off,
}

/// `[status_page]`: an Atlassian Statuspage page (API v1).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusPageConfig {
    /// The page's ID (the `kctbh9vrtdwd` in `/v1/pages/kctbh9vrtdwd`).
    #[serde(default)]
    pub page_id: String,
    /// `"${ENV_VAR}"` holding the API key, or `api_key_file`.
    pub api_key: Option<EnvRef>,
    pub api_key_file: Option<PathBuf>,
    /// The API's base URL (a test or proxy); default Atlassian's.
    #[serde(default = "statuspage_url")]
    pub base_url: String,
    /// Service name → the page's component IDs that service backs.
    #[serde(default)]
    pub components: BTreeMap<String, Vec<String>>,
}

fn statuspage_url() -> String {
    STATUSPAGE_URL.into()
}

fn pagerduty_url() -> String {
    PAGERDUTY_URL.into()
}

/// PagerDuty's severities, as its Events API spells them.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PagingSeverity {
    Critical,
    Error,
    Warning,
    Info,
}

impl PagingSeverity {
    pub fn as_str(self) -> &'static str {
        match self {
            PagingSeverity::Critical => "critical",
            PagingSeverity::Error => "error",
            PagingSeverity::Warning => "warning",
            PagingSeverity::Info => "info",
        }
    }
}

/// `[paging]`: PagerDuty Events API v2.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagingConfig {
    /// The default integration (routing) key: `"${ENV_VAR}"` or
    /// `routing_key_file`.
    pub routing_key: Option<EnvRef>,
    pub routing_key_file: Option<PathBuf>,
    #[serde(default = "pagerduty_url")]
    pub base_url: String,
    /// Per service: its own routing key and severity.
    #[serde(default)]
    pub services: BTreeMap<String, PagingService>,
}

/// `[paging.services.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagingService {
    pub routing_key: Option<EnvRef>,
    pub routing_key_file: Option<PathBuf>,
    /// Default: `critical` for a critical service, else `error`.
    pub severity: Option<PagingSeverity>,
}

impl StatusPageConfig {
    pub fn key_source(&self) -> Result<Option<SecretSource>, String> {
        SecretSource::from_pair("api_key", self.api_key.as_ref(), self.api_key_file.as_ref())
    }
}

impl PagingConfig {
    pub fn key_source(&self) -> Result<Option<SecretSource>, String> {
        SecretSource::from_pair(
            "routing_key",
            self.routing_key.as_ref(),
            self.routing_key_file.as_ref(),
        )
    }
}

impl PagingService {
    pub fn key_source(&self) -> Result<Option<SecretSource>, String> {
        SecretSource::from_pair(
            "routing_key",
            self.routing_key.as_ref(),
            self.routing_key_file.as_ref(),
        )
    }
}

/// A service's status-page mode: as written, else `auto` when
/// `[status_page.components]` lists the service, else `off`.
pub fn mode_of(config: &Config, service: &str) -> StatusPageMode {
    let svc = config.service(service);
    if let Some(m) = svc.and_then(|s| s.status_page.as_ref()) {
        return *m.as_ref();
    }
    match &config.status_page {
        Some(sp) if sp.components.contains_key(service) => StatusPageMode::Auto,
        _ => StatusPageMode::Off,
    }
}

fn check_url(url: &str) -> Result<(), String> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(()),
        _ => Err(format!("`{url}` is not an http(s) URL")),
    }
}

/// Every problem with `[status_page]`, `[paging]`, `[templates]` and the services'
/// `status_page` keys.
pub fn check(config: &Config, path: &Path, source: &str) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    let at = |span: Option<std::ops::Range<usize>>, msg: String| {
        ConfigError::at(path, source, span, msg)
    };
    let names = config.service_names();
    let unknown = |svc: &str, section: &str| -> Option<ConfigError> {
        if config.service(svc).is_some() {
            return None;
        }
        let near = closest(svc, names.iter().copied());
        let e = at(
            find_span(source, section).or(find_span(source, "status_page")),
            format!("[{section}] names service `{svc}`, which is not defined"),
        );
        Some(match near.first() {
            Some(n) => e.help(format!("did you mean `{n}`?")),
            None => e.help(format!("known services: {}", names.join(", "))),
        })
    };
    if let Some(sp) = &config.status_page {
        let table = find_span(source, "status_page");
        if sp.page_id.trim().is_empty() {
            errors.push(
                at(table.clone(), "[status_page] needs page_id".into()).help(
                    "write page_id = \"…\", the ID in your page's API URL /v1/pages/{page_id}",
                ),
            );
        }
        match sp.key_source() {
            Err(e) => errors.push(at(table.clone(), format!("[status_page]: {e}"))),
            Ok(None) => errors.push(
                at(table.clone(), "[status_page] needs api_key".into())
                    .help("write api_key = \"${STATUSPAGE_API_KEY}\" and export it, or api_key_file = \"/run/secrets/statuspage\""),
            ),
            Ok(Some(_)) => {}
        }
        if let Err(e) = check_url(&sp.base_url) {
            errors.push(at(table.clone(), format!("[status_page] base_url: {e}")));
        }
        for (svc, ids) in &sp.components {
            errors.extend(unknown(svc, "status_page.components"));
            if ids.is_empty() || ids.iter().any(|i| i.trim().is_empty()) {
                errors.push(at(
                    find_span(source, "status_page.components").or(table.clone()),
                    format!("[status_page.components] {svc}: list the component IDs, none empty"),
                ));
            }
        }
    }
    for s in &config.services {
        let Some(mode) = &s.status_page else { continue };
        let span = Some(mode.span());
        let word = match mode.as_ref() {
            StatusPageMode::Ask => "ask",
            StatusPageMode::Auto => "auto",
            StatusPageMode::Off => continue,
        };
        match &config.status_page {
            None => errors.push(
                at(span, format!("service `{}`: status_page = \"{word}\" needs a [status_page] section", s.name()))
                    .help("add [status_page] with page_id, api_key and components, or write status_page = \"off\""),
            ),
            Some(sp) if !sp.components.contains_key(s.name()) => errors.push(
                at(span, format!("service `{}`: status_page = \"{word}\" but [status_page.components] lists no component for it", s.name()))
                    .help(format!("add {} = [\"<component id>\"] under [status_page.components]", s.name())),
            ),
            Some(_) => {}
        }
    }
    errors.extend(super::templates::check(config, path, source));
    if let Some(p) = &config.paging {
        let table = find_span(source, "paging");
        if let Err(e) = p.key_source() {
            errors.push(at(table.clone(), format!("[paging]: {e}")));
        }
        if let Err(e) = check_url(&p.base_url) {
            errors.push(at(table.clone(), format!("[paging] base_url: {e}")));
        }
        for (svc, ps) in &p.services {
            let section = format!("paging.services.{svc}");
            errors.extend(unknown(svc, &section));
            if let Err(e) = ps.key_source() {
                errors.push(at(
                    find_span(source, &section).or(table.clone()),
                    format!("[{section}]: {e}"),
                ));
            }
        }
        let no_default = matches!(p.key_source(), Ok(None));
        let without: Vec<&str> = config
            .services
            .iter()
            .map(|s| s.name())
            .filter(|n| {
                p.services
                    .get(*n)
                    .is_none_or(|ps| matches!(ps.key_source(), Ok(None)))
            })
            .collect();
        if no_default && !without.is_empty() {
            errors.push(
                at(table, format!("[paging] has no routing_key, and {} have none of their own", without.join(", ")))
                    .help("write routing_key = \"${PAGERDUTY_ROUTING_KEY}\" (the default), or one per service under [paging.services.NAME]"),
            );
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use crate::config_file::parse_errors as errors;

    const BASE: &str = r#"
[backends.sim]
type = "simulated"

[[services]]
name = "checkout"
backend = "sim"
"#;

    #[test]
    fn a_status_page_needs_its_id_a_key_from_outside_the_file_and_known_services() {
        let ok = format!("{BASE}\n[status_page]\npage_id = \"p1\"\napi_key = \"${{SP_KEY}}\"\n[status_page.components]\ncheckout = [\"c1\"]\n");
        assert_eq!(errors(&ok), "");
        let pasted = ok.replace("${SP_KEY}", "abc123");
        assert!(
            errors(&pasted).contains("never written in the config"),
            "{}",
            errors(&pasted)
        );
        let typo = ok.replace("checkout = [", "chekout = [");
        let e = errors(&typo);
        assert!(
            e.contains("names service `chekout`") && e.contains("did you mean `checkout`"),
            "{e}"
        );
        assert!(
            e.contains("rollbot.toml:12:1:"),
            "located at its table: {e}"
        );
        let no_id = ok.replace("page_id = \"p1\"\n", "");
        assert!(errors(&no_id).contains("[status_page] needs page_id"));
    }

    #[test]
    fn a_service_set_to_auto_or_ask_needs_components_at_its_line() {
        let auto = BASE.replace(
            "backend = \"sim\"",
            "backend = \"sim\"\nstatus_page = \"auto\"",
        );
        let e = errors(&auto);
        assert!(
            e.contains("needs a [status_page] section") && e.contains("rollbot.toml:8:15:"),
            "{e}"
        );
        let ask = BASE.replace(
            "backend = \"sim\"",
            "backend = \"sim\"\nstatus_page = \"ask\"",
        );
        let e = errors(&ask);
        assert!(
            e.contains("status_page = \"ask\" needs a [status_page] section")
                && e.contains("rollbot.toml:8:15:"),
            "{e}"
        );
        let bad = BASE.replace(
            "backend = \"sim\"",
            "backend = \"sim\"\nstatus_page = \"sometimes\"",
        );
        assert!(errors(&bad).contains("rollbot.toml:8:"), "{}", errors(&bad));
    }

    #[test]
    fn paging_needs_a_key_for_every_service() {
        let none = format!("{BASE}\n[paging]\n");
        let e = errors(&none);
        assert!(
            e.contains("checkout have none of their own") && e.contains("rollbot.toml:9:1:"),
            "{e}"
        );
        let per_service = format!("{BASE}\n[paging.services.checkout]\nrouting_key_file = \"/run/pd\"\nseverity = \"warning\"\n");
        assert_eq!(errors(&per_service), "");
        let both = format!(
            "{BASE}\n[paging]\nrouting_key = \"${{PD}}\"\nrouting_key_file = \"/run/pd\"\n"
        );
        assert!(errors(&both).contains("keep one of them"));
        let url = format!("{BASE}\n[paging]\nrouting_key = \"${{PD}}\"\nbase_url = \"events\"\n");
        assert!(errors(&url).contains("not an http(s) URL"));
    }
}
