//! The baseline's self-check: is the baseline itself degraded compared with
//! its own usual level? Then the fault is likely external (a shared
//! dependency), the canary is judged only on how it differs, and promotion
//! waits.

use std::collections::VecDeque;

/// Tracks whether the baseline itself is degraded compared with its own
/// usual level (the last minute against everything before it that was not
/// degraded), to tell an external fault from a bad canary.
#[derive(Clone, Debug, Default)]
pub(super) struct BaselineWatch {
    usual_num: f64,
    usual_den: f64,
    /// (end of step, events, requests, degraded) over the last minute.
    recent: VecDeque<(f64, f64, f64, bool)>,
    pub degraded: bool,
}

/// "The last minute", in seconds rather than ticks, so it means the same
/// whatever the evidence step.
const WATCH_SECS: f64 = 60.0;

impl BaselineWatch {
    /// Adds the step ending at `t` seconds.
    pub fn push(&mut self, t: f64, num: f64, den: f64) {
        let (rn, rd) = self
            .recent
            .iter()
            .fold((num, den), |(a, b), &(_, n, d, _)| (a + n, b + d));
        self.degraded = if self.usual_den > rd && self.usual_num > 0.0 && rd > 0.0 {
            let usual = self.usual_num / self.usual_den;
            let expected = usual * rd;
            rn / rd > 2.0 * usual && (rn - expected) / (expected + 1.0).sqrt() > 4.0
        } else {
            false
        };
        self.recent.push_back((t, num, den, self.degraded));
        while self
            .recent
            .front()
            .is_some_and(|&(t0, ..)| t0 <= t - WATCH_SECS + 1e-9)
        {
            let (_, n, d, was_degraded) = self.recent.pop_front().unwrap_or_default();
            if !was_degraded {
                self.usual_num += n;
                self.usual_den += d;
            }
        }
    }

    pub fn usual(&self) -> f64 {
        if self.usual_den > 0.0 {
            self.usual_num / self.usual_den
        } else {
            f64::NAN
        }
    }

    pub fn recent_rate(&self) -> f64 {
        let (n, d) = self
            .recent
            .iter()
            .fold((0.0, 0.0), |(a, b), &(_, n, d, _)| (a + n, b + d));
        if d > 0.0 {
            n / d
        } else {
            f64::NAN
        }
    }
}
