//! The before/after part of `rollbot bench judge`: rollouts without a
//! concurrent baseline (`sim_before_after`), judged by rollbot's
//! before/after judge (with and without the weekly correction) and by
//! static thresholds, both Flagger's defaults and the best static rule
//! that keeps its false rollbacks ≤ 5% on every good scenario (tuned on the
//! same runs, which flatters it).
//!
//! A before/after verdict that is failing but not overwhelming asks a
//! person (Roll back / Continue) instead of rolling back, so two rates are
//! shown: automatic rollbacks, and failing verdicts (a rollback or a Roll
//! back prompt). A false alarm is an automatic rollback of a good change;
//! detection is a failing verdict on a bad one.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::before_after::{BeforeAfterJudge, BeforeAfterPolicy, Seasonality};
use super::reference::StaticThresholds;
use super::sim_before_after::{simulate, standard_scenarios, BaScenario};
use super::stats::wilson;
use super::{fmt_duration, Judge, JudgePolicy, Recommendation, Tick, TrackSample, Verdict};

/// What one policy did on one run.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BaOutcome {
    pub rollback: Option<f64>,
    /// First failing verdict (a rollback or a Roll back prompt).
    pub failing: Option<f64>,
    pub pause: Option<f64>,
}

/// The static rules tried when tuning: (minimum success rate, maximum p99
/// in seconds, failed checks before a rollback).
fn static_grid() -> Vec<(f64, f64, u32)> {
    let mut v = Vec::new();
    for s in [0.999, 0.998, 0.995, 0.99, 0.98, 0.95, 0.9] {
        for p in [0.5, 1.0, 2.0, 5.0] {
            for n in [3, 5, 10, 15] {
                v.push((s, p, n));
            }
        }
    }
    v
}

fn static_rule((s, p, n): (f64, f64, u32)) -> StaticThresholds {
    let mut rule = StaticThresholds::new();
    rule.min_success = s;
    rule.max_p99 = p;
    rule.threshold = n;
    rule
}

const OURS: [&str; 2] = ["rollbot before/after", "rollbot before/after, weekly"];

/// Outcomes in this order: rollbot's two variants, Flagger's defaults,
/// then every static rule of the grid.
/// Runs rollbot's two variants, Flagger's defaults and every static rule of
/// the grid on one seed of one scenario.
pub fn run_one(sc: &BaScenario, seed: u64) -> Vec<BaOutcome> {
    run_one_at(sc, seed, sc.tick)
}

/// The same with a controller ticking every `tick` seconds: rollbot's
/// judges take the tick's steps one by one (`Judge::observe_window`), the
/// static rules the window added up; decisions count at the tick's end.
pub fn run_one_at(sc: &BaScenario, seed: u64, tick: f64) -> Vec<BaOutcome> {
    let run = simulate(sc, seed);
    let base = JudgePolicy::default();
    let mut ours: Vec<BeforeAfterJudge> = [Seasonality::None, Seasonality::Weekly]
        .into_iter()
        .map(|seasonality| {
            BeforeAfterJudge::new(
                &base,
                BeforeAfterPolicy {
                    seasonality,
                    ..Default::default()
                },
                run.reference.clone(),
            )
            .with_week_ago_reference(&run.week_ago_reference)
        })
        .collect();
    // Flagger's defaults first, then the grid.
    let mut statics: Vec<StaticThresholds> = std::iter::once(StaticThresholds::new())
        .chain(static_grid().into_iter().map(static_rule))
        .collect();
    let mut out = vec![BaOutcome::default(); ours.len() + statics.len()];
    let note = |o: &mut BaOutcome, t: f64, verdict: Verdict, rec: Recommendation| {
        if o.rollback.is_some() {
            return;
        }
        match (verdict, rec) {
            (_, Recommendation::Rollback) => {
                o.rollback = Some(t);
                o.failing.get_or_insert(t);
            }
            (Verdict::Failing, _) => {
                o.failing.get_or_insert(t);
            }
            (_, Recommendation::Pause) => {
                o.pause.get_or_insert(t);
            }
            _ => {}
        }
    };
    let steps: Vec<(usize, &(f64, TrackSample))> = run.after.iter().enumerate().collect();
    for window in super::window::ticks_of(steps, tick, |(_, (t, _))| *t) {
        let t = window.last().map_or(0.0, |(_, (t, _))| *t);
        let now: Vec<Tick> = window
            .iter()
            .map(|&(i, (t, now))| Tick {
                t: *t,
                baseline: run.week_ago_after.get(i).cloned(),
                canary: Some(now.clone()),
            })
            .collect();
        for (j, judge) in ours.iter_mut().enumerate() {
            let e = judge.observe_window(&now);
            note(&mut out[j], t, e.verdict, e.recommendation);
        }
        // Static rules look at the service alone; the reference tick only
        // satisfies their "both tracks present" check.
        let steps: Vec<Tick> = window
            .iter()
            .map(|&(i, (t, now))| Tick {
                t: *t,
                baseline: run.reference.get(i % run.reference.len().max(1)).cloned(),
                canary: Some(now.clone()),
            })
            .collect();
        for (j, judge) in statics.iter_mut().enumerate() {
            let e = judge.observe_window(&steps);
            note(&mut out[ours.len() + j], t, e.verdict, e.recommendation);
        }
    }
    out
}

/// One policy on one scenario over every seed.
#[derive(Clone, Debug, Default)]
pub struct BaCell {
    pub runs: u64,
    pub rollbacks: u64,
    pub failing: u64,
    pub pauses: u64,
    /// Median seconds from the start to the first failing verdict (∞ when
    /// fewer than half the runs have one).
    pub ttd_median: f64,
}

fn cell(runs: &[BaOutcome]) -> BaCell {
    let mut ttd: Vec<f64> = runs
        .iter()
        .map(|r| r.failing.unwrap_or(f64::INFINITY))
        .collect();
    ttd.sort_by(|a, b| a.total_cmp(b));
    BaCell {
        runs: runs.len() as u64,
        rollbacks: runs.iter().filter(|r| r.rollback.is_some()).count() as u64,
        failing: runs.iter().filter(|r| r.failing.is_some()).count() as u64,
        pauses: runs.iter().filter(|r| r.pause.is_some()).count() as u64,
        ttd_median: ttd
            .get((ttd.len().max(1) - 1) / 2)
            .copied()
            .unwrap_or(f64::NAN),
    }
}

/// The before/after results: cells[policy][scenario] for the policies
/// shown (rollbot, rollbot weekly, Flagger's defaults, the tuned rule).
pub struct BaResult {
    pub policy_names: Vec<String>,
    pub scenarios: Vec<BaScenario>,
    pub cells: Vec<Vec<BaCell>>,
    /// Whether some static rule kept false rollbacks ≤ 5% everywhere.
    pub tuned_found: bool,
}

/// Runs every scenario × seed on two threads, at 10 s ticks.
pub fn run(seeds: u32) -> BaResult {
    run_at(seeds, 10.0)
}

/// The same with the controller ticking every `tick` seconds.
pub fn run_at(seeds: u32, tick: f64) -> BaResult {
    let scenarios = standard_scenarios();
    let jobs: Vec<(usize, u64)> = (0..scenarios.len())
        .flat_map(|s| (1..=seeds as u64).map(move |seed| (s, seed)))
        .collect();
    let next = AtomicUsize::new(0);
    let all: Mutex<Vec<Vec<Vec<BaOutcome>>>> = Mutex::new(vec![Vec::new(); scenarios.len()]);
    let threads = std::thread::available_parallelism()
        .map(|n| n.get().min(2))
        .unwrap_or(1);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(si, seed)) = jobs.get(i) else {
                    break;
                };
                let o = run_one_at(&scenarios[si], seed, tick);
                all.lock().expect("no panics while held")[si].push(o);
            });
        }
    });
    let all = all.into_inner().expect("threads joined");
    // cells over every policy run, grid included: per[policy][scenario].
    let policies = all.first().and_then(|r| r.first()).map_or(0, Vec::len);
    let per: Vec<Vec<BaCell>> = (0..policies)
        .map(|p| {
            all.iter()
                .map(|runs| cell(&runs.iter().map(|o| o[p]).collect::<Vec<_>>()))
                .collect()
        })
        .collect();
    let first_static = OURS.len() + 1;
    let grid = static_grid();
    let good: Vec<usize> = (0..scenarios.len())
        .filter(|&i| scenarios[i].good)
        .collect();
    let bad: Vec<usize> = (0..scenarios.len())
        .filter(|&i| !scenarios[i].good)
        .collect();
    let tuned = (0..grid.len())
        .filter(|&g| {
            good.iter().all(|&si| {
                let c = &per[first_static + g][si];
                c.rollbacks as f64 <= 0.05 * c.runs as f64
            })
        })
        .max_by_key(|&g| {
            bad.iter()
                .map(|&si| per[first_static + g][si].rollbacks)
                .sum::<u64>()
        });
    let mut names: Vec<String> = OURS.iter().map(|s| s.to_string()).collect();
    names.push("P1 static (Flagger defaults)".into());
    let mut cells: Vec<Vec<BaCell>> = per[..first_static].to_vec();
    if let Some(g) = tuned {
        let (s, p, n) = grid[g];
        names.push(format!(
            "P1 static tuned (≥{:.1}% ok, p99≤{}s, {n} checks)",
            s * 100.0,
            p
        ));
        cells.push(per[first_static + g].clone());
    }
    BaResult {
        policy_names: names,
        scenarios,
        cells,
        tuned_found: tuned.is_some(),
    }
}

fn pct(k: u64, n: u64) -> String {
    format!("{:.1}%", 100.0 * k as f64 / n.max(1) as f64)
}

fn secs(x: f64) -> String {
    if x.is_finite() {
        fmt_duration(x)
    } else {
        "—".into()
    }
}

/// The section of the report: the table, then its targets.
pub fn render(r: &BaResult, seeds: u32) -> String {
    render_table(r, seeds) + &targets(r)
}

/// The before/after table.
pub fn render_table(r: &BaResult, seeds: u32) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "\nBEFORE/AFTER rollouts (rolling, blue-green, flag): the service after the change vs the 30m before, {} scenarios × {seeds} seeds",
        r.scenarios.len()
    );
    let _ = writeln!(
        o,
        "(auto rb = automatic rollback; rb or ask = a failing verdict: a rollback or a Roll back prompt; TTD = start to the first failing verdict)"
    );
    let w = r
        .policy_names
        .iter()
        .map(|n| n.chars().count())
        .max()
        .unwrap_or(10);
    let _ = writeln!(
        o,
        "{:<38} {:<w$} {:>8} {:>10} {:>8} {:>9}",
        "scenario", "policy", "auto rb", "rb or ask", "pause", "TTD med"
    );
    for (si, sc) in r.scenarios.iter().enumerate() {
        for (p, name) in r.policy_names.iter().enumerate() {
            let c = &r.cells[p][si];
            let _ = writeln!(
                o,
                "{:<38} {:<w$} {:>8} {:>10} {:>8} {:>9}",
                if p == 0 { sc.name.as_str() } else { "" },
                name,
                pct(c.rollbacks, c.runs),
                pct(c.failing, c.runs),
                pct(c.pauses, c.runs),
                secs(c.ttd_median)
            );
        }
    }
    o
}

/// False automatic rollbacks ≤ 1% (Wilson upper ≤ 2%) on every good
/// scenario, and on every bad one a failing verdict at least as often as
/// the tuned static rule rolls back.
pub fn targets(r: &BaResult) -> String {
    let mut o = String::from("\nTargets (before/after)\n");
    let enough = super::bench::seeds_to_judge();
    let mut all = true;
    let mut undecided = 0;
    for (p, name) in OURS.iter().enumerate() {
        for (si, sc) in r.scenarios.iter().enumerate().filter(|(_, s)| s.good) {
            let c = &r.cells[p][si];
            let (lo, hi) = wilson(c.rollbacks, c.runs, 1.959_964);
            if c.runs < enough && lo <= 0.02 {
                undecided += 1;
                let _ = writeln!(
                    o,
                    "  ?       {name}, {}: too few seeds to judge (false rollbacks {} of {})",
                    sc.name, c.rollbacks, c.runs
                );
                continue;
            }
            let ok = c.rollbacks as f64 <= 0.01 * c.runs as f64 && hi <= 0.02;
            all &= ok;
            let _ = writeln!(
                o,
                "  {} {name}, {}: false rollbacks {} ≤ 1%, Wilson upper {:.1}% ≤ 2% (asks {})",
                if ok { "met    " } else { "NOT MET" },
                sc.name,
                pct(c.rollbacks, c.runs),
                hi * 100.0,
                pct(c.failing, c.runs)
            );
        }
    }
    let tuned = r.policy_names.len() - 1;
    if !r.tuned_found {
        let _ = writeln!(
            o,
            "  no static rule of the grid keeps false rollbacks ≤ 5% on every good scenario: nothing to compare detection with"
        );
    }
    for (si, sc) in r.scenarios.iter().enumerate().filter(|(_, s)| !s.good) {
        for (p, name) in OURS.iter().enumerate() {
            let c = &r.cells[p][si];
            let (ok, vs) = if r.tuned_found {
                let t = &r.cells[tuned][si];
                (
                    c.failing >= t.rollbacks,
                    format!(" ≥ {} of the tuned static rule", pct(t.rollbacks, t.runs)),
                )
            } else {
                (true, String::new())
            };
            all &= ok;
            let _ = writeln!(
                o,
                "  {} {name}, {}: detects {}{vs} (rolls back by itself {})",
                if ok { "met    " } else { "NOT MET" },
                sc.name,
                pct(c.failing, c.runs),
                pct(c.rollbacks, c.runs)
            );
        }
    }
    let _ = writeln!(
        o,
        "  overall: {}",
        match (all, undecided) {
            (true, 0) => "all before/after targets met".to_string(),
            (true, n) => format!(
                "no before/after target missed, but {n} need more seeds (--seeds {enough} or more)"
            ),
            (false, _) => "some before/after targets not met (see above)".to_string(),
        }
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outside_fault_is_asked_about_while_a_tenfold_change_is_rolled_back() {
        let sc = standard_scenarios();
        let fault = sc.iter().find(|s| s.fault.is_some()).unwrap();
        let tenfold = sc.iter().find(|s| s.error_multiplier == 10.0).unwrap();
        for seed in 1..=3 {
            let o = run_one(fault, seed);
            assert!(o[0].rollback.is_none(), "seed {seed}: {:?}", o[0]);
            assert!(o[0].failing.is_some(), "asked: {:?}", o[0]);
            // Flagger's defaults roll back on the outside fault.
            assert!(o[2].rollback.is_some(), "{:?}", o[2]);
            let o = run_one(tenfold, seed);
            assert!(
                o[0].rollback.is_some_and(|t| t < 600.0),
                "seed {seed}: {:?}",
                o[0]
            );
        }
    }

    #[test]
    fn the_section_shows_every_scenario_and_the_targets() {
        let r = run(2);
        let out = render(&r, 2);
        for sc in standard_scenarios() {
            assert!(out.contains(&sc.name), "{}", sc.name);
        }
        assert!(out.contains("Targets (before/after)"), "{out}");
        assert!(out.contains("rollbot before/after, weekly"), "{out}");
        assert!(out.contains("overall:"), "{out}");
    }
}
