//! Failover: two `rollbot serve` replicas share one PostgreSQL store and
//! one Lease on the test Kubernetes API server. The leader is killed
//! (SIGKILL) while one of its actions runs; the other replica must lead
//! within `lease_duration` + `retry_period`, keep every acknowledged audit
//! entry in a chain that verifies, answer repeated idempotency keys without
//! acting again, and report the action cut off by the kill as interrupted.
//!
//! `ROLLBOT_FAILOVER_KILLS` sets how many kills (2 by default); each
//! failover time and their median are printed.

use crate::support::api::Api;
use crate::support::fake_kube::FakeKube;
use crate::support::postgres::Postgres;
use crate::support::{text, Server};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const API_TOKEN: &str = "api-token-7e21";
const LEASE_DURATION: Duration = Duration::from_secs(3);
const RETRY_PERIOD: Duration = Duration::from_millis(250);

/// A replica on the shared store (URL from the environment), electing on
/// `lease_api` (3s / 2s / 250ms). Its program logs every run; a rollback
/// whose reason says "slow" runs until the test releases it (at most 30 s).
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
args = ['-c', 'echo "$ROLLBOT_ACTION $REPLICA $ROLLBOT_CORRELATION_ID $ROLLBOT_REASON" >> "$RUNS"; case "$ROLLBOT_REASON" in *slow*) i=0; while [ ! -e "$RUNS.release" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done;; esac']
env = ["PATH", "REPLICA", "RUNS"]
timeout = "60s"

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
    dir: tempfile::TempDir,
    runs: PathBuf,
    url: String,
    lease_api: String,
}

impl Rig {
    fn env(&self, identity: &str) -> Vec<(&str, String)> {
        vec![
            ("ROLLBOT_TEST_STORE_URL", self.url.clone()),
            ("ROLLBOT_TEST_API_TOKEN", API_TOKEN.to_string()),
            ("RUNS", self.runs.display().to_string()),
            ("REPLICA", identity.to_string()),
        ]
    }

    /// Starts (or restarts, on the same directory) replica `identity`.
    async fn replica(&self, identity: &str) -> Server {
        let d = self.dir.path().join(identity);
        std::fs::create_dir_all(&d).unwrap();
        let env = self.env(identity);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Server::start_async(&d, &config(identity, &self.lease_api), &env).await
    }

    /// The program's runs: (action, replica, correlation, reason).
    fn runs(&self) -> Vec<(String, String, String, String)> {
        std::fs::read_to_string(&self.runs)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let mut f = l.splitn(4, ' ').map(str::to_string);
                let mut next = || f.next().unwrap_or_default();
                (next(), next(), next(), next())
            })
            .collect()
    }

    fn runs_of(&self, correlation: &str) -> usize {
        self.runs()
            .iter()
            .filter(|r| r.0 == "rollback" && r.2 == correlation)
            .count()
    }
}

fn kills() -> usize {
    match std::env::var("ROLLBOT_FAILOVER_KILLS") {
        Ok(v) => v
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .unwrap_or_else(|| panic!("ROLLBOT_FAILOVER_KILLS={v:?}: give a whole number ≥ 1")),
        Err(_) => 2,
    }
}

fn correlation(answer: &Value) -> String {
    answer["correlation_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no correlation_id in {answer}"))
        .to_string()
}

fn rollbot_with(rig: &Rig, args: &[&str], config: &Path) -> std::process::Output {
    let mut cmd = Command::new(crate::support::bin());
    cmd.args(args).arg("--config").arg(config);
    for (k, v) in rig.env("check") {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_within_the_lease_and_nothing_acknowledged_is_lost() {
    let pg = tokio::task::block_in_place(Postgres::start);
    let url = tokio::task::block_in_place(|| pg.create_database("failover"));
    let fake = FakeKube::standard().await;
    let dir = tempfile::tempdir().unwrap();
    let rig = Rig {
        runs: dir.path().join("runs.log"),
        dir,
        url,
        lease_api: fake.url(),
    };
    let mut leader = rig.replica("rollbot-a").await;
    leader.wait_readyz(true, Duration::from_secs(10)).await;
    let mut standby = rig.replica("rollbot-b").await;
    standby.wait_readyz(false, Duration::from_secs(5)).await;
    let mut names = ("rollbot-a", "rollbot-b");

    let (mut acknowledged, mut interrupted, mut took) = (Vec::new(), Vec::new(), Vec::new());
    for k in 0..kills() {
        // An action the leader finishes and acknowledges.
        let done_key = format!("done-{k}");
        let done_cmd = format!("/rollback payments quick {k}");
        let (code, first) = Api::new(&leader, API_TOKEN)
            .action(&done_cmd, Some(&done_key))
            .await;
        assert_eq!(code, 200, "{first}");
        let done = correlation(&first);
        acknowledged.push(done.clone());

        // An action the leader is running when it is killed.
        let slow_key = format!("slow-{k}");
        let slow_cmd = format!("/rollback payments slow {k}");
        let asked = Api::new(&leader, API_TOKEN).timeout(Duration::from_secs(60));
        let cut_off = {
            let (cmd, key) = (slow_cmd.clone(), slow_key.clone());
            tokio::spawn(async move { asked.try_action(&cmd, Some(&key)).await })
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let slow = loop {
            if let Some(r) = rig.runs().into_iter().find(|r| r.3 == format!("slow {k}")) {
                break r.2;
            }
            assert!(Instant::now() < deadline, "the slow rollback never ran");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        interrupted.push(slow.clone());

        let killed = Instant::now();
        leader.kill();
        standby
            .wait_readyz(true, LEASE_DURATION + RETRY_PERIOD + Duration::from_secs(5))
            .await;
        let t = killed.elapsed();
        eprintln!(
            "failover: kill {} of {}: {} led {t:?} after the kill",
            k + 1,
            kills(),
            names.1
        );
        took.push(t);
        assert!(
            cut_off.await.unwrap().is_err(),
            "the killed leader answered its in-flight action"
        );

        // The acknowledged action, repeated on the new leader, acts once.
        let new = Api::new(&standby, API_TOKEN).timeout(Duration::from_secs(30));
        let (code, again) = new.action(&done_cmd, Some(&done_key)).await;
        assert_eq!(code, 200, "{again}");
        assert_eq!(again["repeat"], true, "{again}");
        assert_eq!(correlation(&again), done);
        assert_eq!(rig.runs_of(&done), 1, "{:?}", rig.runs());

        // The action cut off by the kill is reported interrupted, not run again.
        let (code, again) = new.action(&slow_cmd, Some(&slow_key)).await;
        assert_eq!(code, 502, "{again}");
        assert_eq!(correlation(&again), slow, "{again}");
        let said = again.to_string();
        assert!(said.contains("Interrupted: rollback of payments"), "{said}");
        assert!(said.contains("may or may not have been applied"), "{said}");
        let slow_runs = rig
            .runs()
            .iter()
            .filter(|r| r.3 == format!("slow {k}"))
            .count();
        assert_eq!(slow_runs, 1, "{:?}", rig.runs());

        // The killed replica comes back as the standby.
        let back = rig.replica(names.0).await;
        back.wait_readyz(false, Duration::from_secs(5)).await;
        leader = std::mem::replace(&mut standby, back);
        names = (names.1, names.0);
    }
    std::fs::write(format!("{}.release", rig.runs.display()), "").unwrap();

    let mut sorted = took.clone();
    sorted.sort();
    let median = sorted[sorted.len() / 2];
    eprintln!(
        "failover: {} kills, median {median:?} (lease_duration {LEASE_DURATION:?} + retry_period {RETRY_PERIOD:?}); all: {took:?}",
        took.len()
    );
    for t in &took {
        // Measured from the kill; the Lease was renewed at most a retry
        // period before it. A loaded machine adds polling lag.
        assert!(
            *t <= LEASE_DURATION + RETRY_PERIOD + Duration::from_secs(1),
            "a failover took {t:?}: {took:?}"
        );
    }

    let config = leader.config.clone();
    assert!(leader.terminate().success());
    assert!(standby.terminate().success());
    let v = rollbot_with(&rig, &["audit", "verify"], &config);
    assert!(v.status.success(), "{}", text(&v));
    assert!(text(&v).contains("audit log intact"), "{}", text(&v));
    let export = rollbot_with(&rig, &["audit", "export"], &config);
    assert!(export.status.success(), "{}", text(&export));
    let entries: Vec<Value> = String::from_utf8_lossy(&export.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let outcomes = |corr: &str| -> Vec<String> {
        entries
            .iter()
            .filter(|e| e["correlation_id"] == corr)
            .map(|e| e["outcome"].as_str().unwrap_or("").to_string())
            .collect()
    };
    for c in &acknowledged {
        assert_eq!(outcomes(c), ["requested", "succeeded"], "{c}");
    }
    for c in &interrupted {
        assert_eq!(outcomes(c), ["requested", "interrupted"], "{c}");
    }
}
