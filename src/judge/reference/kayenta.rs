//! P3: a Kayenta-like judge. Per-minute series of each metric for canary and
//! baseline are compared with a Mann–Whitney U test at 98% confidence; a
//! significant difference larger than the tolerance (0.25 of the baseline's
//! level, measured by the Hodges–Lehmann shift) classifies the metric High or
//! Low, otherwise Pass; too few points is Nodata. The score is
//! 100 × Pass / (Pass + High + Low); a High critical metric gives 0. Judged
//! every 10 minutes after a 5-minute warm-up: ≥ 95 passes, ≥ 75 is marginal
//! (pause), below fails (rollback).

use super::super::stats::{histogram_quantile, mann_whitney, median};
use super::super::{Evaluation, Judge, Recommendation, Tick, Verdict};
use super::{add_hist, both};

#[derive(Default, Clone)]
struct Minute {
    requests: u64,
    errors: u64,
    hist: Vec<(f64, u64)>,
}

impl Minute {
    /// error rate, p50, p95, p99; None for an empty minute.
    fn values(&self) -> Option<[f64; 4]> {
        if self.requests == 0 {
            return None;
        }
        let q = |p| histogram_quantile(p, &self.hist).unwrap_or(f64::NAN);
        Some([
            self.errors as f64 / self.requests as f64,
            q(0.5),
            q(0.95),
            q(0.99),
        ])
    }
}

const METRICS: [&str; 4] = ["error_rate", "latency_p50", "latency_p95", "latency_p99"];

/// Kayenta-like judge (P3).
pub struct Kayenta {
    pub warm_up: f64,
    pub every: f64,
    pub confidence: f64,
    pub tolerance: f64,
    pub pass_score: f64,
    pub marginal_score: f64,
    minute_index: Option<i64>,
    cur: [Minute; 2],
    series: [Vec<[f64; 4]>; 2],
    next_judgement: f64,
    state: (Verdict, Recommendation, f64),
    rolled_back: bool,
    last_reason: String,
}

impl Default for Kayenta {
    fn default() -> Self {
        Self::new()
    }
}

impl Kayenta {
    pub fn new() -> Self {
        Kayenta {
            warm_up: 300.0,
            every: 600.0,
            confidence: 0.98,
            tolerance: 0.25,
            pass_score: 95.0,
            marginal_score: 75.0,
            minute_index: None,
            cur: [Minute::default(), Minute::default()],
            series: [Vec::new(), Vec::new()],
            next_judgement: 600.0,
            state: (Verdict::Healthy, Recommendation::None, 100.0),
            rolled_back: false,
            last_reason: "no judgement yet".into(),
        }
    }

    fn close_minute(&mut self) {
        if let (Some(c), Some(b)) = (self.cur[0].values(), self.cur[1].values()) {
            self.series[0].push(c);
            self.series[1].push(b);
        }
        self.cur = [Minute::default(), Minute::default()];
    }

    fn judge(&mut self) {
        let mut pass = 0;
        let mut fail = 0;
        let mut nodata = 0;
        let mut critical_high = false;
        let mut notes = Vec::new();
        for (m, name) in METRICS.iter().enumerate() {
            let c: Vec<f64> = self.series[0]
                .iter()
                .map(|v| v[m])
                .filter(|v| v.is_finite())
                .collect();
            let mut b: Vec<f64> = self.series[1]
                .iter()
                .map(|v| v[m])
                .filter(|v| v.is_finite())
                .collect();
            if c.len() < 3 || b.len() < 3 {
                nodata += 1;
                notes.push(format!("{name}: nodata"));
                continue;
            }
            let Some(mw) = mann_whitney(&c, &b) else {
                nodata += 1;
                continue;
            };
            let level = median(&mut b).abs();
            let significant = mw.p_two_sided < 1.0 - self.confidence;
            let high = significant && mw.hodges_lehmann > self.tolerance * level;
            if high {
                fail += 1;
                if m == 0 {
                    critical_high = true;
                }
                notes.push(format!("{name}: high (p = {:.4})", mw.p_two_sided));
            } else {
                // An increase-is-bad metric that went down (Low) passes.
                pass += 1;
            }
        }
        let total = pass + fail;
        if total == 0 || nodata * 2 >= METRICS.len() {
            self.state = (Verdict::NoData, Recommendation::None, f64::NAN);
            self.last_reason = "too little data for a judgement".into();
            return;
        }
        let score = if critical_high {
            0.0
        } else {
            100.0 * pass as f64 / total as f64
        };
        self.state = if score >= self.pass_score {
            (Verdict::Healthy, Recommendation::None, score)
        } else if score >= self.marginal_score {
            (Verdict::Borderline, Recommendation::Pause, score)
        } else {
            self.rolled_back = true;
            (Verdict::Failing, Recommendation::Rollback, score)
        };
        self.last_reason = format!(
            "score {score:.0}: {}",
            if notes.is_empty() {
                "all pass".into()
            } else {
                notes.join(", ")
            }
        );
    }
}

impl Judge for Kayenta {
    fn name(&self) -> &str {
        "P3 Kayenta-like"
    }

    fn observe(&mut self, tick: &Tick) -> Evaluation {
        let t = tick.t;
        if t > self.warm_up {
            let idx = ((t - 1e-6) / 60.0).floor() as i64;
            if self.minute_index.is_some_and(|m| m != idx) {
                self.close_minute();
            }
            self.minute_index = Some(idx);
            if let Some((b, c)) = both(tick) {
                for (m, s) in self.cur.iter_mut().zip([c, b]) {
                    m.requests += s.requests;
                    m.errors += s.errors;
                    add_hist(&mut m.hist, &s.latency_buckets);
                }
            }
            if (t / 60.0 - (t / 60.0).round()).abs() < 1e-9 {
                self.close_minute();
                self.minute_index = None;
            }
        }
        if t + 1e-9 >= self.next_judgement {
            self.next_judgement += self.every;
            if !self.rolled_back {
                self.judge();
            }
        }
        let (v, r, s) = self.state;
        Evaluation::simple(t, v, s, r, self.last_reason.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::TrackSample;

    fn tick(t: f64, canary_errors: u64) -> Tick {
        let s = |e| TrackSample {
            requests: 1000,
            errors: e,
            latency_buckets: vec![(0.1, 500), (0.25, 990), (f64::INFINITY, 1000)],
            ..Default::default()
        };
        Tick {
            t,
            baseline: Some(s(1 + (t as u64 / 10) % 2)),
            canary: Some(s(canary_errors + (t as u64 / 10) % 3)),
        }
    }

    #[test]
    fn judges_only_every_ten_minutes_and_fails_on_a_critical_high() {
        let mut j = Kayenta::new();
        let mut first = None;
        for k in 1..=360 {
            let e = j.observe(&tick(k as f64 * 10.0, 10));
            if e.recommendation == Recommendation::Rollback && first.is_none() {
                first = Some(e.t);
            }
        }
        // Five per-minute points after warm-up at 600 s: U = 25 of 25,
        // p = 0.0122 < 0.02 (normal approximation), error rate high.
        assert_eq!(first, Some(600.0));
    }

    #[test]
    fn equal_tracks_pass() {
        let mut j = Kayenta::new();
        for k in 1..=360 {
            let e = j.observe(&tick(k as f64 * 10.0, 0));
            assert_ne!(
                e.recommendation,
                Recommendation::Rollback,
                "{:?}",
                e.reasons
            );
        }
    }
}
