//! The factory: every backend type in one list, one line each.
//!
//! A `[backends.NAME]` table is read as [`BackendConfig`]: its `type` picks
//! the variant, and the rest of the table is that backend's own settings
//! type, declared in the backend's file with its checks and its constructor
//! ([`BackendSettings`]). Adding a backend is its file, one line in
//! [`backend_types!`] below, and its page under `docs/backends/`.

use super::simulated::SimulatedBackend;
use super::RollbackBackend;
use crate::config::ConfigError;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// What a backend's settings type does besides holding the settings.
pub trait BackendSettings {
    /// Problems with the backend's table and with the services that use
    /// it, each located in the file, in the order they are found.
    fn check(&self, cx: &CheckContext) -> Vec<ConfigError>;
    /// What is allowed but probably a mistake (`check-config` prints it).
    fn warnings(&self, _cx: &CheckContext) -> Vec<ConfigError> {
        Vec::new()
    }
    /// The backend, from settings that passed [`BackendSettings::check`].
    fn build(&self, cx: &BuildContext) -> Built;
}

/// Declares [`BackendConfig`] with one variant per line, and the one match
/// that reaches each variant's settings.
macro_rules! backend_types {
    ($($type_name:tt => $variant:ident($settings:ty),)*) => {
        /// How a backend is reached: `type` in a `[backends.NAME]` table.
        #[derive(Debug, Deserialize, Clone)]
        #[serde(tag = "type")]
        pub enum BackendConfig {
            $(#[serde(rename = $type_name)] $variant($settings),)*
        }

        impl BackendConfig {
            /// The `type` written in the table.
            pub fn type_name(&self) -> &'static str {
                match self {
                    $(BackendConfig::$variant(_) => $type_name,)*
                }
            }

            /// The backend's own settings, checks and constructor.
            pub fn settings(&self) -> &dyn BackendSettings {
                match self {
                    $(BackendConfig::$variant(s) => s,)*
                }
            }
        }
    };
}

backend_types! {
    "simulated" => Simulated(super::simulated::SimulatedConfig),
    "exec" => Exec(super::exec::ExecConfig),
    "webhook" => Webhook(super::webhook::WebhookConfig),
    "gitops" => Gitops(super::gitops::GitopsConfig),
    "unleash" => Unleash(super::unleash::UnleashConfig),
    "kubernetes-deployment" => KubernetesDeployment(super::kubernetes_deployment::KubernetesDeploymentConfig),
    "flagger" => Flagger(super::flagger::FlaggerConfig),
    "argo-rollouts" => ArgoRollouts(super::argo_rollouts::ArgoRolloutsConfig),
    "istio" => Istio(super::istio::IstioConfig),
}

/// A service as a backend's checks see it.
#[derive(Clone, Debug)]
pub struct ServiceUse<'a> {
    pub name: &'a str,
    /// Where its `name` is written.
    pub name_span: Range<usize>,
    /// The backend it names, and where.
    pub backend: &'a str,
    pub backend_span: Range<usize>,
    /// The `type` of that backend, when it is defined.
    pub backend_type: Option<&'static str>,
    /// `[services.target]`.
    pub target: &'a BTreeMap<String, String>,
}

/// What a backend's checks need from the rest of the file.
pub struct CheckContext<'a> {
    /// The backend's name and where its table is.
    pub name: &'a str,
    pub table: Range<usize>,
    /// `[engine] backend_timeout`: every backend call is cut there, so a
    /// backend's own time limits must end first for its report to survive.
    pub backend_timeout: Duration,
    /// Every service, in the order of the file.
    pub services: &'a [ServiceUse<'a>],
    /// `[gates]` names no token (Flagger's gates need one).
    pub no_gates_token: bool,
    pub path: &'a Path,
    pub source: &'a str,
}

impl<'a> CheckContext<'a> {
    /// The services that name this backend.
    pub fn services(&self) -> impl Iterator<Item = &ServiceUse<'a>> {
        self.services.iter().filter(|s| s.backend == self.name)
    }

    /// An error at `span`.
    pub fn at(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        ConfigError::at(self.path, self.source, Some(span), message)
    }

    /// An error about the backend's table: "backend `NAME`: …".
    pub fn error(&self, message: impl std::fmt::Display) -> ConfigError {
        self.at(
            self.table.clone(),
            format!("backend `{}`: {message}", self.name),
        )
    }

    /// A service's `[services.target]` does not suit this backend.
    pub fn target_error(&self, s: &ServiceUse, problem: impl std::fmt::Display) -> ConfigError {
        self.at(
            s.backend_span.clone(),
            format!("service `{}`: {problem}", s.name),
        )
        .help("set it in the service's [services.target] table")
    }
}

/// What a backend's constructor needs from the rest of the file.
pub struct BuildContext<'a> {
    pub name: &'a str,
    pub backend_timeout: Duration,
}

/// A backend as built.
pub struct Built {
    pub backend: Arc<dyn RollbackBackend>,
    /// The simulated backend itself, so the demo and tests can steer it.
    pub simulated: Option<Arc<SimulatedBackend>>,
}

impl<B: RollbackBackend + 'static> From<B> for Built {
    fn from(b: B) -> Built {
        Built {
            backend: Arc::new(b),
            simulated: None,
        }
    }
}

/// One backend per `[backends.NAME]`, and the simulated ones by name.
pub fn build_all<'a>(
    backends: impl IntoIterator<Item = (&'a String, &'a BackendConfig)>,
    backend_timeout: Duration,
) -> (
    std::collections::HashMap<String, Arc<dyn RollbackBackend>>,
    std::collections::HashMap<String, Arc<SimulatedBackend>>,
) {
    let mut all = std::collections::HashMap::new();
    let mut simulated = std::collections::HashMap::new();
    for (name, b) in backends {
        let built = b.settings().build(&BuildContext {
            name,
            backend_timeout,
        });
        if let Some(sim) = built.simulated {
            simulated.insert(name.clone(), sim);
        }
        all.insert(name.clone(), built.backend);
    }
    (all, simulated)
}
