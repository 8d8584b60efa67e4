//! The `exec` backend through `rollbot serve` and the HTTP API: what the
//! program sees of rollbot's environment, how placeholders are filled, and
//! revisions that look like options.

use crate::support::api::Api;
use crate::support::Server;
use std::path::Path;

// The script writes its environment and its arguments (one per line) to
// the directory given as its first argument. It reads nothing from
// placeholders itself, as check-config advises.
const CONFIG: &str = r##"
[server]
listen = "127.0.0.1:{port}"

[store]
path = "{data}"

[backends.script]
type = "exec"
program = "sh"
args = ['-c', 'out=$1; shift; env > "$out/env"; printf "%s\n" "$@" > "$out/args"', "rollbot", "{data}-out", "{revision}", "{reason}", "{actor}", "{correlation_id}"]
env = ["PATH", "DEPLOY_REGION"]
timeout = "30s"

[[services]]
name = "payments"
backend = "script"

[[roles.responder]]
members = ["api:ci"]

[[api.clients]]
name = "ci"
token = "${ROLLBOT_TEST_TOKEN}"
"##;

const TOKEN: &str = "api-token-7d1e5c";
const SLACK_SECRET: &str = "slack-signing-secret-93ab";

fn start(dir: &Path) -> Server {
    std::fs::create_dir_all(dir.join("data-out")).unwrap();
    Server::start(
        dir,
        CONFIG,
        &[
            ("ROLLBOT_TEST_TOKEN", TOKEN),
            ("SLACK_SIGNING_SECRET", SLACK_SECRET),
            ("DEPLOY_REGION", "eu-west-1"),
        ],
    )
}

async fn act(s: &Server, command: &str) -> (u16, serde_json::Value) {
    Api::new(s, TOKEN).action(command, None).await
}

#[tokio::test]
async fn the_program_sees_only_allow_listed_variables_and_placeholders_filled_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path());
    let reason = "{actor} asked; see {correlation_id} and {revision}";
    let (code, body) = act(&s, &format!("/rollback payments to v41 {reason}")).await;
    assert_eq!(code, 200, "{body}");

    let out = dir.path().join("data-out");
    let env = std::fs::read_to_string(out.join("env")).unwrap();
    // rollbot's secrets stay with rollbot.
    for secret in [
        TOKEN,
        SLACK_SECRET,
        "ROLLBOT_TEST_TOKEN",
        "SLACK_SIGNING_SECRET",
    ] {
        assert!(!env.contains(secret), "the program saw {secret}:\n{env}");
    }
    // What the config allows, and the action's own variables.
    for line in [
        "DEPLOY_REGION=eu-west-1",
        "ROLLBOT_ACTION=rollback",
        "ROLLBOT_SERVICE=payments",
        "ROLLBOT_REVISION=v41",
    ] {
        assert!(env.lines().any(|l| l == line), "no {line} in:\n{env}");
    }
    assert!(
        env.lines().any(|l| l.starts_with("PATH=/")),
        "PATH is allow-listed:\n{env}"
    );
    assert!(
        !env.lines().any(|l| l.starts_with("ROLLBOT_LOG")),
        "rollbot's own settings stay with rollbot:\n{env}"
    );

    // Each argument is its template filled once: the reason stays as typed.
    let args = std::fs::read_to_string(out.join("args")).unwrap();
    let args: Vec<&str> = args.lines().collect();
    assert_eq!(args[0], "v41");
    assert_eq!(args[1], reason, "{args:?}");
    assert!(args[2].contains("api:ci"), "{args:?}");
    assert_eq!(
        args[3],
        body["correlation_id"].as_str().unwrap(),
        "{args:?}"
    );
    assert!(s.terminate().success());
}

#[tokio::test]
async fn a_revision_like_an_option_is_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path());
    for (revision, why) in [
        ("--force", "starts with `-`"),
        ("v41;reboot", "contains `;`"),
        ("{reason}", "contains `{`"),
    ] {
        let (code, body) = act(&s, &format!("/rollback payments to {revision} bad")).await;
        assert_eq!(code, 400, "{revision}: {body}");
        let e = body["error"].as_str().unwrap();
        assert!(
            e.contains(why) && e.contains("nothing was done"),
            "{revision}: {e}"
        );
    }
    assert!(
        !dir.path().join("data-out").join("args").exists(),
        "the program ran"
    );
    let data = dir.path().join("data");
    assert!(s.terminate().success());
    let audit = crate::support::audit_export(&data);
    assert!(audit.is_empty(), "a refused command was audited: {audit:?}");
}
