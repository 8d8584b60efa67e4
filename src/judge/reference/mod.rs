//! Reference policies judged on the same data as rollbot's judge, so the
//! benchmark shows what each design choice buys:
//! - P1 `StaticThresholds`: Flagger-like fixed thresholds;
//! - P2 `ChiSquared`: a fixed-sample chi-squared test per 5-minute window,
//!   per-window and cumulative;
//! - P3 `Kayenta`: Mann–Whitney per-minute series, score bands;
//! - P4 `PooledEValue`: a sequential e-value on pooled counts that ignores
//!   over-dispersion.

pub(crate) mod chi_squared;
pub(crate) mod kayenta;
pub(crate) mod pooled_evalue;
pub(crate) mod static_thresholds;

pub use chi_squared::ChiSquared;
pub use kayenta::Kayenta;
pub use pooled_evalue::PooledEValue;
pub use static_thresholds::StaticThresholds;

use super::{Tick, TrackSample};

/// Both tracks of a tick when both are present with traffic.
pub(crate) fn both(tick: &Tick) -> Option<(&TrackSample, &TrackSample)> {
    match (&tick.baseline, &tick.canary) {
        (Some(b), Some(c)) if b.requests > 0 && c.requests > 0 => Some((b, c)),
        _ => None,
    }
}

/// Adds a tick's histogram into an accumulator with the same layout.
pub(crate) fn add_hist(acc: &mut Vec<(f64, u64)>, h: &[(f64, u64)]) {
    if h.is_empty() {
        return;
    }
    if acc.is_empty() {
        acc.extend(h.iter().map(|&(le, _)| (le, 0)));
    }
    if acc.len() != h.len() {
        return;
    }
    for (a, b) in acc.iter_mut().zip(h) {
        a.1 += b.1;
    }
}
