//! rollbot's configuration file: one TOML file, read once, checked completely.
//!
//! Reading happens in two passes. Serde reads the file with
//! `deny_unknown_fields` and self-checking value types (durations, cron lines,
//! globs, time zones, secret references, from `crate::config`), so most
//! mistakes are reported at their exact line and column by the TOML parser.
//! Then the checks of the whole file run: a service naming a backend or
//! channel that does not exist, duplicate names, a chat section without its
//! secrets. Each stage owns its section and its checks: a backend's table
//! is its own type in its file under `src/backend/` (see
//! `backend::factory`), `[roles]` is `roles.rs`'s, `[freeze]` is
//! `freeze/`'s and `[leader_election]` is `leader.rs`'s; this module puts
//! them together.

mod chat;
mod check;
mod checks;
mod depends;
mod fallback;
mod gates;
mod sections;
mod service;
pub mod tick;
mod verify;

pub use chat::{ChatConfig, DiscordConfig, SlackConfig, SlackMode};
pub use checks::{CheckConfig, CheckSeverity, Condition, SloConfig};
pub use fallback::{FallbackConfig, MAX_FALLBACK_NAME};
pub use gates::GatesConfig;
pub use sections::{
    ApiClient, ApiConfig, ChannelConfig, EngineConfig, MetricQueries, MetricSourceKind,
    MetricsConfig, ServerConfig, StoreConfig, StoreKind,
};
pub use service::{OnFailing, ServiceConfig};
pub use verify::{fill as fill_verify, HttpCheck, KubernetesCheck, PrometheusCheck, VerifyCheck};

use crate::backend::BackendConfig;
use crate::config::{drop_echoes, locate, read_all, ConfigError, ConfigErrors};
use crate::freeze::FreezeConfig;
use crate::leader::LeaderElectionConfig;
use crate::roles::{Role, RoleGrant};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use toml::Spanned;

/// The demo configuration, embedded so `rollbot demo` needs no files.
pub const DEMO_TOML: &str = include_str!("../../config/demo.toml");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub engine: EngineConfig,
    #[serde(default)]
    pub channels: BTreeMap<String, ChannelConfig>,
    #[serde(default)]
    pub backends: BTreeMap<String, Spanned<BackendConfig>>,
    #[serde(default)]
    pub services: Vec<ServiceConfig>,
    #[serde(default)]
    pub roles: BTreeMap<Role, Vec<RoleGrant>>,
    #[serde(default)]
    pub freeze: FreezeConfig,
    #[serde(default)]
    pub chat: ChatConfig,
    #[serde(default)]
    pub api: ApiConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Only the holder of a Kubernetes Lease acts (see `src/leader.rs`).
    #[serde(default)]
    pub leader_election: Option<LeaderElectionConfig>,
    /// Webhooks Flagger and Argo Rollouts call (`/gates/...`).
    #[serde(default)]
    pub gates: GatesConfig,
    /// The controller's own settings (the rollback capability check).
    #[serde(default)]
    pub controller: crate::controller::capability::ControllerConfig,
    /// How rollbot reaches container registries (rollback capability).
    #[serde(default)]
    pub registry: crate::registry::RegistryConfig,
    /// Incidents on the public status page (see `src/incident_comms/`).
    #[serde(default)]
    pub status_page: Option<crate::incident_comms::config::StatusPageConfig>,
    /// Pages and change events for the on-call (see `src/incident_comms/`).
    #[serde(default)]
    pub paging: Option<crate::incident_comms::config::PagingConfig>,
    /// The words of incident messages and status page updates.
    #[serde(default)]
    pub templates: crate::incident_comms::templates::TemplatesConfig,
    /// Service name and `environment/name` → position in `services`.
    #[serde(skip)]
    index: std::collections::HashMap<String, usize>,
    /// What is allowed but probably a mistake (see [`Config::warnings`]).
    #[serde(skip)]
    warnings: Vec<ConfigError>,
}

impl Config {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let source = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError::at(
                path,
                "",
                None,
                format!("cannot read the configuration file: {e}"),
            )
            .help("pass an existing file, for example config/rollbot.example.toml")])
        })?;
        Config::parse(path, &source)
    }

    /// Parses and checks config text; `path` is used in messages. Reports
    /// every problem it can find, not just the first.
    pub fn parse(path: &Path, source: &str) -> Result<Config, ConfigErrors> {
        let read = read_all::<Config>(path, source);
        let mut errors = read.errors;
        if let Some(mut config) = read.config {
            for (i, s) in config.services.iter().enumerate() {
                config.index.entry(s.key()).or_insert(i);
                config.index.entry(s.name().to_string()).or_insert(i);
            }
            let checked = config.validate(path, source);
            if errors.is_empty() && checked.is_empty() {
                let mut warnings = config.backend_warnings(path, source);
                warnings.extend(config.tick_warnings(path, source));
                locate(&mut warnings, source);
                config.warnings = warnings;
                return Ok(config);
            }
            errors.extend(drop_echoes(checked, &read.skipped));
        }
        locate(&mut errors, source);
        // In the order of the file, whichever check found them; a note
        // about the whole file last.
        errors.sort_by_key(|e| (e.offset().is_none(), e.line, e.column));
        Err(ConfigErrors(errors))
    }

    pub fn demo() -> Config {
        Config::parse(Path::new("config/demo.toml"), DEMO_TOML)
            .expect("the embedded demo config is valid")
    }

    pub fn service(&self, name: &str) -> Option<&ServiceConfig> {
        self.index.get(name).map(|&i| &self.services[i])
    }

    /// Located warnings: allowed, but probably not what was meant
    /// (`check-config` prints them; `serve` logs them).
    pub fn warnings(&self) -> &[ConfigError] {
        &self.warnings
    }

    pub fn service_names(&self) -> Vec<&str> {
        self.services.iter().map(|s| s.name()).collect()
    }
}

/// What `Config::parse` says about `text` as the user reads it, or ""
/// when the config is accepted: for the tests of each section's checks.
#[cfg(test)]
pub(crate) fn parse_errors(text: &str) -> String {
    match Config::parse(std::path::Path::new("rollbot.toml"), text) {
        Ok(_) => String::new(),
        Err(e) => e.to_string(),
    }
}

#[cfg(test)]
mod tests;
