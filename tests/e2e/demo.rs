//! `rollbot demo --script` runs the whole loop: a healthy summary, a
//! borderline prompt, a refused promote during a freeze, a rollback, and the
//! audit trail.

use crate::support::{rollbot, text};

#[test]
fn the_tour_shows_the_whole_loop() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let o = rollbot(&[
        "demo",
        "--script",
        "config/demo-tour.txt",
        "--data",
        data.to_str().unwrap(),
    ]);
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
    ] {
        assert!(t.contains(expected), "missing {expected:?} in:\n{t}");
    }
    // Exactly one rollback, even though the button was pressed twice.
    assert_eq!(
        t.matches("✅ Rolled back checkout v42 → v41").count(),
        2,
        "one in #deploys, one in #incidents:\n{t}"
    );

    // The audit trail is in the store and its chain verifies.
    let v = rollbot(&["audit", "verify", "--data", data.to_str().unwrap()]);
    assert!(v.status.success(), "{}", text(&v));
    let l = rollbot(&[
        "audit",
        "list",
        "--data",
        data.to_str().unwrap(),
        "--service",
        "checkout",
    ]);
    let lt = text(&l);
    assert!(
        lt.contains("rollback checkout by priya — succeeded"),
        "{lt}"
    );
    assert!(lt.contains("promote checkout by you — refused"), "{lt}");
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
    let o = rollbot(&[
        "demo",
        "--script",
        script.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ]);
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
    let o = rollbot(&[
        "demo",
        "--script",
        script.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ]);
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
    let l = rollbot(&[
        "audit",
        "list",
        "--data",
        data.to_str().unwrap(),
        "--service",
        "checkout",
    ]);
    let lt = text(&l);
    assert!(lt.contains("pause checkout by omar — succeeded"), "{lt}");
    assert!(lt.contains("resume checkout by sam — succeeded"), "{lt}");
    assert!(lt.contains("pause checkout by dana — refused"), "{lt}");
}
