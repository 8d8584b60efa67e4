//! Rollouts with no concurrent baseline track (`rolling`, `blue-green`,
//! `flag`), judged after vs before (`judge::before_after`).
//!
//! When such a rollout starts being watched, the controller fetches the
//! service's whole series (every track together) tick by tick over the
//! reference window before the start, and with `seasonality = "weekly"`
//! the same window one week earlier; each later tick it fetches the
//! service now and, for the weekly correction, the same instant one week
//! earlier. The watch goes on for `watch_after_completion` once the backend
//! reports no change in flight.

use super::run::Controller;
use super::Rollout;
use crate::config_file::ServiceConfig;
use crate::engine::Engine;
use crate::judge::before_after::Seasonality;
use crate::judge::{fmt_duration, BeforeAfterJudge, TrackSample};
use crate::metrics::{MetricError, Watched};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;

/// How a rollout reaches users.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// A canary track beside a baseline track: judged side by side.
    #[default]
    Canary,
    /// Pods replaced in place: judged after vs before.
    Rolling,
    /// Traffic switched from one colour to the other: judged after vs before.
    BlueGreen,
    /// A feature flag turned on: judged after vs before.
    Flag,
}

impl Strategy {
    pub const ALL: [Strategy; 4] = [
        Strategy::Canary,
        Strategy::Rolling,
        Strategy::BlueGreen,
        Strategy::Flag,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Canary => "canary",
            Strategy::Rolling => "rolling",
            Strategy::BlueGreen => "blue-green",
            Strategy::Flag => "flag",
        }
    }

    pub fn parse(s: &str) -> Option<Strategy> {
        Strategy::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// No concurrent baseline: the judge compares with the past.
    pub fn before_after(self) -> bool {
        self != Strategy::Canary
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the metric source is asked for a service at `t`.
pub(super) fn watched(svc: &ServiceConfig, t: f64, whole_service: bool) -> Watched {
    Watched {
        service: svc.name().to_string(),
        namespace: svc
            .namespace
            .clone()
            .or_else(|| svc.target.get("namespace").cloned())
            .unwrap_or_default(),
        t,
        queries: svc.metrics.clone(),
        whole_service,
    }
}

const WEEK: chrono::TimeDelta = chrono::TimeDelta::days(7);

/// Tries at the reference window, the first when the watch starts.
const REFERENCE_TRIES: u32 = 8;
/// The longest wait between two tries.
const REFERENCE_BACKOFF_MAX: std::time::Duration = std::time::Duration::from_secs(300);

/// A before/after rollout whose reference window could not be fetched
/// yet (metrics down when it was announced): tried again with backoff,
/// [`REFERENCE_TRIES`] times in all, and judged as soon as it arrives.
#[derive(Clone, Debug)]
pub(super) struct PendingReference {
    tries: u32,
    next: DateTime<Utc>,
}

impl Controller {
    /// The judge of a before/after rollout, with its reference window (and
    /// the week-ago one) fetched from the metric source; when that fails,
    /// the judge says why and the reference is tried again later.
    pub(super) async fn before_after_judge(
        &self,
        r: &Rollout,
        svc: &ServiceConfig,
    ) -> (BeforeAfterJudge, Option<PendingReference>) {
        let mut judge = BeforeAfterJudge::new(&svc.judge, svc.before_after.clone(), Vec::new());
        let mut pending = Some(PendingReference {
            tries: 0,
            next: self.engine().clock.now(),
        });
        self.follow_reference(&mut pending, &mut judge, r, svc)
            .await;
        (judge, pending)
    }

    /// Tries the reference again when `pending` is due; returns the queries
    /// sent and whether the reference arrived now. Gives up after
    /// [`REFERENCE_TRIES`]: the verdict then stays no_data, which never
    /// acts.
    pub(super) async fn follow_reference(
        &self,
        pending: &mut Option<PendingReference>,
        judge: &mut BeforeAfterJudge,
        r: &Rollout,
        svc: &ServiceConfig,
    ) -> (usize, bool) {
        let now = self.engine().clock.now();
        let Some(p) = pending.as_mut().filter(|p| p.next <= now) else {
            return (0, false);
        };
        p.tries += 1;
        let (fetched, queries) = self.reference(r, svc).await;
        match fetched {
            Ok((reference, week_ago)) => {
                if p.tries > 1 {
                    tracing::info!(service = %r.service, rollout = %r.id, tries = p.tries, "the reference window of a before/after rollout arrived; judging it now");
                }
                judge.set_reference(reference, &week_ago);
                *pending = None;
                return (queries, true);
            }
            Err(why) => {
                let what = format!(
                    "no metrics for the service in the {} before the rollout started ({why})",
                    fmt_duration(svc.before_after.reference.secs())
                );
                if p.tries >= REFERENCE_TRIES {
                    tracing::warn!(service = %r.service, rollout = %r.id, error = %why, "gave up on the reference window of a before/after rollout; its verdict stays no_data");
                    judge.reference_missing(format!(
                        "reference not available, gave up after {} tries: {what}",
                        p.tries
                    ));
                    *pending = None;
                } else {
                    let wait = (self.interval() * 2u32.pow(p.tries - 1)).min(REFERENCE_BACKOFF_MAX);
                    p.next = now + chrono::Duration::from_std(wait).unwrap_or_default();
                    tracing::warn!(service = %r.service, rollout = %r.id, error = %why, try_again_in = ?wait, "no reference window yet for a before/after rollout");
                    judge.reference_missing(format!(
                        "reference not yet available: {what}; trying again in {}",
                        crate::domain::human_duration(wait)
                    ));
                }
            }
        }
        (queries, false)
    }

    /// The reference window before the rollout's start (and, for
    /// `seasonality = "weekly"`, one week earlier): one range query per
    /// signal and window. An error says why there is none.
    async fn reference(
        &self,
        r: &Rollout,
        svc: &ServiceConfig,
    ) -> (Result<(Vec<TrackSample>, Vec<TrackSample>), String>, usize) {
        let policy = &svc.before_after;
        // Reference windows one evidence step long, like the judged ones.
        let step = self.evidence_step();
        let ticks = (policy.reference.secs() / step.as_secs_f64().max(1.0)).round() as i32;
        let first =
            r.start - chrono::Duration::from_std(step).unwrap_or_default() * (ticks - 1).max(0);
        let w = watched(svc, 0.0, true);
        let mut queries = 0;
        let reference = match self.range(&w, (first, r.start)).await {
            Ok(got) => {
                queries += got.queries;
                match got.missing {
                    Some(why) if got.samples.is_empty() => return (Err(why), queries),
                    _ => got.samples,
                }
            }
            Err(e) => return (Err(e), queries),
        };
        let mut week_ago = Vec::new();
        if policy.seasonality == Seasonality::Weekly {
            // Without last week the reference is used uncorrected.
            match self.range(&w, (first - WEEK, r.start - WEEK)).await {
                Ok(got) => {
                    queries += got.queries;
                    week_ago = got.samples;
                }
                Err(e) => {
                    tracing::warn!(service = %r.service, rollout = %r.id, error = %e, "no week-ago window for a before/after rollout; its reference is not corrected");
                }
            }
        }
        (Ok((reference, week_ago)), queries)
    }

    /// One range fetch through the metric source's breaker.
    async fn range(
        &self,
        w: &Watched,
        span: (DateTime<Utc>, DateTime<Utc>),
    ) -> Result<crate::metrics::Ranged, String> {
        let (source, breaker) = self.metric_source();
        let limit = self.engine().config.metrics.timeout.0 * 8;
        breaker
            .call(
                limit,
                source.fetch_range(w, span, self.evidence_step(), self.evidence_step()),
                |_: &MetricError| true,
            )
            .await
            .map_err(super::run::unanswered)
    }

    /// For the before/after rollouts with `seasonality = "weekly"` among
    /// `watched`, the service one week before `at`: one grouped fetch, and
    /// the queries it sent.
    pub(super) async fn week_ago(
        &self,
        watched: &[Watched],
        at: DateTime<Utc>,
    ) -> (HashMap<String, TrackSample>, usize) {
        let config = &self.engine().config;
        let weekly: Vec<Watched> = watched
            .iter()
            .filter(|w| {
                w.whole_service
                    && config
                        .service(&w.service)
                        .is_some_and(|s| s.before_after.seasonality == Seasonality::Weekly)
            })
            .cloned()
            .collect();
        if weekly.is_empty() {
            return (HashMap::new(), 0);
        }
        match self.fetch(&weekly, at - WEEK).await {
            Ok(f) => (
                f.ticks
                    .into_iter()
                    .filter_map(|(s, t)| Some((s, t.canary?)))
                    .collect(),
                f.queries,
            ),
            Err(_) => (HashMap::new(), 0),
        }
    }
}

/// When a before/after watch ends: `watch_after_completion` after the
/// backend first reported no change in flight.
#[derive(Clone, Debug, Default)]
pub(super) struct Completion {
    /// Seconds since the start when the rollout was first seen complete.
    complete_at: Option<f64>,
}

impl Completion {
    /// Called after each judged tick at `t`; the watch's final state when
    /// it should end now.
    pub async fn follow(
        &mut self,
        engine: &Engine,
        svc: &ServiceConfig,
        t: f64,
        verdict: &str,
    ) -> Option<String> {
        if self.complete_at.is_none() {
            // A backend that cannot say (an error) leaves the watch going.
            let status = engine.backend_status(svc.name()).await.ok()?;
            if status.canary_revision.is_some() {
                return None;
            }
            self.complete_at = Some(t);
        }
        let done = self.complete_at? + svc.before_after.watch_after_completion.secs();
        (t + 1e-9 >= done).then(|| {
            format!(
                "ended: watched {} after the rollout completed, last verdict {verdict}",
                fmt_duration(svc.before_after.watch_after_completion.secs())
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config_file::Config;
    use std::path::Path;

    const BASE: &str = "[backends.sim]\ntype = \"simulated\"\n\n[[services]]\nname = \"checkout\"\nbackend = \"sim\"\n";

    fn parse(extra: &str) -> Result<Config, String> {
        Config::parse(Path::new("rollbot.toml"), &format!("{BASE}{extra}"))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_service_names_its_strategy_and_before_after_settings() {
        let c = parse("strategy = \"blue-green\"\n[services.before_after]\nseasonality = \"weekly\"\nreference = \"1h\"\n").unwrap();
        let s = c.service("checkout").unwrap();
        assert_eq!(s.strategy, Strategy::BlueGreen);
        assert!(s.strategy.before_after());
        assert_eq!(s.before_after.seasonality, Seasonality::Weekly);
        assert_eq!(s.before_after.reference.secs(), 3600.0);
        let c = parse("").unwrap();
        assert_eq!(c.service("checkout").unwrap().strategy, Strategy::Canary);
        assert_eq!(Strategy::parse("blue-green"), Some(Strategy::BlueGreen));
        assert_eq!(Strategy::parse("bluegreen"), None);
    }

    #[test]
    fn bad_before_after_settings_name_the_line_and_the_fix() {
        let e = parse("strategy = \"rollng\"\n").unwrap_err();
        assert!(
            e.contains("rollbot.toml:7") && e.contains("`rolling`"),
            "{e}"
        );
        let e = parse("[services.before_after]\nseasonaility = \"weekly\"\n").unwrap_err();
        assert!(e.contains("did you mean `seasonality`"), "{e}");
        let e = parse("[services.before_after]\ndrift = 0.5\n").unwrap_err();
        assert!(
            e.contains("service `checkout`: before_after: drift") && e.contains("drift = 1.2"),
            "{e}"
        );
    }
}
