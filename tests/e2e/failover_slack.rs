//! A prompt answered in Slack across a failover: two `rollbot serve`
//! replicas share one PostgreSQL store and one Lease on the test Kubernetes
//! API server, each labelling its pod when it leads (`label_pod`), and
//! Slack's requests reach the pod the Service selects: the one labelled
//! leader that is Ready. Leader A judges a borderline canary from
//! Prometheus' history and posts Approve / Roll back in the fake Slack;
//! A is killed (SIGKILL); B takes the Lease and receives the press. B acts
//! once, updates the prompt's message, the audit log has one decision, and
//! Slack's retry and a second press act never.

use crate::support::api::Api;
use crate::support::fake_kube::FakeKube;
use crate::support::fake_slack::{self, FakeSlack, Posted};
use crate::support::postgres::Postgres;
use crate::support::prometheus::{openmetrics, Prometheus};
use crate::support::{text, Server};
use rollbot::judge::sim::{Scenario, Simulator};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const API_TOKEN: &str = "api-token-51c0";
const DEPLOYS: &str = "C0DEPLOYS";
const APPROVER: &str = "U0APPR";

/// Replica `identity` on the shared store, electing on `kube` and
/// labelling its pod; checkout is judged from `prom` and acted on by a
/// program that logs each run with the replica's name.
fn config(identity: &str, kube: &str, prom: &str, slack: &str) -> String {
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
api_server = "{kube}"
lease_duration = "3s"
renew_deadline = "2s"
retry_period = "250ms"
label_pod = true

[metrics]
source = "prometheus"
url = "{prom}"
interval = "10s"

[channels.deploys]
slack = "{DEPLOYS}"

[backends.script]
type = "exec"
program = "sh"
args = ['-c', 'echo "$ROLLBOT_ACTION $REPLICA $ROLLBOT_CORRELATION_ID" >> "$RUNS"']
env = ["PATH", "REPLICA", "RUNS"]
supports = ["pause", "resume"]
timeout = "20s"

[[services]]
name = "checkout"
backend = "script"
deploy_channel = "deploys"

# The canary is significantly worse but never sustained long enough to be
# failing, and no score rolls it back: the judge asks.
[services.judge]
sustained_for = "1h"
rollback_below = 0

[[roles.approver]]
members = ["slack:{APPROVER}"]

[[roles.deployer]]
members = ["api:ci"]

[[api.clients]]
name = "ci"
token = "${{ROLLBOT_TEST_API_TOKEN}}"

[chat.slack]
mode = "http"
api_url = "{slack}"
signing_secret = "${{SLACK_SIGNING_SECRET}}"
bot_token = "${{SLACK_BOT_TOKEN}}"
channel_interval = "200ms"
"#
    )
}

struct Rig {
    dir: tempfile::TempDir,
    runs: PathBuf,
    url: String,
    kube: FakeKube,
    prom: String,
    slack: FakeSlack,
    http: reqwest::Client,
}

impl Rig {
    fn env(&self, identity: &str) -> Vec<(&'static str, String)> {
        vec![
            ("ROLLBOT_TEST_STORE_URL", self.url.clone()),
            ("ROLLBOT_TEST_API_TOKEN", API_TOKEN.to_string()),
            ("RUNS", self.runs.display().to_string()),
            ("REPLICA", identity.to_string()),
            ("POD_NAME", format!("{identity}-pod")),
            ("POD_NAMESPACE", "rollbot".to_string()),
            (
                "SLACK_SIGNING_SECRET",
                fake_slack::SIGNING_SECRET.to_string(),
            ),
            ("SLACK_BOT_TOKEN", fake_slack::BOT_TOKEN.to_string()),
        ]
    }

    /// Starts replica `identity` in a pod of its own.
    async fn replica(&self, identity: &str) -> Server {
        self.kube.create(
            "pods",
            "rollbot",
            json!({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": format!("{identity}-pod"), "namespace": "rollbot",
                                "labels": {"app.kubernetes.io/name": "rollbot"}},
                   "spec": {"containers": [{"name": "rollbot", "image": "rollbot"}]}}),
        );
        let d = self.dir.path().join(identity);
        std::fs::create_dir_all(&d).unwrap();
        let env = self.env(identity);
        let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        env.push((
            "ROLLBOT_LOG",
            "warn,rollbot::controller=info,rollbot::chat=info",
        ));
        let config = config(
            identity,
            &self.kube.url(),
            &self.prom,
            &self.slack.api_url(),
        );
        Server::start_async(&d, &config, &env).await
    }

    /// The program's runs as (action, replica).
    fn runs(&self) -> Vec<(String, String)> {
        std::fs::read_to_string(&self.runs)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let mut f = l.split(' ').map(str::to_string);
                (f.next().unwrap_or_default(), f.next().unwrap_or_default())
            })
            .collect()
    }

    fn count(&self, action: &str) -> usize {
        self.runs().iter().filter(|r| r.0 == action).count()
    }

    /// Where the Service sends Slack's requests: the live replicas whose
    /// pod carries the leader label and whose `/readyz` answers 200.
    async fn endpoints<'a>(&self, live: &[(&str, &'a Server)]) -> Vec<&'a Server> {
        let mut out = Vec::new();
        for (identity, server) in live {
            let pod = self
                .kube
                .get("pods", "rollbot", &format!("{identity}-pod"))
                .unwrap();
            if pod["metadata"]["labels"]["rollbot.dev/role"] != "leader" {
                continue;
            }
            let ready = self
                .http
                .get(server.url("/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if ready {
                out.push(*server);
            }
        }
        out
    }

    /// Slack delivers `approver`'s press of `action_id` on `message`
    /// (signed now; `retry` adds Slack's retry headers): the status.
    async fn press(
        &self,
        to: &Server,
        message: &Posted,
        action_id: &str,
        trigger: &str,
        retry: bool,
    ) -> u16 {
        let payload = fake_slack::press_payload(
            APPROVER,
            DEPLOYS,
            message,
            action_id,
            trigger,
            &self.slack.response_url(trigger),
        );
        let body = serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap();
        let ts = fake_slack::now() + i64::from(retry);
        let mut req = self
            .http
            .post(to.url("/slack/interactions"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-slack-request-timestamp", ts.to_string())
            .header(
                "x-slack-signature",
                fake_slack::sign(fake_slack::SIGNING_SECRET, ts, &body),
            );
        if retry {
            req = req
                .header("x-slack-retry-num", "1")
                .header("x-slack-retry-reason", "http_timeout");
        }
        req.body(body).send().await.unwrap().status().as_u16()
    }
}

/// Checkout's history from `start`: eight minutes of a canary with three
/// times the baseline's errors, then nothing (the metrics end).
fn history(start: i64) -> String {
    let mut sim = Simulator::new(
        &Scenario::new("bad", false).canary_share(0.05).errors(3.0),
        5,
    );
    let ticks: Vec<_> = (0..48).filter_map(|_| sim.next_tick()).collect();
    openmetrics("checkout", start, &ticks)
}

/// The messages with prompt buttons ever posted in the deploy channel.
fn prompts(slack: &FakeSlack) -> Vec<Posted> {
    slack
        .messages(DEPLOYS)
        .into_iter()
        .filter(|m| {
            m.buttons().iter().any(|b| b.ends_with(":approve"))
                || m.blocks.to_string().contains(":approve")
        })
        .collect()
}

/// Waits (bounded) until `cond` holds.
async fn until(what: &str, within: Duration, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond().await {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn audit(rig: &Rig, config: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = std::process::Command::new(crate::support::bin());
    cmd.args(args).arg("--config").arg(config);
    for (k, v) in rig.env("check") {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_posted_by_a_killed_leader_is_answered_once_in_slack_on_the_new_leader() {
    let pg = tokio::task::block_in_place(Postgres::start);
    let url = tokio::task::block_in_place(|| pg.create_database("failover_slack"));
    let dir = tempfile::tempdir().unwrap();
    // A rollout that started ten minutes ago, on the 10 s grid.
    let start = (chrono::Utc::now().timestamp() - 600) / 10 * 10;
    let prom = Prometheus::with_history(&dir.path().join("prom"), &history(start));
    let slack = FakeSlack::start().await;
    slack.add_channel(DEPLOYS, true);
    let rig = Rig {
        runs: dir.path().join("runs.log"),
        url,
        kube: FakeKube::standard().await,
        prom: prom.url(),
        slack,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap(),
        dir,
    };
    let a = rig.replica("rollbot-a").await;
    a.wait_readyz(true, Duration::from_secs(10)).await;
    let b = rig.replica("rollbot-b").await;
    until(
        "A alone is the Service's endpoint",
        Duration::from_secs(10),
        async || {
            rig.endpoints(&[("rollbot-a", &a), ("rollbot-b", &b)])
                .await
                .len()
                == 1
        },
    )
    .await;

    // Announced to the leader after the standby started: A pauses the
    // borderline canary and asks in the summary's thread.
    let start_at = chrono::DateTime::from_timestamp(start, 0).unwrap();
    Api::new(&a, API_TOKEN)
        .announce("checkout", "v41", "v42", start_at)
        .await;
    let prompt = rig
        .slack
        .wait_for(40, "A's borderline prompt", |f| {
            prompts(f).into_iter().next()
        })
        .await;
    assert!(
        prompt.current_text().contains("borderline"),
        "{}",
        prompt.current_text()
    );
    let approve = prompt.button(":approve");
    assert_eq!(rig.count("pause"), 1, "{:?}", rig.runs());

    a.kill();
    let killed = Instant::now();
    let mut new = Vec::new();
    until(
        "B alone is the Service's endpoint",
        Duration::from_secs(15),
        async || {
            new = rig.endpoints(&[("rollbot-b", &b)]).await;
            new.len() == 1
        },
    )
    .await;
    let b_url = new[0].url("/");
    assert_eq!(b_url, b.url("/"));

    // Slack delivers the press to B.
    assert_eq!(
        rig.press(&b, &prompt, &approve, "trig-fo-1", false).await,
        200
    );
    let answered = rig
        .slack
        .wait_for(20, "the prompt updated by B", |f| {
            f.messages(DEPLOYS)
                .into_iter()
                .find(|m| m.ts == prompt.ts && !m.updates.is_empty())
        })
        .await;
    assert!(answered.buttons().is_empty(), "buttons removed");
    assert!(
        answered.current_text().contains("Approve by <@U0APPR>"),
        "{}",
        answered.current_text()
    );
    until(
        "B resumes the canary",
        Duration::from_secs(20),
        async || rig.count("resume") == 1,
    )
    .await;
    assert_eq!(
        rig.runs()
            .iter()
            .filter(|r| r.0 == "resume")
            .map(|r| r.1.as_str())
            .collect::<Vec<_>>(),
        ["rollbot-b"]
    );

    // Slack retries the press, and the approver presses again: neither acts.
    assert_eq!(
        rig.press(&b, &prompt, &approve, "trig-fo-1", true).await,
        200
    );
    assert_eq!(
        rig.press(&b, &prompt, &approve, "trig-fo-2", false).await,
        200
    );
    rig.slack
        .ephemeral(15, "already answered", APPROVER, "Already answered")
        .await;
    // B watches the rollout the old leader announced after B started (its
    // summary goes on), without asking the same question a second time or
    // pausing again.
    rig.slack
        .wait_for(30, "B's summary of the rollout", |f| {
            f.messages(DEPLOYS).into_iter().find(|m| {
                m.at > killed && m.thread_ts.is_none() && m.text.contains("Canary checkout v42")
            })
        })
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(rig.count("resume"), 1, "{:?}", rig.runs());
    assert_eq!(rig.count("pause"), 1, "{:?}", rig.runs());
    assert_eq!(prompts(&rig.slack).len(), 1, "one prompt for one decision");
    let now = rig
        .slack
        .messages(DEPLOYS)
        .into_iter()
        .find(|m| m.ts == prompt.ts)
        .unwrap();
    assert_eq!(now.updates.len(), 1, "the prompt is updated once");

    let config = b.config.clone();
    assert!(b.terminate().success());
    let v = audit(&rig, &config, &["audit", "verify"]);
    assert!(text(&v).contains("audit log intact"), "{}", text(&v));
    let export = audit(&rig, &config, &["audit", "export"]);
    assert!(export.status.success(), "{}", text(&export));
    let entries: Vec<Value> = String::from_utf8_lossy(&export.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // One decision (the approval) and its resume, requested and succeeded
    // once; the second press was refused without an entry.
    let by_approver: Vec<(String, String)> = entries
        .iter()
        .filter(|e| e["actor"]["id"] == APPROVER)
        .map(|e| {
            (
                e["action"].as_str().unwrap_or("").to_string(),
                e["outcome"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        by_approver,
        [
            ("approve", "succeeded"),
            ("resume", "requested"),
            ("resume", "succeeded")
        ]
        .map(|(a, o)| (a.to_string(), o.to_string())),
        "{entries:#?}"
    );
}
