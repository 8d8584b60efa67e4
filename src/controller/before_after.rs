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
use crate::metrics::Watched;
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

impl Controller {
    /// The judge of a before/after rollout, with its reference window (and
    /// the week-ago one) fetched from the metric source.
    pub(super) async fn before_after_judge(
        &self,
        r: &Rollout,
        svc: &ServiceConfig,
    ) -> BeforeAfterJudge {
        let policy = svc.before_after.clone();
        // Reference windows one evidence step long, like the judged ones.
        let interval = chrono::Duration::from_std(self.evidence_step()).unwrap_or_default();
        let ticks = (policy.reference.secs() / self.evidence_step().as_secs_f64().max(1.0)).round();
        let start = r.start;
        let mut reference = Vec::new();
        let mut week_ago = Vec::new();
        let weekly = policy.seasonality == Seasonality::Weekly;
        for k in (0..ticks as i32).rev() {
            let at = start - interval * k;
            let w = watched(svc, (at - start).num_milliseconds() as f64 / 1000.0, true);
            reference.extend(self.whole(&w, at).await);
            if weekly {
                week_ago.extend(self.whole(&w, at - WEEK).await);
            }
        }
        if reference.is_empty() {
            tracing::warn!(service = %r.service, rollout = %r.id, "no metrics for the reference window before a before/after rollout; its verdict is no_data");
        }
        BeforeAfterJudge::new(&svc.judge, policy, reference).with_week_ago_reference(&week_ago)
    }

    /// For the before/after rollouts with `seasonality = "weekly"` among
    /// `watched`, the service one week before `at`: one grouped fetch.
    pub(super) async fn week_ago(
        &self,
        watched: &[Watched],
        at: DateTime<Utc>,
    ) -> HashMap<String, TrackSample> {
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
            return HashMap::new();
        }
        match self.fetch(&weekly, at - WEEK).await {
            Ok(f) => f
                .ticks
                .into_iter()
                .filter_map(|(s, t)| Some((s, t.canary?)))
                .collect(),
            Err(_) => HashMap::new(),
        }
    }

    /// The service's whole series for the tick ending at `at`, if any.
    pub(super) async fn whole(&self, w: &Watched, at: DateTime<Utc>) -> Option<TrackSample> {
        let f = self.fetch(std::slice::from_ref(w), at).await.ok()?;
        f.ticks.get(&w.service)?.canary.clone()
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
