//! `[[services.fallback]]`: what rollbot may try, in order, when a rollback
//! leaves a service stuck between versions (Istio traffic to stable, a
//! feature flag off, the canary Deployment scaled to zero). A fallback is a
//! rollback through another of the file's `[backends.NAME]` with its own
//! `target`, so each backend checks a fallback's target as it checks a
//! service's.

use super::service::{unknown_ref, ServiceConfig};
use super::Config;
use crate::backend::factory::{CheckContext, ServiceUse};
use crate::config::ConfigError;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use toml::Spanned;

/// The longest fallback name: it is shown on a button ("Try fallback: …"),
/// and Slack cuts button text at 75 characters, Discord labels at 80.
pub const MAX_FALLBACK_NAME: usize = 60;

/// A fallback button's id holds the service's name, the stuck episode and
/// the position; Discord refuses ids longer than 100 characters.
const MAX_SERVICE_WITH_FALLBACKS: usize = 64;

/// One fallback mechanism of a service.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FallbackConfig {
    /// Shown on the button and typed in `/rollback SERVICE fallback "NAME"`.
    pub name: Spanned<String>,
    /// A `[backends.NAME]` table: the fallback is that backend's rollback.
    pub backend: Spanned<String>,
    /// That backend's target keys, as in `[services.target]`.
    #[serde(default)]
    pub target: BTreeMap<String, String>,
}

impl FallbackConfig {
    pub fn name(&self) -> &str {
        self.name.as_ref()
    }
}

impl ServiceConfig {
    /// The fallback called `name` (case and runs of spaces do not matter),
    /// or the one at that 1-based position; with its position.
    pub fn fallback_named(&self, name: &str) -> Option<(usize, &FallbackConfig)> {
        let wanted = squeeze(name);
        if let Some(found) = self
            .fallback
            .iter()
            .enumerate()
            .find(|(_, f)| squeeze(f.name()).eq_ignore_ascii_case(&wanted))
        {
            return Some(found);
        }
        let n: usize = wanted.parse().ok()?;
        self.fallback.get(n.checked_sub(1)?).map(|f| (n - 1, f))
    }
}

/// `name` with its spaces trimmed and each run of them made one.
fn squeeze(name: &str) -> String {
    name.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// What a fallback name may be: it is typed between double quotes.
fn check_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("a fallback needs a name, shown on its button".into());
    }
    if name.chars().count() > MAX_FALLBACK_NAME {
        return Err(format!(
            "fallback name `{name}` is longer than {MAX_FALLBACK_NAME} characters (it is a button's label)"
        ));
    }
    if name.chars().any(|c| c == '"' || c.is_control()) {
        return Err(format!(
            "fallback name `{}` holds a double quote or a control character; it is typed as /rollback SERVICE fallback \"NAME\"",
            name.escape_debug()
        ));
    }
    Ok(())
}

impl Config {
    /// Each service's fallbacks: a good name, once per service; a defined
    /// backend; the target keys that backend needs; not the service's own
    /// rollback again; and `auto_fallback` only with something to try.
    pub(super) fn check_fallbacks(&self, path: &Path, source: &str) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let at = |span: std::ops::Range<usize>, msg: String| {
            ConfigError::at(path, source, Some(span), msg)
        };
        for s in &self.services {
            let svc = s.name();
            if s.auto_fallback && s.fallback.is_empty() {
                errors.push(
                    at(
                        s.name.span(),
                        format!("service `{svc}` sets auto_fallback = true but names no fallback"),
                    )
                    .help("add [[services.fallback]] entries (name, backend, target) under this service, or remove auto_fallback"),
                );
            }
            if !s.fallback.is_empty() && svc.chars().count() > MAX_SERVICE_WITH_FALLBACKS {
                errors.push(
                    at(
                        s.name.span(),
                        format!("service `{svc}` has fallbacks but its name is longer than {MAX_SERVICE_WITH_FALLBACKS} characters, too long for their buttons (Discord allows 100 characters per button id)"),
                    )
                    .help("give the service a shorter name"),
                );
            }
            let mut seen: BTreeMap<String, usize> = BTreeMap::new();
            for f in &s.fallback {
                let name = f.name();
                if let Err(e) = check_name(name) {
                    errors.push(
                        at(f.name.span(), format!("service `{svc}`: {e}"))
                            .help("write a short name such as \"traffic to stable\""),
                    );
                }
                let key = squeeze(name).to_lowercase();
                if let Some(first) = seen.insert(key, f.name.span().start) {
                    let (line, _) = crate::config::line_col(source, first);
                    errors.push(
                        at(
                            f.name.span(),
                            format!("service `{svc}` names fallback `{name}` twice (first at line {line})"),
                        )
                        .help("give each fallback of a service its own name"),
                    );
                }
                let Some(backend) = self.backends.get(f.backend.as_ref()) else {
                    let known: Vec<&str> = self.backends.keys().map(String::as_str).collect();
                    errors.push(unknown_ref(
                        at(
                            f.backend.span(),
                            format!(
                                "service `{svc}` fallback `{name}` names backend `{}`, which is not defined",
                                f.backend.as_ref()
                            ),
                        ),
                        f.backend.as_ref(),
                        &known,
                        "backends",
                    ));
                    continue;
                };
                if f.backend.as_ref() == s.backend.as_ref() && f.target == s.target {
                    errors.push(
                        at(
                            f.backend.span(),
                            format!("service `{svc}` fallback `{name}` is the service's own rollback again (same backend and target)"),
                        )
                        .help("rollbot never retries a failed rollback by itself; name another mechanism (traffic to stable, a flag off, the canary scaled to zero)"),
                    );
                    continue;
                }
                errors.extend(self.fallback_target_errors(s, f, backend, path, source));
            }
        }
        errors
    }

    /// The backend's own checks of a service's target, run on the
    /// fallback's: what they find with the fallback and not without it.
    fn fallback_target_errors(
        &self,
        s: &ServiceConfig,
        f: &FallbackConfig,
        backend: &Spanned<crate::backend::BackendConfig>,
        path: &Path,
        source: &str,
    ) -> Vec<ConfigError> {
        let uses = [ServiceUse {
            name: s.name(),
            name_span: f.name.span(),
            backend: f.backend.as_ref(),
            backend_span: f.backend.span(),
            backend_type: Some(backend.as_ref().type_name()),
            target: &f.target,
        }];
        let check = |services: &[ServiceUse]| {
            backend.as_ref().settings().check(&CheckContext {
                name: f.backend.as_ref(),
                table: backend.span(),
                backend_timeout: self.engine.backend_timeout.0,
                services,
                no_gates_token: matches!(self.gates.token_source(), Ok(None)),
                path,
                source,
            })
        };
        let alone = check(&[]);
        let svc = format!("service `{}`", s.name());
        let named = format!("{svc} fallback `{}`", f.name());
        check(&uses)
            .into_iter()
            .filter(|e| !alone.contains(e))
            .map(|mut e| {
                e.message = match e.message.contains(&svc) {
                    true => e.message.replacen(&svc, &named, 1),
                    false => format!("{named}: {}", e.message),
                };
                e.help = e.help.map(|h| {
                    h.replace(
                        "the service's [services.target] table",
                        "this fallback's `target`",
                    )
                    .replace("[services.target]", "the fallback's `target`")
                    .replace("under this service", "in this fallback")
                });
                e
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::config_file::parse_errors;

    const GOOD: &str = r##"[channels.deploys]
console = "#deploys"

[backends.k8s]
type = "kubernetes-deployment"
namespace = "prod"

[backends.mesh]
type = "istio"
namespace = "prod"

[[services]]
name = "checkout"
backend = "k8s"
deploy_channel = "deploys"
auto_fallback = true

[[services.fallback]]
name = "traffic to stable"
backend = "mesh"
target = { virtual_service = "checkout" }

[[services.fallback]]
name = "canary to zero"
backend = "k8s"
target = { mechanism = "scale-canary", canary_deployment = "checkout-canary" }
"##;

    #[test]
    fn fallbacks_on_other_backends_are_accepted_and_found_by_name_or_position() {
        assert_eq!(parse_errors(GOOD), "");
        let c = crate::config_file::Config::parse(std::path::Path::new("r.toml"), GOOD).unwrap();
        let s = c.service("checkout").unwrap();
        assert!(s.auto_fallback);
        assert_eq!(s.fallback_named("Traffic  TO stable").unwrap().0, 0);
        assert_eq!(s.fallback_named("2").unwrap().1.name(), "canary to zero");
        assert!(s.fallback_named("3").is_none() && s.fallback_named("0").is_none());
        assert!(s.fallback_named("flag off").is_none());
    }

    #[test]
    fn an_unknown_backend_is_located_with_the_closest_name() {
        let e = parse_errors(&GOOD.replace("backend = \"mesh\"", "backend = \"mesj\""));
        assert!(
            e.contains("rollbot.toml:20:11: service `checkout` fallback `traffic to stable` names backend `mesj`, which is not defined")
                && e.contains("did you mean `mesh`?"),
            "{e}"
        );
    }

    #[test]
    fn the_backend_checks_the_fallbacks_target_keys_where_they_are_written() {
        let e = parse_errors(&GOOD.replace(", canary_deployment = \"checkout-canary\"", ""));
        assert!(
            e.contains("rollbot.toml:25:11: service `checkout` fallback `canary to zero`: mechanism `scale-canary` needs canary_deployment")
                && e.contains("help: set it in this fallback's `target`")
                && e.contains("1 error in the configuration"),
            "{e}"
        );
    }

    #[test]
    fn names_auto_fallback_and_a_second_copy_of_the_rollback_are_checked() {
        let e = parse_errors(&GOOD.replace("canary to zero", "Traffic to  stable"));
        assert!(
            e.contains("rollbot.toml:24:8: service `checkout` names fallback `Traffic to  stable` twice (first at line 19)"),
            "{e}"
        );
        let e = parse_errors(&GOOD.replace("canary to zero", "say \\\"off\\\""));
        assert!(e.contains("holds a double quote"), "{e}");
        let none = GOOD.split("[[services.fallback]]").next().unwrap();
        let e = parse_errors(none);
        assert!(
            e.contains("rollbot.toml:13:8: service `checkout` sets auto_fallback = true but names no fallback"),
            "{e}"
        );
        let again = format!("{none}[[services.fallback]]\nname = \"again\"\nbackend = \"k8s\"\n");
        let e = parse_errors(&again.replace("auto_fallback = true\n", ""));
        assert!(
            e.contains("fallback `again` is the service's own rollback again"),
            "{e}"
        );
    }
}
