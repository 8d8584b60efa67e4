//! Dry runs: `dry-run` in the grammar and `"dry_run": true` in the API go
//! through authorization, the freeze check and the backend's preflight and
//! plan, show what would be sent, send nothing, and are audited as dry runs.

use crate::support::api::Api;
use crate::support::fake_kube::{
    kubectl, seed_history, strip_nulls, DeploymentController, FakeKube, Pace,
};
use crate::support::kube_bot::{rollout_keys, Backend};
use crate::support::{audit, Server};
use rollbot::domain::{Action, Actor, Platform};
use rollbot::engine::{Request, Status};
use serde_json::{json, Value};
use std::time::Duration;

const CONFIG: &str = r##"
[server]
listen = "127.0.0.1:{port}"

[store]
path = "{data}"

[backends.sim]
type = "simulated"
history = { checkout = ["v1", "v2"] }

[backends.script]
type = "exec"
program = "sh"
args = ["-c", "touch {data}-ran; echo rolled back", "rollback-of", "{service}", "to {revision}"]

[[services]]
name = "checkout"
backend = "sim"

[[services]]
name = "payments"
backend = "script"

[[roles.admin]]
members = ["api:ci"]

[[roles.viewer]]
members = ["api:dash"]

[[api.clients]]
name = "ci"
token = "${ROLLBOT_TEST_TOKEN}"

[[api.clients]]
name = "dash"
token = "${ROLLBOT_TEST_DASH}"
"##;

async fn post(s: &Server, token: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
        .post(s.url("/api/v1/actions"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn exec_dry_run_shows_the_command_line_and_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_async(
        dir.path(),
        CONFIG,
        &[
            ("ROLLBOT_TEST_TOKEN", "ci-1"),
            ("ROLLBOT_TEST_DASH", "dash-1"),
        ],
    )
    .await;
    let ran = format!("{}-ran", dir.path().join("data").display());

    // The grammar's `dry-run`, through the API's command.
    let (code, body) = Api::new(&s, "ci-1")
        .action("/rollback payments to v7 dry-run bad deploy", None)
        .await;
    assert_eq!(code, 200, "{body}");
    let text = body["message"]["text"].as_str().unwrap();
    assert_eq!(body["message"]["title"], "Dry run: rollback of payments");
    assert!(
        text.contains(&format!(
            "1. exec sh -c 'touch {ran}; echo rolled back' rollback-of payments 'to v7'"
        )),
        "{text}"
    );
    assert!(text.contains("ROLLBOT_REVISION=v7"), "{text}");
    assert!(text.contains("Nothing was sent."), "{text}");
    assert!(!std::path::Path::new(&ran).exists(), "the program ran");

    // `"dry_run": true` in the body does the same.
    let (code, body) = post(
        &s,
        "ci-1",
        json!({"command": "/rollback payments", "dry_run": true}),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert!(!std::path::Path::new(&ran).exists(), "the program ran");
    // Not for a command that has no dry run.
    let (code, body) = post(&s, "ci-1", json!({"command": "/status", "dry_run": true})).await;
    assert_eq!(code, 400, "{body}");
    assert!(body["error"]
        .as_str()
        .unwrap()
        .contains("applies to /rollback and /promote only"));

    // A viewer's dry run is refused like a real rollback, and says so.
    let (code, body) = post(
        &s,
        "dash-1",
        json!({"command": "/rollback checkout", "dry_run": true}),
    )
    .await;
    assert_eq!(code, 403, "{body}");
    assert!(
        body["message"]["title"]
            .as_str()
            .unwrap()
            .starts_with("Dry run: "),
        "{body}"
    );
    assert!(
        body["message"]["text"]
            .as_str()
            .unwrap()
            .contains("A real rollback would be refused the same way"),
        "{body}"
    );

    // During a freeze, a promote's dry run says it would be refused.
    let (code, body) = Api::new(&s, "ci-1")
        .action("/freeze checkout for 1h launch", None)
        .await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = Api::new(&s, "ci-1")
        .action("/promote checkout dry-run", None)
        .await;
    assert_eq!(code, 409, "{body}");
    assert_eq!(body["refusal"], "frozen", "{body}");
    assert!(
        body["message"]["text"]
            .as_str()
            .unwrap()
            .contains("A real promote would be refused the same way"),
        "{body}"
    );
    // A rollback is never frozen: its dry run shows the plan.
    let (code, body) = Api::new(&s, "ci-1")
        .action("/rollback checkout dry-run", None)
        .await;
    assert_eq!(code, 200, "{body}");
    assert!(
        body["message"]["text"]
            .as_str()
            .unwrap()
            .contains("Rollback v2 → v1."),
        "{body}"
    );
    assert!(
        body["message"]["text"]
            .as_str()
            .unwrap()
            .contains("canary traffic would be set to 0%; v1 would serve 100%"),
        "{body}"
    );

    // Audited as dry runs; the real state did not move.
    let list = audit::list(&dir.path().join("data"), &["--service", "payments"]);
    assert!(
        list.contains("rollback payments by API client ci — succeeded [dry run]"),
        "{list}"
    );
    let (code, body) = Api::new(&s, "ci-1").action("/status checkout", None).await;
    assert_eq!(code, 200);
    assert!(body["message"].to_string().contains("v2"), "{body}");
    assert!(s.terminate().success());
}

/// The dry run of a kubernetes-deployment rollback shows the JSON patch
/// `kubectl rollout undo` sends, and the API server sees no write.
#[tokio::test]
async fn kubernetes_dry_run_shows_kubectls_patch_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = || async {
        let fake = FakeKube::standard().await;
        let ctl = DeploymentController::install(&fake, Pace::Immediate);
        seed_history(
            &fake,
            "prod",
            "web",
            3,
            &[
                ("registry.example.com/web:1.0", "deploy 1.0"),
                ("registry.example.com/web:1.1", "deploy 1.1"),
                ("registry.example.com/web:1.2", "deploy 1.2 (bad)"),
            ],
        );
        fake.clear_requests();
        (fake, ctl)
    };
    let (by_kubectl, _c1) = cluster().await;
    let (by_rollbot, _c2) = cluster().await;
    let (ok, _, err) = kubectl(
        &by_kubectl,
        dir.path(),
        "prod",
        &["rollout", "undo", "deployment/web"],
    )
    .await;
    assert!(ok, "{err}");
    let sent = by_kubectl
        .requests()
        .into_iter()
        .find(|r| r.method == "PATCH")
        .expect("kubectl's patch");

    let backend = Backend {
        table: "k8s",
        kind: "kubernetes-deployment",
        token: "kube-token-dry",
    };
    let bot = backend
        .start(dir.path(), &by_rollbot, &rollout_keys("10s"), "")
        .await;
    let before = by_rollbot.get("deployments", "prod", "web").unwrap();
    let out = bot
        .rt
        .engine
        .execute(
            Request::new(
                Actor::new(Platform::Console, "ana", "Ana Admin"),
                Action::Rollback {
                    to: None,
                    force: false,
                },
            )
            .service("web")
            .dry_run(true),
        )
        .await;
    assert_eq!(out.status, Status::Succeeded, "{}", out.message.plain());
    assert!(
        out.message.text.contains("Rollback 3 → 2."),
        "{}",
        out.message.text
    );
    assert!(
        out.message.text.contains(&format!(
            "1. PATCH {} (application/json-patch+json)",
            sent.path
        )),
        "{}",
        out.message.text
    );
    assert!(by_rollbot.writes().is_empty(), "{:?}", by_rollbot.writes());
    assert!(
        out.message.text.contains("Deployment prod/web: template of revision 2 (registry.example.com/web:1.1) would be restored over revision 3"),
        "{}",
        out.message.text
    );
    assert_eq!(
        by_rollbot.get("deployments", "prod", "web").unwrap(),
        before
    );

    let entry = bot.result_entry(&out.correlation_id);
    assert_eq!(entry.record.parameters["dry_run"], true);
    let planned = &entry.record.parameters["plan"]["requests"][0];
    let mut shown: Value = serde_json::from_str(planned["body"].as_str().unwrap()).unwrap();
    let mut kb = sent.json();
    strip_nulls(&mut kb);
    strip_nulls(&mut shown);
    // kubectl's operations, then the precondition a real rollback sends.
    let precondition = shown.as_array_mut().unwrap().pop().unwrap();
    assert_eq!(precondition["path"], "/metadata/resourceVersion");
    assert_eq!(shown, kb, "the dry run's patch differs from kubectl's");
}

/// The dry run of a gitops rollback shows the one-line edit, the commit
/// message and the push a real rollback then makes, and the remote's head
/// does not move.
#[tokio::test]
async fn gitops_dry_run_shows_the_commit_and_pushes_nothing() {
    use crate::backends::{self, git, gitops_config, remote_file, repo, FILE, VALUES_V7};
    let dir = tempfile::tempdir().unwrap();
    let (origin, _seed) = repo(dir.path());
    let rt = backends::start(
        dir.path(),
        &gitops_config(&origin, &dir.path().join("clone"), ""),
    )
    .await;
    let head = git(&origin, &["rev-parse", "main"]);

    let out = rt
        .engine
        .execute(backends::rollback("5xx on /pay after v7", "key-dry-g1").dry_run(true))
        .await;
    assert_eq!(out.status, Status::Succeeded, "{}", out.message.plain());
    let text = &out.message.text;
    for part in [
        "Rollback v7 → v6.",
        &format!("1. edit {FILE} (`image.tag`: v7 → v6)"),
        "-  tag: \"v7\"   # current release",
        "+  tag: \"v6\"   # current release",
        "2. git commit on main",
        "rollback checkout (prod): image.tag v7 → v6",
        &format!("3. git push {} HEAD:refs/heads/main", origin.display()),
        "Nothing was sent.",
    ] {
        assert!(text.contains(part), "{part:?} missing from {text}");
    }
    assert_eq!(git(&origin, &["rev-parse", "main"]), head);
    assert_eq!(remote_file(&origin), VALUES_V7);

    // The real rollback commits exactly the message the dry run showed.
    let entry = crate::support::in_process::result_entry(&rt, &out.correlation_id);
    let planned = entry.record.parameters["plan"]["requests"][1]["body"]
        .as_str()
        .unwrap()
        .to_string();
    let out = rt
        .engine
        .execute(backends::rollback("5xx on /pay after v7", "key-dry-g1"))
        .await;
    assert_eq!(out.status, Status::Succeeded, "{}", out.message.plain());
    assert_ne!(git(&origin, &["rev-parse", "main"]), head);
    let sent = git(&origin, &["log", "-1", "--format=%B", "main"]);
    let without_id = |m: &str| {
        m.lines()
            .filter(|l| !l.starts_with("Correlation-Id:") && !l.trim().is_empty())
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(without_id(&planned), without_id(&sent));
}

/// The dry runs of an Unleash rollback and promote show the admin API
/// requests a real run sends (without the token), and the flag stays as it
/// was on the real server.
#[tokio::test]
async fn unleash_dry_run_shows_the_admin_requests_and_changes_no_flag() {
    use crate::support::unleash::{self, ADMIN_TOKEN};
    use crate::unleash as u_tests;
    let u = unleash::shared();
    let flag = "checkout-dry-run";
    u.create_flag(flag, &[("production", false, Some(10))])
        .await;
    let dir = tempfile::tempdir().unwrap();
    let rt = u_tests::start(dir.path(), ADMIN_TOKEN, "", &format!("flag = \"{flag}\"")).await;
    let env = format!(
        "{}/api/admin/projects/default/features/{flag}/environments/production",
        u.url
    );
    let before = u.env_state(flag, "production").await;

    // A full promote of a flag that is off at 10%: rollout 100%, switch on.
    let out = rt
        .engine
        .execute(u_tests::promote(true, "unleash-dry-1").dry_run(true))
        .await;
    assert_eq!(out.status, Status::Succeeded, "{}", out.message.plain());
    let entry = crate::support::in_process::result_entry(&rt, &out.correlation_id);
    let planned = entry.record.parameters["plan"]["requests"].clone();
    let id = before["strategies"][0]["id"].as_str().unwrap();
    assert_eq!(planned[0]["method"], "PUT", "{planned}");
    assert_eq!(planned[0]["target"], format!("{env}/strategies/{id}"));
    let body: Value = serde_json::from_str(planned[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["name"], "flexibleRollout");
    assert_eq!(body["parameters"]["rollout"], "100");
    assert_eq!(planned[1]["method"], "POST");
    assert_eq!(planned[1]["target"], format!("{env}/on"));
    assert!(
        !out.message.text.contains(ADMIN_TOKEN),
        "{}",
        out.message.text
    );
    assert!(!format!("{:?}", entry.record.parameters).contains("rollbot-test-admin"));
    assert_eq!(u.env_state(flag, "production").await, before);

    // The real promote sends exactly those requests, and that body.
    let out = rt
        .engine
        .execute(u_tests::promote(true, "unleash-dry-2"))
        .await;
    assert_eq!(out.status, Status::Succeeded, "{}", out.message.plain());
    let sent = u_tests::requests(&crate::support::in_process::result_entry(
        &rt,
        &out.correlation_id,
    ));
    for p in planned.as_array().unwrap() {
        let line = format!(
            "{} {} → 200",
            p["method"].as_str().unwrap(),
            p["target"].as_str().unwrap()
        );
        assert!(
            sent.iter().any(|s| s.starts_with(&line)),
            "{line} not in {sent:?}"
        );
    }
    let now = u.env_state(flag, "production").await;
    assert_eq!(now["enabled"], true);
    assert_eq!(now["strategies"][0]["parameters"]["rollout"], "100");

    // A rollback's dry run: one POST …/off; the flag stays on.
    let out = rt
        .engine
        .execute(u_tests::rollback("unleash-dry-3").dry_run(true))
        .await;
    assert_eq!(out.status, Status::Succeeded, "{}", out.message.plain());
    assert!(
        out.message.text.contains(&format!("1. POST {env}/off")),
        "{}",
        out.message.text
    );
    assert_eq!(u.env_state(flag, "production").await, now);
}

/// The dry runs of an argo-rollouts abort and undo show the plugin's
/// patches, built by the code that sends them; the API server sees no
/// write, and the real undo then sends the very patch shown.
#[tokio::test]
async fn argo_rollouts_dry_run_shows_the_patches_and_writes_nothing() {
    use crate::support::fake_argo::{seed_rollout, ArgoController};
    const BASE: &str = "/apis/argoproj.io/v1alpha1/namespaces/prod/rollouts/web";
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeKube::standard().await;
    let _ctl = ArgoController::install(&fake, 0);
    seed_rollout(
        &fake,
        "prod",
        "web",
        &[
            "registry.example.com/web:1.0",
            "registry.example.com/web:1.1",
            "registry.example.com/web:1.2",
        ],
    );
    fake.clear_requests();
    let backend = Backend {
        table: "argo",
        kind: "argo-rollouts",
        token: "argo-token-dry",
    };
    let bot = backend
        .start(dir.path(), &fake, &rollout_keys("10s"), "")
        .await;
    let before = fake.get("rollouts", "prod", "web").unwrap();
    let dry = |to: Option<&str>| {
        Request::new(
            Actor::new(Platform::Console, "ana", "Ana Admin"),
            Action::Rollback {
                to: to.map(str::to_string),
                force: false,
            },
        )
        .service("web")
    };

    // Abort: one merge patch of /status.
    let out = bot.rt.engine.execute(dry(None).dry_run(true)).await;
    assert_eq!(out.status, Status::Succeeded, "{}", out.message.plain());
    assert!(
        out.message.text.contains(&format!(
            "1. PATCH {BASE}/status (application/merge-patch+json)"
        )),
        "{}",
        out.message.text
    );
    let entry = bot.result_entry(&out.correlation_id);
    let shown = &entry.record.parameters["plan"]["requests"][0]["body"];
    let shown: Value = serde_json::from_str(shown.as_str().unwrap()).unwrap();
    assert_eq!(shown, json!({"status": {"abort": true}}));
    assert!(fake.writes().is_empty(), "{:?}", fake.writes());
    // What it would do is said in the conditional.
    let said = out.message.plain();
    assert!(
        said.contains("Rollout prod/web would be aborted: traffic would go back to stable"),
        "{said}"
    );

    // Undo to revision 1: the JSON patch of /spec/template.
    let out = bot.rt.engine.execute(dry(Some("1")).dry_run(true)).await;
    assert_eq!(out.status, Status::Succeeded, "{}", out.message.plain());
    let entry = bot.result_entry(&out.correlation_id);
    let planned = &entry.record.parameters["plan"]["requests"][0];
    assert_eq!(
        planned["target"],
        format!("{BASE} (application/json-patch+json)")
    );
    let shown: Value = serde_json::from_str(planned["body"].as_str().unwrap()).unwrap();
    assert!(fake.writes().is_empty(), "{:?}", fake.writes());
    assert_eq!(fake.get("rollouts", "prod", "web").unwrap(), before);

    let out = bot.rt.engine.execute(dry(Some("1"))).await;
    assert_eq!(out.status, Status::Succeeded, "{}", out.message.plain());
    let sent = fake
        .writes()
        .into_iter()
        .find(|r| r.method == "PATCH" && r.path == BASE)
        .expect("the undo's patch");
    assert_eq!(
        shown,
        sent.json(),
        "the dry run's patch differs from the sent one"
    );
}

/// A dry run stopped by the migration guard is a dry run all the same:
/// its audit entry is marked `dry_run` and its message says so. A forced
/// one asks nobody (a prompt's Approve would run the real rollback): it
/// shows the plan and who would have to approve. Nothing runs.
#[tokio::test]
async fn a_dry_run_past_a_migration_is_refused_as_a_dry_run_and_a_forced_one_asks_nobody() {
    use crate::support::chat_record::ChatRecord;
    use crate::support::in_process::{self, result_entry};
    use rollbot::chat::ChatSink;
    use rollbot::controller::{rollouts, Rollout};
    use rollbot::engine::Refusal;
    use rollbot::migration::{Migration, Phase};
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let ran = dir.path().join("ran");
    let text = format!(
        r#"
[channels.deploys]
console = "deploys"

[backends.script]
type = "exec"
program = "sh"
args = ["-c", "touch {ran}"]

[[services]]
name = "payments"
backend = "script"
deploy_channel = "deploys"

[[roles.admin]]
members = ["console:ana"]

[[roles.approver]]
members = ["console:bob"]
"#,
        ran = ran.display()
    );
    let chat = Arc::new(ChatRecord::default());
    let rt = in_process::start(dir.path(), &text, vec![chat.clone() as Arc<dyn ChatSink>]).await;
    let r = Rollout {
        migrations: vec![Migration {
            id: "2026_12_drop_legacy_sku".into(),
            reversible: false,
            phase: Phase::Contract,
        }],
        ..Rollout::watching(
            "r-v9".into(),
            "payments",
            ("v8".into(), "v9".into()),
            chrono::Utc::now(),
            "api:ci",
        )
    };
    rollouts::save(&rt.engine.store, &r).await.unwrap();
    let ana = Actor::new(Platform::Console, "ana", "Ana Admin");
    let dry = |force: bool| {
        Request::new(ana.clone(), Action::Rollback { to: None, force })
            .service("payments")
            .reason("checkout broken")
            .dry_run(true)
    };

    // Refused as the real rollback would be, and said to be a dry run.
    let out = rt.engine.execute(dry(false)).await;
    let said = out.message.plain();
    assert_eq!(out.status, Status::Refused, "{said}");
    assert_eq!(out.refusal, Some(Refusal::MigrationGuard), "{said}");
    assert!(
        said.starts_with("Dry run: Refused past migration 2026_12_drop_legacy_sku"),
        "{said}"
    );
    assert!(
        said.contains("A real rollback would be refused the same way; nothing was sent."),
        "{said}"
    );
    let e = result_entry(&rt, &out.correlation_id);
    assert_eq!(
        e.record.parameters["dry_run"],
        json!(true),
        "{:?}",
        e.record
    );
    assert_eq!(
        e.record.parameters["refusal"], "migration",
        "{:?}",
        e.record
    );

    // Forced: no prompt (its Approve would run the real rollback); the
    // plan says who would have to approve it.
    let out = rt.engine.execute(dry(true)).await;
    rt.engine.notifier.settle().await;
    let said = out.message.plain();
    assert_eq!(out.status, Status::Succeeded, "{said}");
    assert!(out.prompt.is_none(), "a dry run posted a prompt: {said}");
    assert!(said.starts_with("Dry run: rollback of payments"), "{said}");
    assert!(
        said.contains("A real forced rollback past migration 2026_12_drop_legacy_sku would first ask a second person with the approver role to approve it"),
        "{said}"
    );
    assert!(said.contains("Nothing was sent."), "{said}");
    let e = result_entry(&rt, &out.correlation_id);
    assert_eq!(
        e.record.parameters["dry_run"],
        json!(true),
        "{:?}",
        e.record
    );
    assert_eq!(
        e.record.parameters["needs_second_person"],
        "migration 2026_12_drop_legacy_sku"
    );
    let open = rt.engine.prompts.open(chrono::Utc::now()).await.unwrap();
    assert!(open.is_empty(), "a prompt was stored: {open:?}");
    assert!(!ran.exists(), "the rollback ran");
    assert!(
        chat.0.lock().unwrap().is_empty(),
        "a dry run said something in a channel: {:?}",
        chat.0.lock().unwrap()
    );
}
