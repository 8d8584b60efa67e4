//! Discord end to end: a fake Discord (tests/support/fake_discord.rs) signs
//! interactions and POSTs them to `rollbot serve`, and answers rollbot's
//! REST calls the way Discord does.

use crate::support::api::Api;
use crate::support::audit;
use crate::support::fake_discord::{FakeDiscord, Person, APP_ID, GUILD_ID};
use crate::support::{rollbot, text, Server};
use serde_json::{json, Value};
use std::time::Duration;

const TOKEN: &str = "fake-bot-token.XYZ";
const DEPLOYS: &str = "2000000000000000001";
const INCIDENTS: &str = "2000000000000000002";
const LOCKED: &str = "2000000000000000003";

const RESPONDER_ROLE: &str = "3000000000000000001";
const APPROVER_ROLE: &str = "3000000000000000002";
const VIEWER_ROLE: &str = "3000000000000000003";

fn omar() -> Person {
    Person::new(
        "4000000000000000001",
        "Omar",
        &[RESPONDER_ROLE, VIEWER_ROLE],
    )
}
fn dana() -> Person {
    Person::new("4000000000000000002", "Dana", &[VIEWER_ROLE])
}
fn sam() -> Person {
    // A deployer by user ID, not by role; also an approver.
    Person::new("4000000000000000003", "Sam", &[VIEWER_ROLE, APPROVER_ROLE])
}
fn priya() -> Person {
    Person::new("4000000000000000004", "Priya", &[APPROVER_ROLE])
}

const CONFIG: &str = r##"
[server]
listen = "127.0.0.1:{port}"

[store]
path = "{data}"

[channels.deploys]
discord = "DEPLOYS"

[channels.incidents]
discord = "INCIDENTS"

[channels.locked]
discord = "LOCKED"

[backends.sim]
type = "simulated"
history = { checkout = ["v1", "v2"], payments = ["v7", "v8"], search = ["s1", "s2"] }

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

[backends.slow]
type = "simulated"
latency = "1500ms"
history = { ledger = ["l1", "l2"] }

[[services]]
name = "ledger"
backend = "slow"

[[services]]
name = "search"
backend = "sim"
deploy_channel = "locked"

[[roles.responder]]
members = ["discord-role:RESPONDER_ROLE"]

[[roles.approver]]
members = ["discord-role:APPROVER_ROLE"]

[[roles.deployer]]
members = ["discord:SAM"]

[[roles.viewer]]
members = ["discord-role:VIEWER_ROLE"]

[chat.discord]
application_id = "APP_ID"
public_key = "PUBLIC_KEY"
bot_token = "${ROLLBOT_TEST_DISCORD_TOKEN}"
api_url = "API_URL"
guild_ids = ["GUILD_ID"]
"##;

fn config(fake: &FakeDiscord) -> String {
    CONFIG
        .replace("DEPLOYS", DEPLOYS)
        .replace("INCIDENTS", INCIDENTS)
        .replace("LOCKED", LOCKED)
        .replace("RESPONDER_ROLE", RESPONDER_ROLE)
        .replace("APPROVER_ROLE", APPROVER_ROLE)
        .replace("VIEWER_ROLE", VIEWER_ROLE)
        .replace("SAM", &sam().id)
        .replace("APP_ID", APP_ID)
        .replace("GUILD_ID", GUILD_ID)
        .replace("PUBLIC_KEY", &fake.public_key_hex())
        .replace("API_URL", &fake.api)
}

async fn start() -> (FakeDiscord, Server, tempfile::TempDir) {
    start_with(|c| c, &[]).await
}

/// [`start`] with the config text changed by `edit`, and `env` besides
/// the bot token.
async fn start_with(
    edit: impl FnOnce(String) -> String,
    env: &[(&str, &str)],
) -> (FakeDiscord, Server, tempfile::TempDir) {
    let fake = FakeDiscord::start(TOKEN, &[DEPLOYS, INCIDENTS]).await;
    fake.add_channel(LOCKED, true);
    let dir = tempfile::tempdir().unwrap();
    let cfg = edit(config(&fake));
    let mut env = env.to_vec();
    env.push(("ROLLBOT_TEST_DISCORD_TOKEN", TOKEN));
    let server = Server::start_async(dir.path(), &cfg, &env).await;
    (fake, server, dir)
}

fn embed_text(m: &Value) -> String {
    m["embeds"]
        .as_array()
        .map(|es| {
            es.iter()
                .map(|e| {
                    let mut t = format!(
                        "{}\n{}",
                        e["title"].as_str().unwrap_or(""),
                        e["description"].as_str().unwrap_or("")
                    );
                    for f in e["fields"].as_array().into_iter().flatten() {
                        t.push_str(&format!(
                            "\n{}: {}",
                            f["name"].as_str().unwrap_or(""),
                            f["value"].as_str().unwrap_or("")
                        ));
                    }
                    t.push_str(&format!("\n{}", e["footer"]["text"].as_str().unwrap_or("")));
                    t
                })
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

/// The text of the first follow-up message to `interaction`, waited for.
async fn first_followup(fake: &FakeDiscord, interaction: &Value, what: &str) -> String {
    let t = token(interaction);
    fake.wait_for(what, |st| {
        st.interactions.get(&t)?.followups.first().map(embed_text)
    })
    .await
}

fn token(p: &Value) -> String {
    p["token"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn ping_gets_pong_and_bad_signatures_get_401_with_no_side_effect() {
    let (fake, s, _dir) = start().await;
    let url = s.url("/discord/interactions");
    let (code, answer, _) = fake
        .send(
            &url,
            &json!({"id": "1", "application_id": APP_ID, "type": 1, "token": "t", "version": 1}),
        )
        .await;
    assert_eq!((code, answer), (200, json!({"type": 1})));

    // A signed /rollback, then the same bytes with every kind of bad signature.
    let payload = fake.command(
        DEPLOYS,
        &omar(),
        "rollback",
        &[("service", json!("checkout"))],
    );
    let body = payload.to_string();
    let now = chrono::Utc::now().timestamp().to_string();
    let other = FakeDiscord::start(TOKEN, &[]).await; // another key
    let stale = (chrono::Utc::now().timestamp() - 600).to_string();
    let tampered = body.replace("checkout", "payments");
    let cases = [
        (
            "signed by another key",
            body.clone(),
            Some(other.sign(&now, &body)),
            Some(now.clone()),
        ),
        (
            "body changed after signing",
            tampered,
            Some(fake.sign(&now, &body)),
            Some(now.clone()),
        ),
        (
            "timestamp ten minutes old",
            body.clone(),
            Some(fake.sign(&stale, &body)),
            Some(stale.clone()),
        ),
        ("no signature", body.clone(), None, Some(now.clone())),
        (
            "no timestamp",
            body.clone(),
            Some(fake.sign(&now, &body)),
            None,
        ),
        (
            "signature not hex",
            body.clone(),
            Some("zz".repeat(64)),
            Some(now.clone()),
        ),
    ];
    for (what, b, sig, ts) in &cases {
        let (code, _, _) = fake.post_raw(&url, b, sig.as_deref(), ts.as_deref()).await;
        assert_eq!(code, 401, "{what}");
    }
    let m = s.get("/metrics").await.1;
    assert!(
        m.contains("rollbot_signature_failures_total{platform=\"discord\"} 6"),
        "{m}"
    );
    assert!(
        !m.contains("rollbot_actions_total{"),
        "a refused request acted: {m}"
    );
    assert!(m.contains("rollbot_audit_appends_total 0"), "{m}");
    assert!(fake.with(|st| st.log.is_empty()), "rollbot called Discord");
}

#[tokio::test]
async fn a_responders_rollback_is_deferred_acts_once_and_is_audited() {
    let (fake, s, dir) = start().await;
    let url = s.url("/discord/interactions");

    // Autocomplete offers the configured services.
    let (_, answer, _) = fake
        .send(
            &url,
            &fake.autocomplete(DEPLOYS, &omar(), "rollback", "service", "CHE"),
        )
        .await;
    assert_eq!(answer["type"], 8);
    assert_eq!(
        answer["data"]["choices"],
        json!([{"name": "checkout", "value": "checkout"}])
    );

    let payload = fake.command(
        DEPLOYS,
        &omar(),
        "rollback",
        &[
            ("service", json!("checkout")),
            ("reason", json!("5xx spike @everyone")),
        ],
    );
    let (code, answer, took) = fake.send(&url, &payload).await;
    assert_eq!(code, 200);
    // Deferred at once, visible in the channel (no ephemeral flag).
    assert_eq!(answer["type"], 5, "{answer}");
    assert_eq!(
        answer["data"]["flags"].as_u64().unwrap_or(0) & 64,
        0,
        "{answer}"
    );
    assert!(took < Duration::from_millis(1500), "deferral took {took:?}");
    eprintln!("discord: deferred response in {took:?}");

    let t = token(&payload);
    let original = fake
        .wait_for("the rollback result in @original", |st| {
            let o = st.interactions.get(&t)?.original.clone()?;
            (!o["embeds"].as_array()?.is_empty()).then_some(o)
        })
        .await;
    let shown = embed_text(&original);
    assert!(shown.contains("Rolled back checkout v2 → v1"), "{shown}");
    assert!(shown.contains("By: Omar"), "{shown}");
    assert!(shown.contains("correlation "), "{shown}");
    assert!(!fake.interaction(&t).original_deleted);

    // Announced in the deploy channel and, for a rollback, the incident channel.
    let announced = fake
        .wait_for("the announcement in the incident channel", |st| {
            st.messages_in(INCIDENTS).first().cloned()
        })
        .await;
    assert!(embed_text(&announced).contains("Rolled back checkout"));
    let deploys = fake.with(|st| st.messages_in(DEPLOYS));
    assert_eq!(deploys.len(), 1);
    let embed = &deploys[0]["embeds"][0];
    assert_eq!(embed["color"], 0x22C55E, "success is green");
    assert!(embed["footer"]["text"]
        .as_str()
        .unwrap()
        .contains("audit #"));
    // Mentions in echoed text are never parsed.
    let create = fake.with(|st| {
        st.log
            .iter()
            .find(|l| l.method == "POST" && l.path.ends_with("/messages"))
            .unwrap()
            .body
            .clone()
    });
    assert_eq!(create["allowed_mentions"]["parse"], json!([]), "{create}");

    // The same interaction delivered again does not act again.
    let (code, answer, _) = fake.send(&url, &payload).await;
    assert_eq!((code, answer["type"].as_u64()), (200, Some(5)));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let m = s.get("/metrics").await.1;
    assert!(
        m.contains("rollbot_actions_total{action=\"rollback\",outcome=\"succeeded\"} 1"),
        "{m}"
    );

    // The audit entry shows through /audit, ephemerally.
    let audit = fake.command(
        DEPLOYS,
        &dana(),
        "audit",
        &[("service", json!("checkout")), ("last", json!(5))],
    );
    let (_, answer, _) = fake.send(&url, &audit).await;
    assert_eq!(answer["type"], 5);
    assert_eq!(answer["data"]["flags"], 64, "views are ephemeral: {answer}");
    let t = token(&audit);
    let shown = fake
        .wait_for("the audit view", |st| {
            let o = st.interactions.get(&t)?.original.clone()?;
            (!o["embeds"].as_array()?.is_empty()).then(|| embed_text(&o))
        })
        .await;
    assert!(shown.contains("rollback checkout by Omar"), "{shown}");
    assert!(shown.contains("succeeded"), "{shown}");

    assert!(s.terminate().success());
    let list = audit::list(&dir.path().join("data"), &["--service", "checkout"]);
    assert_eq!(list.matches("— succeeded").count(), 1, "{list}");
    assert_eq!(list.matches("— requested").count(), 1, "{list}");
    let export = text(&rollbot(&[
        "audit",
        "export",
        "--data",
        dir.path().join("data").to_str().unwrap(),
    ]));
    assert!(
        export.contains(&format!("\"id\":\"{}\"", omar().id)),
        "{export}"
    );
    assert!(
        export.contains(&format!("discord-role:{RESPONDER_ROLE}")),
        "{export}"
    );
    assert!(
        export.contains(&format!(
            "\"idempotency_key\":\"discord:{}\"",
            payload["id"].as_str().unwrap()
        )),
        "{export}"
    );
}

/// What only the author of interaction `t` sees once it mentions `needle`;
/// fails when the channel saw it at any moment.
async fn seen_only_by_the_author(fake: &FakeDiscord, t: &str, needle: &str) -> String {
    let shown = fake
        .wait_for(&format!("{needle:?}, shown to its author"), |st| {
            let i = st.interactions.get(t)?;
            i.author_only()
                .iter()
                .map(embed_text)
                .find(|e| e.contains(needle))
        })
        .await;
    let public: Vec<String> = fake
        .interaction(t)
        .channel_saw()
        .iter()
        .map(embed_text)
        .collect();
    assert!(
        public.iter().all(|p| !p.contains(needle)),
        "the channel saw it: {public:?}"
    );
    shown
}

#[tokio::test]
async fn a_member_without_the_role_is_refused_ephemerally_naming_the_role() {
    let (fake, s, _dir) = start_with(|c| {
        // ledger's promotions are frozen all the time.
        c + "\n[[freeze.windows]]\nname = \"always\"\nkind = \"deny\"\nschedule = \"* * * * *\"\nduration = \"1h\"\nservices = [\"*/ledger\"]\nreason = \"ledger migration\"\n"
    }, &[])
    .await;
    let url = s.url("/discord/interactions");
    let payload = fake.command(
        DEPLOYS,
        &dana(),
        "rollback",
        &[("service", json!("checkout"))],
    );
    let (code, answer, _) = fake.send(&url, &payload).await;
    // Deferred privately: Discord keeps a deferral's visibility for the
    // answer, so a refusal must be deferred (or answered) ephemerally.
    assert_eq!((code, answer["type"].as_u64()), (200, Some(5)));
    assert_eq!(answer["data"]["flags"], 64, "{answer}");
    let shown = seen_only_by_the_author(&fake, &token(&payload), "Not allowed").await;
    assert!(shown.contains("responder, admin"), "{shown}");
    assert!(
        fake.with(|st| st.messages_in(DEPLOYS).is_empty()),
        "a refusal was announced"
    );

    // A deployer's promotion during a freeze: refused, privately too.
    let frozen = fake.command(DEPLOYS, &sam(), "promote", &[("service", json!("ledger"))]);
    let (_, answer, _) = fake.send(&url, &frozen).await;
    assert_eq!(answer["data"]["flags"], 64, "{answer}");
    let shown = seen_only_by_the_author(&fake, &token(&frozen), "frozen").await;
    assert!(shown.contains("ledger migration"), "{shown}");
    // An action that will be done is deferred visibly, for the channel.
    let done = fake.command(
        DEPLOYS,
        &omar(),
        "rollback",
        &[("service", json!("checkout"))],
    );
    let (_, answer, _) = fake.send(&url, &done).await;
    assert_eq!(answer["data"]["flags"].as_u64().unwrap_or(0) & 64, 0);
    let m = s.get("/metrics").await.1;
    assert!(
        m.contains("rollbot_refusals_total{action=\"rollback\",reason=\"permission\"} 1"),
        "{m}"
    );
    assert!(!m.contains("outcome=\"succeeded\""), "{m}");

    // A command outside the configured guild is refused at once, ephemerally.
    let mut elsewhere = fake.command(
        DEPLOYS,
        &omar(),
        "rollback",
        &[("service", json!("checkout"))],
    );
    elsewhere["guild_id"] = json!("1299999999999999999");
    let (_, answer, _) = fake.send(&url, &elsewhere).await;
    assert_eq!(answer["type"], 4);
    assert_eq!(answer["data"]["flags"], 64);
    // An unknown service is refused with the grammar's hint.
    let typo = fake.command(
        DEPLOYS,
        &omar(),
        "rollback",
        &[("service", json!("chekout"))],
    );
    let (_, answer, _) = fake.send(&url, &typo).await;
    assert_eq!(answer["type"], 4);
    assert!(
        embed_text(&answer["data"]).contains("did you mean checkout?"),
        "{answer}"
    );
}

/// Sam (a deployer) runs `/promote payments`: payments is critical, so the
/// answer is deferred and a prompt with buttons appears in the deploy
/// channel. Returns the interaction sent and the prompt message.
async fn sam_asks_to_promote_payments(
    fake: &FakeDiscord,
    url: &str,
    reason: &str,
) -> (Value, Value) {
    let ask = fake.command(
        DEPLOYS,
        &sam(),
        "promote",
        &[("service", json!("payments")), ("reason", json!(reason))],
    );
    let (_, answer, _) = fake.send(url, &ask).await;
    assert_eq!(answer["type"], 5);
    let prompt = fake
        .wait_for("the prompt in the deploy channel", |st| {
            st.messages_in(DEPLOYS)
                .into_iter()
                .find(|m| m["components"].as_array().is_some_and(|c| !c.is_empty()))
        })
        .await;
    (ask, prompt)
}

#[tokio::test]
async fn prompt_buttons_refuse_non_approvers_and_act_once_for_approvers() {
    let (fake, s, _dir) = start().await;
    let url = s.url("/discord/interactions");
    let (ask, prompt) = sam_asks_to_promote_payments(&fake, &url, "canary clean").await;
    let buttons = prompt["components"][0]["components"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(buttons.len(), 2);
    let approve = buttons[0]["custom_id"].as_str().unwrap().to_string();
    assert!(
        approve.starts_with("prompt:") && approve.ends_with(":approve"),
        "{approve}"
    );
    assert_eq!(buttons[0]["label"], "Approve");
    assert_eq!(buttons[1]["style"], 4, "reject is red");
    let t = token(&ask);
    let waiting = fake
        .wait_for("the pending answer", |st| {
            let o = st.interactions.get(&t)?.original.clone()?;
            (!o["embeds"].as_array()?.is_empty()).then(|| embed_text(&o))
        })
        .await;
    assert!(waiting.contains("Waiting for approval"), "{waiting}");

    // Dana (viewer) presses Approve: refused, ephemerally, naming the role.
    let press = fake.press(&dana(), &prompt, &approve);
    let (code, answer, took) = fake.send(&url, &press).await;
    assert_eq!(
        (code, answer.clone()),
        (200, json!({"type": 6})),
        "{answer}"
    );
    assert!(took < Duration::from_millis(1500));
    let pt = token(&press);
    let refusal = fake
        .wait_for("the refusal", |st| {
            st.interactions.get(&pt)?.followups.first().cloned()
        })
        .await;
    assert_eq!(refusal["flags"].as_u64().unwrap() & 64, 64);
    let shown = embed_text(&refusal);
    assert!(shown.contains("approver or admin"), "{shown}");
    assert!(shown.contains("stays open"), "{shown}");
    // Sam asked, so Sam cannot approve.
    let own = fake.press(&sam(), &prompt, &approve);
    fake.send(&url, &own).await;
    let shown = first_followup(&fake, &own, "the two-person refusal").await;
    assert!(shown.contains("different person"), "{shown}");
    // The prompt is untouched: buttons still live.
    let now = fake.with(|st| st.messages[prompt["id"].as_str().unwrap()].clone());
    assert_eq!(now["components"][0]["components"][0]["disabled"], false);
    assert!(now["edited_timestamp"].is_null());

    // Priya (approver) presses Approve twice, and Discord delivers the first press twice.
    let first = fake.press(&priya(), &prompt, &approve);
    let (_, answer, _) = fake.send(&url, &first).await;
    assert_eq!(answer["type"], 6);
    fake.send(&url, &first).await;
    let second = fake.press(&priya(), &prompt, &approve);
    fake.send(&url, &second).await;
    let edited = fake
        .wait_for("the answered prompt", |st| {
            let m = st.messages[prompt["id"].as_str().unwrap()].clone();
            (m["components"][0]["components"][0]["disabled"] == true).then_some(m)
        })
        .await;
    let shown = embed_text(&edited);
    assert!(shown.contains("Answer: Approve by Priya at"), "{shown}");
    let again = first_followup(&fake, &second, "the second press's answer").await;
    assert!(again.contains("Already answered"), "{again}");
    let promoted = fake
        .wait_for("the promotion's announcement in the prompt's thread", |s| {
            s.messages_under(DEPLOYS)
                .into_iter()
                .map(|m| embed_text(&m))
                .find(|t| t.contains("Promoted payments"))
        })
        .await;
    assert!(promoted.contains("By: Priya"), "{promoted}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let m = s.get("/metrics").await.1;
    // One approval acted; the repeats were refused as already answered.
    assert!(
        m.contains("rollbot_actions_total{action=\"approve\",outcome=\"succeeded\"} 1"),
        "{m}"
    );
    let promotions = fake.with(|s| {
        s.messages_under(DEPLOYS)
            .iter()
            .filter(|m| embed_text(m).contains("Promoted payments"))
            .count()
    });
    assert_eq!(promotions, 1, "the backend acted more than once");

    // A forged button does nothing.
    let forged = fake.press(&priya(), &prompt, "prompt:000000000000:approve");
    fake.send(&url, &forged).await;
    let shown = first_followup(&fake, &forged, "the forged button's answer").await;
    assert!(shown.contains("Unknown prompt"), "{shown}");
}

#[tokio::test]
async fn a_429_delays_but_does_not_lose_a_message_and_errors_are_reported() {
    let (fake, s, _dir) = start().await;
    let url = s.url("/discord/interactions");
    fake.rate_limit(INCIDENTS, 2, 0.4);
    fake.fail(DEPLOYS, 1);
    let payload = fake.command(
        DEPLOYS,
        &omar(),
        "rollback",
        &[("service", json!("checkout"))],
    );
    fake.send(&url, &payload).await;
    let msg = fake
        .wait_for("the incident message after the 429s", |st| {
            st.messages_in(INCIDENTS).first().cloned()
        })
        .await;
    assert!(embed_text(&msg).contains("Rolled back checkout"));
    let calls: Vec<_> = fake.with(|st| {
        st.log
            .iter()
            .filter(|l| l.path == format!("/channels/{INCIDENTS}/messages"))
            .cloned()
            .collect()
    });
    let codes: Vec<u16> = calls.iter().map(|c| c.status).collect();
    // Exactly the two 429s it was given: no call came before retry_after was up.
    assert_eq!(codes, vec![429, 429, 200], "{codes:?}");
    let waited = calls[2].at - calls[0].at;
    assert!(
        waited >= Duration::from_millis(780),
        "waited only {waited:?}"
    );
    eprintln!("discord: 2 × 429 (retry_after 0.4 s) delayed the message by {waited:?}");
    assert_eq!(fake.with(|st| st.messages_in(INCIDENTS).len()), 1);
    // The 502 on the deploy channel was retried.
    fake.wait_for("the deploy channel message after a 502", |st| {
        st.messages_in(DEPLOYS).first().cloned()
    })
    .await;

    // A channel the bot cannot see answers 50001 Missing Access: the action
    // still succeeds and the failure is counted.
    let search = fake.command(
        DEPLOYS,
        &omar(),
        "rollback",
        &[("service", json!("search"))],
    );
    fake.send(&url, &search).await;
    let t = token(&search);
    let shown = fake
        .wait_for("the search rollback", |st| {
            let o = st.interactions.get(&t)?.original.clone()?;
            (!o["embeds"].as_array()?.is_empty()).then(|| embed_text(&o))
        })
        .await;
    assert!(shown.contains("Rolled back search"), "{shown}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let m = s.get("/metrics").await.1;
        if m.contains("rollbot_chat_errors_total{platform=\"discord\"} 1") {
            assert!(
                m.contains("rollbot_chat_rate_limited_total{platform=\"discord\"} 2"),
                "{m}"
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{m}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let locked = fake.with(|st| {
        st.log
            .iter()
            .find(|l| l.path == format!("/channels/{LOCKED}/messages"))
            .map(|l| l.status)
    });
    assert_eq!(locked, Some(403));
}

#[tokio::test]
async fn discord_register_bulk_overwrites_the_generated_commands() {
    let fake = FakeDiscord::start(TOKEN, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&fake)
        .replace("{port}", "0")
        .replace("{data}", &dir.path().join("data").display().to_string());
    let path = dir.path().join("rollbot.toml");
    std::fs::write(&path, cfg).unwrap();
    let run = |token: &'static str, guild: Option<&'static str>| {
        let path = path.clone();
        tokio::task::spawn_blocking(move || {
            let mut args = vec![
                "commands",
                "discord-register",
                "--config",
                path.to_str().unwrap(),
            ];
            if let Some(g) = guild {
                args.extend(["--guild", g]);
            }
            std::process::Command::new(crate::support::bin())
                .args(&args)
                .env("ROLLBOT_TEST_DISCORD_TOKEN", token)
                .output()
                .unwrap()
        })
    };
    let out = run(TOKEN, Some(GUILD_ID)).await.unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let registered = format!(
        "registered {} commands in server",
        rollbot::command::COMMANDS.len()
    );
    assert!(text(&out).contains(&registered), "{}", text(&out));
    let expected: Value =
        serde_json::from_str(include_str!("../../commands/discord-commands.json")).unwrap();
    assert_eq!(
        fake.with(|s| s.commands.get(GUILD_ID).cloned()),
        Some(expected)
    );
    let out = run(TOKEN, None).await.unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(fake.with(|s| s.commands.contains_key("global")));

    let out = run("wrong-token", Some(GUILD_ID)).await.unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("401"), "{}", text(&out));

    // The printed JSON is the checked-in file.
    let printed = rollbot(&["commands", "discord-json"]);
    assert_eq!(
        String::from_utf8_lossy(&printed.stdout),
        include_str!("../../commands/discord-commands.json")
    );
}

fn sink(fake: &FakeDiscord, token: &str) -> rollbot::chat::discord::DiscordSink {
    let rest = rollbot::chat::discord::rest::Rest::new(
        &fake.api,
        token,
        APP_ID.parse().unwrap(),
        rollbot::chat::discord::rest::RetryPolicy::default(),
        std::sync::Arc::new(rollbot::telemetry::Telemetry::new()),
    )
    .unwrap();
    rollbot::chat::discord::DiscordSink::new(rest)
}

#[tokio::test]
async fn summaries_are_edited_in_place_and_replies_go_in_one_thread() {
    use rollbot::chat::{ButtonStyle, ChatSink, Message, Severity};
    let fake = FakeDiscord::start(TOKEN, &[DEPLOYS]).await;
    let discord = sink(&fake, TOKEN);
    let summary = Message::new(Severity::Success, "Canary checkout v2: healthy")
        .field("Score", "98/100")
        .context("rollout r-1");
    let at = discord.post(DEPLOYS, &summary).await.unwrap();
    let prompt = Message::new(Severity::Warning, "Approve promotion of checkout?")
        .button("Approve", "prompt:abc:approve", ButtonStyle::Primary)
        .button("Roll back", "prompt:abc:reject", ButtonStyle::Danger);
    let p = discord.reply(&at, &prompt).await.unwrap();
    assert_eq!(
        p.thread.as_deref(),
        Some(at.id.as_str()),
        "the thread is the summary's"
    );
    let again = discord
        .reply(&at, &Message::new(Severity::Info, "follow-up"))
        .await
        .unwrap();
    assert_eq!(again.channel, at.id);
    let borderline = Message::new(Severity::Warning, "Canary checkout v2: borderline");
    discord.update(&at, &borderline).await.unwrap();

    fake.with(|s| {
        assert_eq!(s.messages_in(DEPLOYS).len(), 1, "one summary per rollout");
        let m = &s.messages[&at.id];
        assert_eq!(m["embeds"][0]["color"], 0xF59E0B);
        assert!(m["embeds"][0]["title"]
            .as_str()
            .unwrap()
            .contains("borderline"));
        let thread = s.messages_in(&at.id);
        assert_eq!(thread.len(), 2);
        assert_eq!(
            thread[0]["components"][0]["components"][1]["custom_id"],
            "prompt:abc:reject"
        );
        let starts = s
            .log
            .iter()
            .filter(|l| l.path.ends_with("/threads"))
            .count();
        assert_eq!(starts, 1, "the thread is started once");
    });

    // After a restart the thread already exists: Discord says 160004 and the
    // reply still lands in it.
    let restarted = sink(&fake, TOKEN);
    let r = restarted
        .reply(&at, &Message::new(Severity::Info, "after restart"))
        .await
        .unwrap();
    assert_eq!(r.channel, at.id);
    fake.with(|s| {
        assert_eq!(s.messages_in(&at.id).len(), 3);
        assert!(s
            .log
            .iter()
            .any(|l| l.status == 400 && l.path.ends_with("/threads")));
    });

    // Discord's errors come back as configuration errors that say what to fix.
    let wrong = sink(&fake, "not-the-token");
    let e = wrong.post(DEPLOYS, &summary).await.unwrap_err().to_string();
    assert!(e.contains("401") && e.contains("bot_token"), "{e}");
    fake.add_channel(LOCKED, true);
    let e = discord
        .post(LOCKED, &summary)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("50001") && e.contains("Missing Access") && e.contains(LOCKED),
        "{e}"
    );
    let e = discord
        .post("2999999999999999999", &summary)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("10003"), "{e}");
}

#[tokio::test]
async fn one_channels_rate_limit_does_not_hold_up_another_and_order_is_kept() {
    use rollbot::chat::{ChatSink, Message, Severity};
    let fake = FakeDiscord::start(TOKEN, &[DEPLOYS, INCIDENTS]).await;
    let discord = std::sync::Arc::new(sink(&fake, TOKEN));
    fake.rate_limit(DEPLOYS, 1, 1.0);
    let started = std::time::Instant::now();
    let mut posts = Vec::new();
    for i in 0..5 {
        let d = discord.clone();
        posts.push(tokio::spawn(async move {
            d.post(
                DEPLOYS,
                &Message::new(Severity::Info, format!("deploy {i}")),
            )
            .await
        }));
        // Let each post queue up before the next.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    discord
        .post(INCIDENTS, &Message::new(Severity::Info, "incident"))
        .await
        .unwrap();
    let other = started.elapsed();
    assert!(
        other < Duration::from_millis(800),
        "the incident channel waited {other:?}"
    );
    for p in posts {
        p.await.unwrap().unwrap();
    }
    let limited = started.elapsed();
    assert!(limited >= Duration::from_millis(950), "{limited:?}");
    let titles: Vec<String> = fake.with(|s| {
        s.messages_in(DEPLOYS)
            .iter()
            .map(|m| m["embeds"][0]["title"].as_str().unwrap().to_string())
            .collect()
    });
    let expected: Vec<String> = (0..5).map(|i| format!("ℹ️ deploy {i}")).collect();
    assert_eq!(titles, expected, "posted in order, none lost");
    eprintln!(
        "discord: other channel served in {other:?} while one waited out a 1 s 429 ({limited:?})"
    );

    // An empty bucket (X-RateLimit-Remaining: 0) is waited out before the
    // next call, so Discord never has to answer 429.
    fake.exhaust_bucket(INCIDENTS, 0.5);
    let t0 = std::time::Instant::now();
    discord
        .post(INCIDENTS, &Message::new(Severity::Info, "a"))
        .await
        .unwrap();
    discord
        .post(INCIDENTS, &Message::new(Severity::Info, "b"))
        .await
        .unwrap();
    assert!(
        t0.elapsed() >= Duration::from_millis(480),
        "{:?}",
        t0.elapsed()
    );
    let statuses: Vec<u16> = fake.with(|s| {
        s.log
            .iter()
            .filter(|l| l.path == format!("/channels/{INCIDENTS}/messages"))
            .map(|l| l.status)
            .collect()
    });
    assert!(!statuses.contains(&429), "{statuses:?}");
}

#[tokio::test]
async fn an_expired_prompt_says_so_and_cannot_act() {
    let (fake, s, _dir) = start_with(
        |c| c.replace("[store]", "[engine]\nprompt_ttl = \"1s\"\n\n[store]"),
        &[],
    )
    .await;
    let url = s.url("/discord/interactions");
    fake.send(
        &url,
        &fake.command(
            DEPLOYS,
            &sam(),
            "promote",
            &[("service", json!("payments"))],
        ),
    )
    .await;
    let prompt = fake
        .wait_for("the prompt", |st| {
            st.messages_in(DEPLOYS)
                .into_iter()
                .find(|m| m["components"].as_array().is_some_and(|c| !c.is_empty()))
        })
        .await;
    let approve = prompt["components"][0]["components"][0]["custom_id"]
        .as_str()
        .unwrap()
        .to_string();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let press = fake.press(&priya(), &prompt, &approve);
    fake.send(&url, &press).await;
    let shown = first_followup(&fake, &press, "the expiry refusal").await;
    assert!(shown.contains("Prompt expired"), "{shown}");
    let edited = fake
        .wait_for("the expired prompt", |st| {
            let m = st.messages[prompt["id"].as_str().unwrap()].clone();
            (m["components"][0]["components"][0]["disabled"] == true).then_some(m)
        })
        .await;
    assert!(
        embed_text(&edited).contains("Expired: no answer before"),
        "{}",
        embed_text(&edited)
    );
    let m = s.get("/metrics").await.1;
    assert!(
        !m.contains("action=\"approve\",outcome=\"succeeded\""),
        "{m}"
    );
}

#[tokio::test]
async fn a_slow_backend_never_delays_the_first_answer() {
    let (fake, s, _dir) = start().await;
    let url = s.url("/discord/interactions");
    let payload = fake.command(
        DEPLOYS,
        &omar(),
        "rollback",
        &[("service", json!("ledger"))],
    );
    let started = std::time::Instant::now();
    let (_, answer, took) = fake.send(&url, &payload).await;
    assert_eq!(answer["type"], 5);
    assert!(took < Duration::from_millis(1000), "deferral took {took:?}");
    let t = token(&payload);
    let shown = fake
        .wait_for("the slow rollback's result", |st| {
            let o = st.interactions.get(&t)?.original.clone()?;
            (!o["embeds"].as_array()?.is_empty()).then(|| embed_text(&o))
        })
        .await;
    let total = started.elapsed();
    assert!(shown.contains("Rolled back ledger l2 → l1"), "{shown}");
    assert!(
        total > Duration::from_secs(3),
        "the backend was not slow: {total:?}"
    );
    eprintln!("discord: slow backend: deferred in {took:?}, result after {total:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_summary_arrives_with_its_chart_attached() {
    let extra = r#"
[metrics]
source = "simulated"
interval = "1s"
scenarios = { checkout = "bad: errors 3× at 5%, 1% base" }

[[roles.deployer]]
members = ["api:ci"]

[[api.clients]]
name = "ci"
token = "${ROLLBOT_TEST_API_TOKEN}"
"#;
    let api_token = "ci-token-0123456789abcdef0123456789";
    let (fake, server, _dir) =
        start_with(|c| c + extra, &[("ROLLBOT_TEST_API_TOKEN", api_token)]).await;
    let start = chrono::Utc::now() - chrono::Duration::minutes(20);
    Api::new(&server, api_token)
        .announce("checkout", "v1", "v2", start)
        .await;
    let (summary, png) = fake
        .wait_for("the summary with its chart", |s| {
            s.messages_in(DEPLOYS).into_iter().find_map(|m| {
                let a = m["attachments"].get(0)?.clone();
                let bytes = s.attachment_bytes(&a)?;
                Some((m, bytes))
            })
        })
        .await;
    let title = summary["embeds"][0]["title"].as_str().unwrap_or_default();
    assert!(title.contains("Canary checkout v2"), "{title}");
    let a = &summary["attachments"][0];
    assert_eq!(a["content_type"], "image/png");
    assert!(a["filename"].as_str().unwrap().starts_with("canary-"));
    assert!(a["description"].as_str().unwrap().contains("red = canary"));
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(&png[12..16], b"IHDR");
    assert_eq!(u32::from_be_bytes(png[16..20].try_into().unwrap()), 800);
    assert_eq!(u32::from_be_bytes(png[20..24].try_into().unwrap()), 400);
    // Later edits keep one chart on the one summary; uploads are few.
    tokio::time::sleep(Duration::from_secs(3)).await;
    fake.with(|s| {
        let summaries: Vec<Value> = s
            .messages_in(DEPLOYS)
            .into_iter()
            .filter(|m| {
                m["embeds"][0]["title"]
                    .as_str()
                    .is_some_and(|t| t.contains("Canary checkout"))
            })
            .collect();
        assert_eq!(summaries.len(), 1, "one summary per rollout");
        assert_eq!(summaries[0]["attachments"].as_array().unwrap().len(), 1);
        let edits = s
            .log
            .iter()
            .filter(|l| l.method == "PATCH" && l.path.contains(DEPLOYS))
            .count();
        assert!(
            s.files.len() <= edits,
            "{} uploads for {edits} edits",
            s.files.len()
        );
        eprintln!(
            "discord chart: {} bytes, {} upload(s), {edits} edit(s)",
            png.len(),
            s.files.len()
        );
    });
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_prompt_escalates_with_a_real_ping_of_the_next_group() {
    // No metric source: escalation still runs (there is no controller loop).
    let (fake, s, _dir) = start_with(|c| {
        c.replacen(
            "critical = true\n",
            &format!(
                "critical = true\nescalate_after = \"1s\"\nescalation = [\"discord-role:{APPROVER_ROLE}\", \"discord:{}\"]\n",
                omar().id
            ),
            1,
        )
    }, &[])
    .await;
    let url = s.url("/discord/interactions");
    let (_, prompt) = sam_asks_to_promote_payments(&fake, &url, "@everyone canary clean").await;
    // The prompt itself pings nobody, whatever its reason says.
    assert_eq!(prompt["mention_everyone"], false, "{prompt}");
    assert_eq!(prompt["mention_roles"], json!([]), "{prompt}");

    let first = fake
        .wait_for("the first escalation in the prompt's thread", |st| {
            st.messages_under(DEPLOYS)
                .into_iter()
                .find(|m| m["channel_id"] != DEPLOYS && embed_text(m).contains("Still waiting"))
        })
        .await;
    assert_eq!(first["content"], format!("<@&{APPROVER_ROLE}>"), "{first}");
    assert_eq!(first["mention_roles"], json!([APPROVER_ROLE]), "{first}");
    assert_eq!(first["mention_everyone"], false);
    assert!(
        embed_text(&first).contains("step 1 of 2"),
        "{}",
        embed_text(&first)
    );

    let second = fake
        .wait_for("the second escalation, to a person", |st| {
            st.messages_under(DEPLOYS)
                .into_iter()
                .find(|m| embed_text(m).contains("step 2 of 2"))
        })
        .await;
    assert_eq!(second["content"], format!("<@{}>", omar().id), "{second}");
    assert_eq!(second["mentions"][0]["id"], json!(omar().id), "{second}");
    assert_eq!(second["mention_roles"], json!([]));

    // Two steps in all, then it stays quiet; nothing was promoted.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let escalations = fake.with(|st| {
        st.messages_under(DEPLOYS)
            .into_iter()
            .filter(|m| embed_text(m).contains("Still waiting"))
            .count()
    });
    assert_eq!(escalations, 2);
    let promoted = fake.with(|st| {
        st.messages_under(DEPLOYS)
            .into_iter()
            .any(|m| embed_text(&m).contains("Promoted payments"))
    });
    assert!(!promoted, "escalation never acts");
}

/// A timestamp 2^63 seconds ago is stale, not (wrapped around) fresh; a
/// reason over the limit is refused at once with the limit, and nothing
/// is done or audited.
#[tokio::test]
async fn an_ancient_timestamp_and_an_oversized_reason_are_refused() {
    let (fake, s, _dir) = start().await;
    let url = s.url("/discord/interactions");
    let payload = fake.command(
        DEPLOYS,
        &omar(),
        "rollback",
        &[("service", json!("checkout"))],
    );
    let body = payload.to_string();
    let ancient = (chrono::Utc::now().timestamp() - (1_i64 << 62) - (1_i64 << 62)).to_string();
    let (code, _, _) = fake
        .post_raw(
            &url,
            &body,
            Some(&fake.sign(&ancient, &body)),
            Some(&ancient),
        )
        .await;
    assert_eq!(code, 401);

    let long = fake.command(
        DEPLOYS,
        &omar(),
        "rollback",
        &[
            ("service", json!("checkout")),
            ("reason", json!("x".repeat(2_001))),
        ],
    );
    let (code, answer, _) = fake.send(&url, &long).await;
    assert_eq!((code, answer["type"].as_u64()), (200, Some(4)), "{answer}");
    assert_eq!(answer["data"]["flags"], 64, "{answer}");
    let shown = embed_text(&answer["data"]);
    assert!(
        shown.contains("the reason is 2,001 characters long; rollbot accepts at most 2,000"),
        "{shown}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let m = s.get("/metrics").await.1;
    assert!(
        m.contains("rollbot_signature_failures_total{platform=\"discord\"} 1"),
        "{m}"
    );
    assert!(!m.contains("rollbot_actions_total{"), "{m}");
    assert!(m.contains("rollbot_audit_appends_total 0"), "{m}");
}
