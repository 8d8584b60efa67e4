//! A deterministic, seeded simulator of canary rollouts: per-tick request and
//! error counts, Prometheus-style latency histograms, CPU and memory, for
//! good and bad canaries under realistic noise.
//!
//! Each kind of randomness has its own stream, and errors are drawn by
//! inverting their distribution with one uniform per track and tick, so two
//! scenarios that differ only in their effect see the same noise (common
//! random numbers): comparisons between them measure the effect, not luck.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Binomial, Distribution, Poisson, StandardNormal};

use super::stats::{normal_cdf, normal_quantile};
use super::{Tick, TrackSample};

/// Histogram bounds exported by the simulated services (seconds).
pub const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How a latency multiplier applies to the canary.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LatencyEffect {
    /// Every request is slower by the multiplier.
    Whole,
    /// Only the tail beyond the baseline's p95 stretches, so that p99 is
    /// slower by the multiplier while p50 and p95 are unchanged.
    TailOnly,
}

/// How total traffic varies over the rollout.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Traffic {
    Constant,
    /// Linear ramp from `start_fraction` of `rps` to all of it at the horizon.
    Ramp {
        start_fraction: f64,
    },
}

/// A fault outside the canary that hits both tracks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ExternalFault {
    pub start: f64,
    pub end: f64,
    pub error_rate: f64,
    pub latency_multiplier: f64,
}

/// The canary's cold start: extra errors and latency that decay away.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ColdStart {
    pub error_multiplier: f64,
    pub latency_multiplier: f64,
    /// Time constant of the exponential decay, seconds.
    pub decay: f64,
}

/// One simulated rollout. Build with `Scenario::new` and the chained setters,
/// or set the public fields directly.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    pub name: String,
    /// Whether the canary is as good as the baseline (a rollback is a false
    /// alarm) or worse (it should be detected).
    pub good: bool,
    /// Seconds simulated.
    pub horizon: f64,
    /// Seconds per tick.
    pub tick: f64,
    /// Total requests per second across both tracks.
    pub rps: f64,
    pub traffic: Traffic,
    /// Fraction of traffic on the canary.
    pub canary_share: f64,
    /// Baseline 5xx rate.
    pub base_error_rate: f64,
    /// Canary 5xx rate / baseline's once the effect is on.
    pub error_multiplier: f64,
    /// Canary latency multiplier once the effect is on.
    pub latency_multiplier: f64,
    pub latency_effect: LatencyEffect,
    /// Seconds after the start when the canary's effect begins.
    pub onset: f64,
    /// Seconds over which the effect ramps linearly to full (0 = a step).
    pub ramp: f64,
    /// Per-tick, per-track over-dispersion: the error rate is multiplied by
    /// lognormal noise with this σ (mean 1), latency shifted by σ/4 in log.
    pub overdispersion: f64,
    /// The canary's own per-tick over-dispersion when it differs from the
    /// baseline's (`None`: the same as `overdispersion`), e.g. a canary on
    /// few pods.
    pub canary_overdispersion: Option<f64>,
    /// The same kind of noise, shared by both tracks.
    pub shared_noise: f64,
    /// Median latency (lognormal), seconds.
    pub latency_median: f64,
    /// Log-space σ of the latency distribution.
    pub latency_sigma: f64,
    /// Baseline CPU utilisation at full traffic.
    pub cpu: f64,
    /// Canary CPU / baseline's.
    pub cpu_multiplier: f64,
    pub cold_start: Option<ColdStart>,
    pub external_fault: Option<ExternalFault>,
}

impl Scenario {
    /// A scenario with the bench's defaults: 60 min of 10 s ticks, 10,000 rps,
    /// 5% canary, 0.1% errors, 80 ms median latency, mild noise (σ 0.1 per
    /// track, 0.2 shared), no effect.
    pub fn new(name: &str, good: bool) -> Self {
        Scenario {
            name: name.to_string(),
            good,
            horizon: 3600.0,
            tick: 10.0,
            rps: 10_000.0,
            traffic: Traffic::Constant,
            canary_share: 0.05,
            base_error_rate: 0.001,
            error_multiplier: 1.0,
            latency_multiplier: 1.0,
            latency_effect: LatencyEffect::Whole,
            onset: 0.0,
            ramp: 0.0,
            overdispersion: 0.1,
            canary_overdispersion: None,
            shared_noise: 0.2,
            latency_median: 0.08,
            latency_sigma: 0.5,
            cpu: 0.4,
            cpu_multiplier: 1.0,
            cold_start: None,
            external_fault: None,
        }
    }

    pub fn canary_share(mut self, share: f64) -> Self {
        self.canary_share = share;
        self
    }
    pub fn base_errors(mut self, rate: f64) -> Self {
        self.base_error_rate = rate;
        self
    }
    pub fn errors(mut self, multiplier: f64) -> Self {
        self.error_multiplier = multiplier;
        self
    }
    pub fn latency(mut self, multiplier: f64) -> Self {
        self.latency_multiplier = multiplier;
        self.latency_effect = LatencyEffect::Whole;
        self
    }
    pub fn p99_only(mut self, multiplier: f64) -> Self {
        self.latency_multiplier = multiplier;
        self.latency_effect = LatencyEffect::TailOnly;
        self
    }
    pub fn onset(mut self, secs: f64) -> Self {
        self.onset = secs;
        self
    }
    pub fn ramp(mut self, secs: f64) -> Self {
        self.ramp = secs;
        self
    }
    pub fn rps(mut self, rps: f64) -> Self {
        self.rps = rps;
        self
    }
    pub fn noise(mut self, sigma: f64) -> Self {
        self.overdispersion = sigma;
        self
    }
    /// Per-tick over-dispersion of the canary alone.
    pub fn canary_noise(mut self, sigma: f64) -> Self {
        self.canary_overdispersion = Some(sigma);
        self
    }
    pub fn shared(mut self, sigma: f64) -> Self {
        self.shared_noise = sigma;
        self
    }
    pub fn horizon(mut self, secs: f64) -> Self {
        self.horizon = secs;
        self
    }
    pub fn cpu_multiplier(mut self, m: f64) -> Self {
        self.cpu_multiplier = m;
        self
    }
    pub fn traffic_ramp(mut self, start_fraction: f64) -> Self {
        self.traffic = Traffic::Ramp { start_fraction };
        self
    }
    pub fn cold_start(mut self) -> Self {
        self.cold_start = Some(ColdStart {
            error_multiplier: 2.0,
            latency_multiplier: 1.5,
            decay: 60.0,
        });
        self
    }
    pub fn external_fault(mut self, start: f64, end: f64) -> Self {
        self.external_fault = Some(ExternalFault {
            start,
            end,
            error_rate: 0.05,
            latency_multiplier: 2.0,
        });
        self
    }

    /// Fraction of the effect that is on at time t.
    fn effect_at(&self, t: f64) -> f64 {
        if t <= self.onset {
            0.0
        } else if self.ramp > 0.0 {
            ((t - self.onset) / self.ramp).min(1.0)
        } else {
            1.0
        }
    }
}

/// The scenarios of `rollbot bench judge`.
pub fn standard_scenarios() -> Vec<Scenario> {
    let mut v = vec![
        Scenario::new("good: identical, 0.1% errors", true),
        Scenario::new("good: identical, 1% errors", true).base_errors(0.01),
        Scenario::new("good: identical, 25% canary", true).canary_share(0.25),
        Scenario::new("good: noisy σ=0.2", true).noise(0.2),
        Scenario::new("good: noisy σ=0.5", true).noise(0.5),
        Scenario::new("good: noisy σ=0.5, 1% errors", true)
            .noise(0.5)
            .base_errors(0.01),
        Scenario::new("good: canary noisier (σ 0.3 canary-only)", true).canary_noise(0.3),
        Scenario::new("good: cold start", true).cold_start(),
        Scenario::new("good: external fault 10–20m", true).external_fault(600.0, 1200.0),
        Scenario::new("good: low traffic 20 rps", true)
            .rps(20.0)
            .canary_share(0.25)
            .base_errors(0.01),
        Scenario::new("good: diurnal ramp", true).traffic_ramp(0.3),
    ];
    for share in [0.01, 0.05, 0.25] {
        for m in [1.5, 2.0, 3.0, 10.0] {
            v.push(
                Scenario::new(&format!("bad: errors {m}× at {:.0}%", share * 100.0), false)
                    .canary_share(share)
                    .errors(m),
            );
        }
    }
    v.extend([
        Scenario::new("bad: errors 2× at 5%, onset 15m", false)
            .errors(2.0)
            .onset(900.0),
        Scenario::new("bad: errors 3× at 5%, 1% base", false)
            .errors(3.0)
            .base_errors(0.01),
        Scenario::new("bad: latency +10%", false).latency(1.1),
        Scenario::new("bad: latency +30%", false).latency(1.3),
        Scenario::new("bad: latency +30%, onset 15m", false)
            .latency(1.3)
            .onset(900.0),
        Scenario::new("bad: p99 only +30%", false).p99_only(1.3),
        Scenario::new("bad: low traffic, errors 3×", false)
            .rps(20.0)
            .canary_share(0.25)
            .base_errors(0.01)
            .errors(3.0),
    ]);
    v
}

/// Per-track draws for one tick, taken in a fixed order.
struct TrackDraws {
    err_noise: f64,
    lat_shift: f64,
    cpu_noise: f64,
    mem_noise: f64,
}

/// Generates a scenario's ticks, one at a time.
pub struct Simulator {
    sc: Scenario,
    k: u64,
    traffic: ChaCha8Rng,
    noise: ChaCha8Rng,
    errors: ChaCha8Rng,
    latency: ChaCha8Rng,
    excess: f64,
    last_excess: f64,
}

impl Simulator {
    pub fn new(scenario: &Scenario, seed: u64) -> Self {
        let stream = |id: u64| {
            let mut r = ChaCha8Rng::seed_from_u64(seed);
            r.set_stream(id);
            r
        };
        Simulator {
            sc: scenario.clone(),
            k: 0,
            traffic: stream(1),
            noise: stream(2),
            errors: stream(3),
            latency: stream(4),
            excess: 0.0,
            last_excess: 0.0,
        }
    }

    pub fn scenario(&self) -> &Scenario {
        &self.sc
    }

    /// True excess failed requests (canary errors beyond what the baseline's
    /// rate would have produced, from the noise-free rates) in the last tick.
    pub fn last_excess_failures(&self) -> f64 {
        self.last_excess
    }

    /// Total true excess failed requests so far.
    pub fn excess_failures(&self) -> f64 {
        self.excess
    }

    pub fn next_tick(&mut self) -> Option<Tick> {
        self.k += 1;
        let sc = &self.sc;
        let t = self.k as f64 * sc.tick;
        if t > sc.horizon + 1e-9 {
            return None;
        }
        let load = match sc.traffic {
            Traffic::Constant => 1.0,
            Traffic::Ramp { start_fraction } => {
                start_fraction + (1.0 - start_fraction) * (t / sc.horizon)
            }
        };
        let lambda = sc.rps * load * sc.tick;
        let n_c = poisson(&mut self.traffic, lambda * sc.canary_share);
        let n_b = poisson(&mut self.traffic, lambda * (1.0 - sc.canary_share));

        let shared_z: f64 = self.noise.sample(StandardNormal);
        let shared_lat: f64 = self.noise.sample(StandardNormal);
        let draws = |rng: &mut ChaCha8Rng| TrackDraws {
            err_noise: rng.sample(StandardNormal),
            lat_shift: rng.sample(StandardNormal),
            cpu_noise: rng.sample(StandardNormal),
            mem_noise: rng.sample(StandardNormal),
        };
        let dc = draws(&mut self.noise);
        let db = draws(&mut self.noise);
        let u_c: f64 = self.errors.gen();
        let u_b: f64 = self.errors.gen();

        let lognormal_mean1 = |sigma: f64, z: f64| (sigma * z - sigma * sigma / 2.0).exp();
        let shared = lognormal_mean1(sc.shared_noise, shared_z);
        let fault = sc.external_fault.filter(|f| t > f.start && t <= f.end);
        let base_rate = fault.map(|f| f.error_rate).unwrap_or(sc.base_error_rate);
        let effect = sc.effect_at(t);
        let cold = sc.cold_start.map(|c| (-t / c.decay).exp());
        let err_mult = (1.0 + (sc.error_multiplier - 1.0) * effect)
            * (1.0 + cold.map_or(0.0, |w| (sc.cold_start.unwrap().error_multiplier - 1.0) * w));
        let p_b = (base_rate * shared * lognormal_mean1(sc.overdispersion, db.err_noise)).min(1.0);
        let sigma_c = sc.canary_overdispersion.unwrap_or(sc.overdispersion);
        let p_c = (base_rate * err_mult * shared * lognormal_mean1(sigma_c, dc.err_noise)).min(1.0);
        let e_c = poisson_quantile(u_c, n_c as f64 * p_c).min(n_c);
        let e_b = poisson_quantile(u_b, n_b as f64 * p_b).min(n_b);
        self.last_excess = n_c as f64 * base_rate * (err_mult - 1.0);
        self.excess += self.last_excess;

        // Latency: log-median per track, with shared and per-track jitter.
        let lat_mult_fault = fault.map(|f| f.latency_multiplier).unwrap_or(1.0);
        let jitter = sc.overdispersion / 4.0;
        let mu = sc.latency_median.ln() + lat_mult_fault.ln() + sc.shared_noise / 4.0 * shared_lat;
        let mu_b = mu + jitter * db.lat_shift;
        let mut mu_c = mu + sigma_c / 4.0 * dc.lat_shift;
        if let Some(c) = sc.cold_start {
            mu_c += (1.0 + (c.latency_multiplier - 1.0) * cold.unwrap_or(0.0)).ln();
        }
        let lat_m = 1.0 + (sc.latency_multiplier - 1.0) * effect;
        let sigma = sc.latency_sigma;
        let cdf_b = |x: f64| normal_cdf((x.ln() - mu_b) / sigma);
        let canary_cdf = |x: f64| -> f64 {
            match sc.latency_effect {
                LatencyEffect::Whole => normal_cdf(((x / lat_m).ln() - mu_c) / sigma),
                LatencyEffect::TailOnly => {
                    let q95 = (mu_c + sigma * normal_quantile(0.95)).exp();
                    let q99 = (mu_c + sigma * normal_quantile(0.99)).exp();
                    let k = (lat_m * q99 - q95) / (q99 - q95);
                    let y = if x <= q95 { x } else { q95 + (x - q95) / k };
                    normal_cdf((y.ln() - mu_c) / sigma)
                }
            }
        };
        let lat_c = histogram(&mut self.latency, n_c, canary_cdf);
        let lat_b = histogram(&mut self.latency, n_b, cdf_b);

        let cpu_b = sc.cpu * (0.5 + 0.5 * load) * (0.03 * db.cpu_noise).exp();
        let cpu_c = sc.cpu * sc.cpu_multiplier * (0.5 + 0.5 * load) * (0.03 * dc.cpu_noise).exp();
        let mem_b = 0.5 * (0.02 * db.mem_noise).exp();
        let mem_c = 0.5 * (0.02 * dc.mem_noise).exp();

        let track = |n, e, h, cpu: f64, mem: f64| TrackSample {
            requests: n,
            errors: e,
            latency_buckets: h,
            cpu: Some(cpu.min(1.0)),
            memory: Some(mem.min(1.0)),
            ready_failures: Some(0),
            circuit_open: Some(false),
        };
        Some(Tick {
            t,
            baseline: Some(track(n_b, e_b, lat_b, cpu_b, mem_b)),
            canary: Some(track(n_c, e_c, lat_c, cpu_c, mem_c)),
        })
    }
}

pub(super) fn poisson(rng: &mut ChaCha8Rng, lambda: f64) -> u64 {
    if lambda <= 0.0 {
        return 0;
    }
    match Poisson::new(lambda) {
        Ok(d) => d.sample(rng) as u64,
        Err(_) => lambda.round() as u64,
    }
}

/// Poisson quantile at u, nondecreasing in λ for a fixed u (exact up to
/// λ = 50, then Cornish–Fisher), so a larger rate never gives fewer errors
/// on the same draw.
pub fn poisson_quantile(u: f64, lambda: f64) -> u64 {
    const EXACT_UP_TO: f64 = 50.0;
    if lambda <= 0.0 {
        return 0;
    }
    if lambda <= EXACT_UP_TO {
        return poisson_quantile_exact(u, lambda);
    }
    let z = normal_quantile(u.clamp(1e-12, 1.0 - 1e-12));
    let approx = (lambda + lambda.sqrt() * z + (z * z - 1.0) / 6.0 + 0.5)
        .floor()
        .max(0.0) as u64;
    // The approximation can fall one below the exact value where the two
    // meet; never giving fewer than at λ = 50 keeps the draw monotone.
    approx.max(poisson_quantile_exact(u, EXACT_UP_TO))
}

fn poisson_quantile_exact(u: f64, lambda: f64) -> u64 {
    let mut k = 0u64;
    let mut p = (-lambda).exp();
    let mut cum = p;
    while cum < u && k < 10_000 {
        k += 1;
        p *= lambda / k as f64;
        cum += p;
    }
    k
}

/// Draws a cumulative histogram of n requests from a latency CDF, bucket by
/// bucket with conditional binomials (an exact multinomial draw).
pub(super) fn histogram(rng: &mut ChaCha8Rng, n: u64, cdf: impl Fn(f64) -> f64) -> Vec<(f64, u64)> {
    let mut out = Vec::with_capacity(BUCKETS.len() + 1);
    let mut remaining = n;
    let mut cum = 0u64;
    let mut prev = 0.0;
    for &le in &BUCKETS {
        let f = cdf(le).clamp(0.0, 1.0);
        let p = if prev >= 1.0 {
            1.0
        } else {
            ((f - prev) / (1.0 - prev)).clamp(0.0, 1.0)
        };
        let k = if remaining == 0 || p <= 0.0 {
            0
        } else if p >= 1.0 {
            remaining
        } else {
            Binomial::new(remaining, p)
                .map(|d| d.sample(rng))
                .unwrap_or(0)
        };
        remaining -= k;
        cum += k;
        prev = f.max(prev);
        out.push((le, cum));
    }
    out.push((f64::INFINITY, n));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::stats::histogram_quantile;

    fn totals(sc: &Scenario, seed: u64) -> (u64, u64, u64, u64, usize) {
        let mut sim = Simulator::new(sc, seed);
        let (mut nb, mut eb, mut nc, mut ec, mut ticks) = (0, 0, 0, 0, 0);
        while let Some(t) = sim.next_tick() {
            let (b, c) = (t.baseline.unwrap(), t.canary.unwrap());
            nb += b.requests;
            eb += b.errors;
            nc += c.requests;
            ec += c.errors;
            ticks += 1;
        }
        (nb, eb, nc, ec, ticks)
    }

    #[test]
    fn a_scenario_produces_the_stated_traffic_and_error_rates() {
        let sc = Scenario::new("x", false).errors(3.0).noise(0.0).shared(0.0);
        let (nb, eb, nc, ec, ticks) = totals(&sc, 1);
        assert_eq!(ticks, 360, "60 minutes of 10 s ticks");
        // 10,000 rps × 3600 s × 5% = 1.8M canary requests.
        assert!((nc as f64 / 1.8e6 - 1.0).abs() < 0.01, "{nc}");
        assert!((nb as f64 / 34.2e6 - 1.0).abs() < 0.01, "{nb}");
        assert!((eb as f64 / nb as f64 / 0.001 - 1.0).abs() < 0.03);
        assert!((ec as f64 / nc as f64 / 0.003 - 1.0).abs() < 0.05);
    }

    #[test]
    fn same_seed_same_ticks_and_common_noise_across_effects() {
        let a: Vec<Tick> = {
            let mut s = Simulator::new(&Scenario::new("a", true), 9);
            std::iter::from_fn(|| s.next_tick()).collect()
        };
        let b: Vec<Tick> = {
            let mut s = Simulator::new(&Scenario::new("a", true), 9);
            std::iter::from_fn(|| s.next_tick()).collect()
        };
        assert_eq!(a, b);
        // A larger error multiplier never gives fewer canary errors on a tick.
        let mut s1 = Simulator::new(&Scenario::new("a", false).errors(2.0), 9);
        let mut s2 = Simulator::new(&Scenario::new("a", false).errors(2.5), 9);
        while let (Some(x), Some(y)) = (s1.next_tick(), s2.next_tick()) {
            assert_eq!(x.baseline, y.baseline);
            assert!(y.canary.unwrap().errors >= x.canary.unwrap().errors);
        }
    }

    #[test]
    fn histograms_follow_the_lognormal_and_the_tail_only_effect() {
        let mut sim = Simulator::new(
            &Scenario::new("p", false)
                .p99_only(1.3)
                .noise(0.0)
                .shared(0.0),
            2,
        );
        let mut hc = vec![0u64; BUCKETS.len() + 1];
        let mut hb = vec![0u64; BUCKETS.len() + 1];
        while let Some(t) = sim.next_tick() {
            for (i, (_, c)) in t.canary.unwrap().latency_buckets.iter().enumerate() {
                hc[i] += c;
            }
            for (i, (_, c)) in t.baseline.unwrap().latency_buckets.iter().enumerate() {
                hb[i] += c;
            }
        }
        let with_le = |h: &[u64]| -> Vec<(f64, u64)> {
            BUCKETS
                .iter()
                .cloned()
                .chain([f64::INFINITY])
                .zip(h.iter().cloned())
                .collect()
        };
        let (hc, hb) = (with_le(&hc), with_le(&hb));
        // Baseline share above 0.1 s: 1 − Φ(ln(0.1/0.08)/0.5) = 0.3284
        // (python3: 0.5*math.erfc(math.log(1.25)/0.5/math.sqrt(2))).
        let above = |h: &[(f64, u64)], i: usize| 1.0 - h[i].1 as f64 / h.last().unwrap().1 as f64;
        assert!((above(&hb, 4) - 0.3284).abs() < 0.002, "{}", above(&hb, 4));
        // The tail-only effect leaves the body alone...
        assert!((above(&hc, 4) - 0.3284).abs() < 0.003);
        // ...and doubles the share above 0.25 s (1.1% → 2.4%, derived in
        // the module docs' transform: P(X > 0.215) for the stretched tail).
        assert!(
            above(&hc, 5) > 1.8 * above(&hb, 5),
            "{} vs {}",
            above(&hc, 5),
            above(&hb, 5)
        );
        let p50c = histogram_quantile(0.5, &hc).unwrap();
        let p50b = histogram_quantile(0.5, &hb).unwrap();
        assert!((p50c / p50b - 1.0).abs() < 0.01);
    }

    #[test]
    fn poisson_quantile_matches_known_values_and_is_monotone() {
        // Poisson(2): P(X≤0)=0.1353, P(X≤1)=0.4060, P(X≤2)=0.6767.
        assert_eq!(poisson_quantile(0.10, 2.0), 0);
        assert_eq!(poisson_quantile(0.30, 2.0), 1);
        assert_eq!(poisson_quantile(0.60, 2.0), 2);
        assert_eq!(poisson_quantile(0.70, 2.0), 3);
        // 0.0044 once dropped where the exact quantile hands over to the
        // approximation at λ = 50.
        for u in [0.0044, 0.01, 0.3, 0.5, 0.9, 0.999] {
            let mut prev = 0;
            for l in (1..4000).map(|i| i as f64 * 0.05) {
                let q = poisson_quantile(u, l);
                assert!(q >= prev, "u={u} λ={l}");
                prev = q;
            }
        }
    }

    #[test]
    fn standard_scenarios_cover_the_issue() {
        let s = standard_scenarios();
        assert!(s.iter().filter(|s| s.good).count() >= 9);
        assert_eq!(
            s.iter()
                .filter(|s| s.name.starts_with("bad: errors") && s.onset == 0.0)
                .count(),
            13
        );
        assert!(s
            .iter()
            .any(|s| s.latency_effect == LatencyEffect::TailOnly));
        let mut names: Vec<&str> = s.iter().map(|s| s.name.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), s.len(), "names are unique");
    }
}
