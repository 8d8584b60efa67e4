//! Post-rollback verification checks (`[[services.verify]]`): after the
//! backend verified a rollback, the service's own checks say whether it
//! really recovered: an HTTP endpoint answers the expected status, a
//! Prometheus query's value holds, the Deployment's or Rollout's rollout is
//! complete as the backend reads it.
//!
//! The checks run at once, each asking again every `interval` until it
//! holds or its `timeout` passes (`poll::poll_until`), and each is also cut
//! by a hard limit, so a check never holds the action longer than its
//! timeout and one attempt. A failed check turns the rollback into "not
//! verified" (`act.rs` then settles it as failed: stuck, paged), with the
//! check's evidence. Every check's result goes in the audit entry
//! (`checks`) and in the message.

use super::act::describe;
use super::Engine;
use crate::backend::poll::{poll_until, Look, Polled};
use crate::backend::{BackendError, Operation, Target};
use crate::breaker::Lane;
use crate::chat::Message;
use crate::config_file::{
    HttpCheck, KubernetesCheck, MetricSourceKind, PrometheusCheck, ServiceConfig, VerifyCheck,
};
use crate::domain::human_duration;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::time::Instant;

/// The audit parameter holding every check's result.
const CHECKS: &str = "checks";

/// How one check ended, as the audit entry and the message show it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    pub name: String,
    pub kind: String,
    pub ok: bool,
    /// What was observed: the status answered, the value, the rollout's state.
    pub evidence: String,
}

/// How one look of a check went.
enum Seen {
    /// The check holds; what was observed.
    Holds(String),
    /// Not (yet); what was observed. Looked at again until the timeout.
    Not(String),
    /// It cannot hold however long one waits (a refused query, a backend
    /// that cannot tell): the check fails at once.
    Broken(String),
}

impl Engine {
    /// After the backend's verification of a rollback: when it verified
    /// and the service has checks, runs them, records their results in
    /// `params`, and returns whether the rollback is verified and why.
    pub(super) async fn post_rollback_checks(
        &self,
        svc: &ServiceConfig,
        target: &Target,
        op: &Operation,
        (verified, detail): (bool, String),
        params: &mut BTreeMap<String, serde_json::Value>,
    ) -> (bool, String) {
        if !verified || svc.verify.is_empty() || !matches!(op, Operation::Rollback { .. }) {
            return (verified, detail);
        }
        let runs = svc
            .verify
            .iter()
            .map(|c| self.run_check(svc, target, c.as_ref()));
        let results = futures_util::future::join_all(runs).await;
        params.insert(CHECKS.into(), json!(results));
        let failed: Vec<&CheckResult> = results.iter().filter(|r| !r.ok).collect();
        match failed.as_slice() {
            [] => (true, detail),
            [one] => (
                false,
                format!(
                    "the post-rollback check `{}` ({}) failed: {}",
                    one.name, one.kind, one.evidence
                ),
            ),
            many => (
                false,
                format!(
                    "{} post-rollback checks failed: {}",
                    many.len(),
                    many.iter()
                        .map(|r| format!("`{}` ({}): {}", r.name, r.kind, r.evidence))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            ),
        }
    }

    /// One check, cut at its timeout plus a grace for the attempt in flight.
    async fn run_check(
        &self,
        svc: &ServiceConfig,
        target: &Target,
        check: &VerifyCheck,
    ) -> CheckResult {
        let limit = check.timeout();
        let ns = svc.namespace.as_deref().unwrap_or(svc.name());
        let fill = |t: &str| crate::config_file::fill_verify(t, svc.name(), ns, &svc.environment);
        let work = async {
            match check {
                VerifyCheck::Http(c) => http_check(c, &fill(&c.url)).await,
                VerifyCheck::Prometheus(c) => self.prometheus_check(c, &fill(&c.query)).await,
                VerifyCheck::Kubernetes(c) => self.kubernetes_check(c, svc, target).await,
            }
        };
        let (ok, evidence) = match tokio::time::timeout(limit + GRACE, work).await {
            Ok(r) => r,
            Err(_) => (
                false,
                format!("no result within {}", human_duration(limit + GRACE)),
            ),
        };
        CheckResult {
            name: check.name(),
            kind: check.kind().into(),
            ok,
            evidence,
        }
    }

    /// `[metrics]`'s Prometheus holds the query's value.
    async fn prometheus_check(&self, c: &PrometheusCheck, query: &str) -> (bool, String) {
        let m = &self.config.metrics;
        let base = match (&m.source, &m.url) {
            (MetricSourceKind::Prometheus, Some(u)) => u.trim_end_matches('/').to_string(),
            _ => {
                return (
                    false,
                    "no Prometheus is configured ([metrics] source = \"prometheus\" and url)"
                        .into(),
                )
            }
        };
        let auth = match prometheus_auth(m) {
            Ok(a) => a,
            Err(e) => return (false, e),
        };
        let expected = expectation(c);
        let deadline = Instant::now() + c.timeout.0;
        let look = |_| {
            let (base, auth, expected) = (&base, &auth, &expected);
            async move {
                let t = attempt_timeout(deadline);
                let seen = match instant_query(base, auth, query, t).await {
                    Ok(values) => judge_values(c, &values, expected),
                    Err(Failure::Retry(e)) => Seen::Not(e),
                    Err(Failure::Final(e)) => Seen::Broken(e),
                };
                Ok::<_, ()>(settle_look(seen))
            }
        };
        ended(
            poll_until(c.timeout.0, c.interval.0, look, |_| {}).await,
            c.timeout.0,
        )
    }

    /// The service's backend reads the rollout as complete.
    async fn kubernetes_check(
        &self,
        c: &KubernetesCheck,
        svc: &ServiceConfig,
        target: &Target,
    ) -> (bool, String) {
        let Some(slot) = self.backends.get(svc.backend.as_ref()) else {
            return (
                false,
                format!("backend {} is not running", svc.backend.as_ref()),
            );
        };
        let deadline = Instant::now() + c.timeout.0;
        let look = |_| async move {
            let t = attempt_timeout(deadline).min(self.config.engine.backend_timeout.0);
            let read = slot
                .breaker
                .call_in(Lane::Read, t, slot.backend.rollout_complete(target), |e| {
                    !matches!(e, BackendError::Refused(_))
                })
                .await;
            let seen = match read {
                Ok(v) if v.ok => Seen::Holds(v.detail),
                Ok(v) => Seen::Not(v.detail),
                Err(crate::breaker::Rejected::Inner(BackendError::Refused(e))) => Seen::Broken(e),
                Err(e) => Seen::Not(describe(e)),
            };
            Ok::<_, ()>(settle_look(seen))
        };
        ended(
            poll_until(c.timeout.0, c.interval.0, look, |_| {}).await,
            c.timeout.0,
        )
    }
}

/// Past a check's timeout, how long the attempt in flight may still take.
const GRACE: Duration = Duration::from_secs(5);

/// One attempt's time limit: what is left until the deadline, at least a
/// second so the last attempt can be made at all.
fn attempt_timeout(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_secs(1))
}

fn settle_look(seen: Seen) -> Look<(bool, String), String> {
    match seen {
        Seen::Holds(e) => Look::Done((true, e)),
        Seen::Broken(e) => Look::Done((false, e)),
        Seen::Not(e) => Look::Waiting(e),
    }
}

/// A wait's end as (ok, evidence).
fn ended(polled: Result<Polled<(bool, String), String>, ()>, timeout: Duration) -> (bool, String) {
    match polled {
        Ok(Polled::Done(r)) => r,
        Ok(Polled::TimedOut { last, looks }) => (
            false,
            format!(
                "{last} (still so after {looks} {} in {})",
                if looks == 1 { "attempt" } else { "attempts" },
                human_duration(timeout)
            ),
        ),
        Err(()) => (false, "the check stopped unexpectedly".into()),
    }
}

/// `GET url` until it answers `status`. Redirects are not followed: the
/// status compared is the one the endpoint answers.
async fn http_check(c: &HttpCheck, url: &str) -> (bool, String) {
    let client = match reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => c,
        Err(e) => return (false, format!("cannot make an HTTP client: {e}")),
    };
    let deadline = Instant::now() + c.timeout.0;
    let look = |_| {
        let client = &client;
        async move {
            let t = attempt_timeout(deadline);
            let seen = match client.get(url).timeout(t).send().await {
                Ok(r) if r.status().as_u16() == c.status => {
                    Seen::Holds(format!("GET {url} answered {}", r.status()))
                }
                Ok(r) => Seen::Not(format!(
                    "GET {url} answered {}, expected {}",
                    r.status(),
                    c.status
                )),
                Err(e) if e.is_timeout() => Seen::Not(format!(
                    "GET {url} did not answer within {}",
                    human_duration(t)
                )),
                Err(e) if e.is_connect() => {
                    Seen::Not(format!("GET {url}: cannot connect ({})", root_cause(&e)))
                }
                Err(e) => Seen::Not(format!("GET {url} failed: {}", root_cause(&e))),
            };
            Ok::<_, ()>(settle_look(seen))
        }
    };
    ended(
        poll_until(c.timeout.0, c.interval.0, look, |_| {}).await,
        c.timeout.0,
    )
}

/// What a Prometheus check expects, in words.
fn expectation(c: &PrometheusCheck) -> String {
    match (c.equals, c.min, c.max) {
        (Some(v), _, _) => format!("expected {v}"),
        (None, Some(lo), Some(hi)) => format!("expected between {lo} and {hi}"),
        (None, Some(lo), None) => format!("expected at least {lo}"),
        (None, None, Some(hi)) => format!("expected at most {hi}"),
        (None, None, None) => "no expected value".into(),
    }
}

fn holds(c: &PrometheusCheck, v: f64) -> bool {
    if let Some(e) = c.equals {
        return (v - e).abs() <= 1e-9;
    }
    !v.is_nan() && c.min.is_none_or(|lo| v >= lo) && c.max.is_none_or(|hi| v <= hi)
}

/// Every series must hold; no series is no evidence, so not yet.
fn judge_values(c: &PrometheusCheck, values: &[(String, f64)], expected: &str) -> Seen {
    if values.is_empty() {
        return Seen::Not(format!("the query returned no data ({expected})"));
    }
    let shown: Vec<String> = values
        .iter()
        .map(|(labels, v)| match labels.as_str() {
            "" | "{}" => format!("{v}"),
            l => format!("{v} for {l}"),
        })
        .collect();
    let what = format!(
        "{} {} ({expected})",
        if values.len() == 1 { "value" } else { "values" },
        shown.join(", ")
    );
    if values.iter().all(|(_, v)| holds(c, *v)) {
        Seen::Holds(what)
    } else {
        Seen::Not(what)
    }
}

enum Failure {
    /// Prometheus could not be asked now; it may answer later.
    Retry(String),
    /// Prometheus refused the query: asking again cannot help.
    Final(String),
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

/// One instant query: each series' labels and value.
async fn instant_query(
    base: &str,
    auth: &crate::metrics::prometheus::Auth,
    query: &str,
    timeout: Duration,
) -> Result<Vec<(String, f64)>, Failure> {
    let req = auth.apply(
        reqwest::Client::new()
            .get(format!("{base}/api/v1/query"))
            .query(&[("query", query)])
            .timeout(timeout),
    );
    let resp = req.send().await.map_err(|e| {
        Failure::Retry(format!(
            "cannot reach Prometheus at {base}: {}",
            root_cause(&e)
        ))
    })?;
    let status = resp.status();
    let body = resp
        .bytes()
        .await
        .map_err(|e| Failure::Retry(format!("reading Prometheus' answer: {e}")))?;
    let answer: Answer = serde_json::from_slice(&body).map_err(|_| {
        Failure::Retry(format!(
            "Prometheus at {base} answered HTTP {status} without its API's JSON: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        ))
    })?;
    if answer.status != "success" {
        return Err(Failure::Final(format!(
            "Prometheus refused the query `{query}`: {}: {}",
            answer.error_type.unwrap_or_else(|| "error".into()),
            answer.error.unwrap_or_default()
        )));
    }
    let data = answer
        .data
        .ok_or_else(|| Failure::Retry("Prometheus answered success without data".into()))?;
    let number = |v: &serde_json::Value| v[1].as_str().and_then(|s| s.parse::<f64>().ok());
    match data.result_type.as_str() {
        "scalar" => Ok(number(&data.result)
            .into_iter()
            .map(|v| (String::new(), v))
            .collect()),
        "vector" => Ok(data
            .result
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| {
                let labels = s["metric"]
                    .as_object()
                    .map(|m| {
                        let pairs: Vec<String> = m
                            .iter()
                            .map(|(k, v)| format!("{k}=\"{}\"", v.as_str().unwrap_or_default()))
                            .collect();
                        format!("{{{}}}", pairs.join(","))
                    })
                    .unwrap_or_default();
                number(&s["value"]).map(|v| (labels, v))
            })
            .collect()),
        other => Err(Failure::Final(format!(
            "the query `{query}` returns a {other}, not an instant vector or scalar"
        ))),
    }
}

/// `[metrics]`'s credentials, read now (a rotated secret is read again).
fn prometheus_auth(
    m: &crate::config_file::MetricsConfig,
) -> Result<crate::metrics::prometheus::Auth, String> {
    use crate::config::SecretSource;
    use crate::metrics::prometheus::Auth;
    let bearer = SecretSource::from_pair(
        "bearer_token",
        m.bearer_token.as_ref(),
        m.bearer_token_file.as_ref(),
    )?;
    let basic = SecretSource::from_pair(
        "basic_password",
        m.basic_password.as_ref(),
        m.basic_password_file.as_ref(),
    )?;
    Ok(match (bearer, basic, &m.basic_user) {
        (Some(b), _, _) => Auth::Bearer(
            b.resolve()
                .map_err(|e| format!("[metrics] bearer_token: {e}"))?,
        ),
        (None, Some(p), Some(user)) => Auth::Basic {
            user: user.clone(),
            password: p
                .resolve()
                .map_err(|e| format!("[metrics] basic_password: {e}"))?,
        },
        _ => Auth::None,
    })
}

/// The innermost cause of an HTTP error ("Connection refused (os error 111)").
fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Adds the checks' results to a rollback's message, one line each.
pub(super) fn show(message: Message, params: &BTreeMap<String, serde_json::Value>) -> Message {
    let Some(results) = params
        .get(CHECKS)
        .and_then(|v| serde_json::from_value::<Vec<CheckResult>>(v.clone()).ok())
    else {
        return message;
    };
    let lines: Vec<String> = results
        .iter()
        .map(|r| {
            format!(
                "{} {} ({}): {}",
                if r.ok { "✓" } else { "✗ failed:" },
                r.name,
                r.kind,
                r.evidence
            )
        })
        .collect();
    message.field("Post-rollback checks", lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HumanDuration;

    fn check(equals: Option<f64>, min: Option<f64>, max: Option<f64>) -> PrometheusCheck {
        PrometheusCheck {
            name: None,
            query: "x".into(),
            equals,
            min,
            max,
            timeout: HumanDuration(Duration::from_secs(1)),
            interval: HumanDuration(Duration::from_secs(1)),
        }
    }

    #[test]
    fn a_value_holds_inside_its_range_or_at_its_value() {
        let range = check(None, Some(0.5), Some(1.0));
        assert!(holds(&range, 0.5) && holds(&range, 1.0));
        assert!(!holds(&range, 1.01) && !holds(&range, 0.49) && !holds(&range, f64::NAN));
        let zero = check(Some(0.0), None, None);
        assert!(holds(&zero, 0.0) && !holds(&zero, 1.0));
        let e = expectation(&range);
        match judge_values(
            &range,
            &[("{pod=\"a\"}".into(), 0.7), ("{pod=\"b\"}".into(), 3.0)],
            &e,
        ) {
            Seen::Not(what) => assert_eq!(
                what,
                "values 0.7 for {pod=\"a\"}, 3 for {pod=\"b\"} (expected between 0.5 and 1)"
            ),
            _ => panic!("one series is out of range"),
        }
        assert!(matches!(judge_values(&range, &[], &e), Seen::Not(w) if w.contains("no data")));
    }
}
