//! The canary judge: decides from canary and baseline metrics whether a canary
//! is healthy, borderline, failing or has no data, and says why.
//!
//! `SequentialJudge` is rollbot's own judge (anytime-valid, robust to
//! over-dispersed traffic). The reference policies in `reference` are judged on
//! the same data by `bench` so users can see what the statistics buy them, and
//! `replay` backtests a policy on a recorded rollout.

pub mod before_after;
pub mod bench;
pub mod bench_before_after;
pub(crate) mod bench_ticks;
pub(crate) mod checks;
pub(crate) mod policy;
pub(crate) mod reference;
pub mod replay;
pub(crate) mod sequential;
pub mod sim;
pub mod sim_before_after;
pub(crate) mod slo;
pub mod stats;
pub mod window;

use serde::{Deserialize, Serialize};
use std::fmt;

pub use before_after::{BeforeAfterJudge, BeforeAfterPolicy};
pub use policy::{DurationSecs, JudgePolicy, Signal, Tolerance};
pub use sequential::SequentialJudge;

/// Which side of the comparison a sample belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Track {
    Baseline,
    Canary,
}

impl fmt::Display for Track {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Track::Baseline => "baseline",
            Track::Canary => "canary",
        })
    }
}

/// One track's metrics for one tick. Counts are for the tick, not cumulative.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrackSample {
    /// Requests served during the tick.
    pub requests: u64,
    /// Failed requests (5xx) during the tick.
    pub errors: u64,
    /// Prometheus-style cumulative histogram for the tick: `(le, count)` with
    /// increasing upper bounds; the last bound is `f64::INFINITY`.
    pub latency_buckets: Vec<(f64, u64)>,
    /// CPU utilisation, 0–1.
    pub cpu: Option<f64>,
    /// Memory utilisation, 0–1.
    pub memory: Option<f64>,
    /// Readiness-probe failures during the tick.
    pub ready_failures: Option<u64>,
    /// Whether a circuit breaker in front of this track was open.
    pub circuit_open: Option<bool>,
}

/// Both tracks' metrics at one evaluation time.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Tick {
    /// Seconds since the rollout started (end of the tick's window).
    pub t: f64,
    /// `None` when the baseline's metrics are missing for this tick.
    pub baseline: Option<TrackSample>,
    /// `None` when the canary's metrics are missing for this tick.
    pub canary: Option<TrackSample>,
}

/// The judge's overall call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Healthy,
    Borderline,
    Failing,
    NoData,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Healthy => "healthy",
            Verdict::Borderline => "borderline",
            Verdict::Failing => "failing",
            Verdict::NoData => "no_data",
        })
    }
}

/// What the judge suggests the controller does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Recommendation {
    None,
    Pause,
    Rollback,
    Promote,
}

impl fmt::Display for Recommendation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Recommendation::None => "none",
            Recommendation::Pause => "pause",
            Recommendation::Rollback => "rollback",
            Recommendation::Promote => "promote",
        })
    }
}

/// How one metric was classified at this evaluation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricClass {
    /// No sign that the canary is worse.
    Pass,
    /// Too little data to judge this metric yet.
    NotEnoughData,
    /// The canary is worse, but not (yet) beyond tolerance or not sustained.
    Borderline,
    /// The canary is worse beyond tolerance, sustained.
    Failing,
    /// The metric is missing.
    NoData,
}

/// What `MetricEvidence::effect` and `interval` measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EffectKind {
    /// canary / baseline.
    Ratio,
    /// canary − baseline.
    Difference,
    /// A count of events on the canary (rule-based signals).
    Count,
}

/// What `MetricEvidence::statistic` holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatisticKind {
    /// An e-value: evidence against "canary no worse than tolerance"; by
    /// Ville's inequality it exceeds 1/α with probability at most α, ever.
    EValue,
    /// A fixed-sample p-value (reference policies).
    PValue,
    /// A rule, not a test (readiness, circuit breaker, static thresholds).
    Rule,
}

/// The evidence behind one metric's class.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricEvidence {
    /// e.g. "error_rate", "latency_above_0.25s", "cpu", "readiness_failures".
    pub metric: String,
    /// Whether this metric can trigger a rollback on its own.
    pub critical: bool,
    /// Canary estimate (a rate, a fraction, a utilisation or a count).
    pub canary: f64,
    /// Baseline estimate, same unit as `canary`.
    pub baseline: f64,
    /// Effect size, see `effect_kind`.
    pub effect: f64,
    pub effect_kind: EffectKind,
    /// Anytime-valid interval for the effect (NaN bounds when not computable).
    pub interval: (f64, f64),
    /// The smallest effect worth acting on, in the unit of `effect`.
    pub tolerance: f64,
    /// The test statistic, see `statistic_kind`.
    pub statistic: f64,
    pub statistic_kind: StatisticKind,
    /// Value of `statistic` at which the metric fails (1/α for e-values).
    pub threshold: f64,
    /// Canary requests (or observations) behind the estimate.
    pub canary_n: u64,
    /// Baseline requests (or observations) behind the estimate.
    pub baseline_n: u64,
    pub class: MetricClass,
    /// The baseline is itself degraded compared with its own recent past
    /// (an external fault); the canary is then judged only on how it differs.
    pub baseline_degraded: bool,
}

/// One evaluation of the judge.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub t: f64,
    pub verdict: Verdict,
    /// 0 (conclusive harm) to 100 (no sign of harm); NaN with `NoData`.
    pub score: f64,
    pub recommendation: Recommendation,
    pub evidence: Vec<MetricEvidence>,
    /// Plain sentences for the on-call engineer.
    pub reasons: Vec<String>,
}

impl Evaluation {
    /// An evaluation that carries only a verdict and reasons.
    pub fn simple(
        t: f64,
        verdict: Verdict,
        score: f64,
        rec: Recommendation,
        reason: String,
    ) -> Self {
        Evaluation {
            t,
            verdict,
            score,
            recommendation: rec,
            evidence: Vec::new(),
            reasons: vec![reason],
        }
    }
}

/// A canary judge: called once per tick, in time order.
pub trait Judge: Send {
    fn name(&self) -> &str;
    fn observe(&mut self, tick: &Tick) -> Evaluation;

    /// One controller tick's window as evidence steps, in time order (see
    /// `window`). A judge that only knows whole ticks sees them added up,
    /// as one query over the whole interval would have answered.
    fn observe_window(&mut self, steps: &[Tick]) -> Evaluation {
        match steps.last() {
            Some(last) if steps.len() == 1 => self.observe(last),
            Some(_) => self.observe(&window::aggregate(steps)),
            None => window::empty_window(f64::NAN),
        }
    }
}

/// "1,234,567" for counts in reasons.
pub(crate) fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// "4m30s" for durations in reasons.
pub(crate) fn fmt_duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, m, _) => format!("{h}h{m}m"),
    }
}

/// "0.42%" for rates in reasons.
pub(crate) fn fmt_pct(x: f64) -> String {
    let p = x * 100.0;
    if p == 0.0 {
        "0%".to_string()
    } else if p < 0.0995 {
        format!("{p:.3}%")
    } else if p < 10.0 {
        format!("{p:.2}%")
    } else {
        format!("{p:.1}%")
    }
}

/// "0.25 s" / "85 ms" for latencies in reasons.
pub(crate) fn fmt_secs(x: f64) -> String {
    if !x.is_finite() {
        "over the largest bucket".to_string()
    } else if x < 1.0 {
        format!("{:.0} ms", x * 1000.0)
    } else {
        format!("{x:.2} s")
    }
}

/// "4.2×" for ratios in reasons.
pub(crate) fn fmt_ratio(x: f64) -> String {
    if x.is_nan() {
        "?".to_string()
    } else if !x.is_finite() {
        "∞".to_string()
    } else if x >= 10.0 {
        format!("{x:.0}×")
    } else {
        format!("{x:.2}×")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_names_match_the_wire_format() {
        assert_eq!(
            serde_json::to_string(&Verdict::NoData).unwrap(),
            "\"no_data\""
        );
        assert_eq!(Verdict::NoData.to_string(), "no_data");
        assert_eq!(serde_json::to_string(&Track::Canary).unwrap(), "\"canary\"");
        assert_eq!(
            serde_json::to_string(&Recommendation::Rollback).unwrap(),
            "\"rollback\""
        );
    }

    #[test]
    fn numbers_read_well_in_reasons() {
        assert_eq!(thousands(12400), "12,400");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000_000), "1,000,000");
        assert_eq!(fmt_duration(270.0), "4m30s");
        assert_eq!(fmt_duration(300.0), "5m");
        assert_eq!(fmt_pct(0.0042), "0.42%");
        assert_eq!(fmt_ratio(4.2), "4.20×");
    }
}
