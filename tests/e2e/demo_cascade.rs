//! The demo tour's dependency-aware rollback, as a newcomer reads it:
//! a release of payments, checkout and frontend (frontend depends on
//! checkout, checkout on payments); `/rollback checkout` shows the plan,
//! dependents first, and asks; `/rollback release` goes back frontend →
//! checkout → payments, each step verified before the next; and a second
//! release whose checkout step fails halts there, saying which services are
//! rolled back and which are not.

use crate::support::audit;
use crate::support::{demo, text};
use std::path::Path;

/// The part of `t` from the first `from` to the next `to` (or the end).
fn between<'a>(t: &'a str, from: &str, to: &str) -> &'a str {
    let at = t
        .find(from)
        .unwrap_or_else(|| panic!("no {from:?} in:\n{t}"));
    let rest = &t[at..];
    let end = rest[from.len()..]
        .find(to)
        .map(|e| e + from.len())
        .unwrap_or(rest.len());
    &rest[..end]
}

/// Where each of `lines` first appears in `t`, which must be in that order.
fn in_order(t: &str, lines: &[&str]) {
    let mut last = 0;
    for l in lines {
        let at = t[last..]
            .find(l)
            .unwrap_or_else(|| panic!("{l:?} missing or out of order in:\n{t}"));
        last += at + l.len();
    }
}

#[test]
fn the_tour_rolls_a_release_back_dependents_first_and_halts_where_a_step_fails() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let o = demo(Path::new("config/demo-tour.txt"), &data);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("deployed frontend f18 in release 2026-12-07.1 as a canary"),
        "{t}"
    );

    // Rolling checkout back alone: the plan, dependents first, and a question.
    let asked = between(&t, "you> /rollback checkout", "you> /rollback release");
    in_order(
        asked,
        &[
            "⚠️ Roll back checkout alone? Services that depend on it moved after it",
            "frontend (f17 → f18 at",
            "depends on checkout and moved after checkout's current rollout (v41 → v43 at",
            "Plan, dependents first: frontend → checkout.",
            "[3] Roll back all in order   [4] Only checkout   [5] Cancel",
            "you> /press 5",
            "you chose Cancel; nothing else is done.",
        ],
    );
    assert!(!asked.contains("✅ Rolled back"), "{asked}");

    // The release, dependents first, each step verified before the next.
    let first = between(&t, "you> /rollback release 2026-12-07.1", "you> /wait");
    in_order(
        first,
        &[
            "✅ Rolled back frontend f18 → f17",
            "Verified: f17 is live",
            "✅ Rolled back checkout v43 → v41",
            "Verified: v41 is live",
            "✅ Rolled back payments v10 → v9",
            "Verified: v9 is live",
            "✅ Rolled back release 2026-12-07.1: frontend, checkout, payments",
            "Order (dependents first): frontend → checkout → payments",
        ],
    );
    // Each step on a line of its own, under the field's name.
    assert!(
        first.contains(
            "   Rolled back: frontend f18 → f17\n                checkout v43 → v41\n                payments v10 → v9\n"
        ),
        "{first}"
    );

    // checkout's old image is gone: the second release halts at checkout.
    // The tour's last part: from `/break` to the end.
    let second = between(&t, "you> /break checkout", "\u{0}");
    in_order(
        second,
        &[
            "the simulated cluster will fail the next rollback of checkout: the image of checkout v41 is gone from the registry",
            "✅ Rolled back frontend f19 → f17",
            "🚨 Rollback of checkout failed",
            "pods of checkout v41 stay in ImagePullBackOff",
            "🚨 Rollback of release 2026-12-07.2 halted at checkout: 1 of 3 services rolled back",
            "Rolled back: frontend f19 → f17",
            "Not rolled back: checkout (halted here), payments (not reached)",
            "What to do: Fix checkout or roll it back by hand, then run `/rollback release 2026-12-07.2` again",
        ],
    );
    assert!(!second.contains("Rolled back payments"), "{second}");

    // The audit log tells the same: payments was rolled back once (the
    // first release), checkout's second rollback failed.
    let lp = audit::list(&data, &["--service", "payments"]);
    assert_eq!(
        lp.matches("rollback payments by you — succeeded").count(),
        1,
        "{lp}"
    );
    let lc = audit::list(&data, &["--service", "checkout"]);
    assert!(lc.contains("rollback checkout by you — failed"), "{lc}");
}

#[test]
fn a_bad_release_name_or_service_to_break_changes_nothing_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("bad.txt");
    std::fs::write(
        &script,
        "/deploy frontend f18 --release=-x\n/break nosuch\n/help break\n",
    )
    .unwrap();
    let o = demo(&script, &dir.path().join("data"));
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("the release `-x` is not a release name; write letters, digits and . _ - : (not starting with -), such as 2026-12-06.1; nothing was deployed"),
        "{t}"
    );
    assert!(!t.contains("deployed frontend f18"), "{t}");
    assert!(
        t.contains("usage: /break SERVICE, one of checkout, payments, search, frontend; nothing was changed"),
        "{t}"
    );
    assert!(
        t.contains("The simulated cluster fails the next rollback of SERVICE"),
        "{t}"
    );
}
