//! `[gates]`: the bearer token Flagger and Argo Rollouts send to rollbot's
//! gate endpoints, and the checks that tie Flagger canaries to services.

use super::{find_span, BackendConfig, Config, ConfigError, EnvRef, SecretSource};
use serde::Deserialize;
use std::collections::BTreeMap;
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
    /// `[gates]` and the services behind a `flagger` backend: each names
    /// its namespace, and no two stand for the same Canary.
    pub(super) fn validate_gates(&self, path: &Path, source: &str) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let at = |span: std::ops::Range<usize>, msg: String| {
            ConfigError::at(path, source, Some(span), msg)
        };
        let token = self.gates.token_source();
        if let Err(e) = &token {
            errors.push(ConfigError::at(
                path,
                source,
                find_span(source, "gates"),
                format!("[gates]: {e}"),
            ));
        }
        let flagger: Vec<(&String, std::ops::Range<usize>)> = self
            .backends
            .iter()
            .filter(|(_, b)| matches!(b.as_ref(), BackendConfig::Flagger { .. }))
            .map(|(n, b)| (n, b.span()))
            .collect();
        for (name, span) in &flagger {
            if let Some(BackendConfig::Flagger {
                verify_wait: Some(w),
            }) = self.backends.get(*name).map(|b| b.as_ref())
            {
                if w.0 >= self.engine.backend_timeout.0 {
                    errors.push(
                        at(span.clone(), format!(
                            "backend `{name}`: verify_wait {} must be shorter than [engine] backend_timeout {}",
                            crate::domain::human_duration(w.0),
                            crate::domain::human_duration(self.engine.backend_timeout.0)
                        ))
                        .help("lower verify_wait; an open gate stays open after the wait, and rollbot posts when Flagger passes it"),
                    );
                }
            }
            if matches!(token, Ok(None)) {
                errors.push(
                    at(
                        span.clone(),
                        format!("backend `{name}`: Flagger calls rollbot's gates, which need [gates] token"),
                    )
                    .help("add [gates] with token = \"${ROLLBOT_GATES_TOKEN}\" (or token_file) and send it from the Canary's webhooks as a bearer token"),
                );
            }
        }
        let mut canaries: BTreeMap<String, &str> = BTreeMap::new();
        for s in &self.services {
            if !flagger
                .iter()
                .any(|(n, _)| n.as_str() == s.backend.as_ref())
            {
                continue;
            }
            let name = s.name();
            let Some(ns) = s.target.get("namespace") else {
                errors.push(
                    at(
                        s.name.span(),
                        format!("service `{name}` uses a flagger backend but has no target.namespace"),
                    )
                    .help("write target = { namespace = \"prod\" } (and canary = \"NAME\" when the Canary is not named like the service)"),
                );
                continue;
            };
            for (key, v) in [("namespace", Some(ns)), ("canary", s.target.get("canary"))] {
                if let Some(v) = v {
                    if v.is_empty()
                        || !v
                            .chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    {
                        errors.push(
                            at(s.name.span(), format!("service `{name}`: target.{key} `{v}` is not a Kubernetes name"))
                                .help("use lowercase letters, digits and `-`, as in the Canary's metadata"),
                        );
                    }
                }
            }
            let canary = crate::backend::flagger::canary_of(name, &s.target);
            if let Some(first) = canaries.insert(canary.clone(), name) {
                errors.push(
                    at(
                        s.name.span(),
                        format!("services `{first}` and `{name}` both stand for Flagger canary {canary}"),
                    )
                    .help("give one of them target.canary (or target.namespace) naming its own Canary"),
                );
            }
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::Path;

    const BASE: &str = r#"
[backends.flagger]
type = "flagger"
verify_wait = "10s"

[[services]]
name = "podinfo"
backend = "flagger"
target = { namespace = "test" }
"#;

    fn errors(text: &str) -> String {
        match Config::parse(Path::new("rollbot.toml"), text) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

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
