//! The webhook and gitops backends, driven through the engine the way
//! `rollbot serve` builds it, against a real HTTP receiver on 127.0.0.1 and
//! real git repositories on disk. Each test checks the audit entry's record
//! of the requests too.

use crate::support::in_process::{self, result_entry};
use crate::support::webhook_receiver::{Receiver, Reply};
use rollbot::config_file::Config;
use rollbot::domain::{Action, Actor, Platform};
use rollbot::engine::{Outcome, Request, Status};
use rollbot::runtime::Runtime;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SECRET: &str = "whsec-test-4b9c";

pub(crate) async fn start(dir: &Path, backend: &str) -> Runtime {
    let text = format!(
        r#"
[engine]
backend_timeout = "20s"

{backend}

[[services]]
name = "checkout"
environment = "prod"
backend = "main"

[[roles.responder]]
members = ["console:responder"]
"#
    );
    in_process::start(dir, &text, vec![]).await
}

pub(crate) fn rollback(reason: &str, key: &str) -> Request {
    Request::new(
        Actor::new(Platform::Console, "responder", "Ana Responder"),
        Action::Rollback {
            to: None,
            force: false,
        },
    )
    .service("checkout")
    .reason(reason)
    .idempotency_key(key)
}

fn webhook_config(dir: &Path, r: &Receiver, secret: &str, extra: &str) -> String {
    let file = dir.join("webhook.secret");
    std::fs::write(&file, format!("{secret}\n")).unwrap();
    format!(
        r#"[backends.main]
type = "webhook"
url = "{}"
secret_file = "{}"
timeout = "1s"
retries = 2
backoff = "50ms"
{extra}"#,
        r.url("/hook"),
        file.display()
    )
}

#[tokio::test]
async fn webhook_success_is_signed_and_audited() {
    let dir = tempfile::tempdir().unwrap();
    let r = Receiver::start(SECRET).await;
    r.script(vec![Reply::Ok(
        r#"{"detail": "pipeline 42 started", "from_revision": "v7", "to_revision": "v6"}"#.into(),
    )]);
    r.states(&["running", "running", "done"]);
    let cfg = webhook_config(
        dir.path(),
        &r,
        SECRET,
        &format!(
            "status_url = \"{}\"\nstatus_interval = \"50ms\"\nstatus_timeout = \"5s\"",
            r.url("/status")
        ),
    );
    let rt = start(dir.path(), &cfg).await;
    let out = rt
        .engine
        .execute(rollback("errors after deploy", "key-ok"))
        .await;
    assert_eq!(out.status, Status::Succeeded, "{}", out.message.plain());
    assert!(
        out.message.title.contains("v7 → v6"),
        "{}",
        out.message.title
    );

    let got = r.received();
    let posts: Vec<_> = got.iter().filter(|g| g.method == "POST").collect();
    assert_eq!(posts.len(), 1);
    let body = &posts[0].body;
    assert!(posts[0].signature_ok);
    assert_eq!(body["action"], "rollback");
    assert_eq!(body["service"], "checkout");
    assert_eq!(body["environment"], "prod");
    assert_eq!(body["reason"], "errors after deploy");
    assert_eq!(body["idempotency_key"], "key-ok");
    assert_eq!(posts[0].idempotency_key, "key-ok");
    assert_eq!(body["correlation_id"], out.correlation_id.as_str());
    assert!(body["actor"].as_str().unwrap().contains("Ana Responder"));
    assert!(body["timestamp"].as_str().is_some());
    // Polled until done, every poll signed.
    let gets: Vec<_> = got.iter().filter(|g| g.method == "GET").collect();
    assert_eq!(gets.len(), 3);
    assert!(gets.iter().all(|g| g.signature_ok));

    let e = result_entry(&rt, &out.correlation_id);
    let requests = e.record.parameters["report"]["requests"].to_string();
    assert!(
        requests.contains("POST http://127.0.0.1") && requests.contains("→ 200"),
        "{requests}"
    );
    let v = e.record.parameters["verification"].to_string();
    assert!(v.contains("done after 3 polls"), "{v}");
}

#[tokio::test]
async fn webhook_5xx_is_retried_with_the_same_key() {
    let dir = tempfile::tempdir().unwrap();
    let r = Receiver::start(SECRET).await;
    r.script(vec![
        Reply::Status(503, "busy".into()),
        Reply::Status(502, "bad gateway".into()),
        Reply::Ok("{}".into()),
    ]);
    let rt = start(dir.path(), &webhook_config(dir.path(), &r, SECRET, "")).await;
    let out = rt.engine.execute(rollback("retry me", "key-retry")).await;
    assert_eq!(out.status, Status::Succeeded, "{}", out.message.plain());
    let got = r.received();
    assert_eq!(got.len(), 3);
    assert!(got
        .iter()
        .all(|g| g.idempotency_key == "key-retry" && g.body["idempotency_key"] == "key-retry"));
    let e = result_entry(&rt, &out.correlation_id);
    let requests = e.record.parameters["report"]["requests"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(requests.len(), 3, "{requests:?}");
    assert!(requests[0].as_str().unwrap().contains("→ 503"));
    assert!(requests[1].as_str().unwrap().contains("→ 502"));
    assert!(requests[2].as_str().unwrap().contains("→ 200"));
}

#[tokio::test]
async fn webhook_4xx_fails_with_the_answer_and_is_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let r = Receiver::start(SECRET).await;
    r.script(vec![Reply::Status(
        422,
        r#"{"error": "revision v6 is not deployable: image missing"}"#.into(),
    )]);
    let rt = start(dir.path(), &webhook_config(dir.path(), &r, SECRET, "")).await;
    let out = rt.engine.execute(rollback("bad", "key-4xx")).await;
    assert_eq!(out.status, Status::Failed);
    let text = out.message.plain();
    assert!(
        text.contains("HTTP 422") && text.contains("image missing"),
        "{text}"
    );
    assert_eq!(r.received().len(), 1);
    let e = result_entry(&rt, &out.correlation_id);
    let err = e.record.parameters["error"].as_str().unwrap();
    assert!(
        err.contains("→ 422") && err.contains("image missing"),
        "{err}"
    );
}

#[tokio::test]
async fn webhook_hang_is_cut_by_the_time_limit() {
    let dir = tempfile::tempdir().unwrap();
    let r = Receiver::start(SECRET).await;
    r.script(vec![Reply::Hang, Reply::Hang, Reply::Hang]);
    let rt = start(dir.path(), &webhook_config(dir.path(), &r, SECRET, "")).await;
    let started = Instant::now();
    let out = rt.engine.execute(rollback("hang", "key-hang")).await;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(out.status, Status::Failed);
    let text = out.message.plain();
    assert!(
        text.contains("after 3 attempts") && text.contains("no answer within 1s"),
        "{text}"
    );
    assert_eq!(r.received().len(), 3);
}

#[tokio::test]
async fn webhook_slow_answer_within_the_limit_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let r = Receiver::start(SECRET).await;
    r.script(vec![Reply::Slow(Duration::from_millis(400))]);
    let rt = start(dir.path(), &webhook_config(dir.path(), &r, SECRET, "")).await;
    let out = rt.engine.execute(rollback("slow", "key-slow")).await;
    assert_eq!(out.status, Status::Succeeded, "{}", out.message.plain());
    assert!(out.message.plain().contains("slow but done"));
}

#[tokio::test]
async fn webhook_wrong_secret_is_rejected_by_the_receiver() {
    let dir = tempfile::tempdir().unwrap();
    let r = Receiver::start(SECRET).await;
    let rt = start(
        dir.path(),
        &webhook_config(dir.path(), &r, "not-the-secret", ""),
    )
    .await;
    let out = rt.engine.execute(rollback("bad secret", "key-sig")).await;
    assert_eq!(out.status, Status::Failed);
    let got = r.received();
    assert_eq!(got.len(), 1);
    assert!(!got[0].signature_ok);
    let text = out.message.plain();
    assert!(
        text.contains("HTTP 401") && text.contains("bad signature"),
        "{text}"
    );
    assert!(!text.contains("not-the-secret"));
}

// ---------------------------------------------------------------- gitops

pub(crate) const VALUES_V7: &str = "# checkout, production values\nreplicaCount: 3\nimage:\n  repository: registry.example.com/checkout  # built by CI\n  # bumped by the release pipeline\n  tag: \"v7\"   # current release\n  pullPolicy: IfNotPresent\n";

pub(crate) fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Dev")
        .env("GIT_AUTHOR_EMAIL", "dev@example.com")
        .env("GIT_COMMITTER_NAME", "Dev")
        .env("GIT_COMMITTER_EMAIL", "dev@example.com")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(crate) const FILE: &str = "apps/checkout/values-prod.yaml";

/// A bare repository whose values file went v5 → v6 → v7, and a working
/// clone of it ("seed") that plays the other people pushing.
pub(crate) fn repo(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let origin = dir.join("origin.git");
    std::fs::create_dir_all(&origin).unwrap();
    git(&origin, &["init", "-q", "--bare", "-b", "main"]);
    let seed = dir.join("seed");
    git(dir, &["clone", "-q", origin.to_str().unwrap(), "seed"]);
    git(&seed, &["checkout", "-q", "-b", "main"]);
    std::fs::create_dir_all(seed.join("apps/checkout")).unwrap();
    std::fs::write(seed.join("README.md"), "deploy repo\n").unwrap();
    for v in ["v5", "v6", "v7"] {
        std::fs::write(seed.join(FILE), VALUES_V7.replace("v7", v)).unwrap();
        git(&seed, &["add", "-A"]);
        git(&seed, &["commit", "-q", "-m", &format!("checkout {v}")]);
    }
    git(&seed, &["push", "-q", "origin", "main"]);
    (origin, seed)
}

pub(crate) fn gitops_config(origin: &Path, workdir: &Path, extra: &str) -> String {
    format!(
        r#"[backends.main]
type = "gitops"
repository = "{}"
branch = "main"
file = "apps/{{service}}/values-{{environment}}.yaml"
key = "image.tag"
workdir = "{}"
author_name = "rollbot"
author_email = "rollbot@example.com"
{extra}"#,
        origin.display(),
        workdir.display()
    )
}

/// Makes the next push from rollbot's clone race with someone else's push:
/// a pre-push hook in the clone runs `script` in the seed clone first.
fn race(workdir: &Path, seed: &Path, script: &str) {
    git(
        workdir.parent().unwrap(),
        &[
            "clone",
            "-q",
            seed.parent().unwrap().join("origin.git").to_str().unwrap(),
            workdir.to_str().unwrap(),
        ],
    );
    let hook = workdir.join(".git/hooks/pre-push");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\nunset GIT_DIR GIT_WORK_TREE GIT_INDEX_FILE GIT_PREFIX\n[ -e \"$0.done\" ] && exit 0\ntouch \"$0.done\"\ncd '{}' || exit 1\nexport GIT_AUTHOR_NAME='Someone Else' GIT_AUTHOR_EMAIL=else@example.com GIT_COMMITTER_NAME='Someone Else' GIT_COMMITTER_EMAIL=else@example.com\n{script}\ngit push -q origin main >/dev/null 2>&1 || exit 1\nexit 0\n",
            seed.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A gitops rollback of checkout ("bad canary", idempotency key `key`)
/// while someone else pushes `change` (a shell command in their clone):
/// rollbot, the outcome, and the remote repository.
async fn rollback_racing(dir: &Path, change: &str, key: &str) -> (Runtime, Outcome, PathBuf) {
    let (origin, seed) = repo(dir);
    let workdir = dir.join("clone");
    race(&workdir, &seed, change);
    let rt = start(dir, &gitops_config(&origin, &workdir, "")).await;
    let out = rt.engine.execute(rollback("bad canary", key)).await;
    (rt, out, origin)
}

pub(crate) fn remote_file(origin: &Path) -> String {
    git(origin, &["show", &format!("main:{FILE}")])
}

#[tokio::test]
async fn gitops_rollback_edits_one_line_and_names_everything() {
    let dir = tempfile::tempdir().unwrap();
    let (origin, _seed) = repo(dir.path());
    let workdir = dir.path().join("clone");
    let rt = start(dir.path(), &gitops_config(&origin, &workdir, "")).await;

    // An unknown target revision is refused before anything changes.
    let before = git(&origin, &["rev-parse", "main"]);
    let mut req = rollback("to a bad revision", "key-g0");
    req.action = Action::Rollback {
        to: Some("v99".into()),
        force: false,
    };
    let out = rt.engine.execute(req).await;
    assert_eq!(out.status, Status::Refused);
    assert!(
        out.message.plain().contains("v99 was never the value"),
        "{}",
        out.message.plain()
    );
    assert_eq!(git(&origin, &["rev-parse", "main"]), before);

    let out = rt
        .engine
        .execute(rollback("5xx on /pay after v7", "key-g1"))
        .await;
    assert_eq!(out.status, Status::Succeeded, "{}", out.message.plain());
    assert!(
        out.message.title.contains("v7 → v6"),
        "{}",
        out.message.title
    );

    let after = remote_file(&origin);
    let changed: Vec<_> = VALUES_V7
        .lines()
        .zip(after.lines())
        .filter(|(a, b)| a != b)
        .collect();
    assert_eq!(
        changed,
        vec![(
            "  tag: \"v7\"   # current release",
            "  tag: \"v6\"   # current release"
        )]
    );
    assert_eq!(after.lines().count(), VALUES_V7.lines().count());

    let msg = git(&origin, &["log", "-1", "--format=%an%n%B", "main"]);
    for part in [
        "rollbot",
        "rollback checkout (prod)",
        "v7 → v6",
        "Ana Responder",
        "5xx on /pay after v7",
        &format!("Correlation-Id: {}", out.correlation_id),
        "Idempotency-Key: key-g1",
    ] {
        assert!(msg.contains(part), "{part:?} missing from {msg}");
    }
    let e = result_entry(&rt, &out.correlation_id);
    let requests = e.record.parameters["report"]["requests"].to_string();
    assert!(requests.contains("git push origin main"), "{requests}");
    assert!(e.record.parameters["verification"]["ok"].as_bool().unwrap());
}

#[tokio::test]
async fn gitops_concurrent_push_is_fetched_and_reapplied() {
    let dir = tempfile::tempdir().unwrap();
    // Someone else changes another line of the same file meanwhile.
    let change = format!(
        "sed -i 's/replicaCount: 3/replicaCount: 5/' {FILE} && git commit -q -am 'scale checkout'"
    );
    let (rt, out, origin) = rollback_racing(dir.path(), &change, "key-g2").await;
    assert_eq!(out.status, Status::Succeeded, "{}", out.message.plain());
    let file = remote_file(&origin);
    assert!(
        file.contains("replicaCount: 5") && file.contains("tag: \"v6\"   # current release"),
        "{file}"
    );
    let log = git(&origin, &["log", "-2", "--format=%an: %s", "main"]);
    assert!(
        log.starts_with("rollbot: rollback checkout")
            && log.contains("Someone Else: scale checkout"),
        "{log}"
    );
    let e = result_entry(&rt, &out.correlation_id);
    let requests = e.record.parameters["report"]["requests"].to_string();
    // git's reason for the refusal (here "remote rejected (failed to update
    // ref)": the ref moved under the push), not the last line of its
    // porcelain output ("Done").
    let push = requests
        .split("\",\"")
        .find(|r| r.starts_with("git push origin main → ") && r.contains("rejected"))
        .unwrap_or_else(|| panic!("no refused push in {requests}"));
    assert!(push.contains("rejected ("), "{push}");
    assert!(requests.contains("re-applied"), "{requests}");
    assert!(!requests.contains("Done"), "{requests}");
}

#[tokio::test]
async fn gitops_conflict_changes_nothing_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    // Someone else moves the same key to v8 meanwhile.
    let change = format!("sed -i 's/\"v7\"/\"v8\"/' {FILE} && git commit -q -am 'checkout v8'");
    let (rt, out, origin) = rollback_racing(dir.path(), &change, "key-g3").await;
    assert_eq!(out.status, Status::Failed);
    let text = out.message.plain();
    assert!(
        text.contains("conflict")
            && text.contains("from v7 to v8")
            && text.contains("pushed nothing")
            && text.contains("by hand"),
        "{text}"
    );
    // The remote has the other person's commit on top, and nothing of rollbot's.
    let log = git(&origin, &["log", "--format=%an: %s", "main"]);
    assert!(log.starts_with("Someone Else: checkout v8"), "{log}");
    assert!(!log.contains("rollbot"), "{log}");
    assert!(remote_file(&origin).contains("tag: \"v8\""));
    let e = result_entry(&rt, &out.correlation_id);
    let err = e.record.parameters["error"].as_str().unwrap();
    assert!(
        err.contains("rejected") && err.contains("from v7 to v8"),
        "{err}"
    );
}

#[tokio::test]
async fn gitops_revert_mode_reverts_the_newest_change() {
    let dir = tempfile::tempdir().unwrap();
    let (origin, _seed) = repo(dir.path());
    let workdir = dir.path().join("clone");
    let rt = start(
        dir.path(),
        &gitops_config(&origin, &workdir, "mode = \"revert\""),
    )
    .await;
    let out = rt.engine.execute(rollback("revert it", "key-g4")).await;
    assert_eq!(out.status, Status::Succeeded, "{}", out.message.plain());
    assert!(remote_file(&origin).contains("tag: \"v6\""));
    let msg = git(&origin, &["log", "-1", "--format=%B", "main"]);
    assert!(
        msg.contains("Reverts: ") && msg.contains("checkout v7"),
        "{msg}"
    );
}

fn backend(dir: &Path, backend: &str) -> Arc<dyn rollbot::backend::RollbackBackend> {
    let text = format!(
        "{backend}\n[[services]]\nname = \"checkout\"\nenvironment = \"prod\"\nbackend = \"main\"\n"
    );
    let config = Config::parse(&dir.join("rollbot.toml"), &text).unwrap_or_else(|e| panic!("{e}"));
    rollbot::runtime::build_backends(&config).all["main"].clone()
}

fn target() -> rollbot::backend::Target {
    rollbot::backend::Target {
        service: "checkout".into(),
        environment: "prod".into(),
        settings: Default::default(),
    }
}

#[tokio::test]
async fn gitops_status_shows_values_and_commits_and_promote_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (origin, _seed) = repo(dir.path());
    let b = backend(
        dir.path(),
        &gitops_config(&origin, &dir.path().join("clone"), ""),
    );
    let st = b.status(&target()).await.unwrap();
    assert_eq!(st.live_revision.as_deref(), Some("v7"));
    let revs: Vec<_> = st.history.iter().map(|h| h.revision.as_str()).collect();
    assert_eq!(revs, ["v7", "v6", "v5"]);
    assert!(st.history[0].live && st.history[1].detail.contains("checkout v6"));
    let notes = st.notes.join("\n");
    assert!(
        notes.contains(FILE) && notes.contains("Dev: checkout v7"),
        "{notes}"
    );
    let err = b
        .promote(&target(), false, &Default::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("does not promote") && err.contains("Argo CD"),
        "{err}"
    );
}

#[tokio::test]
async fn gitops_token_goes_in_a_header_and_never_into_messages() {
    // An HTTP "git server" that records the first request and refuses it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 8192];
        let n = s.read(&mut buf).unwrap();
        let _ = s.write_all(
            b"HTTP/1.1 403 Forbidden\r\nContent-Length: 6\r\nConnection: close\r\n\r\nnope!\n",
        );
        String::from_utf8_lossy(&buf[..n]).into_owned()
    });
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "ghp_secret_token_123\n").unwrap();
    let b = backend(
        dir.path(),
        &gitops_config(
            Path::new(&format!("http://127.0.0.1:{port}/acme/deploy.git")),
            &dir.path().join("clone"),
            &format!("token_file = \"{}\"", token.display()),
        ),
    );
    let err = b
        .preflight(
            &target(),
            &rollbot::backend::Operation::Rollback { to: None },
            &Default::default(),
        )
        .await
        .unwrap_err()
        .to_string();
    let request = seen.join().unwrap();
    // base64("x-access-token:ghp_secret_token_123")
    assert!(
        request.contains("Authorization: Basic eC1hY2Nlc3MtdG9rZW46Z2hwX3NlY3JldF90b2tlbl8xMjM="),
        "{request}"
    );
    assert!(
        request.starts_with("GET /acme/deploy.git/info/refs"),
        "{request}"
    );
    assert!(
        err.contains("git clone") && !err.contains("ghp_secret"),
        "{err}"
    );
}
