//! Slack end to end: `rollbot serve` against the fake Slack in
//! tests/support/fake_slack.rs, over HTTP and Socket Mode.

use crate::support::audit::assert_audit_counts;
use crate::support::fake_slack::{self, FakeSlack, Posted};
use crate::support::slack_rig::SlackRig;
use crate::support::{rollbot, text};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const DEPLOYS: &str = "C0DEPLOYS";
const INCIDENTS: &str = "C0INCIDNT";
const RESPONDER: &str = "U0RESP";
const DEPLOYER: &str = "U0DEPLOY";
const APPROVER: &str = "U0APPR";
const OUTSIDER: &str = "U0NOBODY";

const CONFIG: &str = r##"
[server]
listen = "127.0.0.1:{port}"

[store]
path = "{data}"

[channels.deploys]
slack = "C0DEPLOYS"

[channels.incidents]
slack = "C0INCIDNT"

{extra_channels}

[backends.sim]
type = "simulated"
latency = "1200ms"
history = { checkout = ["v40", "v41", "v42"], payments = ["v7", "v8"] }

[[services]]
name = "checkout"
backend = "sim"
deploy_channel = "deploys"
incident_channel = "incidents"

[[services]]
name = "payments"
backend = "sim"
deploy_channel = "deploys"
critical = true

[[roles.responder]]
members = ["slack:U0RESP"]

[[roles.deployer]]
members = ["slack:U0DEPLOY", "slack:U0NOBODY"]

[[roles.approver]]
members = ["slack-group:S0APPROVERS"]
"##;

async fn rig_with(
    mode: &str,
    extra_channels: &str,
    bot_token: &str,
    not_member: &[&str],
) -> SlackRig {
    let fake = FakeSlack::start().await;
    fake.add_channel(DEPLOYS, true);
    fake.add_channel(INCIDENTS, true);
    for c in not_member {
        fake.add_channel(c, false);
    }
    fake.add_usergroup("S0APPROVERS", &[APPROVER, "U0OTHER"]);
    let config = CONFIG.replace("{extra_channels}", extra_channels);
    SlackRig::start(
        fake,
        mode,
        DEPLOYS,
        &config,
        &[("SLACK_BOT_TOKEN", bot_token)],
    )
    .await
}

async fn rig(mode: &str) -> SlackRig {
    rig_with(mode, "", fake_slack::BOT_TOKEN, &[]).await
}

fn with_text(msgs: Vec<Posted>, needle: &str) -> Vec<Posted> {
    msgs.into_iter()
        .filter(|m| m.current_text().contains(needle))
        .collect()
}

fn prompt_of(fake: &FakeSlack) -> Option<Posted> {
    fake.messages(DEPLOYS)
        .into_iter()
        .find(|m| m.buttons().iter().any(|b| b.ends_with(":approve")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slash_rollback_is_acknowledged_at_once_acts_once_and_is_announced_and_audited() {
    let r = rig("http").await;
    let (code, ack, took) = r
        .slash(
            "/rollback",
            "checkout 5xx after deploy",
            RESPONDER,
            "trig-rb-1",
        )
        .await;
    assert_eq!(code, 200);
    eprintln!(
        "slack slash command acknowledged in {} ms",
        took.as_millis()
    );
    assert!(
        took < Duration::from_millis(1000),
        "acknowledged in {took:?}"
    );
    assert_eq!(ack["response_type"], "ephemeral");
    assert!(
        ack["text"]
            .as_str()
            .unwrap()
            .contains("Rolling back checkout"),
        "{ack}"
    );

    let acked = Instant::now();
    // The backend takes 3 × 1.2 s: the result arrives after the acknowledgement.
    let done = r
        .fake
        .wait_for(20, "the rollback in the deploy channel", |f| {
            with_text(f.messages(DEPLOYS), "Rolled back checkout")
                .into_iter()
                .next()
        })
        .await;
    let after = done.at.duration_since(acked);
    eprintln!(
        "slack rollback announced {} ms after the acknowledgement",
        after.as_millis()
    );
    // Longer than Slack's 3-second deadline: only the acknowledgement waits for nothing.
    assert!(after > Duration::from_secs(3), "{after:?}");
    let blocks = done.current_blocks().to_string();
    assert!(
        blocks.contains("\"header\"") && blocks.contains("correlation"),
        "{blocks}"
    );
    r.fake
        .wait_for(10, "the rollback in the incident channel", |f| {
            with_text(f.messages(INCIDENTS), "Rolled back checkout")
                .into_iter()
                .next()
        })
        .await;

    // Slack retries the same command (same trigger_id, fresh signature): acknowledged, not acted on.
    let body = fake_slack::slash_body(
        "/rollback",
        "checkout 5xx after deploy",
        RESPONDER,
        DEPLOYS,
        "trig-rb-1",
        &r.fake.response_url("trig-rb-1"),
    );
    let (code, _, _) = r
        .signed("/slack/commands", &body, &[("x-slack-retry-num", "1")])
        .await;
    assert_eq!(code, 200);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        with_text(r.fake.messages(DEPLOYS), "Rolled back checkout").len(),
        1
    );
    assert!(
        r.fake.ephemerals(RESPONDER).is_empty(),
        "a success is not private"
    );
    // Announced in the channel it was asked in: no second copy through response_url.
    assert!(r.fake.responses("trig-rb-1").is_empty());

    // Someone without the responder role is refused privately, naming the role.
    let (_, ack, _) = r
        .slash("/rollback", "checkout", OUTSIDER, "trig-rb-2")
        .await;
    assert!(ack["text"].as_str().unwrap().contains("Rolling back"));
    let refusal = r
        .fake
        .ephemeral(10, "an ephemeral refusal", OUTSIDER, "")
        .await;
    assert!(refusal.text.contains("responder"), "{}", refusal.text);
    assert_eq!(refusal.channel, DEPLOYS);

    let audit = r.audit();
    assert_audit_counts(
        &audit,
        &[
            ("rollback", "succeeded", "", 1),
            ("rollback", "refused", "", 1),
            ("rollback", "succeeded", RESPONDER, 1),
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_wrongly_signed_stale_and_replayed_requests_get_401_and_change_nothing() {
    let r = rig("http").await;
    let body = fake_slack::slash_body(
        "/rollback",
        "checkout",
        RESPONDER,
        DEPLOYS,
        "trig-bad",
        &r.fake.response_url("x"),
    );
    let url = r.server.url("/slack/commands");
    let post = |sig: Option<String>, ts: i64, path: &str, body: &str| {
        let mut req = r.http.post(r.server.url(path)).body(body.to_string());
        if let Some(s) = sig {
            req = req
                .header("x-slack-signature", s)
                .header("x-slack-request-timestamp", ts.to_string());
        }
        req.send()
    };
    let now = fake_slack::now();
    // Unsigned, on every endpoint.
    for path in ["/slack/commands", "/slack/interactions", "/slack/events"] {
        assert_eq!(
            post(None, now, path, &body).await.unwrap().status(),
            401,
            "{path}"
        );
    }
    // Signed with another secret.
    let wrong = fake_slack::sign("not-the-signing-secret", now, &body);
    assert_eq!(
        post(Some(wrong), now, "/slack/commands", &body)
            .await
            .unwrap()
            .status(),
        401
    );
    // Correctly signed, 6 minutes old.
    let old = now - 360;
    let stale = fake_slack::sign(fake_slack::SIGNING_SECRET, old, &body);
    assert_eq!(
        post(Some(stale), old, "/slack/commands", &body)
            .await
            .unwrap()
            .status(),
        401
    );
    // Signed for another body.
    let other = fake_slack::sign(fake_slack::SIGNING_SECRET, now, "text=other");
    assert_eq!(
        post(Some(other), now, "/slack/commands", &body)
            .await
            .unwrap()
            .status(),
        401
    );
    // A good request, then the very same bytes again.
    let challenge = json!({"token": "x", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P", "type": "url_verification"}).to_string();
    let sig = fake_slack::sign(fake_slack::SIGNING_SECRET, now, &challenge);
    let first = post(Some(sig.clone()), now, "/slack/events", &challenge)
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    let v: Value = first.json().await.unwrap();
    assert_eq!(
        v["challenge"],
        "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    );
    assert_eq!(
        post(Some(sig), now, "/slack/events", &challenge)
            .await
            .unwrap()
            .status(),
        401
    );
    let _ = url;

    let metrics = r.server.get("/metrics").await.1;
    assert!(
        metrics.contains("rollbot_signature_failures_total{platform=\"slack\"} 7"),
        "{metrics}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let i = r.fake.inner.lock().unwrap();
    assert!(i.messages.is_empty() && i.ephemerals.is_empty() && i.responses.is_empty());
    assert!(i
        .calls
        .iter()
        .all(|c| c.method == "auth.test" || c.method == "conversations.info"));
    drop(i);
    let audit = r.audit();
    assert!(audit.is_empty(), "{audit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_refuses_a_non_approver_and_acts_once_for_an_approver() {
    let r = rig("http").await;
    let (code, ack, _) = r
        .slash(
            "/promote",
            "payments metrics look fine",
            DEPLOYER,
            "trig-pr-1",
        )
        .await;
    assert_eq!(code, 200);
    assert!(ack["text"].as_str().unwrap().contains("Promoting payments"));
    let prompt = r.fake.wait_for(10, "the prompt", prompt_of).await;
    let approve = prompt.button(":approve");
    assert!(approve.starts_with("prompt:"));

    // A deployer (not an approver) presses Approve: refused privately, the prompt stays open.
    assert_eq!(
        r.press(OUTSIDER, &prompt, &approve, "trig-press-0", None)
            .await,
        200
    );
    let refusal = r.fake.ephemeral(10, "the refusal", OUTSIDER, "").await;
    assert!(refusal.text.contains("approver"), "{}", refusal.text);
    let still = prompt_of(&r.fake).unwrap();
    assert!(still.updates.is_empty() && still.buttons().len() == 2);

    // A forged button acts on nothing.
    assert_eq!(
        r.press(
            APPROVER,
            &prompt,
            "prompt:ffffffffffff:approve",
            "trig-forged",
            None
        )
        .await,
        200
    );
    r.fake
        .ephemeral(10, "the forged press refused", APPROVER, "Unknown prompt")
        .await;

    // The approver (through the S0APPROVERS user group) presses twice, and Slack retries the first press.
    let (a, b, c) = tokio::join!(
        r.press(APPROVER, &prompt, &approve, "trig-press-1", None),
        r.press(APPROVER, &prompt, &approve, "trig-press-2", None),
        r.press(APPROVER, &prompt, &approve, "trig-press-1", Some("1")),
    );
    assert_eq!((a, b, c), (200, 200, 200));
    let answered = r
        .fake
        .wait_for(15, "the prompt answered", |f| {
            f.messages(DEPLOYS)
                .into_iter()
                .find(|m| m.ts == prompt.ts && !m.updates.is_empty())
        })
        .await;
    assert!(answered.buttons().is_empty(), "buttons removed");
    // People are shown as mentions, which Slack renders as their current
    // display name, never as the payload's deprecated user_name.
    let shown = answered.current_blocks().to_string();
    assert!(
        shown.contains("Approve by <@U0APPR> at") && shown.contains("<@U0DEPLOY>"),
        "{shown}"
    );
    assert!(
        answered.current_text().contains("Approve by <@U0APPR>"),
        "{}",
        answered.current_text()
    );
    let result = r
        .fake
        .wait_for(20, "the promotion in the prompt's thread", |f| {
            with_text(f.messages(DEPLOYS), "Promoted payments")
                .into_iter()
                .next()
        })
        .await;
    assert_eq!(result.thread_ts.as_deref(), Some(prompt.ts.as_str()));
    let shown = result.current_blocks().to_string();
    assert!(shown.contains("*By*\\n<@U0APPR>"), "{shown}");
    for m in r.fake.messages(DEPLOYS) {
        let all = format!("{} {}", m.current_text(), m.current_blocks());
        assert!(
            !all.contains("u0appr") && !all.contains("u0deploy"),
            "a username in {all}"
        );
    }
    r.fake
        .ephemeral(10, "already answered", APPROVER, "Already answered")
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let now = r
        .fake
        .messages(DEPLOYS)
        .into_iter()
        .find(|m| m.ts == prompt.ts)
        .unwrap();
    assert_eq!(now.updates.len(), 1, "the prompt is updated once");
    assert_eq!(
        with_text(r.fake.messages(DEPLOYS), "Promoted payments").len(),
        1
    );
    // One refusal for the second press; the retry is dropped.
    assert_eq!(
        r.fake
            .ephemerals(APPROVER)
            .iter()
            .filter(|e| e.text.contains("Already answered"))
            .count(),
        1
    );
    let records = r.audit_records();
    let promoted = records
        .iter()
        .find(|r| r["action"] == "promote" && r["outcome"] == "succeeded")
        .expect("the promotion is audited");
    assert_eq!(promoted["actor"]["id"], APPROVER);
    assert_eq!(promoted["actor"]["display_name"], "<@U0APPR>", "{promoted}");
    let asked = records
        .iter()
        .filter(|r| r["action"] == "promote" && r["outcome"] == "pending")
        .collect::<Vec<_>>();
    assert_eq!(asked.len(), 1, "{records:?}");
    assert_eq!(asked[0]["actor"]["display_name"], "<@U0DEPLOY>");
    assert_eq!(
        records
            .iter()
            .filter(|r| r["action"] == "promote" && r["outcome"] == "succeeded")
            .count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mention_in_a_thread_acts_once_even_when_slack_retries_the_event() {
    let r = rig("http").await;
    let root = "1700000000.000001";
    let ev = fake_slack::mention_event(
        "Ev0MENTION1",
        RESPONDER,
        DEPLOYS,
        "<@U0ROLLBOT> rollback checkout canary on fire",
        "1700000000.000050",
        Some(root),
    )
    .to_string();
    // The thread root must exist in the fake for replies.
    r.fake.inner.lock().unwrap().messages.push(Posted {
        channel: DEPLOYS.into(),
        ts: root.into(),
        thread_ts: None,
        text: "deploy of checkout v42".into(),
        blocks: Value::Null,
        user: None,
        at: Instant::now(),
        updates: vec![],
    });
    let (code, _, took) = r.signed("/slack/events", &ev, &[]).await;
    assert_eq!(code, 200);
    assert!(took < Duration::from_secs(1));
    let (code, _, _) = r
        .signed(
            "/slack/events",
            &ev,
            &[
                ("x-slack-retry-num", "1"),
                ("x-slack-retry-reason", "http_timeout"),
            ],
        )
        .await;
    assert_eq!(code, 200);
    let reply = r
        .fake
        .wait_for(20, "the answer in the thread", |f| {
            f.messages(DEPLOYS).into_iter().find(|m| {
                m.thread_ts.as_deref() == Some(root)
                    && m.current_text().contains("Rolled back checkout")
            })
        })
        .await;
    assert!(reply.current_text().contains("Rolled back"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let audit = r.audit();
    assert_audit_counts(&audit, &[("rollback", "succeeded", "", 1)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_delays_a_message_but_does_not_lose_it() {
    let r = rig("http").await;
    r.fake.rate_limit_next(2, 1);
    let (code, _, took) = r
        .slash("/rollback", "checkout", RESPONDER, "trig-429")
        .await;
    assert_eq!(code, 200);
    assert!(took < Duration::from_secs(1));
    let deploy = r
        .fake
        .wait_for(25, "the rollback despite 429s", |f| {
            with_text(f.messages(DEPLOYS), "Rolled back checkout")
                .into_iter()
                .next()
        })
        .await;
    r.fake
        .wait_for(10, "the incident channel too", |f| {
            with_text(f.messages(INCIDENTS), "Rolled back checkout")
                .into_iter()
                .next()
        })
        .await;
    let posts = r.fake.calls("chat.postMessage");
    let limited: Vec<_> = posts.iter().filter(|c| c.status == 429).collect();
    assert_eq!(limited.len(), 2, "{posts:?}");
    let waited = deploy.at.duration_since(limited[0].at);
    eprintln!(
        "slack 429 with Retry-After 1: delivered {} ms after the first 429",
        waited.as_millis()
    );
    assert!(waited >= Duration::from_millis(950), "{waited:?}");

    // Two 500s in a row: retried with backoff, the private answer still arrives.
    r.fake.inner.lock().unwrap().server_errors = 2;
    r.slash("/rollbot", "status checkout", RESPONDER, "trig-500")
        .await;
    let status = r
        .fake
        .ephemeral(15, "the status despite 500s", RESPONDER, "")
        .await;
    assert!(status.text.contains("checkout"), "{}", status.text);
    let failed = r
        .fake
        .inner
        .lock()
        .unwrap()
        .calls
        .iter()
        .filter(|c| c.status == 500)
        .count();
    assert_eq!(failed, 2);
    let audit = r.audit();
    assert_audit_counts(&audit, &[("rollback", "succeeded", "", 1)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_errors_are_reported_at_start_up_and_in_readyz() {
    let extra =
        "[channels.missing]\nslack = \"C0MISSING\"\n\n[channels.outside]\nslack = \"C0OUTSIDE\"\n";
    let r = rig_with("http", extra, fake_slack::BOT_TOKEN, &["C0OUTSIDE"]).await;
    let (code, body) = r.server.get("/readyz").await;
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("C0MISSING") && body.contains("channel_not_found"),
        "{body}"
    );
    assert!(body.contains("[channels.missing]"), "{body}");
    assert!(
        body.contains("C0OUTSIDE") && body.contains("not_in_channel"),
        "{body}"
    );
    assert!(body.contains("/invite @rollbot"), "{body}");
    drop(r);

    // A wrong bot token.
    let r = rig_with("http", "", "xoxb-wrong", &[]).await;
    let (code, body) = r.server.get("/readyz").await;
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("invalid_auth") && body.contains("bot_token"),
        "{body}"
    );
    drop(r);

    // All good.
    let r = rig("http").await;
    let (code, body) = r.server.get("/readyz").await;
    assert_eq!(code, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_from_a_dm_is_answered_privately_and_rollbot_stays_ready() {
    let r = rig("http").await;
    assert_eq!(r.server.get("/readyz").await.0, 200);
    // A DM the bot is not part of: chat.postEphemeral answers
    // channel_not_found, so the answer goes through response_url.
    let dm = "D0RESPDM";
    let (code, _, _) = r
        .slash_in(dm, "/rollbot", "status checkout", RESPONDER, "trig-dm-1")
        .await;
    assert_eq!(code, 200);
    let answer = r
        .fake
        .wait_for(15, "the status through response_url", |f| {
            f.responses("trig-dm-1").into_iter().next()
        })
        .await;
    assert_eq!(answer["response_type"], "ephemeral", "{answer}");
    assert!(answer.to_string().contains("checkout"), "{answer}");
    assert!(
        r.fake
            .calls("chat.postEphemeral")
            .iter()
            .any(|c| c.error.as_deref() == Some("channel_not_found")),
        "the DM was tried first"
    );
    // One person's conversation is not rollbot's configuration: the pod
    // stays in its Service (deploy/statefulset.yaml probes /readyz).
    for _ in 0..10 {
        let (code, body) = r.server.get("/readyz").await;
        assert_eq!(code, 200, "{body}");
        assert!(!body.contains(dm), "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A refused action from the DM reaches the person too.
    r.slash_in(dm, "/rollback", "checkout", OUTSIDER, "trig-dm-2")
        .await;
    let refusal = r
        .fake
        .wait_for(15, "the refusal through response_url", |f| {
            f.responses("trig-dm-2").into_iter().next()
        })
        .await;
    assert!(refusal.to_string().contains("responder"), "{refusal}");
    assert_eq!(r.server.get("/readyz").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_the_bot_was_removed_from_shows_in_readyz() {
    let r = rig("http").await;
    // Take the bot out of the incident channel: the rollback's incident post
    // fails with not_in_channel, and /readyz says so.
    r.fake.add_channel(INCIDENTS, false);
    r.slash("/rollback", "checkout", RESPONDER, "trig-nic")
        .await;
    r.fake
        .wait_for(20, "the deploy post", |f| {
            with_text(f.messages(DEPLOYS), "Rolled back")
                .into_iter()
                .next()
        })
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, body) = r.server.get("/readyz").await;
        if code == 503 && body.contains("not_in_channel") && body.contains(INCIDENTS) {
            assert!(body.contains("/invite @rollbot"), "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "{code} {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

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

#[test]
fn the_checked_in_slack_manifest_is_generated_by_rollbot() {
    let out = rollbot(&[
        "commands",
        "slack-manifest",
        "--url",
        "https://rollbot.example.com",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let generated = String::from_utf8(out.stdout).unwrap();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/commands/slack-manifest.yaml");
    let checked_in = std::fs::read_to_string(path).unwrap();
    assert!(
        generated == checked_in,
        "commands/slack-manifest.yaml is stale; regenerate it with\n  cargo run -- commands slack-manifest --url https://rollbot.example.com > commands/slack-manifest.yaml"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_press_on_an_expired_prompt_says_so_and_acts_on_nothing() {
    let r = rig_with(
        "http",
        "[engine]\nprompt_ttl = \"3s\"\n",
        fake_slack::BOT_TOKEN,
        &[],
    )
    .await;
    r.slash("/promote", "payments", DEPLOYER, "trig-exp-1")
        .await;
    let prompt = r.fake.wait_for(10, "the prompt", prompt_of).await;
    let approve = prompt.button(":approve");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        r.press(APPROVER, &prompt, &approve, "trig-exp-2", None)
            .await,
        200
    );
    let refusal = r
        .fake
        .ephemeral(10, "the expiry refusal", APPROVER, "")
        .await;
    assert!(refusal.text.contains("expired"), "{}", refusal.text);
    let updated = r
        .fake
        .wait_for(10, "the prompt marked expired", |f| {
            f.messages(DEPLOYS)
                .into_iter()
                .find(|m| m.ts == prompt.ts && !m.updates.is_empty())
        })
        .await;
    assert!(updated.buttons().is_empty());
    assert!(
        updated.current_text().contains("Expired"),
        "{}",
        updated.current_text()
    );
    let audit = r.audit();
    assert_audit_counts(
        &audit,
        &[
            ("promote", "succeeded", "", 0),
            ("approve", "refused", "", 1),
        ],
    );
}

/// Slack over HTTP with the simulated metric source, and CI announcing a
/// checkout rollout that started 20 minutes ago with a bad canary.
async fn rig_with_a_bad_canary_announced() -> SlackRig {
    let extra = r#"[metrics]
source = "simulated"
interval = "1s"
scenarios = { checkout = "bad: errors 3× at 5%, 1% base" }

[[roles.deployer]]
members = ["api:ci"]

[[api.clients]]
name = "ci"
token = "${SLACK_SIGNING_SECRET}"
"#;
    let r = rig_with("http", extra, fake_slack::BOT_TOKEN, &[]).await;
    let start = chrono::Utc::now() - chrono::Duration::minutes(20);
    r.api(fake_slack::SIGNING_SECRET)
        .announce("checkout", "v41", "v42", start)
        .await;
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_summary_is_one_message_updated_in_place() {
    let r = rig_with_a_bad_canary_announced().await;
    let summary = r
        .fake
        .wait_for(30, "the summary updated as the verdict changes", |f| {
            f.messages(DEPLOYS)
                .into_iter()
                .find(|m| m.text.contains("Canary checkout v42") && !m.updates.is_empty())
        })
        .await;
    let summaries = with_text(r.fake.messages(DEPLOYS), "Canary checkout");
    assert_eq!(summaries.len(), 1, "one summary message per rollout");
    assert!(summary.current_blocks().to_string().contains("rollout"));
    eprintln!(
        "slack summary: posted as {:?}, then {:?}",
        summary.text.lines().next(),
        summary
            .updates
            .iter()
            .map(|u| u.0.lines().next().unwrap_or_default().to_string())
            .collect::<Vec<_>>()
    );
    assert_ne!(
        summary.text.lines().next(),
        Some(summary.current_text().lines().next().unwrap_or_default())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_summary_arrives_with_its_chart_in_its_thread() {
    let r = rig_with_a_bad_canary_announced().await;
    let file = r
        .fake
        .wait_for(30, "the summary's chart shared", |f| {
            f.files(DEPLOYS).into_iter().next()
        })
        .await;
    let summary = with_text(r.fake.messages(DEPLOYS), "Canary checkout")
        .into_iter()
        .next()
        .expect("the summary");
    assert_eq!(file.thread_ts.as_deref(), Some(summary.ts.as_str()));
    assert!(
        file.filename.starts_with("canary-") && file.filename.ends_with(".png"),
        "{}",
        file.filename
    );
    assert_eq!(&file.bytes[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(&file.bytes[12..16], b"IHDR");
    assert_eq!(
        u32::from_be_bytes(file.bytes[16..20].try_into().unwrap()),
        800
    );
    assert_eq!(
        u32::from_be_bytes(file.bytes[20..24].try_into().unwrap()),
        400
    );
    let alt = file.alt_txt.clone().unwrap_or_default();
    assert!(alt.contains("red = canary"), "{alt}");
    assert!(summary
        .current_blocks()
        .to_string()
        .contains("red = canary"));
    // At most one chart per verdict the summary showed, not one per tick.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let summary = with_text(r.fake.messages(DEPLOYS), "Canary checkout")
        .into_iter()
        .next()
        .unwrap();
    let files = r.fake.files(DEPLOYS);
    assert!(
        files.len() <= 1 + summary.updates.len(),
        "{} charts for {} updates",
        files.len(),
        summary.updates.len()
    );
    eprintln!(
        "slack chart: {} bytes, {} chart(s) for {} summary update(s)",
        file.bytes.len(),
        files.len(),
        summary.updates.len()
    );
}

/// Hex is case-insensitive, so `v0=AB…` is the signature `v0=ab…` was: a
/// replay. A timestamp 2^63 seconds ago is stale, not (wrapped around)
/// fresh. A reason over the limit is refused with the limit, at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_in_other_hex_case_ancient_timestamps_and_oversized_reasons_are_refused() {
    let r = rig("http").await;
    let status = |sig: &str, ts: i64, body: &str| {
        r.http
            .post(r.server.url("/slack/events"))
            .header("x-slack-signature", sig.to_string())
            .header("x-slack-request-timestamp", ts.to_string())
            .body(body.to_string())
            .send()
    };
    let now = fake_slack::now();
    let challenge =
        json!({"token": "x", "challenge": "c-1", "type": "url_verification"}).to_string();
    let sig = fake_slack::sign(fake_slack::SIGNING_SECRET, now, &challenge);
    assert_eq!(status(&sig, now, &challenge).await.unwrap().status(), 200);
    let upper = format!("v0={}", sig[3..].to_uppercase());
    let mixed: String = sig
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if i % 2 == 0 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect::<String>()
        .replacen("V0=", "v0=", 1);
    assert_ne!(mixed, sig);
    for replay in [&upper, &mixed] {
        let code = status(replay, now, &challenge).await.map(|r| r.status());
        assert_eq!(
            code.ok(),
            Some(reqwest::StatusCode::UNAUTHORIZED),
            "{replay}"
        );
    }

    let ancient = now - (1_i64 << 62) - (1_i64 << 62);
    let other = json!({"token": "x", "challenge": "c-2", "type": "url_verification"}).to_string();
    let sig = fake_slack::sign(fake_slack::SIGNING_SECRET, ancient, &other);
    let code = status(&sig, ancient, &other).await.map(|r| r.status());
    assert_eq!(code.ok(), Some(reqwest::StatusCode::UNAUTHORIZED));

    let (code, ack, _) = r
        .slash(
            "/rollback",
            &format!("checkout {}", "x".repeat(2_001)),
            RESPONDER,
            "trig-long",
        )
        .await;
    assert_eq!(code, 200);
    let said = ack["text"].as_str().unwrap_or_default();
    assert!(
        said.contains("the reason is 2,001 characters long; rollbot accepts at most 2,000"),
        "{ack}"
    );
    let (_, ack, _) = r
        .slash(
            "/freeze",
            &format!("all {}", "w ".repeat(2_500)),
            DEPLOYER,
            "trig-longer",
        )
        .await;
    assert!(
        ack["text"]
            .as_str()
            .unwrap_or_default()
            .contains("rollbot accepts at most 4,000"),
        "{ack}"
    );

    let metrics = r.server.get("/metrics").await.1;
    assert!(
        metrics.contains("rollbot_signature_failures_total{platform=\"slack\"} 3"),
        "{metrics}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let audit = r.audit();
    assert!(audit.is_empty(), "{audit:?}");
}

/// The resident memory of a process, in KiB (Linux).
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Waits (bounded) until the deploy channel shows `needle`; how long it took.
async fn announced_within(r: &SlackRig, needle: &str, limit: Duration) -> Option<Duration> {
    let t = Instant::now();
    while t.elapsed() < limit {
        if !with_text(r.fake.messages(DEPLOYS), needle).is_empty() {
            return Some(t.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// A burst of 20,000 signed commands (a chat flood during an incident)
/// does not take rollbot out of service: every one is taken, and the
/// action that follows acts and is announced in the deploy channel about
/// as fast as one before the flood, not behind the flood's replies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_twenty_thousand_signed_commands_is_followed_by_a_prompt_action() {
    const BURST: usize = 20_000;
    let r = rig("http").await;
    let pid = r.server.child.id();
    // The same kind of action before the flood, for comparison.
    let (code, _, _) = r
        .slash(
            "/rollback",
            "checkout before the flood",
            RESPONDER,
            "before-flood",
        )
        .await;
    assert_eq!(code, 200);
    let quiet = announced_within(&r, "Rolled back checkout v42", Duration::from_secs(60))
        .await
        .expect("a rollback on a quiet server is announced");
    let before = rss_kib(pid);
    let t0 = Instant::now();
    let mut refused = 0;
    // 64 at a time; every call is bounded by the client's 10 s timeout.
    for chunk in (0..BURST).collect::<Vec<_>>().chunks(64) {
        let calls = chunk.iter().map(|i| {
            let trigger = format!("burst-{i}");
            let body = fake_slack::slash_body(
                "/rollbot",
                "status checkout",
                OUTSIDER,
                DEPLOYS,
                &trigger,
                &r.fake.response_url(&trigger),
            );
            let r = &r;
            async move { r.signed("/slack/commands", &body, &[]).await.0 }
        });
        refused += futures_util::future::join_all(calls)
            .await
            .into_iter()
            .filter(|code| *code != 200)
            .count();
    }
    let flood = t0.elapsed();
    let after_flood = rss_kib(pid);
    assert_eq!(refused, 0, "every signed command was taken");
    let (code, _, took) = r
        .slash(
            "/rollback",
            "checkout after the flood",
            RESPONDER,
            "after-flood",
        )
        .await;
    assert_eq!(code, 200);
    assert!(
        took < Duration::from_secs(3),
        "acknowledged within Slack's 3 s: {took:?}"
    );
    let after = announced_within(
        &r,
        "Rolled back checkout v41",
        quiet * 3 + Duration::from_secs(10),
    )
    .await;
    eprintln!(
        "slack burst: {BURST} signed commands in {:.1}s ({:.0}/s); rss {} MiB before, {} MiB after; a rollback announced in {:.1}s before the flood, {:?} after",
        flood.as_secs_f64(),
        BURST as f64 / flood.as_secs_f64(),
        before / 1024,
        after_flood / 1024,
        quiet.as_secs_f64(),
        after
    );
    assert!(
        after.is_some(),
        "the rollback after the flood was announced within 3 × {quiet:?} + 10 s"
    );
    let audit = r.audit();
    assert_audit_counts(&audit, &[("rollback", "succeeded", "", 2)]);
}
