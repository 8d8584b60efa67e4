//! rollbot's configuration: one TOML file, read once, checked completely.
//!
//! Reading happens in two passes. Serde reads the file with
//! `deny_unknown_fields` and self-checking value types (durations, cron lines,
//! globs, time zones, secret references), so most mistakes are reported at
//! their exact line and column by the TOML parser. Then `validate` checks what
//! only the whole file can tell: a service naming a backend or channel that
//! does not exist, duplicate names, a chat section without its secrets.

mod error;
mod exec;
mod gates;
mod read;
mod secret;
mod values;

pub use error::{closest, line_col, ConfigError, ConfigErrors, LineIndex};
pub use gates::GatesConfig;
pub use secret::{EnvRef, SecretSource, SecretValue};
pub use values::{
    check_glob, parse_crontab, parse_duration, CronSchedule, GlobPattern, HumanDuration, TimeZone,
};

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
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
    pub roles: BTreeMap<crate::roles::Role, Vec<RoleGrant>>,
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
    /// Service name and `environment/name` → position in `services`.
    #[serde(skip)]
    index: std::collections::HashMap<String, usize>,
    /// What is allowed but probably a mistake (see [`Config::warnings`]).
    #[serde(skip)]
    warnings: Vec<ConfigError>,
}

/// `[leader_election]`: replicas compete for a `coordination.k8s.io/v1`
/// Lease and only the holder acts; the others answer not-ready.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct LeaderElectionConfig {
    /// Name of the Lease (default `rollbot`).
    #[serde(default)]
    pub lease: Option<String>,
    /// Namespace of the Lease (default: the pod's namespace, else `default`).
    #[serde(default)]
    pub namespace: Option<String>,
    /// This replica's name in the Lease (default: the `POD_NAME`
    /// environment variable, else the host name).
    #[serde(default)]
    pub identity: Option<String>,
    /// How long a Lease nobody renews stays taken (default 15s).
    #[serde(default)]
    pub lease_duration: Option<HumanDuration>,
    /// How long after its last renewal was sent a holder keeps acting
    /// (default 10s); shorter than `lease_duration`.
    #[serde(default)]
    pub renew_deadline: Option<HumanDuration>,
    /// Pause between attempts to take or renew the Lease (default 2s);
    /// shorter than `renew_deadline`.
    #[serde(default)]
    pub retry_period: Option<HumanDuration>,
    /// API server URL; default: the in-cluster service account, else the
    /// kubeconfig.
    #[serde(default)]
    pub api_server: Option<String>,
    /// Bearer token: `"${ENV_VAR}"`, or `token_file`.
    #[serde(default)]
    pub token: Option<EnvRef>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// PEM file with the cluster's CA certificates for an https `api_server`.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

impl LeaderElectionConfig {
    /// The settings with defaults filled in; `identity` falls back to
    /// `POD_NAME`, then the host name.
    pub fn settings(&self) -> crate::leader::ElectionSettings {
        let secs = |d: &Option<HumanDuration>, default: u64| {
            d.map(|d| d.0)
                .unwrap_or(std::time::Duration::from_secs(default))
        };
        let identity = self
            .identity
            .clone()
            .or_else(|| std::env::var("POD_NAME").ok().filter(|s| !s.is_empty()))
            .or_else(|| {
                std::fs::read_to_string("/etc/hostname")
                    .ok()
                    .map(|h| h.trim().to_string())
                    .filter(|s| !s.is_empty())
            })
            .unwrap_or_else(|| format!("rollbot-{}", std::process::id()));
        crate::leader::ElectionSettings {
            connection: crate::backend::kube_common::KubeConnection::from_config(
                &self.api_server,
                self.token.as_ref(),
                self.token_file.as_ref(),
                &self.namespace,
                None,
                &self.ca_file,
            ),
            lease: self.lease.clone().unwrap_or_else(|| "rollbot".into()),
            namespace: self.namespace.clone(),
            identity,
            lease_duration: secs(&self.lease_duration, 15),
            renew_deadline: secs(&self.renew_deadline, 10),
            retry_period: secs(&self.retry_period, 2),
        }
    }
}

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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
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

/// How a backend is reached. One variant per implementation in `src/backend/`.
#[derive(Debug, Deserialize, Clone)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum BackendConfig {
    /// In memory, for the demo and tests.
    Simulated {
        /// Added to every call, to make actions visible in the demo.
        #[serde(default)]
        latency: Option<HumanDuration>,
        /// Revision history per service, oldest first; the last is live.
        #[serde(default)]
        history: BTreeMap<String, Vec<String>>,
    },
    /// Runs a program per action.
    Exec {
        /// Program to run (absolute path or on PATH).
        program: String,
        /// Arguments; `{action}`, `{service}`, `{environment}`, `{revision}`,
        /// `{reason}`, `{actor}`, `{correlation_id}`, `{full}` are filled in
        /// once, from the template only.
        #[serde(default)]
        args: Vec<String>,
        /// Time limit of one run.
        #[serde(default)]
        timeout: Option<HumanDuration>,
        /// Actions the program supports besides rollback, among `promote`,
        /// `pause`, `resume`, `preflight`, `verify`, `status`.
        #[serde(default)]
        supports: Vec<String>,
        /// Names of rollbot's environment variables the program sees; it
        /// gets nothing else from rollbot's environment (which holds its
        /// secrets) besides the `ROLLBOT_*` variables of the action.
        /// Default: PATH, HOME, LANG, LC_ALL, TZ.
        #[serde(default)]
        env: Option<Vec<String>>,
    },
    /// POSTs each action as signed JSON to a URL (see the README for the
    /// signature scheme receivers check).
    Webhook {
        /// Where actions are POSTed (`http://` or `https://`).
        url: String,
        /// Optional URL polled (signed GET) after an action until the
        /// receiver answers `{"state": "done"|"failed"|"running"}`;
        /// `{service}`, `{environment}`, `{action}`, `{correlation_id}` and
        /// `{idempotency_key}` are filled in.
        #[serde(default)]
        status_url: Option<String>,
        /// HMAC-SHA256 signing secret: `"${ENV_VAR}"`, or `secret_file`.
        #[serde(default)]
        secret: Option<EnvRef>,
        #[serde(default)]
        secret_file: Option<PathBuf>,
        /// Time limit of one request (default 10s).
        #[serde(default)]
        timeout: Option<HumanDuration>,
        /// Retries after the first attempt on 5xx, connection errors and
        /// timeouts, with the same idempotency key (default 3, at most 10).
        #[serde(default)]
        retries: Option<u32>,
        /// Wait before the first retry, doubled each time (default 500ms).
        #[serde(default)]
        backoff: Option<HumanDuration>,
        /// How long `status_url` is polled before verification gives up
        /// (default 60s).
        #[serde(default)]
        status_timeout: Option<HumanDuration>,
        /// Pause between polls (default 2s).
        #[serde(default)]
        status_interval: Option<HumanDuration>,
    },
    /// Rolls back by committing to a GitOps repository (Argo CD, Flux).
    Gitops {
        /// Clone URL (`https://…`, `ssh://…`, `git@host:…`) or a local path.
        repository: String,
        /// Branch Argo CD / Flux deploys from (default `main`).
        #[serde(default)]
        branch: Option<String>,
        /// File holding the service's revision, relative to the repository
        /// root; `{service}` and `{environment}` are filled in. A service's
        /// `target.file` overrides it.
        file: String,
        /// Dotted YAML key path of the revision in `file` (default
        /// `image.tag`); a service's `target.key` overrides it.
        #[serde(default)]
        key: Option<String>,
        /// `set-tag` (default): set `key` back to its previous value;
        /// `revert`: revert the newest commit that changed `file`.
        #[serde(default)]
        mode: crate::backend::gitops::GitopsMode,
        /// Where the clone is kept (default: a directory under the system's
        /// temporary directory named after the backend).
        #[serde(default)]
        workdir: Option<PathBuf>,
        /// Private SSH key for `ssh://` and `git@` URLs.
        #[serde(default)]
        ssh_key_file: Option<PathBuf>,
        /// HTTPS token: `"${ENV_VAR}"`, or `token_file`. Sent as an HTTP
        /// header through git's environment, never in the URL or arguments.
        #[serde(default)]
        token: Option<EnvRef>,
        #[serde(default)]
        token_file: Option<PathBuf>,
        /// User name sent with the token (default `x-access-token`).
        #[serde(default)]
        token_user: Option<String>,
        /// Commit author (default `rollbot` <rollbot@localhost>).
        #[serde(default)]
        author_name: Option<String>,
        #[serde(default)]
        author_email: Option<String>,
        /// Time limit of one git command (default 60s).
        #[serde(default)]
        timeout: Option<HumanDuration>,
    },
    /// Switches a feature flag in Unleash: rollback turns it off in the
    /// environment, promote turns it on or raises its gradual rollout.
    Unleash {
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
    },
    /// Rolls back a Kubernetes Deployment like `kubectl rollout undo`
    /// (or scales a canary Deployment to zero, or pins an image); a
    /// service's `[services.target]` names `namespace`, `deployment`,
    /// `mechanism`, `canary_deployment`, `container`.
    KubernetesDeployment {
        /// API server URL; default: the in-cluster service account, else
        /// the kubeconfig (`KUBECONFIG` or `~/.kube/config`).
        #[serde(default)]
        api_server: Option<String>,
        /// Bearer token: `"${ENV_VAR}"`, or `token_file` (re-read as it rotates).
        #[serde(default)]
        token: Option<EnvRef>,
        #[serde(default)]
        token_file: Option<PathBuf>,
        /// PEM file with the cluster's CA certificates, for an https
        /// `api_server` the system's roots do not vouch for.
        #[serde(default)]
        ca_file: Option<PathBuf>,
        /// Namespace of services whose target names none (default: the
        /// inferred one, else `default`).
        #[serde(default)]
        namespace: Option<String>,
        /// Time limit of one API request (default 10s).
        #[serde(default)]
        request_timeout: Option<HumanDuration>,
        /// How long verification waits for the rollout to complete; with
        /// one request it must end before [engine] backend_timeout
        /// (default 5m, or less to fit).
        #[serde(default)]
        rollout_timeout: Option<HumanDuration>,
        /// Pause between reads while waiting (default 2s).
        #[serde(default)]
        poll_interval: Option<HumanDuration>,
    },
    /// Answers Flagger's confirm and rollback webhooks (`/gates/flagger/…`);
    /// a service's `target.namespace` and `target.canary` name its Canary.
    Flagger {
        /// How long an action waits for Flagger to call the opened gate
        /// (default 20s); Flagger calls once per analysis interval.
        #[serde(default)]
        verify_wait: Option<HumanDuration>,
    },
    /// Aborts, undoes, promotes, pauses and resumes an Argo Rollouts
    /// `Rollout` with the patches `kubectl argo rollouts` sends; a service's
    /// `[services.target]` names `namespace`, `rollout`, `mechanism`
    /// (`abort` or `undo`).
    ArgoRollouts {
        /// API server URL; default: the in-cluster service account, else
        /// the kubeconfig.
        #[serde(default)]
        api_server: Option<String>,
        /// Bearer token: `"${ENV_VAR}"`, or `token_file` (re-read as it rotates).
        #[serde(default)]
        token: Option<EnvRef>,
        #[serde(default)]
        token_file: Option<PathBuf>,
        #[serde(default)]
        ca_file: Option<PathBuf>,
        #[serde(default)]
        namespace: Option<String>,
        /// Time limit of one API request (default 10s).
        #[serde(default)]
        request_timeout: Option<HumanDuration>,
        /// How long verification waits for the Argo Rollouts controller; with
        /// one request it must end before [engine] backend_timeout.
        #[serde(default)]
        rollout_timeout: Option<HumanDuration>,
        /// Pause between reads while waiting (default 2s).
        #[serde(default)]
        poll_interval: Option<HumanDuration>,
    },
    /// Shifts traffic between the stable and canary destinations of an
    /// Istio VirtualService; a service's `[services.target]` names
    /// `namespace`, `virtual_service`, `route`, `stable_subset`,
    /// `canary_subset` (or `stable_host`, `canary_host`), `rollback_steps`,
    /// `step_interval`, `promote_steps`.
    Istio {
        /// API server URL; default: the in-cluster service account, else
        /// the kubeconfig.
        #[serde(default)]
        api_server: Option<String>,
        /// Bearer token: `"${ENV_VAR}"`, or `token_file` (re-read as it rotates).
        #[serde(default)]
        token: Option<EnvRef>,
        #[serde(default)]
        token_file: Option<PathBuf>,
        #[serde(default)]
        ca_file: Option<PathBuf>,
        #[serde(default)]
        namespace: Option<String>,
        /// Time limit of one API request (default 10s).
        #[serde(default)]
        request_timeout: Option<HumanDuration>,
        /// `networking.istio.io` version: `v1` (default, Istio 1.22+) or `v1beta1`.
        #[serde(default)]
        api_version: Option<String>,
    },
}

impl BackendConfig {
    pub fn type_name(&self) -> &'static str {
        match self {
            BackendConfig::Simulated { .. } => "simulated",
            BackendConfig::Exec { .. } => "exec",
            BackendConfig::Webhook { .. } => "webhook",
            BackendConfig::Gitops { .. } => "gitops",
            BackendConfig::Unleash { .. } => "unleash",
            BackendConfig::KubernetesDeployment { .. } => "kubernetes-deployment",
            BackendConfig::Flagger { .. } => "flagger",
            BackendConfig::ArgoRollouts { .. } => "argo-rollouts",
            BackendConfig::Istio { .. } => "istio",
        }
    }
}

/// What the controller does with a `failing` verdict.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnFailing {
    /// Roll back at once (the evidence is already statistically sound).
    #[default]
    AutoRollback,
    /// Post a prompt with Roll back / Continue and wait for a person.
    PageAndSuggest,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    pub name: Spanned<String>,
    #[serde(default = "default_environment")]
    pub environment: String,
    /// Name of a `[backends.NAME]` table.
    pub backend: Spanned<String>,
    /// Channel (from `[channels]`) for summaries, prompts and results.
    pub deploy_channel: Option<Spanned<String>>,
    /// Channel for incident status updates.
    pub incident_channel: Option<Spanned<String>>,
    /// A promote needs a second person's approval.
    #[serde(default)]
    pub critical: bool,
    #[serde(default)]
    pub on_failing: OnFailing,
    /// Promote a healthy canary at the end of each step.
    #[serde(default)]
    pub auto_promote: bool,
    /// Watch this service's canary whenever rollbot runs (otherwise only
    /// rollouts announced through `POST /api/v1/rollouts` are watched).
    #[serde(default)]
    pub watch: bool,
    /// Kubernetes namespace (or other grouping) for `$namespace` in queries.
    #[serde(default)]
    pub namespace: Option<String>,
    /// After a rollback, automatic promotion of this service is held this
    /// long (people can still promote), so automation does not push a fix
    /// out before anyone has looked.
    #[serde(default = "default_cooldown")]
    pub cooldown: HumanDuration,
    /// After a rollback, how long the error rate must stay within the
    /// baseline's range before the incident is marked Resolved.
    #[serde(default = "default_resolve_after")]
    pub resolve_after: HumanDuration,
    /// How long a canary stays at each step before `auto_promote` moves it on.
    #[serde(default = "default_step")]
    pub step_interval: HumanDuration,
    /// Settings the backend needs for this service (namespace, object name…).
    #[serde(default)]
    pub target: BTreeMap<String, String>,
    /// PromQL templates; defaults follow the `http_requests_total` conventions.
    #[serde(default)]
    pub metrics: MetricQueries,
    /// The canary judge's policy for this service.
    #[serde(default)]
    pub judge: crate::judge::JudgePolicy,
    /// `false` switches the controller's automatic actions off for good:
    /// it still judges and posts summaries, but asks instead of rolling
    /// back, pausing or promoting. `/auto <service> off` does the same for
    /// a while.
    #[serde(default = "default_true")]
    pub automation: bool,
    /// A prompt nobody answers escalates after this long, one step of
    /// `escalation` per period.
    #[serde(default = "default_escalate_after")]
    pub escalate_after: HumanDuration,
    /// Who is mentioned when a prompt escalates, in order (on-call, then
    /// team lead, then manager): `slack-group:S…`, `slack:U…`,
    /// `discord-role:…`, `discord:…`.
    #[serde(default)]
    pub escalation: Vec<String>,
    /// Re-post the rollout's summary as a new message on this crontab
    /// schedule (5 fields, UTC), for long rollouts.
    #[serde(default)]
    pub summary_schedule: Option<CronSchedule>,
}

fn default_true() -> bool {
    true
}

fn default_escalate_after() -> HumanDuration {
    HumanDuration(Duration::from_secs(600))
}

fn default_cooldown() -> HumanDuration {
    HumanDuration(Duration::from_secs(30 * 60))
}

fn default_resolve_after() -> HumanDuration {
    HumanDuration(Duration::from_secs(300))
}

fn default_step() -> HumanDuration {
    HumanDuration(Duration::from_secs(300))
}

fn default_environment() -> String {
    "prod".into()
}

impl ServiceConfig {
    pub fn key(&self) -> String {
        format!("{}/{}", self.environment, self.name.as_ref())
    }
    pub fn name(&self) -> &str {
        self.name.as_ref()
    }
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

/// One grant of a role: who holds it, on which services.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleGrant {
    /// Platform-qualified immutable IDs: `slack:U…`, `slack-group:S…`,
    /// `discord:…`, `discord-role:…`, `console:NAME`, `api:NAME`, `system:controller`.
    pub members: Vec<Spanned<String>>,
    /// Service globs over `ENVIRONMENT/NAME` (or NAME); default: every service.
    #[serde(default = "every_service")]
    pub services: Vec<GlobPattern>,
}

fn every_service() -> Vec<GlobPattern> {
    vec![GlobPattern("*".into())]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FreezeConfig {
    /// Length of a `/freeze` without `for DURATION`.
    #[serde(default = "default_freeze")]
    pub default_duration: HumanDuration,
    #[serde(default)]
    pub windows: Vec<WindowConfig>,
}

fn default_freeze() -> HumanDuration {
    HumanDuration(Duration::from_secs(4 * 3600))
}

impl Default for FreezeConfig {
    fn default() -> Self {
        FreezeConfig {
            default_duration: default_freeze(),
            windows: Vec::new(),
        }
    }
}

/// A scheduled window with Argo CD sync-window semantics.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct WindowConfig {
    pub name: String,
    pub kind: crate::freeze::WindowKind,
    /// Crontab line (5 fields) for the window's start.
    pub schedule: CronSchedule,
    pub duration: HumanDuration,
    #[serde(default)]
    pub timezone: TimeZone,
    #[serde(default = "every_service")]
    pub services: Vec<GlobPattern>,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ChatConfig {
    pub slack: Option<SlackConfig>,
    pub discord: Option<DiscordConfig>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum SlackMode {
    #[default]
    Http,
    Socket,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    #[serde(default)]
    pub mode: SlackMode,
    #[serde(default = "default_slack_api")]
    pub api_url: String,
    pub signing_secret: Option<EnvRef>,
    pub signing_secret_file: Option<PathBuf>,
    pub bot_token: Option<EnvRef>,
    pub bot_token_file: Option<PathBuf>,
    /// App-level `xapp-` token, for Socket Mode.
    pub app_token: Option<EnvRef>,
    pub app_token_file: Option<PathBuf>,
    /// How long a user group's member list (`usergroups.users.list`) is
    /// trusted before it is asked again. A member removed from a group keeps
    /// the group's roles at most this long.
    #[serde(default = "default_usergroup_ttl")]
    pub usergroup_cache_ttl: HumanDuration,
    /// The least time between two messages rollbot sends to one channel;
    /// Slack allows about one per second per channel. Messages wait in a
    /// per-channel queue, none is dropped.
    #[serde(default = "default_channel_interval")]
    pub channel_interval: HumanDuration,
    /// How many times a Web API call that failed with a 5xx or a dropped
    /// connection is retried, with exponential backoff from 500 ms. A 429 is
    /// always retried after its `Retry-After`.
    #[serde(default = "default_slack_retries")]
    pub retries: u32,
}

fn default_usergroup_ttl() -> HumanDuration {
    HumanDuration(Duration::from_secs(300))
}

fn default_channel_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}

fn default_slack_retries() -> u32 {
    4
}

impl SlackConfig {
    pub fn signing_secret_source(&self) -> Result<Option<SecretSource>, String> {
        SecretSource::from_pair(
            "signing_secret",
            self.signing_secret.as_ref(),
            self.signing_secret_file.as_ref(),
        )
    }
    pub fn bot_token_source(&self) -> Result<Option<SecretSource>, String> {
        SecretSource::from_pair(
            "bot_token",
            self.bot_token.as_ref(),
            self.bot_token_file.as_ref(),
        )
    }
    pub fn app_token_source(&self) -> Result<Option<SecretSource>, String> {
        SecretSource::from_pair(
            "app_token",
            self.app_token.as_ref(),
            self.app_token_file.as_ref(),
        )
    }
}

fn default_slack_api() -> String {
    "https://slack.com/api/".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscordConfig {
    pub application_id: String,
    /// The application's Ed25519 public key (hex); public, so written inline.
    pub public_key: String,
    pub bot_token: Option<EnvRef>,
    pub bot_token_file: Option<PathBuf>,
    #[serde(default = "default_discord_api")]
    pub api_url: String,
    /// Guilds where commands are accepted (empty: any). Also the guilds
    /// `rollbot commands discord-register` uses when given no `--guild`.
    #[serde(default)]
    pub guild_ids: Vec<String>,
    /// Channels (or threads) where commands are accepted (empty: any).
    /// Buttons on rollbot's own prompts are answered wherever they are.
    #[serde(default)]
    pub channel_ids: Vec<String>,
    /// Open the gateway for mention-style commands. Not built into this
    /// release: `true` is refused at load time.
    #[serde(default)]
    pub gateway: bool,
}

impl DiscordConfig {
    pub fn bot_token_source(&self) -> Result<SecretSource, String> {
        SecretSource::from_pair(
            "bot_token",
            self.bot_token.as_ref(),
            self.bot_token_file.as_ref(),
        )?
        .ok_or_else(|| "[chat.discord] needs bot_token or bot_token_file".to_string())
    }
}

fn is_snowflake(s: &str) -> bool {
    (1..=20).contains(&s.len()) && s.chars().all(|c| c.is_ascii_digit())
}

fn default_discord_api() -> String {
    "https://discord.com/api/v10".into()
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
        let read = read::read_all(path, source);
        let mut errors = read.errors;
        if let Some(mut config) = read.config {
            for (i, s) in config.services.iter().enumerate() {
                config.index.entry(s.key()).or_insert(i);
                config.index.entry(s.name().to_string()).or_insert(i);
            }
            let checked = config.validate(path, source);
            if errors.is_empty() && checked.is_empty() {
                let mut warnings = config.exec_warnings(path, source);
                error::locate(&mut warnings, source);
                config.warnings = warnings;
                return Ok(config);
            }
            errors.extend(read::drop_echoes(checked, &read.skipped));
        }
        error::locate(&mut errors, source);
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

    /// The checks that need the whole file.
    fn validate(&self, path: &Path, source: &str) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let lines = LineIndex::new(source);
        let at = |span: std::ops::Range<usize>, msg: String| {
            ConfigError::at(path, source, Some(span), msg)
        };
        let backend_names: Vec<&str> = self.backends.keys().map(String::as_str).collect();
        let channel_names: Vec<&str> = self.channels.keys().map(String::as_str).collect();

        let mut seen = BTreeMap::new();
        for s in &self.services {
            let name = s.name.as_ref();
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                errors.push(
                    at(
                        s.name.span(),
                        format!("service name `{name}` must be letters, digits, `-`, `_` or `.`"),
                    )
                    .help(
                        "write a name such as \"checkout\"; put the environment in `environment`",
                    ),
                );
            }
            if let Some(first) = seen.insert(name.to_string(), s.name.span()) {
                let (l, _) = lines.line_col(first.start);
                errors.push(
                    at(
                        s.name.span(),
                        format!("service `{name}` is defined twice (first at line {l})"),
                    )
                    .help("give each service a unique name"),
                );
            }
            if !self.backends.contains_key(s.backend.as_ref()) {
                errors.push(unknown_ref(
                    at(
                        s.backend.span(),
                        format!(
                            "service `{name}` names backend `{}`, which is not defined",
                            s.backend.as_ref()
                        ),
                    ),
                    s.backend.as_ref(),
                    &backend_names,
                    "backends",
                ));
            }
            for ch in [&s.deploy_channel, &s.incident_channel]
                .into_iter()
                .flatten()
            {
                if !self.channels.contains_key(ch.as_ref()) {
                    errors.push(unknown_ref(
                        at(
                            ch.span(),
                            format!(
                                "service `{name}` names channel `{}`, which is not defined",
                                ch.as_ref()
                            ),
                        ),
                        ch.as_ref(),
                        &channel_names,
                        "channels",
                    ));
                }
            }
            if let Err(e) = s.judge.validate() {
                errors.push(at(
                    s.name.span(),
                    format!("service `{name}`: judge policy: {e}"),
                ));
            }
            for who in &s.escalation {
                if let Err(e) = crate::roles::check_member(who) {
                    errors.push(at(
                        s.name.span(),
                        format!("service `{name}`: escalation: {e}"),
                    ));
                }
            }
            if s.escalate_after.0.is_zero() {
                errors.push(at(
                    s.name.span(),
                    format!("service `{name}`: escalate_after must be longer than 0s"),
                ));
            }
        }

        for grants in self.roles.values() {
            for g in grants {
                for m in &g.members {
                    if let Err(e) = crate::roles::check_member(m.as_ref()) {
                        errors.push(at(m.span(), e));
                    }
                }
            }
        }

        for (name, backend) in &self.backends {
            if let BackendConfig::Webhook {
                url,
                status_url,
                secret,
                secret_file,
                retries,
                timeout,
                backoff,
                status_timeout,
                ..
            } = backend.as_ref()
            {
                // The engine cuts every backend call at backend_timeout; the
                // webhook's own limits must end first so its report survives.
                let d = crate::backend::webhook::WebhookSettings::default();
                let worst = crate::backend::webhook::worst_case(
                    timeout.map(|t| t.0).unwrap_or(d.timeout),
                    retries.unwrap_or(d.retries).min(10),
                    backoff.map(|t| t.0).unwrap_or(d.backoff),
                );
                let limit = self.engine.backend_timeout.0;
                // Polling is a separate call (verify), with its own limit.
                let poll = match status_url {
                    Some(_) => status_timeout.map(|t| t.0).unwrap_or(d.status_timeout),
                    None => Duration::ZERO,
                };
                if retries.unwrap_or(d.retries) <= 10 && (worst >= limit || poll >= limit) {
                    errors.push(
                        at(
                            backend.span(),
                            format!(
                                "backend `{name}`: a request with its retries can take {}{}, but [engine] backend_timeout is {}",
                                crate::domain::human_duration(worst),
                                if status_url.is_some() {
                                    format!(" and polling status_url {}", crate::domain::human_duration(poll))
                                } else {
                                    String::new()
                                },
                                crate::domain::human_duration(limit)
                            ),
                        )
                        .help("lower timeout, retries or status_timeout, or raise backend_timeout in [engine]"),
                    );
                }
                for (key, u) in [("url", Some(url)), ("status_url", status_url.as_ref())] {
                    if let Some(u) = u {
                        if !(u.starts_with("http://") || u.starts_with("https://")) {
                            errors.push(
                                at(
                                    backend.span(),
                                    format!("backend `{name}`: {key} `{u}` is not an http:// or https:// URL"),
                                )
                                .help("write the receiver's full URL, for example \"https://deploy.example.com/rollbot\""),
                            );
                        }
                    }
                }
                match SecretSource::from_pair("secret", secret.as_ref(), secret_file.as_ref()) {
                    Err(e) => errors.push(at(backend.span(), format!("backend `{name}`: {e}"))),
                    Ok(None) => errors.push(
                        at(backend.span(), format!("backend `{name}`: a webhook needs a signing secret"))
                            .help("write secret = \"${ROLLBOT_WEBHOOK_SECRET}\" or secret_file = \"/path/to/secret\""),
                    ),
                    Ok(Some(_)) => {}
                }
                if retries.is_some_and(|r| r > 10) {
                    errors.push(
                        at(
                            backend.span(),
                            format!("backend `{name}`: retries must be at most 10"),
                        )
                        .help(
                            "a rollback should not wait minutes on a receiver that keeps failing",
                        ),
                    );
                }
            }
            if let BackendConfig::Gitops {
                file,
                key,
                token,
                token_file,
                ssh_key_file,
                repository,
                ..
            } = backend.as_ref()
            {
                if repository.trim().is_empty() {
                    errors.push(
                        at(
                            backend.span(),
                            format!("backend `{name}`: repository is empty"),
                        )
                        .help(
                            "write the clone URL, for example \"git@github.com:acme/deploy.git\"",
                        ),
                    );
                }
                if file.is_empty() || file.starts_with('/') || file.split('/').any(|p| p == "..") {
                    errors.push(
                        at(backend.span(), format!("backend `{name}`: file `{file}` must be a path inside the repository"))
                            .help("write it relative to the repository root, for example \"apps/{service}/values-{environment}.yaml\""),
                    );
                }
                if let Some(k) = key {
                    if k.is_empty() || k.split('.').any(str::is_empty) {
                        errors.push(
                            at(
                                backend.span(),
                                format!("backend `{name}`: key `{k}` is not a dotted key path"),
                            )
                            .help("write for example \"image.tag\""),
                        );
                    }
                }
                if let Err(e) =
                    SecretSource::from_pair("token", token.as_ref(), token_file.as_ref())
                {
                    errors.push(at(backend.span(), format!("backend `{name}`: {e}")));
                }
                if ssh_key_file.is_some() && (token.is_some() || token_file.is_some()) {
                    errors.push(
                        at(
                            backend.span(),
                            format!("backend `{name}`: both ssh_key_file and a token are set"),
                        )
                        .help("use ssh_key_file for ssh URLs, a token for https URLs"),
                    );
                }
            }
            if let BackendConfig::KubernetesDeployment {
                api_server,
                token,
                token_file,
                request_timeout,
                rollout_timeout,
                poll_interval,
                ..
            } = backend.as_ref()
            {
                if let Some(u) = api_server {
                    if !(u.starts_with("http://") || u.starts_with("https://")) {
                        errors.push(
                            at(backend.span(), format!("backend `{name}`: api_server `{u}` is not an http:// or https:// URL"))
                                .help("write the API server's URL, for example \"https://10.0.0.1:6443\", or leave it out to use the in-cluster service account or the kubeconfig"),
                        );
                    }
                }
                if let Err(e) =
                    SecretSource::from_pair("token", token.as_ref(), token_file.as_ref())
                {
                    errors.push(at(backend.span(), format!("backend `{name}`: {e}")));
                }
                // The engine cuts verification at backend_timeout: the
                // rollout wait must end first so its report survives.
                let limit = self.engine.backend_timeout.0;
                let request = request_timeout
                    .map(|t| t.0)
                    .unwrap_or(crate::backend::kube_common::DEFAULT_REQUEST_TIMEOUT);
                match rollout_timeout {
                    Some(r) if r.0 + request >= limit => errors.push(
                        at(backend.span(), format!(
                            "backend `{name}`: rollout_timeout ({}) plus one request ({}) is not shorter than [engine] backend_timeout ({})",
                            crate::domain::human_duration(r.0),
                            crate::domain::human_duration(request),
                            crate::domain::human_duration(limit)
                        ))
                        .help("lower rollout_timeout or request_timeout, or raise backend_timeout in [engine]"),
                    ),
                    None if crate::backend::kubernetes_deployment::default_rollout_timeout_for(limit, request).is_zero() => errors.push(
                        at(backend.span(), format!(
                            "backend `{name}`: [engine] backend_timeout ({}) leaves no time to wait for a rollout after a request ({})",
                            crate::domain::human_duration(limit),
                            crate::domain::human_duration(request)
                        ))
                        .help("raise backend_timeout in [engine], for example to \"120s\""),
                    ),
                    _ => {}
                }
                for (key, d) in [
                    ("request_timeout", request_timeout),
                    ("poll_interval", poll_interval),
                ] {
                    if d.is_some_and(|d| d.0.is_zero() || d.0 >= limit) {
                        errors.push(
                            at(backend.span(), format!(
                                "backend `{name}`: {key} must be longer than 0s and shorter than [engine] backend_timeout ({})",
                                crate::domain::human_duration(limit)
                            )),
                        );
                    }
                }
                for s in self.services.iter().filter(|s| s.backend.as_ref() == name) {
                    if let Err(e) = crate::backend::kubernetes_deployment::check_target(&s.target) {
                        errors.push(
                            at(
                                s.backend.span(),
                                format!("service `{}`: {e}", s.name.as_ref()),
                            )
                            .help("set it in the service's [services.target] table"),
                        );
                    }
                }
            }
            if let BackendConfig::ArgoRollouts {
                api_server,
                token,
                token_file,
                request_timeout,
                rollout_timeout,
                poll_interval,
                ..
            } = backend.as_ref()
            {
                let problems = crate::backend::argo_rollouts::check_backend(
                    api_server.as_deref(),
                    SecretSource::from_pair("token", token.as_ref(), token_file.as_ref()).err(),
                    self.engine.backend_timeout.0,
                    request_timeout.map(|t| t.0),
                    rollout_timeout.map(|t| t.0),
                    poll_interval.map(|t| t.0),
                    true,
                );
                for (msg, help) in problems {
                    let e = at(backend.span(), format!("backend `{name}`: {msg}"));
                    errors.push(match help {
                        Some(h) => e.help(h),
                        None => e,
                    });
                }
                for s in self.services.iter().filter(|s| s.backend.as_ref() == name) {
                    if let Err(e) = crate::backend::argo_rollouts::check_target(&s.target) {
                        errors.push(
                            at(
                                s.backend.span(),
                                format!("service `{}`: {e}", s.name.as_ref()),
                            )
                            .help("set it in the service's [services.target] table"),
                        );
                    }
                }
            }
            if let BackendConfig::Istio {
                api_server,
                token,
                token_file,
                request_timeout,
                api_version,
                ..
            } = backend.as_ref()
            {
                let limit = self.engine.backend_timeout.0;
                let problems = crate::backend::argo_rollouts::check_backend(
                    api_server.as_deref(),
                    SecretSource::from_pair("token", token.as_ref(), token_file.as_ref()).err(),
                    limit,
                    request_timeout.map(|t| t.0),
                    None,
                    None,
                    // Nothing waits for a controller: one request is the limit.
                    false,
                );
                for (msg, help) in problems {
                    let e = at(backend.span(), format!("backend `{name}`: {msg}"));
                    errors.push(match help {
                        Some(h) => e.help(h),
                        None => e,
                    });
                }
                if let Some(v) = api_version {
                    if !crate::backend::istio::API_VERSIONS.contains(&v.as_str()) {
                        errors.push(
                            at(
                                backend.span(),
                                format!(
                                    "backend `{name}`: api_version `{v}` is not one of v1, v1beta1"
                                ),
                            )
                            .help("write \"v1\" for Istio 1.22 and later, \"v1beta1\" before"),
                        );
                    }
                }
                for s in self.services.iter().filter(|s| s.backend.as_ref() == name) {
                    if let Err(e) = crate::backend::istio::check_target(&s.target, limit) {
                        errors.push(
                            at(
                                s.backend.span(),
                                format!("service `{}`: {e}", s.name.as_ref()),
                            )
                            .help("set it in the service's [services.target] table"),
                        );
                    }
                }
            }
            if let BackendConfig::Exec { supports, .. } = backend.as_ref() {
                for s in supports {
                    if !crate::backend::exec::SUPPORTABLE.contains(&s.as_str()) {
                        errors.push(at(backend.span(), format!(
                            "backend `{name}`: `{s}` in `supports` is not an action the exec backend knows"
                        )).help(format!("use some of: {}", crate::backend::exec::SUPPORTABLE.join(", "))));
                    }
                }
            }
            if let BackendConfig::Unleash {
                url,
                admin_token,
                admin_token_file,
                client_token,
                client_token_file,
                steps,
                timeout,
                verify_timeout,
                ..
            } = backend.as_ref()
            {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    errors.push(
                        at(
                            backend.span(),
                            format!(
                                "backend `{name}`: url `{url}` is not an http:// or https:// URL"
                            ),
                        )
                        .help(
                            "write Unleash's base URL, for example \"https://unleash.example.com\"",
                        ),
                    );
                }
                match SecretSource::from_pair("admin_token", admin_token.as_ref(), admin_token_file.as_ref()) {
                    Err(e) => errors.push(at(backend.span(), format!("backend `{name}`: {e}"))),
                    Ok(None) => errors.push(
                        at(backend.span(), format!("backend `{name}`: Unleash needs an admin API token"))
                            .help("write admin_token = \"${UNLEASH_ADMIN_TOKEN}\" or admin_token_file = \"/path/to/token\""),
                    ),
                    Ok(Some(_)) => {}
                }
                if let Err(e) = SecretSource::from_pair(
                    "client_token",
                    client_token.as_ref(),
                    client_token_file.as_ref(),
                ) {
                    errors.push(at(backend.span(), format!("backend `{name}`: {e}")));
                }
                if let Some(Err(e)) = steps.as_deref().map(crate::backend::unleash::check_steps) {
                    errors.push(at(backend.span(), format!("backend `{name}`: {e}")));
                }
                // Each call is cut at backend_timeout; the backend's own
                // limits must end first so its report survives.
                let d = crate::backend::unleash::UnleashSettings::default();
                let limit = self.engine.backend_timeout.0;
                let one = timeout.map(|t| t.0).unwrap_or(d.timeout);
                // A promote reads, raises, switches on and may put back: four
                // requests in a row. Polling ends with one more request.
                for (what, v) in [
                    ("four requests (4 × timeout)", one * 4),
                    (
                        "verification (verify_timeout + timeout)",
                        verify_timeout.map(|t| t.0).unwrap_or(d.verify_timeout) + one,
                    ),
                ] {
                    if v >= limit {
                        errors.push(
                            at(
                                backend.span(),
                                format!(
                                    "backend `{name}`: {what} can take {}, but [engine] backend_timeout is {}",
                                    crate::domain::human_duration(v),
                                    crate::domain::human_duration(limit)
                                ),
                            )
                            .help("lower timeout or verify_timeout, or raise backend_timeout in [engine]"),
                        );
                    }
                }
            }
        }

        // A flag is the only thing an Unleash backend needs from a service.
        for s in &self.services {
            let Some(BackendConfig::Unleash { .. }) =
                self.backends.get(s.backend.as_ref()).map(|b| b.as_ref())
            else {
                continue;
            };
            let name = s.name.as_ref();
            if s.target.get("flag").is_none_or(|f| f.trim().is_empty()) {
                errors.push(
                    at(
                        s.name.span(),
                        format!(
                            "service `{name}` uses Unleash backend `{}` but names no flag",
                            s.backend.as_ref()
                        ),
                    )
                    .help("add [services.target] with flag = \"the-flag-name\" under this service"),
                );
            }
            if let Some(Err(e)) = s
                .target
                .get("steps")
                .map(|t| crate::backend::unleash::parse_steps(t))
            {
                errors.push(at(s.name.span(), format!("service `{name}`: {e}")));
            }
        }

        let chat_secret = |key: &str,
                           env: Option<&EnvRef>,
                           file: Option<&PathBuf>,
                           required: bool,
                           section: &str|
         -> Option<ConfigError> {
            match SecretSource::from_pair(key, env, file) {
                Err(e) => Some(ConfigError::at(
                    path,
                    source,
                    find_span(source, section),
                    format!("[{section}]: {e}"),
                )),
                Ok(None) if required => Some(
                    ConfigError::at(
                        path,
                        source,
                        find_span(source, section),
                        format!("[{section}] needs {key}"),
                    )
                    .help(format!(
                        "write {key} = \"${{ENV_VAR}}\" or {key}_file = \"/path/to/secret\""
                    )),
                ),
                Ok(_) => None,
            }
        };
        if let Some(slack) = &self.chat.slack {
            errors.extend(chat_secret(
                "signing_secret",
                slack.signing_secret.as_ref(),
                slack.signing_secret_file.as_ref(),
                true,
                "chat.slack",
            ));
            errors.extend(chat_secret(
                "bot_token",
                slack.bot_token.as_ref(),
                slack.bot_token_file.as_ref(),
                true,
                "chat.slack",
            ));
            errors.extend(chat_secret(
                "app_token",
                slack.app_token.as_ref(),
                slack.app_token_file.as_ref(),
                slack.mode == SlackMode::Socket,
                "chat.slack",
            ));
        }
        if let Some(discord) = &self.chat.discord {
            errors.extend(chat_secret(
                "bot_token",
                discord.bot_token.as_ref(),
                discord.bot_token_file.as_ref(),
                true,
                "chat.discord",
            ));
            let key_ok = discord.public_key.len() == 64
                && discord.public_key.chars().all(|c| c.is_ascii_hexdigit());
            if !key_ok {
                errors.push(ConfigError::at(path, source, find_span(source, "chat.discord"), "[chat.discord] public_key must be the application's 64-hex-digit public key")
                    .help("copy PUBLIC KEY from the Discord developer portal, General Information"));
            }
            let section = find_span(source, "chat.discord");
            if !is_snowflake(&discord.application_id) {
                errors.push(ConfigError::at(path, source, section.clone(), format!("[chat.discord] application_id `{}` is not a Discord ID (a number)", discord.application_id))
                    .help("copy APPLICATION ID from the Discord developer portal, General Information"));
            }
            for (key, ids) in [
                ("guild_ids", &discord.guild_ids),
                ("channel_ids", &discord.channel_ids),
            ] {
                for id in ids.iter().filter(|i| !is_snowflake(i)) {
                    errors.push(ConfigError::at(path, source, section.clone(), format!("[chat.discord] {key}: `{id}` is not a Discord ID (a number)"))
                        .help("in Discord, turn on Developer Mode and use Copy ID; names change, IDs do not"));
                }
            }
            let api = discord.api_url.trim_end_matches('/');
            if !(api.starts_with("https://") || api.starts_with("http://"))
                || !api.ends_with("/api/v10")
            {
                errors.push(ConfigError::at(path, source, section.clone(), format!("[chat.discord] api_url `{}` must be an http(s) URL ending in /api/v10", discord.api_url))
                    .help("leave it out for https://discord.com/api/v10; a proxy or test server is written as http://HOST:PORT/api/v10"));
            }
            if discord.gateway {
                errors.push(ConfigError::at(path, source, section, "[chat.discord] gateway = true is not supported by this build of rollbot")
                    .help("remove it: commands and buttons arrive at POST /discord/interactions (set that URL as the application's Interactions Endpoint URL)"));
            }
        }
        if let Some(le) = &self.leader_election {
            let here = find_span(source, "leader_election");
            let e = |msg: String| ConfigError::at(path, source, here.clone(), msg);
            let st = le.settings();
            if st.renew_deadline >= st.lease_duration {
                errors.push(e(format!(
                    "[leader_election] renew_deadline ({}) must be shorter than lease_duration ({})",
                    crate::domain::human_duration(st.renew_deadline),
                    crate::domain::human_duration(st.lease_duration)
                ))
                .help("a holder must stop acting before another replica may take the Lease: for example lease_duration = \"15s\", renew_deadline = \"10s\""));
            }
            if st.retry_period.is_zero() || st.retry_period >= st.renew_deadline {
                errors.push(e(format!(
                    "[leader_election] retry_period ({}) must be longer than 0s and shorter than renew_deadline ({})",
                    crate::domain::human_duration(st.retry_period),
                    crate::domain::human_duration(st.renew_deadline)
                ))
                .help("renewals are tried every retry_period; for example retry_period = \"2s\""));
            }
            if let Some(u) = &le.api_server {
                if !(u.starts_with("http://") || u.starts_with("https://")) {
                    errors.push(e(format!("[leader_election] api_server `{u}` is not an http:// or https:// URL"))
                        .help("write the API server's URL, or leave it out to use the in-cluster service account"));
                }
            }
            if let Err(err) =
                SecretSource::from_pair("token", le.token.as_ref(), le.token_file.as_ref())
            {
                errors.push(e(format!("[leader_election]: {err}")));
            }
        }
        let m = &self.metrics;
        if m.source == MetricSourceKind::Prometheus && m.url.is_none() {
            errors.push(
                ConfigError::at(
                    path,
                    source,
                    find_span(source, "metrics"),
                    "[metrics] source = \"prometheus\" needs url",
                )
                .help("write url = \"http://prometheus:9090\""),
            );
        }
        if let Err(e) = SecretSource::from_pair(
            "bearer_token",
            m.bearer_token.as_ref(),
            m.bearer_token_file.as_ref(),
        ) {
            errors.push(ConfigError::at(
                path,
                source,
                find_span(source, "metrics"),
                format!("[metrics]: {e}"),
            ));
        }
        if let Err(e) = SecretSource::from_pair(
            "basic_password",
            m.basic_password.as_ref(),
            m.basic_password_file.as_ref(),
        ) {
            errors.push(ConfigError::at(
                path,
                source,
                find_span(source, "metrics"),
                format!("[metrics]: {e}"),
            ));
        }
        if m.source == MetricSourceKind::Simulated {
            let known: Vec<String> = crate::judge::sim::standard_scenarios()
                .into_iter()
                .map(|s| s.name)
                .collect();
            for (svc, sc) in &m.scenarios {
                if !known.contains(sc) {
                    errors.push(
                        ConfigError::at(
                            path,
                            source,
                            find_span(source, "metrics.scenarios").or(find_span(source, "metrics")),
                            format!("[metrics.scenarios] {svc}: no scenario named `{sc}`"),
                        )
                        .help(format!("use one of: {}", known.join("; "))),
                    );
                }
            }
        }
        for c in &self.api.clients {
            if let Err(e) = c.token_source() {
                errors.push(ConfigError::at(
                    path,
                    source,
                    find_span(source, "api.clients"),
                    e,
                ));
            }
        }
        errors.extend(self.validate_gates(path, source));
        errors.extend(self.validate_exec(path, source));
        errors
    }
}

fn unknown_ref(err: ConfigError, name: &str, known: &[&str], section: &str) -> ConfigError {
    let near = closest(name, known.iter().copied());
    if let Some(best) = near.first() {
        err.help(format!(
            "did you mean `{best}`? defined {section}: {}",
            known.join(", ")
        ))
    } else if known.is_empty() {
        err.help(format!("define it in a [{section}.{name}] table"))
    } else {
        err.help(format!(
            "define [{section}.{name}] or use one of: {}",
            known.join(", ")
        ))
    }
}

/// The span of a `[section]` header, for errors about a whole table.
fn find_span(source: &str, section: &str) -> Option<std::ops::Range<usize>> {
    for header in [format!("[{section}]"), format!("[[{section}]]")] {
        if let Some(i) = source.find(&header) {
            return Some(i..i + header.len());
        }
    }
    None
}

/// Some errors (inside tagged tables such as `[backends.NAME]`) come with the
/// span of the whole table; point at the key or value the message names.
fn narrow(source: &str, span: std::ops::Range<usize>, message: &str) -> std::ops::Range<usize> {
    let Some(table) = source.get(span.clone()) else {
        return span;
    };
    if !table.contains('\n') {
        return span;
    }
    let named = message.split('`').nth(1).unwrap_or("");
    if named.is_empty() {
        return span;
    }
    let mut offset = 0;
    for line in table.split_inclusive('\n') {
        let t = line.trim_start();
        let key_hit = t.starts_with(named) && t[named.len()..].trim_start().starts_with('=');
        let value_hit = line.contains(&format!("\"{named}\""));
        if key_hit || value_hit {
            let col = if key_hit {
                line.len() - t.len()
            } else {
                line.find(&format!("\"{named}\"")).unwrap_or(0)
            };
            let start = span.start + offset + col;
            return start..start + named.len();
        }
        offset += line.len();
    }
    span
}

/// Turns a TOML/serde error into a located one, adding a "did you mean"
/// for unknown keys.
fn from_toml(path: &Path, source: &str, e: &toml::de::Error) -> ConfigError {
    let message = e.message().trim().to_string();
    let span = e.span().map(|s| narrow(source, s, &message));
    let mut err = ConfigError::at(path, source, span, message.clone());
    if let Some(rest) = message.strip_prefix("unknown field `") {
        if let Some((field, expected)) = rest.split_once('`') {
            let names: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
            err = match closest(field, names.iter().copied()).first() {
                Some(best) => err.help(format!("did you mean `{best}`?")),
                None => err.help(format!(
                    "remove `{field}`; allowed keys here: {}",
                    names.join(", ")
                )),
            };
        }
    } else if message.starts_with("unknown variant") {
        err = err.help("use one of the values listed");
    } else if message.contains("missing field") {
        err = err.help("add the missing key to this table");
    }
    err
}

#[cfg(test)]
mod tests;
