//! `[leader_election] label_pod = true`: every healthy replica is Ready and
//! the leader labels its own pod `rollbot.dev/role=leader`, which the
//! Service of deploy/ha/ selects; the label follows the Lease.

use crate::support::api::Api;
use crate::support::fake_kube::FakeKube;
use crate::support::Server;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn config(identity: &str, api_server: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:{{port}}"

[store]
path = "{{data}}"

[leader_election]
lease = "rollbot"
namespace = "rollbot"
identity = "{identity}"
api_server = "{api_server}"
lease_duration = "3s"
renew_deadline = "2s"
retry_period = "250ms"
label_pod = true

[backends.sim]
type = "simulated"
history = {{ checkout = ["v1", "v2"] }}

[[services]]
name = "checkout"
backend = "sim"

[[roles.responder]]
members = ["api:ci"]

[[api.clients]]
name = "ci"
token = "${{ROLLBOT_TEST_API_TOKEN}}"
"#
    )
}

/// A replica running as pod `pod` in the namespace `rollbot`.
fn replica(dir: &std::path::Path, identity: &str, pod: &str, api_server: &str) -> Server {
    let d = dir.join(identity);
    std::fs::create_dir_all(&d).unwrap();
    Server::start(
        &d,
        &config(identity, api_server),
        &[
            ("ROLLBOT_TEST_API_TOKEN", "api-token-1"),
            ("POD_NAME", pod),
            ("POD_NAMESPACE", "rollbot"),
        ],
    )
}

fn seed_pod(fake: &FakeKube, name: &str) {
    fake.create(
        "pods",
        "rollbot",
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": "rollbot", "labels": {"app.kubernetes.io/name": "rollbot"}},
               "spec": {"containers": [{"name": "rollbot", "image": "rollbot"}]}}),
    );
}

/// The pod's `rollbot.dev/role` label.
fn role(fake: &FakeKube, pod: &str) -> Value {
    let p = fake.get("pods", "rollbot", pod).unwrap();
    assert_eq!(
        p["metadata"]["labels"]["app.kubernetes.io/name"], "rollbot",
        "the other labels stay: {p}"
    );
    p["metadata"]["labels"]["rollbot.dev/role"].clone()
}

/// Waits (bounded) until `cond` holds.
async fn until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn readyz(http: &reqwest::Client, s: &Server) -> (u16, String) {
    let r = http.get(s.url("/readyz")).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_label_follows_the_lease_and_the_standby_is_ready() {
    let fake = FakeKube::standard().await;
    seed_pod(&fake, "rollbot-a-pod");
    seed_pod(&fake, "rollbot-b-pod");
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();

    let a = replica(dir.path(), "rollbot-a", "rollbot-a-pod", &fake.url());
    until("A labels its pod", Duration::from_secs(10), || {
        role(&fake, "rollbot-a-pod") == "leader"
    })
    .await;
    let (code, body) = readyz(&http, &a).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("leader: rollbot-a holds"), "{body}");

    let b = replica(dir.path(), "rollbot-b", "rollbot-b-pod", &fake.url());
    // The standby is Ready, says it stands by and who leads.
    let deadline = Instant::now() + Duration::from_secs(5);
    let standby = loop {
        let (code, body) = readyz(&http, &b).await;
        if code == 200 {
            let v: Value = serde_json::from_str(&body).unwrap();
            if v["leader"] == "rollbot-a" {
                break v;
            }
        }
        assert!(Instant::now() < deadline, "{code} {body}\n{}", b.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(standby["role"], "standby", "{standby}");
    assert_eq!(standby["identity"], "rollbot-b", "{standby}");
    assert!(
        role(&fake, "rollbot-b-pod").is_null(),
        "a standby is not labelled"
    );
    assert_eq!(role(&fake, "rollbot-a-pod"), "leader");
    // Readiness no longer routes: a request that reaches the standby is
    // still refused, naming the leader.
    let (code, answer) = Api::new(&b, "api-token-1")
        .timeout(Duration::from_secs(2))
        .action("/rollback checkout bad canary", None)
        .await;
    assert_eq!(code, 503, "{answer}");
    assert_eq!(answer["leader"], "rollbot-a", "{answer}");
    assert_eq!(answer["refusal"], "standby", "{answer}");
    // The label was set with a merge patch of the pod's labels only.
    let patches: Vec<_> = fake
        .writes()
        .into_iter()
        .filter(|w| w.method == "PATCH" && w.path.contains("/pods/"))
        .collect();
    assert!(!patches.is_empty());
    for p in &patches {
        assert!(
            p.content_type.starts_with("application/merge-patch+json"),
            "{}",
            p.content_type
        );
        let body = p.json();
        let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["metadata"], "{body}");
    }

    // A stops: it removes its label and B labels its own pod.
    assert!(a.terminate().success());
    assert!(role(&fake, "rollbot-a-pod").is_null(), "A left its label");
    until("B labels its pod", Duration::from_secs(3), || {
        role(&fake, "rollbot-b-pod") == "leader"
    })
    .await;
    let (code, body) = readyz(&http, &b).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("leader: rollbot-b holds"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_that_cannot_be_labelled_still_leads() {
    let fake = FakeKube::standard().await;
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    // No such pod: the API server answers 404 NotFound.
    let a = replica(dir.path(), "rollbot-a", "rollbot-gone", &fake.url());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, body) = readyz(&http, &a).await;
        if code == 200 && body.contains("leader: rollbot-a holds") {
            break;
        }
        assert!(Instant::now() < deadline, "{code} {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    until("the failure is logged", Duration::from_secs(5), || {
        a.log_text().contains("could not label this pod")
    })
    .await;
    let log = a.log_text();
    assert!(log.contains("rollbot-gone"), "{log}");
    assert!(log.contains("404"), "{log}");
}

#[test]
fn label_pod_without_pod_name_refuses_to_serve() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config("rollbot-a", "http://127.0.0.1:9")
        .replace("{port}", "0")
        .replace("{data}", dir.path().join("data").to_str().unwrap());
    let path = dir.path().join("rollbot.toml");
    std::fs::write(&path, cfg).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rollbot"))
        .args(["serve", "--config", path.to_str().unwrap()])
        .env_remove("POD_NAME")
        .env("ROLLBOT_TEST_API_TOKEN", "t")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("label_pod = true needs the POD_NAME"), "{err}");
    assert!(err.contains("fieldPath: metadata.name"), "{err}");
}
