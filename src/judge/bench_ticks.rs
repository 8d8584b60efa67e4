//! The tick-length targets of `rollbot bench judge --tick …`: the same
//! verdicts whatever the controller's tick length.

use std::fmt::Write as _;

use super::bench::BenchResult;
use super::bench_before_after::BaResult;
use super::fmt_duration;
use super::stats::wilson;

/// A detection may take this much longer at the longest tick than at the
/// shortest, plus one tick (the controller acts at the end of its tick).
const SLOWDOWN: f64 = 1.5;

fn secs(x: f64) -> String {
    if x.is_finite() {
        fmt_duration(x)
    } else {
        "—".into()
    }
}

/// Whether a median time to detect at `long` ticks keeps the bound set by
/// the one at `short` ticks: ≤ 1.5× plus one long tick.
pub fn ttd_within(short_ttd: f64, long_ttd: f64, long_tick: f64) -> bool {
    if !short_ttd.is_finite() {
        return true;
    }
    long_ttd <= SLOWDOWN * short_ttd + long_tick + 1e-9
}

/// One line per check: rollbot's judge's false rollbacks ≤ 1% at every tick
/// length on every good scenario; on every bad scenario the median time to
/// detect at the longest tick ≤ 1.5× that at the shortest, plus one tick.
/// The same for the before/after judge (its detection is a failing verdict).
pub fn targets(results: &[(BenchResult, BaResult)]) -> String {
    let mut o = String::from("Targets across tick lengths (rollbot's judge)\n");
    let Some(((short, short_ba), (long, long_ba))) = results
        .iter()
        .min_by(|a, b| a.0.tick.total_cmp(&b.0.tick))
        .zip(results.iter().max_by(|a, b| a.0.tick.total_cmp(&b.0.tick)))
    else {
        return o;
    };
    let mut all = true;
    let mut line = |o: &mut String, ok: bool, text: String| {
        all &= ok;
        let _ = writeln!(o, "  {} {text}", if ok { "met    " } else { "NOT MET" });
    };
    for (si, sc) in short.scenarios.iter().enumerate().filter(|(_, s)| s.good) {
        let worst = results
            .iter()
            .map(|(r, _)| (r.tick, &r.cells[0][si]))
            .max_by(|a, b| {
                (a.1.rollbacks as f64 / a.1.runs as f64)
                    .total_cmp(&(b.1.rollbacks as f64 / b.1.runs as f64))
            });
        if let Some((tick, c)) = worst {
            let rate = c.rollbacks as f64 / c.runs.max(1) as f64;
            let hi = wilson(c.rollbacks, c.runs, 1.959_964).1;
            line(
                &mut o,
                rate <= 0.01,
                format!(
                    "{}: false rollbacks ≤ 1% at every tick (worst {:.1}% at {} ticks, Wilson upper {:.1}%)",
                    sc.name,
                    rate * 100.0,
                    fmt_duration(tick),
                    hi * 100.0
                ),
            );
        }
    }
    for (si, sc) in short.scenarios.iter().enumerate().filter(|(_, s)| !s.good) {
        let (a, b) = (short.cells[0][si].ttd_median, long.cells[0][si].ttd_median);
        line(
            &mut o,
            ttd_within(a, b, long.tick),
            format!(
                "{}: median TTD {} at {} ticks vs {} at {} (bound 1.5× + one tick: {})",
                sc.name,
                secs(b),
                fmt_duration(long.tick),
                secs(a),
                fmt_duration(short.tick),
                secs(SLOWDOWN * a + long.tick)
            ),
        );
    }
    // Before/after: rollbot's judge without the weekly correction.
    for (si, sc) in short_ba.scenarios.iter().enumerate() {
        if sc.good {
            let worst = results
                .iter()
                .map(|(r, ba)| (r.tick, &ba.cells[0][si]))
                .max_by_key(|(_, c)| c.rollbacks);
            if let Some((tick, c)) = worst {
                let rate = c.rollbacks as f64 / c.runs.max(1) as f64;
                line(
                    &mut o,
                    rate <= 0.01,
                    format!(
                        "before/after {}: false rollbacks ≤ 1% at every tick (worst {:.1}% at {} ticks)",
                        sc.name,
                        rate * 100.0,
                        fmt_duration(tick)
                    ),
                );
            }
        } else {
            let (a, b) = (
                short_ba.cells[0][si].ttd_median,
                long_ba.cells[0][si].ttd_median,
            );
            line(
                &mut o,
                ttd_within(a, b, long.tick),
                format!(
                    "before/after {}: median time to a failing verdict {} at {} ticks vs {} at {}",
                    sc.name,
                    secs(b),
                    fmt_duration(long.tick),
                    secs(a),
                    fmt_duration(short.tick)
                ),
            );
        }
    }
    let _ = writeln!(
        o,
        "  overall: {}",
        if all {
            "the same verdicts at every tick length"
        } else {
            "some tick-length targets not met (see above)"
        }
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::judge::bench::run_one_at;
    use crate::judge::bench_before_after::run_one_at as ba_run_one_at;
    use crate::judge::sim::Scenario;
    use crate::judge::sim_before_after::BaScenario;

    /// rollbot's judge on one seed at 10, 20, 30 and 60 s ticks: the
    /// rollback (or none) each time, seconds from the start.
    fn rollbacks(sc: &Scenario, seed: u64) -> Vec<(f64, Option<f64>)> {
        [10.0, 20.0, 30.0, 60.0]
            .into_iter()
            .map(|tick| (tick, run_one_at(sc, seed, tick).0[0].rollback))
            .collect()
    }

    #[test]
    fn the_same_rollout_gets_the_same_verdict_at_every_tick_length() {
        // A tail-latency regression and a late error regression took about
        // four times longer to detect at 60 s ticks when each tick was one
        // observation; a noisy good canary must stay unrolled at every tick.
        let bad = [
            Scenario::new("p99", false).p99_only(1.3),
            Scenario::new("late", false).errors(2.0).onset(900.0),
            Scenario::new("errors", false).errors(3.0),
        ];
        for sc in &bad {
            for seed in 1..=3 {
                let r = rollbacks(sc, seed);
                let at_10 = r[0]
                    .1
                    .unwrap_or_else(|| panic!("{} seed {seed}: not detected at 10 s", sc.name));
                for &(tick, at) in &r[1..] {
                    let at = at.unwrap_or_else(|| {
                        panic!("{} seed {seed}: not detected at {tick} s", sc.name)
                    });
                    // Decided at the same step, acted on at the end of
                    // the tick that holds it: at most one tick later.
                    assert!(
                        at >= at_10 && at < at_10 + tick,
                        "{} seed {seed}: {at} s at {tick} s ticks vs {at_10} s at 10 s",
                        sc.name
                    );
                }
            }
        }
        let good = Scenario::new("noisy", true).noise(0.5).base_errors(0.01);
        for seed in 1..=3 {
            assert!(
                rollbacks(&good, seed).iter().all(|(_, at)| at.is_none()),
                "seed {seed}"
            );
        }
    }

    #[test]
    fn a_before_after_rollout_gets_the_same_verdict_at_every_tick_length() {
        let sc = BaScenario::new("ba errors 3×", false).errors(3.0);
        let first = ba_run_one_at(&sc, 1, 10.0)[0]
            .failing
            .expect("detected at 10 s");
        for tick in [20.0, 30.0, 60.0] {
            let at = ba_run_one_at(&sc, 1, tick)[0].failing.expect("detected");
            assert!(
                at >= first && at < first + tick,
                "{at} at {tick} s vs {first}"
            );
        }
    }

    #[test]
    fn a_long_tick_may_add_half_again_and_one_tick() {
        assert!(ttd_within(120.0, 240.0, 60.0));
        assert!(!ttd_within(120.0, 250.0, 60.0));
        // Nothing detected at the short tick sets no bound.
        assert!(ttd_within(f64::INFINITY, f64::INFINITY, 60.0));
        assert!(!ttd_within(60.0, f64::INFINITY, 60.0));
    }
}
