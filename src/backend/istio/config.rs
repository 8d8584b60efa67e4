//! `[backends.NAME]` with `type = "istio"`: its keys, their checks, the
//! targets of the services that use it, and the constructor.

use super::{check_target, IstioBackend, IstioSettings, API_VERSIONS};
use crate::backend::factory::{BackendSettings, BuildContext, Built, CheckContext};
use crate::backend::kube_common::{self, KubeKeys};
use crate::config::{ConfigError, EnvRef, HumanDuration};
use serde::Deserialize;
use std::path::PathBuf;

/// Shifts traffic between the stable and canary destinations of an Istio
/// VirtualService; a service's `[services.target]` names `namespace`,
/// `virtual_service`, `route`, `stable_subset`, `canary_subset` (or
/// `stable_host`, `canary_host`), `rollback_steps`, `step_interval`,
/// `promote_steps`.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct IstioConfig {
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
}

impl IstioConfig {
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

impl BackendSettings for IstioConfig {
    fn check(&self, cx: &CheckContext) -> Vec<ConfigError> {
        // Nothing waits for a controller: one request is the limit.
        let limit = cx.backend_timeout;
        let mut errors =
            kube_common::check_table(cx, &self.keys(), None, |t| check_target(t, limit));
        if let Some(v) = &self.api_version {
            if !API_VERSIONS.contains(&v.as_str()) {
                errors.push(
                    cx.error(format!("api_version `{v}` is not one of v1, v1beta1"))
                        .help("write \"v1\" for Istio 1.22 and later, \"v1beta1\" before"),
                );
            }
        }
        errors
    }

    fn build(&self, _cx: &BuildContext) -> Built {
        let s = IstioSettings {
            connection: self.keys().connection(),
            api_version: self
                .api_version
                .clone()
                .unwrap_or_else(|| IstioSettings::default().api_version),
        };
        IstioBackend::new(s).into()
    }
}
