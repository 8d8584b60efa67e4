//! `[backends.NAME]` with `type = "unleash"`: its keys, their checks, the
//! flag each service names, and the constructor.

use super::{parse_steps, UnleashBackend, UnleashSettings, DEFAULT_STEPS};
use crate::backend::factory::{BackendSettings, BuildContext, Built, CheckContext};
use crate::config::{ConfigError, EnvRef, HumanDuration, SecretSource};
use serde::Deserialize;
use std::path::PathBuf;

/// Switches a feature flag in Unleash: rollback turns it off in the
/// environment, promote turns it on or raises its gradual rollout.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct UnleashConfig {
    /// Unleash's base URL (`http://` or `https://`).
    url: String,
    /// Admin API token: `"${ENV_VAR}"`, or `admin_token_file`.
    #[serde(default)]
    admin_token: Option<EnvRef>,
    #[serde(default)]
    admin_token_file: Option<PathBuf>,
    /// Client API token of `environment`, used to verify what SDKs are
    /// served: `"${ENV_VAR}"`, or `client_token_file`. Without it,
    /// verification reads the admin API.
    #[serde(default)]
    client_token: Option<EnvRef>,
    #[serde(default)]
    client_token_file: Option<PathBuf>,
    /// Unleash project of the flags (default `default`); a service's
    /// `target.project` overrides it.
    #[serde(default)]
    project: Option<String>,
    /// Unleash environment switched (default: the service's
    /// `environment`); a service's `target.environment` overrides it.
    #[serde(default)]
    environment: Option<String>,
    /// Rollout percentages a gradual promote moves through (default
    /// [10, 25, 50, 100]); a service's `target.steps = "5,50,100"`
    /// overrides them.
    #[serde(default)]
    steps: Option<Vec<u8>>,
    /// Time limit of one request (default 10s).
    #[serde(default)]
    timeout: Option<HumanDuration>,
    /// How long the client API is polled for the new state (default 30s).
    #[serde(default)]
    verify_timeout: Option<HumanDuration>,
    /// Pause between polls (default 500ms).
    #[serde(default)]
    verify_interval: Option<HumanDuration>,
}

impl BackendSettings for UnleashConfig {
    fn check(&self, cx: &CheckContext) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let url = &self.url;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            errors.push(
                cx.error(format!("url `{url}` is not an http:// or https:// URL"))
                    .help("write Unleash's base URL, for example \"https://unleash.example.com\""),
            );
        }
        match SecretSource::from_pair(
            "admin_token",
            self.admin_token.as_ref(),
            self.admin_token_file.as_ref(),
        ) {
            Err(e) => errors.push(cx.error(e)),
            Ok(None) => errors.push(
                cx.error("Unleash needs an admin API token")
                    .help("write admin_token = \"${UNLEASH_ADMIN_TOKEN}\" or admin_token_file = \"/path/to/token\""),
            ),
            Ok(Some(_)) => {}
        }
        if let Err(e) = SecretSource::from_pair(
            "client_token",
            self.client_token.as_ref(),
            self.client_token_file.as_ref(),
        ) {
            errors.push(cx.error(e));
        }
        if let Some(Err(e)) = self.steps.as_deref().map(super::check_steps) {
            errors.push(cx.error(e));
        }
        errors.extend(self.check_limits(cx));
        errors.extend(check_services(cx));
        errors
    }

    fn build(&self, _cx: &BuildContext) -> Built {
        let d = UnleashSettings::default();
        let s = UnleashSettings {
            url: self.url.clone(),
            // Checked when the config was loaded.
            admin_token: SecretSource::from_pair(
                "admin_token",
                self.admin_token.as_ref(),
                self.admin_token_file.as_ref(),
            )
            .ok()
            .flatten(),
            client_token: SecretSource::from_pair(
                "client_token",
                self.client_token.as_ref(),
                self.client_token_file.as_ref(),
            )
            .ok()
            .flatten(),
            project: self.project.clone().unwrap_or(d.project),
            environment: self.environment.clone(),
            steps: self.steps.clone().unwrap_or(DEFAULT_STEPS.to_vec()),
            timeout: self.timeout.map(|t| t.0).unwrap_or(d.timeout),
            verify_timeout: self.verify_timeout.map(|t| t.0).unwrap_or(d.verify_timeout),
            verify_interval: self
                .verify_interval
                .map(|t| t.0)
                .unwrap_or(d.verify_interval),
        };
        UnleashBackend::new(s).into()
    }
}

impl UnleashConfig {
    /// Each call is cut at backend_timeout; the backend's own limits must
    /// end first so its report survives.
    fn check_limits(&self, cx: &CheckContext) -> Vec<ConfigError> {
        let d = UnleashSettings::default();
        let limit = cx.backend_timeout;
        let one = self.timeout.map(|t| t.0).unwrap_or(d.timeout);
        // A promote reads, raises, switches on and may put back: four
        // requests in a row. Polling ends with one more request.
        let mut errors = Vec::new();
        for (what, v) in [
            ("four requests (4 × timeout)", one * 4),
            (
                "verification (verify_timeout + timeout)",
                self.verify_timeout.map(|t| t.0).unwrap_or(d.verify_timeout) + one,
            ),
        ] {
            if v >= limit {
                errors.push(
                    cx.error(format!(
                        "{what} can take {}, but [engine] backend_timeout is {}",
                        crate::domain::human_duration(v),
                        crate::domain::human_duration(limit)
                    ))
                    .help("lower timeout or verify_timeout, or raise backend_timeout in [engine]"),
                );
            }
        }
        errors
    }
}

/// A flag is the only thing an Unleash backend needs from a service.
fn check_services(cx: &CheckContext) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    for s in cx.services() {
        let name = s.name;
        if s.target.get("flag").is_none_or(|f| f.trim().is_empty()) {
            errors.push(
                cx.at(
                    s.name_span.clone(),
                    format!(
                        "service `{name}` uses Unleash backend `{}` but names no flag",
                        s.backend
                    ),
                )
                .help("add [services.target] with flag = \"the-flag-name\" under this service"),
            );
        }
        if let Some(Err(e)) = s.target.get("steps").map(|t| parse_steps(t)) {
            errors.push(cx.at(s.name_span.clone(), format!("service `{name}`: {e}")));
        }
    }
    errors
}
