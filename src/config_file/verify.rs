//! `[[services.verify]]`: checks run after a rollback that the backend
//! verified, so "rolled back" also means "the service answers again". Each
//! has a `kind` (`http`, `prometheus`, `kubernetes`) and a `timeout`; the
//! engine runs them (`engine/verify_checks.rs`), and a failed one marks the
//! rollback not verified.
//!
//! Not to be confused with `[[services.checks]]`, which judge a canary
//! while it runs.

use super::sections::MetricSourceKind;
use super::Config;
use crate::config::{ConfigError, HumanDuration};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// One post-rollback check; `kind` picks the variant.
#[derive(Debug, Deserialize, Clone, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum VerifyCheck {
    /// `GET url` answers `status` within `timeout`.
    Http(HttpCheck),
    /// A PromQL query's value holds (`equals`, or `min`/`max`) within
    /// `timeout`, asked again every `interval` until it does.
    Prometheus(PrometheusCheck),
    /// The Deployment's or Rollout's rollout is complete, as the service's
    /// backend reads it, within `timeout`.
    Kubernetes(KubernetesCheck),
}

#[derive(Debug, Deserialize, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpCheck {
    /// Shown in the message and the audit entry (default: the URL).
    pub name: Option<String>,
    /// `$service`, `$namespace` and `$environment` are filled in.
    pub url: String,
    /// The status the endpoint must answer (default 200).
    #[serde(default = "default_status")]
    pub status: u16,
    #[serde(default = "default_http_timeout")]
    pub timeout: HumanDuration,
    /// Between attempts while the answer is not yet `status`.
    #[serde(default = "default_http_interval")]
    pub interval: HumanDuration,
}

#[derive(Debug, Deserialize, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PrometheusCheck {
    /// Shown in the message and the audit entry (default: the query).
    pub name: Option<String>,
    /// PromQL against `[metrics] url`; `$service`, `$namespace` and
    /// `$environment` are filled in. Every series it returns must hold.
    pub query: String,
    /// The value expected, within 1e-9 (for a count such as `0`).
    pub equals: Option<f64>,
    /// The lowest value that holds (inclusive).
    pub min: Option<f64>,
    /// The highest value that holds (inclusive).
    pub max: Option<f64>,
    #[serde(default = "default_prometheus_timeout")]
    pub timeout: HumanDuration,
    /// Between queries while the value does not hold.
    #[serde(default = "default_prometheus_interval")]
    pub interval: HumanDuration,
}

#[derive(Debug, Deserialize, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KubernetesCheck {
    /// Shown in the message and the audit entry (default: "rollout complete").
    pub name: Option<String>,
    #[serde(default = "default_kubernetes_timeout")]
    pub timeout: HumanDuration,
    /// Between reads while the rollout is not complete.
    #[serde(default = "default_kubernetes_interval")]
    pub interval: HumanDuration,
}

fn default_status() -> u16 {
    200
}
fn default_http_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
fn default_http_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(2))
}
fn default_prometheus_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(120))
}
fn default_prometheus_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}
fn default_kubernetes_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(300))
}
fn default_kubernetes_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}

/// The backend types whose platform reports a rollout's completion.
pub const KUBERNETES_CHECK_BACKENDS: [&str; 2] = ["kubernetes-deployment", "argo-rollouts"];

/// The longest a check may take: it holds the service's lock while it runs.
pub const MAX_VERIFY_TIMEOUT: Duration = Duration::from_secs(30 * 60);

impl VerifyCheck {
    /// `http`, `prometheus` or `kubernetes`.
    pub fn kind(&self) -> &'static str {
        match self {
            VerifyCheck::Http(_) => "http",
            VerifyCheck::Prometheus(_) => "prometheus",
            VerifyCheck::Kubernetes(_) => "kubernetes",
        }
    }

    /// The name people read in the message and the audit entry.
    pub fn name(&self) -> String {
        match self {
            VerifyCheck::Http(c) => c.name.clone().unwrap_or_else(|| c.url.clone()),
            VerifyCheck::Prometheus(c) => c.name.clone().unwrap_or_else(|| c.query.clone()),
            VerifyCheck::Kubernetes(c) => c
                .name
                .clone()
                .unwrap_or_else(|| "rollout complete".to_string()),
        }
    }

    /// How long the check may take at most.
    pub fn timeout(&self) -> Duration {
        match self {
            VerifyCheck::Http(c) => c.timeout.0,
            VerifyCheck::Prometheus(c) => c.timeout.0,
            VerifyCheck::Kubernetes(c) => c.timeout.0,
        }
    }

    /// What is wrong with the check on its own, with what to write instead.
    fn problem(&self) -> Option<(String, String)> {
        let too_long = |t: Duration| {
            (t > MAX_VERIFY_TIMEOUT).then(|| {
                (
                    format!("timeout `{}` is longer than 30m", humantime::format_duration(t)),
                    "a check holds the service's lock while it runs; write a timeout of 30m or less".to_string(),
                )
            })
        };
        if let Some(p) = too_long(self.timeout()) {
            return Some(p);
        }
        match self {
            VerifyCheck::Http(c) => {
                let url = reqwest::Url::parse(&fill(&c.url, "x", "x", "x"));
                match url {
                    Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
                    Ok(u) => {
                        return Some((
                            format!(
                                "url `{}` is not http or https (scheme `{}`)",
                                c.url,
                                u.scheme()
                            ),
                            "write a URL such as \"http://checkout.prod.svc/healthz\"".into(),
                        ))
                    }
                    Err(e) => {
                        return Some((
                            format!("url `{}` is not a URL ({e})", c.url),
                            "write a URL such as \"http://checkout.prod.svc/healthz\"".into(),
                        ))
                    }
                }
                if !(100..=599).contains(&c.status) {
                    return Some((
                        format!("status `{}` is not an HTTP status", c.status),
                        "write a status between 100 and 599, such as 200".into(),
                    ));
                }
                None
            }
            VerifyCheck::Prometheus(c) => {
                if c.query.trim().is_empty() {
                    return Some((
                        "query `` is empty".into(),
                        "write the PromQL whose value must hold after a rollback".into(),
                    ));
                }
                match (c.equals, c.min, c.max) {
                    (None, None, None) => Some((
                        "query `query` has no expected value".into(),
                        "add `equals = 0`, or `min` and/or `max` (inclusive)".into(),
                    )),
                    (Some(_), Some(_), _) | (Some(_), _, Some(_)) => Some((
                        "check `equals` cannot be combined with `min` or `max`".into(),
                        "write either `equals` or a range with `min` and/or `max`".into(),
                    )),
                    (_, Some(lo), Some(hi)) if lo > hi => Some((
                        format!("range `min` = {lo} is above `max` = {hi}"),
                        "swap them: `min` is the lowest value that holds".into(),
                    )),
                    _ => None,
                }
            }
            VerifyCheck::Kubernetes(_) => None,
        }
    }
}

/// Fills `$service`, `$namespace` and `$environment` into a URL or query.
pub fn fill(template: &str, service: &str, namespace: &str, environment: &str) -> String {
    template
        .replace("$service", service)
        .replace("$namespace", namespace)
        .replace("$environment", environment)
}

impl Config {
    /// Each service's `[[services.verify]]`: sound on its own, a distinct
    /// name, a Prometheus to ask, a backend that can tell a rollout's end.
    pub(super) fn check_verify(&self, path: &Path, source: &str) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        for s in &self.services {
            let mut names = BTreeMap::new();
            for check in &s.verify {
                let at = |msg: String| ConfigError::at(path, source, Some(check.span()), msg);
                let c = check.as_ref();
                let what = format!("service `{}`: verify check `{}`", s.name(), c.name());
                if let Some((problem, help)) = c.problem() {
                    errors.push(at(format!("{what}: {problem}")).help(help));
                }
                if names.insert(c.name(), ()).is_some() {
                    errors.push(
                        at(format!("{what} is defined twice"))
                            .help("give each check of a service a distinct `name`"),
                    );
                }
                match c {
                    VerifyCheck::Prometheus(_)
                        if self.metrics.source != MetricSourceKind::Prometheus =>
                    {
                        errors.push(
                            at(format!("{what}: a prometheus check needs [metrics] source = \"prometheus\""))
                                .help("set [metrics] source = \"prometheus\" and url, or use an http check"),
                        );
                    }
                    VerifyCheck::Kubernetes(_) => {
                        let kind = self
                            .backends
                            .get(s.backend.as_ref())
                            .map(|b| b.as_ref().type_name());
                        if let Some(kind) = kind.filter(|k| !KUBERNETES_CHECK_BACKENDS.contains(k))
                        {
                            errors.push(
                                at(format!("{what}: a kubernetes check needs a backend that reads a Deployment or Rollout; backend `{}` is {kind}", s.backend.as_ref()))
                                    .help(format!("use it with a backend of type {}, or use an http or prometheus check", KUBERNETES_CHECK_BACKENDS.join(" or "))),
                            );
                        }
                    }
                    _ => {}
                }
            }
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use crate::config_file::Config;
    use std::path::Path;

    const BASE: &str = r#"
[metrics]
source = "prometheus"
url = "http://127.0.0.1:9090"

[backends.sim]
type = "simulated"

[[services]]
name = "checkout"
backend = "sim"
"#;

    fn errors(extra: &str) -> Vec<String> {
        match Config::parse(Path::new("t.toml"), &format!("{BASE}{extra}")) {
            Ok(_) => Vec::new(),
            Err(e) => {
                e.0.iter()
                    .map(|e| {
                        format!(
                            "{}:{}: {} | {}",
                            e.line,
                            e.column,
                            e.message,
                            e.help.clone().unwrap_or_default()
                        )
                    })
                    .collect()
            }
        }
    }

    #[test]
    fn checks_of_each_kind_are_read_with_their_defaults() {
        let text = format!(
            "{BASE}
[[services.verify]]
kind = \"http\"
url = \"http://$service.svc/healthz\"

[[services.verify]]
kind = \"prometheus\"
name = \"errors\"
query = 'sum(rate(x{{service=\"$service\"}}[1m]))'
max = 0.01
timeout = \"1m\"
"
        );
        let c = Config::parse(Path::new("t.toml"), &text).unwrap();
        let checks = &c.service("checkout").unwrap().verify;
        assert_eq!(checks.len(), 2);
        match checks[0].as_ref() {
            super::VerifyCheck::Http(h) => {
                assert_eq!(h.status, 200);
                assert_eq!(h.timeout.0.as_secs(), 30);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(checks[1].as_ref().name(), "errors");
        assert_eq!(checks[1].as_ref().timeout().as_secs(), 60);
    }

    #[test]
    fn a_misspelt_key_is_located_with_a_suggestion() {
        let e =
            errors("\n[[services.verify]]\nkind = \"http\"\nurl = \"http://x/\"\nstauts = 200\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("16:1: unknown field `stauts`"), "{e:?}");
        assert!(e[0].contains("did you mean `status`?"), "{e:?}");
        let e = errors("\n[[services.verify]]\nkind = \"htp\"\nurl = \"http://x/\"\n");
        assert!(e[0].contains("unknown variant `htp`"), "{e:?}");
    }

    #[test]
    fn unsound_checks_are_refused_with_what_to_write() {
        let e = errors("\n[[services.verify]]\nkind = \"prometheus\"\nquery = \"up\"\n");
        assert!(
            e[0].starts_with("13:1: service `checkout`: verify check `up`"),
            "{e:?}"
        );
        assert!(e[0].contains("add `equals = 0`"), "{e:?}");
        let e = errors(
            "\n[[services.verify]]\nkind = \"prometheus\"\nquery = \"up\"\nmin = 2\nmax = 1\n",
        );
        assert!(e[0].contains("swap them"), "{e:?}");
        let e = errors("\n[[services.verify]]\nkind = \"http\"\nurl = \"nowhere\"\n");
        assert!(e[0].contains("is not a URL"), "{e:?}");
        let e =
            errors("\n[[services.verify]]\nkind = \"http\"\nurl = \"http://x/\"\nstatus = 20\n");
        assert!(e[0].contains("status `20` is not an HTTP status"), "{e:?}");
        let e = errors(
            "\n[[services.verify]]\nkind = \"http\"\nurl = \"http://x/\"\ntimeout = \"2h\"\n",
        );
        assert!(e[0].contains("longer than 30m"), "{e:?}");
        let e = errors("\n[[services.verify]]\nkind = \"kubernetes\"\n");
        assert!(e[0].contains("backend `sim` is simulated"), "{e:?}");
        let twice = "\n[[services.verify]]\nkind = \"http\"\nurl = \"http://x/\"\n";
        let e = errors(&format!("{twice}{twice}"));
        assert!(e[0].contains("is defined twice"), "{e:?}");
    }

    #[test]
    fn a_prometheus_check_needs_a_prometheus_source() {
        let text = BASE.replace("source = \"prometheus\"", "source = \"none\"");
        let text = format!(
            "{text}\n[[services.verify]]\nkind = \"prometheus\"\nquery = \"up\"\nequals = 1\n"
        );
        let e = Config::parse(Path::new("t.toml"), &text).unwrap_err();
        assert!(
            e.0[0]
                .message
                .contains("needs [metrics] source = \"prometheus\""),
            "{e:?}"
        );
    }
}
