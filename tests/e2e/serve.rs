//! `rollbot serve`: health, readiness, metrics, the HTTP API, graceful
//! shutdown that finishes in-flight actions, and recovery after a crash.

use crate::support::api::Api;
use crate::support::audit;
use crate::support::{rollbot, Server};
use std::time::Duration;

const CONFIG: &str = r##"
[server]
listen = "127.0.0.1:{port}"

[store]
path = "{data}"

[channels.deploys]
console = "#deploys"

[backends.sim]
type = "simulated"

[backends.script]
type = "exec"
program = "sh"
args = ["-c", "sleep $ROLLBOT_TEST_SLEEP; echo rolled back $ROLLBOT_SERVICE"]
env = ["PATH", "ROLLBOT_TEST_SLEEP"]
timeout = "60s"

[[services]]
name = "checkout"
backend = "sim"
deploy_channel = "deploys"

[[services]]
name = "payments"
backend = "script"

[[roles.responder]]
members = ["api:ci"]

[[api.clients]]
name = "ci"
token = "${ROLLBOT_TEST_TOKEN}"

[[api.clients]]
name = "dashboard"
token_file = "{data}-dashboard-token"
"##;

const TOKEN: &str = "test-token-4f9a";

fn start(dir: &std::path::Path, sleep: &str) -> Server {
    std::fs::write(
        format!("{}-dashboard-token", dir.join("data").display()),
        "dash-token\n",
    )
    .unwrap();
    Server::start(
        dir,
        CONFIG,
        &[("ROLLBOT_TEST_TOKEN", TOKEN), ("ROLLBOT_TEST_SLEEP", sleep)],
    )
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// `command` through the API with `token`, the command as its own
/// idempotency key.
async fn act(s: &Server, token: &str, command: &str) -> (u16, serde_json::Value) {
    Api::new(s, token).action(command, Some(command)).await
}

#[tokio::test]
async fn health_metrics_and_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), "0");
    let c = client();
    assert_eq!(
        c.get(s.url("/healthz"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "ok\n"
    );
    let ready = c.get(s.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert!(ready.text().await.unwrap().contains("2 services"));

    // No token, a wrong token, a bad body.
    let r = c
        .post(s.url("/api/v1/actions"))
        .json(&serde_json::json!({"command": "/rollback checkout"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(act(&s, "nope", "/rollback checkout").await.0, 401);
    let r = c
        .post(s.url("/api/v1/actions"))
        .bearer_auth(TOKEN)
        .body("{\"cmd\": 1}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("unknown field `cmd`"));
    let (code, body) = act(&s, TOKEN, "/rollbak checkout").await;
    assert_eq!(code, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("did you mean /rollback?"),
        "{body}"
    );

    // A responder's rollback acts; a retry with the same key gets the same outcome.
    let (code, body) = act(&s, TOKEN, "/rollback checkout deploy broke login").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["message"]["title"], "Rolled back checkout v2 → v1");
    let (code, again) = act(&s, TOKEN, "/rollback checkout deploy broke login").await;
    assert_eq!(code, 200);
    assert_eq!(again["repeat"], true);
    assert_eq!(again["correlation_id"], body["correlation_id"]);
    // Not a deployer: refused with the roles that would allow it.
    let (code, body) = act(&s, TOKEN, "/promote checkout").await;
    assert_eq!(code, 403);
    assert!(
        body["message"]["text"]
            .as_str()
            .unwrap()
            .contains("deployer, admin"),
        "{body}"
    );
    // The token from a file works too; that client has no roles.
    assert_eq!(act(&s, "dash-token", "/status").await.0, 403);

    let m = c
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.contains("rollbot_actions_total{action=\"rollback\",outcome=\"succeeded\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("rollbot_refusals_total{action=\"promote\",reason=\"permission\"} 1"),
        "{m}"
    );
    assert!(m.contains("rollbot_audit_appends_total 4"), "{m}");
    assert!(
        m.contains("rollbot_breaker_state{breaker=\"backend:sim\"} 0"),
        "{m}"
    );
    assert!(s.terminate().success());
}

#[tokio::test]
async fn sigterm_finishes_the_action_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), "1.5");
    let api = Api::new(&s, TOKEN);
    let call = tokio::spawn(async move { api.action("/rollback payments", None).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = tokio::task::spawn_blocking(move || s.terminate())
        .await
        .unwrap();
    let (code, body) = call.await.unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(
        body["message"]["text"]
            .as_str()
            .unwrap()
            .contains("rolled back payments"),
        "{body}"
    );
    assert!(status.success());
    let list = audit::list(&dir.path().join("data"), &[]);
    assert!(
        list.contains("rollback payments by API client ci — succeeded"),
        "{list}"
    );
}

#[tokio::test]
async fn a_crash_mid_action_is_found_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), "30");
    let api = Api::new(&s, TOKEN).timeout(Duration::from_secs(5));
    let _pending = tokio::spawn(async move {
        let _ = api.try_action("/rollback payments", None).await;
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    s.kill();
    let data = dir.path().join("data");
    // The next start marks it interrupted.
    let again = Server::start_existing(
        &dir.path().join("rollbot.toml"),
        crate::support::free_port_for(&dir.path().join("rollbot.toml")),
        &[("ROLLBOT_TEST_TOKEN", TOKEN), ("ROLLBOT_TEST_SLEEP", "0")],
    );
    assert!(again.terminate().success());
    let list = audit::list(&data, &["--service", "payments"]);
    let lines: Vec<&str> = list.lines().collect();
    assert!(
        lines[0].contains("rollback payments by rollbot recovery — interrupted"),
        "{list}"
    );
    assert!(
        lines[0].contains("may or may not have been applied"),
        "{list}"
    );
    assert!(
        lines[1].contains("rollback payments by API client ci — requested"),
        "{list}"
    );
    assert!(
        rollbot(&["audit", "verify", "--data", data.to_str().unwrap()])
            .status
            .success()
    );
}

#[tokio::test]
async fn with_json_logs_every_audit_entry_is_one_json_line_that_matches_the_store() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        format!("{}-dashboard-token", dir.path().join("data").display()),
        "dash-token\n",
    )
    .unwrap();
    // serve's own default filter: audit entries at info, everything else warn.
    let s = Server::start(
        dir.path(),
        CONFIG,
        &[
            ("ROLLBOT_TEST_TOKEN", TOKEN),
            ("ROLLBOT_TEST_SLEEP", "0"),
            ("ROLLBOT_LOG_FORMAT", "json"),
            ("ROLLBOT_LOG", ""),
        ],
    );
    let (code, _) = act(&s, TOKEN, "/rollback checkout bad canary").await;
    assert_eq!(code, 200);
    let (code, _) = act(&s, TOKEN, "/promote payments").await;
    assert_eq!(code, 403, "api:ci is no deployer");
    let log_path = s.log.clone();
    assert!(s.terminate().success());
    let log = std::fs::read_to_string(log_path).unwrap();
    let mut from_log = Vec::new();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a log line that is not JSON ({e}): {line}"));
        if v["target"] == "rollbot::audit" {
            let entry: serde_json::Value =
                serde_json::from_str(v["entry"].as_str().unwrap()).unwrap();
            assert_eq!(v["seq"], entry["seq"]);
            assert_eq!(v["hash"], entry["hash"]);
            assert_eq!(v["action"], entry["action"]);
            from_log.push(entry);
        }
    }
    let data = dir.path().join("data");
    let stored = crate::support::audit_export(&data);
    assert!(
        stored.len() >= 3,
        "requested, succeeded, refused: {stored:?}"
    );
    assert_eq!(from_log, stored, "the log holds exactly the stored entries");
    assert!(from_log
        .iter()
        .any(|e| e["action"] == "promote" && e["outcome"] == "refused"));
}

/// A client with no role once stored 1.9 MB refusal entries. Every free text
/// field is capped, the answer names the limit, and nothing oversized is
/// stored.
#[tokio::test]
async fn oversized_input_is_refused_naming_the_limit_and_never_stored() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), "0");
    let long = "x".repeat(2_001);
    let c = client();
    let post_as = |token: &str, path: &str, body: String| {
        c.post(s.url(path))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let post = |path: &str, body: String| post_as(TOKEN, path, body);
    // A responder and a client with no role alike.
    for token in [TOKEN, "dash-token"] {
        for command in [
            format!("/rollback checkout {long}"),
            format!("/promote checkout {long}"),
            format!("/freeze all for 1h {long}"),
        ] {
            let r = post_as(
                token,
                "/api/v1/actions",
                serde_json::json!({ "command": command }).to_string(),
            )
            .await
            .unwrap();
            assert_eq!(r.status(), 400);
            let body: serde_json::Value = r.json().await.unwrap();
            assert!(
                body["error"].as_str().unwrap().starts_with(
                    "the reason is 2,001 characters long; rollbot accepts at most 2,000"
                ),
                "{body}"
            );
        }
    }
    let r = post(
        "/api/v1/actions",
        serde_json::json!({"command": "/status", "idempotency_key": "k".repeat(201)}).to_string(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    let e = r.text().await.unwrap();
    assert!(
        e.contains("idempotency_key is 201 characters long; rollbot accepts at most 200"),
        "{e}"
    );
    // Bodies: a 1.9 MB reason never gets as far as the parser.
    for path in ["/api/v1/actions", "/api/v1/rollouts"] {
        let big =
            serde_json::json!({"command": format!("/rollback checkout {}", "y".repeat(1_900_000))});
        let r = post(path, big.to_string()).await.unwrap();
        assert_eq!(r.status(), 413, "{path}");
        let e = r.text().await.unwrap();
        assert!(e.contains("larger than 64 KiB") && e.contains(path), "{e}");
    }
    // Within the limits it acts.
    let r = post(
        "/api/v1/actions",
        serde_json::json!({"command": format!("/rollback checkout {}", "z".repeat(2_000)), "idempotency_key": "k".repeat(200)}).to_string(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    let data = dir.path().join("data");
    assert!(s.terminate().success());
    for e in crate::support::audit_export(&data) {
        let text = e.to_string();
        assert!(
            !text.contains(&long)
                && !text.contains(&"k".repeat(201))
                && !text.contains("yyyyyyyyyy"),
            "an oversized value was stored: {}",
            &text[..text.len().min(300)]
        );
    }
}

const REFUSALS: &str = r##"
[server]
listen = "127.0.0.1:{port}"

[store]
path = "{data}"

[engine]
lock_wait = "200ms"

[backends.sim]
type = "simulated"

[backends.slow]
type = "exec"
program = "sh"
args = ["-c", "sleep 3; echo rolled back {service}"]

[backends.broken]
type = "exec"
program = "sh"
args = ["-c", "echo 'deploy API: disk full' >&2; exit 1"]

[[services]]
name = "checkout"
backend = "sim"

[[services]]
name = "search"
backend = "slow"

[[services]]
name = "payments"
backend = "broken"

[[roles.admin]]
members = ["api:ci"]

[[roles.viewer]]
members = ["api:dashboard"]

[[api.clients]]
name = "ci"
token = "${ROLLBOT_TEST_TOKEN}"

[[api.clients]]
name = "dashboard"
token = "${ROLLBOT_TEST_DASHBOARD_TOKEN}"
"##;

#[tokio::test]
async fn refusals_answer_4xx_with_a_reason_and_only_a_failing_backend_answers_502() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        dir.path(),
        REFUSALS,
        &[
            ("ROLLBOT_TEST_TOKEN", TOKEN),
            ("ROLLBOT_TEST_DASHBOARD_TOKEN", "dash-token"),
        ],
    );
    let refused = |code: u16, body: &serde_json::Value, http: u16, why: &str| {
        assert_eq!(code, http, "{body}");
        assert_eq!(body["status"], "refused", "{body}");
        assert_eq!(body["refusal"], why, "{body}");
    };

    // A revision that does not exist: the backend refused at preflight.
    let (code, body) = act(&s, TOKEN, "/rollback checkout to v9 typo").await;
    refused(code, &body, 422, "preflight");
    assert_eq!(body["message"]["title"], "Rollback of checkout refused");
    let text = body["message"]["text"].as_str().unwrap();
    assert!(
        text.contains("revision v9 does not exist") && text.contains("Nothing was changed"),
        "{body}"
    );

    let (code, body) = act(&s, "dash-token", "/rollback checkout").await;
    refused(code, &body, 403, "not_allowed");

    let (code, body) = act(&s, TOKEN, "/freeze checkout for 1h launch").await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = act(&s, TOKEN, "/promote checkout").await;
    refused(code, &body, 409, "frozen");
    let (code, body) = act(&s, TOKEN, "/promote checkout force").await;
    refused(code, &body, 422, "invalid");
    let (code, body) = act(&s, TOKEN, "/unfreeze search").await;
    refused(code, &body, 409, "not_frozen");

    // A second action on a service that is busy.
    let first = {
        let api = Api::new(&s, TOKEN);
        tokio::spawn(async move { api.action("/rollback search", Some("a")).await.0 })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (code, body) = act(&s, TOKEN, "/rollback search again").await;
    refused(code, &body, 409, "busy");
    assert_eq!(first.await.unwrap(), 200);

    // The backend was called and failed: 502, and no refusal reason.
    let (code, body) = act(&s, TOKEN, "/rollback payments").await;
    assert_eq!(code, 502, "{body}");
    assert_eq!(body["status"], "failed", "{body}");
    assert!(body["refusal"].is_null(), "{body}");
    assert!(s.terminate().success());

    // The audit keeps the words it always used for refusals.
    let stored = crate::support::audit_export(&dir.path().join("data"));
    let refusals: Vec<&str> = stored
        .iter()
        .filter(|e| e["outcome"] == "refused")
        .filter_map(|e| e["parameters"]["refusal"].as_str())
        .collect();
    assert_eq!(
        refusals,
        [
            "preflight",
            "permission",
            "freeze",
            "invalid",
            "invalid",
            "lock"
        ],
        "{stored:?}"
    );
}

/// Accepts one HTTP request on 127.0.0.1, answers 200, and hands back the
/// request's bytes as they came over the wire.
fn one_raw_request() -> (u16, std::sync::mpsc::Receiver<String>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = conn.read(&mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap())
                    })
                    .unwrap_or(0);
                if body.len() >= len {
                    break;
                }
            }
            if n == 0 {
                break;
            }
        }
        conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}")
            .unwrap();
        tx.send(String::from_utf8_lossy(&got).to_string()).unwrap();
    });
    (port, rx)
}

#[tokio::test]
async fn a_webhook_receives_the_documented_idempotency_key_under_a_lower_case_header_name() {
    let (port, request) = one_raw_request();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        r##"
[server]
listen = "127.0.0.1:{{port}}"

[store]
path = "{{data}}"

[backends.pipeline]
type = "webhook"
url = "http://127.0.0.1:{port}/rollbot/actions"
secret = "${{ROLLBOT_TEST_WEBHOOK_SECRET}}"

[[services]]
name = "checkout"
backend = "pipeline"

[[roles.responder]]
members = ["api:ci"]

[[api.clients]]
name = "ci"
token = "${{ROLLBOT_TEST_TOKEN}}"
"##
    );
    let s = Server::start(
        dir.path(),
        &config,
        &[
            ("ROLLBOT_TEST_TOKEN", TOKEN),
            ("ROLLBOT_TEST_WEBHOOK_SECRET", "hook-secret"),
        ],
    );
    let (code, body) = Api::new(&s, TOKEN)
        .action("/rollback checkout", Some("ci-1234"))
        .await;
    assert_eq!(code, 200, "{body}");
    let raw = request
        .recv_timeout(Duration::from_secs(10))
        .expect("the webhook was called");
    assert!(s.terminate().success());
    assert!(
        raw.contains("\r\nidempotency-key: api:ci:ci-1234\r\n"),
        "{raw}"
    );
    assert!(
        raw.contains("\"idempotency_key\":\"api:ci:ci-1234\""),
        "{raw}"
    );

    // The reference configuration tells receivers exactly that.
    let example = std::fs::read_to_string("config/rollbot.example.toml").unwrap();
    assert!(
        example.contains("arrives as\n# \"api:ci:ci-1234\" (api:CLIENT:KEY)")
            && example.contains("Header names arrive in lower case"),
        "config/rollbot.example.toml does not document the key's form"
    );
}

#[tokio::test]
async fn a_stored_rollout_of_a_service_taken_out_of_the_config_does_not_stop_serve() {
    let dir = tempfile::tempdir().unwrap();
    let config = |services: &[&str]| {
        let mut c = String::from("[server]\nlisten = \"127.0.0.1:{port}\"\n\n[store]\npath = \"{data}\"\n\n[metrics]\nsource = \"simulated\"\n\n[backends.sim]\ntype = \"simulated\"\n\n[[api.clients]]\nname = \"ci\"\ntoken = \"${ROLLBOT_TEST_TOKEN}\"\n\n[[roles.deployer]]\nmembers = [\"api:ci\"]\n");
        for s in services {
            c.push_str(&format!(
                "\n[[services]]\nname = \"{s}\"\nbackend = \"sim\"\n"
            ));
        }
        c
    };
    let env = [("ROLLBOT_TEST_TOKEN", "tok-5d2a")];
    let s = Server::start_async(dir.path(), &config(&["checkout", "search"]), &env).await;
    for svc in ["checkout", "search"] {
        let r = reqwest::Client::new()
            .post(s.url("/api/v1/rollouts"))
            .bearer_auth("tok-5d2a")
            .json(&serde_json::json!({"service": svc, "from_revision": "v1", "to_revision": "v2"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    s.terminate();

    // `search` is gone from the config: rollbot still starts, watches
    // checkout, and says why search's rollout ended.
    let s = Server::start_async(dir.path(), &config(&["checkout"]), &env).await;
    let ready = reqwest::get(s.url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200, "{}", ready.text().await.unwrap());
    let rollouts = Api::new(&s, "tok-5d2a").rollouts().await;
    let state = |svc: &str| {
        rollouts
            .iter()
            .find(|r| r["service"] == svc)
            .map(|r| r["state"].as_str().unwrap_or_default().to_string())
            .unwrap_or_default()
    };
    assert_eq!(
        state("search"),
        "ended: search is no longer in the config",
        "{rollouts:?}"
    );
    assert!(!state("checkout").starts_with("ended"), "{rollouts:?}");
    s.terminate();
}
