//! Before/after judging, for rollouts with no concurrent baseline track
//! (`rolling`, `blue-green`, `flag`): the service after the change is
//! compared with the same series in a reference window before the rollout
//! started.
//!
//! There is no second statistics engine here. `BeforeAfterJudge` feeds
//! rollbot's `SequentialJudge` ticks whose baseline is a tick of the
//! reference window (taken in turn, so each after-tick meets a different
//! before-tick and the judge learns the reference's own per-window noise
//! from them) and whose canary is the service now. Warm-up, the three
//! bands, over-dispersion and anytime validity are therefore the canary
//! judge's, with two changes:
//!
//! - tolerances are widened by `drift` (default 1.2): before and after are
//!   not measured at the same time, so the service may move a little on its
//!   own (traffic mix, time of day) and that must not look like harm;
//! - with `seasonality = "weekly"`, the reference is first corrected by how
//!   much the same series moved between the same two moments one week
//!   earlier (a daily pattern repeats; a bad change did not happen then).
//!
//! The known weakness: an outside change during the rollout (a shared
//! dependency down) looks exactly like a bad change. So a failing verdict
//! rolls back by itself only when the evidence is overwhelming (the
//! anytime-valid interval lies wholly above `overwhelming_ratio`) *and* the
//! degradation began within `onset_grace` of the end of warm-up, when the
//! change itself would show; otherwise the verdict stays failing and the
//! recommendation is to ask a person (`on_failing`).

use serde::{Deserialize, Serialize};

use super::policy::{DurationSecs, JudgePolicy};
use super::sequential::SequentialJudge;
use super::stats::count_above;
use super::{
    fmt_duration, fmt_ratio, EffectKind, Evaluation, Judge, MetricClass, Recommendation, Tick,
    TrackSample, Verdict,
};

/// How a before/after comparison corrects for a daily pattern.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Seasonality {
    /// The reference window is compared as it is.
    #[default]
    None,
    /// The reference is corrected by how the same series moved between the
    /// same two moments one week earlier.
    Weekly,
}

/// What a failing before/after verdict leads to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BeforeAfterOnFailing {
    /// Always ask (Roll back / Continue).
    PageAndSuggest,
    /// Roll back by itself only when the evidence is overwhelming and began
    /// with the change; ask otherwise.
    #[default]
    AutoRollbackIfOverwhelming,
    /// Follow the service's `on_failing`, as for a canary.
    AutoRollback,
}

/// A service's before/after settings (`[services.before_after]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BeforeAfterPolicy {
    /// Length of the reference window, which ends when the rollout starts.
    /// Default "30m".
    pub reference: DurationSecs,
    /// `none` or `weekly`. Default `none`.
    pub seasonality: Seasonality,
    /// How far the service may drift on its own between the reference
    /// window and now, as a factor on the judge's tolerances. Default 1.2.
    pub drift: f64,
    /// `page_and_suggest`, `auto_rollback_if_overwhelming` (default) or
    /// `auto_rollback`.
    pub on_failing: BeforeAfterOnFailing,
    /// Overwhelming evidence: a failing signal whose interval lies wholly
    /// above this ratio of the before level. Default 2.0.
    pub overwhelming_ratio: f64,
    /// A degradation first seen later than this after warm-up is not taken
    /// to be the change's (an outside fault is likelier). Default "5m".
    pub onset_grace: DurationSecs,
    /// How long the watch goes on once the rollout is complete. Default
    /// "30m".
    pub watch_after_completion: DurationSecs,
}

impl Default for BeforeAfterPolicy {
    fn default() -> Self {
        BeforeAfterPolicy {
            reference: DurationSecs(1800.0),
            seasonality: Seasonality::None,
            drift: 1.2,
            on_failing: BeforeAfterOnFailing::default(),
            overwhelming_ratio: 2.0,
            onset_grace: DurationSecs(300.0),
            watch_after_completion: DurationSecs(1800.0),
        }
    }
}

impl BeforeAfterPolicy {
    /// Checks the settings; the message says how to fix them.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.reference.secs() >= 60.0 && self.reference.secs() <= 86_400.0) {
            return Err(format!(
                "reference must be between 1m and 24h (it is {}); write e.g. reference = \"30m\"",
                self.reference
            ));
        }
        if !(self.drift >= 1.0 && self.drift <= 5.0) {
            return Err(format!(
                "drift is a factor on the tolerances from 1 to 5 (it is {}); write e.g. drift = 1.2",
                self.drift
            ));
        }
        if !(self.overwhelming_ratio > 1.0 && self.overwhelming_ratio.is_finite()) {
            return Err(format!(
                "overwhelming_ratio must be above 1 (it is {}); write e.g. overwhelming_ratio = 2.0 for \"at least twice as bad as before\"",
                self.overwhelming_ratio
            ));
        }
        for (name, d) in [
            ("onset_grace", self.onset_grace),
            ("watch_after_completion", self.watch_after_completion),
        ] {
            if !(d.secs() >= 0.0 && d.secs().is_finite()) {
                return Err(format!(
                    "{name} must be a duration of zero or more; write e.g. {name} = \"5m\""
                ));
            }
        }
        Ok(())
    }

    /// The canary judge's policy with tolerances widened by `drift`.
    pub fn judge_policy(&self, base: &JudgePolicy) -> JudgePolicy {
        let mut p = base.clone();
        p.tolerance.errors *= self.drift;
        p.tolerance.latency *= self.drift;
        p.tolerance.cpu *= self.drift;
        p.tolerance.memory *= self.drift;
        p
    }
}

/// Seconds of week-ago data pooled for the seasonal correction (by time,
/// not ticks, so it means the same at any evidence step): five minutes, so
/// the correction is not noisier than the reference itself.
const SEASONAL_SECS: f64 = 300.0;
/// Fewer events than this on either side of a correction: no correction.
const SEASONAL_MIN_EVENTS: f64 = 20.0;
/// The correction never moves the reference by more than this factor.
const SEASONAL_MAX: f64 = 3.0;

/// Pooled counts: requests, errors, and requests above each bound.
#[derive(Clone, Debug, Default)]
struct Pool {
    requests: f64,
    errors: f64,
    above: Vec<(f64, f64)>,
}

impl Pool {
    fn add(&mut self, s: &TrackSample, sign: f64) {
        self.requests += sign * s.requests as f64;
        self.errors += sign * s.errors.min(s.requests) as f64;
        if self.above.is_empty() {
            self.above = s
                .latency_buckets
                .iter()
                .filter(|(le, _)| le.is_finite())
                .map(|&(le, _)| (le, 0.0))
                .collect();
        }
        for (le, n) in &mut self.above {
            if let Some((slow, _)) = count_above(&s.latency_buckets, *le) {
                *n += sign * slow as f64;
            }
        }
    }

    fn above(&self, le: f64) -> Option<f64> {
        self.above
            .iter()
            .find(|(b, _)| super::stats::same_bound(*b, le))
            .map(|&(_, n)| n)
    }
}

/// The ratio of two pooled rates, 1 when either has too few events.
fn factor(now: (f64, f64), then: (f64, f64)) -> f64 {
    let ((e1, n1), (e0, n0)) = (now, then);
    if e1 < SEASONAL_MIN_EVENTS || e0 < SEASONAL_MIN_EVENTS || n1 <= 0.0 || n0 <= 0.0 {
        return 1.0;
    }
    ((e1 / n1) / (e0 / n0)).clamp(1.0 / SEASONAL_MAX, SEASONAL_MAX)
}

/// The reference tick corrected by the week-ago factors: errors and each
/// bound's slow requests scaled, the histogram kept cumulative.
fn corrected(s: &TrackSample, err_factor: f64, lat_factor: &dyn Fn(f64) -> f64) -> TrackSample {
    let mut out = s.clone();
    out.errors = ((s.errors as f64 * err_factor).round() as u64).min(s.requests);
    let total = s.latency_buckets.last().map_or(0, |&(_, n)| n);
    let mut prev = 0;
    for (le, c) in &mut out.latency_buckets {
        if !le.is_finite() {
            continue;
        }
        let slow = (total - (*c).min(total)) as f64 * lat_factor(*le);
        let cum = total.saturating_sub(slow.round().max(0.0) as u64).max(prev);
        *c = cum;
        prev = cum;
    }
    out
}

/// rollbot's judge, fed the service's reference window as its baseline.
pub struct BeforeAfterJudge {
    policy: BeforeAfterPolicy,
    inner: SequentialJudge,
    warm_up: f64,
    reference: Vec<TrackSample>,
    next: usize,
    /// The reference window one week earlier, pooled.
    week_ago_reference: Option<Pool>,
    /// The latest week-ago ticks of "now", pooled and listed.
    week_ago_now: Pool,
    week_ago_recent: std::collections::VecDeque<(f64, TrackSample)>,
    /// The reference tick the last evaluation compared with.
    last_reference: Option<TrackSample>,
    /// When a critical signal was first seen worse, in the current run of
    /// worse evaluations.
    first_worse: Option<f64>,
    /// Why there is no reference yet, in the no_data reason.
    missing: Option<String>,
    /// The last verdict's line on how far it can be trusted.
    confidence: Option<String>,
}

impl BeforeAfterJudge {
    /// A judge for one rollout: `reference` is the service tick by tick in
    /// the reference window (oldest first; ticks without data left out).
    pub fn new(base: &JudgePolicy, policy: BeforeAfterPolicy, reference: Vec<TrackSample>) -> Self {
        let reference: Vec<TrackSample> =
            reference.into_iter().filter(|s| s.requests > 0).collect();
        BeforeAfterJudge {
            inner: SequentialJudge::new(policy.judge_policy(base)),
            warm_up: base.warm_up.secs(),
            policy,
            reference,
            next: 0,
            week_ago_reference: None,
            week_ago_now: Pool::default(),
            week_ago_recent: Default::default(),
            last_reference: None,
            first_worse: None,
            missing: None,
            confidence: None,
        }
    }

    /// The reference window fetched after the rollout started (it was not
    /// available then). Nothing was judged meanwhile, so the ticks since
    /// the start can be fed again from the metric source.
    pub fn set_reference(&mut self, reference: Vec<TrackSample>, week_ago: &[TrackSample]) {
        self.reference = reference.into_iter().filter(|s| s.requests > 0).collect();
        self.next = 0;
        self.missing = None;
        self.week_ago_reference = self.week_pool(week_ago);
    }

    /// Why the reference is still missing (said in the no_data reason).
    pub fn reference_missing(&mut self, why: String) {
        self.missing = Some(why);
    }

    /// Whether the reference is corrected by the same hours a week earlier.
    pub fn corrected(&self) -> bool {
        self.week_ago_reference.is_some()
    }

    /// The latest verdict's line on how far it can be trusted (none while
    /// there is no verdict).
    pub fn confidence(&self) -> Option<&str> {
        self.confidence.as_deref()
    }

    /// Whether the judge has a reference to compare with.
    pub fn has_reference(&self) -> bool {
        !self.reference.is_empty()
    }

    /// The reference window one week earlier, for `seasonality = "weekly"`.
    pub fn with_week_ago_reference(mut self, ticks: &[TrackSample]) -> Self {
        self.week_ago_reference = self.week_pool(ticks);
        self
    }

    /// The week-ago reference pooled, for `seasonality = "weekly"`.
    fn week_pool(&self, ticks: &[TrackSample]) -> Option<Pool> {
        if self.policy.seasonality != Seasonality::Weekly {
            return None;
        }
        let mut pool = Pool::default();
        for s in ticks.iter().filter(|s| s.requests > 0) {
            pool.add(s, 1.0);
        }
        (pool.requests > 0.0).then_some(pool)
    }

    /// Ticks in the reference window with data.
    pub fn reference_ticks(&self) -> usize {
        self.reference.len()
    }

    /// The (corrected) reference tick the last evaluation compared with.
    pub fn last_reference(&self) -> Option<&TrackSample> {
        self.last_reference.as_ref()
    }

    pub fn policy(&self) -> &BeforeAfterPolicy {
        &self.policy
    }

    /// Judges the service `now` (this tick's window after the change) with,
    /// for `seasonality = "weekly"`, the same window one week earlier.
    pub fn observe_after(
        &mut self,
        t: f64,
        now: Option<&TrackSample>,
        week_ago: Option<&TrackSample>,
    ) -> Evaluation {
        if self.reference.is_empty() {
            let why = self.missing.clone().unwrap_or_else(|| {
                format!(
                    "no metrics for the service in the {} before the rollout started",
                    fmt_duration(self.policy.reference.secs())
                )
            });
            return Evaluation::simple(
                t,
                Verdict::NoData,
                f64::NAN,
                Recommendation::None,
                format!(
                    "{why}, so nothing to compare with: no verdict; missing data never triggers a rollback, check the metric source"
                ),
            );
        }
        if let Some(w) = week_ago.filter(|w| w.requests > 0) {
            self.week_ago_now.add(w, 1.0);
            self.week_ago_recent.push_back((t, w.clone()));
            while self
                .week_ago_recent
                .front()
                .is_some_and(|(t0, _)| *t0 <= t - SEASONAL_SECS + 1e-9)
            {
                if let Some((_, old)) = self.week_ago_recent.pop_front() {
                    self.week_ago_now.add(&old, -1.0);
                }
            }
        }
        // Only ticks with data take a reference tick, so a gap does not
        // skip part of the reference.
        let baseline = match now {
            Some(n) if n.requests > 0 => {
                let b = self.reference[self.next % self.reference.len()].clone();
                self.next += 1;
                Some(self.seasonal(b))
            }
            _ => self.reference.first().cloned(),
        };
        self.last_reference = baseline
            .clone()
            .filter(|_| now.is_some_and(|n| n.requests > 0));
        let tick = Tick {
            t,
            baseline,
            canary: now.cloned(),
        };
        let eval = self.inner.observe(&tick);
        self.before_after(eval)
    }

    /// The reference tick corrected for the week-ago movement.
    fn seasonal(&self, b: TrackSample) -> TrackSample {
        let Some(then) = &self.week_ago_reference else {
            return b;
        };
        let now = &self.week_ago_now;
        let err = factor((now.errors, now.requests), (then.errors, then.requests));
        let lat = |le: f64| match (now.above(le), then.above(le)) {
            (Some(a), Some(b)) => factor((a, now.requests), (b, then.requests)),
            _ => 1.0,
        };
        corrected(&b, err, &lat)
    }

    /// Words and recommendation for a comparison with the past.
    fn before_after(&mut self, mut e: Evaluation) -> Evaluation {
        let worse = e.evidence.iter().any(|ev| {
            ev.critical && matches!(ev.class, MetricClass::Borderline | MetricClass::Failing)
        });
        if worse {
            self.first_worse.get_or_insert(e.t);
        } else {
            self.first_worse = None;
        }
        for r in &mut e.reasons {
            *r = r
                .replace("canary requests", "requests since the change")
                .replace("the canary", "the service now")
                .replace("canary", "after")
                .replace("baseline", "before");
        }
        if e.verdict == Verdict::NoData {
            self.confidence = None;
            return e;
        }
        // Nothing to promote: the change is already out.
        if e.recommendation == Recommendation::Promote {
            e.recommendation = Recommendation::None;
        }
        let reference = fmt_duration(self.policy.reference.secs());
        let corrected = if self.week_ago_reference.is_some() {
            ", corrected by the same hours one week earlier"
        } else {
            ""
        };
        if e.verdict == Verdict::Failing {
            let began = self.first_worse.unwrap_or(e.t);
            let latest_attributable = self.warm_up + self.policy.onset_grace.secs();
            let attributable = began <= latest_attributable + 1e-9;
            let strong = e.evidence.iter().find(|ev| {
                ev.critical
                    && ev.class == MetricClass::Failing
                    && ev.effect_kind == EffectKind::Ratio
                    && ev.interval.0 >= self.policy.overwhelming_ratio
            });
            let overwhelming = attributable && strong.is_some();
            let act = match self.policy.on_failing {
                BeforeAfterOnFailing::AutoRollback => true,
                BeforeAfterOnFailing::AutoRollbackIfOverwhelming => overwhelming,
                BeforeAfterOnFailing::PageAndSuggest => false,
            };
            e.recommendation = if act {
                Recommendation::Rollback
            } else {
                Recommendation::Pause
            };
            let why = if !attributable {
                format!(
                    "the degradation began {} after the rollout started, later than the change would show ({}): an outside fault is likelier, so a person decides",
                    fmt_duration(began),
                    fmt_duration(latest_attributable)
                )
            } else if let Some(ev) = strong {
                format!(
                    "the evidence is overwhelming: {} is at least {} its level before the change, since the change began",
                    ev.metric.replace('_', " "),
                    fmt_ratio(ev.interval.0)
                )
            } else {
                format!(
                    "the evidence is not overwhelming (no signal shown above {} its level before), so a person decides",
                    fmt_ratio(self.policy.overwhelming_ratio)
                )
            };
            e.reasons.push(format!(
                "confidence: before/after comparison against the {reference} before the rollout{corrected}; an outside change (a shared dependency, a traffic shift) would look the same; {why}"
            ));
        } else {
            e.reasons.push(format!(
                "before/after comparison against the {reference} before the rollout{corrected} (no concurrent baseline): an outside change would look the same"
            ));
        }
        self.confidence = e.reasons.last().cloned();
        e
    }
}

impl Judge for BeforeAfterJudge {
    fn name(&self) -> &str {
        "rollbot before/after"
    }

    /// A tick's `canary` is the service now and its `baseline`, when there
    /// is one, the service one week earlier (see `observe_after`).
    fn observe(&mut self, tick: &Tick) -> Evaluation {
        self.observe_after(tick.t, tick.canary.as_ref(), tick.baseline.as_ref())
    }

    /// Each step takes its own reference step, as at the shortest tick.
    fn observe_window(&mut self, steps: &[Tick]) -> Evaluation {
        super::window::each_step(steps, |s| self.observe(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(requests: u64, errors: u64) -> TrackSample {
        let slow = requests / 100;
        TrackSample {
            requests,
            errors,
            latency_buckets: vec![
                (0.1, requests - 5 * slow),
                (0.25, requests - slow),
                (f64::INFINITY, requests),
            ],
            ..Default::default()
        }
    }

    fn reference() -> Vec<TrackSample> {
        (0..180).map(|i| sample(10_000, 10 + (i % 3))).collect()
    }

    fn run(judge: &mut BeforeAfterJudge, errors: impl Fn(f64) -> u64) -> Vec<Evaluation> {
        (1..=360)
            .map(|k| {
                let t = k as f64 * 10.0;
                judge.observe_after(t, Some(&sample(10_000, errors(t))), None)
            })
            .collect()
    }

    #[test]
    fn a_change_as_good_as_before_is_left_alone() {
        let mut j = BeforeAfterJudge::new(
            &JudgePolicy::default(),
            BeforeAfterPolicy::default(),
            reference(),
        );
        let evals = run(&mut j, |t| 10 + (t as u64 / 10) % 3);
        assert!(evals
            .iter()
            .all(|e| e.recommendation != Recommendation::Rollback
                && e.recommendation != Recommendation::Promote));
        let last = evals.last().unwrap();
        assert_eq!(last.verdict, Verdict::Healthy, "{:?}", last.reasons);
        assert!(
            last.reasons
                .iter()
                .any(|r| r.contains("before/after comparison against the 30m")),
            "{:?}",
            last.reasons
        );
    }

    #[test]
    fn ten_times_the_errors_from_the_change_on_is_rolled_back() {
        let mut j = BeforeAfterJudge::new(
            &JudgePolicy::default(),
            BeforeAfterPolicy::default(),
            reference(),
        );
        let evals = run(&mut j, |_| 100);
        let rb = evals
            .iter()
            .find(|e| e.recommendation == Recommendation::Rollback)
            .expect("rolled back");
        assert!(rb.t < 420.0, "soon after warm-up: {}", rb.t);
        assert!(
            rb.reasons.iter().any(|r| r.contains("overwhelming")),
            "{:?}",
            rb.reasons
        );
        assert!(
            rb.reasons.iter().any(|r| r.contains("5xx rate")),
            "{:?}",
            rb.reasons
        );
    }

    #[test]
    fn a_fault_that_begins_long_after_the_change_is_asked_about_not_rolled_back() {
        let mut j = BeforeAfterJudge::new(
            &JudgePolicy::default(),
            BeforeAfterPolicy::default(),
            reference(),
        );
        let evals = run(&mut j, |t| if t > 900.0 { 500 } else { 10 });
        assert!(evals
            .iter()
            .all(|e| e.recommendation != Recommendation::Rollback));
        let failing = evals
            .iter()
            .find(|e| e.verdict == Verdict::Failing)
            .expect("still failing");
        assert_eq!(failing.recommendation, Recommendation::Pause);
        assert!(
            failing
                .reasons
                .iter()
                .any(|r| r.contains("an outside fault is likelier")),
            "{:?}",
            failing.reasons
        );
    }

    #[test]
    fn a_modest_degradation_asks_a_person_unless_the_service_says_roll_back() {
        let policy = BeforeAfterPolicy::default();
        let mut j = BeforeAfterJudge::new(&JudgePolicy::default(), policy.clone(), reference());
        let evals = run(&mut j, |_| 18);
        let failing = evals.iter().find(|e| e.verdict == Verdict::Failing);
        let failing = failing.expect("1.6× the errors is beyond 1.26× tolerance");
        assert_eq!(failing.recommendation, Recommendation::Pause);
        let mut j = BeforeAfterJudge::new(
            &JudgePolicy::default(),
            BeforeAfterPolicy {
                on_failing: BeforeAfterOnFailing::AutoRollback,
                ..policy
            },
            reference(),
        );
        assert!(run(&mut j, |_| 18)
            .iter()
            .any(|e| e.recommendation == Recommendation::Rollback));
    }

    #[test]
    fn no_reference_and_no_data_never_roll_back() {
        let mut j = BeforeAfterJudge::new(
            &JudgePolicy::default(),
            BeforeAfterPolicy::default(),
            vec![],
        );
        let e = j.observe_after(600.0, Some(&sample(10_000, 5_000)), None);
        assert_eq!(e.verdict, Verdict::NoData);
        assert!(
            e.reasons[0].contains("30m before the rollout"),
            "{:?}",
            e.reasons
        );
        let mut j = BeforeAfterJudge::new(
            &JudgePolicy::default(),
            BeforeAfterPolicy::default(),
            reference(),
        );
        let e = j.observe_after(600.0, None, None);
        assert_eq!(e.verdict, Verdict::NoData);
        assert_eq!(e.recommendation, Recommendation::None);
    }

    #[test]
    fn the_weekly_correction_follows_a_daily_rise() {
        // A week ago the error rate doubled between the reference window
        // and now; today it did the same. Corrected, that is no harm.
        let week_ago_ref: Vec<TrackSample> = (0..180).map(|_| sample(10_000, 10)).collect();
        let policy = BeforeAfterPolicy {
            seasonality: Seasonality::Weekly,
            ..Default::default()
        };
        let mut j = BeforeAfterJudge::new(&JudgePolicy::default(), policy.clone(), reference())
            .with_week_ago_reference(&week_ago_ref);
        let mut worst = Verdict::Healthy;
        for k in 1..=360 {
            let e = j.observe_after(
                k as f64 * 10.0,
                Some(&sample(10_000, 22)),
                Some(&sample(10_000, 22)),
            );
            if e.verdict == Verdict::Failing {
                worst = Verdict::Failing;
            }
        }
        assert_eq!(worst, Verdict::Healthy);
        // Without the correction the same doubling fails.
        let mut j = BeforeAfterJudge::new(
            &JudgePolicy::default(),
            BeforeAfterPolicy::default(),
            reference(),
        );
        assert!(run(&mut j, |_| 22)
            .iter()
            .any(|e| e.verdict == Verdict::Failing));
    }

    #[test]
    fn bad_settings_are_refused_with_a_fix() {
        let p = BeforeAfterPolicy {
            drift: 0.5,
            ..Default::default()
        };
        assert!(p.validate().unwrap_err().contains("write e.g. drift"));
        let p = BeforeAfterPolicy {
            reference: DurationSecs(10.0),
            ..Default::default()
        };
        assert!(p.validate().unwrap_err().contains("reference = \"30m\""));
        BeforeAfterPolicy::default().validate().unwrap();
    }
}
