//! Authorization, freezes, idempotency, locks, backend failures and refusals.

use super::*;

#[tokio::test]
async fn every_role_and_action_pair() {
    type MakeRequest = Box<dyn Fn(&str) -> Request>;
    let actions: Vec<(&str, MakeRequest)> = vec![
        ("rollback", Box::new(|a| rollback(a, "payments"))),
        ("promote", Box::new(|a| promote(a, "payments", false))),
        (
            "pause",
            Box::new(|a| Request::new(who(a), Action::Pause).service("payments")),
        ),
        (
            "resume",
            Box::new(|a| Request::new(who(a), Action::Resume).service("payments")),
        ),
        (
            "freeze",
            Box::new(|a| {
                Request::new(
                    who(a),
                    Action::Freeze {
                        scope: Scope::Service("payments".into()),
                        duration: Duration::from_secs(60),
                    },
                )
            }),
        ),
        (
            "unfreeze",
            Box::new(|a| {
                Request::new(
                    who(a),
                    Action::Unfreeze {
                        scope: Scope::Service("payments".into()),
                    },
                )
            }),
        ),
        (
            "auto",
            Box::new(|a| {
                Request::new(
                    who(a),
                    Action::Automation {
                        enabled: false,
                        duration: Duration::from_secs(600),
                    },
                )
                .service("payments")
            }),
        ),
        (
            "status",
            Box::new(|a| {
                Request::new(who(a), Action::Query { view: View::Status }).service("payments")
            }),
        ),
        (
            "audit",
            Box::new(|a| {
                Request::new(who(a), Action::Query { view: View::Audit }).service("payments")
            }),
        ),
    ];
    // The expected matrix, written out rather than derived from Role::grants.
    let allowed: &[(&str, &[&str])] = &[
        ("viewer", &["status", "audit"]),
        ("deployer", &["promote", "resume", "status", "audit"]),
        ("approver", &["status", "audit"]),
        (
            "responder",
            &["rollback", "pause", "resume", "auto", "status", "audit"],
        ),
        ("releaser", &["freeze", "unfreeze", "status", "audit"]),
        (
            "admin",
            &[
                "rollback", "promote", "pause", "resume", "freeze", "unfreeze", "auto", "status",
                "audit",
            ],
        ),
        ("stranger", &[]),
    ];
    for (actor, ok) in allowed {
        for (name, make) in &actions {
            let h = harness();
            let before = h.engine.audit().len();
            let o = h.engine.execute(make(actor)).await;
            let refused_for_permission =
                o.status == Status::Refused && o.message.text.contains("permission");
            if ok.contains(name) {
                assert!(
                    !refused_for_permission,
                    "{actor} should be allowed to {name}: {}",
                    o.message.plain()
                );
            } else {
                assert!(
                    refused_for_permission,
                    "{actor} should be refused {name}: {}",
                    o.message.plain()
                );
                let last = h
                    .engine
                    .audit()
                    .get(before + 1)
                    .unwrap()
                    .expect("refusal audited");
                assert_eq!(last.record.outcome, AuditOutcome::Refused);
                assert_eq!(last.record.actor.id, *actor);
                assert!(
                    o.message.text.contains("comes with the role"),
                    "{}",
                    o.message.text
                );
            }
        }
    }
    // Answering prompts: approver yes, deployer no.
    let h = harness();
    let pending = h
        .engine
        .execute(promote("deployer", "checkout", false))
        .await;
    let id = pending.prompt.expect("a prompt");
    let o = h
        .engine
        .execute(Request::new(
            who("responder"),
            Action::Approve { prompt: id.clone() },
        ))
        .await;
    assert_eq!(o.status, Status::Refused);
    assert!(
        o.message.text.contains("needs the role approver or admin"),
        "{}",
        o.message.text
    );
    let o = h
        .engine
        .execute(Request::new(
            who("approver"),
            Action::Approve { prompt: id },
        ))
        .await;
    assert_eq!(o.status, Status::Succeeded, "{}", o.message.plain());
}

#[tokio::test]
async fn freeze_refuses_promote_but_never_rollback() {
    let h = harness();
    let f = h
        .engine
        .execute(
            Request::new(
                who("releaser"),
                Action::Freeze {
                    scope: Scope::Glob("prod/*".into()),
                    duration: Duration::from_secs(7200),
                },
            )
            .reason("launch"),
        )
        .await;
    assert_eq!(f.status, Status::Succeeded, "{}", f.message.plain());
    let p = h
        .engine
        .execute(promote("deployer", "payments", false))
        .await;
    assert_eq!(p.status, Status::Refused);
    assert!(
        p.message.text.contains("prod/* is frozen by releaser")
            && p.message.text.contains("launch"),
        "{}",
        p.message.text
    );
    assert_eq!(h.sim.count("payments", "promote"), 0);
    let r = h.engine.execute(rollback("responder", "payments")).await;
    assert_eq!(r.status, Status::Succeeded, "{}", r.message.plain());
    assert_eq!(h.sim.count("payments", "rollback"), 1);
    // The rollback holds automatic promotion for the service's cooldown.
    let until = h
        .engine
        .cooldown_until("payments")
        .await
        .expect("a cooldown");
    assert_eq!(until, h.clock.now() + chrono::Duration::minutes(30));
    assert!(h.engine.cooldown_until("checkout").await.is_none());
    h.sim.start_canary("payments", "v3");
    // force without admin: refused; admin without reason: refused; admin with reason: break-glass.
    let o = h
        .engine
        .execute(promote("deployer", "payments", true))
        .await;
    assert!(
        o.status == Status::Refused && o.message.text.contains("Only the admin role"),
        "{}",
        o.message.plain()
    );
    let o = h
        .engine
        .execute(
            Request::new(
                who("admin"),
                Action::Promote {
                    full: false,
                    force: true,
                },
            )
            .service("payments"),
        )
        .await;
    assert!(
        o.status == Status::Refused && o.message.title.contains("needs a reason"),
        "{}",
        o.message.plain()
    );
    let o = h.engine.execute(promote("admin", "payments", true)).await;
    assert_eq!(o.status, Status::Succeeded, "{}", o.message.plain());
    let entry = entries(&h, "payments", 1).remove(0);
    assert_eq!(
        entry.record.parameters.get("break_glass"),
        Some(&json!(true))
    );
    h.engine.notifier.settle().await;
    let announced = h
        .chat
        .0
        .lock()
        .unwrap()
        .iter()
        .any(|(_, m)| m.title.starts_with("Break-glass: admin promoted payments"));
    assert!(announced, "break-glass not announced");
    // Unfreeze lifts it.
    let u = h
        .engine
        .execute(Request::new(
            who("releaser"),
            Action::Unfreeze {
                scope: Scope::Glob("prod/*".into()),
            },
        ))
        .await;
    assert_eq!(u.status, Status::Succeeded);
    assert_eq!(
        h.engine
            .execute(promote("deployer", "payments", false))
            .await
            .status,
        Status::Succeeded
    );
}

#[tokio::test]
async fn scheduled_deny_window_refuses_at_the_right_times() {
    let h = harness();
    let at = |d, hh, mm| Utc.with_ymd_and_hms(2026, 12, d, hh, mm, 0).unwrap();
    // Friday 2026-12-04 18:00 to Saturday 00:00 UTC.
    for (t, blocked) in [
        (at(4, 17, 59), false),
        (at(4, 18, 0), true),
        (at(4, 23, 59), true),
        (at(5, 0, 0), false),
        (at(11, 19, 30), true),
        (at(2, 19, 0), false),
    ] {
        h.clock.set(t);
        let o = h.engine.execute(promote("deployer", "search", false)).await;
        if blocked {
            assert_eq!(
                o.refusal,
                Some(Refusal::Frozen),
                "{t}: {}",
                o.message.plain()
            );
            assert!(
                o.message.text.contains("friday-evening"),
                "{}",
                o.message.text
            );
        } else {
            // Not frozen (the simulated backend may have no canary to promote).
            assert_ne!(
                o.refusal,
                Some(Refusal::Frozen),
                "{t}: {}",
                o.message.plain()
            );
        }
        // Rollbacks pass inside the window too (until the simulated
        // backend runs out of older revisions, which is not the freeze).
        let o = h.engine.execute(rollback("admin", "search")).await;
        assert_ne!(
            o.refusal,
            Some(Refusal::Frozen),
            "{t}: {}",
            o.message.plain()
        );
        assert_ne!(o.refusal, Some(Refusal::NotAllowed));
    }
}

#[tokio::test]
async fn same_idempotency_key_acts_once_even_concurrently() {
    let h = harness_with(100);
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let e = h.engine.clone();
        tasks.push(tokio::spawn(async move {
            e.execute(rollback("responder", "payments").idempotency_key("slack:Tx:1531420618.1"))
                .await
        }));
    }
    let outcomes: Vec<Outcome> = futures_join(tasks).await;
    assert_eq!(h.sim.count("payments", "rollback"), 1);
    assert!(outcomes.iter().all(|o| o.status == Status::Succeeded));
    assert_eq!(outcomes.iter().filter(|o| !o.repeat).count(), 1);
    assert!(outcomes
        .iter()
        .all(|o| o.correlation_id == outcomes[0].correlation_id || o.repeat));
    // Later, too.
    let later = h
        .engine
        .execute(rollback("responder", "payments").idempotency_key("slack:Tx:1531420618.1"))
        .await;
    assert!(later.repeat);
    assert_eq!(h.sim.count("payments", "rollback"), 1);
}

async fn futures_join(tasks: Vec<tokio::task::JoinHandle<Outcome>>) -> Vec<Outcome> {
    let mut v = Vec::new();
    for t in tasks {
        v.push(t.await.unwrap());
    }
    v
}

#[tokio::test]
async fn actions_on_one_service_never_overlap() {
    // Each backend call takes 20 ms; without the lock, calls would overlap.
    let h = harness_with(20);
    let mut tasks = Vec::new();
    for i in 0..4 {
        let e = h.engine.clone();
        let req = if i % 2 == 0 {
            Request::new(who("responder"), Action::Pause).service("payments")
        } else {
            Request::new(who("responder"), Action::Resume).service("payments")
        };
        tasks.push(tokio::spawn(async move { e.execute(req).await }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().status, Status::Succeeded);
    }
    assert_eq!(h.sim.max_concurrency("payments"), 1);
}

#[tokio::test]
async fn a_busy_service_refuses_after_the_bounded_wait_naming_the_holder() {
    let h = harness();
    h.sim.inject_hang("payments", "rollback", 1);
    let e = h.engine.clone();
    let first = tokio::spawn(async move { e.execute(rollback("responder", "payments")).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = h
        .engine
        .execute(Request::new(who("admin"), Action::Pause).service("payments"))
        .await;
    assert_eq!(second.status, Status::Refused);
    assert_eq!(second.refusal, Some(Refusal::Busy));
    assert!(
        second.message.text.contains("rollback by responder since"),
        "{}",
        second.message.text
    );
    first.abort();
}

#[tokio::test]
async fn backend_failure_is_reported_and_audited() {
    let h = harness();
    h.sim.inject_failure(
        "payments",
        "rollback",
        1,
        "deployments.apps \"payments\" is forbidden",
    );
    let o = h.engine.execute(rollback("responder", "payments")).await;
    assert_eq!(o.status, Status::Failed);
    assert!(
        o.message.text.contains("forbidden") && o.message.text.contains("by hand"),
        "{}",
        o.message.text
    );
    // A failed rollback leaves the service stuck, noted after the result.
    let e = entries(&h, "payments", 3);
    assert_eq!(e[0].record.action, "stuck");
    assert_eq!(e[0].record.outcome, AuditOutcome::Noted);
    assert_eq!(e[1].record.outcome, AuditOutcome::Failed);
    assert_eq!(e[2].record.outcome, AuditOutcome::Requested);
    assert_eq!(e[1].record.correlation_id, e[2].record.correlation_id);
    assert_eq!(e[0].record.correlation_id, e[1].record.correlation_id);
}

#[tokio::test]
async fn unknown_service_suggests_and_is_audited() {
    let h = harness();
    let o = h.engine.execute(rollback("responder", "paymnts")).await;
    assert_eq!(o.status, Status::Refused);
    assert_eq!(o.refusal, Some(Refusal::UnknownService));
    assert_eq!(
        o.message.text,
        "There is no service `paymnts`; did you mean payments?"
    );
    assert_eq!(h.engine.audit().len(), 1);
}

#[tokio::test]
async fn status_lists_freezes_with_who_since_until_why() {
    let h = harness();
    h.engine
        .execute(
            Request::new(
                who("releaser"),
                Action::Freeze {
                    scope: Scope::Glob("prod/*".into()),
                    duration: Duration::from_secs(7200),
                },
            )
            .reason("code freeze for launch"),
        )
        .await;
    let o = h
        .engine
        .execute(Request::new(
            who("viewer"),
            Action::Query { view: View::Status },
        ))
        .await;
    let text = o.message.plain();
    assert!(text.contains("Freeze prod/*: by releaser since 2026-12-02 12:00 UTC until 2026-12-02 14:00 UTC (2h left): code freeze for launch"), "{text}");
    assert!(text.contains("checkout (prod, critical)"), "{text}");
    assert!(text.contains("backend:sim closed"), "{text}");
}

#[tokio::test]
async fn a_preflight_refusal_is_a_refusal_not_a_failure() {
    let h = harness();
    let to_nowhere = Request::new(
        who("responder"),
        Action::Rollback {
            to: Some("v9".into()),
            force: false,
        },
    )
    .service("payments")
    .reason("test");
    let o = h.engine.execute(to_nowhere).await;
    assert_eq!(o.status, Status::Refused, "{}", o.message.plain());
    assert_eq!(o.refusal, Some(Refusal::Preflight));
    assert_eq!(o.message.title, "Rollback of payments refused");
    assert!(
        o.message.text.contains("revision v9 does not exist")
            && o.message.text.contains("Nothing was changed")
            && !o.message.text.contains("by hand"),
        "{}",
        o.message.text
    );
    assert_eq!(h.sim.count("payments", "rollback"), 0);
    let e = entries(&h, "payments", 2);
    assert_eq!(e[0].record.outcome, AuditOutcome::Refused);
    assert_eq!(e[0].record.parameters["refusal"], "preflight");
    assert_eq!(e[0].record.parameters["failed_at"], "preflight");
    assert_eq!(e[1].record.outcome, AuditOutcome::Requested);

    // A backend that fails at preflight (it cannot be reached) still fails.
    h.sim
        .inject_failure("payments", "preflight", 1, "connection refused");
    let o = h.engine.execute(rollback("responder", "payments")).await;
    assert_eq!(o.status, Status::Failed, "{}", o.message.plain());
    assert_eq!(o.refusal, None);
}
