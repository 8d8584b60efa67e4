//! The two-person rule, answering prompts once, expiry and escalation.

use super::*;

#[tokio::test]
async fn two_person_rule_for_critical_promotions() {
    let h = harness();
    let pending = h
        .engine
        .execute(promote("deployer2", "checkout", false))
        .await;
    assert_eq!(pending.status, Status::Pending);
    assert_eq!(h.sim.count("checkout", "promote"), 0);
    let id = pending.prompt.unwrap();
    // deployer2 is also an approver, but not for their own request.
    let own = h
        .engine
        .execute(Request::new(
            who("deployer2"),
            Action::Approve { prompt: id.clone() },
        ))
        .await;
    assert_eq!(own.status, Status::Refused);
    assert_eq!(own.refusal, Some(Refusal::TwoPerson));
    assert!(
        own.message.text.contains("a different person must approve"),
        "{}",
        own.message.text
    );
    assert_eq!(
        h.engine.prompts.get(&id).await.unwrap().unwrap().state,
        PromptState::Open
    );
    let ok = h
        .engine
        .execute(Request::new(
            who("approver"),
            Action::Approve { prompt: id.clone() },
        ))
        .await;
    assert_eq!(ok.status, Status::Succeeded, "{}", ok.message.plain());
    assert_eq!(h.sim.count("checkout", "promote"), 1);
    let metrics = h.engine.telemetry.render();
    assert!(
        metrics.contains("rollbot_actions_total{action=\"promote\",outcome=\"succeeded\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("rollbot_actions_total{action=\"approve\",outcome=\"succeeded\"} 1"),
        "{metrics}"
    );
    // A second press does nothing more.
    let again = h
        .engine
        .execute(Request::new(who("admin"), Action::Approve { prompt: id }))
        .await;
    assert!(again.message.title.contains("Already answered"));
    assert_eq!(h.sim.count("checkout", "promote"), 1);
}

#[tokio::test]
async fn concurrent_presses_act_once() {
    let h = harness_with(50);
    let id = h
        .engine
        .execute(promote("deployer", "checkout", false))
        .await
        .prompt
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let e = h.engine.clone();
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            e.execute(Request::new(
                who("approver"),
                Action::Approve { prompt: id },
            ))
            .await
        }));
    }
    let mut succeeded = 0;
    for t in tasks {
        if t.await.unwrap().status == Status::Succeeded {
            succeeded += 1;
        }
    }
    assert_eq!(succeeded, 1);
    assert_eq!(h.sim.count("checkout", "promote"), 1);
}

#[tokio::test]
async fn a_freeze_refuses_approving_a_promotion_and_the_prompt_stays_open() {
    let h = harness();
    let id = h
        .engine
        .execute(promote("deployer", "checkout", false))
        .await
        .prompt
        .unwrap();
    let f = h
        .engine
        .execute(
            Request::new(
                who("releaser"),
                Action::Freeze {
                    scope: Scope::All,
                    duration: Duration::from_secs(600),
                },
            )
            .reason("incident"),
        )
        .await;
    assert_eq!(f.status, Status::Succeeded);
    let o = h
        .engine
        .execute(Request::new(
            who("approver"),
            Action::Approve { prompt: id.clone() },
        ))
        .await;
    assert_eq!(o.status, Status::Refused);
    assert!(
        o.message.text.contains("all is frozen by releaser")
            && o.message.text.contains("prompt stays open"),
        "{}",
        o.message.text
    );
    assert_eq!(
        h.engine.prompts.get(&id).await.unwrap().unwrap().state,
        PromptState::Open
    );
    assert_eq!(h.sim.count("checkout", "promote"), 0);
    // Rejecting is not a promotion: allowed during the freeze.
    let r = h
        .engine
        .execute(Request::new(
            who("approver"),
            Action::Reject { prompt: id.clone() },
        ))
        .await;
    assert_eq!(r.status, Status::Succeeded, "{}", r.message.plain());
    // After the freeze expires, the prompt is answered already; nothing more happens.
    h.clock.advance(Duration::from_secs(601));
    let late = h
        .engine
        .execute(Request::new(
            who("approver"),
            Action::Approve { prompt: id },
        ))
        .await;
    assert!(late.message.title.contains("Already answered"));
    assert_eq!(h.sim.count("checkout", "promote"), 0);
}

#[tokio::test]
async fn an_expired_prompt_cannot_be_answered() {
    let h = harness();
    let id = h
        .engine
        .execute(promote("deployer", "checkout", false))
        .await
        .prompt
        .unwrap();
    h.clock.advance(Duration::from_secs(31 * 60));
    let o = h
        .engine
        .execute(Request::new(
            who("approver"),
            Action::Approve { prompt: id },
        ))
        .await;
    assert_eq!(o.status, Status::Refused);
    assert_eq!(o.refusal, Some(Refusal::Expired));
    assert!(
        o.message.text.contains("expired") && o.message.text.contains("/promote checkout"),
        "{}",
        o.message.text
    );
    assert_eq!(h.sim.count("checkout", "promote"), 0);
}

#[tokio::test]
async fn an_unanswered_prompt_escalates_one_step_per_period_and_never_acts() {
    let h = harness();
    let start = h.clock.now();
    let o = h
        .engine
        .execute(promote("deployer", "checkout", false))
        .await;
    assert_eq!(o.status, Status::Pending, "{}", o.message.plain());
    let id = o.prompt.expect("a prompt");
    let live_before = h.engine.backend_status("checkout").await.unwrap();
    let escalations = |h: &Harness| -> Vec<Message> {
        h.chat
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, m)| m.title.starts_with("Still waiting"))
            .map(|(_, m)| m.clone())
            .collect()
    };
    assert_eq!(h.engine.escalate_prompts(h.clock.now()).await.unwrap(), 0);
    h.clock.advance(Duration::from_secs(299));
    assert_eq!(h.engine.escalate_prompts(h.clock.now()).await.unwrap(), 0);
    // 5m: the first group; asking again at the same time posts nothing more.
    h.clock.advance(Duration::from_secs(1));
    assert_eq!(h.engine.escalate_prompts(h.clock.now()).await.unwrap(), 1);
    assert_eq!(h.engine.escalate_prompts(h.clock.now()).await.unwrap(), 0);
    let seen = escalations(&h);
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].mentions, vec!["slack-group:S0ONCALL".to_string()]);
    assert!(
        seen[0].text.contains("Nobody has answered for 5m"),
        "{}",
        seen[0].text
    );
    assert!(seen[0].text.contains("rollbot does nothing by itself"));
    assert!(seen[0].buttons.is_empty(), "the buttons stay on the prompt");
    // 10m and 15m: the next groups, one step per period; the controller's
    // loop checks open prompts at every step.
    h.clock.set(start + chrono::Duration::minutes(10));
    let controller = crate::controller::Controller::new(
        h.engine.clone(),
        Arc::new(crate::metrics::simulated::SimulatedSource::new(
            HashMap::new(),
        )),
    );
    controller.step(h.clock.now()).await;
    assert_eq!(escalations(&h).len(), 2);
    h.clock.set(start + chrono::Duration::minutes(15));
    assert_eq!(h.engine.escalate_prompts(h.clock.now()).await.unwrap(), 1);
    // The list is exhausted: nothing more, and nothing ever acted.
    h.clock.set(start + chrono::Duration::minutes(25));
    assert_eq!(h.engine.escalate_prompts(h.clock.now()).await.unwrap(), 0);
    let mentioned: Vec<String> = escalations(&h)
        .iter()
        .flat_map(|m| m.mentions.clone())
        .collect();
    assert_eq!(
        mentioned,
        [
            "slack-group:S0ONCALL",
            "slack-group:S0LEADS",
            "slack:U0MANAGER"
        ]
    );
    let p = h.engine.prompts.get(&id).await.unwrap().unwrap();
    assert_eq!(p.state, PromptState::Open);
    assert_eq!(p.escalated, 3);
    assert_eq!(
        h.engine.backend_status("checkout").await.unwrap(),
        live_before
    );
    let entries = entries(&h, "checkout", 50);
    assert_eq!(
        entries
            .iter()
            .filter(|e| e.record.action == "escalate")
            .count(),
        3
    );
    assert!(!entries
        .iter()
        .any(|e| e.record.action == "promote" && e.record.outcome == AuditOutcome::Succeeded));

    // An answered prompt does not escalate.
    h.clock.set(start + chrono::Duration::minutes(26));
    let o = h
        .engine
        .execute(promote("deployer", "checkout", false))
        .await;
    let id2 = o.prompt.expect("a prompt");
    h.engine
        .execute(Request::new(
            who("approver"),
            Action::Reject { prompt: id2 },
        ))
        .await;
    h.clock.advance(Duration::from_secs(600));
    assert_eq!(h.engine.escalate_prompts(h.clock.now()).await.unwrap(), 0);
}
