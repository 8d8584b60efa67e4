//! `JudgePolicy`: a service's judge settings, the `judge` table of its config.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A duration in seconds, written in config as "90s", "5m", "1h", "1m30s" or a
/// plain number of seconds.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd, Default)]
pub struct DurationSecs(pub f64);

impl DurationSecs {
    pub fn secs(self) -> f64 {
        self.0
    }

    /// Parses "90s", "5m", "1h30m", "250ms" or "45".
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("empty duration; write e.g. \"5m\" or \"90s\"".into());
        }
        if let Ok(v) = s.parse::<f64>() {
            return Ok(DurationSecs(v));
        }
        let mut total = 0.0;
        let mut num = String::new();
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            if c.is_ascii_digit() || c == '.' {
                num.push(c);
                continue;
            }
            let mut unit = c.to_string();
            while let Some(&n) = chars.peek() {
                if n.is_ascii_alphabetic() {
                    unit.push(n);
                    chars.next();
                } else {
                    break;
                }
            }
            let v: f64 = num.parse().map_err(|_| {
                format!("bad duration {s:?}; write e.g. \"5m\", \"90s\" or \"1h30m\"")
            })?;
            num.clear();
            total += v * match unit.as_str() {
                "ms" => 0.001,
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                _ => {
                    return Err(format!(
                        "unknown unit {unit:?} in duration {s:?}; use ms, s, m or h"
                    ))
                }
            };
        }
        if !num.is_empty() {
            return Err(format!(
                "duration {s:?} ends without a unit; write e.g. \"5m\""
            ));
        }
        Ok(DurationSecs(total))
    }
}

impl fmt::Display for DurationSecs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&super::fmt_duration(self.0))
    }
}

impl Serialize for DurationSecs {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for DurationSecs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = DurationSecs;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as \"5m\", \"90s\" or a number of seconds")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<DurationSecs, E> {
                DurationSecs::parse(v).map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<DurationSecs, E> {
                Ok(DurationSecs(v as f64))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<DurationSecs, E> {
                Ok(DurationSecs(v as f64))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<DurationSecs, E> {
                Ok(DurationSecs(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// A signal the judge watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// 5xx rate.
    Errors,
    /// Latency distribution and tail, from the histograms.
    Latency,
    /// CPU utilisation.
    Cpu,
    /// Memory utilisation.
    Memory,
    /// Readiness-probe failures.
    Readiness,
    /// Circuit breaker open.
    CircuitBreaker,
}

/// Per-signal tolerance: the smallest degradation worth a rollback, as a
/// ratio canary / baseline (1.1 = "at least 10% worse").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tolerance {
    /// Error-rate ratio. Default 1.05.
    pub errors: f64,
    /// Ratio of the share of requests slower than each tested latency bound.
    /// Default 1.1.
    pub latency: f64,
    /// CPU utilisation ratio. Default 1.2.
    pub cpu: f64,
    /// Memory utilisation ratio. Default 1.2.
    pub memory: f64,
}

impl Default for Tolerance {
    fn default() -> Self {
        Tolerance {
            errors: 1.05,
            latency: 1.1,
            cpu: 1.2,
            memory: 1.2,
        }
    }
}

/// How rollbot's judge decides for one service (`[services.NAME.judge]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JudgePolicy {
    /// Time after the rollout starts during which metrics are ignored (cold
    /// caches, JIT, connection pools). "5m", "90s" or seconds. Default "5m".
    pub warm_up: DurationSecs,
    /// Chance that a canary no worse than its baseline is ever rolled back
    /// because of one critical signal, however long it is watched (the
    /// tests are anytime-valid). Default 0.005.
    pub alpha: f64,
    /// Smallest degradation worth a rollback, per signal (ratios). A signal
    /// that is significantly worse but not beyond tolerance asks a human.
    pub tolerance: Tolerance,
    /// Score below which the judge recommends an automatic rollback
    /// (0–100, 100 = no sign of harm). Default 30.
    pub rollback_below: f64,
    /// Score below which the judge pauses the rollout and asks a human.
    /// Must be above `rollback_below`. Default 75.
    pub pause_below: f64,
    /// Signals that can trigger a rollback on their own. The others (by
    /// default cpu and memory) need confirmation from a critical signal.
    /// Default ["errors", "latency", "readiness", "circuit_breaker"].
    pub critical: Vec<Signal>,
    /// Canary requests after warm-up before the judge says anything but
    /// "healthy" or "no data". Default 500.
    pub min_canary_requests: u64,
    /// How long a failing condition must hold, from the first evaluation that
    /// shows it, before the judge recommends a rollback. Default "20s".
    pub sustained_for: DurationSecs,
    /// Time after warm-up before the judge may recommend promotion.
    /// Default "10m".
    pub promote_after: DurationSecs,
    /// Promote only once the interval for every critical ratio lies below
    /// this (i.e. a degradation this large is ruled out). Default 1.5.
    pub promote_margin: f64,
    /// Latency quantiles of the baseline whose nearest histogram buckets are
    /// tested (the body and the tail). Default [0.5, 0.95, 0.99].
    pub latency_quantiles: Vec<f64>,
    /// Per-window noise the canary is assumed to have of its own at least,
    /// as a relative standard deviation of its error rate (and of its share
    /// of slow requests) from one tick to the next: 0.3 = 30%. The judge
    /// learns the baseline's noise and assumes the canary's is no smaller;
    /// this floor protects a canary noisier than its baseline (fewer pods,
    /// a cold cache). Rollbacks stay within `alpha` as long as the canary's
    /// own noise is below the larger of the two. Higher is safer but slower
    /// on services with many errors per tick; 0 trusts the baseline's
    /// noise alone. Default 0.3.
    pub min_dispersion: f64,
}

impl Default for JudgePolicy {
    fn default() -> Self {
        JudgePolicy {
            warm_up: DurationSecs(300.0),
            alpha: 0.005,
            tolerance: Tolerance::default(),
            rollback_below: 30.0,
            pause_below: 75.0,
            critical: vec![
                Signal::Errors,
                Signal::Latency,
                Signal::Readiness,
                Signal::CircuitBreaker,
            ],
            min_canary_requests: 500,
            sustained_for: DurationSecs(20.0),
            promote_after: DurationSecs(600.0),
            promote_margin: 1.5,
            latency_quantiles: vec![0.5, 0.95, 0.99],
            min_dispersion: 0.3,
        }
    }
}

impl JudgePolicy {
    /// Parses a policy from TOML (the `judge` table alone) and validates it.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let p: JudgePolicy = toml::from_str(text).map_err(|e| format!("judge policy: {e}"))?;
        p.validate()?;
        Ok(p)
    }

    pub fn is_critical(&self, s: Signal) -> bool {
        self.critical.contains(&s)
    }

    /// Checks that the settings make sense together; the message says how to
    /// fix them.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.alpha > 0.0 && self.alpha < 0.5) {
            return Err(format!(
                "alpha must be between 0 and 0.5 (it is {}); write e.g. alpha = 0.005",
                self.alpha
            ));
        }
        if !(0.0..=100.0).contains(&self.rollback_below)
            || !(0.0..=100.0).contains(&self.pause_below)
        {
            return Err("rollback_below and pause_below are scores from 0 to 100; write e.g. rollback_below = 30, pause_below = 75".into());
        }
        if self.rollback_below >= self.pause_below {
            return Err(format!(
                "rollback_below must be lower than pause_below (they are {} and {}); write e.g. rollback_below = 30, pause_below = 75",
                self.rollback_below, self.pause_below
            ));
        }
        for (name, v) in [
            ("errors", self.tolerance.errors),
            ("latency", self.tolerance.latency),
            ("cpu", self.tolerance.cpu),
            ("memory", self.tolerance.memory),
        ] {
            if !(v >= 1.0 && v.is_finite()) {
                return Err(format!(
                    "tolerance.{name} is a ratio canary/baseline and must be at least 1 (it is {v}); write e.g. tolerance.{name} = 1.1 for \"at least 10% worse\""
                ));
            }
        }
        for (name, d) in [
            ("warm_up", self.warm_up),
            ("sustained_for", self.sustained_for),
            ("promote_after", self.promote_after),
        ] {
            if !(d.0 >= 0.0 && d.0.is_finite()) {
                return Err(format!(
                    "{name} must be a duration of zero or more; write e.g. {name} = \"5m\""
                ));
            }
        }
        if self.promote_margin.is_nan() || self.promote_margin <= 1.0 {
            return Err(format!(
                "promote_margin must be above 1 (it is {}); write e.g. promote_margin = 1.5 to promote once a 1.5× degradation is ruled out",
                self.promote_margin
            ));
        }
        if self
            .latency_quantiles
            .iter()
            .any(|q| !(*q > 0.0 && *q < 1.0))
        {
            return Err("latency_quantiles must lie strictly between 0 and 1; write e.g. latency_quantiles = [0.5, 0.95, 0.99]".into());
        }
        if !(self.min_dispersion >= 0.0 && self.min_dispersion <= 5.0) {
            return Err(format!(
                "min_dispersion is the canary's own per-window noise as a relative standard deviation, from 0 to 5 (it is {}); write e.g. min_dispersion = 0.3 for 30%",
                self.min_dispersion
            ));
        }
        if self.critical.is_empty() {
            return Err("critical must name at least one signal, or nothing could ever roll back; write e.g. critical = [\"errors\", \"latency\"]".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_policy_is_valid_and_round_trips_through_toml() {
        let p = JudgePolicy::default();
        p.validate().unwrap();
        let text = toml::to_string(&p).unwrap();
        assert_eq!(JudgePolicy::from_toml(&text).unwrap(), p);
    }

    #[test]
    fn durations_read_as_people_write_them() {
        let p = JudgePolicy::from_toml("warm_up = \"1m30s\"\nsustained_for = 45\n").unwrap();
        assert_eq!(p.warm_up.secs(), 90.0);
        assert_eq!(p.sustained_for.secs(), 45.0);
        assert_eq!(DurationSecs::parse("2h").unwrap().secs(), 7200.0);
        assert!(DurationSecs::parse("5 minutes")
            .unwrap_err()
            .contains("unknown unit"));
        assert!(DurationSecs::parse("5").is_ok());
    }

    #[test]
    fn bad_policies_are_refused_with_a_fix() {
        let e = JudgePolicy::from_toml("rollback_below = 80\npause_below = 70\n").unwrap_err();
        assert!(
            e.contains("rollback_below must be lower than pause_below"),
            "{e}"
        );
        assert!(e.contains("write e.g."), "{e}");
        let e = JudgePolicy::from_toml("[tolerance]\nerrors = 0.9\n").unwrap_err();
        assert!(e.contains("tolerance.errors"), "{e}");
        let e = JudgePolicy::from_toml("alpah = 0.01\n").unwrap_err();
        assert!(e.contains("unknown field"), "{e}");
        let e = JudgePolicy::from_toml("critical = [\"errrors\"]\n").unwrap_err();
        assert!(e.contains("unknown variant"), "{e}");
        let e = JudgePolicy::from_toml("min_dispersion = -0.1\n").unwrap_err();
        assert!(
            e.contains("min_dispersion") && e.contains("write e.g."),
            "{e}"
        );
        assert!(JudgePolicy::from_toml("min_dispersion = 0\n").is_ok());
    }
}
