//! `rollbot check-config` and `rollbot serve` refuse bad configuration with
//! the file, line, column and what to write instead.

use crate::support::{rollbot, text};

#[test]
fn the_shipped_configs_pass() {
    for f in ["config/rollbot.example.toml", "config/demo.toml"] {
        let o = rollbot(&["check-config", f]);
        assert!(o.status.success(), "{f}: {}", text(&o));
        assert!(text(&o).contains(": ok ("), "{}", text(&o));
    }
}

#[test]
fn bad_config_lists_every_problem_with_its_place() {
    let (code, t, p) = check(
        "[channels.deploys]\nconsole = \"#d\"\n\n[backends.sim]\ntype = \"simulated\"\n\n[[services]]\nname = \"checkout\"\nbackend = \"k8s\"\ndeploy_channel = \"deploy\"\n",
    );
    assert_eq!(code, Some(1));
    assert!(
        t.contains(&format!(
            "{p}:9:11: service `checkout` names backend `k8s`, which is not defined"
        )),
        "{t}"
    );
    assert!(
        t.contains(&format!(
            "{p}:10:18: service `checkout` names channel `deploy`, which is not defined"
        )),
        "{t}"
    );
    assert!(t.contains("help: did you mean `deploys`?"), "{t}");
    assert!(t.contains("2 errors in the configuration"), "{t}");
}

#[test]
fn serve_refuses_to_start_on_an_invalid_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[server]\nlisten = \"127.0.0.1:0\"\nlisen = \"x\"\n").unwrap();
    let o = rollbot(&["serve", "--config", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let t = text(&o);
    assert!(
        t.contains(":3:1: unknown field `lisen`")
            && t.contains("did you mean `listen`?")
            && t.contains("rollbot did not start"),
        "{t}"
    );
}

#[test]
fn a_missing_file_says_so() {
    let o = rollbot(&["check-config", "/nonexistent/rollbot.toml"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("cannot read the configuration file"),
        "{}",
        text(&o)
    );
}

/// Runs check-config on `config`: exit code, output, the file's path.
fn check(config: &str) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rollbot.toml");
    std::fs::write(&path, config).unwrap();
    let o = rollbot(&["check-config", path.to_str().unwrap()]);
    (o.status.code(), text(&o), path.display().to_string())
}

#[test]
fn exec_env_entries_are_checked_at_their_place() {
    let (code, t, p) = check(
        "[backends.script]\ntype = \"exec\"\nprogram = \"/usr/local/bin/deploy\"\nenv = [\"PATH\", \"MY-VAR\", \"ROLLBOT_REASON\"]\n\n[[services]]\nname = \"checkout\"\nbackend = \"script\"\n",
    );
    assert_eq!(code, Some(1), "{t}");
    assert!(
        t.contains(&format!(
            "{p}:4:16: backend `script`: `MY-VAR` in `env` is not an environment variable name"
        )),
        "{t}"
    );
    assert!(
        t.contains(&format!(
            "{p}:4:26: backend `script`: `ROLLBOT_REASON` in `env` is set by rollbot for each run"
        )),
        "{t}"
    );
    assert!(t.contains("2 errors in the configuration"), "{t}");

    let (code, t, _) = check(
        "[backends.script]\ntype = \"exec\"\nprogram = \"/usr/local/bin/deploy\"\nenv = [\"PATH\", \"KUBECONFIG\"]\n\n[[services]]\nname = \"checkout\"\nbackend = \"script\"\n",
    );
    assert_eq!(code, Some(0), "{t}");
    assert!(!t.contains("warning"), "{t}");
}

#[test]
fn a_shell_script_with_placeholders_or_a_secret_in_env_gets_a_warning() {
    let (code, t, p) = check(
        "[backends.script]\ntype = \"exec\"\nprogram = \"bash\"\nargs = [\"-c\", \"deploy --to {revision} --why '{reason}'\"]\nenv = [\"PATH\", \"CI_TOKEN\"]\n\n[[services]]\nname = \"checkout\"\nbackend = \"script\"\n\n[[api.clients]]\nname = \"ci\"\ntoken = \"${CI_TOKEN}\"\n",
    );
    // Warnings, not errors: the config is usable.
    assert_eq!(code, Some(0), "{t}");
    assert!(t.contains(": ok (1 services"), "{t}");
    assert!(
        t.contains(&format!(
            "warning: {p}:4:28: backend `script`: {{revision}}, {{reason}} are filled into the script `bash -c` runs"
        )),
        "{t}"
    );
    assert!(
        t.contains("\"$ROLLBOT_REVISION\", \"$ROLLBOT_REASON\""),
        "{t}"
    );
    assert!(
        t.contains(&format!(
            "warning: {p}:5:16: backend `script`: `env` passes CI_TOKEN to the program"
        )),
        "{t}"
    );
    // Placeholders passed as arguments after the script are safe.
    let (code, t, _) = check(
        "[backends.script]\ntype = \"exec\"\nprogram = \"/bin/sh\"\nargs = [\"-c\", \"deploy --to \\\"$1\\\"\", \"rollbot\", \"{revision}\"]\n\n[[services]]\nname = \"checkout\"\nbackend = \"script\"\n",
    );
    assert_eq!(code, Some(0), "{t}");
    assert!(!t.contains("warning"), "{t}");
}

#[test]
fn independent_problems_are_all_reported_and_a_bad_crontab_line_is_shown_as_written() {
    let (code, t, p) = check(
        r##"[channels.deploys]
console = "#d"

[chat.slack]
bot_token = "xoxb-123-456"
signing_secret = "${SLACK_SIGNING_SECRET}"

[backends.sim]
type = "simulated"

[[services]]
name = "checkout"
backend = "sim"
deploy_channel = "deploys"

[[roles.admin]]
members = ["alice"]

[freeze]
windows = [{ name = "nights", schedule = "61 25 * * *", duration = "1h" }]
"##,
    );
    assert_eq!(code, Some(1));
    assert!(
        t.contains(&format!(
            "{p}:5:13: secrets are never written in the config"
        )),
        "{t}"
    );
    assert!(
        t.contains(&format!("{p}:17:12: `alice` has no platform prefix")),
        "{t}"
    );
    assert!(
        t.contains(&format!(
            "{p}:20:42: `61 25 * * *`: minute `61` is not in 0-59; hour `25` is not in 0-23"
        )),
        "{t}"
    );
    assert!(
        !t.contains("0 61 25 * * *") && !t.contains("less than 59"),
        "{t}"
    );
    assert!(t.contains("3 errors in the configuration"), "{t}");
}

/// A bad value in a key a table needs (a window's schedule) does not end
/// the check: that table is left out and the rest of the file is read.
#[test]
fn a_bad_required_value_does_not_hide_the_problems_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("window.toml");
    std::fs::write(
        &path,
        "[backends.sim]\ntype = \"simulated\"\n\n[[services]]\nname = \"checkout\"\nbackend = \"sim\"\n\n[[freeze.windows]]\nname = \"nights\"\nschedule = \"61 25 * * *\"\nduration = \"1h\"\n\n[[roles.admin]]\nmembers = [\"alice\"]\n",
    )
    .unwrap();
    let o = rollbot(&["check-config", path.to_str().unwrap()]);
    let t = text(&o);
    let p = path.display();
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains(&format!("{p}:10:12: `61 25 * * *`: minute `61`")),
        "{t}"
    );
    assert!(
        t.contains(&format!("{p}:14:12: `alice` has no platform prefix")),
        "{t}"
    );
    assert!(t.contains("2 errors in the configuration"), "{t}");
}

#[test]
fn unknown_template_placeholders_are_reported_at_their_column_with_the_closest_name() {
    let (code, t, p) = check(
        "[backends.sim]\ntype = \"simulated\"\n\n[[services]]\nname = \"checkout\"\nbackend = \"sim\"\n\n[templates]\nstatus_page_opened = \"{service} is slow: {imapct}\"\n\n[templates.services.checkout]\nincident_opened = \"\"\"\nImpact: {impact}\nRoot cause: {evidance}\"\"\"\n",
    );
    assert_eq!(code, Some(1), "{t}");
    assert!(
        t.contains(&format!(
            "{p}:9:42: [templates] status_page_opened: unknown placeholder {{imapct}}"
        )) && t.contains("did you mean {impact}?"),
        "{t}"
    );
    assert!(
        t.contains(&format!(
            "{p}:14:13: [templates.services.checkout] incident_opened: unknown placeholder {{evidance}}"
        )) && t.contains("did you mean {evidence}?"),
        "{t}"
    );
    assert!(t.contains("2 errors in the configuration"), "{t}");
}

#[test]
fn an_interval_shorter_than_two_scrapes_is_a_warning_at_its_place() {
    let (code, t, p) = check(
        "[metrics]\nsource = \"prometheus\"\nurl = \"http://127.0.0.1:9\"\ninterval = \"10s\"\nscrape_interval = \"30s\"\n",
    );
    assert_eq!(code, Some(0), "a warning, not an error: {t}");
    assert!(
        t.contains(&format!(
            "{p}:4:1: [metrics] interval = \"10s\" is shorter than two scrapes ([metrics] scrape_interval says Prometheus scrapes every 30s)"
        )),
        "{t}"
    );
    assert!(t.contains("interval = \"1m\" (or longer)"), "{t}");
    // Two scrapes fit in a minute: nothing to say.
    let (code, t, _) = check(
        "[metrics]\nsource = \"prometheus\"\nurl = \"http://127.0.0.1:9\"\ninterval = \"1m\"\nscrape_interval = \"30s\"\n",
    );
    assert_eq!(code, Some(0), "{t}");
    assert!(!t.contains("shorter than two scrapes"), "{t}");
}

#[test]
fn without_scrape_interval_check_config_asks_prometheus_or_says_it_could_not() {
    let (code, t, _) = check(
        "[metrics]\nsource = \"prometheus\"\nurl = \"http://127.0.0.1:9\"\ninterval = \"10s\"\n",
    );
    assert_eq!(code, Some(0), "{t}");
    assert!(
        t.contains("could not ask Prometheus for its scrape interval")
            && t.contains("set [metrics] scrape_interval"),
        "{t}"
    );
}
