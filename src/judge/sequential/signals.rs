//! The state of the tested signals: a ratio signal's restarted sequential
//! tests and the sustained rule on top of them, and a count signal's
//! baseline over-dispersion.

use super::super::policy::JudgePolicy;
use super::super::stats::{BaselineDispersion, CountSums, PairSums};
use super::super::MetricClass;

/// Share of a signal's false-alarm budget kept by the test that starts at
/// the end of warm-up. The rest goes to tests restarted every
/// `RESTART_EVERY` seconds (the j-th with weight (1 − W0)/(j(j+1)), so all
/// weights sum to at most 1): a canary that degrades later in the rollout is
/// then judged on the data since then, not diluted by the healthy minutes
/// before, and the chance of any false alarm stays within α.
pub(super) const W0: f64 = 0.6;
const RESTART_EVERY: f64 = 300.0;
const MAX_RESTARTS: usize = 12;

/// What a sequential test must offer the judge.
pub(super) trait SeqSums: Clone + Default {
    fn n(&self) -> u64;
    fn log_e_worse(&self, tau: f64) -> f64;
    fn ratio_interval(&self, log_threshold: f64) -> (f64, f64);
    fn mean_a(&self) -> f64;
    fn mean_b(&self) -> f64;
}

/// Both tests already have these as inherent methods of the same names;
/// the trait only lets `RatioSignal` hold either.
macro_rules! seq_sums {
    ($($sums:ty),*) => {$(
        impl SeqSums for $sums {
            fn n(&self) -> u64 {
                self.n
            }
            fn log_e_worse(&self, tau: f64) -> f64 {
                <$sums>::log_e_worse(self, tau)
            }
            fn ratio_interval(&self, log_threshold: f64) -> (f64, f64) {
                <$sums>::ratio_interval(self, log_threshold)
            }
            fn mean_a(&self) -> f64 {
                <$sums>::mean_a(self)
            }
            fn mean_b(&self) -> f64 {
                <$sums>::mean_b(self)
            }
        }
    )*};
}

seq_sums!(PairSums, CountSums);

/// One sequential test over the ticks since `start`.
#[derive(Clone, Debug, Default)]
struct SubTest<T> {
    start: f64,
    /// ln(1/weight): added to the evidence bar of this test.
    log_penalty: f64,
    sums: T,
}

/// A ratio signal: its tests and how long its failing condition has held.
#[derive(Clone, Debug, Default)]
pub(super) struct RatioSignal<T> {
    tests: Vec<SubTest<T>>,
    fail_since: Option<f64>,
}

/// What one ratio signal's tests say at this evaluation.
pub(super) struct RatioJudgement {
    pub class: MetricClass,
    /// Evidence of the test shown (the decisive one, else the longest).
    pub log_e_fail: f64,
    pub log_e_any: f64,
    /// The evidence bar of the test shown.
    pub log_thr: f64,
    pub interval: (f64, f64),
    pub mean_a: f64,
    pub mean_b: f64,
    /// Start of the data behind the test shown.
    pub since: f64,
    pub pending_for: Option<f64>,
}

impl<T: SeqSums> RatioSignal<T> {
    /// Adds a tick to every running test (`add` pushes it into one test's
    /// sums); `origin` is the end of warm-up.
    pub fn push(&mut self, t: f64, origin: f64, add: impl Fn(&mut T)) {
        let period = ((t - origin - 1e-9) / RESTART_EVERY).floor().max(0.0) as usize;
        while self.tests.len() <= period.min(MAX_RESTARTS) {
            let j = self.tests.len();
            let w = if j == 0 {
                W0
            } else {
                (1.0 - W0) / (j * (j + 1)) as f64
            };
            self.tests.push(SubTest {
                start: origin + j as f64 * RESTART_EVERY,
                log_penalty: (1.0 / w).ln(),
                sums: T::default(),
            });
        }
        for s in &mut self.tests {
            add(&mut s.sums);
        }
    }

    pub fn n(&self) -> u64 {
        self.tests.first().map_or(0, |s| s.sums.n())
    }

    /// The test over everything since warm-up.
    pub fn full(&self) -> Option<&T> {
        self.tests.first().map(|s| &s.sums)
    }

    /// The test with the largest margin over its bar, and that margin. A max
    /// of functions non-decreasing in the canary's events is one too.
    fn best(&self, tau: f64, log_thr: f64) -> (usize, f64) {
        self.tests
            .iter()
            .enumerate()
            .filter(|(_, s)| s.sums.n() >= 2)
            .map(|(i, s)| (i, s.sums.log_e_worse(tau) - log_thr - s.log_penalty))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap_or((0, f64::NEG_INFINITY))
    }

    pub fn judge(
        &mut self,
        t: f64,
        tau: f64,
        log_thr: f64,
        sustained_for: f64,
        enough: bool,
    ) -> RatioJudgement {
        if self.tests.is_empty() {
            self.fail_since = None;
            return RatioJudgement {
                class: MetricClass::NoData,
                log_e_fail: 0.0,
                log_e_any: 0.0,
                log_thr,
                interval: (f64::NAN, f64::NAN),
                mean_a: f64::NAN,
                mean_b: f64::NAN,
                since: f64::NAN,
                pending_for: None,
            };
        }
        let (fail_i, fail_margin) = self.best(tau, log_thr);
        let (any_i, any_margin) = self.best(1.0, log_thr);
        let mut pending_for = None;
        // The sustained rule: failing once the condition has held on every
        // evaluation for `sustained_for`; more canary errors only make the
        // condition true on more ticks, so the run starts no later.
        let (class, shown) = if !enough || self.n() < 2 {
            self.fail_since = None;
            (MetricClass::NotEnoughData, 0)
        } else if fail_margin >= 0.0 {
            let since = *self.fail_since.get_or_insert(t);
            if t - since + 1e-9 >= sustained_for {
                (MetricClass::Failing, fail_i)
            } else {
                pending_for = Some(t - since);
                (MetricClass::Borderline, fail_i)
            }
        } else {
            self.fail_since = None;
            if any_margin >= 0.0 {
                (MetricClass::Borderline, any_i)
            } else {
                (MetricClass::Pass, 0)
            }
        };
        let st = &self.tests[shown];
        let thr = log_thr + st.log_penalty;
        RatioJudgement {
            class,
            log_e_fail: st.sums.log_e_worse(tau),
            log_e_any: st.sums.log_e_worse(1.0),
            log_thr: thr,
            interval: st.sums.ratio_interval(thr),
            mean_a: st.sums.mean_a(),
            mean_b: st.sums.mean_b(),
            since: st.start,
            pending_for,
        }
    }
}

/// A count signal: its tests and the baseline's over-dispersion.
#[derive(Clone, Debug, Default)]
pub(super) struct CountSignal {
    pub tests: RatioSignal<CountSums>,
    pub dispersion: BaselineDispersion,
}

impl CountSignal {
    /// Adds one tick's counts, (events, requests) per track. The null
    /// variance is fixed from the baseline and the canary's requests before
    /// the canary's events are looked at.
    pub fn push(&mut self, t: f64, policy: &JudgePolicy, canary: (u64, u64), baseline: (u64, u64)) {
        let p_var = self.dispersion.variance_rate(baseline.0, baseline.1);
        let p_scale = self.dispersion.running_rate(p_var);
        let phi2_b = self.dispersion.phi2();
        let phi2_c = phi2_b.max(policy.min_dispersion * policy.min_dispersion);
        self.tests.push(t, policy.warm_up.secs(), |s| {
            s.push(canary, baseline, (p_var, p_scale), phi2_c + phi2_b)
        });
        self.dispersion.push_at(t, baseline.0, baseline.1);
    }
}
