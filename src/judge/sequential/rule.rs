//! Rule-based signals: readiness-probe failures and an open circuit
//! breaker are facts, not estimates, so they need no test, only a rule.

use super::super::MetricClass;

/// A rule-based signal (readiness failures, circuit breaker): bad while the
/// canary shows it and the baseline does not, failing once sustained.
#[derive(Clone, Debug, Default)]
pub(super) struct RuleSignal {
    seen: bool,
    pub since: Option<f64>,
    pub baseline_too: bool,
    pub canary_count: u64,
    pub last_canary: u64,
}

impl RuleSignal {
    pub fn push(&mut self, t: f64, canary: Option<u64>, baseline: Option<u64>) {
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

    pub fn class(&self, t: f64, sustained_for: f64) -> MetricClass {
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
