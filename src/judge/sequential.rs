//! rollbot's own judge: anytime-valid sequential tests comparing canary and
//! baseline tick by tick.
//!
//! Count signals (the 5xx count, and for latency the number of requests
//! slower than each tested histogram bound) test "canary rate ≤ τ × baseline
//! rate" with a count test whose null variance never looks at the canary's
//! events (`stats::CountSums`). Per tick i:
//! - the null expects μ_i = τ·p̂_b,i·n_c,i canary events, p̂_b,i being the
//!   baseline's rate in the same tick, so noise and faults shared by both
//!   tracks cancel and a canary is not blamed for a database outage;
//! - V_i = τp̃_i n_c,i + τ²n_c,i² p̃_i/n_b,i + (φ_c² + φ_b²)(τp̃_i n_c,i)², the
//!   canary's Poisson noise, the baseline's Poisson noise in p̂, and both
//!   tracks' per-window over-dispersion, where p̃_i ≥ p̂_b,i comes from the
//!   baseline alone, φ_b² is the baseline's relative over-dispersion learnt
//!   from its past ticks (`stats::BaselineDispersion`) and
//!   φ_c² = max(φ_b², min_dispersion²) is what the canary is assumed to have;
//! - the e-value mixes, over seven effect sizes, Π_i exp(λ_i(e_c,i − μ_i) −
//!   ψ(λ_i)V_i), ψ(λ) = e^λ − 1 − λ (the Poisson likelihood ratio when there
//!   is no over-dispersion), λ_i ≥ 0 being the effect over the tick's
//!   standard deviation predicted from the baseline's past rate;
//! - the interval shown inverts the same test (lower end) and its mirror
//!   image (upper end), each end valid at the signal's α.
//!
//! Why a larger effect is never judged later: μ_i, V_i and λ_i depend on the
//! canary's requests and the baseline but not on the canary's events, so
//! every term, and the mixture, is non-decreasing in every tick's canary
//! events; so is each restarted test,
//! the max over restarts (`best`), the "fails at tolerance" and "worse at
//! all" conditions, the sustained rule (a condition true on a superset of
//! ticks starts its run no later), the worst class over latency bounds and
//! the score (a product over signals of factors that only fall as classes
//! worsen; "enough data" counts requests, and CPU, memory and the rules do
//! not see errors). A rollback is a threshold on that score, so on the same
//! traffic it comes no later for a canary with at least as many errors (or
//! slow requests) on every tick.
//!
//! Why false alarms stay within α: under the null each tick's excess
//! e_c,i − μ_i has mean ≤ 0 and, as long as the canary's own per-window
//! relative noise is at most φ_c (the baseline's, or `min_dispersion` if
//! larger), cumulant at most ψ(λ)V_i, so each term is a test supermartingale
//! and Ville's inequality applies to the mixture and to every restart (their
//! weights sum to at most 1). A canary noisier than that assumption is the
//! case `min_dispersion` exists for.
//!
//! CPU and memory are continuous and keep the scale-invariant sequential
//! t-test on per-tick paired differences; they cannot roll back alone.

use std::collections::VecDeque;

use super::policy::{JudgePolicy, Signal};
use super::stats::{
    count_above, histogram_quantile, same_bound, BaselineDispersion, CountSums, PairSums,
};
use super::{
    fmt_duration, fmt_pct, fmt_ratio, fmt_secs, thousands, EffectKind, Evaluation, Judge,
    MetricClass, MetricEvidence, Recommendation, StatisticKind, Tick, TrackSample, Verdict,
};

/// Share of a signal's false-alarm budget kept by the test that starts at
/// the end of warm-up. The rest goes to tests restarted every
/// `RESTART_EVERY` seconds (the j-th with weight (1 − W0)/(j(j+1)), so all
/// weights sum to at most 1): a canary that degrades later in the rollout is
/// then judged on the data since then, not diluted by the healthy minutes
/// before, and the chance of any false alarm stays within α.
const W0: f64 = 0.6;
const RESTART_EVERY: f64 = 300.0;
const MAX_RESTARTS: usize = 12;

/// What a sequential test must offer the judge.
trait SeqSums: Clone + Default {
    fn n(&self) -> u64;
    fn log_e_worse(&self, tau: f64) -> f64;
    fn ratio_interval(&self, log_threshold: f64) -> (f64, f64);
    fn mean_a(&self) -> f64;
    fn mean_b(&self) -> f64;
}

impl SeqSums for PairSums {
    fn n(&self) -> u64 {
        self.n
    }
    fn log_e_worse(&self, tau: f64) -> f64 {
        PairSums::log_e_worse(self, tau)
    }
    fn ratio_interval(&self, log_threshold: f64) -> (f64, f64) {
        PairSums::ratio_interval(self, log_threshold)
    }
    fn mean_a(&self) -> f64 {
        PairSums::mean_a(self)
    }
    fn mean_b(&self) -> f64 {
        PairSums::mean_b(self)
    }
}

impl SeqSums for CountSums {
    fn n(&self) -> u64 {
        self.n
    }
    fn log_e_worse(&self, tau: f64) -> f64 {
        CountSums::log_e_worse(self, tau)
    }
    fn ratio_interval(&self, log_threshold: f64) -> (f64, f64) {
        CountSums::ratio_interval(self, log_threshold)
    }
    fn mean_a(&self) -> f64 {
        CountSums::mean_a(self)
    }
    fn mean_b(&self) -> f64 {
        CountSums::mean_b(self)
    }
}

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
struct RatioSignal<T> {
    tests: Vec<SubTest<T>>,
    fail_since: Option<f64>,
}

/// What one ratio signal's tests say at this evaluation.
struct RatioJudgement {
    class: MetricClass,
    /// Evidence of the test shown (the decisive one, else the longest).
    log_e_fail: f64,
    log_e_any: f64,
    /// The evidence bar of the test shown.
    log_thr: f64,
    interval: (f64, f64),
    mean_a: f64,
    mean_b: f64,
    /// Start of the data behind the test shown.
    since: f64,
    pending_for: Option<f64>,
}

impl<T: SeqSums> RatioSignal<T> {
    /// Adds a tick to every running test (`add` pushes it into one test's
    /// sums); `origin` is the end of warm-up.
    fn push(&mut self, t: f64, origin: f64, add: impl Fn(&mut T)) {
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

    fn n(&self) -> u64 {
        self.tests.first().map_or(0, |s| s.sums.n())
    }

    /// The test over everything since warm-up.
    fn full(&self) -> Option<&T> {
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

    fn judge(
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
struct CountSignal {
    tests: RatioSignal<CountSums>,
    dispersion: BaselineDispersion,
}

impl CountSignal {
    /// Adds one tick's counts, (events, requests) per track. The null
    /// variance is fixed from the baseline and the canary's requests before
    /// the canary's events are looked at.
    fn push(
        &mut self,
        t: f64,
        origin: f64,
        canary: (u64, u64),
        baseline: (u64, u64),
        min_dispersion: f64,
    ) {
        let p_var = self.dispersion.variance_rate(baseline.0, baseline.1);
        let p_scale = self.dispersion.running_rate(p_var);
        let phi2_b = self.dispersion.phi2();
        let phi2_c = phi2_b.max(min_dispersion * min_dispersion);
        self.tests.push(t, origin, |s| {
            s.push(canary, baseline, (p_var, p_scale), phi2_c + phi2_b)
        });
        self.dispersion.push(baseline.0, baseline.1);
    }
}

/// Tracks whether the baseline itself is degraded compared with its own
/// usual level (the last minute against everything before it that was not
/// degraded), to tell an external fault from a bad canary.
#[derive(Clone, Debug, Default)]
struct BaselineWatch {
    usual_num: f64,
    usual_den: f64,
    recent: VecDeque<(f64, f64, bool)>,
    degraded: bool,
}

const WATCH_TICKS: usize = 6;

impl BaselineWatch {
    fn push(&mut self, num: f64, den: f64) {
        let (rn, rd) = self
            .recent
            .iter()
            .fold((num, den), |(a, b), &(n, d, _)| (a + n, b + d));
        self.degraded = if self.usual_den > rd && self.usual_num > 0.0 && rd > 0.0 {
            let usual = self.usual_num / self.usual_den;
            let expected = usual * rd;
            rn / rd > 2.0 * usual && (rn - expected) / (expected + 1.0).sqrt() > 4.0
        } else {
            false
        };
        self.recent.push_back((num, den, self.degraded));
        if self.recent.len() > WATCH_TICKS {
            let (n, d, was_degraded) = self.recent.pop_front().unwrap_or_default();
            if !was_degraded {
                self.usual_num += n;
                self.usual_den += d;
            }
        }
    }

    fn usual(&self) -> f64 {
        if self.usual_den > 0.0 {
            self.usual_num / self.usual_den
        } else {
            f64::NAN
        }
    }

    fn recent_rate(&self) -> f64 {
        let (n, d) = self
            .recent
            .iter()
            .fold((0.0, 0.0), |(a, b), &(n, d, _)| (a + n, b + d));
        if d > 0.0 {
            n / d
        } else {
            f64::NAN
        }
    }
}

/// A rule-based signal (readiness failures, circuit breaker): bad while the
/// canary shows it and the baseline does not, failing once sustained.
#[derive(Clone, Debug, Default)]
struct RuleSignal {
    seen: bool,
    since: Option<f64>,
    baseline_too: bool,
    canary_count: u64,
    last_canary: u64,
}

impl RuleSignal {
    fn push(&mut self, t: f64, canary: Option<u64>, baseline: Option<u64>) {
        let Some(c) = canary else { return };
        self.seen = true;
        self.last_canary = c;
        let b = baseline.unwrap_or(0);
        if c > 0 {
            self.canary_count += c;
            self.since.get_or_insert(t);
            if b > 0 {
                self.baseline_too = true;
            }
        } else {
            self.since = None;
            self.baseline_too = false;
        }
    }

    fn class(&self, t: f64, sustained_for: f64) -> MetricClass {
        if !self.seen {
            return MetricClass::NoData;
        }
        match self.since {
            None => MetricClass::Pass,
            Some(_) if self.baseline_too => MetricClass::Borderline,
            Some(s) if t - s + 1e-9 >= sustained_for => MetricClass::Failing,
            Some(_) => MetricClass::Borderline,
        }
    }
}

/// rollbot's judge. See the module documentation.
pub struct SequentialJudge {
    policy: JudgePolicy,
    log_thr: f64,
    warm_hist: Vec<(f64, u64)>,
    /// The baseline's histograms during warm-up, to learn each latency
    /// bound's over-dispersion once the bounds are chosen.
    warm_baseline: Vec<Vec<(f64, u64)>>,
    bounds: Option<Vec<f64>>,
    errors: CountSignal,
    latency: Vec<CountSignal>,
    cpu: RatioSignal<PairSums>,
    memory: RatioSignal<PairSums>,
    ready: RuleSignal,
    circuit: RuleSignal,
    err_watch: BaselineWatch,
    lat_watch: BaselineWatch,
    hist_c: Vec<(f64, u64)>,
    hist_b: Vec<(f64, u64)>,
    canary_requests: u64,
    baseline_requests: u64,
    post_ticks: u64,
    first_post_t: Option<f64>,
    last_data_t: Option<f64>,
    prev_t: Option<f64>,
    /// Promotion was recommended and nothing has turned bad since: keep
    /// recommending it instead of flapping as intervals wobble.
    promoted: bool,
}

/// Whether every signal still passes (or has no data).
fn all_pass(factors: &[(Signal, MetricClass)]) -> bool {
    factors
        .iter()
        .all(|(_, c)| matches!(c, MetricClass::Pass | MetricClass::NoData))
}

impl SequentialJudge {
    /// A judge for one rollout. The policy should have passed `validate`.
    pub fn new(policy: JudgePolicy) -> Self {
        let log_thr = (1.0 / policy.alpha).ln();
        SequentialJudge {
            policy,
            log_thr,
            warm_hist: Vec::new(),
            warm_baseline: Vec::new(),
            bounds: None,
            errors: CountSignal::default(),
            latency: Vec::new(),
            cpu: RatioSignal::default(),
            memory: RatioSignal::default(),
            ready: RuleSignal::default(),
            circuit: RuleSignal::default(),
            err_watch: BaselineWatch::default(),
            lat_watch: BaselineWatch::default(),
            hist_c: Vec::new(),
            hist_b: Vec::new(),
            canary_requests: 0,
            baseline_requests: 0,
            post_ticks: 0,
            first_post_t: None,
            last_data_t: None,
            prev_t: None,
            promoted: false,
        }
    }

    /// The latency bounds being tested (chosen from the baseline at the end
    /// of warm-up), empty before then.
    pub fn latency_bounds(&self) -> &[f64] {
        self.bounds.as_deref().unwrap_or(&[])
    }

    fn no_data(&self, t: f64, what: String) -> Evaluation {
        let missing = match self.last_data_t {
            Some(last) if t > last => format!(" (no complete data for {})", fmt_duration(t - last)),
            _ => String::new(),
        };
        Evaluation::simple(
            t,
            Verdict::NoData,
            f64::NAN,
            Recommendation::None,
            format!("{what}{missing}: no verdict; missing data never triggers a rollback, check the metric source"),
        )
    }

    /// Picks the histogram bounds nearest the baseline's quantiles: the share
    /// of requests above a bound is what a cumulative histogram measures
    /// exactly, so the test needs no interpolation.
    fn choose_bounds(&mut self, hist: &[(f64, u64)]) {
        let total = match hist.last() {
            Some(&(_, n)) if n > 0 => n as f64,
            _ => return,
        };
        let logit = |p: f64| (p / (1.0 - p)).ln();
        let mut chosen: Vec<f64> = Vec::new();
        for &q in &self.policy.latency_quantiles {
            let target = logit(1.0 - q);
            let best = hist
                .iter()
                .filter(|(le, c)| le.is_finite() && *c > 0 && (*c as f64) < total)
                .map(|&(le, c)| (le, (logit(1.0 - c as f64 / total) - target).abs()))
                .min_by(|a, b| a.1.total_cmp(&b.1));
            if let Some((le, _)) = best {
                if !chosen.iter().any(|&b| same_bound(b, le)) {
                    chosen.push(le);
                }
            }
        }
        chosen.sort_by(|a, b| a.total_cmp(b));
        self.latency = vec![CountSignal::default(); chosen.len()];
        // The baseline was healthy during warm-up: learn its noise there.
        for h in std::mem::take(&mut self.warm_baseline) {
            for (sig, &le) in self.latency.iter_mut().zip(&chosen) {
                if let Some((slow, n)) = count_above(&h, le) {
                    sig.dispersion.push(slow, n);
                }
            }
        }
        self.bounds = Some(chosen);
    }

    fn judge_tick(&mut self, t: f64, b: &TrackSample, c: &TrackSample) -> Evaluation {
        let p = &self.policy;
        let warm_up = p.warm_up.secs();
        if t <= warm_up {
            add_hist(&mut self.warm_hist, &b.latency_buckets);
            // Warm-up is about the canary; the baseline's noise counts.
            self.errors.dispersion.push(b.errors, b.requests);
            if !b.latency_buckets.is_empty() {
                self.warm_baseline.push(b.latency_buckets.clone());
            }
            return Evaluation::simple(
                t,
                Verdict::Healthy,
                100.0,
                Recommendation::None,
                format!(
                    "warming up: metrics are ignored until {} after the start (now {})",
                    fmt_duration(warm_up),
                    fmt_duration(t)
                ),
            );
        }
        if self.bounds.is_none() {
            let hist = if self.warm_hist.is_empty() {
                b.latency_buckets.clone()
            } else {
                std::mem::take(&mut self.warm_hist)
            };
            self.choose_bounds(&hist);
        }
        self.first_post_t.get_or_insert(t);
        self.post_ticks += 1;
        self.canary_requests += c.requests;
        self.baseline_requests += b.requests;

        // Errors: 5xx out of requests.
        let min_disp = self.policy.min_dispersion;
        self.errors.push(
            t,
            warm_up,
            (c.errors.min(c.requests), c.requests),
            (b.errors.min(b.requests), b.requests),
            min_disp,
        );
        self.err_watch.push(b.errors as f64, b.requests as f64);

        // Latency: requests slower than each bound, out of requests.
        if let Some(bounds) = &self.bounds {
            for (i, &le) in bounds.iter().enumerate() {
                if let (Some((sc, nc)), Some((sb, nb))) = (
                    count_above(&c.latency_buckets, le),
                    count_above(&b.latency_buckets, le),
                ) {
                    if nc > 0 && nb > 0 {
                        self.latency[i].push(t, warm_up, (sc, nc), (sb, nb), min_disp);
                    }
                }
            }
            if let (Some(&le), Some((sb, nb))) = (
                bounds.last(),
                bounds
                    .last()
                    .and_then(|&le| count_above(&b.latency_buckets, le)),
            ) {
                let _ = le;
                self.lat_watch.push(sb as f64, nb as f64);
            }
        }
        add_hist(&mut self.hist_c, &c.latency_buckets);
        add_hist(&mut self.hist_b, &b.latency_buckets);

        if let (Some(x), Some(y)) = (c.cpu, b.cpu) {
            self.cpu.push(t, warm_up, |s| s.push(x, y));
        }
        if let (Some(x), Some(y)) = (c.memory, b.memory) {
            self.memory.push(t, warm_up, |s| s.push(x, y));
        }
        self.ready.push(t, c.ready_failures, b.ready_failures);
        self.circuit.push(
            t,
            c.circuit_open.map(u64::from),
            b.circuit_open.map(u64::from),
        );
        self.assess(t, c)
    }

    fn assess(&mut self, t: f64, c: &TrackSample) -> Evaluation {
        let p = self.policy.clone();
        let sustained = p.sustained_for.secs();
        let enough = self.canary_requests >= p.min_canary_requests;
        let mut evidence = Vec::new();
        let mut reasons = Vec::new();
        let mut factors: Vec<(Signal, MetricClass)> = Vec::new();
        let mut promote_ok = true;
        let per_tick_canary = self.canary_requests as f64 / self.post_ticks.max(1) as f64;
        let tick_len = match self.prev_t {
            Some(prev) if t > prev => t - prev,
            _ => 10.0,
        };

        // --- errors ---
        {
            let crit = p.is_critical(Signal::Errors);
            let tau = p.tolerance.errors;
            let j = self
                .errors
                .tests
                .judge(t, tau, self.log_thr, sustained, enough);
            let (ca, ba) = (j.mean_a, j.mean_b);
            let effect = ca / ba;
            let degraded = self.err_watch.degraded;
            evidence.push(ratio_evidence(
                "error_rate",
                crit,
                (ca, ba),
                j.interval,
                tau,
                &j,
                (self.canary_requests, self.baseline_requests),
                degraded,
            ));
            let head = format!(
                "canary 5xx rate {} vs baseline {} ({}, interval {}) after {} canary requests{}",
                fmt_pct(ca),
                fmt_pct(ba),
                fmt_ratio(effect),
                fmt_interval(j.interval),
                thousands(self.canary_requests),
                since_note(&j, p.warm_up.secs())
            );
            push_ratio_reason(&mut reasons, &head, &j, tau, crit);
            if j.class == MetricClass::Pass {
                let more = self.errors.tests.full().and_then(|s| {
                    more_needed(s, tau, self.log_thr + (1.0 / W0).ln(), per_tick_canary)
                });
                if let Some(more) = more {
                    reasons.push(format!(
                        "5xx rate looks {} the baseline's but is not conclusive yet; about {} more canary requests should settle it",
                        fmt_ratio(effect),
                        thousands(more)
                    ));
                }
            }
            if degraded {
                reasons.push(format!(
                    "the baseline is degraded too (5xx {} over the last minute vs its usual {}): likely an external fault such as a shared dependency; the canary is judged only on how it differs from the baseline",
                    fmt_pct(self.err_watch.recent_rate()),
                    fmt_pct(self.err_watch.usual())
                ));
            }
            let zero_errors = j.mean_a == 0.0 && j.mean_b == 0.0;
            if !(zero_errors || j.interval.1 < p.promote_margin) {
                promote_ok = false;
            }
            if j.class != MetricClass::Pass {
                promote_ok = false;
            }
            factors.push((Signal::Errors, j.class));
        }

        // --- latency ---
        {
            let crit = p.is_critical(Signal::Latency);
            let tau = p.tolerance.latency;
            let k = self.latency.len().max(1) as f64;
            // Bonferroni across bounds keeps the latency signal's own α.
            let log_thr = self.log_thr + k.ln();
            let bounds = self.bounds.clone().unwrap_or_default();
            let mut worst = if bounds.is_empty() {
                MetricClass::NoData
            } else {
                MetricClass::Pass
            };
            let degraded = self.lat_watch.degraded;
            for (i, le) in bounds.iter().enumerate() {
                let j = self.latency[i]
                    .tests
                    .judge(t, tau, log_thr, sustained, enough);
                let (ca, ba) = (j.mean_a, j.mean_b);
                let name = format!("latency_above_{}", fmt_bound(*le));
                evidence.push(ratio_evidence(
                    &name,
                    crit,
                    (ca, ba),
                    j.interval,
                    tau,
                    &j,
                    (self.canary_requests, self.baseline_requests),
                    degraded,
                ));
                let head = format!(
                    "canary requests slower than {}: {} vs baseline {} ({}, interval {}){}; {}",
                    fmt_secs(*le),
                    fmt_pct(ca),
                    fmt_pct(ba),
                    fmt_ratio(ca / ba),
                    fmt_interval(j.interval),
                    since_note(&j, p.warm_up.secs()),
                    self.quantile_summary()
                );
                push_ratio_reason(&mut reasons, &head, &j, tau, crit);
                if j.interval.1.is_nan()
                    || j.interval.1 >= p.promote_margin
                    || j.class != MetricClass::Pass
                {
                    promote_ok = false;
                }
                worst = worse(worst, j.class);
            }
            if degraded {
                reasons.push(format!(
                    "the baseline is slower too (requests over {}: {} over the last minute vs its usual {}): likely an external fault; the canary is judged only on how it differs from the baseline",
                    fmt_secs(*bounds.last().unwrap_or(&f64::NAN)),
                    fmt_pct(self.lat_watch.recent_rate()),
                    fmt_pct(self.lat_watch.usual())
                ));
            }
            factors.push((Signal::Latency, worst));
        }

        // --- saturation ---
        for (signal, tau, label) in [
            (Signal::Cpu, p.tolerance.cpu, "CPU"),
            (Signal::Memory, p.tolerance.memory, "memory"),
        ] {
            let crit = p.is_critical(signal);
            let sig = if signal == Signal::Cpu {
                &mut self.cpu
            } else {
                &mut self.memory
            };
            let n = sig.n();
            if n == 0 {
                continue;
            }
            let j = sig.judge(t, tau, self.log_thr, sustained, enough && n >= 3);
            let (ca, ba) = (j.mean_a, j.mean_b);
            evidence.push(ratio_evidence(
                if signal == Signal::Cpu {
                    "cpu"
                } else {
                    "memory"
                },
                crit,
                (ca, ba),
                j.interval,
                tau,
                &j,
                (n, n),
                false,
            ));
            if matches!(j.class, MetricClass::Borderline | MetricClass::Failing) {
                let confirm = if crit {
                    String::new()
                } else {
                    "; on its own this only asks a human (it needs errors or latency to confirm a rollback)".into()
                };
                reasons.push(format!(
                    "canary {label} {:.0}% vs baseline {:.0}% ({}, interval {}){confirm}",
                    ca * 100.0,
                    ba * 100.0,
                    fmt_ratio(ca / ba),
                    fmt_interval(j.interval)
                ));
            }
            factors.push((signal, j.class));
        }

        // --- rules ---
        for (signal, rule, what) in [
            (Signal::Readiness, &self.ready, "readiness-probe failures"),
            (
                Signal::CircuitBreaker,
                &self.circuit,
                "circuit breaker open",
            ),
        ] {
            let class = rule.class(t, sustained);
            if class == MetricClass::NoData {
                continue;
            }
            let crit = p.is_critical(signal);
            evidence.push(MetricEvidence {
                metric: if signal == Signal::Readiness {
                    "readiness_failures"
                } else {
                    "circuit_breaker"
                }
                .into(),
                critical: crit,
                canary: rule.last_canary as f64,
                baseline: f64::NAN,
                effect: rule.canary_count as f64,
                effect_kind: EffectKind::Count,
                interval: (f64::NAN, f64::NAN),
                tolerance: 0.0,
                statistic: rule.since.map(|s| t - s).unwrap_or(0.0),
                statistic_kind: StatisticKind::Rule,
                threshold: sustained,
                canary_n: self.post_ticks,
                baseline_n: self.post_ticks,
                class,
                baseline_degraded: rule.baseline_too,
            });
            if let Some(s) = rule.since {
                let why = if rule.baseline_too {
                    "the baseline shows it too, so it is likely external and not blamed on the canary".to_string()
                } else if class == MetricClass::Failing {
                    "the baseline does not".to_string()
                } else {
                    format!("waiting until it has lasted {}", fmt_duration(sustained))
                };
                reasons.push(format!(
                    "canary {what} for {}: {why}",
                    fmt_duration(t - s + tick_len)
                ));
            }
            if class != MetricClass::Pass {
                promote_ok = false;
            }
            factors.push((signal, class));
        }

        // --- score, verdict ---
        let mut score = 100.0;
        for (signal, class) in &factors {
            let weight = if p.is_critical(*signal) { 1.0 } else { 0.5 };
            let badness = match class {
                MetricClass::Failing => 1.0,
                MetricClass::Borderline => 0.5,
                _ => 0.0,
            };
            score *= 1.0 - weight * badness;
        }
        if !enough {
            let missing = p.min_canary_requests - self.canary_requests;
            let rps = per_tick_canary / tick_len;
            let eta = if rps > 0.0 {
                format!(
                    " (about {} more at current traffic)",
                    fmt_duration(missing as f64 / rps)
                )
            } else {
                String::new()
            };
            reasons.insert(
                0,
                format!(
                    "not enough data yet: {} of the {} canary requests needed after warm-up{eta}",
                    thousands(self.canary_requests),
                    thousands(p.min_canary_requests)
                ),
            );
        }
        if self.err_watch.degraded || self.lat_watch.degraded {
            // Not while an external fault blurs the comparison.
            promote_ok = false;
            self.promoted = false;
        }
        let since_warm = t - p.warm_up.secs();
        if score < p.pause_below {
            self.promoted = false;
        }
        let (verdict, rec) = if score < p.rollback_below {
            (Verdict::Failing, Recommendation::Rollback)
        } else if score < p.pause_below {
            (Verdict::Borderline, Recommendation::Pause)
        } else if (self.promoted && all_pass(&factors))
            || (enough && promote_ok && since_warm >= p.promote_after.secs())
        {
            self.promoted = true;
            reasons.push(format!(
                "every critical signal rules out a {} degradation after {} canary requests: ready to promote",
                fmt_ratio(p.promote_margin),
                thousands(self.canary_requests)
            ));
            (Verdict::Healthy, Recommendation::Promote)
        } else {
            (Verdict::Healthy, Recommendation::None)
        };
        if verdict == Verdict::Healthy && enough && reasons.is_empty() {
            let ev = &evidence[0];
            reasons.push(format!(
                "no signal shows the canary worse: 5xx rate {} vs {}, {}, after {} canary requests",
                fmt_pct(ev.canary),
                fmt_pct(ev.baseline),
                self.quantile_summary(),
                thousands(self.canary_requests)
            ));
        }
        if c.requests == 0 {
            reasons.push("the canary served no requests this tick".into());
        }
        Evaluation {
            t,
            verdict,
            score,
            recommendation: rec,
            evidence,
            reasons,
        }
    }

    /// "p50 85 ms vs 80 ms, p95 …" from the histograms since warm-up.
    fn quantile_summary(&self) -> String {
        let mut parts = Vec::new();
        for q in [0.5, 0.95, 0.99] {
            if let (Some(c), Some(b)) = (
                histogram_quantile(q, &self.hist_c),
                histogram_quantile(q, &self.hist_b),
            ) {
                parts.push(format!(
                    "p{:.0} {} vs {}",
                    q * 100.0,
                    fmt_secs(c),
                    fmt_secs(b)
                ));
            }
        }
        if parts.is_empty() {
            "no latency histogram".into()
        } else {
            format!("latency {}", parts.join(", "))
        }
    }
}

impl Judge for SequentialJudge {
    fn name(&self) -> &str {
        "rollbot"
    }

    fn observe(&mut self, tick: &Tick) -> Evaluation {
        let t = tick.t;
        let eval = match (&tick.baseline, &tick.canary) {
            (None, None) => self.no_data(t, "no metrics for either track".into()),
            (None, Some(_)) => self.no_data(
                t,
                "no baseline metrics, so nothing to compare the canary with".into(),
            ),
            (Some(_), None) => self.no_data(t, "no canary metrics".into()),
            (Some(b), Some(_)) if b.requests == 0 => self.no_data(
                t,
                "the baseline served no requests, so nothing to compare with".into(),
            ),
            (Some(_), Some(c)) if c.requests == 0 => {
                self.no_data(t, "the canary served no requests".into())
            }
            (Some(b), Some(c)) => {
                let e = self.judge_tick(t, b, c);
                self.last_data_t = Some(t);
                e
            }
        };
        self.prev_t = Some(t);
        eval
    }
}

fn add_hist(acc: &mut Vec<(f64, u64)>, h: &[(f64, u64)]) {
    if h.is_empty() {
        return;
    }
    if acc.len() != h.len() || acc.iter().zip(h).any(|(a, b)| !same_bound(a.0, b.0)) {
        if acc.is_empty() {
            acc.extend(h.iter().map(|&(le, _)| (le, 0)));
        } else {
            // A changed bucket layout cannot be summed; keep the first one.
            return;
        }
    }
    for (a, b) in acc.iter_mut().zip(h) {
        a.1 += b.1;
    }
}

fn worse(a: MetricClass, b: MetricClass) -> MetricClass {
    let rank = |c: MetricClass| match c {
        MetricClass::NoData => 0,
        MetricClass::Pass => 1,
        MetricClass::NotEnoughData => 2,
        MetricClass::Borderline => 3,
        MetricClass::Failing => 4,
    };
    if rank(b) > rank(a) {
        b
    } else {
        a
    }
}

/// " (data since 15m)" when the evidence shown comes from a restarted test.
fn since_note(j: &RatioJudgement, warm_up: f64) -> String {
    if j.since.is_finite() && j.since > warm_up + 1.0 {
        format!(" (data since {})", fmt_duration(j.since))
    } else {
        String::new()
    }
}

fn fmt_interval((lo, hi): (f64, f64)) -> String {
    if lo.is_nan() {
        "not yet computable".into()
    } else {
        format!("{}–{}", fmt_ratio(lo), fmt_ratio(hi))
    }
}

/// How a latency bound appears in metric names (`latency_above_250ms`).
pub fn fmt_bound(le: f64) -> String {
    if le < 1.0 {
        format!("{}ms", (le * 1000.0).round())
    } else {
        format!("{le}s")
    }
}

#[allow(clippy::too_many_arguments)]
fn ratio_evidence(
    metric: &str,
    critical: bool,
    (canary, baseline): (f64, f64),
    interval: (f64, f64),
    tolerance: f64,
    j: &RatioJudgement,
    (canary_n, baseline_n): (u64, u64),
    baseline_degraded: bool,
) -> MetricEvidence {
    MetricEvidence {
        metric: metric.to_string(),
        critical,
        canary,
        baseline,
        effect: canary / baseline,
        effect_kind: EffectKind::Ratio,
        interval,
        tolerance,
        statistic: j.log_e_fail.exp(),
        statistic_kind: StatisticKind::EValue,
        threshold: j.log_thr.exp(),
        canary_n,
        baseline_n,
        class: j.class,
        baseline_degraded,
    }
}

fn push_ratio_reason(
    reasons: &mut Vec<String>,
    head: &str,
    j: &RatioJudgement,
    tau: f64,
    critical: bool,
) {
    let thr = j.log_thr.exp();
    match j.class {
        MetricClass::Failing => reasons.push(format!(
            "{head}: beyond the {} tolerance (e-value {:.0}, needed {:.0}){}",
            fmt_ratio(tau),
            j.log_e_fail.exp().min(1e12),
            thr,
            if critical {
                ""
            } else {
                "; not critical, needs confirmation"
            }
        )),
        MetricClass::Borderline => {
            let why = match j.pending_for {
                Some(d) => format!(
                    "beyond the {} tolerance for {} so far; rollback once sustained",
                    fmt_ratio(tau),
                    fmt_duration(d)
                ),
                None => format!(
                    "worse than baseline (e-value {:.0}) but not shown beyond the {} tolerance",
                    j.log_e_any.exp().min(1e12),
                    fmt_ratio(tau)
                ),
            };
            reasons.push(format!("{head}: {why}"));
        }
        _ => {}
    }
}

/// Canary requests still needed, at the current estimated effect, for the
/// evidence to reach the threshold (None when there is no sign of harm or it
/// would take far longer than a rollout).
fn more_needed(s: &CountSums, tau: f64, log_thr: f64, per_tick: f64) -> Option<u64> {
    if s.n < 2 || s.log_e_worse(tau) >= log_thr || s.mean_a() <= tau * s.mean_b() {
        return None;
    }
    // At a fixed effect every sum grows in proportion to the ticks.
    let mut k = 1.0f64;
    while k < 400.0 {
        k *= 1.25;
        if s.log_e_worse_projected(tau, k) >= log_thr {
            return Some(((k - 1.0) * s.n as f64 * per_tick).round() as u64);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::policy::Tolerance;
    use super::super::sim::{Scenario, Simulator};
    use super::*;
    use proptest::prelude::*;

    fn sample(requests: u64, errors: u64) -> TrackSample {
        let fast = requests * 9 / 10;
        TrackSample {
            requests,
            errors,
            latency_buckets: vec![(0.1, fast), (0.5, requests), (f64::INFINITY, requests)],
            ..Default::default()
        }
    }

    fn run(judge: &mut SequentialJudge, sc: &Scenario, seed: u64) -> Vec<Evaluation> {
        let mut sim = Simulator::new(sc, seed);
        let mut out = Vec::new();
        while let Some(t) = sim.next_tick() {
            out.push(judge.observe(&t));
        }
        out
    }

    fn first(evals: &[Evaluation], rec: Recommendation) -> Option<f64> {
        evals.iter().find(|e| e.recommendation == rec).map(|e| e.t)
    }

    #[test]
    fn warm_up_is_ignored_even_when_the_canary_looks_terrible() {
        let mut j = SequentialJudge::new(JudgePolicy::default());
        for k in 1..=30 {
            let e = j.observe(&Tick {
                t: k as f64 * 10.0,
                baseline: Some(sample(9000, 9)),
                canary: Some(sample(1000, 500)),
            });
            assert_eq!(e.verdict, Verdict::Healthy, "at {}", e.t);
            assert!(e.reasons[0].contains("warming up"));
        }
    }

    #[test]
    fn a_clearly_bad_canary_is_rolled_back_soon_after_warm_up_with_a_readable_reason() {
        let sc = Scenario::new("bad", false).canary_share(0.05).errors(10.0);
        let evals = run(&mut SequentialJudge::new(JudgePolicy::default()), &sc, 1);
        let t = first(&evals, Recommendation::Rollback).expect("rolled back");
        assert!(t > 300.0 && t <= 400.0, "rolled back at {t}");
        let e = evals.iter().find(|e| e.t == t).unwrap();
        assert_eq!(e.verdict, Verdict::Failing);
        assert!(e.score < 30.0);
        let r = e.reasons.iter().find(|r| r.contains("5xx")).unwrap();
        assert!(
            r.contains("canary 5xx rate 1.") && r.contains("vs baseline 0.1"),
            "{r}"
        );
        assert!(
            r.contains("canary requests") && r.contains("interval"),
            "{r}"
        );
        let ev = e
            .evidence
            .iter()
            .find(|m| m.metric == "error_rate")
            .unwrap();
        assert_eq!(ev.class, MetricClass::Failing);
        // The anytime-valid interval holds the true 10×, and excludes 5×
        // within half a minute (the rollback comes after four ticks, when the
        // canary's assumed 30% per-window noise still leaves room for 5×).
        assert!(
            ev.interval.0 > 4.0 && ev.interval.0 < 10.0 && ev.interval.1 > 10.0,
            "{:?}",
            ev.interval
        );
        let later = evals.iter().find(|e| e.t == t + 30.0).unwrap();
        let ev = later
            .evidence
            .iter()
            .find(|m| m.metric == "error_rate")
            .unwrap();
        assert!(
            ev.interval.0 > 5.0 && ev.interval.0 < 10.0 && ev.interval.1 > 10.0,
            "{:?}",
            ev.interval
        );
    }

    #[test]
    fn a_good_canary_is_promoted_and_never_rolled_back() {
        let sc = Scenario::new("good", true).canary_share(0.05);
        let evals = run(&mut SequentialJudge::new(JudgePolicy::default()), &sc, 2);
        assert_eq!(first(&evals, Recommendation::Rollback), None);
        let t = first(&evals, Recommendation::Promote).expect("promoted");
        assert!(
            t >= 900.0,
            "promoted at {t}, before warm-up + promote_after"
        );
    }

    #[test]
    fn an_external_fault_on_both_tracks_is_not_blamed_on_the_canary() {
        let sc = Scenario::new("fault", true)
            .canary_share(0.05)
            .external_fault(600.0, 1200.0);
        let evals = run(&mut SequentialJudge::new(JudgePolicy::default()), &sc, 3);
        assert_eq!(first(&evals, Recommendation::Rollback), None);
        let during = evals.iter().find(|e| e.t == 700.0).unwrap();
        assert!(
            during
                .reasons
                .iter()
                .any(|r| r.contains("baseline is degraded too")),
            "{:?}",
            during.reasons
        );
        assert!(during
            .evidence
            .iter()
            .any(|m| m.metric == "error_rate" && m.baseline_degraded));
        // Nor is it promoted while the fault blurs the comparison.
        assert!(!evals
            .iter()
            .any(|e| e.t > 620.0 && e.t <= 1200.0 && e.recommendation == Recommendation::Promote));
    }

    #[test]
    fn low_traffic_says_how_much_more_data_is_needed() {
        let mut j = SequentialJudge::new(JudgePolicy::default());
        let mut last = None;
        for k in 1..=32 {
            last = Some(j.observe(&Tick {
                t: k as f64 * 10.0,
                baseline: Some(sample(30, 0)),
                canary: Some(sample(10, 0)),
            }));
        }
        let e = last.unwrap();
        assert_eq!(e.verdict, Verdict::Healthy);
        assert!(
            e.reasons[0].contains("not enough data yet: 20 of the 500 canary requests"),
            "{:?}",
            e.reasons
        );
        assert!(
            e.reasons[0].contains("more at current traffic"),
            "{:?}",
            e.reasons
        );
    }

    #[test]
    fn missing_data_is_no_data_and_the_judge_resumes_afterwards() {
        let sc = Scenario::new("bad", false).canary_share(0.05).errors(10.0);
        let mut sim = Simulator::new(&sc, 4);
        let mut j = SequentialJudge::new(JudgePolicy::default());
        let mut rolled = None;
        while let Some(mut t) = sim.next_tick() {
            if (310.0..=600.0).contains(&t.t) {
                t.canary = None;
                let e = j.observe(&t);
                assert_eq!(e.verdict, Verdict::NoData);
                assert_eq!(e.recommendation, Recommendation::None);
                assert!(
                    e.reasons[0].contains("no canary metrics"),
                    "{:?}",
                    e.reasons
                );
                continue;
            }
            let e = j.observe(&t);
            if e.recommendation == Recommendation::Rollback && rolled.is_none() {
                rolled = Some(e.t);
            }
        }
        let t = rolled.expect("still rolls back once data returns");
        assert!(t > 600.0 && t < 720.0, "{t}");
    }

    #[test]
    fn cpu_alone_only_pauses_but_confirms_a_borderline_error_signal() {
        // canary errors per 10,000: mean 10 (equal to baseline) or 13 (a
        // 1.3× rise: significant but inside a 1.5× tolerance; a rise within
        // the default 1.05× could only be shown over hours, since the canary
        // is assumed to have 30% per-window noise of its own).
        let policy = JudgePolicy {
            tolerance: Tolerance {
                errors: 1.5,
                ..Tolerance::default()
            },
            ..JudgePolicy::default()
        };
        let run = |canary_cpu: f64, extra_error: bool| {
            let mut j = SequentialJudge::new(policy.clone());
            let mut recs = Vec::new();
            for k in 1..=120u64 {
                let err = if extra_error { 12 + k % 3 } else { 9 + k % 3 };
                let e = j.observe(&Tick {
                    t: k as f64 * 10.0,
                    baseline: Some(TrackSample {
                        cpu: Some(0.40 + 0.01 * ((k % 3) as f64)),
                        ..sample(100_000, 100)
                    }),
                    canary: Some(TrackSample {
                        cpu: Some(canary_cpu + 0.01 * ((k % 5) as f64)),
                        ..sample(10_000, err)
                    }),
                });
                recs.push(e.recommendation);
            }
            recs
        };
        let cpu_only = run(0.8, false);
        assert!(cpu_only.contains(&Recommendation::Pause));
        assert!(!cpu_only.contains(&Recommendation::Rollback));
        let errors_only = run(0.4, true);
        assert!(errors_only.contains(&Recommendation::Pause));
        assert!(!errors_only.contains(&Recommendation::Rollback));
        let both = run(0.8, true);
        assert!(both.contains(&Recommendation::Rollback));
    }

    #[test]
    fn a_tail_only_latency_regression_is_caught() {
        let sc = Scenario::new("p99", false).canary_share(0.05).p99_only(1.3);
        let evals = run(&mut SequentialJudge::new(JudgePolicy::default()), &sc, 5);
        let t = first(&evals, Recommendation::Rollback).expect("rolled back");
        let e = evals.iter().find(|e| e.t == t).unwrap();
        assert!(
            e.reasons.iter().any(|r| r.contains("slower than")),
            "{:?}",
            e.reasons
        );
    }

    fn ticks_from(rates: &[(u64, u64, u64, u64)], missing: &[bool]) -> Vec<Tick> {
        rates
            .iter()
            .zip(missing.iter().cycle())
            .enumerate()
            .map(|(i, (&(nb, eb, nc, ec), &miss))| Tick {
                t: (i as f64 + 1.0) * 10.0 + 300.0,
                baseline: Some(sample(nb, eb.min(nb))),
                canary: if miss {
                    None
                } else {
                    Some(sample(nc, ec.min(nc)))
                },
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn a_canary_identical_to_its_baseline_is_never_failing(
            data in proptest::collection::vec((1u64..50_000, 0u64..2_000), 1..150)
        ) {
            let mut j = SequentialJudge::new(JudgePolicy::default());
            for (i, &(n, e)) in data.iter().enumerate() {
                let s = sample(n, e.min(n));
                let e = j.observe(&Tick { t: 10.0 * (i as f64 + 1.0), baseline: Some(s.clone()), canary: Some(s) });
                prop_assert_ne!(e.verdict, Verdict::Failing);
                prop_assert_ne!(e.recommendation, Recommendation::Rollback);
            }
        }

        #[test]
        fn no_data_is_never_failing(
            data in proptest::collection::vec((1u64..50_000, 0u64..2_000, 1u64..5_000, 0u64..5_000), 1..120),
            missing in proptest::collection::vec(any::<bool>(), 1..10),
        ) {
            let mut j = SequentialJudge::new(JudgePolicy::default());
            for t in ticks_from(&data, &missing) {
                let e = j.observe(&t);
                if t.canary.is_none() {
                    prop_assert_eq!(e.verdict, Verdict::NoData);
                    prop_assert_eq!(e.recommendation, Recommendation::None);
                }
            }
            // Nothing but missing data: never anything but no_data.
            let mut j = SequentialJudge::new(JudgePolicy::default());
            for (i, &(n, e, _, _)) in data.iter().enumerate() {
                let ev = j.observe(&Tick { t: 10.0 * (i as f64 + 1.0), baseline: Some(sample(n, e.min(n))), canary: None });
                prop_assert_eq!(ev.verdict, Verdict::NoData);
            }
        }

        #[test]
        fn a_larger_effect_is_never_judged_later_than_a_smaller_one(
            seed in 0u64..1_000,
            small in 1.2f64..4.0,
            extra in 0.1f64..4.0,
        ) {
            let when = |m: f64| {
                let sc = Scenario::new("p", false).canary_share(0.05).errors(m);
                let evals = run(&mut SequentialJudge::new(JudgePolicy::default()), &sc, seed);
                first(&evals, Recommendation::Rollback).unwrap_or(f64::INFINITY)
            };
            let (t_small, t_large) = (when(small), when(small + extra));
            prop_assert!(t_large <= t_small, "×{} at {}, ×{} at {}", small, t_small, small + extra, t_large);
        }
    }
}
