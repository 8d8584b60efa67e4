//! The Unleash backend against a real Unleash server (see
//! `support::unleash`), driven through the engine the way `rollbot serve`
//! builds it. Each test uses its own flags, so they share one server.

use crate::support::api::Api;
use crate::support::in_process::{self, result_entry};
use crate::support::unleash::{self, ADMIN_TOKEN, CLIENT_TOKEN};
use rollbot::audit::Entry;
use rollbot::domain::{Action, Actor, Platform, View};
use rollbot::engine::{Request, Status};
use rollbot::runtime::Runtime;
use std::path::Path;
use std::time::Instant;

/// A rollbot with one service, `checkout`, behind `flag` in Unleash's
/// `production` environment. `extra` goes into the backend's table,
/// `target` into the service's `[services.target]`.
pub(crate) async fn start(dir: &Path, admin_token: &str, extra: &str, target: &str) -> Runtime {
    let u = unleash::shared();
    let admin = dir.join("unleash-admin.token");
    std::fs::write(&admin, format!("{admin_token}\n")).unwrap();
    let client = dir.join("unleash-client.token");
    std::fs::write(&client, format!("{CLIENT_TOKEN}\n")).unwrap();
    let text = format!(
        r#"
[engine]
backend_timeout = "20s"

[backends.flags]
type = "unleash"
url = "{url}"
admin_token_file = "{admin}"
client_token_file = "{client}"
environment = "production"
timeout = "2s"
verify_timeout = "10s"
verify_interval = "100ms"
{extra}

[[services]]
name = "checkout"
environment = "prod"
backend = "flags"

[services.target]
{target}

[[roles.responder]]
members = ["console:oncall"]

[[roles.deployer]]
members = ["console:oncall"]
"#,
        url = u.url,
        admin = admin.display(),
        client = client.display(),
    );
    in_process::start(dir, &text, vec![]).await
}

fn request(action: Action, key: &str) -> Request {
    Request::new(
        Actor::new(Platform::Console, "oncall", "Ana Oncall"),
        action,
    )
    .service("checkout")
    .reason("checkout errors after the new flow")
    .idempotency_key(key)
}

pub(crate) fn rollback(key: &str) -> Request {
    request(
        Action::Rollback {
            to: None,
            force: false,
        },
        key,
    )
}

pub(crate) fn promote(full: bool, key: &str) -> Request {
    request(Action::Promote { full, force: false }, key)
}

pub(crate) fn requests(e: &Entry) -> Vec<String> {
    e.record.parameters["report"]["requests"]
        .as_array()
        .unwrap_or_else(|| panic!("no requests in {:?}", e.record.parameters))
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn rollback_switches_the_flag_off_in_its_environment_only() {
    let u = unleash::shared();
    let flag = "checkout-new-flow-rollback";
    u.create_flag(
        flag,
        &[("development", true, None), ("production", true, None)],
    )
    .await;
    // SDKs see it on before the rollback.
    u.client_view_when(flag, |f| f["enabled"] == true).await;
    let dir = tempfile::tempdir().unwrap();
    let rt = start(dir.path(), ADMIN_TOKEN, "", &format!("flag = \"{flag}\"")).await;

    let asked = Instant::now();
    let out = rt.engine.execute(rollback("unleash-rb-1")).await;
    let took = asked.elapsed();
    assert_eq!(out.status, Status::Succeeded, "{}", out.message.plain());
    eprintln!(
        "unleash: rollback request to verified off through the client API: {} ms",
        took.as_millis()
    );
    let text = out.message.plain();
    assert!(text.contains("on → off"), "{text}");
    assert!(text.contains("client API"), "{text}");

    // What SDKs get now, and the other environment untouched.
    assert_eq!(u.client_view(flag).await["enabled"], false);
    assert_eq!(u.env_state(flag, "production").await["enabled"], false);
    assert_eq!(u.env_state(flag, "development").await["enabled"], true);

    // The audit entry holds every request and its answer, never a token.
    let e = result_entry(&rt, &out.correlation_id);
    let reqs = requests(&e);
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert!(
        reqs[0].starts_with(&format!(
            "GET {}/api/admin/projects/default/features/{flag} → 200",
            u.url
        )) && reqs[0].contains("production on"),
        "{reqs:?}"
    );
    assert!(
        reqs[1].starts_with(&format!(
            "POST {}/api/admin/projects/default/features/{flag}/environments/production/off → 200",
            u.url
        )),
        "{reqs:?}"
    );
    let all = serde_json::to_string(&e.record.parameters).unwrap();
    assert!(!all.contains("rollbot-test-admin") && !all.contains("rollbot-test-client"));
    let v = e.record.parameters["verification"]["detail"].to_string();
    assert!(v.contains("disabled"), "{v}");
    eprintln!("unleash: verification: {v}");

    // A second rollback has nothing to do and says so.
    let again = rt.engine.execute(rollback("unleash-rb-2")).await;
    assert_eq!(again.status, Status::Succeeded, "{}", again.message.plain());
    assert!(
        again.message.plain().contains("already off"),
        "{}",
        again.message.plain()
    );
}

#[tokio::test]
async fn promote_switches_an_off_flag_on() {
    let u = unleash::shared();
    let flag = "checkout-new-flow-promote";
    u.create_flag(flag, &[("production", false, None)]).await;
    let dir = tempfile::tempdir().unwrap();
    let rt = start(dir.path(), ADMIN_TOKEN, "", &format!("flag = \"{flag}\"")).await;
    let out = rt.engine.execute(promote(false, "unleash-pr-1")).await;
    assert_eq!(out.status, Status::Succeeded, "{}", out.message.plain());
    assert!(
        out.message.plain().contains("off → on"),
        "{}",
        out.message.plain()
    );
    assert_eq!(u.client_view(flag).await["enabled"], true);
    let reqs = requests(&result_entry(&rt, &out.correlation_id));
    assert!(
        reqs.last()
            .unwrap()
            .contains("/environments/production/on → 200"),
        "{reqs:?}"
    );
}

#[tokio::test]
async fn gradual_promote_raises_the_rollout_step_by_step() {
    let u = unleash::shared();
    let flag = "checkout-new-flow-gradual";
    u.create_flag(flag, &[("production", true, Some(10))]).await;
    let dir = tempfile::tempdir().unwrap();
    let rt = start(
        dir.path(),
        ADMIN_TOKEN,
        "",
        &format!("flag = \"{flag}\"\nsteps = \"10,25,50,100\""),
    )
    .await;
    let rollout = |v: &serde_json::Value| v["strategies"][0]["parameters"]["rollout"].clone();

    let out = rt.engine.execute(promote(false, "unleash-gr-1")).await;
    assert_eq!(out.status, Status::Succeeded, "{}", out.message.plain());
    assert!(
        out.message.plain().contains("on at 10% → on at 25%"),
        "{}",
        out.message.plain()
    );
    assert_eq!(rollout(&u.client_view(flag).await), "25");
    let reqs = requests(&result_entry(&rt, &out.correlation_id));
    assert!(
        reqs.iter().any(|r| r.starts_with("PUT ")
            && r.contains("/strategies/")
            && r.contains("rollout 25%")),
        "{reqs:?}"
    );

    let out = rt.engine.execute(promote(false, "unleash-gr-2")).await;
    assert_eq!(out.status, Status::Succeeded, "{}", out.message.plain());
    assert_eq!(rollout(&u.client_view(flag).await), "50");

    // A rollback switches it off and keeps the percentage; the next promote
    // brings it back at that percentage, and `full` goes to 100%.
    let out = rt.engine.execute(rollback("unleash-gr-3")).await;
    assert_eq!(out.status, Status::Succeeded, "{}", out.message.plain());
    assert_eq!(u.client_view(flag).await["enabled"], false);
    let out = rt.engine.execute(promote(false, "unleash-gr-4")).await;
    assert_eq!(out.status, Status::Succeeded, "{}", out.message.plain());
    assert!(
        out.message.plain().contains("off → on at 50%"),
        "{}",
        out.message.plain()
    );
    let out = rt.engine.execute(promote(true, "unleash-gr-5")).await;
    assert_eq!(out.status, Status::Succeeded, "{}", out.message.plain());
    let seen = u.client_view(flag).await;
    assert_eq!(
        (seen["enabled"].clone(), rollout(&seen)),
        (true.into(), "100".into())
    );
    // The strategy was changed in place: stickiness and group kept.
    assert_eq!(seen["strategies"].as_array().unwrap().len(), 1);
    assert_eq!(seen["strategies"][0]["parameters"]["groupId"], flag);
    let out = rt.engine.execute(promote(false, "unleash-gr-6")).await;
    assert_eq!(out.status, Status::Succeeded, "{}", out.message.plain());
    assert!(
        out.message.plain().contains("nothing to promote"),
        "{}",
        out.message.plain()
    );
}

#[tokio::test]
async fn a_missing_flag_or_environment_is_refused_naming_what_exists() {
    let u = unleash::shared();
    let flag = "checkout-new-flow-preflight";
    u.create_flag(flag, &[("production", true, None)]).await;

    let dir = tempfile::tempdir().unwrap();
    let rt = start(dir.path(), ADMIN_TOKEN, "", "flag = \"checkout-new-flwo\"").await;
    let out = rt.engine.execute(rollback("unleash-pf-1")).await;
    assert_eq!(out.status, Status::Refused);
    let text = out.message.plain();
    assert!(
        text.contains("no flag `checkout-new-flwo` in project `default`")
            && text.contains(flag)
            && text.contains("Nothing was changed"),
        "{text}"
    );
    let e = result_entry(&rt, &out.correlation_id);
    assert_eq!(e.record.parameters["failed_at"], "preflight");

    let dir = tempfile::tempdir().unwrap();
    let rt = start(
        dir.path(),
        ADMIN_TOKEN,
        "",
        &format!("flag = \"{flag}\"\nenvironment = \"staging\""),
    )
    .await;
    let out = rt.engine.execute(rollback("unleash-pf-2")).await;
    assert_eq!(out.status, Status::Refused);
    let text = out.message.plain();
    assert!(
        text.contains("no environment `staging`")
            && text.contains("development, production")
            && text.contains("Nothing was changed"),
        "{text}"
    );

    let dir = tempfile::tempdir().unwrap();
    let rt = start(
        dir.path(),
        ADMIN_TOKEN,
        "",
        &format!("flag = \"{flag}\"\nproject = \"payments\""),
    )
    .await;
    let out = rt.engine.execute(rollback("unleash-pf-3")).await;
    assert_eq!(out.status, Status::Refused);
    let text = out.message.plain();
    assert!(
        text.contains("no project `payments`") && text.contains("projects: default"),
        "{text}"
    );

    // None of the refusals touched the flag.
    assert_eq!(u.env_state(flag, "production").await["enabled"], true);
}

#[tokio::test]
async fn a_wrong_admin_token_fails_clearly_and_changes_nothing() {
    let u = unleash::shared();
    let flag = "checkout-new-flow-token";
    u.create_flag(flag, &[("production", true, None)]).await;
    let dir = tempfile::tempdir().unwrap();
    let rt = start(
        dir.path(),
        "*:*.not-the-admin-token",
        "",
        &format!("flag = \"{flag}\""),
    )
    .await;
    let out = rt.engine.execute(rollback("unleash-tok-1")).await;
    assert_eq!(out.status, Status::Failed);
    let text = out.message.plain();
    assert!(
        text.contains("refused the admin token")
            && text.contains("HTTP 401")
            && text.contains("admin_token"),
        "{text}"
    );
    assert!(!text.contains("not-the-admin-token"), "{text}");
    assert_eq!(u.env_state(flag, "production").await["enabled"], true);
}

#[tokio::test]
async fn status_shows_state_and_strategies_and_pause_is_refused() {
    let u = unleash::shared();
    let flag = "checkout-new-flow-status";
    u.create_flag(
        flag,
        &[("development", false, None), ("production", true, Some(25))],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let rt = start(dir.path(), ADMIN_TOKEN, "", &format!("flag = \"{flag}\"")).await;
    let st = rt.engine.backend_status("checkout").await.unwrap();
    assert_eq!(st.live_revision.as_deref(), Some("on at 25%"));
    assert_eq!(st.canary_weight, Some(25));
    let notes = st.notes.join("\n");
    assert!(
        notes.contains("flexibleRollout 25% (stickiness default)")
            && notes.contains("other environments: development off")
            && notes.contains("10%, 25%, 50%, 100%"),
        "{notes}"
    );
    // The same through /status.
    let out = rt
        .engine
        .execute(request(
            Action::Query { view: View::Status },
            "unleash-st-1",
        ))
        .await;
    let text = out.message.plain();
    assert!(
        text.contains("live on at 25%") && text.contains("flexibleRollout"),
        "{text}"
    );

    let out = rt
        .engine
        .execute(request(Action::Pause, "unleash-st-2"))
        .await;
    assert_ne!(out.status, Status::Succeeded);
    let text = out.message.plain();
    assert!(
        text.contains("no pause") && text.contains("rollback"),
        "{text}"
    );
    assert_eq!(u.env_state(flag, "production").await["enabled"], true);
}

#[tokio::test]
async fn verification_names_a_client_token_of_another_environment() {
    let u = unleash::shared();
    let flag = "checkout-new-flow-verify";
    u.create_flag(flag, &[("development", true, None)]).await;
    let dir = tempfile::tempdir().unwrap();
    // The client token is production's; the service switches development.
    let rt = start(
        dir.path(),
        ADMIN_TOKEN,
        "",
        &format!("flag = \"{flag}\"\nenvironment = \"development\""),
    )
    .await;
    let out = rt.engine.execute(rollback("unleash-ver-1")).await;
    assert_eq!(out.status, Status::Failed);
    let text = out.message.plain();
    assert!(
        text.contains("NOT verified")
            && text
                .contains("client_token is a token of environment `production`, not `development`"),
        "{text}"
    );
    assert_eq!(u.env_state(flag, "development").await["enabled"], false);
}

#[tokio::test]
async fn unleash_start_up_is_measured() {
    let u = unleash::shared();
    eprintln!(
        "unleash: start-up (PostgreSQL initdb + Unleash migrations): {} ms",
        u.startup.as_millis()
    );
    let health = reqwest::get(format!("{}/health", u.url)).await.unwrap();
    assert!(health.status().is_success());
}

#[tokio::test]
async fn rollback_through_rollbot_serve_and_the_http_api() {
    let u = unleash::shared();
    let flag = "checkout-new-flow-serve";
    u.create_flag(flag, &[("production", true, Some(50))]).await;
    u.client_view_when(flag, |f| f["enabled"] == true).await;
    let dir = tempfile::tempdir().unwrap();
    let client = dir.path().join("unleash-client.token");
    std::fs::write(&client, CLIENT_TOKEN).unwrap();
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:{{port}}"

[store]
path = "{{data}}"

[backends.flags]
type = "unleash"
url = "{url}"
admin_token = "${{ROLLBOT_TEST_UNLEASH_ADMIN}}"
client_token_file = "{client}"
environment = "production"
verify_interval = "100ms"

[[services]]
name = "checkout"
backend = "flags"

[services.target]
flag = "{flag}"

[[roles.responder]]
members = ["api:ci"]

[[api.clients]]
name = "ci"
token = "${{ROLLBOT_TEST_API_TOKEN}}"
"#,
        url = u.url,
        client = client.display(),
    );
    let s = crate::support::Server::start(
        dir.path(),
        &config,
        &[
            ("ROLLBOT_TEST_UNLEASH_ADMIN", ADMIN_TOKEN),
            ("ROLLBOT_TEST_API_TOKEN", "ci-token-7c1e"),
        ],
    );
    let asked = Instant::now();
    let (code, body) = Api::new(&s, "ci-token-7c1e")
        .action(
            "/rollback checkout new flow breaks payments",
            Some("serve-rb-1"),
        )
        .await;
    let took = asked.elapsed();
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body["message"]["title"], "Rolled back checkout on at 50% → off",
        "{body}"
    );
    eprintln!(
        "unleash: POST /api/v1/actions rollback to verified-off answer: {} ms",
        took.as_millis()
    );
    let seen = u.client_view(flag).await;
    assert_eq!(seen["enabled"], false);
    // Switched off, not edited: the percentage is still there for later.
    assert_eq!(seen["strategies"][0]["parameters"]["rollout"], "50");
    assert!(!s.log_text().contains("rollbot-test-admin"));
}
