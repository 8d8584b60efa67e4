//! `[backends.NAME]` with `type = "kubernetes-deployment"`: the keys of a
//! Kubernetes backend that waits for its controller, their checks, the
//! targets of the services that use it, and the constructor.

use super::{check_target, KubernetesDeploymentBackend, KubernetesDeploymentSettings};
use crate::backend::factory::{BackendSettings, BuildContext, Built, CheckContext};
use crate::backend::kube_common::{self, WaitingBackendTable};
use crate::config::ConfigError;
use serde::Deserialize;

/// Rolls back a Kubernetes Deployment like `kubectl rollout undo` (or
/// scales a canary Deployment to zero, or pins an image); a service's
/// `[services.target]` names `namespace`, `deployment`, `mechanism`,
/// `canary_deployment`, `container`.
#[derive(Debug, Deserialize, Clone)]
#[serde(transparent)]
pub struct KubernetesDeploymentConfig(WaitingBackendTable);

impl BackendSettings for KubernetesDeploymentConfig {
    fn check(&self, cx: &CheckContext) -> Vec<ConfigError> {
        let wait = self.0.wait("a rollout");
        kube_common::check_table(cx, &self.0.keys(), Some(wait), check_target)
    }

    fn build(&self, cx: &BuildContext) -> Built {
        let d = KubernetesDeploymentSettings::default();
        KubernetesDeploymentBackend::new(KubernetesDeploymentSettings {
            connection: self.0.keys().connection(),
            rollout_timeout: self.0.rollout_timeout(cx.backend_timeout),
            poll_interval: self.0.poll_interval(d.poll_interval),
        })
        .into()
    }
}
