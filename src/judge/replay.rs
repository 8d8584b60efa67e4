//! `rollbot replay`: judges a recorded rollout tick by tick so a policy can
//! be backtested on past deployments.
//!
//! Input is JSON Lines, one object per tick per track, counts per tick:
//!
//! ```text
//! {"t": 10, "track": "baseline", "requests": 9500, "errors": 9, "latency_buckets": [[0.05, 7000], [0.1, 9100], ["+Inf", 9500]]}
//! {"t": 10, "track": "canary", "requests": 500, "errors": 2, "latency_buckets": [[0.05, 360], [0.1, 470], ["+Inf", 500]], "cpu": 0.41}
//! ```
//!
//! Optional: `cpu`, `memory` (0–1), `ready_failures`, `circuit_open`, and
//! `"no_data": true` (with no metrics) for a track whose metrics were missing
//! at that tick. The whole file is checked before anything is judged.

use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::{Path, PathBuf};

use super::{
    fmt_duration, Evaluation, Judge, JudgePolicy, SequentialJudge, Tick, Track, TrackSample,
    Verdict,
};

/// Why a replay could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("line {line}: {message}")]
    Line { line: usize, message: String },
    #[error("policy {path}: {message}")]
    Policy { path: PathBuf, message: String },
    #[error("the input holds no ticks")]
    Empty,
    #[error("--tick {tick}s is shorter than the recording's {step}s steps, which cannot be split: record at the evidence step instead (rollbot replay --from-prometheus --interval 10s, or the bench's --export), then replay it with any --tick")]
    TickTooShort { tick: f64, step: f64 },
}

/// A bucket bound: a number or the string "+Inf".
#[derive(Deserialize)]
#[serde(untagged)]
enum Le {
    Num(f64),
    Str(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    t: f64,
    track: Track,
    requests: Option<u64>,
    errors: Option<u64>,
    latency_buckets: Option<Vec<(Le, u64)>>,
    cpu: Option<f64>,
    memory: Option<f64>,
    ready_failures: Option<u64>,
    circuit_open: Option<bool>,
    #[serde(default)]
    no_data: bool,
}

fn line_err(line: usize, message: impl Into<String>) -> ReplayError {
    ReplayError::Line {
        line,
        message: message.into(),
    }
}

fn to_sample(l: Line, n: usize) -> Result<Option<TrackSample>, ReplayError> {
    if l.no_data {
        if l.requests.is_some() || l.errors.is_some() || l.latency_buckets.is_some() {
            return Err(line_err(
                n,
                "a \"no_data\": true line must not carry metrics",
            ));
        }
        return Ok(None);
    }
    let requests = l.requests.ok_or_else(|| {
        line_err(
            n,
            "missing field `requests` (write \"no_data\": true if the metrics were missing)",
        )
    })?;
    let errors = l
        .errors
        .ok_or_else(|| line_err(n, "missing field `errors`"))?;
    if errors > requests {
        return Err(line_err(
            n,
            format!("errors ({errors}) exceed requests ({requests})"),
        ));
    }
    let mut buckets = Vec::new();
    if let Some(raw) = l.latency_buckets {
        let last = raw.len();
        for (i, (le, count)) in raw.into_iter().enumerate() {
            let le = match le {
                Le::Num(v) if v.is_finite() => v,
                Le::Str(s) if s == "+Inf" => f64::INFINITY,
                Le::Str(s) => {
                    return Err(line_err(
                        n,
                        format!("bucket bound {s:?} is not a number or \"+Inf\""),
                    ))
                }
                Le::Num(v) => {
                    return Err(line_err(
                        n,
                        format!("bucket bound {v} is not finite; write \"+Inf\""),
                    ))
                }
            };
            if let Some(&(prev_le, prev_count)) = buckets.last() {
                if le <= prev_le {
                    return Err(line_err(
                        n,
                        format!("bucket bounds must increase: {le} after {prev_le}"),
                    ));
                }
                if count < prev_count {
                    return Err(line_err(
                        n,
                        format!(
                            "bucket counts decrease: {count} at le={} after {prev_count} at le={prev_le} (counts are cumulative)",
                            if le.is_infinite() { "+Inf".to_string() } else { le.to_string() }
                        ),
                    ));
                }
            }
            if le.is_infinite() && i + 1 != last {
                return Err(line_err(n, "the \"+Inf\" bucket must be the last one"));
            }
            buckets.push((le, count));
        }
        if !buckets.is_empty()
            && !buckets
                .last()
                .is_some_and(|b: &(f64, u64)| b.0.is_infinite())
        {
            return Err(line_err(
                n,
                "latency_buckets must end with [\"+Inf\", count]",
            ));
        }
    }
    for (name, v) in [("cpu", l.cpu), ("memory", l.memory)] {
        if let Some(v) = v {
            if !(0.0..=1.0).contains(&v) {
                return Err(line_err(
                    n,
                    format!("{name} is a utilisation from 0 to 1, got {v}"),
                ));
            }
        }
    }
    Ok(Some(TrackSample {
        requests,
        errors,
        latency_buckets: buckets,
        cpu: l.cpu,
        memory: l.memory,
        ready_failures: l.ready_failures,
        circuit_open: l.circuit_open,
    }))
}

/// Parses a whole JSONL recording into ticks, or names the first bad line.
pub fn parse_jsonl(text: &str) -> Result<Vec<Tick>, ReplayError> {
    struct Open {
        t: f64,
        first_line: usize,
        baseline: Option<(Option<TrackSample>, usize)>,
        canary: Option<(Option<TrackSample>, usize)>,
    }
    fn close(o: Open) -> Result<Tick, ReplayError> {
        match (o.baseline, o.canary) {
            (Some((b, _)), Some((c, _))) => Ok(Tick {
                t: o.t,
                baseline: b,
                canary: c,
            }),
            (Some(_), None) => Err(line_err(
                o.first_line,
                format!("t={} has a baseline line but no canary line", o.t),
            )),
            (None, Some(_)) => Err(line_err(
                o.first_line,
                format!("t={} has a canary line but no baseline line", o.t),
            )),
            (None, None) => unreachable!("a tick is opened by a line"),
        }
    }
    let mut ticks = Vec::new();
    let mut open: Option<Open> = None;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let l: Line =
            serde_json::from_str(raw).map_err(|e| line_err(n, format!("malformed line: {e}")))?;
        if !l.t.is_finite() || l.t < 0.0 {
            return Err(line_err(
                n,
                format!("t must be seconds since the rollout started, got {}", l.t),
            ));
        }
        let (t, track) = (l.t, l.track);
        let sample = to_sample(l, n)?;
        if let Some(o) = &open {
            if t < o.t {
                return Err(line_err(n, format!("t goes backwards: {t} after {}", o.t)));
            }
            if t > o.t {
                ticks.push(close(open.take().expect("checked"))?);
            }
        }
        let o = open.get_or_insert(Open {
            t,
            first_line: n,
            baseline: None,
            canary: None,
        });
        let slot = match track {
            Track::Baseline => &mut o.baseline,
            Track::Canary => &mut o.canary,
        };
        if let Some((_, prev)) = slot {
            return Err(line_err(
                n,
                format!("a second {track} line for t={t} (the first is line {prev})"),
            ));
        }
        *slot = Some((sample, n));
    }
    if let Some(o) = open {
        ticks.push(close(o)?);
    }
    if ticks.is_empty() {
        return Err(ReplayError::Empty);
    }
    Ok(ticks)
}

fn track_json(t: f64, track: Track, s: &Option<TrackSample>) -> serde_json::Value {
    let Some(s) = s else {
        return json!({"t": t, "track": track, "no_data": true});
    };
    let buckets: Vec<serde_json::Value> = s
        .latency_buckets
        .iter()
        .map(|&(le, c)| {
            if le.is_infinite() {
                json!(["+Inf", c])
            } else {
                json!([le, c])
            }
        })
        .collect();
    let mut v = json!({"t": t, "track": track, "requests": s.requests, "errors": s.errors, "latency_buckets": buckets});
    let m = v.as_object_mut().expect("an object");
    if let Some(x) = s.cpu {
        m.insert("cpu".into(), json!(x));
    }
    if let Some(x) = s.memory {
        m.insert("memory".into(), json!(x));
    }
    if let Some(x) = s.ready_failures {
        m.insert("ready_failures".into(), json!(x));
    }
    if let Some(x) = s.circuit_open {
        m.insert("circuit_open".into(), json!(x));
    }
    v
}

/// Writes ticks in the replay format (baseline line, then canary line).
pub fn to_jsonl(ticks: &[Tick]) -> String {
    let mut out = String::new();
    for tick in ticks {
        for (track, s) in [
            (Track::Baseline, &tick.baseline),
            (Track::Canary, &tick.canary),
        ] {
            out.push_str(&track_json(tick.t, track, s).to_string());
            out.push('\n');
        }
    }
    out
}

/// Judges ticks in order with rollbot's judge.
pub fn judge_ticks(ticks: &[Tick], policy: &JudgePolicy) -> Vec<Evaluation> {
    let mut j = SequentialJudge::new(policy.clone());
    ticks.iter().map(|t| j.observe(t)).collect()
}

/// The recording's step: the most common gap between its ticks.
fn recorded_step(ticks: &[Tick]) -> f64 {
    let mut gaps: Vec<i64> = ticks
        .windows(2)
        .map(|w| ((w[1].t - w[0].t) * 1000.0).round() as i64)
        .filter(|&g| g > 0)
        .collect();
    gaps.sort_unstable();
    let mut best = (0, 0usize);
    for g in gaps.chunk_by(|a, b| a == b) {
        if g.len() > best.1 {
            best = (g[0], g.len());
        }
    }
    best.0 as f64 / 1000.0
}

/// What the live controller ticking every `tick` seconds would do with
/// this recording: each tick judges the recording's steps since the last
/// tick one by one, as the controller judges its evidence steps, and acts
/// at the end of the tick (the evaluations are dated then). A tick shorter
/// than the recording's steps cannot be predicted from it.
pub fn judge_at_tick(
    ticks: Vec<Tick>,
    policy: &JudgePolicy,
    tick: f64,
) -> Result<Vec<Evaluation>, ReplayError> {
    let step = recorded_step(&ticks);
    if tick + 1e-9 < step {
        return Err(ReplayError::TickTooShort { tick, step });
    }
    let mut j = SequentialJudge::new(policy.clone());
    Ok(super::window::ticks_of(ticks, tick, |s| s.t)
        .into_iter()
        .map(|w| {
            let end = w.last().map_or(0.0, |s| (s.t / tick - 1e-9).ceil() * tick);
            let mut e = j.observe_window(&w);
            e.t = end;
            e
        })
        .collect())
}

/// The summary line of a JSON replay.
#[derive(Serialize)]
struct Summary {
    first_pause_t: Option<f64>,
    first_rollback_t: Option<f64>,
    final_verdict: Verdict,
}

/// Replays `input` with the policy in the TOML file `policy` (defaults when
/// None). Returns the readable timeline of verdict changes, or with `json`
/// one JSON object per evaluation and a summary object.
pub fn run(input: &Path, policy: Option<&Path>, json: bool) -> Result<String, ReplayError> {
    run_at(input, policy, json, None)
}

/// `run`, predicting a controller that ticks every `tick` seconds when set.
pub fn run_at(
    input: &Path,
    policy: Option<&Path>,
    json: bool,
    tick: Option<f64>,
) -> Result<String, ReplayError> {
    let text = std::fs::read_to_string(input).map_err(|source| ReplayError::Io {
        path: input.to_path_buf(),
        source,
    })?;
    let policy = match policy {
        None => JudgePolicy::default(),
        Some(p) => {
            let body = std::fs::read_to_string(p).map_err(|source| ReplayError::Io {
                path: p.to_path_buf(),
                source,
            })?;
            JudgePolicy::from_toml(&body).map_err(|message| ReplayError::Policy {
                path: p.to_path_buf(),
                message,
            })?
        }
    };
    let ticks = parse_jsonl(&text)?;
    let evals = match tick {
        Some(tick) => judge_at_tick(ticks, &policy, tick)?,
        None => judge_ticks(&ticks, &policy),
    };
    Ok(if json {
        render_json(&evals)
    } else {
        render_timeline(&evals)
    })
}

fn summary(evals: &[Evaluation]) -> Summary {
    use super::Recommendation as R;
    Summary {
        first_pause_t: evals
            .iter()
            .find(|e| e.recommendation == R::Pause)
            .map(|e| e.t),
        first_rollback_t: evals
            .iter()
            .find(|e| e.recommendation == R::Rollback)
            .map(|e| e.t),
        final_verdict: evals.last().map(|e| e.verdict).unwrap_or(Verdict::NoData),
    }
}

/// One JSON object per evaluation, then `{"summary": …}`.
pub fn render_json(evals: &[Evaluation]) -> String {
    let mut out = String::new();
    for e in evals {
        let score = if e.score.is_finite() {
            json!((e.score * 10.0).round() / 10.0)
        } else {
            json!(null)
        };
        let v = json!({"t": e.t, "verdict": e.verdict, "action": e.recommendation, "score": score, "reasons": e.reasons});
        out.push_str(&v.to_string());
        out.push('\n');
    }
    out.push_str(&json!({ "summary": summary(evals) }).to_string());
    out.push('\n');
    out
}

/// The verdict changes with their reasons, then a summary.
pub fn render_timeline(evals: &[Evaluation]) -> String {
    let mut out = String::new();
    let mut prev: Option<(Verdict, super::Recommendation)> = None;
    for e in evals {
        let now = (e.verdict, e.recommendation);
        if prev != Some(now) {
            let score = if e.score.is_finite() {
                format!("score {:.0}", e.score)
            } else {
                "no score".into()
            };
            let change = match prev {
                Some((v, _)) if v != e.verdict => format!("{v} → "),
                _ => String::new(),
            };
            out.push_str(&format!(
                "[{}] {change}{} ({score}, action {})\n",
                fmt_duration(e.t),
                e.verdict,
                e.recommendation
            ));
            for r in &e.reasons {
                out.push_str(&format!("    - {r}\n"));
            }
            prev = Some(now);
        }
    }
    let s = summary(evals);
    let when = |t: Option<f64>| t.map(fmt_duration).unwrap_or_else(|| "never".into());
    out.push_str(&format!(
        "summary: first pause {}, first rollback {}, final verdict {} after {} evaluations\n",
        when(s.first_pause_t),
        when(s.first_rollback_t),
        s.final_verdict,
        evals.len()
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recording_at_10s_predicts_the_controller_at_60s() {
        let sc = crate::judge::sim::Scenario::new("bad", false).errors(3.0);
        let mut sim = crate::judge::sim::Simulator::new(&sc, 4);
        let ticks: Vec<Tick> = std::iter::from_fn(|| sim.next_tick()).collect();
        let first = |e: &[Evaluation]| {
            e.iter()
                .find(|e| e.recommendation == super::super::Recommendation::Rollback)
                .map(|e| e.t)
                .expect("rolled back")
        };
        let at_10 = first(&judge_ticks(&ticks, &JudgePolicy::default()));
        let at_60 = judge_at_tick(ticks.clone(), &JudgePolicy::default(), 60.0).unwrap();
        assert_eq!(at_60.len(), 60, "one evaluation per minute of the hour");
        assert_eq!(first(&at_60), (at_10 / 60.0).ceil() * 60.0);
        // A 60 s recording cannot say what 10 s ticks would do.
        let coarse = super::super::window::ticks_of(ticks, 60.0, |s| s.t)
            .iter()
            .map(|w| super::super::window::aggregate(w))
            .collect();
        assert!(matches!(
            judge_at_tick(coarse, &JudgePolicy::default(), 10.0),
            Err(ReplayError::TickTooShort { .. })
        ));
    }
    use crate::judge::sim::{standard_scenarios, Simulator};

    const GOOD: &str = r#"{"t": 10, "track": "baseline", "requests": 9500, "errors": 9, "latency_buckets": [[0.05, 7000], [0.1, 9100], [0.25, 9450], [0.5, 9490], [1, 9498], ["+Inf", 9500]]}
{"t": 10, "track": "canary", "requests": 500, "errors": 2, "latency_buckets": [[0.05, 360], [0.1, 470], [0.25, 497], [0.5, 499], [1, 500], ["+Inf", 500]], "cpu": 0.41}
"#;

    fn err_of(text: &str) -> String {
        parse_jsonl(text).unwrap_err().to_string()
    }

    #[test]
    fn the_issue_example_parses() {
        let ticks = parse_jsonl(GOOD).unwrap();
        assert_eq!(ticks.len(), 1);
        let c = ticks[0].canary.as_ref().unwrap();
        assert_eq!(c.requests, 500);
        assert_eq!(c.cpu, Some(0.41));
        assert_eq!(c.latency_buckets.last(), Some(&(f64::INFINITY, 500)));
    }

    #[test]
    fn bad_input_names_the_line_and_the_problem() {
        let e = err_of(&format!(
            "{GOOD}{{\"t\": 20, \"track\": \"baseline\", \"requests\": 5,\n"
        ));
        assert!(e.starts_with("line 3: malformed line"), "{e}");

        let e = err_of(&format!(
            "{GOOD}{{\"t\": 20, \"track\": \"baseline\", \"requests\": 5, \"errors\": 0}}\n"
        ));
        assert!(e.contains("line 3") && e.contains("no canary line"), "{e}");

        let e = err_of(&format!(
            "{GOOD}{}",
            GOOD.replace("[0.25, 497]", "[0.25, 400]")
                .replace("\"t\": 10", "\"t\": 20")
        ));
        assert!(
            e.starts_with("line 4: bucket counts decrease: 400 at le=0.25 after 470"),
            "{e}"
        );

        let e = err_of(&format!("{GOOD}{}", GOOD.replace("\"t\": 10", "\"t\": 5")));
        assert!(e.starts_with("line 3: t goes backwards: 5 after 10"), "{e}");

        let e = err_of(&GOOD.replace("\"cpu\"", "\"cpuu\""));
        assert!(
            e.starts_with("line 2: malformed line: unknown field `cpuu`"),
            "{e}"
        );

        let e = err_of(&GOOD.replace("canary", "baseline"));
        assert!(
            e.contains("line 2: a second baseline line for t=10 (the first is line 1)"),
            "{e}"
        );

        let e = err_of(&GOOD.replace("[\"+Inf\", 500]", "[2, 500]"));
        assert!(e.contains("line 2") && e.contains("+Inf"), "{e}");
    }

    #[test]
    fn nothing_is_judged_from_a_half_read_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.jsonl");
        let mut text = GOOD.to_string();
        for k in 2..40 {
            text.push_str(&GOOD.replace("\"t\": 10", &format!("\"t\": {}", k * 10)));
        }
        text.push_str("not json\n");
        std::fs::write(&p, &text).unwrap();
        let e = run(&p, None, false).unwrap_err();
        assert_eq!(e.to_string().split(':').next().unwrap(), "line 79");
    }

    #[test]
    fn a_bad_policy_file_is_reported_with_its_fix() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("r.jsonl");
        std::fs::write(&input, GOOD).unwrap();
        let pol = dir.path().join("p.toml");
        std::fs::write(&pol, "rollback_below = 90\n").unwrap();
        let e = run(&input, Some(&pol), false).unwrap_err().to_string();
        assert!(
            e.contains("rollback_below must be lower than pause_below"),
            "{e}"
        );
    }

    fn export_and_replay(name: &str, json: bool, policy: Option<&str>) -> String {
        let sc = standard_scenarios()
            .into_iter()
            .find(|s| s.name == name)
            .unwrap();
        let mut sim = Simulator::new(&sc, 1);
        let ticks: Vec<Tick> = std::iter::from_fn(|| sim.next_tick()).collect();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.jsonl");
        std::fs::write(&p, to_jsonl(&ticks)).unwrap();
        let pol = policy.map(|body| {
            let f = dir.path().join("p.toml");
            std::fs::write(&f, body).unwrap();
            f
        });
        run(&p, pol.as_deref(), json).unwrap()
    }

    #[test]
    fn an_exported_bad_scenario_replays_to_a_rollback() {
        let out = export_and_replay("bad: errors 3× at 5%", true, None);
        let last: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
        let t = last["summary"]["first_rollback_t"]
            .as_f64()
            .expect("a rollback");
        assert!(t > 300.0 && t < 900.0, "{t}");
        assert_eq!(last["summary"]["final_verdict"], "failing");
        let first: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
        assert_eq!(first["t"], 10.0);
        assert_eq!(first["action"], "none");
        assert_eq!(out.lines().count(), 361);
        let text = export_and_replay("bad: errors 3× at 5%", false, None);
        assert!(
            text.contains("healthy → failing") || text.contains("borderline → failing"),
            "{text}"
        );
        assert!(text.contains("canary 5xx rate"), "{text}");
    }

    #[test]
    fn an_exported_good_scenario_does_not_roll_back() {
        let out = export_and_replay("good: noisy σ=0.5", true, None);
        let last: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
        assert!(last["summary"]["first_rollback_t"].is_null(), "{last}");
        assert_ne!(last["summary"]["final_verdict"], "failing");
    }

    #[test]
    fn a_policy_file_changes_the_judgement() {
        // A 10-minute warm-up delays the rollback of the same recording.
        let out = export_and_replay("bad: errors 3× at 5%", true, Some("warm_up = \"10m\"\n"));
        let last: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
        assert!(last["summary"]["first_rollback_t"].as_f64().unwrap() > 600.0);
    }

    #[test]
    fn export_round_trips() {
        let sc = &standard_scenarios()[0];
        let mut sim = Simulator::new(sc, 3);
        let mut ticks: Vec<Tick> = std::iter::from_fn(|| sim.next_tick()).take(20).collect();
        ticks[5].canary = None;
        let back = parse_jsonl(&to_jsonl(&ticks)).unwrap();
        assert_eq!(back.len(), ticks.len());
        let near = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(x), Some(y)) => (x - y).abs() < 1e-12,
            (x, y) => x == y,
        };
        for (a, b) in back.iter().zip(&ticks) {
            assert_eq!(a.t, b.t);
            for (x, y) in [(&a.baseline, &b.baseline), (&a.canary, &b.canary)] {
                assert_eq!(x.is_some(), y.is_some());
                if let (Some(x), Some(y)) = (x, y) {
                    assert_eq!(
                        (x.requests, x.errors, &x.latency_buckets),
                        (y.requests, y.errors, &y.latency_buckets)
                    );
                    assert!(near(x.cpu, y.cpu) && near(x.memory, y.memory));
                    assert_eq!(
                        (x.ready_failures, x.circuit_open),
                        (y.ready_failures, y.circuit_open)
                    );
                }
            }
        }
    }
}
