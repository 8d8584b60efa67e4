//! The connection keys every Kubernetes table of the config has (the three
//! Kubernetes backends and `[leader_election]`), and the time limits of a
//! backend that waits for its controller: checked here, once.
//!
//! serde's `flatten` does not combine with `deny_unknown_fields`, and the
//! file keeps these keys flat in each table, so each table declares them and
//! lends them here as a [`KubeKeys`] view.

use super::{KubeConnection, DEFAULT_REQUEST_TIMEOUT};
use crate::backend::factory::CheckContext;
use crate::config::{ConfigError, EnvRef, HumanDuration, SecretSource};
use crate::domain::human_duration;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// The connection keys of one table, borrowed from it.
#[derive(Clone, Copy, Debug, Default)]
pub struct KubeKeys<'a> {
    /// API server URL; default: the in-cluster service account, else the
    /// kubeconfig.
    pub api_server: Option<&'a String>,
    /// Bearer token: `"${ENV_VAR}"`, or `token_file` (re-read as it rotates).
    pub token: Option<&'a EnvRef>,
    pub token_file: Option<&'a PathBuf>,
    /// PEM file with the cluster's CA certificates, for an https
    /// `api_server` the system's roots do not vouch for.
    pub ca_file: Option<&'a PathBuf>,
    /// Namespace of services whose target names none (default: the
    /// inferred one, else `default`).
    pub namespace: Option<&'a String>,
    /// Time limit of one API request (default 10s).
    pub request_timeout: Option<Duration>,
}

/// A problem with the connection keys.
#[derive(Clone, Debug, PartialEq)]
pub enum KeyProblem {
    /// `api_server` is not an http(s) URL.
    ApiServer(String),
    /// `token` and `token_file` are both set.
    Token(String),
}

impl KeyProblem {
    /// The message and help for a `[backends.NAME]` table (the caller adds
    /// "backend `NAME`: ").
    pub fn in_backend(&self) -> (String, Option<String>) {
        match self {
            KeyProblem::ApiServer(u) => (
                format!("api_server `{u}` is not an http:// or https:// URL"),
                Some("write the API server's URL, for example \"https://10.0.0.1:6443\", or leave it out to use the in-cluster service account or the kubeconfig".into()),
            ),
            KeyProblem::Token(e) => (e.clone(), None),
        }
    }

    /// The message and help for `[leader_election]`, whose wording predates
    /// the backends'.
    pub fn in_leader_election(&self) -> (String, Option<String>) {
        match self {
            KeyProblem::ApiServer(u) => (
                format!("[leader_election] api_server `{u}` is not an http:// or https:// URL"),
                Some("write the API server's URL, or leave it out to use the in-cluster service account".into()),
            ),
            KeyProblem::Token(e) => (format!("[leader_election]: {e}"), None),
        }
    }
}

impl KubeKeys<'_> {
    /// How to reach the API server. The token source was checked when the
    /// config was loaded.
    pub fn connection(&self) -> KubeConnection {
        KubeConnection {
            api_server: self.api_server.cloned(),
            token: SecretSource::from_pair("token", self.token, self.token_file)
                .ok()
                .flatten(),
            namespace: self.namespace.cloned(),
            request_timeout: self.request_timeout,
            ca_file: self.ca_file.cloned(),
        }
    }

    /// `api_server` must be an http(s) URL, the token must come from one source.
    pub fn problems(&self) -> Vec<KeyProblem> {
        let mut out = vec![];
        if let Some(u) = self.api_server {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                out.push(KeyProblem::ApiServer(u.clone()));
            }
        }
        if let Err(e) = SecretSource::from_pair("token", self.token, self.token_file) {
            out.push(KeyProblem::Token(e));
        }
        out
    }
}

/// How a Kubernetes backend waits for its controller after acting.
pub struct ControllerWait {
    pub rollout_timeout: Option<Duration>,
    pub poll_interval: Option<Duration>,
    /// What it waits for, in messages: "a rollout", "the controller".
    pub waits_for: &'static str,
}

/// Checks the connection keys and time limits of a Kubernetes backend: each
/// problem (without the "backend `NAME`: " the caller adds) with what to
/// write instead. The engine cuts every call at `backend_timeout`, so a
/// wait, with its last request, must end first for its report to survive.
pub fn check_backend(
    keys: &KubeKeys,
    backend_timeout: Duration,
    wait: Option<ControllerWait>,
) -> Vec<(String, Option<String>)> {
    let mut out: Vec<(String, Option<String>)> =
        keys.problems().iter().map(KeyProblem::in_backend).collect();
    let request = keys.request_timeout.unwrap_or(DEFAULT_REQUEST_TIMEOUT);
    let mut poll_interval = None;
    if let Some(w) = wait {
        poll_interval = w.poll_interval;
        match w.rollout_timeout {
            Some(r) if r + request >= backend_timeout => out.push((
                format!(
                    "rollout_timeout ({}) plus one request ({}) is not shorter than [engine] backend_timeout ({})",
                    human_duration(r),
                    human_duration(request),
                    human_duration(backend_timeout)
                ),
                Some("lower rollout_timeout or request_timeout, or raise backend_timeout in [engine]".into()),
            )),
            None if default_rollout_timeout_for(backend_timeout, request).is_zero() => out.push((
                format!(
                    "[engine] backend_timeout ({}) leaves no time to wait for {} after a request ({})",
                    human_duration(backend_timeout),
                    w.waits_for,
                    human_duration(request)
                ),
                Some("raise backend_timeout in [engine], for example to \"120s\"".into()),
            )),
            _ => {}
        }
    }
    for (key, d) in [
        ("request_timeout", keys.request_timeout),
        ("poll_interval", poll_interval),
    ] {
        if d.is_some_and(|d| d.is_zero() || d >= backend_timeout) {
            out.push((
                format!(
                    "{key} must be longer than 0s and shorter than [engine] backend_timeout ({})",
                    human_duration(backend_timeout)
                ),
                None,
            ));
        }
    }
    out
}

/// How long verification waits for a rollout when the config sets nothing.
pub const DEFAULT_ROLLOUT_TIMEOUT: Duration = Duration::from_secs(300);

/// Room left between the end of verification and the engine's cut.
pub const ROLLOUT_MARGIN: Duration = Duration::from_secs(5);

/// The default rollout timeout for an engine whose backend calls are cut at
/// `backend_timeout`, with the default request time limit.
pub fn default_rollout_timeout(backend_timeout: Duration) -> Duration {
    default_rollout_timeout_for(backend_timeout, DEFAULT_REQUEST_TIMEOUT)
}

/// 5 minutes, or less so that verification, whose last read may take
/// `request_timeout`, ends (and reports) 5 seconds before the engine cuts it.
pub fn default_rollout_timeout_for(
    backend_timeout: Duration,
    request_timeout: Duration,
) -> Duration {
    DEFAULT_ROLLOUT_TIMEOUT.min(
        backend_timeout
            .saturating_sub(request_timeout)
            .saturating_sub(ROLLOUT_MARGIN),
    )
}

/// The table of a Kubernetes backend that waits for its controller after
/// acting (`kubernetes-deployment`, `argo-rollouts`): the connection keys
/// and the wait. Each of those backends wraps it in its own settings type.
#[derive(Debug, serde::Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct WaitingBackendTable {
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
    /// How long verification waits for the rollout or the controller; with
    /// one request it must end before [engine] backend_timeout (default
    /// 5m, or less to fit).
    #[serde(default)]
    rollout_timeout: Option<HumanDuration>,
    /// Pause between reads while waiting (default 2s).
    #[serde(default)]
    poll_interval: Option<HumanDuration>,
}

impl WaitingBackendTable {
    pub fn keys(&self) -> KubeKeys<'_> {
        KubeKeys {
            api_server: self.api_server.as_ref(),
            token: self.token.as_ref(),
            token_file: self.token_file.as_ref(),
            ca_file: self.ca_file.as_ref(),
            namespace: self.namespace.as_ref(),
            request_timeout: self.request_timeout.map(|t| t.0),
        }
    }

    /// The wait, for [`check_table`]; `waits_for` names it in messages.
    pub fn wait(&self, waits_for: &'static str) -> ControllerWait {
        ControllerWait {
            rollout_timeout: self.rollout_timeout.map(|t| t.0),
            poll_interval: self.poll_interval.map(|t| t.0),
            waits_for,
        }
    }

    /// `rollout_timeout`, else the default that ends before the engine's cut.
    pub fn rollout_timeout(&self, backend_timeout: Duration) -> Duration {
        let request = self
            .request_timeout
            .map(|t| t.0)
            .unwrap_or(DEFAULT_REQUEST_TIMEOUT);
        self.rollout_timeout
            .map(|t| t.0)
            .unwrap_or_else(|| default_rollout_timeout_for(backend_timeout, request))
    }

    /// `poll_interval`, else `default`.
    pub fn poll_interval(&self, default: Duration) -> Duration {
        self.poll_interval.map(|t| t.0).unwrap_or(default)
    }
}

/// The checks of a Kubernetes backend's table ([`check_backend`]), then the
/// `target` of each service that uses it.
pub fn check_table(
    cx: &CheckContext,
    keys: &KubeKeys,
    wait: Option<ControllerWait>,
    check_target: impl Fn(&BTreeMap<String, String>) -> Result<(), String>,
) -> Vec<ConfigError> {
    let mut errors: Vec<ConfigError> = check_backend(keys, cx.backend_timeout, wait)
        .into_iter()
        .map(|(message, help)| cx.error(message).maybe_help(help))
        .collect();
    for s in cx.services() {
        if let Err(e) = check_target(s.target) {
            errors.push(cx.target_error(s, e));
        }
    }
    errors
}
