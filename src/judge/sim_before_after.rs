//! A seeded simulator of rollouts without a concurrent baseline (rolling
//! updates, blue-green switches, flags): one series for the whole service,
//! before and after the change, and the same hours one week earlier.
//!
//! Traffic follows a daily pattern; the error rate and latency rise a
//! little with load, as they do on a busy service, so a comparison with
//! the past sees drift that is not the change's. The change reaches the
//! whole service over `rollout` seconds (a rolling update's pace). Like
//! `sim`, each kind of randomness has its own stream and errors are drawn
//! by inverting their distribution, so scenarios that differ only in their
//! effect see the same noise.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use super::sim::{histogram, poisson, poisson_quantile};
use super::stats::normal_cdf;
use super::TrackSample;

const DAY: f64 = 86_400.0;
const WEEK: f64 = 7.0 * DAY;

/// An outside fault during the watch (a shared dependency down).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OutsideFault {
    pub start: f64,
    pub end: f64,
    pub error_rate: f64,
    pub latency_multiplier: f64,
}

/// One simulated before/after rollout.
#[derive(Clone, Debug, PartialEq)]
pub struct BaScenario {
    pub name: String,
    /// Whether the change is harmless (a rollback is a false alarm).
    pub good: bool,
    /// Seconds per tick.
    pub tick: f64,
    /// Seconds of reference window before the start.
    pub reference: f64,
    /// Seconds watched after the start.
    pub horizon: f64,
    /// Requests per second at the day's mean load.
    pub rps: f64,
    /// Daily traffic amplitude: load = 1 + a·sin(2π·time of day / 1 day).
    pub diurnal: f64,
    /// Time of day of the rollout's start, seconds (0: mean load, rising
    /// fastest; 21,600: the peak).
    pub start_of_day: f64,
    pub base_error_rate: f64,
    /// The error rate grows as load to this power.
    pub error_load_exponent: f64,
    pub latency_median: f64,
    pub latency_sigma: f64,
    /// The latency grows as load to this power.
    pub latency_load_exponent: f64,
    /// Per-tick lognormal noise of the error rate (latency: a quarter).
    pub overdispersion: f64,
    /// Seconds for the change to reach the whole service.
    pub rollout: f64,
    /// The new version's error rate / the old one's.
    pub error_multiplier: f64,
    /// The new version's latency / the old one's.
    pub latency_multiplier: f64,
    pub fault: Option<OutsideFault>,
}

impl BaScenario {
    /// 30 minutes of reference, 60 watched, 10 s ticks, 2,000 rps, 0.1%
    /// errors, 80 ms median latency, a 5-minute rolling update, mild noise,
    /// no daily pattern, no effect.
    pub fn new(name: &str, good: bool) -> Self {
        BaScenario {
            name: name.to_string(),
            good,
            tick: 10.0,
            reference: 1800.0,
            horizon: 3600.0,
            rps: 2000.0,
            diurnal: 0.0,
            start_of_day: 0.0,
            base_error_rate: 0.001,
            error_load_exponent: 0.5,
            latency_median: 0.08,
            latency_sigma: 0.5,
            latency_load_exponent: 0.15,
            overdispersion: 0.1,
            rollout: 300.0,
            error_multiplier: 1.0,
            latency_multiplier: 1.0,
            fault: None,
        }
    }
    pub fn errors(mut self, m: f64) -> Self {
        self.error_multiplier = m;
        self
    }
    pub fn latency(mut self, m: f64) -> Self {
        self.latency_multiplier = m;
        self
    }
    pub fn noise(mut self, sigma: f64) -> Self {
        self.overdispersion = sigma;
        self
    }
    pub fn rps(mut self, rps: f64) -> Self {
        self.rps = rps;
        self
    }
    pub fn base_errors(mut self, rate: f64) -> Self {
        self.base_error_rate = rate;
        self
    }
    /// A daily pattern of amplitude `a`, the rollout starting at `at` (time
    /// of day, seconds).
    pub fn diurnal(mut self, a: f64, at: f64) -> Self {
        self.diurnal = a;
        self.start_of_day = at;
        self
    }
    pub fn fault(mut self, start: f64, end: f64) -> Self {
        self.fault = Some(OutsideFault {
            start,
            end,
            error_rate: 0.05,
            latency_multiplier: 2.0,
        });
        self
    }

    fn load(&self, t: f64) -> f64 {
        1.0 + self.diurnal * (2.0 * std::f64::consts::PI * (self.start_of_day + t) / DAY).sin()
    }

    /// Share of the service on the new version at `t`.
    fn new_share(&self, t: f64) -> f64 {
        if t <= 0.0 {
            0.0
        } else if self.rollout > 0.0 {
            (t / self.rollout).min(1.0)
        } else {
            1.0
        }
    }
}

/// The scenarios of the before/after part of `rollbot bench judge`.
pub fn standard_scenarios() -> Vec<BaScenario> {
    let rising = 0.0;
    let peak = DAY / 4.0;
    let mut v = vec![
        BaScenario::new("ba good: steady", true),
        BaScenario::new("ba good: noisy σ=0.5", true).noise(0.5),
        BaScenario::new("ba good: diurnal ramp", true).diurnal(0.5, rising),
        BaScenario::new("ba good: outside fault 10–20m", true).fault(600.0, 1200.0),
        BaScenario::new("ba good: low traffic 20 rps", true)
            .rps(20.0)
            .base_errors(0.01),
    ];
    for m in [1.5, 2.0, 3.0, 10.0] {
        v.push(BaScenario::new(&format!("ba bad: errors {m}×"), false).errors(m));
    }
    v.extend([
        BaScenario::new("ba bad: latency +30%", false).latency(1.3),
        BaScenario::new("ba bad: latency 2×", false).latency(2.0),
        BaScenario::new("ba bad: errors 3× at a traffic peak", false)
            .diurnal(0.5, peak)
            .errors(3.0),
        BaScenario::new("ba bad: errors 3× on a diurnal ramp", false)
            .diurnal(0.5, rising)
            .errors(3.0),
    ]);
    v
}

/// One run's series: the reference window, the watch, and both one week
/// earlier.
pub struct BaRun {
    pub reference: Vec<TrackSample>,
    pub after: Vec<(f64, TrackSample)>,
    pub week_ago_reference: Vec<TrackSample>,
    pub week_ago_after: Vec<TrackSample>,
}

/// Draws one run of a scenario.
pub fn simulate(sc: &BaScenario, seed: u64) -> BaRun {
    let mut today = Series::new(sc, seed, 0);
    let mut week = Series::new(sc, seed, 10);
    let times = |from: f64, to: f64| {
        let n = ((to - from) / sc.tick).round() as i64;
        (1..=n).map(move |k| from + k as f64 * sc.tick)
    };
    let reference = times(-sc.reference, 0.0)
        .map(|t| today.sample(t, true))
        .collect();
    let after = times(0.0, sc.horizon)
        .map(|t| (t, today.sample(t, true)))
        .collect();
    // One week earlier: the same hours, other noise, no change, no fault.
    let week_ago_reference = times(-sc.reference, 0.0)
        .map(|t| week.sample(t - WEEK, false))
        .collect();
    let week_ago_after = times(0.0, sc.horizon)
        .map(|t| week.sample(t - WEEK, false))
        .collect();
    BaRun {
        reference,
        after,
        week_ago_reference,
        week_ago_after,
    }
}

/// One series' random streams.
struct Series<'a> {
    sc: &'a BaScenario,
    traffic: ChaCha8Rng,
    noise: ChaCha8Rng,
    errors: ChaCha8Rng,
    latency: ChaCha8Rng,
}

impl<'a> Series<'a> {
    fn new(sc: &'a BaScenario, seed: u64, first_stream: u64) -> Self {
        let stream = |id: u64| {
            let mut r = ChaCha8Rng::seed_from_u64(seed);
            r.set_stream(first_stream + id);
            r
        };
        Series {
            sc,
            traffic: stream(1),
            noise: stream(2),
            errors: stream(3),
            latency: stream(4),
        }
    }

    /// The tick ending at `t` (seconds from the start; a week earlier is
    /// `t − 1 week`, which has the same time of day).
    fn sample(&mut self, t: f64, with_change: bool) -> TrackSample {
        let sc = self.sc;
        let load = sc.load(t);
        let n = poisson(&mut self.traffic, sc.rps * load * sc.tick);
        let z_err: f64 = self.noise.sample(StandardNormal);
        let z_lat: f64 = self.noise.sample(StandardNormal);
        let u: f64 = self.errors.gen();
        let share = if with_change { sc.new_share(t) } else { 0.0 };
        let fault = sc
            .fault
            .filter(|f| with_change && t > f.start && t <= f.end);
        let sigma = sc.overdispersion;
        let noise = (sigma * z_err - sigma * sigma / 2.0).exp();
        let old_rate = sc.base_error_rate * load.powf(sc.error_load_exponent);
        let rate = fault.map_or(old_rate, |f| f.error_rate.max(old_rate))
            * (1.0 + (sc.error_multiplier - 1.0) * share)
            * noise;
        let errors = poisson_quantile(u, n as f64 * rate.min(1.0)).min(n);
        // Latency: a mixture of the old and new versions' lognormals.
        let mu = sc.latency_median.ln()
            + sc.latency_load_exponent * load.ln()
            + fault.map_or(0.0, |f| f.latency_multiplier.ln())
            + sigma / 4.0 * z_lat;
        let (s, m) = (sc.latency_sigma, sc.latency_multiplier.ln());
        let cdf = |x: f64| {
            (1.0 - share) * normal_cdf((x.ln() - mu) / s)
                + share * normal_cdf((x.ln() - mu - m) / s)
        };
        let buckets = histogram(&mut self.latency, n, cdf);
        TrackSample {
            requests: n,
            errors,
            latency_buckets: buckets,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(s: &[TrackSample]) -> f64 {
        let (e, n) = s
            .iter()
            .fold((0, 0), |(e, n), x| (e + x.errors, n + x.requests));
        e as f64 / n as f64
    }

    #[test]
    fn a_run_has_the_stated_windows_traffic_and_effect() {
        let sc = BaScenario::new("x", false).errors(3.0).noise(0.0);
        let r = simulate(&sc, 1);
        assert_eq!(r.reference.len(), 180);
        assert_eq!(r.after.len(), 360);
        assert_eq!(r.week_ago_after.len(), 360);
        let n: u64 = r.reference.iter().map(|s| s.requests).sum();
        assert!((n as f64 / (2000.0 * 1800.0) - 1.0).abs() < 0.01, "{n}");
        assert!((rate(&r.reference) / 0.001 - 1.0).abs() < 0.05);
        // Once the rolling update is through, the service has 3× the errors;
        // a week earlier it had none of the change.
        let late: Vec<TrackSample> = r.after[60..].iter().map(|(_, s)| s.clone()).collect();
        assert!((rate(&late) / 0.003 - 1.0).abs() < 0.05);
        assert!((rate(&r.week_ago_after) / 0.001 - 1.0).abs() < 0.05);
    }

    #[test]
    fn the_daily_pattern_moves_traffic_and_rates_the_same_way_each_week() {
        let sc = BaScenario::new("d", true).diurnal(0.5, 0.0).noise(0.0);
        let r = simulate(&sc, 2);
        let first = r.after[0].1.requests as f64;
        let last = r.after[359].1.requests as f64;
        // sin rises from 0 to sin(2π/24) = 0.259 over the hour: load 1 → 1.13.
        assert!(last / first > 1.08, "{first} → {last}");
        let today: Vec<TrackSample> = r.after.iter().map(|(_, s)| s.clone()).collect();
        assert!(rate(&today) > rate(&r.reference));
        assert!((rate(&today) / rate(&r.week_ago_after) - 1.0).abs() < 0.05);
    }

    #[test]
    fn scenario_names_are_unique_and_cover_the_issue() {
        let s = standard_scenarios();
        let mut names: Vec<&str> = s.iter().map(|s| s.name.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), s.len());
        assert!(s.iter().any(|s| s.good && s.diurnal > 0.0));
        assert!(s.iter().any(|s| s.good && s.fault.is_some()));
        assert!(s.iter().any(|s| !s.good && s.start_of_day == DAY / 4.0));
        assert!(
            s.iter()
                .filter(|s| !s.good && s.error_multiplier > 1.0)
                .count()
                >= 4
        );
        assert!(
            s.iter()
                .filter(|s| !s.good && s.latency_multiplier > 1.0)
                .count()
                >= 2
        );
    }
}
