//! rollbot: a ChatOps bot for progressive delivery.
//!
//! The data flow, one folder per stage:
//!
//! ```text
//! chat / console / HTTP API ─► intake ─► engine ─► backend (one per platform)
//!                                          │
//!                                          ├─► audit log (sled, hash-chained)
//!                                          └─► chat (notifier → adapters)
//! metrics ─► judge ─► controller ─► engine
//! ```
//!
//! `ARCHITECTURE.md` at the top of the repository explains each stage.

pub mod audit;
pub mod backend;
pub(crate) mod breaker;
pub mod chat;
pub mod clock;
pub mod command;
pub mod config;
pub mod config_file;
pub mod controller;
pub mod demo;
pub mod domain;
pub mod engine;
pub(crate) mod fence;
pub(crate) mod freeze;
pub mod incident_comms;
pub mod intake;
pub mod judge;
pub(crate) mod leader;
pub(crate) mod limits;
pub(crate) mod metrics;
pub mod migration;
pub mod registry;
pub(crate) mod roles;
pub mod runtime;
pub mod server;
pub mod store;
pub mod telemetry;

/// Does a service glob match `environment/name`? A glob with a `/` is matched
/// against `environment/name`, one without against the bare name, so both
/// `prod/*` and `checkout*` do what they say.
pub(crate) fn glob_matches(glob: &str, environment: &str, name: &str) -> bool {
    let Ok(g) = globset::GlobBuilder::new(glob)
        .literal_separator(true)
        .build()
    else {
        return false;
    };
    let m = g.compile_matcher();
    if glob.contains('/') {
        m.is_match(format!("{environment}/{name}"))
    } else {
        m.is_match(name)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn globs_match_environment_or_name() {
        assert!(super::glob_matches("prod/*", "prod", "checkout"));
        assert!(!super::glob_matches("prod/*", "staging", "checkout"));
        assert!(super::glob_matches("check*", "prod", "checkout"));
        assert!(super::glob_matches("*", "prod", "checkout"));
        assert!(!super::glob_matches("pay*", "prod", "checkout"));
    }
}
