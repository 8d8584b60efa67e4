//! Socket Mode: the same flows over Slack's WebSocket, with reconnects.

use super::*;

fn envelope(id: &str, kind: &str, payload: Value) -> Value {
    json!({"envelope_id": id, "type": kind, "payload": payload,
        "accepts_response_payload": kind == "slash_commands", "retry_attempt": 0, "retry_reason": ""})
}

fn slash_payload(fake: &FakeSlack, command: &str, text: &str, user: &str, trigger: &str) -> Value {
    let form = fake_slack::slash_body(
        command,
        text,
        user,
        DEPLOYS,
        trigger,
        &fake.response_url(trigger),
    );
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(&form).unwrap();
    Value::Object(
        pairs
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_mode_runs_the_same_flows_and_reconnects() {
    let r = rig("socket").await;
    let f = r.fake.clone();
    f.wait_for(10, "the socket", |f| (f.connections() == 1).then_some(()))
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while r.server.get("/readyz").await.0 != 200 {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            r.server.get("/readyz").await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A slash command: acknowledged at once with the ephemeral answer as payload.
    let sent = Instant::now();
    f.socket_send(&envelope(
        "env-1",
        "slash_commands",
        slash_payload(&f, "/rollback", "checkout bad canary", RESPONDER, "strig-1"),
    ));
    let (ack, at) = f.ack("env-1").await;
    let took = at.duration_since(sent);
    eprintln!(
        "slack socket mode envelope acknowledged in {} ms",
        took.as_millis()
    );
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert!(
        ack["payload"]["text"]
            .as_str()
            .unwrap()
            .contains("Rolling back checkout"),
        "{ack}"
    );
    f.wait_for(20, "the rollback", |f| {
        with_text(f.messages(DEPLOYS), "Rolled back checkout")
            .into_iter()
            .next()
    })
    .await;

    // A mention asks for a promotion of a critical service; Slack redelivers the event.
    let root = f.messages(DEPLOYS)[0].ts.clone();
    let ev = fake_slack::mention_event(
        "Ev0SOCKET2",
        DEPLOYER,
        DEPLOYS,
        "<@U0ROLLBOT> promote payments looks good",
        "1700000001.000001",
        Some(&root),
    );
    f.socket_send(&envelope("env-2", "events_api", ev.clone()));
    f.ack("env-2").await;
    let mut again = envelope("env-2b", "events_api", ev);
    again["retry_attempt"] = json!(1);
    again["retry_reason"] = json!("timeout");
    f.socket_send(&again);
    f.ack("env-2b").await;
    let prompt = f.wait_for(10, "the prompt", prompt_of).await;
    f.wait_for(10, "the answer in the mention's thread", |f| {
        f.messages(DEPLOYS).into_iter().find(|m| {
            m.thread_ts.as_deref() == Some(root.as_str())
                && m.current_text().contains("Waiting for approval")
        })
    })
    .await;

    // Slack refreshes the connection.
    f.socket_disconnect();
    f.wait_for(10, "a reconnect after disconnect", |f| {
        (f.connections() == 2).then_some(())
    })
    .await;

    // The approver presses Approve over the new socket.
    let approve = prompt.button(":approve");
    let payload = fake_slack::press_payload(
        APPROVER,
        DEPLOYS,
        &prompt,
        &approve,
        "strig-3",
        &f.response_url("strig-3"),
    );
    f.socket_send(&envelope("env-3", "interactive", payload.clone()));
    f.ack("env-3").await;
    // The same envelope delivered twice (no ack seen by Slack): acts once.
    f.socket_send(&envelope("env-3", "interactive", payload));
    f.wait_for(20, "the promotion in the prompt's thread", |f| {
        with_text(f.messages(DEPLOYS), "Promoted payments")
            .into_iter()
            .find(|m| m.thread_ts.as_deref() == Some(prompt.ts.as_str()))
    })
    .await;

    // The socket drops without a goodbye: rollbot reconnects with backoff.
    f.socket_drop();
    f.wait_for(15, "a reconnect after a dropped socket", |f| {
        (f.connections() == 3).then_some(())
    })
    .await;
    f.socket_send(&envelope(
        "env-4",
        "slash_commands",
        slash_payload(&f, "/rollbot", "status checkout", RESPONDER, "strig-4"),
    ));
    let (ack, _) = f.ack("env-4").await;
    assert!(
        ack["payload"]["text"].as_str().unwrap().contains("Looking"),
        "{ack}"
    );
    f.ephemeral(10, "the private status", RESPONDER, "checkout")
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(with_text(f.messages(DEPLOYS), "Promoted payments").len(), 1);
    assert_eq!(
        f.messages(DEPLOYS)
            .iter()
            .filter(|m| !m.buttons().is_empty() || m.ts == prompt.ts)
            .count(),
        1,
        "one prompt"
    );
    let audit = r.audit();
    assert_audit_counts(
        &audit,
        &[
            ("rollback", "succeeded", "", 1),
            ("promote", "pending", "", 1),
            ("promote", "succeeded", "", 1),
        ],
    );
}
