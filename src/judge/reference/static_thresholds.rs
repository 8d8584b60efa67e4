//! P1: static thresholds, the way Flagger checks metrics: every interval the
//! canary's success rate and p99 are compared with fixed limits, and after a
//! number of failed checks the canary is rolled back.

use super::super::stats::histogram_quantile;
use super::super::{fmt_pct, fmt_secs, Evaluation, Judge, Recommendation, Tick, Verdict};
use super::{add_hist, both};

/// Flagger-like static thresholds.
pub struct StaticThresholds {
    /// Minimum success rate per check.
    pub min_success: f64,
    /// Maximum p99 latency per check, seconds.
    pub max_p99: f64,
    /// Seconds between checks.
    pub interval: f64,
    /// Failed checks before rollback.
    pub threshold: u32,
    next_check: f64,
    requests: u64,
    errors: u64,
    hist: Vec<(f64, u64)>,
    failed: u32,
    rolled_back: bool,
    last_reason: String,
}

impl Default for StaticThresholds {
    fn default() -> Self {
        Self::new()
    }
}

impl StaticThresholds {
    /// Success rate ≥ 99% and p99 ≤ 500 ms every 60 s, rollback after 5
    /// failed checks.
    pub fn new() -> Self {
        StaticThresholds {
            min_success: 0.99,
            max_p99: 0.5,
            interval: 60.0,
            threshold: 5,
            next_check: 60.0,
            requests: 0,
            errors: 0,
            hist: Vec::new(),
            failed: 0,
            rolled_back: false,
            last_reason: "no check yet".into(),
        }
    }
}

impl Judge for StaticThresholds {
    fn name(&self) -> &str {
        "P1 static thresholds"
    }

    fn observe(&mut self, tick: &Tick) -> Evaluation {
        let t = tick.t;
        if let Some((_, c)) = both(tick) {
            self.requests += c.requests;
            self.errors += c.errors;
            add_hist(&mut self.hist, &c.latency_buckets);
        }
        if t + 1e-9 >= self.next_check {
            self.next_check += self.interval;
            if self.requests > 0 {
                let success = 1.0 - self.errors as f64 / self.requests as f64;
                let p99 = histogram_quantile(0.99, &self.hist).unwrap_or(0.0);
                let ok = success >= self.min_success && p99 <= self.max_p99;
                if !ok {
                    self.failed += 1;
                }
                self.last_reason = format!(
                    "check {}: success rate {} (min {}), p99 {} (max {}); {} of {} failed checks",
                    if ok { "passed" } else { "failed" },
                    fmt_pct(success),
                    fmt_pct(self.min_success),
                    fmt_secs(p99),
                    fmt_secs(self.max_p99),
                    self.failed,
                    self.threshold
                );
            }
            self.requests = 0;
            self.errors = 0;
            self.hist.clear();
            if self.failed >= self.threshold {
                self.rolled_back = true;
            }
        }
        let (verdict, rec, score) = if self.rolled_back {
            (Verdict::Failing, Recommendation::Rollback, 0.0)
        } else if self.failed > 0 {
            (
                Verdict::Borderline,
                Recommendation::None,
                100.0 * (1.0 - self.failed as f64 / self.threshold as f64),
            )
        } else {
            (Verdict::Healthy, Recommendation::None, 100.0)
        };
        Evaluation::simple(t, verdict, score, rec, self.last_reason.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::TrackSample;

    fn tick(t: f64, errors: u64) -> Tick {
        let s = |e| TrackSample {
            requests: 1000,
            errors: e,
            latency_buckets: vec![(0.1, 990), (0.25, 1000), (f64::INFINITY, 1000)],
            ..Default::default()
        };
        Tick {
            t,
            baseline: Some(s(1)),
            canary: Some(s(errors)),
        }
    }

    #[test]
    fn rolls_back_after_five_failed_checks_not_before() {
        let mut j = StaticThresholds::new();
        let mut first = None;
        for k in 1..=60 {
            let e = j.observe(&tick(k as f64 * 10.0, 20));
            if e.recommendation == Recommendation::Rollback && first.is_none() {
                first = Some(e.t);
            }
        }
        // 2% errors fail every 60 s check; the fifth check is at 300 s.
        assert_eq!(first, Some(300.0));
    }

    #[test]
    fn a_healthy_canary_passes_every_check() {
        let mut j = StaticThresholds::new();
        for k in 1..=60 {
            let e = j.observe(&tick(k as f64 * 10.0, 2));
            assert_eq!(e.verdict, Verdict::Healthy, "{:?}", e.reasons);
        }
    }
}
