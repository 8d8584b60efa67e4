//! Fencing: two `rollbot serve` replicas share one Lease on the test
//! Kubernetes API server. A leader frozen (SIGSTOP) in the middle of an
//! action must not finish it when it wakes, after the other replica took
//! the Lease and rolled the same service back; a write that got past the
//! check is conditional and fails on the changed object; a stopping leader
//! hands the Lease over without waiting for its action to finish.

use crate::support::api::Api;
use crate::support::fake_kube::{
    kubectl, seed_history, DeploymentController, FakeKube, Pace, REVISION,
};
use crate::support::kube_bot::{rollout_keys, Backend};
use crate::support::{audit_export, Server};
use rollbot::engine::Status;
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const API_TOKEN: &str = "api-token-f3c1";
const LEASE_DURATION: Duration = Duration::from_secs(3);

/// A replica's config: leader election on `lease_api` (3s / 2s / 250ms)
/// and `backend`, the TOML of its backends and services.
fn config(identity: &str, lease_api: &str, backend: &str) -> String {
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
api_server = "{lease_api}"
lease_duration = "3s"
renew_deadline = "2s"
retry_period = "250ms"

{backend}

[[roles.responder]]
members = ["api:ci"]

[[api.clients]]
name = "ci"
token = "${{ROLLBOT_TEST_API_TOKEN}}"
"#
    )
}

fn replica(dir: &Path, identity: &str, config: &str, env: &[(&str, &str)]) -> Server {
    let d = dir.join(identity);
    std::fs::create_dir_all(&d).unwrap();
    let mut env = env.to_vec();
    env.push(("ROLLBOT_TEST_API_TOKEN", API_TOKEN));
    Server::start(&d, config, &env)
}

/// Starts `rollbot-a` and waits until it leads, then `rollbot-b` and
/// waits until it stands by: each is (config, environment).
async fn leader_then_standby(
    dir: &Path,
    a: (&str, &[(&str, &str)]),
    b: (&str, &[(&str, &str)]),
) -> (Server, Server) {
    let a = replica(dir, "rollbot-a", a.0, a.1);
    a.wait_readyz(true, Duration::from_secs(10)).await;
    let b = replica(dir, "rollbot-b", b.0, b.1);
    b.wait_readyz(false, Duration::from_secs(5)).await;
    (a, b)
}

fn signal(s: &Server, sig: &str) {
    let pid = s.child.id().to_string();
    assert!(Command::new("kill")
        .args([sig, &pid])
        .status()
        .unwrap()
        .success());
}

/// Waits (bounded) until `file` has a line starting with `prefix`.
async fn wait_line(file: &Path, prefix: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while !lines(file).iter().any(|l| l.starts_with(prefix)) {
        assert!(
            Instant::now() < deadline,
            "no `{prefix}` in {file:?} within {within:?}: {:?}",
            lines(file)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn lines(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The audit entries of `corr` in a stopped replica's store.
fn entries_of(dir: &Path, identity: &str, corr: &str) -> Vec<String> {
    audit_export(&dir.join(identity).join("data"))
        .into_iter()
        .filter(|e| e["correlation_id"] == corr)
        .map(|e| e["outcome"].as_str().unwrap_or("").to_string())
        .collect()
}

/// What a frozen leader answers once it wakes: a standby refusal that
/// says why, never a result.
fn assert_stopped_as_standby(code: u16, answer: &Value) {
    assert_eq!(code, 503, "{answer}");
    assert_eq!(answer["refusal"], "standby", "{answer}");
    let text = answer.to_string();
    assert!(text.contains("no longer the leader"), "{text}");
    assert!(text.contains("the leader reports the action"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_frozen_mid_action_does_not_run_its_exec_rollback_after_waking() {
    let fake = FakeKube::standard().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("runs.log");
    // Every run of the program leaves a line: action, replica, correlation.
    // Preflight takes a second, long enough to freeze the replica in it.
    let backend = r#"
[backends.script]
type = "exec"
program = "sh"
args = ['-c', 'echo "$ROLLBOT_ACTION $REPLICA $ROLLBOT_CORRELATION_ID" >> "$RUNS"; if [ "$ROLLBOT_ACTION" = preflight ]; then sleep 1; fi']
env = ["PATH", "REPLICA", "RUNS"]
supports = ["preflight"]
timeout = "30s"

[[services]]
name = "payments"
backend = "script"
"#;
    let runs = log.to_str().unwrap();
    let (a, b) = leader_then_standby(
        dir.path(),
        (
            &config("rollbot-a", &fake.url(), backend),
            &[("REPLICA", "a"), ("RUNS", runs)],
        ),
        (
            &config("rollbot-b", &fake.url(), backend),
            &[("REPLICA", "b"), ("RUNS", runs)],
        ),
    )
    .await;

    let asked_a = Api::new(&a, API_TOKEN).timeout(Duration::from_secs(60));
    let on_a = asked_a.action("/rollback payments bad release", None);
    let freeze_and_take_over = async {
        wait_line(&log, "preflight a", Duration::from_secs(10)).await;
        signal(&a, "-STOP");
        let took = b
            .wait_readyz(true, LEASE_DURATION + Duration::from_secs(5))
            .await
            .0;
        let (code, answer) = Api::new(&b, API_TOKEN)
            .timeout(Duration::from_secs(30))
            .action("/rollback payments bad release", None)
            .await;
        assert_eq!(code, 200, "the new leader rolls back: {answer}");
        signal(&a, "-CONT");
        took
    };
    let ((code, answer), took) = tokio::join!(on_a, freeze_and_take_over);
    eprintln!("fencing/exec: B led {took:?} after A froze");
    assert_stopped_as_standby(code, &answer);

    // The program ran its rollback once, on the new leader.
    let rollbacks: Vec<String> = lines(&log)
        .into_iter()
        .filter(|l| l.starts_with("rollback"))
        .collect();
    assert_eq!(rollbacks.len(), 1, "{:?}", lines(&log));
    assert!(rollbacks[0].starts_with("rollback b "), "{rollbacks:?}");

    // Nothing was appended after A woke: its request stays unfinished for
    // recovery to report, with no result written past its deadline.
    let corr = answer["correlation_id"].as_str().unwrap().to_string();
    a.kill();
    assert_eq!(entries_of(dir.path(), "rollbot-a", &corr), ["requested"]);
}

/// A Deployment `web` at revisions 1–3 (1.0, 1.1, 1.2) with a controller.
async fn cluster() -> (FakeKube, DeploymentController) {
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
}

fn image(fake: &FakeKube) -> String {
    let d = fake.get("deployments", "prod", "web").unwrap();
    d["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_frozen_mid_action_does_not_patch_the_deployment_back() {
    let (fake, _ctl) = cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let backend = |token_var: &str| {
        format!(
            r#"
[backends.k8s]
type = "kubernetes-deployment"
api_server = "{}"
token = "${{{token_var}}}"
namespace = "prod"
{}
[[services]]
name = "web"
backend = "k8s"
"#,
            fake.url(),
            rollout_keys("10s")
        )
    };
    let (a, b) = leader_then_standby(
        dir.path(),
        (
            &config("rollbot-a", &fake.url(), &backend("ROLLBOT_TEST_KUBE_A")),
            &[("ROLLBOT_TEST_KUBE_A", "token-a")],
        ),
        (
            &config("rollbot-b", &fake.url(), &backend("ROLLBOT_TEST_KUBE_B")),
            &[("ROLLBOT_TEST_KUBE_B", "token-b")],
        ),
    )
    .await;

    // A's second read of the Deployment is the act step's, just before
    // its PATCH: A freezes while waiting for the answer.
    let held = fake.hold("GET", "/deployments/web", "Bearer token-a", 2);
    let asked_a = Api::new(&a, API_TOKEN).timeout(Duration::from_secs(60));
    let on_a = asked_a.action("/rollback web bad release", None);
    let freeze_and_take_over = async {
        held.reached(Duration::from_secs(10)).await;
        signal(&a, "-STOP");
        // Answered from the Deployment as it is now (1.2); A reads it
        // only when it wakes.
        held.release();
        let took = b
            .wait_readyz(true, LEASE_DURATION + Duration::from_secs(5))
            .await
            .0;
        let (code, answer) = Api::new(&b, API_TOKEN)
            .timeout(Duration::from_secs(30))
            .action("/rollback web bad release", None)
            .await;
        assert_eq!(code, 200, "the new leader rolls back: {answer}");
        assert_eq!(image(&fake), "registry.example.com/web:1.1");
        signal(&a, "-CONT");
        took
    };
    let ((code, answer), took) = tokio::join!(on_a, freeze_and_take_over);
    eprintln!("fencing/kubernetes: B led {took:?} after A froze");
    assert_stopped_as_standby(code, &answer);
    assert!(answer.to_string().contains("was not sent"), "{answer}");

    // 1.2 → 1.1, and it stays 1.1: A never sent its PATCH.
    assert_eq!(image(&fake), "registry.example.com/web:1.1");
    let patches_by_a: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH" && r.authorization == "Bearer token-a")
        .collect();
    assert!(patches_by_a.is_empty(), "A patched: {patches_by_a:?}");
    let corr = answer["correlation_id"].as_str().unwrap().to_string();
    a.kill();
    assert_eq!(entries_of(dir.path(), "rollbot-a", &corr), ["requested"]);
}

const TOKEN: &str = "kube-token-c0ffee";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_whose_deployment_changed_after_preflight_is_not_written_over_it() {
    let (fake, _ctl) = cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let bot = Backend {
        table: "k8s",
        kind: "kubernetes-deployment",
        token: TOKEN,
    }
    .start(dir.path(), &fake, &rollout_keys("10s"), "")
    .await;

    // rollbot's PATCH waits at the API server while a person rolls the
    // Deployment back with kubectl (1.2 → 1.1); then it arrives, stale.
    let held = fake.hold("PATCH", "/deployments/web", &format!("Bearer {TOKEN}"), 1);
    let by_hand = async {
        held.reached(Duration::from_secs(10)).await;
        let (ok, _, err) = kubectl(
            &fake,
            dir.path(),
            "prod",
            &["rollout", "undo", "deployment/web"],
        )
        .await;
        assert!(ok, "kubectl rollout undo: {err}");
        held.release();
    };
    let (out, ()) = tokio::join!(bot.rollback(None), by_hand);

    // The stale write was refused with the API server's 409 Conflict, read
    // again, found moved since preflight, and not sent again.
    assert_eq!(out.status, Status::Failed, "{}", out.message.plain());
    let text = out.message.plain();
    assert!(text.contains("changed since preflight"), "{text}");
    assert!(
        text.contains("runs revision 4 now, not revision 3"),
        "{text}"
    );
    let ours: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH" && r.authorization == format!("Bearer {TOKEN}"))
        .collect();
    assert_eq!(ours.len(), 1, "{ours:?}");
    assert_eq!(ours[0].status, 409);
    assert_eq!(ours[0].json()[2]["path"], "/metadata/resourceVersion");
    assert_eq!(image(&fake), "registry.example.com/web:1.1");
    let d = fake.get("deployments", "prod", "web").unwrap();
    assert_eq!(d["metadata"]["annotations"][REVISION], "4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_leader_hands_the_lease_over_while_its_action_finishes() {
    let fake = FakeKube::standard().await;
    let dir = tempfile::tempdir().unwrap();
    // The rollback is quick; verifying it takes 4 s (a rollout to wait
    // for), during which nothing more is sent.
    let backend = r#"
[backends.script]
type = "exec"
program = "sh"
args = ['-c', 'if [ "$ROLLBOT_ACTION" = verify ]; then touch "$RUNS.verifying"; sleep 4; fi; echo "$ROLLBOT_ACTION $REPLICA" >> "$RUNS"']
env = ["PATH", "REPLICA", "RUNS"]
supports = ["verify"]
timeout = "30s"

[[services]]
name = "payments"
backend = "script"
"#;
    let log = dir.path().join("runs.log");
    let runs = log.to_str().unwrap();
    let (a, b) = leader_then_standby(
        dir.path(),
        (
            &config("rollbot-a", &fake.url(), backend),
            &[("REPLICA", "a"), ("RUNS", runs)],
        ),
        (
            &config("rollbot-b", &fake.url(), backend),
            &[("REPLICA", "b"), ("RUNS", runs)],
        ),
    )
    .await;

    let asked_a = Api::new(&a, API_TOKEN).timeout(Duration::from_secs(60));
    let on_a = async {
        let answer = asked_a.action("/rollback payments bad release", None).await;
        (answer, Instant::now())
    };
    let stop_a = async {
        let verifying = std::path::PathBuf::from(format!("{runs}.verifying"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !verifying.exists() {
            assert!(Instant::now() < deadline, "A never started verifying");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let stopped = Instant::now();
        signal(&a, "-TERM");
        let took = b.wait_readyz(true, Duration::from_secs(10)).await.0;
        (stopped, took)
    };
    let (((code, answer), a_done), (stopped, took)) = tokio::join!(on_a, stop_a);
    let action_ended = a_done - stopped;
    eprintln!(
        "fencing/handover: B led {took:?} after SIGTERM; A's action ended {action_ended:?} after it"
    );
    // A's action finished and was recorded as it would have been.
    assert_eq!(code, 200, "{answer}");
    assert_eq!(
        lines(&log),
        ["rollback a", "verify a"],
        "A ran its action once, nothing ran on B"
    );
    assert!(
        took + Duration::from_millis(500) < action_ended,
        "B took over only {took:?} after SIGTERM, when A's action ended at {action_ended:?}"
    );
    assert!(
        took < LEASE_DURATION,
        "B waited for the Lease to expire: {took:?}"
    );
    let lease = fake.get("leases", "rollbot", "rollbot").unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "rollbot-b", "{lease}");

    let corr = answer["correlation_id"].as_str().unwrap().to_string();
    let mut a = a;
    let deadline = Instant::now() + Duration::from_secs(30);
    while a.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "A did not stop after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        entries_of(dir.path(), "rollbot-a", &corr),
        ["requested", "succeeded"]
    );
}
