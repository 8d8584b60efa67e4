//! `[backends.NAME]` with `type = "kubernetes-deployment"`: its keys, their
//! checks, the targets of the services that use it, and the constructor.

use super::{check_target, KubernetesDeploymentBackend, KubernetesDeploymentSettings};
use crate::backend::factory::{BackendSettings, BuildContext, Built, CheckContext};
use crate::backend::kube_common::{self, ControllerWait, KubeKeys};
use crate::config::{ConfigError, EnvRef, HumanDuration};
use serde::Deserialize;
use std::path::PathBuf;

/// Rolls back a Kubernetes Deployment like `kubectl rollout undo` (or
/// scales a canary Deployment to zero, or pins an image); a service's
/// `[services.target]` names `namespace`, `deployment`, `mechanism`,
/// `canary_deployment`, `container`.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct KubernetesDeploymentConfig {
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
}

impl KubernetesDeploymentConfig {
    fn keys(&self) -> KubeKeys<'_> {
        KubeKeys {
            api_server: self.api_server.as_ref(),
            token: self.token.as_ref(),
            token_file: self.token_file.as_ref(),
            ca_file: self.ca_file.as_ref(),
            namespace: self.namespace.as_ref(),
            request_timeout: self.request_timeout.map(|t| t.0),
        }
    }
}

impl BackendSettings for KubernetesDeploymentConfig {
    fn check(&self, cx: &CheckContext) -> Vec<ConfigError> {
        let wait = ControllerWait {
            rollout_timeout: self.rollout_timeout.map(|t| t.0),
            poll_interval: self.poll_interval.map(|t| t.0),
            waits_for: "a rollout",
        };
        let mut errors: Vec<ConfigError> =
            kube_common::check_backend(&self.keys(), cx.backend_timeout, Some(wait))
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

    fn build(&self, cx: &BuildContext) -> Built {
        let d = KubernetesDeploymentSettings::default();
        let keys = self.keys();
        let request = keys
            .request_timeout
            .unwrap_or(kube_common::DEFAULT_REQUEST_TIMEOUT);
        let s = KubernetesDeploymentSettings {
            connection: keys.connection(),
            rollout_timeout: self.rollout_timeout.map(|t| t.0).unwrap_or_else(|| {
                kube_common::default_rollout_timeout_for(cx.backend_timeout, request)
            }),
            poll_interval: self.poll_interval.map(|t| t.0).unwrap_or(d.poll_interval),
        };
        KubernetesDeploymentBackend::new(s).into()
    }
}
