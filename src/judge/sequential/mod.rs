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

mod assess;
mod baseline_watch;
mod compare;
mod rule;
mod signals;
#[cfg(test)]
mod tests;

use super::policy::JudgePolicy;
use super::stats::{count_above, same_bound, PairSums};
use super::{fmt_duration, Evaluation, Judge, Recommendation, Tick, TrackSample, Verdict};
use baseline_watch::BaselineWatch;
use rule::RuleSignal;
use signals::{CountSignal, RatioSignal};

pub use assess::fmt_bound;
pub use compare::CompareTest;

/// rollbot's judge. See the module documentation.
pub struct SequentialJudge {
    policy: JudgePolicy,
    log_thr: f64,
    warm_hist: Vec<(f64, u64)>,
    /// The baseline's histograms during warm-up, to learn each latency
    /// bound's over-dispersion once the bounds are chosen.
    warm_baseline: Vec<(f64, Vec<(f64, u64)>)>,
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
    last_data_t: Option<f64>,
    prev_t: Option<f64>,
    /// Promotion was recommended and nothing has turned bad since: keep
    /// recommending it instead of flapping as intervals wobble.
    promoted: bool,
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
        for (t, h) in std::mem::take(&mut self.warm_baseline) {
            for (sig, &le) in self.latency.iter_mut().zip(&chosen) {
                if let Some((slow, n)) = count_above(&h, le) {
                    sig.dispersion.push_at(t, slow, n);
                }
            }
        }
        self.bounds = Some(chosen);
    }

    /// A tick during warm-up: the canary is not judged, but the baseline's
    /// histogram and noise are learnt.
    fn warm_up_tick(&mut self, t: f64, b: &TrackSample) -> Evaluation {
        let warm_up = self.policy.warm_up.secs();
        add_hist(&mut self.warm_hist, &b.latency_buckets);
        // Warm-up is about the canary; the baseline's noise counts.
        self.errors.dispersion.push_at(t, b.errors, b.requests);
        if !b.latency_buckets.is_empty() {
            self.warm_baseline.push((t, b.latency_buckets.clone()));
        }
        Evaluation::simple(
            t,
            Verdict::Healthy,
            100.0,
            Recommendation::None,
            format!(
                "warming up: metrics are ignored until {} after the start (now {})",
                fmt_duration(warm_up),
                fmt_duration(t)
            ),
        )
    }

    fn judge_tick(&mut self, t: f64, b: &TrackSample, c: &TrackSample) -> Evaluation {
        if t <= self.policy.warm_up.secs() {
            return self.warm_up_tick(t, b);
        }
        if self.bounds.is_none() {
            let hist = if self.warm_hist.is_empty() {
                b.latency_buckets.clone()
            } else {
                std::mem::take(&mut self.warm_hist)
            };
            self.choose_bounds(&hist);
        }
        self.post_ticks += 1;
        self.canary_requests += c.requests;
        self.baseline_requests += b.requests;
        self.record_errors(t, b, c);
        self.record_latency(t, b, c);
        if let (Some(x), Some(y)) = (c.cpu, b.cpu) {
            self.cpu
                .push(t, self.policy.warm_up.secs(), |s| s.push(x, y));
        }
        if let (Some(x), Some(y)) = (c.memory, b.memory) {
            self.memory
                .push(t, self.policy.warm_up.secs(), |s| s.push(x, y));
        }
        self.ready.push(t, c.ready_failures, b.ready_failures);
        self.circuit.push(
            t,
            c.circuit_open.map(u64::from),
            b.circuit_open.map(u64::from),
        );
        self.assess(t, c)
    }

    /// Errors: 5xx out of requests.
    fn record_errors(&mut self, t: f64, b: &TrackSample, c: &TrackSample) {
        self.errors.push(
            t,
            &self.policy,
            (c.errors.min(c.requests), c.requests),
            (b.errors.min(b.requests), b.requests),
        );
        self.err_watch.push(t, b.errors as f64, b.requests as f64);
    }

    /// Latency: requests slower than each bound, out of requests; the
    /// baseline's self-check watches the largest bound.
    fn record_latency(&mut self, t: f64, b: &TrackSample, c: &TrackSample) {
        if let Some(bounds) = &self.bounds {
            for (i, &le) in bounds.iter().enumerate() {
                if let (Some((sc, nc)), Some((sb, nb))) = (
                    count_above(&c.latency_buckets, le),
                    count_above(&b.latency_buckets, le),
                ) {
                    if nc > 0 && nb > 0 {
                        self.latency[i].push(t, &self.policy, (sc, nc), (sb, nb));
                    }
                }
            }
            if let Some((sb, nb)) = bounds
                .last()
                .and_then(|&le| count_above(&b.latency_buckets, le))
            {
                self.lat_watch.push(t, sb as f64, nb as f64);
            }
        }
        add_hist(&mut self.hist_c, &c.latency_buckets);
        add_hist(&mut self.hist_b, &b.latency_buckets);
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

    /// Each step is its own observation: the evidence, and so the verdict,
    /// is the same at any tick length.
    fn observe_window(&mut self, steps: &[Tick]) -> Evaluation {
        super::window::each_step(steps, |s| self.observe(s))
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
