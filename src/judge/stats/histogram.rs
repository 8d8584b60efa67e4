//! Cumulative (Prometheus-style) latency histograms.

/// Prometheus' `histogram_quantile` on one cumulative histogram: linear
/// interpolation inside the bucket holding the rank; the +Inf bucket answers
/// with the largest finite bound. `None` when the histogram is empty.
pub fn histogram_quantile(q: f64, buckets: &[(f64, u64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut prev_le = 0.0;
    let mut prev_count = 0u64;
    for (i, &(le, count)) in buckets.iter().enumerate() {
        if count as f64 >= rank {
            if le.is_infinite() {
                return Some(if i == 0 { 0.0 } else { buckets[i - 1].0 });
            }
            if count == prev_count {
                return Some(le);
            }
            let frac = (rank - prev_count as f64) / (count - prev_count) as f64;
            return Some(prev_le + (le - prev_le) * frac);
        }
        prev_le = le;
        prev_count = count;
    }
    None
}

/// Count of observations above the bound `le` in a cumulative histogram,
/// `None` when the histogram has no bucket with that bound.
pub fn count_above(buckets: &[(f64, u64)], le: f64) -> Option<(u64, u64)> {
    let total = buckets.last()?.1;
    let cum = buckets.iter().find(|b| same_bound(b.0, le))?.1;
    Some((total.saturating_sub(cum), total))
}

/// Bucket bounds compare equal when they agree to 1e-9 relative.
pub fn same_bound(a: f64, b: f64) -> bool {
    a == b || (a.is_finite() && b.is_finite() && (a - b).abs() <= 1e-9 * a.abs().max(b.abs()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::stats::close;

    #[test]
    fn histogram_quantile_interpolates_like_prometheus() {
        let h = [(0.1, 50), (0.2, 100), (f64::INFINITY, 100)];
        assert!(close(histogram_quantile(0.5, &h).unwrap(), 0.1, 1e-12));
        assert!(close(histogram_quantile(0.75, &h).unwrap(), 0.15, 1e-12));
        // The first bucket interpolates from 0.
        assert!(close(histogram_quantile(0.25, &h).unwrap(), 0.05, 1e-12));
        // Rank in +Inf answers with the largest finite bound.
        let h = [(0.1, 50), (0.2, 90), (f64::INFINITY, 100)];
        assert_eq!(histogram_quantile(0.99, &h), Some(0.2));
        assert_eq!(
            histogram_quantile(0.5, &[(0.1, 0), (f64::INFINITY, 0)]),
            None
        );
        assert_eq!(count_above(&h, 0.1), Some((50, 100)));
        assert_eq!(count_above(&h, 0.3), None);
    }
}
