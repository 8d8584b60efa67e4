//! `[backends.NAME]` with `type = "argo-rollouts"`: the keys of a
//! Kubernetes backend that waits for its controller, their checks, the
//! targets of the services that use it, and the constructor.

use super::{check_target, ArgoRolloutsBackend, ArgoRolloutsSettings};
use crate::backend::factory::{BackendSettings, BuildContext, Built, CheckContext};
use crate::backend::kube_common::{self, WaitingBackendTable};
use crate::config::ConfigError;
use serde::Deserialize;

/// Aborts, undoes, promotes, pauses and resumes an Argo Rollouts `Rollout`
/// with the patches `kubectl argo rollouts` sends; a service's
/// `[services.target]` names `namespace`, `rollout`, `mechanism` (`abort`
/// or `undo`).
#[derive(Debug, Deserialize, Clone)]
#[serde(transparent)]
pub struct ArgoRolloutsConfig(WaitingBackendTable);

impl BackendSettings for ArgoRolloutsConfig {
    fn check(&self, cx: &CheckContext) -> Vec<ConfigError> {
        let wait = self.0.wait("the controller");
        kube_common::check_table(cx, &self.0.keys(), Some(wait), check_target)
    }

    fn build(&self, cx: &BuildContext) -> Built {
        let d = ArgoRolloutsSettings::default();
        ArgoRolloutsBackend::new(ArgoRolloutsSettings {
            connection: self.0.keys().connection(),
            rollout_timeout: self.0.rollout_timeout(cx.backend_timeout),
            poll_interval: self.0.poll_interval(d.poll_interval),
        })
        .into()
    }
}
