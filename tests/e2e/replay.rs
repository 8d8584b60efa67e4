//! `rollbot replay` backtests a policy on recorded ticks; bad input names the
//! line and judges nothing.

use crate::support::{replay_summary, rollbot, text};

#[test]
fn exported_scenarios_replay_to_the_right_verdicts() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("scenarios");
    let o = rollbot(&[
        "bench",
        "judge",
        "--seeds",
        "1",
        "--export",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("GOOD canaries"), "{}", text(&o));
    // One seed cannot show a false-rollback rate under 2%: the bench says
    // so instead of failing every good scenario.
    let report = text(&o);
    let good: Vec<&str> = report
        .lines()
        .skip_while(|l| !l.starts_with("Targets"))
        .filter(|l| l.contains(" good:"))
        .collect();
    assert!(!good.is_empty(), "{report}");
    assert!(
        good.iter().all(|l| l.contains("too few seeds to judge")),
        "{report}"
    );
    assert!(report.contains("--seeds 189 or more"), "{report}");

    let summary = |file: &str| replay_summary(&["--input", out.join(file).to_str().unwrap()]);
    let bad = summary("bad-errors-3x-at-5pct.jsonl");
    assert!(bad["first_rollback_t"].as_f64().unwrap() > 300.0, "{bad}");
    assert_eq!(bad["final_verdict"], "failing");
    let good = summary("good-identical-0-1pct-errors.jsonl");
    assert!(good["first_rollback_t"].is_null(), "{good}");

    // The readable timeline says why.
    let o = rollbot(&[
        "replay",
        "--input",
        out.join("bad-errors-3x-at-5pct.jsonl").to_str().unwrap(),
    ]);
    let t = text(&o);
    assert!(t.contains("failing") && t.contains("5xx rate"), "{t}");
}

#[test]
fn malformed_input_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.jsonl");
    std::fs::write(
        &f,
        "{\"t\": 10, \"track\": \"baseline\", \"requests\": 100, \"errors\": 0, \"latency_buckets\": [[0.1, 90], [\"+Inf\", 100]]}\n\
         {\"t\": 10, \"track\": \"canary\", \"requests\": 10, \"errors\": 0, \"latency_buckets\": [[0.1, 9], [\"+Inf\", 8]]}\n",
    )
    .unwrap();
    let o = rollbot(&["replay", "--input", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let t = text(&o);
    assert!(t.contains("line 2"), "{t}");
    assert!(
        o.stdout.is_empty(),
        "nothing is judged from a half-read file: {}",
        String::from_utf8_lossy(&o.stdout)
    );
}
