//! Post-rollback verification checks (`[[services.verify]]`): after the
//! backend verified a rollback, an HTTP endpoint on 127.0.0.1, a real
//! Prometheus and the Kubernetes test API server say whether the service
//! recovered. Their results are in the rollback's message and audit entry;
//! a failed check makes the rollback "NOT verified" (stuck, incident
//! channel), with the check's evidence.

use crate::support::chat_record::ChatRecord;
use crate::support::fake_kube::{seed_history, DeploymentController, FakeKube, Pace};
use crate::support::health_endpoint::HealthEndpoint;
use crate::support::in_process::{self, result_entry};
use crate::support::prometheus::Prometheus;
use rollbot::chat::ChatSink;
use rollbot::domain::{Action, Actor, Platform};
use rollbot::engine::{Request, Status};
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn rollback(to: Option<&str>) -> Request {
    Request::new(
        Actor::new(Platform::Console, "ana", "Ana Admin"),
        Action::Rollback {
            to: to.map(str::to_string),
            force: false,
        },
    )
    .reason("errors after deploy")
}

/// The `checks` of a rollback's result entry: (name, ok, evidence).
fn checks_of(params: &Value) -> Vec<(String, bool, String)> {
    params["checks"]
        .as_array()
        .unwrap_or_else(|| panic!("no checks in {params}"))
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["ok"].as_bool().unwrap(),
                c["evidence"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Waits until Prometheus has scraped `app_error_ratio` at `value`.
async fn scraped(prom: &Prometheus, value: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let body: Value = reqwest::Client::new()
            .get(format!("{}/api/v1/query", prom.url()))
            .query(&[("query", "app_error_ratio")])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if body["data"]["result"][0]["value"][1] == value {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never scraped {value}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

const CHANNELS: &str = r#"
[channels.deploys]
console = "deploys"
[channels.incidents]
console = "incidents"

[[roles.admin]]
members = ["console:ana"]
"#;

#[tokio::test]
async fn checks_that_hold_are_shown_with_their_evidence_and_a_query_is_asked_until_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    let app = HealthEndpoint::start(200, 0.5).await;
    let prom = Prometheus::scraping(&dir.path().join("prom"), &app.addr.to_string());
    scraped(&prom, "0.5").await;
    let text = format!(
        r#"{CHANNELS}
[metrics]
source = "prometheus"
url = "{prom}"

[backends.sim]
type = "simulated"
history = {{ checkout = ["v1", "v2"] }}

[[services]]
name = "checkout"
backend = "sim"
deploy_channel = "deploys"
incident_channel = "incidents"

[[services.verify]]
name = "health"
kind = "http"
url = "{health}"
timeout = "10s"

[[services.verify]]
name = "error ratio"
kind = "prometheus"
query = 'max(app_error_ratio{{job="app"}})'
max = 0.01
timeout = "30s"
interval = "300ms"
"#,
        prom = prom.url(),
        health = app.url("/healthz"),
    );
    let chat = Arc::new(ChatRecord::default());
    let rt = in_process::start(dir.path(), &text, vec![chat.clone() as Arc<dyn ChatSink>]).await;

    // The error ratio recovers a moment after the rollback: the query is
    // asked again until it holds.
    let recovering = {
        let app_ratio = Arc::new(app);
        let a = app_ratio.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            a.set_error_ratio(0.001);
        });
        app_ratio
    };
    let out = rt.engine.execute(rollback(None).service("checkout")).await;
    let said = out.message.plain();
    assert_eq!(out.status, Status::Succeeded, "{said}");
    assert!(said.contains("Rolled back checkout v2 → v1"), "{said}");
    let health = format!(
        "✓ health (http): GET {} answered 200 OK",
        recovering.url("/healthz")
    );
    assert!(said.contains(&health), "{said}");
    assert!(
        said.contains("✓ error ratio (prometheus): value 0.001 (expected at most 0.01)"),
        "{said}"
    );

    let entry = result_entry(&rt, &out.correlation_id);
    let checks = checks_of(&Value::Object(
        entry.record.parameters.clone().into_iter().collect(),
    ));
    assert_eq!(checks.len(), 2);
    assert_eq!(checks[0].0, "health");
    assert!(
        checks[0].1 && checks[0].2.contains("answered 200 OK"),
        "{checks:?}"
    );
    assert!(
        checks[1].1 && checks[1].2.starts_with("value 0.001"),
        "{checks:?}"
    );
    assert_eq!(entry.record.parameters["verification"]["ok"], true);
    // Not stuck: nothing was said in the incident channel about it.
    assert!(chat.text_with("stuck between versions").is_empty());
}

#[tokio::test]
async fn a_failing_check_makes_the_rollback_not_verified_with_its_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let app = HealthEndpoint::start(503, 0.5).await;
    let prom = Prometheus::scraping(&dir.path().join("prom"), &app.addr.to_string());
    scraped(&prom, "0.5").await;
    let nobody = crate::support::free_port();
    let text = format!(
        r#"{CHANNELS}
[metrics]
source = "prometheus"
url = "{prom}"

[backends.sim]
type = "simulated"
history = {{ checkout = ["v1", "v2"] }}

[[services]]
name = "checkout"
backend = "sim"
deploy_channel = "deploys"
incident_channel = "incidents"

[[services.verify]]
name = "health"
kind = "http"
url = "{health}"
timeout = "2s"
interval = "200ms"

[[services.verify]]
name = "gone"
kind = "http"
url = "http://127.0.0.1:{nobody}/healthz"
timeout = "1s"
interval = "200ms"

[[services.verify]]
name = "error ratio"
kind = "prometheus"
query = 'max(app_error_ratio)'
min = 0
max = 0.01
timeout = "2s"
interval = "300ms"
"#,
        prom = prom.url(),
        health = app.url("/healthz"),
    );
    let chat = Arc::new(ChatRecord::default());
    let rt = in_process::start(dir.path(), &text, vec![chat.clone() as Arc<dyn ChatSink>]).await;

    let started = Instant::now();
    let out = rt.engine.execute(rollback(None).service("checkout")).await;
    let took = started.elapsed();
    let said = out.message.plain();
    assert_eq!(out.status, Status::Failed, "{said}");
    assert!(
        said.contains("Rolled back checkout v2 → v1: NOT verified"),
        "{said}"
    );
    assert!(said.contains("3 post-rollback checks failed"), "{said}");
    assert!(
        said.contains("✗ failed: health (http): GET http://127.0.0.1:")
            && said.contains("answered 503 Service Unavailable, expected 200 (still so after"),
        "{said}"
    );
    assert!(
        said.contains(&format!(
            "✗ failed: gone (http): GET http://127.0.0.1:{nobody}/healthz: cannot connect ("
        )),
        "{said}"
    );
    assert!(
        said.contains(
            "✗ failed: error ratio (prometheus): value 0.5 (expected between 0 and 0.01)"
        ),
        "{said}"
    );
    // The checks ran side by side, each cut at its timeout.
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(
        app.hits() >= 2,
        "the endpoint was asked again until the timeout"
    );

    let entry = result_entry(&rt, &out.correlation_id);
    assert_eq!(entry.record.outcome, rollbot::audit::Outcome::Failed);
    let params = Value::Object(entry.record.parameters.clone().into_iter().collect());
    assert_eq!(params["verification"]["ok"], false);
    assert!(
        params["verification"]["detail"]
            .as_str()
            .unwrap()
            .contains("post-rollback checks failed"),
        "{params}"
    );
    let checks = checks_of(&params);
    assert!(checks.iter().all(|(_, ok, _)| !ok), "{checks:?}");
    assert!(checks[1].2.contains("cannot connect"), "{checks:?}");

    // Like any rollback that is not verified: the service is stuck, and
    // the incident channel hears it.
    let channels = chat
        .channels_with("checkout is stuck between versions")
        .await;
    assert!(channels.contains(&"incidents".to_string()), "{channels:?}");

    // Once the service answers again, the next rollback is verified.
    app.set_status(200);
    app.set_error_ratio(0.0);
    scraped(&prom, "0").await;
    let out = rt
        .engine
        .execute(rollback(Some("v2")).service("checkout"))
        .await;
    let said = out.message.plain();
    assert_eq!(out.status, Status::Failed, "{said}");
    assert!(
        said.contains("the post-rollback check `gone` (http) failed: GET"),
        "{said}"
    );
    assert!(
        said.contains("✓ health (http)")
            && said.contains("✓ error ratio (prometheus): value 0 (expected between 0 and 0.01)"),
        "{said}"
    );
}

#[tokio::test]
async fn a_kubernetes_check_reads_the_deployment_until_its_rollout_is_complete() {
    let dir = tempfile::tempdir().unwrap();
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
        ],
    );
    ctl.set_pace(Pace::Stalled);
    let token = dir.path().join("kube.token");
    std::fs::write(&token, "kube-token-verify").unwrap();
    let text = format!(
        r#"{CHANNELS}
[backends.k8s]
type = "kubernetes-deployment"
api_server = "{url}"
token_file = "{token}"
namespace = "prod"
request_timeout = "2s"
rollout_timeout = "1s"
poll_interval = "20ms"

[[services]]
name = "web"
backend = "k8s"
deploy_channel = "deploys"
incident_channel = "incidents"

[[services.verify]]
kind = "kubernetes"
timeout = "2s"
interval = "50ms"
"#,
        url = fake.url(),
        token = token.display(),
    );
    let chat = Arc::new(ChatRecord::default());
    let rt = in_process::start(dir.path(), &text, vec![chat.clone() as Arc<dyn ChatSink>]).await;

    // The backend's own verification fails: the checks do not run.
    let out = rt.engine.execute(rollback(None).service("web")).await;
    assert_eq!(out.status, Status::Failed, "{}", out.message.plain());
    let entry = result_entry(&rt, &out.correlation_id);
    assert!(!entry.record.parameters.contains_key("checks"));

    // A rollback to the live revision changes nothing, so the backend
    // calls it verified; the check reads the rollout as still stalled.
    let out = rt.engine.execute(rollback(Some("3")).service("web")).await;
    let said = out.message.plain();
    assert_eq!(out.status, Status::Failed, "{said}");
    assert!(said.contains("NOT verified"), "{said}");
    assert!(
        said.contains("✗ failed: rollout complete (kubernetes): deployment \"web\": 1 out of 3 new replicas have been updated (still so after"),
        "{said}"
    );

    // Pods start, one per read: the check reads until the rollout is done.
    ctl.set_pace(Pace::PerGets(1));
    let out = rt.engine.execute(rollback(Some("3")).service("web")).await;
    let said = out.message.plain();
    assert_eq!(out.status, Status::Succeeded, "{said}");
    assert!(
        said.contains("✓ rollout complete (kubernetes): deployment \"web\" is fully rolled out at revision 3 (3 replicas updated and available)"),
        "{said}"
    );
    let entry = result_entry(&rt, &out.correlation_id);
    assert_eq!(entry.record.parameters["checks"][0]["kind"], "kubernetes");
    assert_eq!(entry.record.parameters["checks"][0]["ok"], true);
}
