//! Slack end to end: `rollbot serve` against the fake Slack in
//! tests/support/fake_slack.rs, over HTTP and Socket Mode.

use crate::support::audit::assert_audit_counts;
use crate::support::fake_slack::{self, FakeSlack, Posted};
use crate::support::slack_rig::SlackRig;
use crate::support::{rollbot, text};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

mod delivery;
mod modals;
mod prompts;
mod readiness;
mod signatures;
mod socket;
mod summaries;

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
        .slash("/rollback", "checkout looks broken", OUTSIDER, "trig-rb-2")
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
