//! Leader election: two `rollbot serve` replicas share one Lease on the
//! test Kubernetes API server; only the holder is ready and acts.

use crate::support::api::Api;
use crate::support::fake_kube::FakeKube;
use crate::support::tcp_proxy::TcpProxy;
use crate::support::Server;
use serde_json::Value;
use std::time::{Duration, Instant};

const LEASE_DURATION: Duration = Duration::from_secs(3);
const RENEW_DEADLINE: Duration = Duration::from_secs(2);

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

[gates]
token = "${{ROLLBOT_TEST_API_TOKEN}}"
"#
    )
}

fn replica(dir: &std::path::Path, identity: &str, api_server: &str) -> Server {
    let d = dir.join(identity);
    std::fs::create_dir_all(&d).unwrap();
    Server::start(
        &d,
        &config(identity, api_server),
        &[("ROLLBOT_TEST_API_TOKEN", "api-token-1")],
    )
}

/// `/readyz`: (ready, body).
async fn ready(http: &reqwest::Client, s: &Server) -> (bool, String) {
    match http.get(s.url("/readyz")).send().await {
        Ok(r) => (r.status() == 200, r.text().await.unwrap_or_default()),
        Err(e) => (false, e.to_string()),
    }
}

/// Waits (bounded) until `s` is ready or not, as asked.
async fn wait_ready(http: &reqwest::Client, s: &Server, want: bool, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let (r, body) = ready(http, s).await;
        if r == want {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "replica on port {} not {} within {within:?}: {body}\n{}",
            s.port,
            if want { "ready" } else { "standing by" },
            s.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `/rollback checkout bad canary` as the API client `ci`.
async fn rollback(s: &Server) -> (u16, Value) {
    Api::new(s, "api-token-1")
        .timeout(Duration::from_secs(2))
        .action("/rollback checkout bad canary", None)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_one_replica_leads_and_a_cut_off_leader_stops_before_another_takes_over() {
    let fake = FakeKube::standard().await;
    let to_a = TcpProxy::start(&format!("127.0.0.1:{}", fake.port)).await;
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();

    let a = replica(dir.path(), "rollbot-a", &to_a.url());
    let body = wait_ready(&http, &a, true, Duration::from_secs(10)).await;
    assert!(
        body.contains("leader: rollbot-a holds the Lease `rollbot`"),
        "{body}"
    );
    let b = replica(dir.path(), "rollbot-b", &fake.url());
    // B's first look at the Lease finds A holding it.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (rb, body) = ready(&http, &b).await;
        assert!(!rb, "{body}");
        if body.contains("held by rollbot-a") {
            break;
        }
        assert!(Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // For longer than a Lease lasts, the holder renews and B stays out.
    let until = Instant::now() + LEASE_DURATION + Duration::from_secs(1);
    let mut led = 0;
    while Instant::now() < until {
        let ((ra, _), (rb, body_b)) = tokio::join!(ready(&http, &a), ready(&http, &b));
        // B never leads while A renews (A may miss a beat on a loaded machine,
        // but never long enough for the Lease to pass).
        assert!(!rb, "B leads while A renews: a={ra} {body_b}");
        led += ra as u32;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(led > 0, "A never reported leading");

    // The standby takes no action and says who leads; the leader acts.
    let (code, answer) = rollback(&b).await;
    assert_eq!(code, 503, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("rollbot-a"),
        "{answer}"
    );
    assert_eq!(answer["leader"], "rollbot-a");
    assert_eq!(answer["refusal"], "standby", "{answer}");
    let (code, answer) = rollback(&a).await;
    assert_eq!(code, 200, "{answer}");
    // Gates too: Flagger and Argo get their answers from the leader only.
    let gate = |s: &Server| {
        http.get(s.url("/gates/argo/analysis?service=checkout"))
            .bearer_auth("api-token-1")
            .send()
    };
    assert_eq!(gate(&a).await.unwrap().status(), 200);
    let standby = gate(&b).await.unwrap();
    assert_eq!(standby.status(), 503);
    let body: Value = standby.json().await.unwrap();
    assert_eq!(body["leader"], "rollbot-a", "{body}");

    // A loses the API server. It stops acting within the renew deadline of
    // its last renewal; B takes over only a full Lease duration after it
    // last saw the Lease change: never both at once.
    let cut = Instant::now();
    to_a.cut();
    let (mut a_stopped, mut b_leads) = (None, None);
    let deadline = cut + Duration::from_secs(15);
    while b_leads.is_none() {
        assert!(Instant::now() < deadline, "no takeover within 15 s");
        let ((ra, body_a), (rb, _)) = tokio::join!(ready(&http, &a), ready(&http, &b));
        assert!(!(ra && rb), "both replicas report leading");
        if !ra && a_stopped.is_none() {
            a_stopped = Some(cut.elapsed());
            assert!(body_a.contains("standby"), "{body_a}");
            assert!(body_a.contains("last Lease error"), "{body_a}");
        }
        if rb {
            b_leads = Some(cut.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let (a_stopped, b_leads) = (a_stopped.expect("A stopped"), b_leads.unwrap());
    eprintln!("leader: A stopped acting {a_stopped:?} after the cut, B led after {b_leads:?}");
    assert!(
        // Its renew deadline, plus polling and a loaded machine's lag.
        a_stopped <= RENEW_DEADLINE + Duration::from_secs(1),
        "{a_stopped:?}"
    );
    assert!(b_leads >= LEASE_DURATION - RENEW_DEADLINE, "{b_leads:?}");
    assert!(a_stopped < b_leads);
    let (code, answer) = rollback(&a).await;
    assert_eq!(code, 503, "the cut-off replica must not act: {answer}");
    // It does not know who holds the Lease now, and must not name itself.
    assert_ne!(answer["leader"], "rollbot-a", "{answer}");
    assert_eq!(answer["refusal"], "standby", "{answer}");

    // Back on the network, A finds B holding the Lease and stays standby.
    to_a.restore();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (ra, body_a) = ready(&http, &a).await;
    assert!(!ra, "{body_a}");
    assert!(body_a.contains("held by rollbot-b"), "{body_a}");
    let lease = fake.get("leases", "rollbot", "rollbot").unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "rollbot-b", "{lease}");
    assert_eq!(lease["spec"]["leaseTransitions"], 1, "{lease}");
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 3, "{lease}");

    // Every write to the Lease carried the resourceVersion it was read at.
    for w in fake.writes() {
        if w.method == "PUT" {
            assert!(
                w.json()["metadata"]["resourceVersion"].is_string(),
                "a replace without resourceVersion: {}",
                w.json()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_shuts_down_hands_the_lease_over_at_once() {
    let fake = FakeKube::standard().await;
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let a = replica(dir.path(), "rollbot-a", &fake.url());
    wait_ready(&http, &a, true, Duration::from_secs(10)).await;
    let b = replica(dir.path(), "rollbot-b", &fake.url());
    wait_ready(&http, &b, false, Duration::from_secs(5)).await;

    let stopping = Instant::now();
    assert!(a.terminate().success());
    // A's last write empties the holder (B may already have taken it).
    let release = fake
        .writes()
        .into_iter()
        .rev()
        .find(|w| w.method == "PUT" && w.json()["spec"]["leaseDurationSeconds"] == 1)
        .expect("a release written by A");
    assert!(
        release.json()["spec"]["holderIdentity"].is_null(),
        "{}",
        release.json()
    );
    wait_ready(&http, &b, true, Duration::from_secs(2)).await;
    let lease = fake.get("leases", "rollbot", "rollbot").unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "rollbot-b", "{lease}");
    let took = stopping.elapsed();
    eprintln!("leader: handover after a graceful stop took {took:?}");
    assert!(
        took < LEASE_DURATION,
        "{took:?}: B waited for expiry instead"
    );
}
