//! The count test behind the 5xx rate and the share of slow requests.

/// Effects mixed by the count test, in standard deviations of one tick's
/// null count: from 8 (a jump far beyond the noise, decided in a tick or
/// two) to 0.125 (an eighth of a tick's noise, decided over a rollout). Each
/// tick's λ is the effect over its own standard deviation, so the mixture
/// stays short (its cost is ln 7 ≈ 1.9 nats) whatever a service's traffic,
/// and a tick with far more variance (an external fault) weighs no more
/// than any other.
pub const COUNT_EFFECTS: [f64; 7] = [8.0, 4.0, 2.0, 1.0, 0.5, 0.25, 0.125];

/// Largest per-event λ (a 7.4× rate): beyond it, one event would count for
/// more than a rate ratio the judge ever needs to prove.
pub const COUNT_LAMBDA_MAX: f64 = 2.0;

const K: usize = COUNT_EFFECTS.len();

/// ψ(λ) = e^λ − 1 − λ: the cumulant of a centred Poisson count per unit of
/// its mean, and Bennett's bound per unit of variance for any count made of
/// events that each add at most one (so also for binomial counts).
pub fn bennett_psi(lambda: f64) -> f64 {
    lambda.exp_m1() - lambda
}

/// The λ of each mixture term for a tick whose null variance is `var`.
pub fn count_lambdas(var: f64) -> [f64; K] {
    let sd = var.max(1e-12).sqrt();
    COUNT_EFFECTS.map(|u| (u / sd).min(COUNT_LAMBDA_MAX))
}

/// ln of the equal-weight mixture of e^term over the mixture's terms.
pub fn log_mean_exp(terms: &[f64]) -> f64 {
    let m = terms.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    if !m.is_finite() {
        return m;
    }
    // Terms e^-40 below the largest cannot move the sum (and underflow slowly).
    let sum: f64 = terms
        .iter()
        .filter(|&&l| l - m > -40.0)
        .map(|l| (l - m).exp())
        .sum();
    m + (sum / terms.len() as f64).ln()
}

/// Running sums of a count signal (events out of requests: 5xx, or requests
/// slower than a bound) for testing "canary rate ≤ τ × baseline rate" against
/// a null variance that never looks at the canary's events.
///
/// Per tick i, with p̂ = baseline events / baseline requests in the same tick
/// and p̃ ≥ p̂ a rate for the variance (see `push`), the null expects
/// μ_i = τ·p̂·n_c canary events with variance
/// V_i = τ·p̃·n_c + τ²·n_c²·p̃/n_b + d·(τ·p̃·n_c)²
/// (the canary's Poisson noise, the baseline's own Poisson noise in p̂, and
/// per-window over-dispersion of both tracks, d = φ_canary² + φ_baseline²).
/// Term k of the e-value is Π_i exp(λ_ik(e_i − μ_i) − ψ(λ_ik)V_i), with
/// λ_ik = COUNT_EFFECTS[k]/√V̂_i (capped), V̂_i being V_i at τ = 1 from
/// the baseline's running rate before this tick and the tick's requests:
/// fixed before the tick's events are seen (a λ that rose when this tick's
/// baseline dipped would favour exactly the ticks where the canary looks
/// worse by chance). Each factor is a test supermartingale
/// step when the tick's excess has cumulant at most ψ(λ)V_i (exact for
/// Poisson), so Ville's inequality bounds the chance the mixture ever
/// reaches 1/α by α; and every term grows with every tick's canary events.
/// μ_i and V_i are linear in τ and τ², so any τ is tested from four sums per
/// term.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CountSums {
    pub n: u64,
    /// Per term: Σλe_c, Σλ·p̂n_c, Σψ·p̃n_c, Σψ·(n_c²p̃/n_b + d(p̃n_c)²).
    le: [f64; K],
    lb: [f64; K],
    pa1: [f64; K],
    pa2: [f64; K],
    events: f64,
    /// Σ p̂·n_c: the canary events expected at τ = 1.
    expected: f64,
    canary_requests: f64,
    baseline_events: f64,
    baseline_requests: f64,
}

impl CountSums {
    /// Adds one tick. `p_var` must not be below the baseline's rate this
    /// tick, `p_scale` is the baseline's rate known before this tick (it
    /// sets the tick's λ), and neither may depend on the canary's events;
    /// `disp2` is the relative over-dispersion variance assumed for the tick.
    pub fn push(
        &mut self,
        canary: (u64, u64),
        baseline: (u64, u64),
        (p_var, p_scale): (f64, f64),
        disp2: f64,
    ) {
        let (e_c, n_c) = (canary.0 as f64, canary.1 as f64);
        let (e_b, n_b) = (baseline.0 as f64, baseline.1 as f64);
        if n_c <= 0.0 || n_b <= 0.0 {
            return;
        }
        let b = n_c * e_b / n_b;
        let a1 = n_c * p_var;
        let a2 = n_c * n_c * p_var / n_b + disp2 * (n_c * p_var).powi(2);
        let v_scale = n_c * p_scale + n_c * n_c * p_scale / n_b + disp2 * (n_c * p_scale).powi(2);
        for (k, lambda) in count_lambdas(v_scale).into_iter().enumerate() {
            let psi = bennett_psi(lambda);
            self.le[k] += lambda * e_c;
            self.lb[k] += lambda * b;
            self.pa1[k] += psi * a1;
            self.pa2[k] += psi * a2;
        }
        self.n += 1;
        self.events += e_c;
        self.expected += b;
        self.canary_requests += n_c;
        self.baseline_events += e_b;
        self.baseline_requests += n_b;
    }

    /// Pooled canary rate.
    pub fn mean_a(&self) -> f64 {
        if self.canary_requests > 0.0 {
            self.events / self.canary_requests
        } else {
            f64::NAN
        }
    }

    /// Pooled baseline rate.
    pub fn mean_b(&self) -> f64 {
        if self.baseline_requests > 0.0 {
            self.baseline_events / self.baseline_requests
        } else {
            f64::NAN
        }
    }

    /// The mixture's terms at ratio τ, `scale` times over (to project the
    /// same per-tick evidence forward); `sign` 1 tests "worse than τ", −1
    /// "better than τ".
    fn terms(&self, tau: f64, sign: f64, scale: f64) -> [f64; K] {
        std::array::from_fn(|k| {
            scale
                * (sign * (self.le[k] - tau * self.lb[k])
                    - tau * self.pa1[k]
                    - tau * tau * self.pa2[k])
        })
    }

    /// ln of the e-value against "canary rate ≤ τ × baseline rate".
    pub fn log_e_worse(&self, tau: f64) -> f64 {
        log_mean_exp(&self.terms(tau, 1.0, 1.0))
    }

    /// ln of the e-value against "canary rate ≥ τ × baseline rate" (the same
    /// mixture on the other side; a count's lower tail is lighter than
    /// Poisson's upper one, so ψ bounds it too).
    pub fn log_e_better(&self, tau: f64) -> f64 {
        log_mean_exp(&self.terms(tau, -1.0, 1.0))
    }

    /// ln of the e-value against τ if the ticks so far were seen `factor`
    /// times over (for "about this much more data would settle it").
    pub fn log_e_worse_projected(&self, tau: f64, factor: f64) -> f64 {
        log_mean_exp(&self.terms(tau, 1.0, factor))
    }

    /// Anytime-valid bounds for the ratio of rates, each holding with
    /// probability at least 1 − e^−log_threshold. The lower end is where
    /// `log_e_worse` stops rejecting (each term falls as τ rises, so this is
    /// the test's verdict inverted). The upper end is where `log_e_better`
    /// first rejects above the estimate: no term reaches the threshold below
    /// the smallest single-term root, one term alone reaching threshold +
    /// ln(terms) suffices, and bisection between the two keeps a point no
    /// lower than the first rejection. An unbounded upper end is +∞.
    pub fn ratio_interval(&self, log_threshold: f64) -> (f64, f64) {
        if self.n == 0 || self.expected <= 0.0 {
            return (0.0, f64::INFINITY);
        }
        let est = self.events / self.expected;
        let lo = if self.log_e_worse(0.0) < log_threshold {
            0.0
        } else {
            // At the estimate no term is positive, so the test does not reject.
            let (mut a, mut b) = (0.0, est);
            // Display precision: a millionth of the estimate.
            for _ in 0..20 {
                let mid = 0.5 * (a + b);
                if self.log_e_worse(mid) >= log_threshold {
                    a = mid;
                } else {
                    b = mid;
                }
            }
            a
        };
        let first_root = |thr: f64| -> f64 {
            let mut hi = f64::INFINITY;
            for k in 0..K {
                // Term k ≥ thr: a2τ² + a1τ + a0 ≥ 0 with a2 ≤ 0; it holds
                // between its roots, which are both above `est` (where the
                // term is negative) or both below 0.
                let (a2, a1, a0) = (-self.pa2[k], self.lb[k] - self.pa1[k], -(self.le[k] + thr));
                let root = if a2 < 0.0 {
                    let disc = a1 * a1 - 4.0 * a2 * a0;
                    if disc < 0.0 {
                        continue;
                    }
                    (-a1 + disc.sqrt()) / (2.0 * a2)
                } else if a1 > 0.0 {
                    -a0 / a1
                } else {
                    continue;
                };
                if root >= est {
                    hi = hi.min(root);
                }
            }
            hi
        };
        let (mut a, mut b) = (
            first_root(log_threshold),
            first_root(log_threshold + (K as f64).ln()),
        );
        if b.is_finite() {
            for _ in 0..20 {
                let mid = 0.5 * (a + b);
                if self.log_e_better(mid) >= log_threshold {
                    b = mid;
                } else {
                    a = mid;
                }
            }
        }
        (lo.max(0.0), b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::stats::{close, ln_gamma, BaselineDispersion};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use rand_distr::StandardNormal;

    fn ln_poisson_pmf(k: u64, mu: f64) -> f64 {
        k as f64 * mu.ln() - mu - ln_gamma(k as f64 + 1.0)
    }

    #[test]
    fn count_term_is_the_poisson_likelihood_ratio() {
        // 7 events where 2 were expected, tested at twice the rate (λ = ln 2):
        // Poisson(7; 4)/Poisson(7; 2) = 2^7·e^−2 = 17.3229 (by hand), and the
        // term λ(e − μ) − ψ(λ)μ with V = μ must equal its logarithm.
        let lambda = 2f64.ln();
        let term = lambda * (7.0 - 2.0) - bennett_psi(lambda) * 2.0;
        assert!(close(term.exp(), 128.0 * (-2f64).exp(), 1e-12));
        assert!(close(term.exp(), 17.322_9, 1e-5));
        let by_pmf = ln_poisson_pmf(7, 4.0) - ln_poisson_pmf(7, 2.0);
        assert!(close(term, by_pmf, 1e-10));
    }

    #[test]
    fn bennett_psi_is_the_poisson_cumulant_and_bounds_the_binomial_one() {
        // E e^{λ(X−μ)} for X ~ Poisson(3), λ = 0.7, summed over the pmf,
        // equals exp(3ψ(0.7)) = exp(3(e^0.7 − 1.7)) = exp(0.941259) = 2.56318.
        let (mu, lambda) = (3.0, 0.7);
        let direct: f64 = (0..200)
            .map(|k| (ln_poisson_pmf(k, mu) + lambda * (k as f64 - mu)).exp())
            .sum();
        assert!(close(direct, (mu * bennett_psi(lambda)).exp(), 1e-9));
        assert!(close(direct, 2.563_18, 1e-5));
        // Bennett: a Bernoulli(p)'s cumulant ln(1 − p + pe^λ) − λp is at
        // most p(1 − p)ψ(λ), so binomial counts are covered too.
        for p in [1e-4, 0.01, 0.3, 0.5, 0.9] {
            for lambda in [1e-4, 0.01, 0.5, 2.0] {
                let k = (1.0 - p + p * f64::exp(lambda)).ln() - lambda * p;
                assert!(k <= p * (1.0 - p) * bennett_psi(lambda) * (1.0 + 1e-12));
            }
        }
    }

    #[test]
    fn count_test_is_monotone_in_canary_events_and_scaled_per_tick() {
        // More canary events on any tick never lower the evidence, at any τ.
        let ticks = [(3u64, 10u64), (5, 12), (0, 8), (9, 11)];
        let run = |bump: usize, extra: u64| {
            let mut s = CountSums::default();
            for (i, &(e_c, e_b)) in ticks.iter().enumerate() {
                let e_c = e_c + if i == bump { extra } else { 0 };
                s.push((e_c, 1000), (e_b, 2000), (0.006, 0.005), 0.14);
            }
            s
        };
        for bump in 0..ticks.len() {
            for tau in [0.5, 1.0, 1.05, 2.0] {
                let mut prev = f64::NEG_INFINITY;
                for extra in 0..20 {
                    let l = run(bump, extra).log_e_worse(tau);
                    assert!(l >= prev, "tick {bump}, τ {tau}, +{extra}");
                    prev = l;
                }
            }
        }
        // With no excess every term is ≤ 0, so the e-value is at most 1.
        let s = run(0, 0);
        assert!(s.log_e_worse(s.events / s.expected) <= 0.0);
        // λ = effect / √V, capped at 2: V = 4 → 2, 2, 1, 0.5, ….
        let l = count_lambdas(4.0);
        assert_eq!(l[0], COUNT_LAMBDA_MAX);
        assert!(close(l[3], 0.5, 1e-12) && close(l[6], 0.0625, 1e-12));
    }

    /// One tick of a good canary and its baseline: 0.1% errors, shared
    /// noise σ 0.2, own noise σ_c and σ_b (lognormal, mean 1).
    fn null_tick(rng: &mut ChaCha8Rng, sigma_c: f64, sigma_b: f64) -> ((u64, u64), (u64, u64)) {
        use rand_distr::{Distribution, Poisson};
        let ln1 = |s: f64, z: f64| (s * z - s * s / 2.0).exp();
        let shared = ln1(0.2, rng.sample(StandardNormal));
        let rate_c = 0.001 * shared * ln1(sigma_c, rng.sample(StandardNormal));
        let rate_b = 0.001 * shared * ln1(sigma_b, rng.sample(StandardNormal));
        let (n_c, n_b) = (20_000u64, 80_000u64);
        let draw = |rng: &mut ChaCha8Rng, m: f64| Poisson::new(m).unwrap().sample(rng) as u64;
        let e_c = draw(rng, n_c as f64 * rate_c);
        let e_b = draw(rng, n_b as f64 * rate_b);
        ((e_c, n_c), (e_b, n_b))
    }

    /// Runs the count test over `ticks` ticks as the judge does; the tick at
    /// which it first reaches `log_thr`, if any.
    fn count_test_crossing(
        rng: &mut ChaCha8Rng,
        ticks: usize,
        (sigma_c, sigma_b): (f64, f64),
        tau: f64,
        log_thr: f64,
        extra: f64,
    ) -> Option<usize> {
        let mut disp = BaselineDispersion::default();
        for _ in 0..30 {
            let (_, b) = null_tick(rng, sigma_c, sigma_b);
            disp.push(b.0, b.1);
        }
        let mut sums = CountSums::default();
        for k in 1..=ticks {
            let (c, b) = null_tick(rng, sigma_c, sigma_b);
            let c = (c.0 + (extra * c.1 as f64 * 0.001).round() as u64, c.1);
            let p_var = disp.variance_rate(b.0, b.1);
            let p_scale = disp.running_rate(p_var);
            let phi2 = disp.phi2();
            sums.push(c, b, (p_var, p_scale), phi2.max(0.09) + phi2);
            disp.push(b.0, b.1);
            if sums.log_e_worse(tau) >= log_thr {
                return Some(k);
            }
        }
        None
    }

    #[test]
    fn count_test_stays_below_one_over_alpha_under_continuous_monitoring() {
        // Ville's inequality: a good canary (its own noise σ 0.3, at the
        // min_dispersion floor; baseline σ 0.1) looked at every tick for an
        // hour reaches 1/α = 100 in at most 1% of runs.
        let mut rng = ChaCha8Rng::seed_from_u64(17);
        let reps = 1000;
        let crossed = (0..reps)
            .filter(|_| {
                count_test_crossing(&mut rng, 360, (0.3, 0.1), 1.0, 100f64.ln(), 0.0).is_some()
            })
            .count();
        assert!(
            crossed as f64 / reps as f64 <= 0.01,
            "crossed {crossed} of {reps}"
        );
    }

    #[test]
    fn count_test_detects_a_real_rise() {
        // Canary 2× (one extra 0.1% of its requests): 20 expected errors and
        // 40 seen per tick, with 30% + 22% assumed noise: each tick adds
        // roughly (20)²/(2·(20 + 0.14·400)) ≈ 2.6 nats, so 1/α = 200 (5.3
        // nats plus the mixture's ln 7) is reached within a handful of ticks.
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for _ in 0..20 {
            let k = count_test_crossing(&mut rng, 360, (0.1, 0.1), 1.05, 200f64.ln(), 1.0)
                .expect("a 2× rise is found");
            assert!(k <= 12, "took {k} ticks");
        }
    }

    #[test]
    fn count_interval_ends_are_where_the_tests_flip() {
        let mut rng = ChaCha8Rng::seed_from_u64(21);
        let mut disp = BaselineDispersion::default();
        let mut s = CountSums::default();
        for k in 0..90 {
            let (c, b) = null_tick(&mut rng, 0.1, 0.1);
            let c = (c.0 * 3, c.1); // a 3× canary
            if k >= 30 {
                let p_var = disp.variance_rate(b.0, b.1);
                s.push(c, b, (p_var, disp.running_rate(p_var)), 0.09 + disp.phi2());
            }
            disp.push(b.0, b.1);
        }
        let thr = 200f64.ln();
        let (lo, hi) = s.ratio_interval(thr);
        assert!(lo < 3.0 && 3.0 < hi && hi.is_finite(), "({lo}, {hi})");
        // Just inside each end the test does not reject; just outside, it does.
        assert!(s.log_e_worse(lo * 1.001) < thr && s.log_e_worse(lo * 0.999) >= thr);
        assert!(s.log_e_better(hi * 0.999) < thr && s.log_e_better(hi * 1.001) >= thr);
    }

    #[test]
    fn count_interval_upper_end_is_never_below_the_estimate() {
        // Few events per tick put λ at its cap, where a term's quadratic has
        // both roots below 0; those once clipped the upper end to the
        // estimate, which would have promoted a canary on no evidence.
        let mut s = CountSums::default();
        for k in 0..60u64 {
            // About one canary error expected per tick; 0, 1, 2 seen in turn.
            s.push((k % 3, 1000), (100, 100_000), (0.0011, 0.001), 0.14);
        }
        let est = s.mean_a() / s.mean_b();
        let (lo, hi) = s.ratio_interval(200f64.ln());
        assert!(lo < est && hi > 1.5 * est, "({lo}, {hi}) around {est}");
        assert!(s.log_e_better(hi * 0.999) < 200f64.ln());
        assert!(s.log_e_better(hi * 1.001) >= 200f64.ln());
    }
}
