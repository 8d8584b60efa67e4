//! Each kind of bad configuration gets a message with its line and column
//! and what to write instead.

use super::*;

const BASE: &str = r##"[channels.deploys]
console = "#deploys"

[backends.sim]
type = "simulated"

[[services]]
name = "checkout"
backend = "sim"
deploy_channel = "deploys"

[[roles.responder]]
members = ["slack:U0123ABCD"]
services = ["prod/*"]
"##;

fn errors(text: &str) -> Vec<ConfigError> {
    Config::parse(Path::new("rollbot.toml"), text)
        .expect_err("config should be refused")
        .0
}

fn one(text: &str) -> ConfigError {
    let e = errors(text);
    assert_eq!(e.len(), 1, "{e:?}");
    e.into_iter().next().unwrap()
}

#[test]
fn the_base_config_is_valid() {
    let c = Config::parse(Path::new("rollbot.toml"), BASE).unwrap();
    assert_eq!(c.service("checkout").unwrap().key(), "prod/checkout");
}

#[test]
fn unknown_key_points_at_it_and_suggests_the_right_one() {
    let e = one(&BASE.replace("backend = \"sim\"", "backnd = \"sim\""));
    assert_eq!((e.line, e.column), (9, 1));
    assert!(e.message.contains("unknown field `backnd`"), "{e}");
    assert_eq!(e.help.as_deref(), Some("did you mean `backend`?"));
}

#[test]
fn wrong_type_is_located() {
    let e = one(&BASE.replace(
        "deploy_channel = \"deploys\"",
        "deploy_channel = \"deploys\"\ncritical = \"yes\"",
    ));
    assert_eq!(e.line, 11);
    assert!(
        e.message.contains("invalid type") && e.message.contains("boolean"),
        "{e}"
    );
}

#[test]
fn service_naming_a_missing_backend() {
    let e = one(&BASE.replace("backend = \"sim\"", "backend = \"simm\""));
    assert_eq!((e.line, e.column), (9, 11));
    assert_eq!(
        e.message,
        "service `checkout` names backend `simm`, which is not defined"
    );
    assert!(e.help.unwrap().contains("did you mean `sim`?"));
}

#[test]
fn service_naming_a_missing_channel() {
    let e = one(&BASE.replace(
        "deploy_channel = \"deploys\"",
        "deploy_channel = \"deploys\"\nincident_channel = \"incidents\"",
    ));
    assert_eq!(e.line, 11);
    assert!(
        e.message
            .contains("channel `incidents`, which is not defined"),
        "{e}"
    );
}

#[test]
fn invalid_cron_shows_the_crontab_form() {
    let text = format!("{BASE}\n[[freeze.windows]]\nname = \"weekend\"\nkind = \"deny\"\nschedule = \"0 0 18 * * 5\"\nduration = \"62h\"\n");
    let e = one(&text);
    assert_eq!(e.line, 19);
    assert!(
        e.message.contains("6 fields") && e.message.contains("\"0 18 * * 5\""),
        "{e}"
    );
}

#[test]
fn invalid_glob_in_roles() {
    let e = one(&BASE.replace("services = [\"prod/*\"]", "services = [\"prod/[*\"]"));
    assert_eq!(e.line, 14);
    assert!(e.message.contains("not a valid glob"), "{e}");
}

#[test]
fn inline_secret_is_refused() {
    let text = format!("{BASE}\n[chat.slack]\nsigning_secret = \"8f742231b10e8888abcd99yyyzzz85a5\"\nbot_token = \"${{SLACK_BOT_TOKEN}}\"\n");
    let e = one(&text);
    assert_eq!(e.line, 17);
    assert!(e.message.contains("never written in the config"), "{e}");
    assert!(
        !e.to_string().contains("zzz85a5\""),
        "the message must not repeat the secret: {e}"
    );
}

#[test]
fn display_names_are_not_members() {
    let e = one(&BASE.replace("slack:U0123ABCD", "@alice"));
    assert_eq!((e.line, e.column), (13, 12));
    assert!(e.message.contains("no platform prefix"), "{e}");
}

#[test]
fn unknown_role_and_time_zone() {
    let e = one(&BASE.replace("[[roles.responder]]", "[[roles.responders]]"));
    assert!(e.message.contains("unknown variant `responders`"), "{e}");
    let text = format!("{BASE}\n[[freeze.windows]]\nname = \"w\"\nkind = \"deny\"\nschedule = \"0 18 * * 5\"\nduration = \"1h\"\ntimezone = \"Berlin\"\n");
    let e = one(&text);
    assert!(e.message.contains("not an IANA time zone"), "{e}");
    assert_eq!(e.line, 21);
}

#[test]
fn several_cross_reference_errors_are_reported_together() {
    let text = BASE
        .replace("backend = \"sim\"", "backend = \"nope\"")
        .replace(
            "deploy_channel = \"deploys\"",
            "deploy_channel = \"nowhere\"",
        );
    let e = errors(&text);
    assert_eq!(e.len(), 2, "{e:?}");
    let shown = ConfigErrors(e).to_string();
    assert!(
        shown.contains("rollbot.toml:9:11")
            && shown.contains("rollbot.toml:10:18")
            && shown.ends_with("2 errors in the configuration"),
        "{shown}"
    );
}

#[test]
fn duplicate_services() {
    let text = format!("{BASE}\n[[services]]\nname = \"checkout\"\nbackend = \"sim\"\n");
    let e = one(&text);
    assert!(e.message.contains("defined twice (first at line 8)"), "{e}");
}

#[test]
fn the_shipped_configs_are_valid() {
    std::env::set_var("ROLLBOT_UNUSED", "x");
    let example = include_str!("../../config/rollbot.example.toml");
    Config::parse(Path::new("config/rollbot.example.toml"), example)
        .unwrap_or_else(|e| panic!("{e}"));
    Config::demo();
}

#[test]
fn errors_inside_backend_tables_point_at_the_key_or_value() {
    let e = one(&BASE.replace(
        "type = \"simulated\"",
        "type = \"simulated\"\nlatncy = \"1s\"",
    ));
    assert_eq!((e.line, e.column), (6, 1), "{e}");
    assert_eq!(e.help.as_deref(), Some("did you mean `latency`?"));
    let e = one(&BASE.replace(
        "type = \"simulated\"",
        "type = \"simulated\"\nlatency = \"soon\"",
    ));
    assert_eq!((e.line, e.column), (6, 11), "{e}");
    assert!(e.message.contains("not a duration"), "{e}");
}

#[test]
fn discord_ids_api_url_and_gateway_are_checked() {
    let good = format!(
        "{BASE}\n[chat.discord]\napplication_id = \"123456789012345678\"\npublic_key = \"{}\"\nbot_token = \"${{DISCORD_BOT_TOKEN}}\"\nchannel_ids = [\"112233445566778899\"]\n",
        "ab".repeat(32)
    );
    let c = Config::parse(Path::new("rollbot.toml"), &good).unwrap();
    let d = c.chat.discord.as_ref().unwrap();
    assert_eq!(d.api_url, "https://discord.com/api/v10");
    assert_eq!(d.channel_ids, vec!["112233445566778899".to_string()]);
    let e = errors(&good.replace("channel_ids = [\"112233445566778899\"]", "channel_ids = [\"#deploys\"]\napi_url = \"http://127.0.0.1:9/api\"\ngateway = true\napplication_id_x = 1").replace("application_id_x = 1", ""));
    let text: Vec<String> = e.iter().map(|e| e.to_string()).collect();
    let all = text.join("\n");
    assert!(
        all.contains("channel_ids: `#deploys` is not a Discord ID"),
        "{all}"
    );
    assert!(
        all.contains("must be an http(s) URL ending in /api/v10"),
        "{all}"
    );
    assert!(all.contains("gateway = true is not supported"), "{all}");
    let e = one(&good.replace("123456789012345678", "my-app"));
    assert!(
        e.to_string()
            .contains("application_id `my-app` is not a Discord ID"),
        "{e}"
    );
}

#[test]
fn webhook_backends_need_a_url_and_a_secret() {
    let ok = BASE.replace(
        "type = \"simulated\"",
        "type = \"webhook\"\nurl = \"https://ci.example.com/hook\"\nsecret = \"${HOOK_SECRET}\"\nretries = 2",
    );
    Config::parse(Path::new("rollbot.toml"), &ok).unwrap_or_else(|e| panic!("{e}"));

    let e = one(&ok.replace("secret = \"${HOOK_SECRET}\"\n", ""));
    assert!(e.message.contains("needs a signing secret"), "{e}");
    assert!(e.help.as_deref().unwrap().contains("secret_file"), "{e}");
    let e = one(&ok.replace("https://ci.example.com/hook", "ci.example.com/hook"));
    assert!(e.message.contains("not an http:// or https:// URL"), "{e}");
    let e = one(&ok.replace("retries = 2", "retries = 50"));
    assert!(e.message.contains("at most 10"), "{e}");
    let e = one(&ok.replace("retries = 2", "retries = 2\ntimeout = \"60s\""));
    assert!(
        e.message.contains("backend_timeout is 2m")
            && e.help.as_deref().unwrap().contains("[engine]"),
        "{e}"
    );
    let e = one(&ok.replace("${HOOK_SECRET}", "hunter2"));
    assert!(e.message.contains("never written in the config"), "{e}");
}

#[test]
fn gitops_backends_check_file_key_and_credentials() {
    let ok = BASE.replace(
        "type = \"simulated\"",
        "type = \"gitops\"\nrepository = \"git@github.com:acme/deploy.git\"\nfile = \"apps/{service}/values.yaml\"\nkey = \"image.tag\"\nmode = \"revert\"",
    );
    Config::parse(Path::new("rollbot.toml"), &ok).unwrap_or_else(|e| panic!("{e}"));

    let e = one(&ok.replace("apps/{service}/values.yaml", "../outside.yaml"));
    assert!(
        e.message.contains("must be a path inside the repository"),
        "{e}"
    );
    let e = one(&ok.replace("key = \"image.tag\"", "key = \"image..tag\""));
    assert!(e.message.contains("not a dotted key path"), "{e}");
    let e = one(&ok.replace(
        "mode = \"revert\"",
        "mode = \"revert\"\nssh_key_file = \"/k\"\ntoken = \"${T}\"",
    ));
    assert!(e.message.contains("both ssh_key_file and a token"), "{e}");
    let e = one(&ok.replace("mode = \"revert\"", "mode = \"undo\""));
    assert!(e.message.contains("unknown variant `undo`"), "{e}");
}

#[test]
fn unleash_backends_need_a_token_and_each_service_a_flag() {
    let ok = BASE
        .replace(
            "type = \"simulated\"",
            "type = \"unleash\"\nurl = \"https://unleash.example.com\"\nadmin_token = \"${UNLEASH_ADMIN_TOKEN}\"\nenvironment = \"production\"\nsteps = [5, 50, 100]",
        )
        .replace(
            "deploy_channel = \"deploys\"\n",
            "deploy_channel = \"deploys\"\n\n[services.target]\nflag = \"new-checkout\"\n",
        );
    Config::parse(Path::new("rollbot.toml"), &ok).unwrap_or_else(|e| panic!("{e}"));

    // The missing flag is reported at the service's name.
    let e = one(&ok.replace("flag = \"new-checkout\"\n", "steps = \"10,50\"\n"));
    assert!(
        e.message
            .contains("service `checkout` uses Unleash backend `sim` but names no flag"),
        "{e}"
    );
    assert_eq!((e.line, e.column), (12, 8), "{e}");
    assert!(
        e.help.as_deref().unwrap().contains("[services.target]"),
        "{e}"
    );
    let e = one(&ok.replace("flag = \"new-checkout\"", "flag = \"x\"\nsteps = \"50,10\""));
    assert!(e.message.contains("must rise"), "{e}");
    let e = one(&ok.replace("steps = [5, 50, 100]", "steps = [0, 100]"));
    assert!(e.message.contains("from 1 to 100"), "{e}");
    let e = one(&ok.replace("admin_token = \"${UNLEASH_ADMIN_TOKEN}\"\n", ""));
    assert!(e.message.contains("needs an admin API token"), "{e}");
    assert!(
        e.help.as_deref().unwrap().contains("admin_token_file"),
        "{e}"
    );
    let e = one(&ok.replace("${UNLEASH_ADMIN_TOKEN}", "*:*.abc123"));
    assert!(e.message.contains("never written in the config"), "{e}");
    let e = one(&ok.replace("steps = [5, 50, 100]", "verify_timeout = \"5m\""));
    assert!(
        e.message
            .contains("verification (verify_timeout + timeout) can take 5m 10s"),
        "{e}"
    );
}

#[test]
fn leader_election_timings_must_let_a_holder_stop_before_another_takes_over() {
    let base =
        "[backends.sim]\ntype = \"simulated\"\n[[services]]\nname = \"a\"\nbackend = \"sim\"\n";
    let parse = |le: &str| {
        Config::parse(
            Path::new("t.toml"),
            &format!("{base}[leader_election]\n{le}"),
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default()
    };
    assert_eq!(parse("lease = \"rollbot\"\n"), "", "defaults are valid");
    let e = parse("lease_duration = \"10s\"\nrenew_deadline = \"10s\"\n");
    assert!(e.contains("t.toml:6:1"), "{e}");
    assert!(
        e.contains("renew_deadline (10s) must be shorter than lease_duration (10s)"),
        "{e}"
    );
    let e = parse("retry_period = \"12s\"\n");
    assert!(
        e.contains(
            "retry_period (12s) must be longer than 0s and shorter than renew_deadline (10s)"
        ),
        "{e}"
    );
    let e = parse("token = \"plain-text\"\n");
    assert!(e.contains("t.toml:7:9"), "{e}");
    assert!(
        e.contains("secrets are never written in the config itself"),
        "{e}"
    );
    let e = parse("leese = \"x\"\n");
    assert!(e.contains("leese"), "{e}");
}

#[test]
fn independent_errors_are_all_reported_and_none_twice() {
    let text = format!(
        "{}\n[chat.slack]\nsigning_secret = \"8f742231b10e8888abcd99yyyzzz85a5\"\nbot_token = \"${{SLACK_BOT_TOKEN}}\"\n\n[[freeze.windows]]\nname = \"nights\"\nkind = \"deny\"\nschedule = \"0 22 * * *\"\nduration = \"8h\"\ntimezone = \"Berlin\"\n",
        BASE.replace("slack:U0123ABCD", "alice")
            .replace("type = \"simulated\"", "type = \"simulated\"\nlatency = \"soon\"")
            .replace("backend = \"sim\"", "backend = \"sim\"\ncritical = \"yes\"")
    );
    let e = errors(&text);
    let shown: Vec<String> = e.iter().map(|e| e.to_string()).collect();
    let all = shown.join("\n");
    for (line, what) in [
        (6, "not a duration"),
        (11, "invalid type"),
        (19, "never written in the config"),
        (27, "not an IANA time zone"),
        (15, "no platform prefix"),
    ] {
        assert!(
            e.iter().any(|e| e.line == line && e.message.contains(what)),
            "{what} at line {line} missing from:\n{all}"
        );
    }
    // The secret's line was left out to read on; that is not a second problem.
    assert_eq!(e.len(), 5, "{all}");
    assert!(!all.contains("needs signing_secret"), "{all}");
    assert!(!all.contains("zzz85a5\""), "{all}");
}

#[test]
fn a_required_key_left_out_to_read_on_is_not_reported_missing() {
    let text = format!(
        "{}\n[[freeze.windows]]\nname = \"w\"\nkind = \"deny\"\nschedule = \"61 25 * * *\"\nduration = \"1h\"\n",
        BASE.replace("slack:U0123ABCD", "alice")
    );
    let e = errors(&text);
    let all: Vec<String> = e.iter().map(|e| e.to_string()).collect();
    // The window whose schedule was bad is left out to read on, and its
    // missing schedule is not a second error; the bad member is found too.
    assert_eq!(e.len(), 2, "{all:?}");
    assert!(!all.iter().any(|m| m.contains("missing")), "{all:?}");
    assert!(
        e[0].message.contains("`alice` has no platform prefix"),
        "{all:?}"
    );
    assert!(
        e[1].message
            .starts_with("`61 25 * * *`: minute `61` is not in 0-59; hour `25` is not in 0-23"),
        "{all:?}"
    );
    assert_eq!(e[1].line, 19);
}

#[test]
fn text_that_is_not_toml_is_one_error() {
    let e = one(&format!("{BASE}\nname = \"unterminated\n"));
    assert_eq!(e.line, 16, "{e}");
}

#[test]
fn a_misspelt_store_kind_is_located_with_the_right_one_suggested() {
    let e = one(&format!("[store]\nkind = \"postgress\"\n\n{BASE}"));
    assert_eq!((e.line, e.column), (2, 8));
    assert!(e.message.contains("unknown variant `postgress`"), "{e}");
    assert_eq!(e.help.as_deref(), Some("did you mean `postgres`?"));
}

#[test]
fn a_postgres_store_needs_its_url_from_a_secret() {
    let e = one(&format!("[store]\nkind = \"postgres\"\n\n{BASE}"));
    assert_eq!(e.line, 1);
    assert!(e.message.contains("needs url (or url_file)"), "{e}");
    assert!(e.help.unwrap().contains("${ROLLBOT_STORE_URL}"));
    // Pasted into the config, the URL (and its password) is refused.
    let e = one(&format!(
        "[store]\nkind = \"postgres\"\nurl = \"postgres://rollbot:hunter2@db/rollbot\"\n\n{BASE}"
    ));
    assert_eq!(e.line, 3);
    assert!(e.message.contains("never written in the config"), "{e}");
    let e = one(&format!(
        "[store]\nkind = \"postgres\"\nurl = \"${{DB_URL}}\"\nurl_file = \"/run/db\"\n\n{BASE}"
    ));
    assert!(e.message.contains("both url and url_file"), "{e}");
    // A URL on a sled store would be silently unused.
    let e = one(&format!("[store]\nurl = \"${{DB_URL}}\"\n\n{BASE}"));
    assert!(
        e.message.contains("only used with kind = \"postgres\""),
        "{e}"
    );
    let ok = Config::parse(
        Path::new("rollbot.toml"),
        &format!("[store]\nkind = \"postgres\"\nurl_file = \"/run/db\"\n\n{BASE}"),
    )
    .unwrap();
    assert_eq!(ok.store.kind, StoreKind::Postgres);
}
