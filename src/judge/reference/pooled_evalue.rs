//! P4: a plain sequential e-value on pooled request counts. Conditional on
//! the total errors, each error falls on the canary with probability equal to
//! the canary's share of requests when the tracks are equal; the alternative
//! mixes that probability over a beta prior (a beta-binomial mixture). Valid
//! only if every request is independent: it has no defence against
//! over-dispersion, which is what it is here to show. α = 0.01, with the
//! same 5-minute warm-up as rollbot's judge so the comparison measures the
//! statistic, not the warm-up.

use super::super::stats::beta_binomial_log_e;
use super::super::{fmt_pct, Evaluation, Judge, Recommendation, Tick, Verdict};
use super::both;

/// Pooled beta-binomial e-value (P4).
pub struct PooledEValue {
    pub alpha: f64,
    pub warm_up: f64,
    counts: [u64; 4],
    rolled_back: bool,
}

impl Default for PooledEValue {
    fn default() -> Self {
        Self::new()
    }
}

impl PooledEValue {
    pub fn new() -> Self {
        PooledEValue {
            alpha: 0.01,
            warm_up: 300.0,
            counts: [0; 4],
            rolled_back: false,
        }
    }

    /// The e-value so far (1 when the canary is not the worse track).
    pub fn e_value(&self) -> f64 {
        let [ec, nc, eb, nb] = self.counts;
        let total = ec + eb;
        if total == 0 || nc == 0 || nb == 0 {
            return 1.0;
        }
        let p0 = nc as f64 / (nc + nb) as f64;
        // Prior mean p0 with the weight of one pseudo-error on the canary.
        let (a, b) = (1.0, (1.0 - p0) / p0);
        let e = beta_binomial_log_e(ec, total, p0, a, b).exp();
        if (ec as f64) / (total as f64) > p0 {
            e
        } else {
            e.min(1.0)
        }
    }
}

impl Judge for PooledEValue {
    fn name(&self) -> &str {
        "P4 pooled e-value"
    }

    fn observe(&mut self, tick: &Tick) -> Evaluation {
        let t = tick.t;
        if t > self.warm_up {
            if let Some((b, c)) = both(tick) {
                self.counts[0] += c.errors;
                self.counts[1] += c.requests;
                self.counts[2] += b.errors;
                self.counts[3] += b.requests;
            }
        }
        let e = self.e_value();
        if e >= 1.0 / self.alpha {
            self.rolled_back = true;
        }
        let [ec, nc, eb, nb] = self.counts;
        let reason = format!(
            "pooled canary 5xx {} vs baseline {}, e-value {:.1} (rollback at {:.0})",
            fmt_pct(ec as f64 / nc.max(1) as f64),
            fmt_pct(eb as f64 / nb.max(1) as f64),
            e,
            1.0 / self.alpha
        );
        let (v, r, s) = if self.rolled_back {
            (Verdict::Failing, Recommendation::Rollback, 0.0)
        } else if e >= (1.0 / self.alpha).sqrt() {
            (Verdict::Borderline, Recommendation::Pause, 50.0)
        } else {
            (Verdict::Healthy, Recommendation::None, 100.0)
        };
        Evaluation::simple(t, v, s, r, reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::TrackSample;

    #[test]
    fn e_value_matches_the_beta_binomial_closed_form() {
        // Canary 1/2 of the traffic: p0 = ½, prior Beta(1, 1). 10 of 10
        // errors on the canary: e = 2^10/11 = 93.09 (closed form), short of
        // the 100 needed at α = 0.01.
        let mut j = PooledEValue::new();
        let s = |e| TrackSample {
            requests: 1000,
            errors: e,
            ..Default::default()
        };
        let e = j.observe(&Tick {
            t: 310.0,
            baseline: Some(s(0)),
            canary: Some(s(10)),
        });
        assert!(
            (j.e_value() - 1024.0 / 11.0).abs() < 1e-6,
            "{}",
            j.e_value()
        );
        assert_eq!(e.recommendation, Recommendation::Pause);
        // One more error on the canary: 2^11/12 = 170.7 ≥ 100 → rollback.
        let e = j.observe(&Tick {
            t: 320.0,
            baseline: Some(s(0)),
            canary: Some(s(1)),
        });
        assert_eq!(e.recommendation, Recommendation::Rollback);
    }
}
