//! P2: the fixed-sample rule from the design notes: a chi-squared test of
//! canary vs baseline errors per 5-minute window (p < 0.05, canary worse,
//! canary n ≥ 1000), rollback after three bad windows in a row, after a
//! 5-minute warm-up. The per-window variant tests each window's counts; the
//! cumulative variant re-tests all counts since warm-up at each window end.

use super::super::stats::chi_squared_2x2;
use super::super::{fmt_pct, thousands, Evaluation, Judge, Recommendation, Tick, Verdict};
use super::both;

/// Chi-squared window rule (P2).
pub struct ChiSquared {
    cumulative: bool,
    pub warm_up: f64,
    pub window: f64,
    pub p_value: f64,
    pub min_canary: u64,
    pub windows_in_a_row: u32,
    window_end: f64,
    w: [u64; 4],
    all: [u64; 4],
    bad_in_a_row: u32,
    rolled_back: bool,
    last_reason: String,
}

impl ChiSquared {
    fn make(cumulative: bool) -> Self {
        ChiSquared {
            cumulative,
            warm_up: 300.0,
            window: 300.0,
            p_value: 0.05,
            min_canary: 1000,
            windows_in_a_row: 3,
            window_end: 600.0,
            w: [0; 4],
            all: [0; 4],
            bad_in_a_row: 0,
            rolled_back: false,
            last_reason: "warming up".into(),
        }
    }

    /// Each 5-minute window tested on its own counts.
    pub fn per_window() -> Self {
        Self::make(false)
    }

    /// All counts since warm-up re-tested at each window end.
    pub fn cumulative() -> Self {
        Self::make(true)
    }
}

impl Judge for ChiSquared {
    fn name(&self) -> &str {
        if self.cumulative {
            "P2 chi² cumulative"
        } else {
            "P2 chi² per window"
        }
    }

    fn observe(&mut self, tick: &Tick) -> Evaluation {
        let t = tick.t;
        if t > self.warm_up {
            if let Some((b, c)) = both(tick) {
                for acc in [&mut self.w, &mut self.all] {
                    acc[0] += c.errors;
                    acc[1] += c.requests;
                    acc[2] += b.errors;
                    acc[3] += b.requests;
                }
            }
            if t + 1e-9 >= self.window_end {
                self.window_end += self.window;
                let [ec, nc, eb, nb] = if self.cumulative { self.all } else { self.w };
                let (_, p) = chi_squared_2x2(ec, nc, eb, nb);
                let (rc, rb) = (ec as f64 / nc.max(1) as f64, eb as f64 / nb.max(1) as f64);
                let bad = p < self.p_value && rc > rb && nc >= self.min_canary;
                self.bad_in_a_row = if bad { self.bad_in_a_row + 1 } else { 0 };
                if self.bad_in_a_row >= self.windows_in_a_row {
                    self.rolled_back = true;
                }
                self.last_reason = format!(
                    "window ending {t:.0}s: canary {} vs baseline {} over {} canary requests, p = {p:.3}; {} bad window(s) in a row",
                    fmt_pct(rc),
                    fmt_pct(rb),
                    thousands(nc),
                    self.bad_in_a_row
                );
                self.w = [0; 4];
            }
        }
        let (verdict, rec, score) = if self.rolled_back {
            (Verdict::Failing, Recommendation::Rollback, 0.0)
        } else if self.bad_in_a_row > 0 {
            (Verdict::Borderline, Recommendation::Pause, 50.0)
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

    fn tick(t: f64, canary_errors: u64) -> Tick {
        let s = |n, e| TrackSample {
            requests: n,
            errors: e,
            ..Default::default()
        };
        Tick {
            t,
            baseline: Some(s(10_000, 10)),
            canary: Some(s(1_000, canary_errors)),
        }
    }

    #[test]
    fn needs_three_bad_windows_after_warm_up() {
        for mut j in [ChiSquared::per_window(), ChiSquared::cumulative()] {
            let mut first = None;
            for k in 1..=360 {
                let e = j.observe(&tick(k as f64 * 10.0, 5));
                if e.recommendation == Recommendation::Rollback && first.is_none() {
                    first = Some(e.t);
                }
            }
            // Warm-up 300 s, windows end at 600, 900, 1200: the third bad one.
            assert_eq!(first, Some(1200.0), "{}", j.name());
        }
    }

    #[test]
    fn an_equal_canary_is_not_rolled_back() {
        let mut j = ChiSquared::per_window();
        for k in 1..=360 {
            let e = j.observe(&tick(k as f64 * 10.0, 1));
            assert_ne!(e.recommendation, Recommendation::Rollback);
        }
    }
}
