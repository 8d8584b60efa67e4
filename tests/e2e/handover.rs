//! Handover on a shared PostgreSQL store: two `rollbot serve` replicas, one
//! Lease on the test Kubernetes API server. The leader stops while its
//! rollback verifies (4 s). Stopped gracefully (SIGTERM) it hands the Lease
//! over at once and records the result itself: the new leader waits for it
//! instead of calling the action interrupted, and a repeat of the key on
//! the new leader gets that result. Killed (SIGKILL) it records nothing,
//! and the new leader reports the action interrupted, as before.

use crate::support::api::Api;
use crate::support::fake_kube::FakeKube;
use crate::support::postgres::Postgres;
use crate::support::{text, Server};
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const API_TOKEN: &str = "api-token-4b90";

/// A replica on the shared store; its rollback is quick and verifying it
/// takes 4 s, during which nothing more is sent.
fn config(identity: &str, lease_api: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:{{port}}"

[store]
kind = "postgres"
url = "${{ROLLBOT_TEST_STORE_URL}}"
timeout = "2s"

[leader_election]
lease = "rollbot"
namespace = "rollbot"
identity = "{identity}"
api_server = "{lease_api}"
lease_duration = "3s"
renew_deadline = "2s"
retry_period = "250ms"

[backends.script]
type = "exec"
program = "sh"
args = ['-c', 'echo "$ROLLBOT_ACTION $REPLICA" >> "$RUNS"; if [ "$ROLLBOT_ACTION" = verify ]; then touch "$RUNS.verifying"; sleep 4; fi']
env = ["PATH", "REPLICA", "RUNS"]
supports = ["verify"]
timeout = "30s"

[[services]]
name = "payments"
backend = "script"

[[roles.responder]]
members = ["api:ci"]

[[api.clients]]
name = "ci"
token = "${{ROLLBOT_TEST_API_TOKEN}}"
"#
    )
}

struct Rig {
    _pg: Postgres,
    _fake: FakeKube,
    dir: tempfile::TempDir,
    url: String,
    lease_api: String,
}

impl Rig {
    async fn new() -> Rig {
        let pg = tokio::task::block_in_place(Postgres::start);
        let url = tokio::task::block_in_place(|| pg.create_database("handover"));
        let fake = FakeKube::standard().await;
        Rig {
            lease_api: fake.url(),
            _pg: pg,
            _fake: fake,
            dir: tempfile::tempdir().unwrap(),
            url,
        }
    }

    fn runs(&self) -> PathBuf {
        self.dir.path().join("runs.log")
    }

    fn env(&self, identity: &str) -> Vec<(&'static str, String)> {
        vec![
            ("ROLLBOT_TEST_STORE_URL", self.url.clone()),
            ("ROLLBOT_TEST_API_TOKEN", API_TOKEN.to_string()),
            ("RUNS", self.runs().display().to_string()),
            ("REPLICA", identity.to_string()),
        ]
    }

    async fn replica(&self, identity: &str) -> Server {
        let d = self.dir.path().join(identity);
        std::fs::create_dir_all(&d).unwrap();
        let env = self.env(identity);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Server::start_async(&d, &config(identity, &self.lease_api), &env).await
    }

    /// `rollbot-a` leads, `rollbot-b` stands by, and A's rollback of
    /// payments (key `key`) is verifying: A, B and A's pending answer.
    async fn verifying_on_a(
        &self,
        key: &'static str,
    ) -> (
        Server,
        Server,
        tokio::task::JoinHandle<Result<(u16, Value), String>>,
    ) {
        let a = self.replica("rollbot-a").await;
        a.wait_readyz(true, Duration::from_secs(10)).await;
        let b = self.replica("rollbot-b").await;
        b.wait_readyz(false, Duration::from_secs(5)).await;
        let asked = Api::new(&a, API_TOKEN).timeout(Duration::from_secs(60));
        let answer = tokio::spawn(async move { asked.try_action(COMMAND, Some(key)).await });
        let verifying = PathBuf::from(format!("{}.verifying", self.runs().display()));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !verifying.exists() {
            assert!(Instant::now() < deadline, "A never started verifying");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (a, b, answer)
    }

    fn runs_lines(&self) -> Vec<String> {
        std::fs::read_to_string(self.runs())
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// `rollbot audit verify` passes on the shared store; every entry.
    fn verified_log(&self, config: &std::path::Path) -> Vec<Value> {
        let run = |args: &[&str]| {
            let mut cmd = Command::new(crate::support::bin());
            cmd.args(args).arg("--config").arg(config);
            for (k, v) in self.env("check") {
                cmd.env(k, v);
            }
            cmd.output().unwrap()
        };
        let v = run(&["audit", "verify"]);
        assert!(v.status.success(), "{}", text(&v));
        assert!(text(&v).contains("audit log intact"), "{}", text(&v));
        let export = run(&["audit", "export"]);
        assert!(export.status.success(), "{}", text(&export));
        String::from_utf8_lossy(&export.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

const COMMAND: &str = "/rollback payments bad release";

fn outcomes(entries: &[Value], corr: &str) -> Vec<String> {
    entries
        .iter()
        .filter(|e| e["correlation_id"] == corr)
        .map(|e| e["outcome"].as_str().unwrap_or("").to_string())
        .collect()
}

fn signal(s: &Server, sig: &str) {
    let pid = s.child.id().to_string();
    assert!(Command::new("kill")
        .args([sig, &pid])
        .status()
        .unwrap()
        .success());
}

/// `/readyz` of `s`: the status code and the JSON answer.
async fn readyz(s: &Server) -> (u16, Value) {
    let (code, body) = s.get("/readyz").await;
    let v = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    (code, v)
}

/// The leader and a standby answer `/readyz` in one JSON shape; people
/// get the lines as text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_and_standby_answer_readyz_in_the_same_json_shape() {
    let rig = Rig::new().await;
    let a = rig.replica("rollbot-a").await;
    a.wait_readyz(true, Duration::from_secs(10)).await;
    let b = rig.replica("rollbot-b").await;
    b.wait_readyz(false, Duration::from_secs(5)).await;
    let (code_a, on_a) = readyz(&a).await;
    // The standby names the holder once it has read the Lease.
    let deadline = Instant::now() + Duration::from_secs(5);
    let (code_b, on_b) = loop {
        let (code, v) = readyz(&b).await;
        if v["leader"] == "rollbot-a" || Instant::now() > deadline {
            break (code, v);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!((code_a, code_b), (200, 503), "{on_a}\n{on_b}");
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&on_a), keys(&on_b), "{on_a}\n{on_b}");
    assert_eq!(on_a["role"], "leader", "{on_a}");
    assert_eq!(on_b["role"], "standby", "{on_b}");
    assert_eq!(on_a["leader"], "rollbot-a", "{on_a}");
    assert_eq!(on_b["leader"], "rollbot-a", "{on_b}");
    assert_eq!(on_a["identity"], "rollbot-a", "{on_a}");
    assert_eq!(on_b["identity"], "rollbot-b", "{on_b}");
    assert_eq!(on_a["store"]["state"], "ok", "{on_a}");
    assert_eq!(on_b["store"]["state"], "ok", "{on_b}");
    assert_eq!(on_a["ready"], true, "{on_a}");
    assert_eq!(on_b["ready"], false, "{on_b}");
    let summary = on_a["summary"].as_str().unwrap();
    assert!(summary.starts_with("ready: 1 services"), "{on_a}");

    let http = reqwest::Client::new();
    let text = http
        .get(a.url("/readyz"))
        .header("accept", "text/plain")
        .send()
        .await
        .unwrap();
    assert_eq!(text.status(), 200);
    let text = text.text().await.unwrap();
    assert!(text.starts_with("ready: 1 services"), "{text}");
    assert!(text.contains("leader: rollbot-a holds the Lease"), "{text}");
    let text = http.get(b.url("/readyz?format=text")).send().await.unwrap();
    assert_eq!(text.status(), 503);
    let text = text.text().await.unwrap();
    assert!(
        text.starts_with("not ready:\nstandby: the Lease `rollbot` is held by rollbot-a"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_stopped_while_verifying_records_its_result_and_the_new_leader_waits_for_it() {
    let rig = Rig::new().await;
    let (mut a, b, on_a) = rig.verifying_on_a("handover-1").await;
    let stopped = Instant::now();
    signal(&a, "-TERM");
    let took = b.wait_readyz(true, Duration::from_secs(10)).await.0;

    // A repeat of the key on the new leader waits for A's result instead
    // of acting again or calling it interrupted.
    let on_b = Api::new(&b, API_TOKEN).timeout(Duration::from_secs(60));
    let (code, again) = on_b.action(COMMAND, Some("handover-1")).await;
    let repeated = stopped.elapsed();
    let (code_a, answer) = on_a.await.unwrap().expect("A answered its action");
    let answered = stopped.elapsed();
    eprintln!(
        "handover: B led {took:?} after SIGTERM, A answered after {answered:?}, B answered the repeat after {repeated:?}"
    );
    assert_eq!(code_a, 200, "{answer}");
    assert_eq!(answer["status"], "succeeded", "{answer}");
    let corr = answer["correlation_id"].as_str().unwrap().to_string();
    assert_eq!(code, 200, "{again}");
    assert_eq!(again["status"], "succeeded", "{again}");
    assert_eq!(again["repeat"], true, "{again}");
    assert_eq!(again["correlation_id"], corr.as_str(), "{again}");
    assert!(
        took < Duration::from_secs(3),
        "B waited for the Lease to expire: {took:?}"
    );

    let deadline = Instant::now() + Duration::from_secs(30);
    while a.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "A did not stop after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        rig.runs_lines(),
        ["rollback rollbot-a", "verify rollbot-a"],
        "the rollback ran once, on A"
    );
    let config = b.config.clone();
    let b_log = b.log_text();
    assert!(b.terminate().success());
    let entries = rig.verified_log(&config);
    assert_eq!(
        outcomes(&entries, &corr),
        ["requested", "succeeded"],
        "B's log:\n{b_log}"
    );
    assert!(
        entries.iter().all(|e| e["outcome"] != "interrupted"),
        "{entries:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_killed_while_verifying_is_reported_interrupted_by_the_new_leader() {
    let rig = Rig::new().await;
    let (a, b, on_a) = rig.verifying_on_a("crash-1").await;
    a.kill();
    b.wait_readyz(true, Duration::from_secs(10)).await;
    assert!(on_a.await.unwrap().is_err(), "a killed leader answered");

    let on_b = Api::new(&b, API_TOKEN).timeout(Duration::from_secs(30));
    let (code, again) = on_b.action(COMMAND, Some("crash-1")).await;
    assert_eq!(code, 502, "{again}");
    let said = again.to_string();
    assert!(said.contains("Interrupted: rollback of payments"), "{said}");
    let corr = again["correlation_id"].as_str().unwrap().to_string();
    assert_eq!(rig.runs_lines(), ["rollback rollbot-a", "verify rollbot-a"]);

    let config = b.config.clone();
    assert!(b.terminate().success());
    let entries = rig.verified_log(&config);
    assert_eq!(outcomes(&entries, &corr), ["requested", "interrupted"]);
}
