//! The factory: what a backend's settings type does ([`BackendSettings`]),
//! what its checks and constructor get from the rest of the file, and
//! [`backend_types!`], which `backend/mod.rs` uses once to list every
//! backend, one line each.
//!
//! A `[backends.NAME]` table is read as [`BackendConfig`]: its `type` picks
//! the variant, and the rest of the table is that backend's own settings
//! type, declared in the backend's file with its checks and its
//! constructor. Adding a backend is its file, one line in that list, and
//! its page under `docs/backends/`.

use super::simulated::SimulatedBackend;
use super::{BackendConfig, RollbackBackend};
use crate::config::ConfigError;
use std::collections::{BTreeMap, HashMap};
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

/// Declares every backend module, [`BackendConfig`] with one variant per
/// module, and the one match that reaches each variant's settings. Used
/// once, in `backend/mod.rs`: one line per backend.
macro_rules! backend_types {
    ($($module:ident: $type_name:tt => $variant:ident($settings:ident),)*) => {
        $(pub mod $module;)*

        /// How a backend is reached: `type` in a `[backends.NAME]` table
        /// picks the variant; the rest of the table is that backend's own
        /// settings type.
        #[derive(Debug, serde::Deserialize, Clone)]
        #[serde(tag = "type")]
        pub enum BackendConfig {
            $(#[serde(rename = $type_name)] $variant($module::$settings),)*
        }

        impl BackendConfig {
            /// The `type` written in the table.
            pub fn type_name(&self) -> &'static str {
                match self {
                    $(BackendConfig::$variant(_) => $type_name,)*
                }
            }

            /// The backend's own settings, checks and constructor.
            pub fn settings(&self) -> &dyn $crate::backend::factory::BackendSettings {
                match self {
                    $(BackendConfig::$variant(s) => s,)*
                }
            }
        }
    };
}

pub(crate) use backend_types;

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

/// Every backend built from the file, and the simulated ones again by
/// name so the demo and tests can steer them.
#[derive(Default)]
pub struct BuiltBackends {
    pub all: HashMap<String, Arc<dyn RollbackBackend>>,
    pub simulated: HashMap<String, Arc<SimulatedBackend>>,
}

/// One backend per `[backends.NAME]`.
pub fn build_all<'a>(
    backends: impl IntoIterator<Item = (&'a String, &'a BackendConfig)>,
    backend_timeout: Duration,
) -> BuiltBackends {
    let mut out = BuiltBackends::default();
    for (name, b) in backends {
        let built = b.settings().build(&BuildContext {
            name,
            backend_timeout,
        });
        if let Some(sim) = built.simulated {
            out.simulated.insert(name.clone(), sim);
        }
        out.all.insert(name.clone(), built.backend);
    }
    out
}
