//! The migration guard end to end: rollouts announced with their database
//! migrations (`POST /api/v1/rollouts`), a rollback past an irreversible or
//! contract migration refused with roll-forward advice and nothing run, a
//! forced one that waits for a second person and is audited as
//! break-glass, the migrations a rollback crosses handed to the exec and
//! webhook backends, and an automatic rollback that is refused and alerts
//! the incident channel instead.

use crate::support::api::Api;
use crate::support::chat_record::ChatRecord;
use crate::support::in_process::{self, result_entry};
use crate::support::webhook_receiver::Receiver;
use crate::support::Server;
use rollbot::chat::ChatSink;
use rollbot::controller::{rollouts, Rollout};
use rollbot::domain::{Action, Actor, Platform};
use rollbot::engine::{Outcome, Refusal, Request, Status};
use rollbot::migration::{Migration, Phase};
use rollbot::runtime::Runtime;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;

const TOKEN: &str = "api-token-migrations-3c1f";

// The script writes its environment to the directory in its first
// argument, so a test can tell whether (and with what) it ran.
const SERVE_CONFIG: &str = r##"
[server]
listen = "127.0.0.1:{port}"

[store]
path = "{data}"

[metrics]
source = "simulated"
interval = "1s"

[backends.script]
type = "exec"
program = "sh"
args = ['-c', 'env > "$1/env"', "rollbot", "{data}-out"]
timeout = "30s"

[[services]]
name = "payments"
backend = "script"

[[roles.deployer]]
members = ["api:ci"]

[[roles.responder]]
members = ["api:ci"]

[[api.clients]]
name = "ci"
token = "${ROLLBOT_TEST_TOKEN}"
"##;

fn serve(dir: &Path) -> Server {
    std::fs::create_dir_all(dir.join("data-out")).unwrap();
    Server::start(dir, SERVE_CONFIG, &[("ROLLBOT_TEST_TOKEN", TOKEN)])
}

/// `POST /api/v1/rollouts` with `body`: the status and the answer.
async fn announce(s: &Server, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(s.url("/api/v1/rollouts"))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    let code = r.status().as_u16();
    (code, r.json().await.unwrap_or_default())
}

fn payments(migrations: Value) -> Value {
    json!({"service": "payments", "from_revision": "v8", "to_revision": "v9",
           "migrations": migrations})
}

#[tokio::test]
async fn a_malformed_migration_list_is_a_400_that_says_what_to_write_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve(dir.path());
    let api = Api::new(&s, TOKEN);
    for (list, field, says) in [
        (
            json!([{"id": "a", "reversible": true, "phase": "shrink"}]),
            "migrations[0].phase",
            "`shrink` is not a phase; write one of expand",
        ),
        (
            json!([{"reversible": true, "phase": "expand"}]),
            "migrations[0].id",
            "missing; name the migration",
        ),
        (
            json!([{"id": "a", "reversible": true, "phase": "expand"},
                   {"id": "a", "reversible": true, "phase": "data"}]),
            "migrations[1].id",
            "`a` is listed twice",
        ),
        (
            json!([{"id": "a", "reversible": "no", "phase": "expand"}]),
            "migrations[0].reversible",
            "expected true or false, not a string",
        ),
        (
            json!("2026_12_add_orders_idx"),
            "migrations",
            "expected a list",
        ),
    ] {
        let (code, body) = announce(&s, payments(list.clone())).await;
        assert_eq!(code, 400, "{list}: {body}");
        assert_eq!(body["field"], field, "{list}: {body}");
        let e = body["error"].as_str().unwrap();
        assert!(
            e.contains(says) && e.contains("nothing was stored"),
            "{list}: {e}"
        );
    }
    assert!(
        api.rollouts().await.is_empty(),
        "a bad announcement was stored"
    );

    // A good list is stored with the rollout and listed.
    let good = json!([{"id": "2026_12_add_orders_idx", "reversible": true, "phase": "expand"}]);
    let (code, body) = announce(&s, payments(good.clone())).await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(api.rollouts().await[0]["migrations"], good);
    assert!(s.terminate().success());
}

#[tokio::test]
async fn a_rollback_past_an_irreversible_migration_is_refused_with_advice_and_nothing_runs() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve(dir.path());
    let api = Api::new(&s, TOKEN);
    let (code, body) = announce(
        &s,
        payments(json!([
            {"id": "2026_12_add_sku_v2", "reversible": true, "phase": "expand"},
            {"id": "2026_12_drop_legacy_sku", "reversible": false, "phase": "contract"}
        ])),
    )
    .await;
    assert_eq!(code, 201, "{body}");

    let (code, body) = api
        .action("/rollback payments 5xx after deploy", None)
        .await;
    assert_eq!(code, 409, "{body}");
    assert_eq!(body["refusal"], "migration_guard", "{body}");
    let title = body["message"]["title"].as_str().unwrap();
    assert!(title.contains("2026_12_drop_legacy_sku"), "{title}");
    assert!(
        !title.contains("2026_12_add_sku_v2"),
        "a reversible expand does not block: {title}"
    );
    let text = body["message"]["text"].as_str().unwrap();
    for advice in [
        "2026_12_drop_legacy_sku (irreversible, contract phase)",
        "Roll forward instead",
        "error rate high, fix simple",
        "error rate low, fix complex",
        "stop traffic to payments → reverse the migration → deploy the old code → start traffic",
        "Never reverse a migration while traffic flows",
        "/rollback payments force <reason>",
    ] {
        assert!(text.contains(advice), "no {advice:?} in:\n{text}");
    }

    // `force` is the admins' and needs a reason: the API client is a
    // responder, so it is refused too.
    let (code, body) = api
        .action("/rollback payments force db team says so", None)
        .await;
    assert_eq!(code, 403, "{body}");
    assert!(
        body["message"]["text"]
            .as_str()
            .unwrap()
            .contains("Only the admin role"),
        "{body}"
    );

    // Nothing was sent to the backend: the script never ran.
    assert!(
        !dir.path().join("data-out").join("env").exists(),
        "the deploy script ran"
    );
    let data = dir.path().join("data");
    assert!(s.terminate().success());
    let audit = crate::support::audit_export(&data);
    let refused: Vec<&Value> = audit
        .iter()
        .filter(|e| e["parameters"]["refusal"] == "migration")
        .collect();
    assert_eq!(refused.len(), 1, "{audit:?}");
    assert_eq!(
        refused[0]["parameters"]["blocking"],
        json!(["2026_12_drop_legacy_sku"])
    );
    assert!(
        !audit.iter().any(|e| e["outcome"] == "requested"),
        "a refused rollback reached the backend's steps: {audit:?}"
    );
}

/// rollbot in this process on an exec script or a webhook (`backend`),
/// with an admin (ana), an approver (bob), an incident channel and an
/// escalation chain for `payments`.
async fn start(dir: &Path, backend: &str, extra: &str, chat: Arc<ChatRecord>) -> Runtime {
    let text = format!(
        r##"
[engine]
backend_timeout = "20s"

[channels.deploys]
console = "#deploys"

[channels.incidents]
console = "#incidents"

{backend}

[[services]]
name = "payments"
environment = "prod"
backend = "main"
deploy_channel = "deploys"
incident_channel = "incidents"
escalation = ["slack-group:S0ONCALL1", "slack:U0LEAD01"]
{extra}

[[roles.admin]]
members = ["console:ana"]

[[roles.approver]]
members = ["console:bob"]
"##
    );
    in_process::start(dir, &text, vec![chat as Arc<dyn ChatSink>]).await
}

fn person(id: &str) -> Actor {
    Actor::new(Platform::Console, id, id)
}

fn migration(id: &str, reversible: bool, phase: Phase) -> Migration {
    Migration {
        id: id.into(),
        reversible,
        phase,
    }
}

/// Stores a rollout of payments v8 → v9 that ran `migrations`, as the
/// controller does when CI announces one.
async fn deployed(rt: &Runtime, migrations: Vec<Migration>) {
    let r = Rollout {
        migrations,
        ..Rollout::watching(
            "r-v9".into(),
            "payments",
            ("v8".into(), "v9".into()),
            chrono::Utc::now(),
            "api:ci",
        )
    };
    rollouts::save(&rt.engine.store, &r).await.unwrap();
}

async fn run(rt: &Runtime, actor: &str, action: Action, reason: &str) -> Outcome {
    let o = rt
        .engine
        .execute(
            Request::new(person(actor), action)
                .service("payments")
                .reason(reason),
        )
        .await;
    rt.engine.notifier.settle().await;
    o
}

fn rollback(force: bool) -> Action {
    Action::Rollback { to: None, force }
}

#[tokio::test]
async fn force_waits_for_a_second_person_then_acts_as_break_glass_with_the_migrations_in_the_environment(
) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let exec = format!(
        r#"[backends.main]
type = "exec"
program = "sh"
args = ['-c', 'env > "$1/env"', "rollbot", "{}"]
timeout = "10s""#,
        out.display()
    );
    let chat = Arc::new(ChatRecord::default());
    let rt = start(dir.path(), &exec, "", chat.clone()).await;
    deployed(
        &rt,
        vec![
            migration("2026_12_backfill_sku", true, Phase::Data),
            migration("2026_12_drop_legacy_sku", false, Phase::Contract),
        ],
    )
    .await;
    let env = out.join("env");

    // Without force, refused; with force but no reason, refused.
    let o = run(&rt, "ana", rollback(false), "bad deploy").await;
    assert_eq!(o.refusal, Some(Refusal::MigrationGuard), "{:?}", o.message);
    let o = run(&rt, "ana", rollback(true), "").await;
    assert_eq!(o.refusal, Some(Refusal::Invalid), "{:?}", o.message);
    assert!(o
        .message
        .plain()
        .contains("/rollback payments force <reason>"));

    // With force and a reason, a prompt for a second person; nothing runs.
    let asked = run(
        &rt,
        "ana",
        rollback(true),
        "checkout broken, v8 tolerates the drop",
    )
    .await;
    assert_eq!(asked.status, Status::Pending, "{:?}", asked.message);
    let prompt = asked.prompt.clone().unwrap();
    assert!(
        chat.in_channel("#deploys")
            .iter()
            .any(|m| m.contains("Approve break-glass rollback of payments?")),
        "{:?}",
        chat.0.lock().unwrap()
    );
    // The one who asked cannot approve it.
    let own = run(
        &rt,
        "ana",
        Action::Approve {
            prompt: prompt.clone(),
        },
        "",
    )
    .await;
    assert_eq!(own.refusal, Some(Refusal::TwoPerson), "{:?}", own.message);
    assert!(!env.exists(), "the rollback ran without a second person");

    // A second person approves: it acts, as break-glass.
    let done = run(&rt, "bob", Action::Approve { prompt }, "").await;
    assert_eq!(done.status, Status::Succeeded, "{:?}", done.message);
    let e = result_entry(&rt, &asked.correlation_id);
    assert_eq!(e.record.action, "rollback");
    assert_eq!(
        e.record.parameters["break_glass"],
        json!(true),
        "{:?}",
        e.record
    );
    assert_eq!(e.record.parameters["overrides"], json!("migration_guard"));
    assert_eq!(e.record.actor.id, "bob");
    assert!(
        chat.in_channel("#incidents").iter().any(|m| m
            .contains("Break-glass: bob rolled back payments past a migration guard")
            && m.contains("2026_12_drop_legacy_sku (contract, irreversible)")),
        "{:?}",
        chat.0.lock().unwrap()
    );

    // The deploy hook learns it is a rollback and what it crosses, newest first.
    let env = std::fs::read_to_string(env).unwrap();
    for line in [
        "ROLLBOT_ACTION=rollback",
        "ROLLBOT_ROLLBACK=true",
        "ROLLBOT_MIGRATIONS=2026_12_drop_legacy_sku,2026_12_backfill_sku",
    ] {
        assert!(env.lines().any(|l| l == line), "no {line} in:\n{env}");
    }
    let json_line = env
        .lines()
        .find_map(|l| l.strip_prefix("ROLLBOT_MIGRATIONS_JSON="))
        .unwrap();
    let listed: Vec<Migration> = serde_json::from_str(json_line).unwrap();
    assert_eq!(
        listed[0],
        migration("2026_12_drop_legacy_sku", false, Phase::Contract)
    );
}

#[tokio::test]
async fn a_webhook_rollback_carries_rollback_true_and_the_migrations_it_crosses() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "whsec-migrations-91d2";
    let r = Receiver::start(secret).await;
    let file = dir.path().join("webhook.secret");
    std::fs::write(&file, secret).unwrap();
    let hook = format!(
        "[backends.main]\ntype = \"webhook\"\nurl = \"{}\"\nsecret_file = \"{}\"\ntimeout = \"2s\"",
        r.url("/hook"),
        file.display()
    );
    let chat = Arc::new(ChatRecord::default());
    let rt = start(dir.path(), &hook, "", chat).await;
    // Reversible expand and data migrations do not block a rollback; the
    // pipeline still hears about them, for its data fix-ups.
    deployed(
        &rt,
        vec![
            migration("2026_12_add_sku_v2", true, Phase::Expand),
            migration("2026_12_backfill_sku", true, Phase::Data),
        ],
    )
    .await;
    let o = run(&rt, "ana", rollback(false), "5xx after deploy").await;
    assert_eq!(o.status, Status::Succeeded, "{:?}", o.message);
    let got = r.received();
    let post = got.iter().find(|g| g.method == "POST").unwrap();
    assert!(post.signature_ok);
    assert_eq!(post.body["action"], "rollback");
    assert_eq!(post.body["rollback"], json!(true));
    assert_eq!(
        post.body["migrations"],
        json!([
            {"id": "2026_12_backfill_sku", "reversible": true, "phase": "data"},
            {"id": "2026_12_add_sku_v2", "reversible": true, "phase": "expand"}
        ]),
        "{}",
        post.body
    );
}

#[tokio::test]
async fn a_refused_automatic_rollback_alerts_the_incident_channel_and_the_escalation_chain() {
    let dir = tempfile::tempdir().unwrap();
    let sim = "[backends.main]\ntype = \"simulated\"\nhistory = { payments = [\"v8\", \"v9\"] }";
    let extra = "on_failing = \"auto_rollback\"\n\n[metrics]\nsource = \"simulated\"\ninterval = \"10s\"\nscenarios = { payments = \"bad: errors 3× at 5%, 1% base\" }";
    let chat = Arc::new(ChatRecord::default());
    let rt = start(dir.path(), sim, extra, chat.clone()).await;
    let controller = rt.controller.clone().expect("a controller");
    let start = chrono::Utc::now() - chrono::Duration::minutes(30);
    controller
        .announce(Rollout {
            migrations: vec![migration("2026_12_drop_legacy_sku", false, Phase::Contract)],
            ..Rollout::watching(
                "r-bad".into(),
                "payments",
                ("v8".into(), "v9".into()),
                start,
                "api:ci",
            )
        })
        .await
        .unwrap();
    controller.step(chrono::Utc::now()).await;
    rt.engine.notifier.settle().await;

    let incidents = chat.in_channel("#incidents");
    let alert = incidents
        .iter()
        .find(|m| m.contains("Automatic rollback of payments refused: it would cross migration 2026_12_drop_legacy_sku"))
        .unwrap_or_else(|| panic!("no alert in #incidents: {incidents:#?}"));
    assert!(alert.contains("rollbot did not act"), "{alert}");
    assert!(alert.contains("Roll forward instead"), "{alert}");
    assert!(
        alert.contains("Mentions: slack-group:S0ONCALL1, slack:U0LEAD01"),
        "{alert}"
    );
    // The simulated backend was not asked: v9 is still the canary.
    let st = rt.engine.backend_status("payments").await.unwrap();
    assert_eq!(st.canary_revision.as_deref(), Some("v9"), "{st:?}");
    let list = controller.list().await.unwrap();
    assert!(
        list[0]
            .state
            .starts_with("automatic rollback did not complete"),
        "{:?}",
        list[0].state
    );
}

#[tokio::test]
async fn the_roll_back_button_of_a_controller_prompt_is_guarded_too() {
    let dir = tempfile::tempdir().unwrap();
    let sim = "[backends.main]\ntype = \"simulated\"\nhistory = { payments = [\"v8\", \"v9\"] }";
    let extra = "on_failing = \"page_and_suggest\"\n\n[metrics]\nsource = \"simulated\"\ninterval = \"10s\"\nscenarios = { payments = \"bad: errors 3× at 5%, 1% base\" }";
    let chat = Arc::new(ChatRecord::default());
    let rt = start(dir.path(), sim, extra, chat.clone()).await;
    let controller = rt.controller.clone().expect("a controller");
    let start = chrono::Utc::now() - chrono::Duration::minutes(30);
    controller
        .announce(Rollout {
            migrations: vec![migration("2026_12_drop_legacy_sku", false, Phase::Contract)],
            ..Rollout::watching(
                "r-bad".into(),
                "payments",
                ("v8".into(), "v9".into()),
                start,
                "api:ci",
            )
        })
        .await
        .unwrap();
    controller.step(chrono::Utc::now()).await;
    let open = rt.engine.prompts.open(chrono::Utc::now()).await.unwrap();
    let prompt = open
        .iter()
        .find(|p| p.approve.label == "Roll back" || p.reject.label == "Roll back")
        .unwrap_or_else(|| panic!("no Roll back prompt: {open:?}"));
    let approve = prompt.approve.label == "Roll back";
    let press = if approve {
        Action::Approve {
            prompt: prompt.id.clone(),
        }
    } else {
        Action::Reject {
            prompt: prompt.id.clone(),
        }
    };
    let o = run(&rt, "ana", press, "").await;
    assert_eq!(o.refusal, Some(Refusal::MigrationGuard), "{:?}", o.message);
    assert!(
        o.message.plain().contains("Roll forward instead"),
        "{:?}",
        o.message
    );
    // The simulated backend was not asked: v9 is still the canary.
    let st = rt.engine.backend_status("payments").await.unwrap();
    assert_eq!(st.canary_revision.as_deref(), Some("v9"), "{st:?}");
}
