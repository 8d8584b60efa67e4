//! The sections of the file no stage owns by itself: the server, the store,
//! the engine's limits, channels, metrics and HTTP API clients.

use crate::config::{EnvRef, HumanDuration, SecretSource};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Where the controller reads canary and baseline metrics.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum MetricSourceKind {
    /// No metric source: nothing is watched automatically.
    #[default]
    None,
    Prometheus,
    /// The scenario simulator (demo, trials without Prometheus).
    Simulated,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    #[serde(default)]
    pub source: MetricSourceKind,
    /// Prometheus base URL, such as "http://prometheus:9090".
    pub url: Option<String>,
    pub bearer_token: Option<EnvRef>,
    pub bearer_token_file: Option<PathBuf>,
    pub basic_user: Option<String>,
    pub basic_password: Option<EnvRef>,
    pub basic_password_file: Option<PathBuf>,
    /// Time limit of one query.
    #[serde(default = "default_query_timeout")]
    pub timeout: HumanDuration,
    /// How often the controller judges every active rollout (one tick).
    #[serde(default = "default_interval")]
    pub interval: HumanDuration,
    /// Prometheus' scrape interval for the services' metrics; unset: asked
    /// of Prometheus (`/api/v1/targets`, else its global scrape_interval).
    /// The judge's evidence step is this or 10 s, whichever is longer.
    #[serde(default)]
    pub scrape_interval: Option<HumanDuration>,
    /// Query templates replacing the built-in defaults for every service.
    #[serde(default)]
    pub queries: MetricQueries,
    /// For `source = "simulated"`: service → scenario name from `rollbot bench judge`.
    #[serde(default)]
    pub scenarios: BTreeMap<String, String>,
}

fn default_query_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}

fn default_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(15))
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            source: MetricSourceKind::None,
            url: None,
            bearer_token: None,
            bearer_token_file: None,
            basic_user: None,
            basic_password: None,
            basic_password_file: None,
            timeout: default_query_timeout(),
            interval: default_interval(),
            scrape_interval: None,
            queries: MetricQueries::default(),
            scenarios: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address of the HTTP server (health, metrics, API, chat webhooks).
    #[serde(default = "default_listen")]
    pub listen: String,
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
        }
    }
}

/// `[store] kind`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// Embedded, in `[store] path`: one replica.
    #[default]
    Sled,
    /// A shared PostgreSQL database at `[store] url`.
    Postgres,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Where state lives: the embedded sled database (one replica) or a
    /// shared PostgreSQL (several replicas).
    #[serde(default)]
    pub kind: StoreKind,
    /// PostgreSQL connection URL, as `${ENV_VAR}` (never the URL itself).
    pub url: Option<EnvRef>,
    /// Or a file holding the URL.
    pub url_file: Option<PathBuf>,
    /// Directory of the sled database (audit log, freezes, prompts).
    #[serde(default = "default_store_path")]
    pub path: PathBuf,
    /// Upper bound of the store's page cache, in MiB.
    #[serde(default = "default_cache_mb")]
    pub cache_mb: u64,
    /// Longest a store call may take; beyond it the call is refused and
    /// `/readyz` fails, instead of the server hanging.
    #[serde(default = "default_store_timeout")]
    pub timeout: HumanDuration,
    /// How long an idempotency key's outcome is kept for repeats.
    #[serde(default = "default_idempotency_ttl")]
    pub idempotency_ttl: HumanDuration,
}

impl StoreConfig {
    /// Where the PostgreSQL URL comes from (`url` or `url_file`).
    pub fn url_source(&self) -> Result<Option<SecretSource>, String> {
        SecretSource::from_pair("url", self.url.as_ref(), self.url_file.as_ref())
    }
}

fn default_cache_mb() -> u64 {
    64
}

fn default_store_timeout() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(5))
}

fn default_idempotency_ttl() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(24 * 3600))
}

fn default_store_path() -> PathBuf {
    PathBuf::from("./rollbot-data")
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            kind: StoreKind::Sled,
            url: None,
            url_file: None,
            path: default_store_path(),
            cache_mb: default_cache_mb(),
            timeout: default_store_timeout(),
            idempotency_ttl: default_idempotency_ttl(),
        }
    }
}

/// Limits of the action engine.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// How long an action waits for another action on the same service.
    pub lock_wait: HumanDuration,
    /// Time limit of one backend call.
    pub backend_timeout: HumanDuration,
    /// How long a prompt stays answerable.
    pub prompt_ttl: HumanDuration,
    /// Consecutive failures that open a circuit breaker.
    pub breaker_failures: u32,
    /// How long an open breaker refuses calls before a trial call.
    pub breaker_cooldown: HumanDuration,
    /// Concurrent backend calls per backend.
    pub backend_pool: usize,
    /// Concurrent outbound chat messages.
    pub chat_pool: usize,
    /// Concurrent metric queries.
    pub metrics_pool: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            lock_wait: HumanDuration(Duration::from_secs(10)),
            backend_timeout: HumanDuration(Duration::from_secs(120)),
            prompt_ttl: HumanDuration(Duration::from_secs(30 * 60)),
            breaker_failures: 5,
            breaker_cooldown: HumanDuration(Duration::from_secs(30)),
            backend_pool: 4,
            chat_pool: 8,
            metrics_pool: 4,
        }
    }
}

/// A named channel, with its ID on each platform where it exists.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    /// Slack channel ID (`C…`), not its name: names change.
    pub slack: Option<String>,
    /// Discord channel ID (a snowflake).
    pub discord: Option<String>,
    /// Label used by the console adapter.
    pub console: Option<String>,
}

/// PromQL templates with `$service`, `$namespace`, `$track`, `$window`.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct MetricQueries {
    pub requests: Option<String>,
    pub errors: Option<String>,
    pub latency: Option<String>,
    pub cpu: Option<String>,
    pub memory: Option<String>,
    pub ready_failures: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    #[serde(default)]
    pub clients: Vec<ApiClient>,
}

/// A client of the HTTP API; it acts as `api:NAME` and needs roles like anyone.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiClient {
    pub name: String,
    pub token: Option<EnvRef>,
    pub token_file: Option<PathBuf>,
}

impl ApiClient {
    pub fn token_source(&self) -> Result<SecretSource, String> {
        SecretSource::from_pair("token", self.token.as_ref(), self.token_file.as_ref())?.ok_or_else(
            || {
                format!(
                    "api client {} has no token; set token = \"${{VAR}}\" or token_file",
                    self.name
                )
            },
        )
    }
}
