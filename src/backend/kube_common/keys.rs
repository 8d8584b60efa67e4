//! The connection keys every Kubernetes table of the config has (the three
//! Kubernetes backends and `[leader_election]`), and the time limits of a
//! backend that waits for its controller: checked here, once.
//!
//! serde's `flatten` does not combine with `deny_unknown_fields`, and the
//! file keeps these keys flat in each table, so each table declares them and
//! lends them here as a [`KubeKeys`] view.

use super::{KubeConnection, DEFAULT_REQUEST_TIMEOUT};
use crate::config::{EnvRef, SecretSource};
use crate::domain::human_duration;
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
