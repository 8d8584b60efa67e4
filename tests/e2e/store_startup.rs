//! rollbot starts while its PostgreSQL database is not there yet (a
//! database restarting with it, a network not up yet): it serves, says in
//! `/readyz` that the store is unreachable and where (never the password)
//! and that it reconnects, refuses actions with the store-down message,
//! and acts once the database answers, without a restart.

use crate::support::api::Api;
use crate::support::postgres::Postgres;
use crate::support::Server;
use serde_json::Value;
use std::time::Duration;

const SERVE: &str = r#"
[server]
listen = "127.0.0.1:{port}"

[store]
kind = "postgres"
url = "${ROLLBOT_TEST_STORE_URL}"
timeout = "2s"

[backends.sim]
type = "simulated"
history = { checkout = ["v1", "v2", "v3"] }

[[services]]
name = "checkout"
backend = "sim"

[[roles.responder]]
members = ["api:ci"]

[[api.clients]]
name = "ci"
token = "${ROLLBOT_TEST_TOKEN}"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_starts_without_its_database_and_acts_once_it_answers() {
    let mut pg = tokio::task::block_in_place(Postgres::start);
    tokio::task::block_in_place(|| pg.create_database("late"));
    // Trust authentication ignores the password; it must never be shown.
    let url = pg
        .url("late")
        .replacen("postgres://rollbot@", "postgres://rollbot:s3cr3t-pw@", 1);
    let port = url
        .rsplit(':')
        .next()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    tokio::task::block_in_place(|| pg.stop());

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
    let (code, body) = s.get("/readyz").await;
    assert_eq!(code, 503, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["store"]["state"], "unreachable", "{body}");
    assert!(body.contains("store unreachable"), "{body}");
    assert!(body.contains(&format!("127.0.0.1:{port}/late")), "{body}");
    assert!(body.contains("reconnects by itself"), "{body}");
    assert!(!body.contains("s3cr3t-pw"), "the password is shown: {body}");

    let api = Api::new(&s, "t0k");
    let (code, refused) = api.action("/rollback checkout early", None).await;
    assert_eq!(code, 503, "{refused}");
    let said = refused["message"]["text"].as_str().unwrap_or_default();
    assert!(
        said.contains("did not record the request") && said.contains("no backend was asked to act"),
        "{refused}"
    );

    tokio::task::block_in_place(|| pg.resume());
    let (took, up) = s.wait_readyz(true, Duration::from_secs(30)).await;
    eprintln!("store_startup: ready {took:?} after PostgreSQL came up");
    let v: Value = serde_json::from_str(&up).unwrap();
    assert_eq!(v["store"]["state"], "ok", "{up}");
    let (code, done) = api.action("/rollback checkout now", None).await;
    assert_eq!(code, 200, "{done}");
    assert_eq!(done["status"], "succeeded", "{done}");
    assert!(s.terminate().success());
}
