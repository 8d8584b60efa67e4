//! An in-memory backend for the demo and tests: a service has a revision
//! history, a live revision and perhaps a canary moving through weight steps.
//! Latency and failures can be injected; every call is counted.

use super::factory::{BackendSettings, BuildContext, Built, CheckContext};
use super::*;
use crate::config::{ConfigError, HumanDuration};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// `[backends.NAME]` with `type = "simulated"`: in memory, for the demo and
/// tests.
#[derive(Debug, serde::Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct SimulatedConfig {
    /// Added to every call, to make actions visible in the demo.
    #[serde(default)]
    latency: Option<HumanDuration>,
    /// Revision history per service, oldest first; the last is live.
    #[serde(default)]
    history: BTreeMap<String, Vec<String>>,
}

impl BackendSettings for SimulatedConfig {
    fn check(&self, _cx: &CheckContext) -> Vec<ConfigError> {
        Vec::new()
    }

    fn build(&self, _cx: &BuildContext) -> Built {
        let sim = Arc::new(SimulatedBackend::new(
            self.latency.map(|l| l.0).unwrap_or_default(),
            self.history.clone(),
        ));
        Built {
            backend: sim.clone(),
            simulated: Some(sim),
        }
    }
}

/// Canary traffic weights, one per step; the last step is full promotion.
pub const STEPS: [u8; 4] = [10, 25, 50, 100];

#[derive(Clone, Debug)]
struct SimService {
    revisions: Vec<String>,
    live: usize,
    /// Index of the canary revision and its current step.
    canary: Option<(usize, usize)>,
    paused: bool,
}

impl SimService {
    /// The last revision of the history is a canary at its first step.
    fn from_history(history: &[String]) -> SimService {
        let revisions = if history.is_empty() {
            vec!["v1".to_string(), "v2".to_string()]
        } else {
            history.to_vec()
        };
        let n = revisions.len();
        SimService {
            canary: (n >= 2).then_some((n - 1, 0)),
            live: n.saturating_sub(2),
            revisions,
            paused: false,
        }
    }
}

struct Injected {
    op: String,
    remaining: u32,
    message: String,
    hang: bool,
}

pub struct SimulatedBackend {
    latency: Duration,
    histories: BTreeMap<String, Vec<String>>,
    services: Mutex<HashMap<String, SimService>>,
    injected: Mutex<HashMap<String, Vec<Injected>>>,
    calls: Mutex<Vec<(String, String)>>,
    /// Calls in progress and the most seen at once, per service.
    active: Arc<Mutex<HashMap<String, (usize, usize)>>>,
    /// A dry run's copy: its reports speak in the conditional.
    planning: bool,
}

/// Counts a call as in progress until dropped.
struct Busy {
    active: Arc<Mutex<HashMap<String, (usize, usize)>>>,
    service: String,
}

impl Drop for Busy {
    fn drop(&mut self) {
        if let Some(e) = self.active.lock().unwrap().get_mut(&self.service) {
            e.0 -= 1;
        }
    }
}

impl SimulatedBackend {
    pub fn new(latency: Duration, histories: BTreeMap<String, Vec<String>>) -> SimulatedBackend {
        SimulatedBackend {
            latency,
            histories,
            services: Mutex::new(HashMap::new()),
            injected: Mutex::new(HashMap::new()),
            calls: Mutex::new(Vec::new()),
            active: Arc::new(Mutex::new(HashMap::new())),
            planning: false,
        }
    }

    /// `done` when this backend acts, `would` when it is a dry run's copy.
    fn tense(&self, done: &str, would: &str) -> String {
        if self.planning { would } else { done }.to_string()
    }

    /// Makes the next `times` calls of `op` on `service` fail with `message`.
    pub fn inject_failure(&self, service: &str, op: &str, times: u32, message: &str) {
        self.inject(
            service,
            Injected {
                op: op.into(),
                remaining: times,
                message: message.into(),
                hang: false,
            },
        );
    }

    /// Makes the next `times` calls of `op` on `service` never answer.
    pub fn inject_hang(&self, service: &str, op: &str, times: u32) {
        self.inject(
            service,
            Injected {
                op: op.into(),
                remaining: times,
                message: String::new(),
                hang: true,
            },
        );
    }

    fn inject(&self, service: &str, i: Injected) {
        self.injected
            .lock()
            .unwrap()
            .entry(service.into())
            .or_default()
            .push(i);
    }

    /// Changing calls made so far, as (service, operation).
    pub fn calls(&self) -> Vec<(String, String)> {
        self.calls.lock().unwrap().clone()
    }

    pub fn count(&self, service: &str, op: &str) -> usize {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(s, o)| s == service && o == op)
            .count()
    }

    /// Starts a new canary of `revision` (the demo's "deploy").
    pub fn start_canary(&self, service: &str, revision: &str) {
        let mut map = self.services.lock().unwrap();
        let s = map
            .entry(service.to_string())
            .or_insert_with(|| self.fresh(service));
        s.revisions.push(revision.to_string());
        s.canary = Some((s.revisions.len() - 1, 0));
        s.paused = false;
    }

    fn fresh(&self, service: &str) -> SimService {
        SimService::from_history(
            self.histories
                .get(service)
                .map(Vec::as_slice)
                .unwrap_or(&[]),
        )
    }

    /// The most calls on `service` that were ever in progress at once.
    pub fn max_concurrency(&self, service: &str) -> usize {
        self.active
            .lock()
            .unwrap()
            .get(service)
            .map(|e| e.1)
            .unwrap_or(0)
    }

    async fn enter(&self, service: &str, op: &str) -> Result<Busy, BackendError> {
        let busy = {
            let mut a = self.active.lock().unwrap();
            let e = a.entry(service.to_string()).or_default();
            e.0 += 1;
            e.1 = e.1.max(e.0);
            Busy {
                active: self.active.clone(),
                service: service.to_string(),
            }
        };
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        let hit = {
            let mut inj = self.injected.lock().unwrap();
            let list = inj.entry(service.to_string()).or_default();
            let found = list
                .iter_mut()
                .find(|i| i.op == op && i.remaining > 0)
                .map(|i| {
                    i.remaining -= 1;
                    (i.hang, i.message.clone())
                });
            list.retain(|i| i.remaining > 0);
            found
        };
        match hit {
            Some((true, _)) => {
                std::future::pending::<()>().await;
                unreachable!()
            }
            Some((false, msg)) => Err(BackendError::failed(msg)),
            None => Ok(busy),
        }
    }

    fn with<R>(&self, service: &str, f: impl FnOnce(&mut SimService) -> R) -> R {
        let mut map = self.services.lock().unwrap();
        let s = map
            .entry(service.to_string())
            .or_insert_with(|| self.fresh(service));
        f(s)
    }

    fn record(&self, service: &str, op: &str) {
        self.calls.lock().unwrap().push((service.into(), op.into()));
    }
}

fn rollback_target(s: &SimService, to: Option<&str>) -> Result<usize, BackendError> {
    match to {
        Some(rev) => s.revisions.iter().position(|r| r == rev).ok_or_else(|| {
            BackendError::Refused(format!(
                "revision {rev} does not exist; known revisions: {}",
                s.revisions.join(", ")
            ))
        }),
        None if s.canary.is_some() => Ok(s.live),
        None if s.live > 0 => Ok(s.live - 1),
        None => Err(BackendError::Refused(format!(
            "{} is the only revision; there is nothing to roll back to",
            s.revisions[s.live]
        ))),
    }
}

#[async_trait]
impl RollbackBackend for SimulatedBackend {
    fn kind(&self) -> &'static str {
        "simulated"
    }

    async fn preflight(
        &self,
        t: &Target,
        op: &Operation,
        _ctx: &CallContext,
    ) -> Result<Preflight, BackendError> {
        let _busy = self.enter(&t.service, "preflight").await?;
        self.with(&t.service, |s| {
            let live = s.revisions[s.live].clone();
            match op {
                Operation::Rollback { to } => {
                    let idx = rollback_target(s, to.as_deref())?;
                    Ok(Preflight {
                        from_revision: Some(
                            s.canary
                                .map(|(c, _)| s.revisions[c].clone())
                                .unwrap_or(live),
                        ),
                        to_revision: Some(s.revisions[idx].clone()),
                        notes: vec![],
                    })
                }
                Operation::Promote { .. } => match s.canary {
                    Some((c, _)) => Ok(Preflight {
                        from_revision: Some(live),
                        to_revision: Some(s.revisions[c].clone()),
                        notes: vec![],
                    }),
                    None => Err(BackendError::Refused(format!(
                        "no canary in progress; {live} is live"
                    ))),
                },
                Operation::Pause | Operation::Resume => Ok(Preflight {
                    from_revision: Some(live),
                    ..Default::default()
                }),
            }
        })
    }

    async fn rollback(
        &self,
        t: &Target,
        to: Option<&str>,
        _ctx: &CallContext,
    ) -> Result<ActionReport, BackendError> {
        let _busy = self.enter(&t.service, "rollback").await?;
        self.record(&t.service, "rollback");
        self.with(&t.service, |s| {
            let idx = rollback_target(s, to)?;
            let from = s
                .canary
                .map(|(c, _)| s.revisions[c].clone())
                .unwrap_or_else(|| s.revisions[s.live].clone());
            let changed = s.canary.is_some() || idx != s.live;
            s.canary = None;
            s.live = idx;
            s.paused = false;
            let to = s.revisions[idx].clone();
            Ok(ActionReport {
                summary: if changed {
                    self.tense(
                        &format!("canary traffic set to 0%; {to} serves 100%"),
                        &format!("canary traffic would be set to 0%; {to} would serve 100%"),
                    )
                } else {
                    self.tense(
                        &format!("{to} was already live; nothing changed"),
                        &format!("{to} is already live; nothing would change"),
                    )
                },
                from_revision: Some(from),
                to_revision: Some(to.clone()),
                changed,
                requests: vec![format!("set live revision {to}, canary weight 0")],
            })
        })
    }

    async fn promote(
        &self,
        t: &Target,
        full: bool,
        _ctx: &CallContext,
    ) -> Result<ActionReport, BackendError> {
        let _busy = self.enter(&t.service, "promote").await?;
        self.record(&t.service, "promote");
        self.with(&t.service, |s| {
            let Some((c, step)) = s.canary else {
                return Err(BackendError::Refused("no canary in progress".into()));
            };
            let from = s.revisions[s.live].clone();
            let rev = s.revisions[c].clone();
            let next = if full { STEPS.len() - 1 } else { step + 1 };
            s.paused = false;
            if next >= STEPS.len() - 1 {
                s.live = c;
                s.canary = None;
                Ok(ActionReport {
                    summary: self.tense(
                        &format!("{rev} fully promoted and serves 100%"),
                        &format!("{rev} would be fully promoted and serve 100%"),
                    ),
                    from_revision: Some(from),
                    to_revision: Some(rev),
                    changed: true,
                    requests: vec!["set canary weight 100, promote to live".into()],
                })
            } else {
                s.canary = Some((c, next));
                Ok(ActionReport {
                    summary: format!(
                        "{rev} {} to step {} ({}% of traffic)",
                        self.tense("promoted", "would be promoted"),
                        next + 1,
                        STEPS[next]
                    ),
                    from_revision: Some(from),
                    to_revision: Some(rev),
                    changed: true,
                    requests: vec![format!("set canary weight {}", STEPS[next])],
                })
            }
        })
    }

    async fn pause(&self, t: &Target, _ctx: &CallContext) -> Result<ActionReport, BackendError> {
        let _busy = self.enter(&t.service, "pause").await?;
        self.record(&t.service, "pause");
        Ok(self.with(&t.service, |s| {
            let changed = !s.paused;
            s.paused = true;
            ActionReport {
                summary: if changed {
                    self.tense("rollout paused", "rollout would be paused")
                } else {
                    "rollout was already paused".into()
                },
                changed,
                requests: vec!["set paused=true".into()],
                ..Default::default()
            }
        }))
    }

    async fn resume(&self, t: &Target, _ctx: &CallContext) -> Result<ActionReport, BackendError> {
        let _busy = self.enter(&t.service, "resume").await?;
        self.record(&t.service, "resume");
        Ok(self.with(&t.service, |s| {
            let changed = s.paused;
            s.paused = false;
            ActionReport {
                summary: if changed {
                    self.tense("rollout resumed", "rollout would be resumed")
                } else {
                    "rollout was not paused".into()
                },
                changed,
                requests: vec!["set paused=false".into()],
                ..Default::default()
            }
        }))
    }

    /// The operation itself, run on a copy of the service's state: the
    /// same code decides what would be sent, and nothing is kept.
    async fn plan(
        &self,
        t: &Target,
        op: &Operation,
        ctx: &CallContext,
    ) -> Result<Plan, BackendError> {
        let _busy = self.enter(&t.service, "plan").await?;
        let copy = SimulatedBackend {
            planning: true,
            ..SimulatedBackend::new(Duration::ZERO, self.histories.clone())
        };
        let state = self.with(&t.service, |s| s.clone());
        copy.with(&t.service, |s| *s = state);
        let report = super::perform(&copy, t, op, ctx).await?;
        Ok(Plan {
            requests: report
                .requests
                .iter()
                .map(|r| PlannedRequest::new("simulated", r.clone()))
                .collect(),
            notes: vec![report.summary],
        })
    }

    async fn verify(
        &self,
        t: &Target,
        op: &Operation,
        report: &ActionReport,
        _ctx: &CallContext,
    ) -> Result<Verification, BackendError> {
        let _busy = self.enter(&t.service, "verify").await?;
        Ok(self.with(&t.service, |s| {
            let live = &s.revisions[s.live];
            let paused = if s.paused { ", rollout paused" } else { "" };
            let promised = report.to_revision.as_ref();
            match (op, s.canary) {
                (Operation::Rollback { .. }, _) => Verification {
                    ok: s.canary.is_none() && promised == Some(live),
                    detail: format!("{live} is live{paused}"),
                },
                // A promotion step: the canary carries more traffic, the
                // stable revision the rest; say it that way round.
                (Operation::Promote { .. }, Some((c, step))) => Verification {
                    ok: promised == Some(&s.revisions[c]),
                    detail: format!(
                        "canary {} takes {}% of traffic (step {} of {}); {live} serves the rest{paused}",
                        s.revisions[c],
                        STEPS[step],
                        step + 1,
                        STEPS.len()
                    ),
                },
                (Operation::Promote { .. }, None) => Verification {
                    ok: promised == Some(live),
                    detail: format!("{live} is live and serves 100%{paused}"),
                },
                (Operation::Pause, _) => Verification {
                    ok: s.paused,
                    detail: format!("{live} is live{paused}"),
                },
                (Operation::Resume, _) => Verification {
                    ok: !s.paused,
                    detail: format!("{live} is live{paused}"),
                },
            }
        }))
    }

    async fn status(&self, t: &Target) -> Result<BackendStatus, BackendError> {
        let _busy = self.enter(&t.service, "status").await?;
        Ok(self.with(&t.service, |s| BackendStatus {
            live_revision: Some(s.revisions[s.live].clone()),
            canary_revision: s.canary.map(|(c, _)| s.revisions[c].clone()),
            canary_weight: Some(s.canary.map(|(_, st)| STEPS[st]).unwrap_or(0)),
            step: s
                .canary
                .map(|(_, st)| format!("{}/{}", st + 1, STEPS.len())),
            paused: s.paused,
            history: s
                .revisions
                .iter()
                .enumerate()
                .map(|(i, r)| RevisionInfo {
                    revision: r.clone(),
                    detail: format!("{}:{r}", t.service),
                    change_cause: None,
                    live: i == s.live,
                })
                .collect(),
            notes: vec![],
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            service: "checkout".into(),
            environment: "prod".into(),
            settings: BTreeMap::new(),
        }
    }

    #[tokio::test]
    async fn rollback_drops_the_canary_and_missing_revisions_are_named() {
        let b = SimulatedBackend::new(
            Duration::ZERO,
            [(
                "checkout".to_string(),
                vec!["v40".into(), "v41".into(), "v42".into()],
            )]
            .into(),
        );
        let t = target();
        let c = CallContext::default();
        let err = b
            .preflight(
                &t,
                &Operation::Rollback {
                    to: Some("v7".into()),
                },
                &c,
            )
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "revision v7 does not exist; known revisions: v40, v41, v42"
        );
        let r = b.rollback(&t, None, &c).await.unwrap();
        assert_eq!(
            (r.from_revision.as_deref(), r.to_revision.as_deref()),
            (Some("v42"), Some("v41"))
        );
        assert!(
            b.verify(&t, &Operation::Rollback { to: None }, &r, &c)
                .await
                .unwrap()
                .ok
        );
        let again = b.rollback(&t, Some("v41"), &c).await.unwrap();
        assert!(!again.changed);
    }

    #[tokio::test]
    async fn promote_walks_the_steps() {
        let b = SimulatedBackend::new(Duration::ZERO, BTreeMap::new());
        let t = target();
        let c = CallContext::default();
        assert!(b
            .promote(&t, false, &c)
            .await
            .unwrap()
            .summary
            .contains("25%"));
        assert!(b
            .promote(&t, true, &c)
            .await
            .unwrap()
            .summary
            .contains("fully promoted"));
        assert!(matches!(
            b.promote(&t, false, &c).await,
            Err(BackendError::Refused(_))
        ));
        assert_eq!(b.count("checkout", "promote"), 3);
    }
}
