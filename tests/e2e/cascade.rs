//! Releases and dependency-aware rollback: `/rollback release <release>`
//! rolls back every service of a release dependents first, one verified
//! step at a time, halts at the first step that fails, and leaves an audit
//! trail from which every service's state can be read. Unknown releases
//! and cycles in `depends_on` are clear errors that change nothing.

use crate::support::api::Api;
use crate::support::in_process;
use crate::support::{audit_export, rollbot, text, Server};
use rollbot::audit::{Entry, Outcome as AuditOutcome};
use rollbot::chat::console::ConsoleSink;
use rollbot::controller::Rollout;
use rollbot::domain::{Actor, Platform};
use rollbot::engine::{Outcome, Refusal, Status};
use rollbot::runtime::Runtime;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;

const RELEASE: &str = "2026-12-06.1";

/// frontend → checkout → payments, and search on its own. Simulated
/// metrics without scenarios give no data, so the controller never acts.
const CONFIG: &str = r##"
[metrics]
source = "simulated"

[channels.deploys]
console = "#deploys"

[backends.sim]
type = "simulated"

[[services]]
name = "payments"
backend = "sim"
deploy_channel = "deploys"

[[services]]
name = "checkout"
backend = "sim"
deploy_channel = "deploys"
depends_on = ["payments"]

[[services]]
name = "frontend"
backend = "sim"
deploy_channel = "deploys"
depends_on = ["checkout"]

[[services]]
name = "search"
backend = "sim"

[[roles.responder]]
members = ["console:responder"]

[[roles.viewer]]
members = ["console:viewer"]
"##;

fn responder() -> Actor {
    Actor::new(Platform::Console, "responder", "Ana Responder")
}

/// rollbot in process with the release announced: payments, checkout and
/// frontend (in that order, as CI deploys them) and search outside it.
async fn start_with_release(dir: &Path) -> Runtime {
    start_with_rollouts(
        dir,
        &["payments", "checkout", "frontend", "search"],
        |_| vec![],
    )
    .await
}

/// rollbot in process with one rollout per service announced in order,
/// all in the release but `search`, each with the migrations `ran` names.
async fn start_with_rollouts(
    dir: &Path,
    services: &[&str],
    ran: impl Fn(&str) -> Vec<rollbot::migration::Migration>,
) -> Runtime {
    let rt = in_process::start(dir, CONFIG, vec![]).await;
    let controller = rt.controller.clone().expect("a controller");
    let now = chrono::Utc::now() - chrono::Duration::seconds(5);
    for (i, svc) in services.iter().enumerate() {
        let r = Rollout {
            release: (*svc != "search").then(|| RELEASE.to_string()),
            migrations: ran(svc),
            ..Rollout::watching(
                format!("r{i}"),
                svc,
                ("v1".into(), "v2".into()),
                now,
                "api:ci",
            )
        };
        controller.announce(r).await.unwrap();
    }
    rt
}

async fn command(rt: &Runtime, line: &str) -> Outcome {
    rollbot::intake::handle_line(&rt.engine, responder(), line, None).await
}

fn entries(rt: &Runtime) -> Vec<Entry> {
    let mut all = Vec::new();
    rt.engine
        .audit()
        .for_each(&mut |e| {
            all.push(e);
            true
        })
        .unwrap();
    all
}

/// The services whose rollback succeeded, in the audit log's order.
fn rolled_back_in_order(rt: &Runtime) -> Vec<String> {
    entries(rt)
        .into_iter()
        .filter(|e| e.record.action == "rollback" && e.record.outcome == AuditOutcome::Succeeded)
        .filter_map(|e| e.record.service)
        .collect()
}

/// The cascade's result entry (the last `rollback_release` entry).
fn cascade_result(rt: &Runtime) -> Entry {
    entries(rt)
        .into_iter()
        .rev()
        .find(|e| {
            e.record.action == "rollback_release" && e.record.outcome != AuditOutcome::Requested
        })
        .expect("a result entry of the cascade")
}

#[tokio::test]
async fn a_release_rolls_back_dependents_first() {
    let dir = tempfile::tempdir().unwrap();
    let rt = start_with_release(dir.path()).await;
    let status = command(&rt, "/status checkout").await;
    assert!(
        status
            .message
            .plain()
            .contains(&format!("release {RELEASE}")),
        "{}",
        status.message.plain()
    );

    let o = command(
        &rt,
        &format!("/rollback release {RELEASE} errors after the release"),
    )
    .await;
    assert_eq!(o.status, Status::Succeeded, "{}", o.message.plain());
    assert_eq!(
        o.message.title,
        format!("Rolled back release {RELEASE}: frontend, checkout, payments")
    );
    assert!(
        o.message.plain().contains("frontend → checkout → payments"),
        "{}",
        o.message.plain()
    );
    // The audit log holds the steps in reverse dependency order, each a
    // rollback of its own naming the release and the cascade.
    assert_eq!(
        rolled_back_in_order(&rt),
        ["frontend", "checkout", "payments"]
    );
    for e in entries(&rt)
        .iter()
        .filter(|e| e.record.action == "rollback")
    {
        assert_eq!(e.record.parameters["release"], RELEASE);
        assert_eq!(e.record.parameters["cascade"], o.correlation_id.as_str());
        assert_eq!(e.record.reason, "errors after the release");
    }
    let sim = &rt.simulated["sim"];
    assert_eq!(
        sim.count("search", "rollback"),
        0,
        "search is not in the release"
    );
    let result = cascade_result(&rt);
    assert_eq!(result.record.outcome, AuditOutcome::Succeeded);
    assert_eq!(
        result.record.parameters["states"],
        json!({"frontend": "rolled_back", "checkout": "rolled_back", "payments": "rolled_back"})
    );
    let status = command(&rt, "/status checkout").await;
    assert!(
        !status.message.plain().contains("release "),
        "a rolled-back release is not what runs: {}",
        status.message.plain()
    );

    // Again: nothing is rolled back twice (past the release's revisions).
    let again = command(&rt, &format!("/rollback release {RELEASE}")).await;
    assert_eq!(again.status, Status::Succeeded, "{}", again.message.plain());
    assert_eq!(
        again.message.title,
        format!("Release {RELEASE}: nothing to roll back")
    );
    assert!(
        again
            .message
            .plain()
            .contains("checkout: already rolled back at"),
        "{}",
        again.message.plain()
    );
    for svc in ["frontend", "checkout", "payments"] {
        assert_eq!(sim.count(svc, "rollback"), 1, "{svc}");
    }
}

#[tokio::test]
async fn a_failed_second_step_halts_and_the_audit_says_where_each_service_stands() {
    let dir = tempfile::tempdir().unwrap();
    let rt = start_with_release(dir.path()).await;
    let sim = rt.simulated["sim"].clone();
    sim.inject_failure(
        "checkout",
        "rollback",
        1,
        "image registry.example.com/shop/checkout:v1 is gone from the registry",
    );

    let o = command(&rt, &format!("/rollback release {RELEASE}")).await;
    assert_eq!(o.status, Status::Failed, "{}", o.message.plain());
    let m = o.message.plain();
    assert_eq!(
        o.message.title,
        format!("Rollback of release {RELEASE} halted at checkout: 1 of 3 services rolled back")
    );
    assert!(m.contains("is gone from the registry"), "{m}");
    assert!(
        m.contains("Not rolled back: checkout (halted here), payments (not reached)"),
        "{m}"
    );
    assert!(m.contains("Rolled back: frontend"), "{m}");
    assert_eq!(sim.count("payments", "rollback"), 0, "the cascade went on");

    // From the audit log alone: who is rolled back, who failed and why,
    // who was never touched.
    let result = cascade_result(&rt);
    assert_eq!(result.record.outcome, AuditOutcome::Failed);
    let p = &result.record.parameters;
    assert_eq!(
        p["states"],
        json!({"frontend": "rolled_back", "checkout": "failed", "payments": "not_reached"})
    );
    assert_eq!(p["failed"]["service"], "checkout");
    assert!(
        p["failed"]["error"]
            .as_str()
            .unwrap()
            .contains("gone from the registry"),
        "{p:?}"
    );
    assert_eq!(p["order"], json!(["frontend", "checkout", "payments"]));
    let steps: Vec<(String, AuditOutcome)> = entries(&rt)
        .into_iter()
        .filter(|e| e.record.action == "rollback" && e.record.outcome != AuditOutcome::Requested)
        .map(|e| (e.record.service.unwrap(), e.record.outcome))
        .collect();
    assert_eq!(
        steps,
        [
            ("frontend".to_string(), AuditOutcome::Succeeded),
            ("checkout".to_string(), AuditOutcome::Failed)
        ]
    );

    // Once the registry has the image again, the same command finishes
    // the release and leaves frontend alone.
    let o = command(&rt, &format!("/rollback release {RELEASE}")).await;
    assert_eq!(o.status, Status::Succeeded, "{}", o.message.plain());
    assert_eq!(
        rolled_back_in_order(&rt),
        ["frontend", "checkout", "payments"]
    );
    assert_eq!(sim.count("frontend", "rollback"), 1);
}

#[tokio::test]
async fn an_unknown_release_and_a_missing_role_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let rt = start_with_release(dir.path()).await;
    let o = command(&rt, "/rollback release 2026-12-07.9").await;
    assert_eq!(o.status, Status::Refused);
    assert_eq!(o.refusal, Some(Refusal::UnknownRelease));
    let m = o.message.plain();
    assert!(
        m.contains("There is no release `2026-12-07.9`")
            && m.contains(&format!("Known releases, latest first: {RELEASE}."))
            && m.contains("Nothing was done"),
        "{m}"
    );
    // A viewer may not roll back: refused whole before the first step.
    let viewer = Actor::new(Platform::Console, "viewer", "Vic Viewer");
    let o = rollbot::intake::handle_line(
        &rt.engine,
        viewer,
        &format!("/rollback release {RELEASE}"),
        None,
    )
    .await;
    assert_eq!(
        o.refusal,
        Some(Refusal::NotAllowed),
        "{}",
        o.message.plain()
    );
    assert!(o.message.plain().contains("Nothing was rolled back"));
    let sim = &rt.simulated["sim"];
    assert!(sim.calls().is_empty(), "{:?}", sim.calls());
    assert!(rolled_back_in_order(&rt).is_empty());
}

/// `rollbot serve`: a release announced through `POST /api/v1/rollouts`,
/// listed with its rollouts, rolled back through `POST /api/v1/actions`.
#[tokio::test]
async fn the_http_api_takes_releases_and_answers_404_for_an_unknown_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:{{port}}\"\n\n[store]\npath = \"{{data}}\"\n{}\n[[roles.responder]]\nmembers = [\"api:ci\"]\n\n[[roles.deployer]]\nmembers = [\"api:ci\"]\n\n[[api.clients]]\nname = \"ci\"\ntoken = \"${{ROLLBOT_TEST_TOKEN}}\"\n",
        CONFIG.replace("[[roles.responder]]\nmembers = [\"console:responder\"]", "")
    );
    let s = Server::start_async(dir.path(), &config, &[("ROLLBOT_TEST_TOKEN", "tok-9c1e")]).await;
    let http = reqwest::Client::new();
    let post = |body: Value| {
        http.post(s.url("/api/v1/rollouts"))
            .bearer_auth("tok-9c1e")
            .json(&body)
            .send()
    };
    let r = post(json!({"service": "checkout", "from_revision": "v1", "to_revision": "v2", "release": "not a release"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["field"], "release", "{body}");
    for svc in ["payments", "checkout"] {
        let r = post(
            json!({"service": svc, "from_revision": "v1", "to_revision": "v2", "release": RELEASE}),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 201);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["release"], RELEASE);
    }
    let api = Api::new(&s, "tok-9c1e");
    assert!(api.rollouts().await.iter().all(|r| r["release"] == RELEASE));

    let (code, body) = api.action("/rollback release 2026-01-01.1", None).await;
    assert_eq!(code, 404, "{body}");
    assert_eq!(body["refusal"], "unknown_release");

    let (code, body) = api
        .action(&format!("/rollback release {RELEASE}"), Some("rel-1"))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body["message"]["title"],
        format!("Rolled back release {RELEASE}: checkout, payments")
    );
    // The same key answers with the first outcome and acts no more.
    let (code, again) = api
        .action(&format!("/rollback release {RELEASE}"), Some("rel-1"))
        .await;
    assert_eq!(code, 200);
    assert_eq!(again["repeat"], true);
    s.terminate();
    let steps: Vec<Value> = audit_export(&dir.path().join("data"))
        .into_iter()
        .filter(|e| e["action"] == "rollback" && e["outcome"] == "succeeded")
        .collect();
    let services: Vec<&str> = steps.iter().filter_map(|e| e["service"].as_str()).collect();
    assert_eq!(
        services,
        ["checkout", "payments"],
        "each once, dependents first"
    );
}

#[test]
fn unknown_dependencies_and_cycles_are_config_errors_with_their_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rollbot.toml");
    std::fs::write(
        &path,
        "[backends.sim]\ntype = \"simulated\"\n\n[[services]]\nname = \"checkout\"\nbackend = \"sim\"\ndepends_on = [\"payments\"]\n\n[[services]]\nname = \"payments\"\nbackend = \"sim\"\ndepends_on = [\"checkout\", \"ledgr\"]\n\n[[services]]\nname = \"ledger\"\nbackend = \"sim\"\n",
    )
    .unwrap();
    let o = rollbot(&["check-config", path.to_str().unwrap()]);
    let t = text(&o);
    let p = path.display();
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains(&format!(
            "{p}:7:15: depends_on has a cycle: checkout → payments → checkout"
        )),
        "{t}"
    );
    assert!(
        t.contains(&format!(
            "{p}:12:27: service `payments` depends on `ledgr`, which is not a service"
        )) && t.contains("did you mean `ledger`?"),
        "{t}"
    );
    assert!(t.contains("2 errors in the configuration"), "{t}");
    // serve refuses the same file: nothing starts, nothing changes.
    let o = rollbot(&["serve", "--config", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("checkout → payments → checkout"));
}

/// The console's output, shared with the test.
#[derive(Clone, Default)]
struct Screen(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Screen {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Screen {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// rollbot in process with a console, and payments, checkout and frontend
/// rolled out one after the other (frontend last, after checkout).
async fn start_with_console(dir: &Path) -> (Runtime, Arc<ConsoleSink>, Screen) {
    let screen = Screen::default();
    let console = Arc::new(ConsoleSink::new(Arc::new(std::sync::Mutex::new(
        screen.clone(),
    ))));
    let rt = in_process::start(dir, CONFIG, vec![console.clone()]).await;
    let controller = rt.controller.clone().expect("a controller");
    let t0 = chrono::Utc::now() - chrono::Duration::minutes(10);
    for (i, svc) in ["payments", "checkout", "frontend"].into_iter().enumerate() {
        let start = t0 + chrono::Duration::minutes(i as i64 * 2);
        let r = Rollout::watching(
            format!("r{i}"),
            svc,
            ("v1".into(), "v2".into()),
            start,
            "api:ci",
        );
        controller.announce(r).await.unwrap();
    }
    (rt, console, screen)
}

/// Presses the button labelled `label` on the console.
async fn press(rt: &Runtime, console: &ConsoleSink, screen: &Screen, label: &str) -> Outcome {
    let text = screen.text();
    let line = text
        .lines()
        .rev()
        .find(|l| l.contains(&format!("] {label}")))
        .unwrap_or_else(|| panic!("no button {label}:\n{text}"));
    let at = line.find(&format!("] {label}")).unwrap();
    let n: usize = line[..at].rsplit('[').next().unwrap().parse().unwrap();
    let action_id = console.button(n).unwrap();
    rollbot::intake::press(&rt.engine, responder(), &action_id, None).await
}

#[tokio::test]
async fn rolling_back_a_service_whose_dependent_moved_after_it_asks_with_the_plan() {
    let dir = tempfile::tempdir().unwrap();
    let (rt, console, screen) = start_with_console(dir.path()).await;
    let sim = rt.simulated["sim"].clone();

    let o = command(&rt, "/rollback checkout 5xx after deploy").await;
    assert_eq!(o.status, Status::Pending, "{}", o.message.plain());
    let m = o.message.plain();
    assert!(
        m.contains("frontend (v1 → v2 at")
            && m.contains("depends on checkout and moved after checkout's current rollout")
            && m.contains("Plan, dependents first: frontend → checkout"),
        "{m}"
    );
    assert!(sim.calls().is_empty(), "nothing acts before the answer");
    let shown = screen.text();
    assert!(
        shown.contains("Roll back all in order   [2] Only checkout   [3] Cancel"),
        "{shown}"
    );

    let o = press(&rt, &console, &screen, "Roll back all in order").await;
    assert_eq!(o.status, Status::Succeeded, "{}", o.message.plain());
    assert_eq!(
        o.message.title,
        "Rolled back checkout and its dependents: frontend, checkout"
    );
    assert_eq!(rolled_back_in_order(&rt), ["frontend", "checkout"]);
    assert_eq!(sim.count("payments", "rollback"), 0);
    let p = rt
        .engine
        .prompts
        .get(o.prompt.as_deref().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(&p.state, rollbot::engine::PromptState::Answered { choice, .. } if choice == "Roll back all in order")
    );
}

#[tokio::test]
async fn only_the_service_or_cancel_leave_its_dependents_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (rt, console, screen) = start_with_console(dir.path()).await;
    let sim = rt.simulated["sim"].clone();

    let o = command(&rt, "/rollback checkout").await;
    assert_eq!(o.status, Status::Pending);
    let o = press(&rt, &console, &screen, "Cancel").await;
    assert_eq!(o.status, Status::Succeeded, "{}", o.message.plain());
    assert!(sim.calls().is_empty(), "{:?}", sim.calls());

    let o = command(&rt, "/rollback checkout").await;
    assert_eq!(o.status, Status::Pending);
    let o = press(&rt, &console, &screen, "Only checkout").await;
    assert_eq!(o.status, Status::Succeeded, "{}", o.message.plain());
    assert_eq!(rolled_back_in_order(&rt), ["checkout"]);
    assert_eq!(sim.count("frontend", "rollback"), 0);
    // The same button again acts no more.
    let again = press(&rt, &console, &screen, "Only checkout").await;
    assert_eq!(again.refusal, Some(Refusal::AlreadyAnswered));
    assert_eq!(sim.count("checkout", "rollback"), 1);

    // A service nothing depends on, or whose dependents did not move
    // after it, is rolled back at once as before.
    let o = command(&rt, "/rollback frontend").await;
    assert_eq!(o.status, Status::Succeeded, "{}", o.message.plain());
}

#[tokio::test]
async fn a_step_past_an_irreversible_migration_halts_the_cascade_as_a_refusal() {
    use rollbot::migration::{Migration, Phase};
    let dir = tempfile::tempdir().unwrap();
    let rt = start_with_rollouts(
        dir.path(),
        &["payments", "checkout", "frontend"],
        |svc| match svc {
            "checkout" => vec![Migration {
                id: "2026_12_drop_legacy_orders".into(),
                reversible: false,
                phase: Phase::Contract,
            }],
            _ => vec![],
        },
    )
    .await;
    let sim = rt.simulated["sim"].clone();

    let o = command(&rt, &format!("/rollback release {RELEASE} bad release")).await;
    let m = o.message.plain();
    assert!(m.contains("checkout (halted here)"), "{m}");
    assert!(m.contains("payments (not reached)"), "{m}");
    assert_eq!(sim.count("checkout", "rollback"), 0, "the guard let it act");
    assert_eq!(sim.count("payments", "rollback"), 0, "the cascade went on");
    assert_eq!(sim.count("frontend", "rollback"), 1);

    let p = cascade_result(&rt).record.parameters;
    assert_eq!(
        p["states"],
        json!({"frontend": "rolled_back", "checkout": "refused", "payments": "not_reached"})
    );
}
