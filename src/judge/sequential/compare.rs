//! A custom check that compares canary with baseline (`compare =
//! "baseline"`): the same restarted, anytime-valid paired t-test and
//! sustained rule as CPU and memory, on whatever the check's query returns
//! for each track, so a check gets the judge's guarantees rather than a
//! second statistics engine.

use super::super::stats::PairSums;
use super::super::{MetricClass, MetricEvidence};
use super::signals::RatioSignal;

/// One comparison check's evidence over a rollout.
#[derive(Clone, Debug, Default)]
pub struct CompareTest {
    signal: RatioSignal<PairSums>,
}

/// What a comparison check's test says at one tick.
pub struct CompareJudgement {
    pub class: MetricClass,
    pub evidence: MetricEvidence,
    /// The judge's sentence for a borderline or failing comparison.
    pub reason: Option<String>,
}

impl CompareTest {
    /// Adds one tick's values; `origin` is the end of the judge's warm-up
    /// (earlier ticks are not pushed: the canary is still starting).
    pub fn push(&mut self, t: f64, origin: f64, canary: f64, baseline: f64) {
        self.signal.push(t, origin, |s| s.push(canary, baseline));
    }

    /// Judges "canary ≤ `tolerance` × baseline" at `t` with the judge's
    /// evidence bar ln(1/α) and the sustained rule. `head` names the check
    /// and its values for the reason.
    pub fn judge(
        &mut self,
        t: f64,
        tolerance: f64,
        alpha: f64,
        sustained: f64,
        (metric, head): (&str, &str),
    ) -> CompareJudgement {
        let n = self.signal.n();
        // Like CPU and memory: three ticks before anything is said.
        let j = self
            .signal
            .judge(t, tolerance, (1.0 / alpha).ln(), sustained, n >= 3);
        let evidence = j.evidence(metric, true, tolerance, (n, n), false);
        let reason = j.reason(head, tolerance, true);
        CompareJudgement {
            class: j.class,
            evidence,
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(canary: impl Fn(u64) -> f64) -> Vec<MetricClass> {
        let mut test = CompareTest::default();
        (1..=60)
            .map(|i| {
                let t = 300.0 + 10.0 * i as f64;
                // Baseline around 100 with some noise; same noise on both.
                let noise = ((i * 7919) % 13) as f64 - 6.0;
                test.push(t, 300.0, canary(i) + noise, 100.0 + noise);
                test.judge(t, 1.2, 0.005, 20.0, ("check:x", "x")).class
            })
            .collect()
    }

    #[test]
    fn a_canary_within_tolerance_never_fails_and_one_far_beyond_it_does() {
        let same = run(|i| 100.0 + (i % 3) as f64);
        assert!(!same.contains(&MetricClass::Failing), "{same:?}");
        let worse = run(|_| 200.0);
        assert_eq!(worse.last(), Some(&MetricClass::Failing), "{worse:?}");
        // The sustained rule: never failing on the tick it first shows.
        let first = worse
            .iter()
            .position(|c| *c == MetricClass::Failing)
            .unwrap();
        assert_eq!(worse[first - 1], MetricClass::Borderline, "{worse:?}");
    }
}
