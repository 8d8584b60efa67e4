//! rollbot must keep answering when many actions arrive at once (the moment
//! many rollbacks happen together is an incident), when the asker goes
//! away mid-action, and when its store is damaged or its disk full.

use crate::support::api::Api;
use crate::support::{audit_export, rollbot, text, Server};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

pub(crate) const TOKEN: &str = "load-token-77c1";

/// Ten services on an `exec` backend whose program takes `sleep` seconds
/// and counts its runs in `{data}-runs`.
pub(crate) fn exec_config(services: usize, sleep: &str) -> String {
    let mut c = format!(
        r##"
[server]
listen = "127.0.0.1:{{port}}"

[store]
path = "{{data}}"

[backends.script]
type = "exec"
program = "sh"
args = ["-c", "sleep {sleep}; echo \"$ROLLBOT_SERVICE $ROLLBOT_CORRELATION_ID\" >> \"$RUNS\"; echo rolled back $ROLLBOT_SERVICE"]
env = ["PATH", "RUNS"]
timeout = "60s"

[[roles.responder]]
members = ["api:ci"]

[[api.clients]]
name = "ci"
token = "${{ROLLBOT_TEST_TOKEN}}"
"##
    );
    for i in 0..services {
        c.push_str(&format!(
            "\n[[services]]\nname = \"svc{i:02}\"\nbackend = \"script\"\n"
        ));
    }
    c
}

pub(crate) fn start_exec(dir: &std::path::Path, services: usize, sleep: &str) -> Server {
    let runs = dir.join("runs");
    Server::start(
        dir,
        &exec_config(services, sleep),
        &[
            ("ROLLBOT_TEST_TOKEN", TOKEN),
            ("RUNS", runs.to_str().unwrap()),
        ],
    )
}

/// `/rollback SERVICE load test` with idempotency key `key`; a call that
/// gets no answer (a timeout, a closed connection) is an error.
async fn rollback(api: &Api, service: &str, key: &str) -> Result<(u16, Value), String> {
    api.try_action(&format!("/rollback {service} load test"), Some(key))
        .await
}

/// Every `requested` entry has an end, and the chain verifies.
pub(crate) fn assert_every_request_ended(data: &std::path::Path) -> Vec<Value> {
    let entries = audit_export(data);
    let mut open: BTreeMap<(String, String), u64> = BTreeMap::new();
    for e in &entries {
        let key = (
            e["correlation_id"].as_str().unwrap_or_default().to_string(),
            e["action"].as_str().unwrap_or_default().to_string(),
        );
        match e["outcome"].as_str().unwrap_or_default() {
            "requested" => {
                open.insert(key, e["seq"].as_u64().unwrap_or_default());
            }
            "noted" => {}
            _ => {
                open.remove(&key);
            }
        }
    }
    assert!(open.is_empty(), "requests without a result: {open:?}");
    let v = rollbot(&["audit", "verify", "--data", data.to_str().unwrap()]);
    assert!(v.status.success(), "{}", text(&v));
    entries
}

/// 50 trials of 50 concurrent rollbacks over 10 services: no request may
/// hang, `/healthz` answers between trials, every action's result is
/// audited and the chain verifies. (sled 0.34 once deadlocked here in 5 of
/// 12 trials.)
#[tokio::test]
async fn fifty_trials_of_fifty_concurrent_rollbacks_never_hang() {
    const TRIALS: usize = 50;
    const CONCURRENT: usize = 50;
    let dir = tempfile::tempdir().unwrap();
    let s = start_exec(dir.path(), 10, "0.15");
    let api = Api::new(&s, TOKEN).timeout(Duration::from_secs(60));
    let mut hung = 0;
    let mut slowest = Vec::new();
    let t0 = Instant::now();
    for trial in 0..TRIALS {
        let started = Instant::now();
        let calls: Vec<_> = (0..CONCURRENT)
            .map(|i| {
                let (api, key) = (api.clone(), format!("t{trial}-{i}"));
                tokio::spawn(async move {
                    let t = Instant::now();
                    let r = rollback(&api, &format!("svc{:02}", i % 10), &key).await;
                    (r.map(|(code, _)| code), t.elapsed())
                })
            })
            .collect();
        let mut worst = Duration::ZERO;
        for call in calls {
            let (r, took) = call.await.unwrap();
            worst = worst.max(took);
            match r {
                Ok(code) => assert!(code == 200 || code == 409, "trial {trial}: HTTP {code}"),
                Err(e) => {
                    hung += 1;
                    eprintln!("trial {trial}: a request failed: {e}");
                }
            }
        }
        slowest.push(worst);
        let health = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap()
            .get(s.url("/healthz"))
            .send()
            .await;
        assert!(
            health.is_ok(),
            "trial {trial}: /healthz did not answer after {:?}",
            started.elapsed()
        );
    }
    slowest.sort();
    eprintln!(
        "never_hang: {TRIALS} trials x {CONCURRENT} concurrent rollbacks in {:.1}s; hung requests {hung}; slowest request per trial: median {:?}, max {:?}",
        t0.elapsed().as_secs_f64(),
        slowest[TRIALS / 2],
        slowest[TRIALS - 1]
    );
    assert_eq!(hung, 0, "no request may hang");
    let data = dir.path().join("data");
    assert!(s.terminate().success());
    let entries = assert_every_request_ended(&data);
    let results = entries
        .iter()
        .filter(|e| {
            e["action"] == "rollback"
                && matches!(
                    e["outcome"].as_str(),
                    Some("succeeded" | "failed" | "refused")
                )
        })
        .count();
    assert_eq!(results, TRIALS * CONCURRENT, "one result per request");
    let runs = std::fs::read_to_string(dir.path().join("runs")).unwrap_or_default();
    let succeeded = entries
        .iter()
        .filter(|e| e["action"] == "rollback" && e["outcome"] == "succeeded")
        .count();
    assert_eq!(
        runs.lines().count(),
        succeeded,
        "the program ran once per succeeded rollback"
    );
}

/// Closing the connection mid-action does not cut the action: it runs to its
/// end and is audited, and a retry with the same key gets its outcome
/// without running the program again.
#[tokio::test]
async fn an_action_outlives_the_request_that_asked_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_exec(dir.path(), 1, "2.5");
    // The client gives up (closes the connection) 0.8 s in.
    let gone = rollback(
        &Api::new(&s, TOKEN).timeout(Duration::from_millis(800)),
        "svc00",
        "key-1",
    )
    .await;
    assert!(gone.is_err(), "{gone:?}");
    // A retry while it runs waits for the first outcome.
    let (code, body) = rollback(&Api::new(&s, TOKEN), "svc00", "key-1")
        .await
        .unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["repeat"], true, "{body}");
    assert_eq!(body["status"], "succeeded", "{body}");
    // And after it ended.
    let (code, again) = rollback(&Api::new(&s, TOKEN), "svc00", "key-1")
        .await
        .unwrap();
    assert_eq!(code, 200);
    assert_eq!(again["correlation_id"], body["correlation_id"]);
    let data = dir.path().join("data");
    assert!(s.terminate().success());
    let runs = std::fs::read_to_string(dir.path().join("runs")).unwrap();
    assert_eq!(runs.lines().count(), 1, "the program ran once: {runs}");
    let entries = assert_every_request_ended(&data);
    let outcomes: Vec<&str> = entries
        .iter()
        .filter(|e| e["action"] == "rollback")
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["requested", "succeeded"]);
    // Nothing left in flight: the next start reports nothing.
    let again = Server::start_existing(
        &dir.path().join("rollbot.toml"),
        crate::support::free_port_for(&dir.path().join("rollbot.toml")),
        &[("ROLLBOT_TEST_TOKEN", TOKEN), ("RUNS", "/dev/null")],
    );
    assert!(again.terminate().success());
    assert!(!audit_export(&data)
        .iter()
        .any(|e| e["outcome"] == "interrupted"));
}

/// A key reused for another command is refused with 409 naming the first
/// command; nothing of the second is done.
#[tokio::test]
async fn an_idempotency_key_reused_for_another_command_is_a_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_exec(dir.path(), 2, "0");
    let api = Api::new(&s, TOKEN);
    let (code, _) = rollback(&api, "svc00", "deploy-77").await.unwrap();
    assert_eq!(code, 200);
    let (code, body) = rollback(&api, "svc01", "deploy-77").await.unwrap();
    assert_eq!(code, 409, "{body}");
    let said = body["message"]["text"].as_str().unwrap_or_default();
    assert!(said.contains("/rollback svc00"), "{body}");
    assert_eq!(body["status"], "refused");
    let _data = dir.path().join("data");
    assert!(s.terminate().success());
    let runs = std::fs::read_to_string(dir.path().join("runs")).unwrap();
    assert_eq!(runs.lines().collect::<BTreeSet<_>>().len(), 1);
    assert!(runs.starts_with("svc00 "), "{runs}");
}

/// A store with `n` rollbacks, written by `rollbot serve`.
fn store_with_rollbacks(dir: &std::path::Path, n: usize) -> std::path::PathBuf {
    let rt = tokio::runtime::Handle::current();
    let s = start_exec(dir, 1, "0");
    let api = Api::new(&s, TOKEN);
    tokio::task::block_in_place(|| {
        rt.block_on(async {
            for i in 0..n {
                let (code, body) = rollback(&api, "svc00", &format!("k{i}")).await.unwrap();
                assert_eq!(code, 200, "{body}");
            }
        })
    });
    assert!(s.terminate().success());
    dir.join("data")
}

/// A store cut short (a disk that lost the end of the file) is never read
/// as if it were fine: either it cannot be opened and says so, naming the
/// directory and what to do, or it opens and its lost entries are found.
/// Never a panic from inside the storage engine.
#[tokio::test(flavor = "multi_thread")]
async fn a_truncated_store_is_a_clear_error_or_a_detected_loss_never_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let data = store_with_rollbacks(dir.path(), 150);
    let mut opened = 0;
    for pct in [50, 60, 70, 80, 90, 95] {
        let copy = crate::audit_cli::fresh_copy(&data, dir.path(), &format!("cut{pct}"));
        let db = copy.join("db");
        let len = std::fs::metadata(&db).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&db)
            .unwrap()
            .set_len(len * pct / 100)
            .unwrap();
        let o = rollbot(&["audit", "verify", "--data", copy.to_str().unwrap()]);
        let out = text(&o);
        assert!(!out.contains("panicked"), "{pct}%: {out}");
        assert!(!o.status.success(), "{pct}%: a cut store verified: {out}");
        if out.contains("is damaged") {
            assert!(
                out.contains(copy.to_str().unwrap())
                    && out.contains("Restore the directory from a backup"),
                "{out}"
            );
        } else {
            opened += 1;
            assert!(out.contains("lost its last"), "{pct}%: {out}");
        }
    }
    eprintln!("truncated stores that still opened (loss detected): {opened} of 6");
}

/// An edited entry (a flipped bit that sled's own checks let through): the
/// server starts, says so in `/readyz`, its log and the deploy channel, and
/// refuses every action, running nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_store_is_reported_and_refuses_actions() {
    let dir = tempfile::tempdir().unwrap();
    let data = store_with_rollbacks(dir.path(), 3);
    crate::audit_cli::tamper(&data, |tree| {
        let k = crate::audit_cli::entry_key(2);
        let mut v = tree.get(&k).unwrap().unwrap().to_vec();
        let i = v.len() - 10;
        v[i] ^= 0x01;
        tree.insert(k, v).unwrap();
    });
    std::fs::write(dir.path().join("runs"), "").unwrap();
    let config = dir.path().join("rollbot.toml");
    let mut text_cfg = std::fs::read_to_string(&config).unwrap();
    text_cfg.push_str("\n[channels.deploys]\nconsole = \"#deploys\"\n");
    text_cfg = text_cfg.replace(
        "name = \"svc00\"\nbackend = \"script\"\n",
        "name = \"svc00\"\nbackend = \"script\"\ndeploy_channel = \"deploys\"\n",
    );
    std::fs::write(&config, text_cfg).unwrap();
    let runs = dir.path().join("runs");
    let s = Server::start_existing(
        &config,
        crate::support::free_port_for(&config),
        &[
            ("ROLLBOT_TEST_TOKEN", TOKEN),
            ("RUNS", runs.to_str().unwrap()),
        ],
    );
    let api = Api::new(&s, TOKEN);
    let (code, ready) = s.get("/readyz").await;
    assert_eq!(code, 503);
    assert!(
        ready.contains("store damaged: audit log entry #2"),
        "{ready}"
    );
    let (_, body) = rollback(&api, "svc00", "after-damage").await.unwrap();
    assert_eq!(body["status"], "refused", "{body}");
    assert!(
        body["message"]["title"]
            .as_str()
            .unwrap()
            .contains("store is damaged"),
        "{body}"
    );
    let log = s.log.clone();
    assert!(s.terminate().success());
    assert_eq!(std::fs::read_to_string(&runs).unwrap(), "", "nothing ran");
    let log = std::fs::read_to_string(log).unwrap();
    assert!(log.contains("failed its integrity check"), "{log}");
    assert!(
        log.contains("rollbot's store is damaged: actions are refused"),
        "the deploy channel is told: {log}"
    );
}

/// A small file system of its own (tmpfs), unmounted on drop.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(at: &std::path::Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(at).unwrap();
        let o = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "tmpfs",
                at.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "mounting a tmpfs needs root: {}",
            text(&o)
        );
        SmallDisk(at.to_path_buf())
    }

    /// Writes a file until the disk is full.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let filler = self.0.join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 * 1024];
        // Bounded: a tmpfs of a few MiB fills long before this.
        for _ in 0..10_000 {
            if f.write_all(&block).is_err() {
                break;
            }
        }
        let _ = f.sync_all();
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// A full disk: actions get a clear answer (never a hang), no request is
/// left without an end once space is back, and `audit verify` reads the
/// store while the disk is still full.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_loses_nothing_acknowledged_and_leaves_no_request_without_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let disk = SmallDisk::mount(&dir.path().join("small"), "4m");
    let config = exec_config(2, "0").replace("{data}", &disk.0.join("data").display().to_string());
    let s = Server::start(
        dir.path(),
        &config,
        &[
            ("ROLLBOT_TEST_TOKEN", TOKEN),
            ("RUNS", dir.path().join("runs").to_str().unwrap()),
        ],
    );
    let api = Api::new(&s, TOKEN);
    let mut acknowledged = Vec::new();
    for i in 0..5 {
        let (code, body) = rollback(&api, "svc00", &format!("before-{i}"))
            .await
            .unwrap();
        assert_eq!(code, 200, "{body}");
        acknowledged.push(body["correlation_id"].as_str().unwrap().to_string());
    }
    let filler = disk.fill();
    let mut answered = 0;
    for i in 0..20 {
        // Every call answers within the client's limit, one way or another.
        let (code, body) = rollback(&api, "svc01", &format!("full-{i}"))
            .await
            .expect("an answer, not a hang");
        answered += 1;
        eprintln!(
            "disk full, rollback {i}: {code} {}",
            body["message"]["title"]
        );
        if code == 200 && body["status"] == "succeeded" {
            acknowledged.push(body["correlation_id"].as_str().unwrap().to_string());
        } else {
            let said = body.to_string();
            assert!(said.contains("store"), "a failure names the store: {said}");
        }
    }
    assert_eq!(answered, 20);
    s.kill();
    // Read-only tools work while the disk is full.
    let data = disk.0.join("data");
    let v = rollbot(&["audit", "verify", "--data", data.to_str().unwrap()]);
    let out = text(&v);
    assert!(v.status.success(), "{out}");
    assert!(out.contains("reading a copy"), "{out}");
    std::fs::remove_file(filler).unwrap();
    // Space is back: the next start closes what was left open.
    let path = dir.path().join("rollbot.toml");
    let again = Server::start_existing(
        &path,
        crate::support::free_port_for(&path),
        &[("ROLLBOT_TEST_TOKEN", TOKEN), ("RUNS", "/dev/null")],
    );
    assert!(again.terminate().success());
    let entries = assert_every_request_ended(&data);
    for corr in &acknowledged {
        assert!(
            entries
                .iter()
                .any(|e| e["correlation_id"] == corr.as_str() && e["outcome"] == "succeeded"),
            "acknowledged rollback {corr} was kept"
        );
    }
    drop(disk);
}
