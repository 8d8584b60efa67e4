//! The baseline's own over-dispersion, learnt from its past ticks.

/// The baseline's own per-window over-dispersion for one count signal,
/// learnt from its past ticks only, so the null variance of the next tick is
/// fixed before that tick is seen.
///
/// It compares each tick with the one before, so a level shift (an external
/// fault, a diurnal trend) counts once instead of for every tick a running
/// mean takes to catch up, and the judge is not left blind after a fault.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BaselineDispersion {
    /// Exponentially weighted baseline events and requests (about the last
    /// 100 seconds): the running rate for `variance_rate`.
    ew_events: f64,
    ew_requests: f64,
    prev: Option<(f64, f64)>,
    /// When the last counts were pushed (`push_at`), to decay by time.
    last_t: Option<f64>,
    num: f64,
    den: f64,
}

/// Weight of the previous running rate per `DECAY_SECS`: by time, not per
/// tick, so the running rate means the same whatever the evidence step.
const DISPERSION_DECAY: f64 = 0.9;
const DECAY_SECS: f64 = 10.0;
/// Relative over-dispersion assumed when weighting ticks: pairs with many
/// expected events weigh more, but not without bound.
const DISPERSION_WEIGHT_PHI2: f64 = 0.09;

impl BaselineDispersion {
    /// Relative per-window variance φ² of the baseline's rate (0 until there
    /// is data). Per pair of consecutive ticks with rates r₀, r₁ and s events,
    /// δ = (r₁ − r₀)/r̄ (r̄ the pair's pooled rate, so |δ| ≤ 2 and one step
    /// adds at most 4), whose square exceeds its exact Poisson part
    /// c = (n₀ + n₁)²/(n₀n₁s) by 2σ² − σ⁴ for lognormal noise of log-σ σ
    /// (δ = 2·tanh of half the log ratio); inverted and turned into
    /// φ² = e^σ² − 1, the variance of that noise. Pairs are weighted by the
    /// inverse of their approximate variance.
    pub fn phi2(&self) -> f64 {
        if self.den <= 0.0 {
            return 0.0;
        }
        let d = (self.num / self.den).clamp(0.0, 1.0);
        let sigma2 = 1.0 - (1.0 - d).sqrt();
        sigma2.exp_m1()
    }

    /// A rate for the null variance of a tick whose baseline saw `events`
    /// of `requests`: the tick's own rate, or the running rate with one
    /// pseudo-event when higher, so a tick with few baseline events never
    /// claims little variance.
    pub fn variance_rate(&self, events: u64, requests: u64) -> f64 {
        let (e, n) = (events as f64, requests as f64);
        let own = if n > 0.0 { e / n } else { 0.0 };
        let running = (self.ew_events + e + 1.0) / (self.ew_requests + n).max(1.0);
        own.max(running).min(1.0)
    }

    /// The baseline's running rate before this tick, with one pseudo-event
    /// (`fallback` before any tick): sets the scale of the next tick's λ.
    pub fn running_rate(&self, fallback: f64) -> f64 {
        if self.ew_requests > 0.0 {
            ((self.ew_events + 1.0) / self.ew_requests).min(1.0)
        } else {
            fallback
        }
    }

    /// Adds the baseline's counts for one 10 s tick (after it was judged).
    pub fn push(&mut self, events: u64, requests: u64) {
        self.push_decayed(events, requests, DISPERSION_DECAY);
    }

    /// Adds the baseline's counts for the step ending at `t` seconds.
    pub fn push_at(&mut self, t: f64, events: u64, requests: u64) {
        let secs = self.last_t.map_or(DECAY_SECS, |last| (t - last).max(0.0));
        self.last_t = Some(t);
        self.push_decayed(events, requests, DISPERSION_DECAY.powf(secs / DECAY_SECS));
    }

    fn push_decayed(&mut self, events: u64, requests: u64, decay: f64) {
        let (e, n) = (events as f64, requests as f64);
        if n <= 0.0 {
            return;
        }
        if let Some((e0, n0)) = self.prev {
            let s = e + e0;
            if s > 0.0 {
                let delta = (e / n - e0 / n0) / (s / (n + n0));
                let c = (n + n0).powi(2) / (n * n0 * s);
                let m = s / 2.0;
                let w = (m / (1.0 + DISPERSION_WEIGHT_PHI2 * m)).powi(2);
                self.num += w * (delta * delta - c);
                self.den += w;
            }
        }
        self.prev = Some((e, n));
        self.ew_events = decay * self.ew_events + e;
        self.ew_requests = decay * self.ew_requests + n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::stats::close;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use rand_distr::StandardNormal;

    #[test]
    fn baseline_dispersion_recovers_lognormal_noise() {
        // A mean-1 lognormal with σ = 0.3 has variance e^0.09 − 1 = 0.0942
        // (textbook lognormal moments); with 10,000 events per tick the
        // Poisson part is negligible and the estimate should be close.
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let mut d = BaselineDispersion::default();
        for _ in 0..2000 {
            let z: f64 = rng.sample(StandardNormal);
            let rate = 0.01 * (0.3 * z - 0.045f64).exp();
            d.push((1e6 * rate).round() as u64, 1_000_000);
        }
        let want = 0.09f64.exp() - 1.0;
        assert!(
            (d.phi2() / want - 1.0).abs() < 0.15,
            "{} vs {want}",
            d.phi2()
        );
        // An external fault (1% → 5% for 60 ticks, then back) is two steps,
        // not noise: the estimate barely moves.
        let before = d.phi2();
        for k in 0..120 {
            let z: f64 = rng.sample(StandardNormal);
            let level = if k < 60 { 0.05 } else { 0.01 };
            d.push(
                (1e6 * level * (0.3 * z - 0.045f64).exp()).round() as u64,
                1_000_000,
            );
        }
        assert!((d.phi2() - before).abs() < 0.01, "{before} → {}", d.phi2());
        // No baseline events yet: the variance rate is still positive.
        assert!(BaselineDispersion::default().variance_rate(0, 1000) > 0.0);
        // A tick above the running rate uses its own rate.
        assert!(close(d.variance_rate(500, 10_000), 0.05, 1e-12));
    }
}
