//! `[gates]`: the bearer token Flagger and Argo Rollouts send to rollbot's
//! gate endpoints.

use super::Config;
use crate::config::{find_span, ConfigError, EnvRef, SecretSource};
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct GatesConfig {
    /// Bearer token the callers send: `"${ENV_VAR}"`, or `token_file`.
    pub token: Option<EnvRef>,
    pub token_file: Option<PathBuf>,
}

impl GatesConfig {
    /// Where the token comes from; `None` switches the gate endpoints off.
    pub fn token_source(&self) -> Result<Option<SecretSource>, String> {
        SecretSource::from_pair("token", self.token.as_ref(), self.token_file.as_ref())
    }
}

impl Config {
    /// `[gates]`: the token comes from one source. What a Flagger backend
    /// needs of it is the backend's own check (`backend/flagger.rs`).
    pub(super) fn check_gates(&self, path: &Path, source: &str) -> Vec<ConfigError> {
        match self.gates.token_source() {
            Err(e) => vec![ConfigError::at(
                path,
                source,
                find_span(source, "gates"),
                format!("[gates]: {e}"),
            )],
            Ok(_) => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config_file::parse_errors as errors;

    const BASE: &str = r#"
[backends.flagger]
type = "flagger"
verify_wait = "10s"

[[services]]
name = "podinfo"
backend = "flagger"
target = { namespace = "test" }
"#;

    #[test]
    fn a_flagger_backend_needs_the_gates_token_and_services_need_a_namespace() {
        let e = errors(BASE);
        assert!(e.contains("need [gates] token"), "{e}");
        assert!(e.contains("rollbot.toml:2:"), "located at the backend: {e}");

        let ok = format!("{BASE}\n[gates]\ntoken = \"${{ROLLBOT_GATES_TOKEN}}\"\n");
        assert_eq!(errors(&ok), "");

        let pasted = format!("{BASE}\n[gates]\ntoken = \"s3cret\"\n");
        assert!(errors(&pasted).contains("never written in the config"));

        let no_ns = ok.replace("target = { namespace = \"test\" }", "");
        let e = errors(&no_ns);
        assert!(e.contains("no target.namespace"), "{e}");
        assert!(
            e.contains("rollbot.toml:7:8:"),
            "located at the service name: {e}"
        );
    }

    #[test]
    fn two_services_cannot_stand_for_one_canary_and_verify_wait_ends_before_backend_timeout() {
        let ok = format!("{BASE}\n[gates]\ntoken_file = \"/run/secrets/gates\"\n");
        let twice = format!(
            "{ok}\n[[services]]\nname = \"podinfo-b\"\nbackend = \"flagger\"\ntarget = {{ namespace = \"test\", canary = \"podinfo\" }}\n"
        );
        let e = errors(&twice);
        assert!(
            e.contains("both stand for Flagger canary podinfo.test"),
            "{e}"
        );

        let long = ok.replace("verify_wait = \"10s\"", "verify_wait = \"5m\"");
        let e = errors(&long);
        assert!(e.contains("shorter than [engine] backend_timeout"), "{e}");

        let bad = ok.replace("namespace = \"test\"", "namespace = \"Test_NS\"");
        assert!(errors(&bad).contains("not a Kubernetes name"));
    }
}
