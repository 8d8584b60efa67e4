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
fn help_answers_every_topic_usefully() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("help.txt");
    std::fs::write(&script, "/help press\n/help nosuch\n/help /freeze\n").unwrap();
    let o = rollbot(&[
        "demo",
        "--script",
        script.to_str().unwrap(),
        "--data",
        dir.path().join("data").to_str().unwrap(),
    ]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(!t.contains("unknown command"), "{t}");
    // The console's own command.
    assert!(t.contains("Press button N ([1], [2], …)"), "{t}");
    // Something that is no command: the list, not a dead end.
    assert!(t.contains("There is no command /nosuch."), "{t}");
    assert!(
        t.contains("/rollback <service> [to <revision>] [reason…]"),
        "{t}"
    );
    assert!(
        t.contains("/freeze <scope> [for <duration>] [reason…]\n"),
        "{t}"
    );
}
