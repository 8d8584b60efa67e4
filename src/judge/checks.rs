//! Custom checks and SLO burn rates, judged tick by tick (no I/O).
//!
//! A threshold check fires once its condition has held for `for`; a
//! comparison check is the judge's own sequential test
//! (`sequential::CompareTest`). A check without data is `no_data`: never
//! firing, and its `for` clock starts again.

use super::sequential::CompareTest;
use super::{fmt_duration, EffectKind, MetricClass, MetricEvidence, StatisticKind};
use crate::config_file::{CheckConfig, CheckSeverity, Condition};
use std::fmt;

/// What a check's query gave for one tick.
#[derive(Clone, Debug, PartialEq)]
pub enum CheckInput {
    /// Why there is no value (no series, a refused query).
    NoData(String),
    /// The value judged; `canary` when it came from the canary's series
    /// (`track="canary"`), else the query's series as they are.
    Value { value: f64, canary: bool },
    /// A comparison's two tracks.
    Pair { canary: f64, baseline: f64 },
}

/// A check's state at one tick, as the summary shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckState {
    Ok,
    /// The condition holds but not yet for `for` (or, for a comparison,
    /// the canary looks worse but is not shown beyond tolerance).
    Pending,
    Firing,
    NotEnoughData,
    NoData,
}

impl fmt::Display for CheckState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CheckState::Ok => "ok",
            CheckState::Pending => "pending",
            CheckState::Firing => "firing",
            CheckState::NotEnoughData => "not enough data",
            CheckState::NoData => "no_data",
        })
    }
}

/// One check at one tick.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckOutcome {
    pub name: String,
    pub severity: CheckSeverity,
    pub state: CheckState,
    /// "5 (canary)", "canary 120 vs baseline 100 (1.20×)", "no series".
    pub value: String,
    /// What makes it fire: "above 3 for 1m".
    pub condition: String,
    /// The judge's sentence when firing or pending.
    pub reason: Option<String>,
    pub evidence: MetricEvidence,
}

impl CheckOutcome {
    /// "crash loops: 5 (canary), above 3 for 1m — firing (auto_rollback)".
    pub fn line(&self) -> String {
        format!(
            "{}: {}; {} — {} ({})",
            self.name, self.value, self.condition, self.state, self.severity
        )
    }
}

/// The metric name of a check's evidence.
pub fn metric_name(check: &str) -> String {
    format!("check:{check}")
}

/// "5", "0.25", "1.2e6": values of any unit, short.
pub fn fmt_value(x: f64) -> String {
    if !x.is_finite() {
        return x.to_string();
    }
    let a = x.abs();
    if a != 0.0 && !(0.001..1e6).contains(&a) {
        format!("{x:.3e}")
    } else if (x - x.round()).abs() < 1e-9 {
        format!("{}", x.round())
    } else if a >= 100.0 {
        format!("{x:.1}")
    } else {
        let s = format!("{x:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// One `[[services.checks]]` over a rollout.
pub struct CheckJudge {
    config: CheckConfig,
    /// When the threshold condition started to hold (seconds since the start).
    held_since: Option<f64>,
    compare: CompareTest,
    ticks: u64,
}

impl CheckJudge {
    pub fn new(config: CheckConfig) -> CheckJudge {
        CheckJudge {
            config,
            held_since: None,
            compare: CompareTest::default(),
            ticks: 0,
        }
    }

    pub fn name(&self) -> &str {
        self.config.name()
    }

    /// Judges one tick's input at `t`; `warm_up`, `alpha` and `sustained`
    /// are the service's judge policy's (comparisons only).
    pub fn observe(
        &mut self,
        t: f64,
        input: &CheckInput,
        (warm_up, alpha, sustained): (f64, f64, f64),
    ) -> CheckOutcome {
        let hold = self.config.for_.map(|d| d.0.as_secs_f64());
        match self.config.condition() {
            Condition::Baseline { tolerance } => self.compare(
                t,
                input,
                tolerance,
                (warm_up, alpha, hold.unwrap_or(sustained)),
            ),
            condition => self.threshold(t, input, condition, hold.unwrap_or(0.0)),
        }
    }

    fn outcome(&self, state: CheckState, value: String, condition: String) -> CheckOutcome {
        CheckOutcome {
            name: self.name().to_string(),
            severity: self.config.severity,
            state,
            value,
            condition,
            reason: None,
            evidence: MetricEvidence {
                metric: metric_name(self.name()),
                critical: self.config.severity != CheckSeverity::LogOnly,
                canary: f64::NAN,
                baseline: f64::NAN,
                effect: f64::NAN,
                effect_kind: EffectKind::Count,
                interval: (f64::NAN, f64::NAN),
                tolerance: f64::NAN,
                statistic: 0.0,
                statistic_kind: StatisticKind::Rule,
                threshold: 0.0,
                canary_n: self.ticks,
                baseline_n: 0,
                class: match state {
                    CheckState::Ok => MetricClass::Pass,
                    CheckState::Pending => MetricClass::Borderline,
                    CheckState::Firing => MetricClass::Failing,
                    CheckState::NotEnoughData => MetricClass::NotEnoughData,
                    CheckState::NoData => MetricClass::NoData,
                },
                baseline_degraded: false,
            },
        }
    }

    fn threshold(
        &mut self,
        t: f64,
        input: &CheckInput,
        condition: Condition,
        hold: f64,
    ) -> CheckOutcome {
        let (word, bound) = match condition {
            Condition::Above(b) => ("above", b),
            Condition::Below(b) => ("below", b),
            Condition::Baseline { .. } => unreachable!("comparisons are judged apart"),
        };
        let wanted = if hold > 0.0 {
            format!(
                "fires {word} {} for {}",
                fmt_value(bound),
                fmt_duration(hold)
            )
        } else {
            format!("fires {word} {}", fmt_value(bound))
        };
        let (value, canary) = match input {
            CheckInput::Value { value, canary } => (*value, *canary),
            CheckInput::Pair { canary, .. } => (*canary, true),
            CheckInput::NoData(why) => {
                // No data is no news: the `for` clock starts again.
                self.held_since = None;
                return self.outcome(CheckState::NoData, why.clone(), wanted);
            }
        };
        self.ticks += 1;
        let holds = match condition {
            Condition::Above(b) => value > b,
            _ => value < bound,
        };
        let held = if holds {
            t - *self.held_since.get_or_insert(t)
        } else {
            self.held_since = None;
            0.0
        };
        let state = match (holds, held + 1e-9 >= hold) {
            (false, _) => CheckState::Ok,
            (true, true) => CheckState::Firing,
            (true, false) => CheckState::Pending,
        };
        // Said only when the series told: a query without a track label
        // may well select the canary's pods by itself.
        let (scope, on) = if canary {
            (" (canary)", " on the canary")
        } else {
            ("", "")
        };
        let shown = format!("{}{scope}", fmt_value(value));
        let mut out = self.outcome(state, shown, wanted);
        out.evidence.canary = value;
        out.evidence.effect = value;
        out.evidence.tolerance = bound;
        out.evidence.statistic = held;
        out.evidence.threshold = hold;
        out.reason = match state {
            CheckState::Firing => Some(format!(
                "check `{}`: {} is {word} {}{}{on}",
                self.name(),
                fmt_value(value),
                fmt_value(bound),
                if hold > 0.0 {
                    format!(" for {}", fmt_duration(held))
                } else {
                    String::new()
                }
            )),
            CheckState::Pending => Some(format!(
                "check `{}`: {} is {word} {}{on}, for {} so far; fires once it has lasted {}",
                self.name(),
                fmt_value(value),
                fmt_value(bound),
                fmt_duration(held),
                fmt_duration(hold)
            )),
            _ => None,
        };
        out
    }

    fn compare(
        &mut self,
        t: f64,
        input: &CheckInput,
        tolerance: f64,
        (warm_up, alpha, sustained): (f64, f64, f64),
    ) -> CheckOutcome {
        let wanted = format!(
            "fires when canary / baseline is shown above {}",
            super::fmt_ratio(tolerance)
        );
        let (c, b) = match input {
            CheckInput::Pair { canary, baseline } => (*canary, *baseline),
            CheckInput::Value { .. } => {
                return self.outcome(
                    CheckState::NoData,
                    "no series per track (the query must return one series with track=\"canary\" and one with track=\"baseline\")".into(),
                    wanted,
                )
            }
            CheckInput::NoData(why) => {
                return self.outcome(CheckState::NoData, why.clone(), wanted)
            }
        };
        let shown = format!(
            "canary {} vs baseline {} ({})",
            fmt_value(c),
            fmt_value(b),
            super::fmt_ratio(c / b)
        );
        if t <= warm_up {
            return self.outcome(
                CheckState::NotEnoughData,
                format!("{shown}, warming up until {}", fmt_duration(warm_up)),
                wanted,
            );
        }
        self.ticks += 1;
        self.compare.push(t, warm_up, c, b);
        let metric = metric_name(self.name());
        let head = format!("check `{}`: {shown}", self.name());
        let j = self
            .compare
            .judge(t, tolerance, alpha, sustained, (&metric, &head));
        let state = match j.class {
            MetricClass::Pass => CheckState::Ok,
            MetricClass::Borderline => CheckState::Pending,
            MetricClass::Failing => CheckState::Firing,
            MetricClass::NotEnoughData => CheckState::NotEnoughData,
            MetricClass::NoData => CheckState::NoData,
        };
        let mut out = self.outcome(state, shown, wanted);
        out.evidence = MetricEvidence {
            critical: self.config.severity != CheckSeverity::LogOnly,
            ..j.evidence
        };
        out.reason = j.reason;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(toml_text: &str) -> CheckJudge {
        CheckJudge::new(toml::from_str(toml_text).unwrap())
    }

    fn value(v: f64) -> CheckInput {
        CheckInput::Value {
            value: v,
            canary: true,
        }
    }

    const POLICY: (f64, f64, f64) = (300.0, 0.005, 20.0);

    #[test]
    fn a_threshold_fires_only_after_holding_for_its_duration() {
        let mut c = check("name = \"crash loops\"\nquery = \"q\"\nabove = 3\nfor = \"1m\"\n");
        let states: Vec<CheckState> = [1.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0]
            .iter()
            .enumerate()
            .map(|(i, v)| c.observe(10.0 * i as f64, &value(*v), POLICY).state)
            .collect();
        assert_eq!(states[0], CheckState::Ok);
        assert_eq!(&states[1..7], &[CheckState::Pending; 6]);
        assert_eq!(states[7], CheckState::Firing);
    }

    #[test]
    fn no_data_never_fires_and_restarts_the_clock() {
        let mut c = check("name = \"x\"\nquery = \"q\"\nbelow = 0.5\nfor = \"20s\"\n");
        assert_eq!(
            c.observe(0.0, &value(0.1), POLICY).state,
            CheckState::Pending
        );
        let gap = c.observe(10.0, &CheckInput::NoData("no series".into()), POLICY);
        assert_eq!(gap.state, CheckState::NoData);
        assert_eq!(gap.evidence.class, MetricClass::NoData);
        assert_eq!(
            c.observe(20.0, &value(0.1), POLICY).state,
            CheckState::Pending
        );
        assert_eq!(
            c.observe(30.0, &value(0.1), POLICY).state,
            CheckState::Pending
        );
        assert_eq!(
            c.observe(40.0, &value(0.1), POLICY).state,
            CheckState::Firing
        );
    }

    #[test]
    fn values_read_well() {
        assert_eq!(fmt_value(5.0), "5");
        assert_eq!(fmt_value(0.25), "0.25");
        assert_eq!(fmt_value(123.456), "123.5");
        assert_eq!(fmt_value(2.5e7), "2.500e7");
    }
}
