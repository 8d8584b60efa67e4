//! When a canary's trouble began, estimated after the fact: the judge
//! decides once the evidence is sufficient, which is later than the fault
//! started. The gap is the time to detect, one of the rollback KPIs
//! (`rollbot report`, `/metrics`).
//!
//! Each tick, each count signal (5xx, and requests slower than each
//! histogram bound) gets the canary's excess over what the baseline's rate
//! in the same tick predicts, scaled by its Poisson noise. The onset is the
//! change point of that series (the split where the mean after is most
//! clearly above the mean before); of all signals, the one with the
//! clearest shift is the one that went wrong.

use crate::judge::stats::count_above;
use crate::judge::{Tick, TrackSample};
use std::collections::VecDeque;

/// Six hours of 10-second ticks; an older onset is past anything a
/// rollout's detection could be judged on.
const KEEP: usize = 2160;

#[derive(Default)]
pub struct OnsetEstimate {
    /// Per tick: its `t`, and the scaled excess of each signal (5xx
    /// first, then the canary's finite histogram bounds in order).
    ticks: VecDeque<(f64, Vec<f64>)>,
}

/// (events, requests) of each signal in a sample.
fn signals(s: &TrackSample) -> Vec<(u64, u64)> {
    let mut out = vec![(s.errors, s.requests)];
    for &(le, _) in s.latency_buckets.iter().filter(|b| b.0.is_finite()) {
        out.extend(count_above(&s.latency_buckets, le));
    }
    out
}

impl OnsetEstimate {
    /// Adds one tick; ticks without both tracks say nothing.
    pub fn push(&mut self, tick: &Tick) {
        let (Some(c), Some(b)) = (&tick.canary, &tick.baseline) else {
            return;
        };
        if c.requests == 0 || b.requests == 0 {
            return;
        }
        let (cs, bs) = (signals(c), signals(b));
        let excess = cs
            .iter()
            .zip(bs.iter().chain(std::iter::repeat(&(0, 0))))
            .map(|(&(e_c, n_c), &(e_b, n_b))| {
                if n_c == 0 || n_b == 0 {
                    return 0.0;
                }
                let mu = e_b as f64 / n_b as f64 * n_c as f64;
                (e_c as f64 - mu) / (mu + 1.0).sqrt()
            })
            .collect();
        self.ticks.push_back((tick.t, excess));
        if self.ticks.len() > KEEP {
            self.ticks.pop_front();
        }
    }

    /// The `t` of the first tick of the canary's trouble, or `None` when
    /// no signal shows the canary worse than the baseline.
    pub fn estimate(&self) -> Option<f64> {
        let width = self.ticks.iter().map(|t| t.1.len()).max()?;
        let mut best: Option<(f64, f64)> = None;
        for k in 0..width {
            let xs: Vec<f64> = self
                .ticks
                .iter()
                .map(|t| t.1.get(k).copied().unwrap_or(0.0))
                .collect();
            if let Some((stat, i)) = shift(&xs) {
                if best.is_none_or(|(b, _)| stat > b) {
                    best = Some((stat, self.ticks[i].0));
                }
            }
        }
        best.map(|(_, t)| t)
    }
}

/// Where the mean of `xs` shifted up, and how clearly: the split that
/// maximises the two-sample statistic (mean after − mean before) ×
/// √(n_before · n_after / n). Before the first tick the mean is taken as
/// zero, what the baseline predicts, so a canary bad from its start is
/// dated at its start.
fn shift(xs: &[f64]) -> Option<(f64, usize)> {
    let n = xs.len();
    let total: f64 = xs.iter().sum();
    let mut before = 0.0;
    let mut best: Option<(f64, usize)> = None;
    for (i, x) in xs.iter().enumerate() {
        let (nb, na) = (i as f64, (n - i) as f64);
        let after = (total - before) / na;
        let stat = if i == 0 {
            after * na.sqrt()
        } else {
            (after - before / nb) * (nb * na / n as f64).sqrt()
        };
        if after > 0.0 && stat > 0.0 && best.is_none_or(|(b, _)| stat > b) {
            best = Some((stat, i));
        }
        before += x;
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(requests: u64, errors: u64) -> TrackSample {
        TrackSample {
            requests,
            errors,
            ..Default::default()
        }
    }

    fn tick(t: f64, canary_errors: u64) -> Tick {
        Tick {
            t,
            baseline: Some(sample(1000, 5)),
            canary: Some(sample(1000, canary_errors)),
        }
    }

    #[test]
    fn the_onset_is_where_the_canary_started_to_fail() {
        let mut o = OnsetEstimate::default();
        // Healthy with noise for 5 minutes, then 5% errors from t = 310.
        let noise = [3, 7, 5, 4, 8, 6, 2, 5, 9, 4];
        for i in 0..30 {
            o.push(&tick(10.0 * (i + 1) as f64, noise[i % noise.len()]));
        }
        for i in 30..42 {
            o.push(&tick(10.0 * (i + 1) as f64, 50));
        }
        assert_eq!(o.estimate(), Some(310.0));
    }

    #[test]
    fn slow_requests_date_a_latency_fault() {
        let mut o = OnsetEstimate::default();
        let lat = |slow: u64| vec![(0.5, 1000 - slow), (f64::INFINITY, 1000)];
        for i in 1..=20 {
            let slow = if i > 12 { 200 } else { 10 };
            o.push(&Tick {
                t: 10.0 * i as f64,
                baseline: Some(TrackSample {
                    requests: 1000,
                    errors: 5,
                    latency_buckets: lat(10),
                    ..Default::default()
                }),
                canary: Some(TrackSample {
                    requests: 1000,
                    errors: 5,
                    latency_buckets: lat(slow),
                    ..Default::default()
                }),
            });
        }
        assert_eq!(o.estimate(), Some(130.0));
    }

    #[test]
    fn a_canary_bad_from_its_start_is_dated_at_its_start() {
        let mut o = OnsetEstimate::default();
        for i in 1..=12 {
            o.push(&tick(10.0 * i as f64, 40 + (i % 3)));
        }
        assert_eq!(o.estimate(), Some(10.0));
    }

    #[test]
    fn a_canary_no_worse_than_its_baseline_has_no_onset() {
        let mut o = OnsetEstimate::default();
        for i in 1..=10 {
            o.push(&tick(10.0 * i as f64, 0));
        }
        assert_eq!(o.estimate(), None);
    }
}
