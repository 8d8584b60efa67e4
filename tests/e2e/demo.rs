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
