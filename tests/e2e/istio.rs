//! The `istio` backend through the engine, against a VirtualService on the
//! fake API server: only the two weights move, every other route and rule
//! stays byte for byte, a stepped rollback reports each step.

use crate::support::fake_kube::FakeKube;
use crate::support::kube_bot::{api_action, Backend, Bot};
use rollbot::domain::Action;
use rollbot::engine::Status;
use serde_json::{json, Value};
use std::path::Path;

const TOKEN: &str = "istio-token-0b5e77";
const PATH: &str = "/apis/networking.istio.io/v1/namespaces/prod/virtualservices/web";

const BACKEND: Backend = Backend {
    table: "mesh",
    kind: "istio",
    token: TOKEN,
};

async fn start(dir: &Path, fake: &FakeKube, target: &str) -> Bot {
    BACKEND.start(dir, fake, "", target).await
}

/// VirtualService `web`: an internal route (stable only), the primary route
/// splitting stable/canary at `100 - canary` / `canary`, and a route to
/// another service.
fn virtual_service(canary: i64) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "web", "annotations": {"team": "payments"}},
        "spec": {
            "hosts": ["web.prod.svc.cluster.local"],
            "gateways": ["mesh"],
            "http": [
                {"name": "internal",
                 "match": [{"headers": {"x-internal": {"exact": "1"}}}],
                 "route": [{"destination": {"host": "web", "subset": "stable"}}]},
                {"name": "primary",
                 "match": [{"uri": {"prefix": "/"}}],
                 "headers": {"request": {"set": {"x-route": "primary"}}},
                 "retries": {"attempts": 3, "perTryTimeout": "2s", "retryOn": "5xx"},
                 "timeout": "10s",
                 "route": [
                    {"destination": {"host": "web", "subset": "stable", "port": {"number": 8080}}, "weight": 100 - canary},
                    {"destination": {"host": "web", "subset": "canary", "port": {"number": 8080}}, "weight": canary}]},
                {"name": "legacy",
                 "match": [{"uri": {"prefix": "/v0"}}],
                 "route": [{"destination": {"host": "web-legacy"}}],
                 "fault": {"delay": {"percentage": {"value": 0.1}, "fixedDelay": "5s"}}},
            ],
        },
    })
}

async fn cluster(canary: i64) -> FakeKube {
    let fake = FakeKube::standard().await;
    fake.create("virtualservices", "prod", virtual_service(canary));
    fake.clear_requests();
    fake
}

fn vs(fake: &FakeKube) -> Value {
    fake.get("virtualservices", "prod", "web").unwrap()
}

fn weights(fake: &FakeKube) -> (i64, i64) {
    let v = vs(fake);
    let r = &v["spec"]["http"][1]["route"];
    (
        r[0]["weight"].as_i64().unwrap(),
        r[1]["weight"].as_i64().unwrap(),
    )
}

fn patches(fake: &FakeKube) -> Vec<(String, String, Value, u16)> {
    fake.writes()
        .iter()
        .map(|r| (r.path.clone(), r.content_type.clone(), r.json(), r.status))
        .collect()
}

fn shift_ops(from: i64, to: i64) -> Value {
    json!([
        {"op": "test", "path": "/spec/http/1/route/1/destination", "value": {"host": "web", "subset": "canary", "port": {"number": 8080}}},
        {"op": "test", "path": "/spec/http/1/route/1/weight", "value": from},
        {"op": "replace", "path": "/spec/http/1/route/1/weight", "value": to},
        {"op": "test", "path": "/spec/http/1/route/0/destination", "value": {"host": "web", "subset": "stable", "port": {"number": 8080}}},
        {"op": "test", "path": "/spec/http/1/route/0/weight", "value": 100 - from},
        {"op": "replace", "path": "/spec/http/1/route/0/weight", "value": 100 - to},
    ])
}

#[tokio::test]
async fn rollback_moves_only_the_two_weights_and_leaves_every_other_route_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let fake = cluster(20).await;
    let before = vs(&fake);
    let bot = start(dir.path(), &fake, "").await;
    let out = bot
        .run(Action::Rollback {
            to: None,
            force: false,
        })
        .await;
    assert_eq!(out.status, Status::Succeeded, "{}", out.message.plain());
    assert_eq!(
        out.message.title,
        "Rolled back web canary 20% → canary 0%",
        "{}",
        out.message.plain()
    );
    assert_eq!(
        patches(&fake),
        [(
            PATH.to_string(),
            "application/json-patch+json".to_string(),
            shift_ops(20, 0),
            200
        )]
    );
    let after = vs(&fake);
    assert_eq!(weights(&fake), (100, 0));
    // Byte for byte: the other routes, and everything but the weights.
    for i in [0, 2] {
        assert_eq!(
            after["spec"]["http"][i].to_string(),
            before["spec"]["http"][i].to_string()
        );
    }
    let mut expected = before.clone();
    expected["spec"]["http"][1]["route"][0]["weight"] = json!(100);
    expected["spec"]["http"][1]["route"][1]["weight"] = json!(0);
    assert_eq!(after["spec"].to_string(), expected["spec"].to_string());
    assert_eq!(
        after["metadata"]["annotations"],
        before["metadata"]["annotations"]
    );

    let e = bot.result_entry(&out.correlation_id);
    let v = e.record.parameters["verification"]["detail"].to_string();
    assert!(v.contains("route primary: stable 100%, canary 0%"), "{v}");
    let requests = e.record.parameters["report"]["requests"].to_string();
    assert!(
        requests.contains(&format!("PATCH {PATH} (application/json-patch+json)"))
            && requests.contains("/spec/http/1/route/1/weight"),
        "{requests}"
    );

    // Again: nothing to do, nothing sent.
    fake.clear_requests();
    let out = bot
        .run(Action::Rollback {
            to: None,
            force: false,
        })
        .await;
    assert_eq!(out.status, Status::Succeeded, "{}", out.message.plain());
    assert!(out.message.plain().contains("nothing to do"));
    assert!(fake.writes().is_empty());
}

#[tokio::test]
async fn a_stepped_rollback_reports_each_step() {
    let dir = tempfile::tempdir().unwrap();
    let fake = cluster(80).await;
    let bot = start(
        dir.path(),
        &fake,
        "rollback_steps = \"50, 0\"\nstep_interval = \"200ms\"",
    )
    .await;
    let started = std::time::Instant::now();
    let out = bot
        .run(Action::Rollback {
            to: None,
            force: false,
        })
        .await;
    assert_eq!(out.status, Status::Succeeded, "{}", out.message.plain());
    assert!(started.elapsed() >= std::time::Duration::from_millis(200));
    let bodies: Vec<Value> = patches(&fake).into_iter().map(|p| p.2).collect();
    assert_eq!(bodies, [shift_ops(80, 50), shift_ops(50, 0)]);
    let lines = bot.chat_lines("step 2 of 2").await;
    let steps: Vec<&String> = lines.iter().filter(|l| l.contains("step ")).collect();
    assert!(
        steps
            .iter()
            .any(|l| l.contains("step 1 of 2: route primary: stable 50%, canary 50%")),
        "{lines:#?}"
    );
    assert!(
        steps
            .iter()
            .any(|l| l.contains("step 2 of 2: route primary: stable 100%, canary 0%")),
        "{lines:#?}"
    );
    assert_eq!(weights(&fake), (100, 0));

    // From 30%, only the steps below it are taken.
    let fake = cluster(30).await;
    let dir = tempfile::tempdir().unwrap();
    let bot = start(
        dir.path(),
        &fake,
        "rollback_steps = \"50, 0\"\nstep_interval = \"200ms\"",
    )
    .await;
    let out = bot
        .run(Action::Rollback {
            to: None,
            force: false,
        })
        .await;
    assert_eq!(out.status, Status::Succeeded, "{}", out.message.plain());
    let bodies: Vec<Value> = patches(&fake).into_iter().map(|p| p.2).collect();
    assert_eq!(bodies, [shift_ops(30, 0)]);
}

#[tokio::test]
async fn a_virtual_service_without_the_canary_subset_is_refused_at_preflight() {
    let dir = tempfile::tempdir().unwrap();
    let fake = cluster(20).await;
    let bot = start(dir.path(), &fake, "canary_subset = \"preview\"").await;
    let out = bot
        .run(Action::Rollback {
            to: None,
            force: false,
        })
        .await;
    assert_ne!(out.status, Status::Succeeded);
    let text = out.message.plain();
    assert!(
        text.contains("VirtualService prod/web has no http route with a destination to the canary (subset preview)")
            && text.contains("route internal, route primary, route legacy"),
        "{text}"
    );
    assert!(fake.writes().is_empty());

    let bot2_dir = tempfile::tempdir().unwrap();
    let bot = start(bot2_dir.path(), &fake, "virtual_service = \"api\"").await;
    let out = bot
        .run(Action::Rollback {
            to: None,
            force: false,
        })
        .await;
    let text = out.message.plain();
    assert!(
        text.contains("VirtualService prod/api does not exist"),
        "{text}"
    );
}

#[tokio::test]
async fn promote_moves_the_canary_by_the_configured_steps_or_fully() {
    let dir = tempfile::tempdir().unwrap();
    let fake = cluster(10).await;
    let bot = start(dir.path(), &fake, "promote_steps = \"25, 50, 100\"").await;
    let out = bot
        .run(Action::Promote {
            full: false,
            force: false,
        })
        .await;
    assert_eq!(out.status, Status::Succeeded, "{}", out.message.plain());
    assert_eq!(weights(&fake), (75, 25));
    let st = bot.rt.engine.backend_status("web").await.unwrap();
    assert_eq!(st.canary_weight, Some(25));
    assert_eq!(st.notes, ["route primary: stable 75%, canary 25%"]);
    let out = bot
        .run(Action::Promote {
            full: true,
            force: false,
        })
        .await;
    assert_eq!(out.status, Status::Succeeded, "{}", out.message.plain());
    let bodies: Vec<Value> = patches(&fake).into_iter().map(|p| p.2).collect();
    assert_eq!(bodies, [shift_ops(10, 25), shift_ops(25, 100)]);
    assert_eq!(weights(&fake), (0, 100));
}

#[tokio::test]
async fn a_conflict_is_retried_against_a_fresh_read() {
    let dir = tempfile::tempdir().unwrap();
    let fake = cluster(20).await;
    fake.fail_next_writes("virtualservices", "web", 1);
    let bot = start(dir.path(), &fake, "").await;
    let out = bot
        .run(Action::Rollback {
            to: None,
            force: false,
        })
        .await;
    assert_eq!(out.status, Status::Succeeded, "{}", out.message.plain());
    let seq: Vec<(String, u16)> = fake
        .resource_requests()
        .iter()
        .map(|r| (r.method.clone(), r.status))
        .collect();
    // Preflight read; the action's read, its refused patch, a fresh read and the patch.
    assert_eq!(
        seq,
        [
            ("GET", 200),
            ("GET", 200),
            ("PATCH", 409),
            ("GET", 200),
            ("PATCH", 200),
            ("GET", 200)
        ]
        .map(|(m, c)| (m.to_string(), c))
    );
    assert_eq!(weights(&fake), (100, 0));
}

#[tokio::test]
async fn forbidden_surfaces_the_status_message_and_the_patch_to_apply_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let fake = cluster(20).await;
    fake.deny("patch", "networking.istio.io", "virtualservices");
    let bot = start(dir.path(), &fake, "").await;
    let out = bot
        .run(Action::Rollback {
            to: None,
            force: false,
        })
        .await;
    assert_eq!(out.status, Status::Failed);
    let text = out.message.plain();
    assert!(
        text.contains("virtualservices.networking.istio.io \"web\" is forbidden")
            && text.contains(
                "kubectl -n prod patch virtualservice web --type=json -p '[{\"op\":\"test\""
            ),
        "{text}"
    );
    assert_eq!(weights(&fake), (80, 20));
    let out = bot.run(Action::Pause).await;
    assert!(
        out.message.plain().contains("has no pause"),
        "{}",
        out.message.plain()
    );
}

#[tokio::test]
async fn rollbot_serve_shifts_traffic_through_the_api_and_exports_the_patch_in_the_audit_log() {
    let dir = tempfile::tempdir().unwrap();
    let fake = cluster(20).await;
    let server = BACKEND.serve(dir.path(), &fake, "");
    let (code, body) = api_action(&server, "/rollback web canary errors", "istio-1").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body["message"]["title"], "Rolled back web canary 20% → canary 0%",
        "{body}"
    );
    assert_eq!(weights(&fake), (100, 0));
    assert!(fake
        .requests()
        .iter()
        .all(|r| r.authorization == format!("Bearer {TOKEN}")));
    let text = BACKEND.stop_and_export(server, dir.path(), "json-patch");
    assert!(
        text.contains("/virtualservices/web (application/json-patch+json)")
            && text.contains("/spec/http/1/route/1/weight"),
        "{text}"
    );
}

#[test]
fn config_mistakes_are_reported_with_what_to_write() {
    let config = |keys: &str, target: &str| BACKEND.config_problems(keys, target);
    assert_eq!(
        config(
            "api_version = \"v1beta1\"",
            "rollback_steps = \"50, 0\"\nstep_interval = \"20s\""
        ),
        ""
    );
    let e = config("api_version = \"v2\"", "");
    assert!(
        e.contains("api_version `v2` is not one of v1, v1beta1"),
        "{e}"
    );
    let e = config(
        "",
        "rollback_steps = \"50, 20, 0\"\nstep_interval = \"40s\"",
    );
    assert!(
        e.contains("backend_timeout") && e.contains("rollbot.toml:"),
        "{e}"
    );
    let e = config("", "canary_subset = \"canary\"\nsubset = \"x\"");
    assert!(
        e.contains("`subset` is not a target setting of an istio backend"),
        "{e}"
    );
    let e = config("", "step_interval = \"soon\"");
    assert!(e.contains("step_interval `soon` is not a duration"), "{e}");
}

/// A dry run of a stepped rollback shows each step's JSON patch, with the
/// `test` operations the real step would find, and what the
/// VirtualService would read after it; nothing is written, nothing waits.
#[tokio::test]
async fn a_dry_run_shows_each_steps_patch_and_the_weights_after_it_and_writes_nothing() {
    use rollbot::domain::{Actor, Platform};
    use rollbot::engine::Request;
    let dir = tempfile::tempdir().unwrap();
    let fake = cluster(80).await;
    let before = vs(&fake);
    let bot = start(
        dir.path(),
        &fake,
        "rollback_steps = \"50, 0\"\nstep_interval = \"15s\"",
    )
    .await;
    let started = std::time::Instant::now();
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
    let text = out.message.plain();
    assert_eq!(out.status, Status::Succeeded, "{text}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "the dry run waited for step_interval"
    );
    assert!(
        text.contains("Would send 2 requests, in this order:"),
        "{text}"
    );
    assert!(
        text.contains(&format!("1. PATCH {PATH} (application/json-patch+json)")),
        "{text}"
    );
    assert!(
        text.contains(
            "step 1 of 2: VirtualService prod/web would read route primary: stable 50%, canary 50%"
        ),
        "{text}"
    );
    assert!(
        text.contains("then it would wait 15s (step_interval)"),
        "{text}"
    );
    assert!(
        text.contains(
            "step 2 of 2: VirtualService prod/web would read route primary: stable 100%, canary 0%"
        ),
        "{text}"
    );
    assert!(text.contains("Nothing was sent."), "{text}");
    // Each planned patch is the real step's, tests included.
    let entry = bot.result_entry(&out.correlation_id);
    assert_eq!(entry.record.parameters["dry_run"], true);
    let planned = entry.record.parameters["plan"]["requests"]
        .as_array()
        .unwrap();
    let body =
        |i: usize| -> Value { serde_json::from_str(planned[i]["body"].as_str().unwrap()).unwrap() };
    assert_eq!(body(0), shift_ops(80, 50));
    assert_eq!(body(1), shift_ops(50, 0));
    assert!(fake.writes().is_empty(), "{:?}", fake.writes());
    assert_eq!(vs(&fake), before);
}
