//! `[backends.NAME]` with `type = "argo-rollouts"`: its keys, their checks,
//! the targets of the services that use it, and the constructor.

use super::{check_target, ArgoRolloutsBackend, ArgoRolloutsSettings};
use crate::backend::factory::{BackendSettings, BuildContext, Built, CheckContext};
use crate::backend::kube_common::{self, ControllerWait, KubeKeys};
use crate::config::{ConfigError, EnvRef, HumanDuration};
use serde::Deserialize;
use std::path::PathBuf;

/// Aborts, undoes, promotes, pauses and resumes an Argo Rollouts `Rollout`
/// with the patches `kubectl argo rollouts` sends; a service's
/// `[services.target]` names `namespace`, `rollout`, `mechanism` (`abort`
/// or `undo`).
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct ArgoRolloutsConfig {
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
}

impl ArgoRolloutsConfig {
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

impl BackendSettings for ArgoRolloutsConfig {
    fn check(&self, cx: &CheckContext) -> Vec<ConfigError> {
        let wait = ControllerWait {
            rollout_timeout: self.rollout_timeout.map(|t| t.0),
            poll_interval: self.poll_interval.map(|t| t.0),
            waits_for: "the controller",
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
        let keys = self.keys();
        let request = keys
            .request_timeout
            .unwrap_or(kube_common::DEFAULT_REQUEST_TIMEOUT);
        let s = ArgoRolloutsSettings {
            connection: keys.connection(),
            rollout_timeout: self.rollout_timeout.map(|t| t.0).unwrap_or_else(|| {
                kube_common::default_rollout_timeout_for(cx.backend_timeout, request)
            }),
            poll_interval: self
                .poll_interval
                .map(|t| t.0)
                .unwrap_or(ArgoRolloutsSettings::default().poll_interval),
        };
        ArgoRolloutsBackend::new(s).into()
    }
}
