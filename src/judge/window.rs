//! One controller tick's window as evidence steps.
//!
//! The judge's evidence has a fixed resolution (`EVIDENCE_FLOOR`, or the
//! scrape interval when longer), whatever the controller's tick length: a
//! 60 s tick brings the six 10 s steps six 10 s ticks would have brought,
//! and rollbot's judge takes each as its own observation. So the sequential
//! test, its per-window over-dispersion and every duration it counts mean
//! the same at any tick length, and a decision comes at most one tick after
//! the step that made it. A judge that only knows whole ticks (the
//! reference policies) sees the window added up, as one instant query over
//! the whole interval would have answered.

use super::{Evaluation, Recommendation, Tick, TrackSample, Verdict};
use std::time::Duration;

/// The shortest evidence step for ticks of 10 s and more: the tick the
/// judge was tuned at, short enough to decide quickly, long enough for a
/// 5 s scrape to land twice.
pub const EVIDENCE_FLOOR: Duration = Duration::from_secs(10);

/// The evidence step for a scrape interval (unknown: the floor) and a tick
/// length: every tick of 10 s or more judges the same steps; a shorter tick
/// (a test, a demo) keeps its own finer steps, as it was asked to.
pub fn evidence_step(scrape_interval: Option<Duration>, interval: Duration) -> Duration {
    let floor = EVIDENCE_FLOOR.min(interval);
    scrape_interval.map_or(floor, |s| s.max(floor))
}

/// Feeds a window's steps to `observe` one by one, in order. The answer is
/// the first step's that recommended a rollback (a controller ticking at
/// the step would have rolled back then), else the last step's.
pub fn each_step(steps: &[Tick], mut observe: impl FnMut(&Tick) -> Evaluation) -> Evaluation {
    let mut out: Option<Evaluation> = None;
    for s in steps {
        let e = observe(s);
        if out
            .as_ref()
            .is_some_and(|o| o.recommendation == Recommendation::Rollback)
        {
            continue;
        }
        out = Some(e);
    }
    out.unwrap_or_else(|| empty_window(f64::NAN))
}

/// The evaluation of a window without steps.
pub fn empty_window(t: f64) -> Evaluation {
    Evaluation::simple(
        t,
        Verdict::NoData,
        f64::NAN,
        Recommendation::None,
        "no metrics in this tick's window: no verdict; missing data never triggers a rollback, check the metric source".into(),
    )
}

/// The window added up into one tick, as `increase(…[interval])` would
/// answer: counts summed, utilisations averaged, a circuit open if it was
/// open in any step. A track missing from every step stays missing.
pub fn aggregate(steps: &[Tick]) -> Tick {
    let t = steps.last().map_or(f64::NAN, |s| s.t);
    Tick {
        t,
        baseline: sum_track(steps.iter().filter_map(|s| s.baseline.as_ref())),
        canary: sum_track(steps.iter().filter_map(|s| s.canary.as_ref())),
    }
}

fn sum_track<'a>(samples: impl Iterator<Item = &'a TrackSample>) -> Option<TrackSample> {
    let mut out: Option<TrackSample> = None;
    let (mut cpu, mut cpu_n, mut mem, mut mem_n) = (0.0, 0u32, 0.0, 0u32);
    for s in samples {
        let o = out.get_or_insert_with(|| TrackSample {
            latency_buckets: s.latency_buckets.iter().map(|&(le, _)| (le, 0)).collect(),
            ..TrackSample::default()
        });
        o.requests += s.requests;
        o.errors += s.errors;
        // A changed bucket layout cannot be summed; keep the first one.
        if o.latency_buckets.len() == s.latency_buckets.len()
            && o.latency_buckets
                .iter()
                .zip(&s.latency_buckets)
                .all(|(a, b)| super::stats::same_bound(a.0, b.0))
        {
            for (a, b) in o.latency_buckets.iter_mut().zip(&s.latency_buckets) {
                a.1 += b.1;
            }
        }
        if let Some(x) = s.cpu {
            cpu += x;
            cpu_n += 1;
        }
        if let Some(x) = s.memory {
            mem += x;
            mem_n += 1;
        }
        if let Some(x) = s.ready_failures {
            *o.ready_failures.get_or_insert(0) += x;
        }
        if let Some(x) = s.circuit_open {
            let c = o.circuit_open.get_or_insert(false);
            *c |= x;
        }
    }
    if let Some(o) = &mut out {
        o.cpu = (cpu_n > 0).then(|| cpu / cpu_n as f64);
        o.memory = (mem_n > 0).then(|| mem / mem_n as f64);
    }
    out
}

/// Splits a run of steps into controller ticks of `tick` seconds, each
/// ending on a multiple of `tick` (the controller's grid), the last one
/// possibly short.
pub fn ticks_of<T>(steps: Vec<T>, tick: f64, t_of: impl Fn(&T) -> f64) -> Vec<Vec<T>> {
    let mut out: Vec<Vec<T>> = Vec::new();
    let mut end = f64::NEG_INFINITY;
    for s in steps {
        let t = t_of(&s);
        if t > end + 1e-9 || out.is_empty() {
            end = (t / tick - 1e-9).ceil() * tick;
            out.push(Vec::new());
        }
        out.last_mut().expect("pushed above").push(s);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(t: f64, n: u64, e: u64, cpu: f64) -> Tick {
        let s = TrackSample {
            requests: n,
            errors: e,
            latency_buckets: vec![(0.1, n / 2), (f64::INFINITY, n)],
            cpu: Some(cpu),
            memory: None,
            ready_failures: Some(1),
            circuit_open: Some(t > 15.0),
        };
        Tick {
            t,
            baseline: Some(s.clone()),
            canary: Some(s),
        }
    }

    #[test]
    fn a_window_adds_up_as_one_query_over_the_interval_would() {
        let w = aggregate(&[step(10.0, 100, 1, 0.2), step(20.0, 300, 3, 0.4)]);
        let b = w.baseline.unwrap();
        assert_eq!(w.t, 20.0);
        assert_eq!((b.requests, b.errors), (400, 4));
        assert_eq!(b.latency_buckets, vec![(0.1, 200), (f64::INFINITY, 400)]);
        assert!((b.cpu.unwrap() - 0.3).abs() < 1e-12);
        assert_eq!(b.memory, None);
        assert_eq!((b.ready_failures, b.circuit_open), (Some(2), Some(true)));
        let gap = aggregate(&[Tick {
            t: 10.0,
            baseline: None,
            canary: None,
        }]);
        assert_eq!((gap.baseline, gap.canary), (None, None));
    }

    #[test]
    fn steps_fall_into_the_ticks_of_the_controller_grid() {
        let steps: Vec<Tick> = (1..=7).map(|k| step(k as f64 * 10.0, 1, 0, 0.1)).collect();
        let t: Vec<Vec<f64>> = ticks_of(steps, 30.0, |s| s.t)
            .iter()
            .map(|w| w.iter().map(|s| s.t).collect())
            .collect();
        assert_eq!(
            t,
            vec![vec![10.0, 20.0, 30.0], vec![40.0, 50.0, 60.0], vec![70.0]]
        );
    }

    #[test]
    fn a_rollback_inside_a_window_is_not_hidden_by_a_later_step() {
        let recs = [
            Recommendation::None,
            Recommendation::Rollback,
            Recommendation::Pause,
        ];
        let steps: Vec<Tick> = (1..=3).map(|k| step(k as f64 * 10.0, 1, 0, 0.1)).collect();
        let mut i = 0;
        let e = each_step(&steps, |s| {
            i += 1;
            Evaluation::simple(s.t, Verdict::Failing, 0.0, recs[i - 1], String::new())
        });
        assert_eq!(i, 3, "every step is observed");
        assert_eq!((e.t, e.recommendation), (20.0, Recommendation::Rollback));
        let secs = Duration::from_secs;
        assert_eq!(evidence_step(Some(secs(30)), secs(10)), secs(30));
        assert_eq!(evidence_step(Some(secs(5)), secs(60)), secs(10));
        assert_eq!(evidence_step(None, secs(60)), secs(10));
        assert_eq!(evidence_step(Some(secs(1)), secs(2)), secs(2));
    }
}
