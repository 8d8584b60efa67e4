//! What the Kubernetes backends share: connecting (config → `kube::Client`),
//! turning API errors into messages people can act on, retrying write
//! conflicts against a fresh object, and the one-line record of every
//! request for the audit entry.

mod keys;
mod session;

pub use session::{again_after, again_after_conflict, Session};

pub use keys::{
    check_backend, check_table, default_rollout_timeout, default_rollout_timeout_for,
    ControllerWait, KeyProblem, KubeKeys, WaitingBackendTable, DEFAULT_ROLLOUT_TIMEOUT,
    ROLLOUT_MARGIN,
};

use super::BackendError;
use crate::config::SecretSource;
use std::time::Duration;

/// How to reach the API server; from the [`KubeKeys`] of a Kubernetes table.
#[derive(Clone, Debug, Default)]
pub struct KubeConnection {
    /// `https://…` of the API server; `None`: in-cluster service account,
    /// else the kubeconfig (`KUBECONFIG` or `~/.kube/config`).
    pub api_server: Option<String>,
    /// Bearer token instead of the inferred credentials.
    pub token: Option<SecretSource>,
    /// Namespace of services that name none (default: the inferred one,
    /// else `default`).
    pub namespace: Option<String>,
    /// Time limit of one request (default 10s).
    pub request_timeout: Option<Duration>,
    /// PEM file with the cluster's CA certificates, for an `https` `api_server`
    /// whose certificate the system's roots do not vouch for.
    pub ca_file: Option<std::path::PathBuf>,
}

/// Time limit of one request when the config sets none.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How many times a write is tried when someone else wrote in between.
pub const CONFLICT_TRIES: u32 = 3;

/// A connected client and the namespace services default to.
#[derive(Clone)]
pub struct KubeClient {
    pub client: kube::Client,
    pub default_namespace: String,
    /// Where the client points, for messages.
    pub server: String,
}

impl KubeConnection {
    /// Builds a client. Errors say which source was tried and what to set.
    pub async fn connect(&self) -> Result<KubeClient, BackendError> {
        let mut config = match &self.api_server {
            Some(url) => {
                let uri = url.parse().map_err(|e| {
                    BackendError::failed(format!(
                        "api_server `{url}` is not a URL ({e}); write for example \"https://10.0.0.1:6443\""
                    ))
                })?;
                kube::Config::new(uri)
            }
            None => kube::Config::infer().await.map_err(|e| {
                BackendError::failed(format!(
                    "cannot find Kubernetes credentials ({e}); run rollbot in the cluster with a service account, set KUBECONFIG, or set api_server and token in the backend's config"
                ))
            })?,
        };
        // Read on every connect (each action), so a rotated token file is
        // picked up; trailing newlines are trimmed.
        if let Some(src) = &self.token {
            let v = src
                .resolve()
                .map_err(|e| BackendError::failed(format!("Kubernetes API token: {e}")))?;
            config.auth_info.token = Some(v.expose().to_string().into());
            config.auth_info.token_file = None;
        }
        if let Some(path) = &self.ca_file {
            config.root_cert = Some(read_ca(path)?);
        }
        let timeout = self.request_timeout.unwrap_or(DEFAULT_REQUEST_TIMEOUT);
        config.connect_timeout = Some(timeout);
        config.read_timeout = Some(timeout);
        config.write_timeout = Some(timeout);
        if let Some(ns) = &self.namespace {
            config.default_namespace = ns.clone();
        }
        let server = config.cluster_url.to_string();
        let default_namespace = config.default_namespace.clone();
        let client = kube::Client::try_from(config).map_err(|e| {
            BackendError::failed(format!(
                "cannot build a Kubernetes client for {server}: {e}"
            ))
        })?;
        Ok(KubeClient {
            client,
            default_namespace,
            server: server.trim_end_matches('/').to_string(),
        })
    }
}

/// DER certificates from a PEM file.
fn read_ca(path: &std::path::Path) -> Result<Vec<Vec<u8>>, BackendError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let bad = |e: String| {
        BackendError::failed(format!(
            "ca_file {}: {e}; it should hold the cluster's CA certificate in PEM (the certificate-authority-data of a kubeconfig, base64-decoded)",
            path.display()
        ))
    };
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no certificate found".into()));
    }
    Ok(certs)
}

/// The Kubernetes `Status` of a failed call, when the API server answered one.
pub fn api_status(e: &kube::Error) -> Option<&kube::core::Status> {
    match e {
        kube::Error::Api(s) => Some(s),
        _ => None,
    }
}

pub fn is_conflict(e: &kube::Error) -> bool {
    api_status(e).is_some_and(|s| s.code == 409 && s.reason == "Conflict")
}

pub fn is_not_found(e: &kube::Error) -> bool {
    api_status(e).is_some_and(|s| s.code == 404)
}

/// A write this replica's fence kept from being sent (see `crate::fence`).
pub fn fenced(e: &kube::Error) -> Option<&crate::fence::Fenced> {
    match e {
        kube::Error::Service(b) => b.downcast_ref(),
        _ => None,
    }
}

/// One line for an error: the API server's own message with its code and
/// reason, or what went wrong on the way.
pub fn describe(e: &kube::Error) -> String {
    match api_status(e) {
        Some(s) => {
            let reason = if s.reason.is_empty() {
                String::new()
            } else {
                format!(" {}", s.reason)
            };
            format!("HTTP {}{reason}: {}", s.code, s.message)
        }
        None => match e {
            kube::Error::HyperError(h) => format!("no answer from the API server: {h}"),
            kube::Error::Service(_) if fenced(e).is_some() => {
                fenced(e).map(|f| f.to_string()).unwrap_or_default()
            }
            other => other.to_string(),
        },
    }
}

/// What a failed call means, with what to do by hand: the API server's
/// answer, or which server could not be reached.
pub fn failed_at(what: &str, e: &kube::Error, server: &str, by_hand: &str) -> String {
    if let Some(f) = fenced(e) {
        return format!("{what} stopped: {f}");
    }
    let why = match api_status(e) {
        Some(_) => describe(e),
        None => format!(
            "cannot reach the Kubernetes API server at {server} ({})",
            describe(e)
        ),
    };
    format!("{what} failed: {why}\nNothing else was changed. To do it by hand: {by_hand}")
}

/// One request for `ActionReport.requests`: method, path, content type, body
/// and the answer, so the audit entry shows exactly what was sent.
pub fn request_line(
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: Option<&serde_json::Value>,
    outcome: &Result<(), String>,
) -> String {
    let mut line = format!("{method} {path}");
    if let Some(ct) = content_type {
        line.push_str(&format!(" ({ct})"));
    }
    if let Some(b) = body {
        line.push_str(&format!(" {b}"));
    }
    match outcome {
        Ok(()) => line.push_str(" → 200"),
        Err(e) => line.push_str(&format!(" → {e}")),
    }
    line
}

/// Runs `attempt` until it succeeds, fails with something other than a
/// conflict, or has conflicted `CONFLICT_TRIES` times. Each attempt reads
/// the object afresh, so a retry never writes over someone else's change.
pub async fn retry_conflicts<T, F, Fut>(mut attempt: F) -> Result<T, kube::Error>
where
    F: FnMut(u32) -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut n = 1;
    loop {
        let result = attempt(n).await;
        match &result {
            Err(e) if again_after_conflict(e, n).await => n += 1,
            _ => return result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16, reason: &str, message: &str) -> kube::Error {
        let s: kube::core::Status = serde_json::from_value(serde_json::json!({
            "status": "Failure", "code": code, "reason": reason, "message": message,
        }))
        .unwrap();
        kube::Error::Api(Box::new(s))
    }

    #[test]
    fn api_errors_keep_the_servers_message() {
        let e = status(
            403,
            "Forbidden",
            "deployments.apps \"web\" is forbidden: User \"x\" cannot patch",
        );
        assert_eq!(
            describe(&e),
            "HTTP 403 Forbidden: deployments.apps \"web\" is forbidden: User \"x\" cannot patch"
        );
        assert!(!is_conflict(&e));
        assert!(is_conflict(&status(409, "Conflict", "modified")));
        assert!(!is_conflict(&status(409, "AlreadyExists", "exists")));
        assert!(is_not_found(&status(404, "NotFound", "gone")));
    }

    #[tokio::test]
    async fn conflicts_are_retried_a_bounded_number_of_times() {
        let mut calls = 0;
        let r: Result<(), _> = retry_conflicts(|_| {
            calls += 1;
            async { Err(status(409, "Conflict", "modified")) }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls, CONFLICT_TRIES);

        let mut calls = 0;
        let r = retry_conflicts(|n| {
            calls += 1;
            async move {
                if n == 1 {
                    Err(status(409, "Conflict", "modified"))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(r.unwrap(), 2);
        assert_eq!(calls, 2);

        let mut calls = 0;
        let r: Result<(), _> = retry_conflicts(|_| {
            calls += 1;
            async { Err(status(403, "Forbidden", "no")) }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls, 1, "only conflicts are retried");
    }

    #[test]
    fn request_lines_hold_the_body() {
        let l = request_line(
            "PATCH",
            "/apis/apps/v1/namespaces/prod/deployments/web",
            Some("application/merge-patch+json"),
            Some(&serde_json::json!({"spec": {"paused": true}})),
            &Ok(()),
        );
        assert_eq!(l, "PATCH /apis/apps/v1/namespaces/prod/deployments/web (application/merge-patch+json) {\"spec\":{\"paused\":true}} → 200");
    }

    #[tokio::test]
    async fn a_ca_file_without_certificates_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("ca.pem");
        std::fs::write(&f, "not a certificate\n").unwrap();
        let c = KubeConnection {
            api_server: Some("https://127.0.0.1:9".into()),
            ca_file: Some(f.clone()),
            ..Default::default()
        };
        let err = c.connect().await.err().unwrap().to_string();
        assert!(
            err.contains("ca.pem") && err.contains("no certificate found"),
            "{err}"
        );
        let c = KubeConnection {
            ca_file: Some(dir.path().join("missing.pem")),
            ..c
        };
        let err = c.connect().await.err().unwrap().to_string();
        assert!(err.contains("missing.pem"), "{err}");
    }

    #[tokio::test]
    async fn a_token_from_a_missing_variable_is_named_not_shown() {
        let c = KubeConnection {
            api_server: Some("http://127.0.0.1:9".into()),
            token: Some(SecretSource::Env("ROLLBOT_TEST_NO_KUBE_TOKEN".into())),
            ..Default::default()
        };
        let err = c.connect().await.err().unwrap().to_string();
        assert!(err.contains("ROLLBOT_TEST_NO_KUBE_TOKEN"), "{err}");
    }
}
