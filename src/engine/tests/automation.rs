//! Automation switched off and on, and the controller acting through the engine.

use super::*;

#[tokio::test]
async fn automation_off_is_authorized_audited_shown_and_expires() {
    let h = harness();
    let off = |actor: &str| {
        Request::new(
            who(actor),
            Action::Automation {
                enabled: false,
                duration: Duration::from_secs(7200),
            },
        )
        .service("payments")
        .reason("database maintenance")
    };
    // A deployer may not switch automation off (it is the pause permission).
    let o = h.engine.execute(off("deployer")).await;
    assert_eq!(o.status, Status::Refused);
    assert!(
        o.message.text.contains("responder, admin"),
        "{}",
        o.message.text
    );
    assert!(h.engine.automation_off("payments").await.is_none());

    let o = h.engine.execute(off("responder")).await;
    assert_eq!(o.status, Status::Succeeded, "{}", o.message.plain());
    let now = h.clock.now();
    let state = h.engine.automation_off("payments").await.expect("off");
    assert_eq!(state.by, "responder");
    assert_eq!(state.reason, "database maintenance");
    assert_eq!(state.until, Some(now + chrono::Duration::hours(2)));
    assert!(h.engine.automation_off("checkout").await.is_none());

    // Audited: requested then succeeded, with the duration and the end.
    let entries = entries(&h, "payments", 10);
    let autos: Vec<_> = entries
        .iter()
        .filter(|e| e.record.action == "automation")
        .collect();
    // The deployer's refusal, then the responder's request and result.
    assert_eq!(autos.len(), 3, "{autos:?}");
    assert!(autos
        .iter()
        .any(|e| e.record.outcome == AuditOutcome::Refused));
    assert!(autos
        .iter()
        .any(|e| e.record.outcome == AuditOutcome::Requested));
    let done = autos
        .iter()
        .find(|e| e.record.outcome == AuditOutcome::Succeeded)
        .expect("succeeded entry");
    assert_eq!(done.record.parameters["duration_secs"], json!(7200));
    assert_eq!(done.record.parameters["enabled"], json!(false));
    assert_eq!(
        done.record.parameters["until"],
        json!("2026-12-02T14:00:00+00:00")
    );
    assert_eq!(done.record.reason, "database maintenance");
    // Announced in the deploy channel.
    h.engine.notifier.settle().await;
    let posted = h.chat.0.lock().unwrap().clone();
    assert!(posted
        .iter()
        .any(|(_, m)| m.title == "Automation off: payments"));

    // /status shows who, until when and why.
    let o = h
        .engine
        .execute(
            Request::new(who("viewer"), Action::Query { view: View::Status }).service("payments"),
        )
        .await;
    let text = o.message.plain();
    assert!(
        text.contains(
            "automation off by responder until 2026-12-02 14:00 UTC: database maintenance"
        ),
        "{text}"
    );

    // It expires by itself.
    h.clock.advance(Duration::from_secs(7200 + 1));
    assert!(h.engine.automation_off("payments").await.is_none());

    // And can be switched back on early.
    h.engine.execute(off("admin")).await;
    assert!(h.engine.automation_off("payments").await.is_some());
    let o = h
        .engine
        .execute(
            Request::new(
                who("responder"),
                Action::Automation {
                    enabled: true,
                    duration: Duration::ZERO,
                },
            )
            .service("payments"),
        )
        .await;
    assert_eq!(o.status, Status::Succeeded, "{}", o.message.plain());
    assert!(
        o.message.text.contains("by itself again"),
        "{}",
        o.message.text
    );
    assert!(h.engine.automation_off("payments").await.is_none());
}

/// Feeds a failing canary to a rollout watch until it rolls back or asks
/// about a failing canary; a borderline prompt on the way is approved.
/// Returns the watch and the borderline prompts seen.
async fn watch_failing_canary(h: &Harness) -> (crate::controller::RolloutWatch, Vec<Prompt>) {
    use crate::controller::WatchState;
    use crate::judge::sim::{Scenario, Simulator};
    let svc = h.engine.config.service("payments").unwrap();
    let mut watch = crate::controller::RolloutWatch::new(svc, "v1", "v2");
    let mut sim = Simulator::new(&Scenario::new("bad", false).errors(10.0), 3);
    let mut borderline = Vec::new();
    for _ in 0..360 {
        let Some(tick) = sim.next_tick() else { break };
        watch.tick(&h.engine, &tick).await;
        match &watch.state {
            WatchState::Watching => {}
            WatchState::Asking { prompt } => {
                let p = h.engine.prompts.get(prompt).await.unwrap().unwrap();
                if p.approve.label != "Approve" || p.state != PromptState::Open {
                    break;
                }
                let o = h
                    .engine
                    .execute(Request::new(
                        who("approver"),
                        Action::Approve {
                            prompt: p.id.clone(),
                        },
                    ))
                    .await;
                assert_eq!(o.status, Status::Succeeded, "{}", o.message.plain());
                borderline.push(p);
            }
            _ => break,
        }
    }
    (watch, borderline)
}

/// A responder switches payments' automation off for an hour.
async fn automation_off_for_payments(h: &Harness) {
    let o = h
        .engine
        .execute(
            Request::new(
                who("responder"),
                Action::Automation {
                    enabled: false,
                    duration: Duration::from_secs(3600),
                },
            )
            .service("payments")
            .reason("known upstream outage"),
        )
        .await;
    assert_eq!(o.status, Status::Succeeded, "{}", o.message.plain());
}

#[tokio::test]
async fn with_automation_off_the_controller_asks_instead_of_rolling_back() {
    let h = harness();
    automation_off_for_payments(&h).await;
    let (watch, borderline) = watch_failing_canary(&h).await;
    for p in &borderline {
        // Not paused, so approving only means "stop asking".
        assert_eq!(p.approve.action, None);
        assert!(p.question.contains("Automation is off"), "{}", p.question);
    }
    let crate::controller::WatchState::Asking { prompt } = &watch.state else {
        panic!("expected a prompt, got {:?}", watch.state);
    };
    let p = h
        .engine
        .prompts
        .get(prompt)
        .await
        .unwrap()
        .expect("stored prompt");
    assert_eq!(p.approve.label, "Roll back");
    assert_eq!(p.reject.label, "Continue");
    assert!(
        p.question
            .contains("Automation is off for payments by responder until 2026-12-02 13:00 UTC: known upstream outage"),
        "{}",
        p.question
    );
    // Nothing was rolled back or paused: no backend action in the audit log
    // (prompts are recorded as pending requests, nothing more).
    let entries = entries(&h, "payments", 100);
    assert!(
        !entries.iter().any(|e| e.record.action == "rollback"
            || (e.record.action == "pause" && e.record.outcome != AuditOutcome::Pending)),
        "{entries:?}"
    );
    // The summary was still posted.
    let posted = h.chat.0.lock().unwrap().clone();
    assert!(posted.iter().any(|(_, m)| m.title.contains("payments")));

    // A person presses Roll back: the backend acts once, and the watch
    // follows the rollback into an incident instead of watching on.
    let mut watch = watch;
    let o = h
        .engine
        .execute(Request::new(
            who("approver"),
            Action::Approve {
                prompt: p.id.clone(),
            },
        ))
        .await;
    assert_eq!(o.status, Status::Succeeded, "{}", o.message.plain());
    assert_eq!(h.sim.count("payments", "rollback"), 1);
    let tick = crate::judge::Tick {
        t: 3600.0,
        baseline: None,
        canary: None,
    };
    watch.tick(&h.engine, &tick).await;
    assert!(
        matches!(&watch.state, crate::controller::WatchState::Monitoring(what) if what.contains("approver chose Roll back")),
        "{:?}",
        watch.state
    );
    let posted = h.chat.0.lock().unwrap().clone();
    assert!(
        posted
            .iter()
            .any(|(_, m)| m.title == "Incident: payments v2 — Monitoring"),
        "{posted:?}"
    );
}

#[tokio::test]
async fn with_automation_on_the_controller_rolls_back_by_itself() {
    let h = harness();
    let (watch, _) = watch_failing_canary(&h).await;
    assert!(
        matches!(
            watch.state,
            crate::controller::WatchState::Monitoring(_) | crate::controller::WatchState::Done(_)
        ),
        "{:?}",
        watch.state
    );
    let entries = entries(&h, "payments", 100);
    assert!(entries.iter().any(|e| e.record.action == "rollback"));
}

#[tokio::test]
async fn the_summary_is_reposted_when_its_schedule_fires_between_two_ticks() {
    use crate::judge::sim::Scenario;
    let h = harness();
    let start = h.clock.now(); // 12:00:00
    let controller = crate::controller::Controller::new(
        h.engine.clone(),
        Arc::new(crate::metrics::simulated::SimulatedSource::new(
            [("payments".to_string(), Scenario::new("good", true))].into(),
        )),
    );
    let r = controller
        .announce(crate::controller::Rollout {
            id: "r1".into(),
            service: "payments".into(),
            from_revision: "v1".into(),
            to_revision: "v2".into(),
            strategy: "canary".into(),
            start,
            announced_by: "test".into(),
            state: "watching".into(),
            verdict: None,
            score: None,
            reasons: vec![],
            migrations: vec![],
            release: None,
        })
        .await
        .unwrap();
    assert_eq!(r.id, "r1");
    let summaries = |h: &Harness| {
        h.chat
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|(ch, m)| {
                !ch.starts_with("update:") && m.title.starts_with("Canary payments v2")
            })
            .count()
    };
    let interval = controller.interval();
    let until = |h: &Harness, t: chrono::DateTime<Utc>| {
        let mut now = h.clock.now();
        let mut instants = Vec::new();
        while now + chrono::Duration::from_std(interval).unwrap() <= t {
            now += chrono::Duration::from_std(interval).unwrap();
            instants.push(now);
        }
        instants
    };
    // Up to 12:19:xx: the summary posted once, then updated in place.
    for t in until(&h, start + chrono::Duration::seconds(20 * 60 - 1)) {
        h.clock.set(t);
        controller.step(t).await;
    }
    assert_eq!(summaries(&h), 1);
    // The schedule fires at 12:20 (between two ticks): a new message.
    for t in until(&h, start + chrono::Duration::minutes(20)) {
        h.clock.set(t);
        controller.step(t).await;
    }
    assert_eq!(summaries(&h), 2);
    // Not again until 12:40.
    for t in until(&h, start + chrono::Duration::minutes(39)) {
        h.clock.set(t);
        controller.step(t).await;
    }
    assert_eq!(summaries(&h), 2);
    for t in until(&h, start + chrono::Duration::minutes(40)) {
        h.clock.set(t);
        controller.step(t).await;
    }
    assert_eq!(summaries(&h), 3);
}

#[tokio::test]
async fn a_rollback_by_hand_of_a_watched_canary_opens_the_incident() {
    use crate::controller::{RolloutWatch, WatchState};
    use crate::judge::sim::{Scenario, Simulator};
    let h = harness();
    // An earlier rollback belongs to an earlier rollout: it is not this one's.
    h.engine.execute(rollback("responder", "payments")).await;
    h.sim.start_canary("payments", "v3");
    let svc = h.engine.config.service("payments").unwrap();
    let mut watch = RolloutWatch::new(svc, "v1", "v3");
    let mut sim = Simulator::new(&Scenario::new("good", true), 5);
    for _ in 0..3 {
        watch.tick(&h.engine, &sim.next_tick().unwrap()).await;
    }
    assert_eq!(watch.state, WatchState::Watching);
    h.clock.advance(Duration::from_secs(60));
    let o = h
        .engine
        .execute(rollback("responder", "payments").reason("bad config"))
        .await;
    assert_eq!(o.status, Status::Succeeded, "{}", o.message.plain());
    watch.tick(&h.engine, &sim.next_tick().unwrap()).await;
    assert_eq!(
        watch.state,
        WatchState::Monitoring("rolled back by responder".into())
    );
    h.engine.notifier.settle().await;
    let posted = h.chat.0.lock().unwrap().clone();
    let incident = posted
        .iter()
        .find(|(_, m)| m.title == "Incident: payments v3 — Monitoring")
        .expect("the incident is opened");
    let timeline = &incident
        .1
        .fields
        .iter()
        .find(|f| f.name == "Timeline")
        .unwrap()
        .value;
    assert!(
        timeline.contains(
            "Identified: responder rolled canary v3 of payments back by hand (bad config)"
        ),
        "{timeline}"
    );
}

#[tokio::test]
async fn an_expired_roll_back_prompt_suggests_rollback_not_promote() {
    let h = harness();
    automation_off_for_payments(&h).await;
    let (watch, _) = watch_failing_canary(&h).await;
    let crate::controller::WatchState::Asking { prompt } = &watch.state else {
        panic!("expected a prompt, got {:?}", watch.state);
    };
    h.clock.advance(Duration::from_secs(24 * 3600));
    let o = h
        .engine
        .execute(Request::new(
            who("approver"),
            Action::Approve {
                prompt: prompt.clone(),
            },
        ))
        .await;
    assert_eq!(o.refusal, Some(Refusal::Expired), "{}", o.message.plain());
    assert!(
        o.message.text.contains("`/rollback payments`"),
        "{}",
        o.message.text
    );
    assert_eq!(h.sim.count("payments", "rollback"), 0);
}
