//! `rollbot demo --script` runs the whole loop: a healthy summary, a
//! borderline prompt, a refused promote during a freeze, a rollback, a
//! rollback refused past an irreversible migration, and the audit trail.

use crate::support::audit;
use crate::support::{demo, rollbot, text};
use std::path::Path;

#[test]
fn the_tour_shows_the_whole_loop() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let o = demo(Path::new("config/demo-tour.txt"), &data);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    for expected in [
        "✅ Canary checkout v42: healthy",
        "⚠️ Not allowed: promote search",
        "⚠️ Frozen: prod/*",
        "⚠️ Promotion refused: frozen: promote checkout",
        "⚠️ The canary is borderline: checkout v42",
        "[1] Approve   [2] Roll back",
        "⚠️ Not allowed to answer: reject checkout",
        "✅ Rolled back checkout v42 → v41",
        "By: priya",
        "ℹ️ Already answered",
        "r312 fully promoted and serves 100%",
        "ℹ️ Audit log of checkout",
        "deployed payments v9 as a canary (migrations: 2026_12_drop_legacy_sku (contract, irreversible))",
        "⚠️ Refused past migration 2026_12_drop_legacy_sku: rollback payments",
        "Roll forward instead",
        "stop traffic to payments → reverse the migration → deploy the old code → start traffic",
    ] {
        assert!(t.contains(expected), "missing {expected:?} in:\n{t}");
    }
    // A promotion step reads as the success it is.
    assert!(
        t.contains(
            "Verified: canary r312 takes 25% of traffic (step 2 of 4); r311 serves the rest"
        ),
        "{t}"
    );
    assert!(!t.contains("Verified: r311 is live"), "{t}");
    // The incident calls the canary by its verdict.
    assert!(
        t.contains("Identified: priya chose Roll back for canary v42 of checkout, which the judge found borderline"),
        "{t}"
    );
    assert!(!t.contains("v42 of checkout is failing"), "{t}");
    // The prompt sits in the summary's thread, which gives the evidence:
    // it names the reason once, briefly, and points there.
    let at = t
        .find("⚠️ The canary is borderline: checkout v42")
        .expect("the prompt");
    let prompt = &t[at..at + t[at..].find("· prompt").unwrap()];
    assert!(
        prompt.contains("the evidence is in the summary above"),
        "{prompt}"
    );
    assert!(
        prompt.contains("Reason: borderline — error rate canary"),
        "{prompt}"
    );
    assert!(
        !prompt.contains("e-value"),
        "the long reason again: {prompt}"
    );
    assert_eq!(
        t.matches("not shown beyond the 1.05× tolerance").count(),
        t.matches("Canary checkout v42: borderline").count() + 1,
        "the long reason is in the summary (each time it is shown) and the audit view's verdict only:\n{t}"
    );
    // Exactly one rollback, even though the button was pressed twice.
    assert_eq!(
        t.matches("✅ Rolled back checkout v42 → v41").count(),
        2,
        "one in #deploys, one in #incidents:\n{t}"
    );

    // The audit trail is in the store and its chain verifies.
    let v = rollbot(&["audit", "verify", "--data", data.to_str().unwrap()]);
    assert!(v.status.success(), "{}", text(&v));
    let lt = audit::list(&data, &["--service", "checkout"]);
    assert!(
        lt.contains("rollback checkout by priya — succeeded"),
        "{lt}"
    );
    assert!(lt.contains("promote checkout by you — refused"), "{lt}");
    // The refused rollback of payments never reached the backend.
    let lp = audit::list(&data, &["--service", "payments"]);
    assert!(lp.contains("rollback payments by you — refused"), "{lp}");
    assert!(
        !lp.contains("rollback payments by you — requested (5xx after deploy)"),
        "{lp}"
    );
}

/// `rollbot demo ARGS` run in `cwd`, stopped (and the test failed) if it
/// has not ended within `limit`.
fn demo_in(cwd: &std::path::Path, args: &[&str], limit: std::time::Duration) -> String {
    use std::process::{Command, Stdio};
    let mut child = Command::new(crate::support::bin())
        .arg("demo")
        .args(args)
        .current_dir(cwd)
        .env("ROLLBOT_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("rollbot demo {args:?} did not end within {limit:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let o = child.wait_with_output().unwrap();
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    t
}

#[test]
fn each_run_starts_fresh_unless_data_is_given_and_says_where_its_state_is() {
    let cwd = tempfile::tempdir().unwrap();
    let script = cwd.path().join("freeze.txt");
    std::fs::write(&script, "/freeze payments for 1h run\n/audit payments\n").unwrap();
    let script = script.to_str().unwrap();
    let minute = std::time::Duration::from_secs(60);
    for _ in 0..2 {
        let t = demo_in(cwd.path(), &["--script", script], minute);
        assert!(t.contains("State: a fresh temporary directory"), "{t}");
        // The freeze of this run only: the first run's is gone.
        assert_eq!(
            t.matches("freeze payments by you — succeeded").count(),
            1,
            "{t}"
        );
        let dir = t
            .split("State: a fresh temporary directory, ")
            .nth(1)
            .and_then(|r| r.split(", removed").next())
            .unwrap();
        assert!(!std::path::Path::new(dir).exists(), "{dir} is left behind");
    }
    assert!(
        !cwd.path().join("rollbot-data").exists(),
        "nothing is kept in the working directory"
    );

    let data = cwd.path().join("kept");
    let data = data.to_str().unwrap();
    let first = demo_in(cwd.path(), &["--script", script, "--data", data], minute);
    assert!(
        first.contains(&format!(
            "State: {data} (kept; read it later with `rollbot audit list --data {data}`)"
        )),
        "{first}"
    );
    let second = demo_in(cwd.path(), &["--script", script, "--data", data], minute);
    assert!(
        second.contains(&format!(
            "State: {data}, continuing from an earlier run (2 audit entries"
        )),
        "{second}"
    );
    assert_eq!(
        second.matches("freeze payments by you — succeeded").count(),
        2,
        "{second}"
    );
}

#[test]
fn a_wait_of_years_is_capped_at_a_day() {
    let cwd = tempfile::tempdir().unwrap();
    let script = cwd.path().join("wait.txt");
    std::fs::write(&script, "/wait 99999999d\n/status checkout\n").unwrap();
    let t = demo_in(
        cwd.path(),
        &["--script", script.to_str().unwrap()],
        std::time::Duration::from_secs(120),
    );
    assert!(
        t.contains("waiting 1d instead of 99999999d: /wait goes at most 1d at a time"),
        "{t}"
    );
    assert!(t.contains("… 1d later"), "{t}");
}

#[test]
fn help_answers_every_topic_usefully() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("help.txt");
    std::fs::write(&script, "/help press\n/help nosuch\n/help /freeze\n").unwrap();
    let o = demo(&script, &dir.path().join("data"));
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(!t.contains("unknown command"), "{t}");
    // The console's own command.
    assert!(t.contains("Press button N ([1], [2], …)"), "{t}");
    // Something that is no command: the list, not a dead end.
    assert!(t.contains("There is no command /nosuch."), "{t}");
    assert!(
        t.contains("/rollback <service> [to <revision>] [force] [dry-run] [reason…]"),
        "{t}"
    );
    assert!(
        t.contains("/freeze <scope> [for <duration>] [reason…]\n"),
        "{t}"
    );
}

#[test]
fn the_demo_rollout_id_in_the_summary_gives_a_postmortem_draft() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let script = dir.path().join("rollback.txt");
    std::fs::write(
        &script,
        "/wait until prompt\n/as priya\n/press 2\n/wait 1m\n",
    )
    .unwrap();
    let o = demo(&script, &data);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("Rolled back checkout v42"), "{t}");
    // The summary's last line names the rollout.
    let id = t
        .split("rollout checkout-")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .map(|tail| format!("checkout-{tail}"))
        .unwrap_or_else(|| panic!("no rollout ID in:\n{t}"));

    let p = rollbot(&["postmortem", &id, "--data", data.to_str().unwrap()]);
    let md = text(&p);
    assert!(p.status.success(), "{md}");
    assert!(md.starts_with("# Postmortem draft: checkout v42"), "{md}");
    assert!(
        md.contains("canary rollout from v41 to v42, announced by demo"),
        "{md}"
    );
    assert!(
        md.contains("borderline after"),
        "the judge's verdicts:\n{md}"
    );
    assert!(md.contains("| priya | rollback | succeeded |"), "{md}");

    // An ID that is not in the store names the ones that are.
    let u = rollbot(&["postmortem", "nope", "--data", data.to_str().unwrap()]);
    let ut = text(&u);
    assert!(!u.status.success());
    assert!(ut.contains("no rollout `nope` in this store"), "{ut}");
    assert!(ut.contains(&id), "{ut}");
}

#[test]
fn pause_and_resume_are_commands_with_role_checks() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("pause.txt");
    std::fs::write(
        &script,
        "/help pause\n/as dana\n/pause checkout\n/as omar\n/pause checkout waiting for the db team\n/status checkout\n/as sam\n/resume checkout db is fine\n/status checkout\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let o = demo(&script, &data);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("/pause <service> [reason…]"), "{t}");
    // A viewer is refused, naming the roles that may pause.
    assert!(t.contains("Not allowed: pause checkout"), "{t}");
    assert!(t.contains("Paused checkout"), "{t}");
    assert!(t.contains("Resumed checkout"), "{t}");
    let paused_status = t
        .split("omar> /status checkout")
        .nth(1)
        .and_then(|rest| rest.split("sam>").next())
        .unwrap_or_default();
    assert!(paused_status.contains("paused"), "{t}");
    let lt = audit::list(&data, &["--service", "checkout"]);
    assert!(lt.contains("pause checkout by omar — succeeded"), "{lt}");
    assert!(lt.contains("resume checkout by sam — succeeded"), "{lt}");
    assert!(lt.contains("pause checkout by dana — refused"), "{lt}");
}
