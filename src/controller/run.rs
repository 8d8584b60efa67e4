//! The controller loop: every `interval`, one fetch for every active rollout,
//! then each rollout's judge and policy.
//!
//! Ticks are aligned to a grid (multiples of the interval since the epoch),
//! so every rollout is judged at the same instants and one grouped query per
//! metric serves them all. A rollout that started in the past (announced
//! late, or rollbot restarted) is caught up tick by tick from its start, so
//! the judge's evidence covers the whole rollout.

use super::rollouts::{self, Rollout};
use super::{RolloutWatch, WatchState};
use crate::breaker::{Breaker, Rejected};
use crate::chat::{Message, Severity};
use crate::engine::Engine;
use crate::judge::Tick;
use crate::metrics::{Fetched, MetricError, MetricSource, Watched};
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;

/// The most history caught up at once.
const MAX_CATCH_UP: Duration = Duration::from_secs(24 * 3600);

/// Metrics missing for fewer intervals than this are not warned about: a
/// new canary's first tick covers a window before its first scrape, and a
/// single late scrape is not an outage.
const MISSING_GRACE: u32 = 2;

struct Active {
    rollout: Rollout,
    watch: RolloutWatch,
    /// The next grid instant to judge.
    next: DateTime<Utc>,
    /// A "no metrics" warning was posted and not yet followed by "back".
    warned: bool,
    /// The first grid instant of the current run of ticks without metrics.
    missing_since: Option<DateTime<Utc>>,
    /// Whether a rollback would still find its target.
    capability: super::capability::CapabilityWatch,
    /// A before/after rollout's reference window, still to be fetched.
    reference: Option<super::before_after::PendingReference>,
    /// The last instant a summary schedule was checked up to.
    summary_checked: Option<DateTime<Utc>>,
}

impl Active {
    /// The rollout as stored and listed: the reasons live in the watch's
    /// last evaluation and are copied here, not kept twice.
    fn record(&self) -> Rollout {
        Rollout {
            reasons: self
                .watch
                .last
                .as_ref()
                .map(|e| e.reasons.clone())
                .unwrap_or_default(),
            ..self.rollout.clone()
        }
    }
}

/// Whether metrics flow, for `/readyz` and `/status`.
#[derive(Clone, Debug, Default)]
pub struct Health {
    pub down_since: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub queries_last_tick: usize,
    pub ticks: u64,
}

pub struct Controller {
    engine: Arc<Engine>,
    pub(super) source: Arc<dyn MetricSource>,
    breaker: Breaker,
    interval: Duration,
    /// The scrape interval, which sets the judge's evidence step.
    pub(super) resolution: std::sync::Mutex<super::resolution::Resolution>,
    active: tokio::sync::Mutex<Vec<Active>>,
    health: std::sync::Mutex<Health>,
    registry: Arc<crate::registry::RegistryClient>,
    /// Whether this replica led when the loop last looked (None: not yet),
    /// so a takeover reloads what the previous leader left in the store.
    led: std::sync::Mutex<Option<bool>>,
}

fn grid_floor(t: DateTime<Utc>, interval: Duration) -> DateTime<Utc> {
    let i = interval.as_millis().max(1) as i64;
    let ms = t.timestamp_millis().div_euclid(i) * i;
    DateTime::from_timestamp_millis(ms).unwrap_or(t)
}

fn grid_ceil(t: DateTime<Utc>, interval: Duration) -> DateTime<Utc> {
    let f = grid_floor(t, interval);
    if f == t {
        f
    } else {
        f + chrono::Duration::from_std(interval).unwrap_or_default()
    }
}

impl Controller {
    pub fn new(engine: Arc<Engine>, source: Arc<dyn MetricSource>) -> Controller {
        let c = &engine.config;
        let breaker = Breaker::new(
            format!("metrics:{}", source.kind()),
            c.engine.breaker_failures,
            c.engine.breaker_cooldown.0,
            c.engine.metrics_pool,
            engine.telemetry.clone(),
        );
        Controller {
            interval: c.metrics.interval.0,
            resolution: std::sync::Mutex::new(super::resolution::Resolution::from_config(
                c.metrics.scrape_interval.as_ref().map(|d| d.0),
            )),
            source,
            breaker,
            registry: Arc::new(crate::registry::RegistryClient::new(&c.registry)),
            engine,
            active: tokio::sync::Mutex::new(Vec::new()),
            health: std::sync::Mutex::new(Health::default()),
            led: std::sync::Mutex::new(None),
        }
    }

    pub fn health(&self) -> Health {
        self.health.lock().unwrap().clone()
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    pub(super) fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Loads stored rollouts and the services marked `watch = true`.
    pub async fn load(&self) -> anyhow::Result<()> {
        let stored = rollouts::load_all(&self.engine.store).await?;
        for mut r in stored.into_iter().filter(Rollout::active) {
            // A service taken out of the config must not stop rollbot from
            // starting: its rollout ends, and says why.
            if self.engine.config.service(&r.service).is_none() {
                tracing::warn!(service = %r.service, rollout = %r.id, "a stored rollout names a service that is no longer in the config; it is no longer watched");
                r.state = format!("ended: {} is no longer in the config", r.service);
                rollouts::save(&self.engine.store, &r).await?;
                continue;
            }
            self.watch(r).await?;
        }
        for (r, saved) in super::monitoring::resumable(&self.engine).await? {
            self.resume(r, saved).await?;
        }
        let now = self.engine.clock.now();
        for svc in self.engine.config.services.iter().filter(|s| s.watch) {
            if self
                .active
                .lock()
                .await
                .iter()
                .any(|a| a.rollout.service == svc.name())
            {
                continue;
            }
            if let Ok(st) = self.engine.backend_status(svc.name()).await {
                if let Some(canary) = st.canary_revision {
                    let r = Rollout {
                        strategy: svc.strategy.to_string(),
                        ..Rollout::watching(
                            crate::engine::new_id(),
                            svc.name(),
                            (st.live_revision.unwrap_or_default(), canary),
                            now,
                            "config",
                        )
                    };
                    self.announce(r).await?;
                }
            }
        }
        Ok(())
    }

    /// Starts watching a rollout (replacing an earlier one of the same service).
    pub async fn announce(&self, r: Rollout) -> anyhow::Result<Rollout> {
        let store = &self.engine.store;
        let mut active = self.active.lock().await;
        for a in active.iter_mut().filter(|a| a.rollout.service == r.service) {
            a.rollout.state = format!("replaced by rollout {}", r.id);
            rollouts::save(store, &a.rollout).await?;
            if matches!(a.watch.state, WatchState::Monitoring(_)) {
                super::monitoring::forget(&self.engine, &a.rollout.id).await;
            }
            super::capability::forget(&self.engine, &r.service).await;
        }
        active.retain(|a| a.rollout.service != r.service);
        drop(active);
        rollouts::save(store, &r).await?;
        self.watch(r.clone()).await?;
        Ok(r)
    }

    async fn watch(&self, r: Rollout) -> anyhow::Result<()> {
        let svc = self
            .engine
            .resolve(Some(&r.service))
            .map_err(anyhow::Error::msg)?;
        let mut watch = RolloutWatch::new(svc, &r.from_revision, &r.to_revision)
            .with_id(&r.id)
            .with_start(r.start);
        let mut reference = None;
        if super::Strategy::parse(&r.strategy).is_some_and(super::Strategy::before_after) {
            let (judge, pending) = self.before_after_judge(&r, svc).await;
            watch = watch.judged_before_after(judge);
            reference = pending;
        }
        let next = self.first_instant(&r);
        // The rollback target is checked at once, not at the first tick.
        let mut capability = super::capability::CapabilityWatch::default();
        let now = self.engine.clock.now();
        capability.start_if_due(&self.engine, &self.registry, &r.service, now);
        self.active.lock().await.push(Active {
            rollout: r,
            watch,
            next,
            warned: false,
            missing_since: None,
            capability,
            reference,
            summary_checked: None,
        });
        Ok(())
    }

    /// The first grid instant a rollout is judged at: its start, or as much
    /// history as is caught up.
    fn first_instant(&self, r: &Rollout) -> DateTime<Utc> {
        let oldest =
            self.engine.clock.now() - chrono::Duration::from_std(MAX_CATCH_UP).unwrap_or_default();
        grid_ceil(r.start.max(oldest), self.evidence_step())
    }

    /// Watches again a rollout whose incident was stored in Monitoring,
    /// from the rollback on: the ticks since then are caught up from the
    /// metric source, so the clock of `resolve_after` does not restart, and
    /// a watch that would have ended while rollbot was down is judged at
    /// the next step.
    async fn resume(&self, r: Rollout, saved: super::monitoring::Saved) -> anyhow::Result<()> {
        let svc = self
            .engine
            .resolve(Some(&r.service))
            .map_err(anyhow::Error::msg)?;
        let what = super::monitoring::what(&r, &saved);
        let since = saved.rolled_back_at;
        let incident = super::incident::Incident::restore(&self.engine, svc, saved);
        let watch = RolloutWatch::new(svc, &r.from_revision, &r.to_revision)
            .with_id(&r.id)
            .with_start(r.start)
            .resumed(incident, what);
        let next = grid_ceil(
            since.max(self.engine.clock.now() - chrono::Duration::from_std(MAX_CATCH_UP)?),
            self.evidence_step(),
        );
        tracing::info!(service = %r.service, rollout = %r.id, rolled_back_at = %since, "resuming the incident's monitoring");
        let mut active = self.active.lock().await;
        // A rollout loaded as still watched (its stored state lagged) is
        // the same rollout: the monitoring replaces it.
        active.retain(|a| a.rollout.id != r.id);
        active.push(Active {
            rollout: r,
            watch,
            next,
            warned: false,
            missing_since: None,
            capability: Default::default(),
            // Rolled back: the incident watches the service, not the change.
            reference: None,
            summary_checked: None,
        });
        Ok(())
    }

    /// After a takeover the store, not this replica's memory, says what is
    /// watched: the previous leader may have announced, rolled back or
    /// resolved rollouts since this one loaded them.
    async fn reload(&self) {
        self.active.lock().await.clear();
        // The old leader's prompts escalate here from now on.
        self.engine.prompts.reindex();
        match self.load().await {
            Ok(()) => tracing::info!(
                "took over the Lease: rollouts and monitored incidents reloaded from the store"
            ),
            Err(e) => {
                tracing::error!(error = %e, "took over the Lease but could not reload the watched rollouts")
            }
        }
    }

    /// True when this replica leads now and did not at the last look (a
    /// replica that led from its start loaded everything then).
    fn took_over(&self, leads: bool) -> bool {
        let before = self.led.lock().unwrap().replace(leads);
        leads && before == Some(false)
    }

    /// Every rollout, newest first. Active ones show their latest score
    /// and reasons, which are stored only when the verdict or state changes.
    pub async fn list(&self) -> anyhow::Result<Vec<Rollout>> {
        let mut all = rollouts::load_all(&self.engine.store).await?;
        let active = self.active.lock().await;
        let live: std::collections::HashMap<&str, &Active> =
            active.iter().map(|a| (a.rollout.id.as_str(), a)).collect();
        for r in &mut all {
            if let Some(a) = live.get(r.id.as_str()) {
                *r = a.record();
            }
        }
        all.reverse();
        Ok(all)
    }

    /// Judges every grid instant up to `now` that some rollout still needs.
    /// The grid is the evidence step, not the interval: a tick judges each
    /// step since the last tick in turn (`resolution`), so verdicts do not
    /// depend on the tick length.
    pub async fn step(&self, now: DateTime<Utc>) {
        self.escalate(now).await;
        let step_len = self.evidence_step();
        let step = chrono::Duration::from_std(step_len).unwrap_or_default();
        let last = grid_floor(now, step_len);
        // Every query of this tick, over all its evidence steps.
        let mut tick_queries = 0;
        loop {
            let mut active = self.active.lock().await;
            let Some(point) = active
                .iter()
                .filter(|a| a.watch.is_active())
                .map(|a| a.next)
                .min()
            else {
                return;
            };
            if point > last {
                return;
            }
            let due: Vec<usize> = active
                .iter()
                .enumerate()
                .filter(|(_, a)| a.watch.is_active() && a.next <= point)
                .map(|(i, _)| i)
                .collect();
            let watched: Vec<Watched> = due
                .iter()
                .filter_map(|&i| {
                    let a = &active[i];
                    let svc = self.engine.config.service(&a.rollout.service)?;
                    Some(super::before_after::watched(
                        svc,
                        (point - a.rollout.start).num_milliseconds() as f64 / 1000.0,
                        a.watch.before_after(),
                    ))
                })
                .collect();
            let fetched = self.fetch(&watched, point).await;
            self.note_health(&fetched, point);
            // Every query this instant: the signals', the checks' and SLO's,
            // last week's and any reference window tried again.
            let mut queries = fetched.as_ref().map_or(0, |f| f.queries);
            // Custom checks are instant queries over the interval: once
            // per interval (the step whose window holds an interval's grid
            // instant), not once per step.
            let (mut checked, check_queries) = if grid_floor(point, self.interval) > point - step {
                super::checks::fetch(
                    &self.engine.config,
                    self.source.as_ref(),
                    &self.breaker,
                    &watched,
                    point,
                    self.interval,
                )
                .await
            } else {
                Default::default()
            };
            let (week_ago, week_queries) = self.week_ago(&watched, point).await;
            queries += check_queries + week_queries;
            for (&i, w) in due.iter().zip(&watched) {
                let a = &mut active[i];
                if let (Some(judge), Some(svc)) = (
                    a.watch.before_after_judge(),
                    self.engine.config.service(&a.rollout.service),
                ) {
                    let (sent, arrived) = self
                        .follow_reference(&mut a.reference, judge, &a.rollout, svc)
                        .await;
                    queries += sent;
                    // The ticks since the start were no_data for want of a
                    // reference: judge them again from the metric source.
                    let first = self.first_instant(&a.rollout);
                    if arrived && a.next > first && a.watch.state == WatchState::Watching {
                        a.watch.restart_judging(svc);
                        a.next = first;
                        continue;
                    }
                }
                let tick = match &fetched {
                    Ok(f) => f.ticks.get(&w.service).cloned().unwrap_or(Tick {
                        t: w.t,
                        baseline: None,
                        canary: None,
                    }),
                    Err(_) => Tick {
                        t: w.t,
                        baseline: None,
                        canary: None,
                    },
                };
                let why_missing = match &fetched {
                    Ok(f) => f.missing.get(&w.service).cloned(),
                    Err(e) => Some(e.to_string()),
                };
                // After a rollback the canary's series are expected to go.
                let expected =
                    matches!(a.watch.state, WatchState::Monitoring(_)) && tick.baseline.is_some();
                self.data_notice(a, why_missing.filter(|_| !expected), point)
                    .await;
                let before = (a.rollout.state.clone(), a.rollout.verdict.clone());
                if let Some(inputs) = checked.remove(&w.service) {
                    a.watch.feed_checks(inputs);
                }
                a.watch.set_week_ago(week_ago.get(&w.service).cloned());
                if let Some(eval) = a.watch.tick(&self.engine, &tick).await {
                    a.rollout.verdict = Some(eval.verdict.to_string());
                    a.rollout.score = eval.score.is_finite().then_some(eval.score);
                }
                if point == last {
                    // Since the previous tick's last step: ticks and steps
                    // need not share a grid, so neither length would tile.
                    let since = a.summary_checked.unwrap_or(point - step);
                    a.summary_checked = Some(point);
                    self.scheduled_summary(a, since, point).await;
                    self.capability(a).await;
                }
                a.rollout.state = a.watch.state_text();
                // Stored when something a reader would notice changed.
                // The reasons live in the watch's last evaluation; they are
                // copied only into the stored record, not kept twice.
                if before != (a.rollout.state.clone(), a.rollout.verdict.clone()) {
                    let _ = rollouts::save(&self.engine.store, &a.record()).await;
                }
                a.next = point + step;
            }
            tick_queries += queries;
            self.health.lock().unwrap().queries_last_tick = tick_queries;
            for a in active.iter().filter(|a| !a.watch.is_active()) {
                super::capability::forget(&self.engine, &a.rollout.service).await;
            }
            active.retain(|a| a.watch.is_active());
        }
    }

    /// Follows the rollback capability check of a rollout still watched:
    /// its finding goes to the thread, the next check starts when due.
    async fn capability(&self, a: &mut Active) {
        if !a.watch.is_active() {
            return;
        }
        let now = self.engine.clock.now();
        a.capability.follow(&self.engine, &a.watch, now).await;
        a.capability
            .start_if_due(&self.engine, &self.registry, &a.rollout.service, now);
    }

    /// Mentions the next group on prompts nobody answered (see
    /// `Engine::escalate_prompts`); never acts on them.
    async fn escalate(&self, now: DateTime<Utc>) {
        if let Err(e) = self.engine.escalate_prompts(now).await {
            tracing::error!(error = %e, "could not escalate unanswered prompts");
        }
    }

    /// The metric source and the breaker its calls go through.
    pub(super) fn metric_source(&self) -> (&dyn MetricSource, &Breaker) {
        (self.source.as_ref(), &self.breaker)
    }

    pub(super) async fn fetch(
        &self,
        watched: &[Watched],
        at: DateTime<Utc>,
    ) -> Result<Fetched, String> {
        let limit = self.engine.config.metrics.timeout.0 * 8;
        self.breaker
            .call(
                limit,
                self.source.fetch(watched, at, self.evidence_step()),
                |_: &MetricError| true,
            )
            .await
            .map_err(unanswered)
    }

    /// Whether metrics flow, from an instant's signal fetch.
    fn note_health(&self, fetched: &Result<Fetched, String>, at: DateTime<Utc>) {
        let mut h = self.health.lock().unwrap();
        h.ticks += 1;
        match fetched {
            Ok(_) => {
                h.down_since = None;
                h.last_error = None;
            }
            Err(text) => {
                h.down_since.get_or_insert(at);
                h.last_error = Some(text.clone());
            }
        }
    }

    /// Re-posts the rollout's summary as a new message when its service's
    /// `summary_schedule` fired in `(from, to]`. Only for the latest instant,
    /// so catching up on history does not post one summary per past firing.
    async fn scheduled_summary(&self, a: &mut Active, from: DateTime<Utc>, to: DateTime<Utc>) {
        let Some(svc) = self.engine.config.service(&a.rollout.service) else {
            return;
        };
        let Some(schedule) = &svc.summary_schedule else {
            return;
        };
        if schedule
            .schedule
            .after(&from)
            .next()
            .is_some_and(|fire| fire <= to)
        {
            a.watch.repost_summary(&self.engine, svc).await;
        }
    }

    /// One warning when a rollout's metrics stay missing for
    /// [`MISSING_GRACE`] intervals, one notice when they return; never one
    /// per tick, and nothing for a gap shorter than the grace (a new
    /// canary's first tick, whose window mostly precedes its first scrape).
    async fn data_notice(&self, a: &mut Active, missing: Option<String>, at: DateTime<Utc>) {
        let since = match &missing {
            Some(_) => *a.missing_since.get_or_insert(at),
            None => {
                a.missing_since = None;
                at
            }
        };
        let grace = self.interval * MISSING_GRACE;
        let lasting = missing.filter(|_| (at - since).to_std().unwrap_or_default() >= grace);
        let Some(svc) = self.engine.config.service(&a.rollout.service) else {
            return;
        };
        let Some(channel) = svc.deploy_channel.as_ref().map(|c| c.as_ref().clone()) else {
            a.warned = lasting.is_some();
            return;
        };
        match (lasting, a.warned) {
            (Some(why), false) => {
                a.warned = true;
                tracing::warn!(service = %a.rollout.service, error = %why, "no metrics for a watched rollout");
                let gap = crate::domain::human_duration(
                    (at - since).to_std().unwrap_or_default() + self.interval,
                );
                let m = Message::new(Severity::Warning, format!("No metrics for {} {}", a.rollout.service, a.rollout.to_revision))
                    .text(format!("{why}\nNo data for {gap}. rollbot never acts on missing data: the verdict is no_data until metrics return. Watch the canary by hand meanwhile."))
                    .context(format!("rollout {}", a.rollout.id));
                self.engine.notifier.post(&channel, &m).await;
            }
            (None, true) => {
                a.warned = false;
                let m = Message::new(
                    Severity::Success,
                    format!("Metrics for {} are back", a.rollout.service),
                )
                .text("rollbot is judging the canary again.")
                .context(format!("rollout {}", a.rollout.id));
                self.engine.notifier.post(&channel, &m).await;
            }
            _ => {}
        }
    }

    /// Runs until the process stops.
    pub async fn run(self: Arc<Self>) {
        self.learn_scrape_interval().await;
        loop {
            let now = self.engine.clock.now();
            // A standby replica judges nothing: the leader does, and acting
            // on its verdicts from two places would act twice.
            let leads = self.engine.leadership.is_leader();
            if self.took_over(leads) {
                self.reload().await;
            }
            if leads {
                self.step(now).await;
            }
            let next = grid_floor(now, self.interval)
                + chrono::Duration::from_std(self.interval).unwrap_or_default();
            let wait = (next - self.engine.clock.now())
                .to_std()
                .unwrap_or(Duration::from_millis(50));
            // Evaluate just after the instant so the scrape for it has landed.
            tokio::time::sleep(wait + Duration::from_millis(250)).await;
        }
    }
}

/// Why the metric source gave no answer, in words for /readyz and the
/// summary.
pub(super) fn unanswered(e: Rejected<MetricError>) -> String {
    match e {
        Rejected::Inner(e) => e.to_string(),
        Rejected::Timeout(d) => format!(
            "the metric source did not answer within {}",
            crate::domain::human_duration(d)
        ),
        Rejected::Open {
            name, last_error, ..
        } => format!(
            "{name} is failing (last error: {})",
            last_error.unwrap_or_default()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::config_file::Config;
    use std::path::Path;

    #[tokio::test]
    async fn the_rollout_list_shows_the_latest_reasons_between_verdict_changes() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[store]\npath = \"{}\"\n[metrics]\nsource = \"simulated\"\ninterval = \"10s\"\nscenarios = {{ checkout = \"good: identical, 1% errors\" }}\n[backends.sim]\ntype = \"simulated\"\n[[services]]\nname = \"checkout\"\nbackend = \"sim\"\n",
            dir.path().join("store").display()
        );
        let config = Config::parse(Path::new("t.toml"), &text).unwrap();
        let begin = Utc::now() - chrono::Duration::hours(1);
        let clock = ManualClock::new(begin);
        let rt = crate::runtime::start(
            config,
            &dir.path().join("store"),
            vec![],
            Arc::new(clock.clone()),
        )
        .await
        .unwrap();
        let c = rt.controller.clone().unwrap();
        c.announce(Rollout::watching(
            "r1".into(),
            "checkout",
            ("v1".into(), "v2".into()),
            begin,
            "test",
        ))
        .await
        .unwrap();
        let mut at = begin;
        let mut step = |n: i64| {
            at += chrono::Duration::seconds(10 * n);
            clock.set(at);
            at
        };
        // Past the judge's warm-up: the verdict settles.
        let now = step(60);
        c.step(now).await;
        let first = c.list().await.unwrap().remove(0);
        let verdict = first.verdict.clone();
        assert!(verdict.is_some(), "{first:?}");
        let now = step(3);
        c.step(now).await;
        let later = c.list().await.unwrap().remove(0);
        assert_eq!(later.verdict, verdict, "the same verdict: {later:?}");
        assert_ne!(
            later.reasons, first.reasons,
            "the listing follows each evaluation"
        );
        let stored = rollouts::load_all(&rt.engine.store)
            .await
            .unwrap()
            .remove(0);
        assert_ne!(
            stored.reasons, later.reasons,
            "the store is written only when the verdict or state changes"
        );
    }
}
