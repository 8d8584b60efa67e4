//! `freeze_after_rollback`: a succeeded rollback of a service that sets it
//! freezes the service's promotions for that long, through an ordinary ad
//! hoc freeze: audited, shown in `/status`, lifted with `/unfreeze`. A
//! failed rollback freezes nothing.

use crate::support::in_process;
use crate::support::{rollbot, text};
use rollbot::audit::{Entry, Outcome as AuditOutcome};
use rollbot::domain::{Actor, Platform};
use rollbot::engine::{Outcome, Refusal, Status};
use rollbot::runtime::Runtime;

const CONFIG: &str = r##"
[metrics]
source = "simulated"

[channels.deploys]
console = "#deploys"

[backends.sim]
type = "simulated"

[[services]]
name = "checkout"
backend = "sim"
deploy_channel = "deploys"
freeze_after_rollback = "1h"

[[services]]
name = "search"
backend = "sim"

[[roles.admin]]
members = ["console:admin"]
"##;

fn admin() -> Actor {
    Actor::new(Platform::Console, "admin", "Ada Admin")
}

async fn command(rt: &Runtime, line: &str) -> Outcome {
    rollbot::intake::handle_line(&rt.engine, admin(), line, None).await
}

fn freeze_entries(rt: &Runtime) -> Vec<Entry> {
    let mut all = Vec::new();
    rt.engine
        .audit()
        .for_each(&mut |e| {
            if e.record.action == "freeze" && e.record.outcome == AuditOutcome::Succeeded {
                all.push(e);
            }
            true
        })
        .unwrap();
    all
}

#[tokio::test]
async fn a_rollback_freezes_promotions_until_unfrozen() {
    let dir = tempfile::tempdir().unwrap();
    let rt = in_process::start(dir.path(), CONFIG, vec![]).await;

    let o = command(&rt, "/rollback checkout bad deploy").await;
    assert_eq!(o.status, Status::Succeeded, "{}", o.message.plain());
    let m = o.message.plain();
    assert!(
        m.contains("Promotions of checkout are frozen until")
            && m.contains("(freeze_after_rollback); `/unfreeze checkout` lifts it"),
        "{m}"
    );

    let frozen = freeze_entries(&rt);
    assert_eq!(frozen.len(), 1, "one audited freeze");
    assert_eq!(frozen[0].record.actor.qualified_id(), "system:rollbot");
    assert_eq!(frozen[0].record.service.as_deref(), Some("checkout"));
    assert_eq!(frozen[0].record.correlation_id, o.correlation_id);
    assert_eq!(
        frozen[0].record.reason,
        "automatic freeze for 1h after the rollback of checkout (freeze_after_rollback)"
    );

    let p = command(&rt, "/promote checkout").await;
    assert_eq!(p.status, Status::Refused, "{}", p.message.plain());
    assert_eq!(p.refusal, Some(Refusal::Frozen));
    assert!(
        p.message.plain().contains("checkout is frozen by rollbot"),
        "{}",
        p.message.plain()
    );
    assert_eq!(rt.simulated["sim"].count("checkout", "promote"), 0);

    let s = command(&rt, "/status checkout").await.message.plain();
    assert!(s.contains("Freeze checkout"), "{s}");
    assert!(s.contains("freeze_after_rollback"), "{s}");

    // Another service without the key is not frozen by its rollback.
    let o = command(&rt, "/rollback search").await;
    assert_eq!(o.status, Status::Succeeded, "{}", o.message.plain());
    assert_eq!(freeze_entries(&rt).len(), 1);

    let u = command(&rt, "/unfreeze checkout").await;
    assert_eq!(u.status, Status::Succeeded, "{}", u.message.plain());
    // The promote now reaches the backend, which has no canary left to
    // promote after the rollback.
    let p = command(&rt, "/promote checkout").await;
    assert_ne!(p.refusal, Some(Refusal::Frozen), "{}", p.message.plain());
    assert!(
        p.message.plain().contains("no canary in progress"),
        "{}",
        p.message.plain()
    );
}

/// A rollback that finds the service already on its target changes
/// nothing, so it freezes nothing either.
#[tokio::test]
async fn a_rollback_that_changed_nothing_freezes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let rt = in_process::start(dir.path(), CONFIG, vec![]).await;
    let o = command(&rt, "/rollback checkout bad deploy").await;
    assert_eq!(o.status, Status::Succeeded, "{}", o.message.plain());
    let m = o.message.plain();
    let live = m
        .split(" serves 100%")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .unwrap_or_else(|| panic!("no live revision in: {m}"))
        .to_string();
    let u = command(&rt, "/unfreeze checkout").await;
    assert_eq!(u.status, Status::Succeeded, "{}", u.message.plain());

    let again = command(&rt, &format!("/rollback checkout to {live} once more")).await;
    assert_eq!(again.status, Status::Succeeded, "{}", again.message.plain());
    let m = again.message.plain();
    assert!(m.contains("already live; nothing changed"), "{m}");
    assert!(!m.contains("frozen"), "{m}");
    assert_eq!(
        freeze_entries(&rt).len(),
        1,
        "only the first rollback froze"
    );
    let s = command(&rt, "/status checkout").await.message.plain();
    assert!(!s.contains("freeze_after_rollback"), "{s}");
}

#[tokio::test]
async fn a_longer_freeze_in_place_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let rt = in_process::start(dir.path(), CONFIG, vec![]).await;
    let f = command(&rt, "/freeze checkout for 3h launch").await;
    assert_eq!(f.status, Status::Succeeded, "{}", f.message.plain());

    let o = command(&rt, "/rollback checkout").await;
    assert_eq!(o.status, Status::Succeeded, "{}", o.message.plain());
    assert!(
        o.message.plain().contains("stay frozen until"),
        "{}",
        o.message.plain()
    );
    let s = command(&rt, "/status checkout").await.message.plain();
    assert!(s.contains("launch"), "{s}");
    assert!(!s.contains("freeze_after_rollback"), "{s}");
}

#[tokio::test]
async fn a_failed_rollback_freezes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let rt = in_process::start(dir.path(), CONFIG, vec![]).await;
    rt.simulated["sim"].inject_failure("checkout", "rollback", 1, "the cluster said no");

    let o = command(&rt, "/rollback checkout").await;
    assert_eq!(o.status, Status::Failed, "{}", o.message.plain());
    assert!(
        !o.message.plain().contains("frozen"),
        "{}",
        o.message.plain()
    );
    assert!(freeze_entries(&rt).is_empty());
    let p = command(&rt, "/promote checkout").await;
    assert_eq!(p.status, Status::Succeeded, "{}", p.message.plain());
}

#[tokio::test]
async fn a_dry_run_freezes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let rt = in_process::start(dir.path(), CONFIG, vec![]).await;
    let o = command(&rt, "/rollback checkout dry-run").await;
    assert_eq!(o.status, Status::Succeeded, "{}", o.message.plain());
    assert!(freeze_entries(&rt).is_empty());
    let p = command(&rt, "/promote checkout").await;
    assert_eq!(p.status, Status::Succeeded, "{}", p.message.plain());
}

#[test]
fn check_config_reports_a_bad_duration_at_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rollbot.toml");
    std::fs::write(
        &path,
        "[backends.sim]\ntype = \"simulated\"\n\n[[services]]\nname = \"checkout\"\nbackend = \"sim\"\nfreeze_after_rollback = \"an hour\"\n",
    )
    .unwrap();
    let o = rollbot(&["check-config", path.to_str().unwrap()]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains(&format!("{}:7:25:", path.display())), "{t}");
    assert!(t.contains("`an hour` is not a duration"), "{t}");
}
