//! Discord end to end: a fake Discord (tests/support/fake_discord.rs) signs
//! interactions and POSTs them to `rollbot serve`, and answers rollbot's
//! REST calls the way Discord does.

use crate::support::api::Api;
use crate::support::audit;
use crate::support::fake_discord::{FakeDiscord, Person, APP_ID, GUILD_ID};
use crate::support::{rollbot, text, Server};
use serde_json::{json, Value};
use std::time::Duration;

mod delivery;
mod modals;
mod prompts;

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

/// `/rollback SERVICE` with a reason, typed by `who` in the deploy
/// channel (without a reason, rollbot asks for one in a form: `modals.rs`).
fn rollback_by(fake: &FakeDiscord, who: &Person, service: &str) -> Value {
    fake.command(
        DEPLOYS,
        who,
        "rollback",
        &[
            ("service", json!(service)),
            ("reason", json!("errors after deploy")),
        ],
    )
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
    let payload = rollback_by(&fake, &omar(), "checkout");
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
    let payload = rollback_by(&fake, &dana(), "checkout");
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
    // Neither refusal acted; read before the next action, which may finish
    // within milliseconds.
    let m = s.get("/metrics").await.1;
    assert!(
        m.contains("rollbot_refusals_total{action=\"rollback\",reason=\"permission\"} 1"),
        "{m}"
    );
    assert!(!m.contains("outcome=\"succeeded\""), "{m}");
    // An action that will be done is deferred visibly, for the channel.
    let done = rollback_by(&fake, &omar(), "checkout");
    let (_, answer, _) = fake.send(&url, &done).await;
    assert_eq!(answer["data"]["flags"].as_u64().unwrap_or(0) & 64, 0);

    // A command outside the configured guild is refused at once, ephemerally.
    let mut elsewhere = rollback_by(&fake, &omar(), "checkout");
    elsewhere["guild_id"] = json!("1299999999999999999");
    let (_, answer, _) = fake.send(&url, &elsewhere).await;
    assert_eq!(answer["type"], 4);
    assert_eq!(answer["data"]["flags"], 64);
    // An unknown service is refused with the grammar's hint.
    let typo = rollback_by(&fake, &omar(), "chekout");
    let (_, answer, _) = fake.send(&url, &typo).await;
    assert_eq!(answer["type"], 4);
    assert!(
        embed_text(&answer["data"]).contains("did you mean checkout?"),
        "{answer}"
    );
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
        serde_json::from_str(include_str!("../../../commands/discord-commands.json")).unwrap();
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
        include_str!("../../../commands/discord-commands.json")
    );
}

#[tokio::test]
async fn a_slow_backend_never_delays_the_first_answer() {
    let (fake, s, _dir) = start().await;
    let url = s.url("/discord/interactions");
    let payload = rollback_by(&fake, &omar(), "ledger");
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

/// A timestamp 2^63 seconds ago is stale, not (wrapped around) fresh; a
/// reason over the limit is refused at once with the limit, and nothing
/// is done or audited.
#[tokio::test]
async fn an_ancient_timestamp_and_an_oversized_reason_are_refused() {
    let (fake, s, _dir) = start().await;
    let url = s.url("/discord/interactions");
    let payload = rollback_by(&fake, &omar(), "checkout");
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
