//! rollbot's state in a real PostgreSQL (`[store] kind = "postgres"`): one
//! hash chain and one compare-and-swap for every replica sharing the
//! database, idempotency across them, `rollbot store copy` from sled with
//! the chain intact, and a database that goes away and comes back.

use crate::support::api::Api;
use crate::support::postgres::Postgres;
use crate::support::{in_process, rollbot, text, Server};
use rollbot::audit::{chain_hash, Entry, Outcome as AuditOutcome, Query, Record};
use rollbot::domain::{Action, Actor, Platform};
use rollbot::engine::{Request, Status};
use rollbot::store::{Committed, Store, Table, Tx};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

fn open(url: &str) -> Store {
    rollbot::store::postgres_store::open_store(url, Duration::from_secs(5)).unwrap()
}

fn record(service: &str, n: usize) -> Record {
    Record {
        time: chrono::Utc::now(),
        actor: Actor::new(Platform::Slack, "U0123ABCD", "Ada"),
        action: "rollback".into(),
        service: Some(service.into()),
        parameters: BTreeMap::from([("n".into(), serde_json::json!(n))]),
        outcome: AuditOutcome::Succeeded,
        reason: "test".into(),
        detail: String::new(),
        correlation_id: format!("c-{service}-{n}"),
        idempotency_key: None,
    }
}

/// A prompt asked on one replica (the old leader) is answered on the
/// other (the new one): the prompt lives in the shared store, and a second
/// answer on the first replica finds it answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_asked_on_one_replica_is_answered_on_the_other_once() {
    let pg = Postgres::start();
    let url = pg.create_database("prompts");
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let text = |dir: &Path| {
        config(dir, &url)
            .replace("backend = \"sim\"", "backend = \"sim\"\ncritical = true")
            + "\n[[roles.deployer]]\nmembers = [\"console:dev\"]\n\n[[roles.approver]]\nmembers = [\"console:lead\", \"console:lead2\"]\n"
    };
    let a = in_process::start(da.path(), &text(da.path()), vec![]).await;
    let b = in_process::start(db.path(), &text(db.path()), vec![]).await;
    let person = |id: &str| Actor::new(Platform::Console, id, id);
    let promote = Action::Promote {
        full: false,
        force: false,
    };
    let asked = a
        .engine
        .execute(Request::new(person("dev"), promote).service("checkout"))
        .await;
    assert_eq!(asked.status, Status::Pending, "{asked:?}");
    let prompt = asked.prompt.clone().expect("a prompt for a second person");

    let answered = b
        .engine
        .execute(Request::new(
            person("lead"),
            Action::Approve {
                prompt: prompt.clone(),
            },
        ))
        .await;
    assert_eq!(answered.status, Status::Succeeded, "{answered:?}");
    assert_eq!(b.simulated["sim"].count("checkout", "promote"), 1);

    let late = a
        .engine
        .execute(Request::new(person("lead2"), Action::Approve { prompt }))
        .await;
    assert_ne!(late.status, Status::Succeeded, "{late:?}");
    assert_eq!(a.simulated["sim"].count("checkout", "promote"), 0);
    assert_eq!(b.simulated["sim"].count("checkout", "promote"), 1);
    assert_eq!(a.engine.audit().verify().unwrap().first_bad, None);
}

/// Checks an exported log on its own: each entry's hash from its body as
/// the store hashes it, each linked to the one before.
fn check_export(lines: &str) -> usize {
    let mut prev = rollbot::audit::GENESIS_HASH.to_string();
    let mut n = 0;
    for (i, line) in lines.lines().enumerate() {
        let e: Entry = serde_json::from_str(line).unwrap();
        assert_eq!(e.seq, i as u64 + 1);
        assert_eq!(e.prev_hash, prev, "entry #{}", e.seq);
        #[derive(serde::Serialize)]
        struct Body<'a> {
            seq: u64,
            prev_hash: &'a str,
            record: &'a Record,
        }
        let body = serde_json::to_vec(&Body {
            seq: e.seq,
            prev_hash: &e.prev_hash,
            record: &e.record,
        })
        .unwrap();
        assert_eq!(
            hex::encode(chain_hash(&prev, &body)),
            e.hash,
            "entry #{}",
            e.seq
        );
        prev = e.hash;
        n += 1;
    }
    n
}

/// Two stores on one database (two replicas) appending at once: one
/// chain, every entry once, in the indexes, verified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_database_append_to_one_chain() {
    let pg = Postgres::start();
    let url = pg.create_database("chain");
    let (a, b) = (Arc::new(open(&url)), Arc::new(open(&url)));
    let mut tasks = Vec::new();
    for (store, service) in [(a.clone(), "checkout"), (b.clone(), "payments")] {
        for n in 0..40 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                if n % 4 == 0 {
                    store
                        .append_batch((0..5).map(|k| record(service, 100 * n + k)).collect())
                        .await
                        .unwrap();
                } else {
                    store.append(record(service, n)).await.unwrap();
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let total = 2 * (30 + 10 * 5);
    let report = b.audit_handle().verify().unwrap();
    assert_eq!(report.first_bad, None, "{report}");
    assert_eq!(report.checked, total);
    // Each sees the other's entries through the service index, newest first.
    let last = a
        .audit_query(Query {
            service: Some("payments".into()),
            limit: 50,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(last.len(), 50);
    assert!(last.windows(2).all(|w| w[0].seq > w[1].seq));
    assert!(last
        .iter()
        .all(|e| e.record.service.as_deref() == Some("payments")));
    let one = a
        .audit_query(Query {
            correlation_id: Some("c-checkout-7".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(a.audit_get(one[0].seq).await.unwrap().unwrap(), one[0]);
    // And its key writes.
    a.put(Table::Freezes, "prod/*", &"frozen").await.unwrap();
    assert_eq!(
        b.get::<String>(Table::Freezes, "prod/*")
            .await
            .unwrap()
            .as_deref(),
        Some("frozen")
    );

    // An edited entry is named by verify, as on sled.
    pg.sql(
        "chain",
        "UPDATE rollbot_audit SET body = overlay(body placing '\\x20'::bytea from 60 for 1) WHERE seq = 17",
    );
    let r = a.audit_handle().verify().unwrap();
    assert_eq!(r.first_bad.as_ref().map(|b| b.0), Some(17), "{r}");
}

/// A prompt answered from two replicas at once: exactly one answer wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compare_and_swap_has_one_winner_across_two_stores() {
    let pg = Postgres::start();
    let url = pg.create_database("cas");
    let stores = [Arc::new(open(&url)), Arc::new(open(&url))];
    for round in 0..5 {
        let key = format!("prompt-{round}");
        let tries: Vec<_> = (0..20)
            .map(|i| {
                let (store, key) = (stores[i % 2].clone(), key.clone());
                tokio::spawn(async move {
                    let tx = Tx::new()
                        .expect(Table::Prompts, &key, None)
                        .put(Table::Prompts, &key, &i)
                        .record(record("checkout", i));
                    matches!(store.commit(tx).await.unwrap(), Committed::Done(_))
                })
            })
            .collect();
        let mut won = 0;
        for t in tries {
            won += usize::from(t.await.unwrap());
        }
        assert_eq!(won, 1, "round {round}");
    }
    // Only the winners' entries were appended.
    assert_eq!(stores[1].audit_handle().verify().unwrap().checked, 5);
}

/// A replica that passed its own leadership check and then paused writes
/// nothing once a newer leader has written: the epoch (the Lease's
/// transitions) is checked inside the commit's transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_from_an_older_leadership_is_refused_after_a_newer_one_wrote() {
    let pg = Postgres::start();
    let url = pg.create_database("epoch");
    let (old, new) = (open(&url), open(&url));
    let at = |epoch: u64, n: usize| Tx {
        epoch: Some(epoch),
        ..Tx::new()
            .put(Table::Inflight, &format!("action-{n}"), &n)
            .record(record("checkout", n))
    };
    assert!(matches!(
        old.commit(at(3, 1)).await.unwrap(),
        Committed::Done(_)
    ));
    assert!(matches!(
        new.commit(at(4, 2)).await.unwrap(),
        Committed::Done(_)
    ));
    let e = old.commit(at(3, 3)).await.unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("newer leader") && msg.contains("transition 4"),
        "{msg}"
    );
    assert_eq!(
        new.get::<usize>(Table::Inflight, "action-3").await.unwrap(),
        None,
        "the stale commit's key write landed"
    );
    // The store stays healthy for the leader, and a write without an
    // election (a tool such as `rollbot store copy`) is not fenced.
    assert!(matches!(
        new.commit(at(4, 4)).await.unwrap(),
        Committed::Done(_)
    ));
    assert!(matches!(
        old.commit(Tx::new().record(record("checkout", 5)))
            .await
            .unwrap(),
        Committed::Done(_)
    ));
    let v = new.audit_handle().verify().unwrap();
    assert_eq!(v.checked, 4, "only the accepted entries are in the chain");
}

fn config(dir: &Path, url: &str) -> String {
    let file = dir.join("store-url");
    std::fs::write(&file, format!("{url}\n")).unwrap();
    format!(
        r#"
[store]
kind = "postgres"
url_file = "{}"
timeout = "3s"

[backends.sim]
type = "simulated"
history = {{ checkout = ["v1", "v2", "v3", "v4", "v5", "v6"] }}

[[services]]
name = "checkout"
backend = "sim"

[[roles.responder]]
members = ["console:responder"]
"#,
        file.display()
    )
}

fn rollback(key: &str) -> Request {
    Request::new(
        Actor::new(Platform::Console, "responder", "Ana Responder"),
        Action::Rollback {
            to: None,
            force: false,
        },
    )
    .service("checkout")
    .reason("error rate up")
    .idempotency_key(key)
}

/// A key used on one replica acts once when the request is repeated on
/// the other (a client retrying through another pod).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_acts_once_across_two_replicas() {
    let pg = Postgres::start();
    let url = pg.create_database("idem");
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = in_process::start(da.path(), &config(da.path(), &url), vec![]).await;
    let b = in_process::start(db.path(), &config(db.path(), &url), vec![]).await;
    let first = a.engine.execute(rollback("ci-42")).await;
    assert_eq!(first.status, Status::Succeeded, "{first:?}");
    let again = b.engine.execute(rollback("ci-42")).await;
    assert!(again.repeat, "{again:?}");
    assert_eq!(again.correlation_id, first.correlation_id);
    assert_eq!(a.simulated["sim"].count("checkout", "rollback"), 1);
    assert_eq!(b.simulated["sim"].count("checkout", "rollback"), 0);
    let r = b.engine.audit().verify().unwrap();
    assert_eq!(r.first_bad, None);
    let rollbacks = b
        .engine
        .audit()
        .query(&Query {
            service: Some("checkout".into()),
            ..Default::default()
        })
        .unwrap()
        .into_iter()
        .filter(|e| e.record.outcome == AuditOutcome::Succeeded)
        .count();
    assert_eq!(rollbacks, 1);
}

/// `rollbot store copy`: a sled store moves with its chain, its hashes and
/// every table; the exports of both are the same bytes; a second copy into
/// the now non-empty database is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_copy_moves_a_sled_store_with_its_chain() {
    let pg = Postgres::start();
    let url = pg.create_database("copy");
    let dir = tempfile::tempdir().unwrap();
    let sled_config = config(dir.path(), &url).replace("kind = \"postgres\"", "kind = \"sled\"");
    let sled_config = sled_config
        .lines()
        .filter(|l| !l.starts_with("url_file"))
        .collect::<Vec<_>>()
        .join("\n");
    {
        let rt = in_process::start(dir.path(), &sled_config, vec![]).await;
        for k in ["k1", "k2", "k3"] {
            assert_eq!(
                rt.engine.execute(rollback(k)).await.status,
                Status::Succeeded
            );
        }
    }
    let data = dir.path().join("data");
    let to = format!("postgres:{url}");
    let from = format!("sled:{}", data.display());
    let o = rollbot(&["store", "copy", "--from", &from, "--to", &to]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("chain verified"), "{}", text(&o));

    let sled_export = rollbot(&["audit", "export", "--data", data.to_str().unwrap()]);
    let pg_config = dir.path().join("pg.toml");
    std::fs::write(&pg_config, config(dir.path(), &url)).unwrap();
    let pg_export = rollbot(&["audit", "export", "--config", pg_config.to_str().unwrap()]);
    assert!(pg_export.status.success(), "{}", text(&pg_export));
    assert!(!sled_export.stdout.is_empty());
    assert_eq!(
        String::from_utf8_lossy(&pg_export.stdout),
        String::from_utf8_lossy(&sled_export.stdout)
    );
    let n = check_export(&String::from_utf8_lossy(&pg_export.stdout));
    let v = rollbot(&["audit", "verify", "--config", pg_config.to_str().unwrap()]);
    assert!(v.status.success(), "{}", text(&v));
    assert!(
        text(&v).contains(&format!("audit log intact: {n} entries")),
        "{}",
        text(&v)
    );
    // Every table came along: the idempotency keys answer on PostgreSQL.
    let rt = in_process::start(dir.path(), &config(dir.path(), &url), vec![]).await;
    let again = rt.engine.execute(rollback("k2")).await;
    assert!(again.repeat, "{again:?}");
    assert_eq!(rt.simulated["sim"].count("checkout", "rollback"), 0);
    drop(rt);

    let o = rollbot(&["store", "copy", "--from", &from, "--to", &to]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("only fills an empty database, so nothing was copied"),
        "{}",
        text(&o)
    );
    assert!(
        !text(&o).contains(&url),
        "the URL is not printed: {}",
        text(&o)
    );
}

const SERVE: &str = r#"
[server]
listen = "127.0.0.1:{port}"

[store]
kind = "postgres"
url = "${ROLLBOT_TEST_STORE_URL}"
timeout = "2s"

[backends.sim]
type = "simulated"
history = { checkout = ["v1", "v2", "v3", "v4", "v5", "v6"] }

[[services]]
name = "checkout"
backend = "sim"

[[roles.responder]]
members = ["api:ci"]

[[api.clients]]
name = "ci"
token = "${ROLLBOT_TEST_TOKEN}"
"#;

/// The database stops: `/readyz` says so, actions are refused with a clear
/// message and leave nothing half done; when it is back, rollbot
/// reconnects by itself and acts again, and the chain verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_going_away_refuses_actions_until_it_is_back() {
    let mut pg = Postgres::start();
    let url = pg.create_database("outage");
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_async(
        dir.path(),
        SERVE,
        &[
            ("ROLLBOT_TEST_STORE_URL", &url),
            ("ROLLBOT_TEST_TOKEN", "t0k"),
        ],
    )
    .await;
    let api = Api::new(&s, "t0k");
    s.wait_readyz(true, Duration::from_secs(10)).await;
    let (code, body) = api.action("/rollback checkout first", Some("a1")).await;
    assert_eq!(code, 200, "{body}");

    tokio::task::block_in_place(|| pg.stop());
    let down = s.wait_readyz(false, Duration::from_secs(10)).await.1;
    assert!(down.contains("store unreachable"), "{down}");
    assert!(down.contains("127.0.0.1"), "{down}");
    assert!(!down.contains(&url), "the URL is not shown: {down}");
    let v: serde_json::Value = serde_json::from_str(&down).unwrap();
    assert_eq!(v["store"]["state"], "unreachable", "{down}");
    let (code, body) = api.action("/rollback checkout second", Some("a2")).await;
    assert_eq!(code, 503, "{body}");
    let said = body["message"]["text"].as_str().unwrap_or_default();
    assert!(
        said.contains("did not record the request") && said.contains("no backend was asked to act"),
        "{body}"
    );

    tokio::task::block_in_place(|| pg.resume());
    let up = s.wait_readyz(true, Duration::from_secs(15)).await.1;
    let v: serde_json::Value = serde_json::from_str(&up).unwrap();
    assert_eq!(v["store"]["state"], "ok", "{up}");
    assert!(v["summary"].as_str().unwrap().starts_with("ready"), "{up}");
    let (code, body) = api.action("/rollback checkout third", Some("a3")).await;
    assert_eq!(code, 200, "{body}");
    assert!(s.terminate().success());

    // The config names the URL through the environment.
    let o = std::process::Command::new(crate::support::bin())
        .args(["audit", "export", "--config"])
        .arg(dir.path().join("rollbot.toml"))
        .env("ROLLBOT_TEST_STORE_URL", &url)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    check_export(&out);
    let entries: Vec<Entry> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let steps: Vec<(String, &str)> = entries
        .iter()
        .map(|e| (e.record.reason.clone(), e.record.outcome.name()))
        .collect();
    // The refused request left no entry; the others are whole.
    assert_eq!(
        steps,
        vec![
            ("first".to_string(), "requested"),
            ("first".to_string(), "succeeded"),
            ("third".to_string(), "requested"),
            ("third".to_string(), "succeeded"),
        ]
    );
}
