//! The README, followed literally by a newcomer: every `rollbot …` line of
//! its install, quickstart and first-setup sections runs against the built
//! binary (on `PATH`, as after `cargo install`), in a directory laid out
//! like a clone, with the configuration the README shows; and that
//! configuration serves Slack in Socket Mode, reads a real Prometheus and
//! talks to a Kubernetes API server.

use crate::support::fake_kube::{self, DeploymentController, FakeKube, Pace};
use crate::support::fake_slack::{self, FakeSlack};
use crate::support::prometheus::Prometheus;
use crate::support::{app, bin, free_port, text, Server};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const README: &str = include_str!("../../README.md");

/// The sections a newcomer follows in order, by the start of their heading.
const FOLLOWED: &[&str] = &["## Install", "## Quickstart", "## First real setup"];

/// A fenced block: its language and text, under which `##` heading.
struct Block {
    section: String,
    lang: String,
    text: String,
}

fn blocks() -> Vec<Block> {
    let mut out = Vec::new();
    let mut section = String::new();
    let mut open: Option<Block> = None;
    for line in README.lines() {
        match &mut open {
            Some(b) if line.trim_start().starts_with("```") => {
                out.push(std::mem::replace(
                    b,
                    Block {
                        section: String::new(),
                        lang: String::new(),
                        text: String::new(),
                    },
                ));
                open = None;
            }
            Some(b) => {
                b.text.push_str(line);
                b.text.push('\n');
            }
            None if line.trim_start().starts_with("```") => {
                open = Some(Block {
                    section: section.clone(),
                    lang: line.trim_start().trim_start_matches('`').trim().to_string(),
                    text: String::new(),
                });
            }
            None if line.starts_with("## ") => section = line.to_string(),
            None => {}
        }
    }
    out
}

fn followed(b: &Block) -> bool {
    FOLLOWED.iter().any(|s| b.section.starts_with(s))
}

/// Every `rollbot …` line of the followed sections' shell blocks, in order.
fn rollbot_lines() -> Vec<String> {
    blocks()
        .iter()
        .filter(|b| followed(b) && b.lang == "sh")
        .flat_map(|b| b.text.lines().map(str::trim).map(str::to_string))
        .filter(|l| l.starts_with("rollbot "))
        .collect()
}

/// The configuration the first setup tells the reader to save as rollbot.toml.
fn first_setup_config() -> String {
    let tomls: Vec<Block> = blocks()
        .into_iter()
        .filter(|b| b.section.starts_with("## First real setup") && b.lang == "toml")
        .collect();
    assert_eq!(
        tomls.len(),
        1,
        "the first setup shows exactly one configuration (rollbot.toml)"
    );
    tomls[0].text.clone()
}

/// The value of the first `key = "…"` line of `config` whose value starts with `prefix`.
fn quoted_value(config: &str, prefix: &str) -> String {
    config
        .split('"')
        .find(|v| v.starts_with(prefix))
        .unwrap_or_else(|| panic!("the README's config has no value starting with {prefix}"))
        .to_string()
}

/// A directory laid out like a fresh clone, with `rollbot` on PATH.
struct Clone {
    dir: tempfile::TempDir,
    path: String,
}

impl Clone {
    fn new() -> Clone {
        let dir = tempfile::tempdir().unwrap();
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        std::fs::create_dir_all(dir.path().join("config")).unwrap();
        for f in ["config/demo-tour.txt", "config/demo.toml"] {
            std::fs::copy(root.join(f), dir.path().join(f)).unwrap();
        }
        let bin_dir = dir.path().join(".bin");
        std::fs::create_dir_all(&bin_dir).unwrap();
        std::os::unix::fs::symlink(bin(), bin_dir.join("rollbot")).unwrap();
        let path = format!(
            "{}:{}",
            bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        Clone { dir, path }
    }

    /// Runs one README line through the shell, as the reader would.
    fn run(&self, line: &str) -> std::process::Output {
        Command::new("sh")
            .args(["-c", line])
            .current_dir(self.dir.path())
            .env("PATH", &self.path)
            .env("ROLLBOT_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .expect("run sh")
    }
}

#[test]
fn the_two_commands_stay_at_the_top() {
    // CI runs the second one; a newcomer runs both before reading further.
    let first = blocks().into_iter().next().expect("the README has code");
    let commands: Vec<&str> = first
        .text
        .lines()
        .map(|l| l.split('#').next().unwrap().trim())
        .collect();
    assert_eq!(
        commands,
        ["cargo run --release -- demo", "scripts/test.sh"],
        "the README must open with the demo and the test command"
    );
    assert!(first.section.is_empty(), "they come before any section");
    assert!(
        README.lines().count() <= 320,
        "the README is what a newcomer needs; move the rest to docs/"
    );
}

#[test]
fn every_rollbot_line_of_install_quickstart_and_first_setup_works() {
    let lines = rollbot_lines();
    let clone = Clone::new();
    std::fs::write(clone.dir.path().join("rollbot.toml"), first_setup_config()).unwrap();
    let mut seen = Vec::new();
    let mut rollout: Option<String> = None;
    for written in &lines {
        let words: Vec<&str> = written.split_whitespace().collect();
        let sub = words.get(1).copied().unwrap_or_default();
        if sub == "serve" {
            // Runs until stopped and needs Slack, Prometheus and a cluster:
            // the test below starts it on this config against stand-ins.
            assert_eq!(written, "rollbot serve --config rollbot.toml");
            seen.push("serve");
            continue;
        }
        let line = match &rollout {
            Some(id) => written.replace("<rollout>", id),
            None => {
                assert!(
                    !written.contains("<rollout>"),
                    "`{written}` needs a rollout ID the lines before it do not print"
                );
                written.clone()
            }
        };
        let o = clone.run(&line);
        let t = text(&o);
        assert!(o.status.success(), "`{line}` failed:\n{t}");
        let stdout = String::from_utf8_lossy(&o.stdout).to_string();
        match sub {
            "--version" => {
                assert!(stdout.starts_with("rollbot "), "{t}");
                seen.push("version");
            }
            "demo" => {
                // The ID the summary shows, which `postmortem` takes.
                let id = stdout
                    .split("rollout checkout-")
                    .nth(1)
                    .and_then(|rest| rest.split_whitespace().next())
                    .map(|tail| format!("checkout-{tail}"));
                assert!(id.is_some(), "no checkout rollout ID in the tour:\n{t}");
                assert!(stdout.contains("Rolled back checkout"), "{t}");
                rollout = id;
                seen.push("demo");
            }
            "audit" if words.get(2) == Some(&"verify") => {
                assert!(stdout.contains("hash chain verified"), "{t}");
                seen.push("audit verify");
            }
            "postmortem" => {
                assert!(stdout.starts_with("# Postmortem draft: checkout"), "{t}");
                assert!(
                    stdout.contains("| rollback |"),
                    "the rollback is in the timeline:\n{t}"
                );
                seen.push("postmortem");
            }
            "commands" => {
                let manifest =
                    std::fs::read_to_string(clone.dir.path().join("manifest.yaml")).unwrap();
                assert!(manifest.contains("socket_mode_enabled: true"), "{manifest}");
                assert!(manifest.contains("    - command: /rollbot\n"), "{manifest}");
                seen.push("manifest");
            }
            "check-config" => {
                // The README quotes what it prints.
                let said = format!("`{}`", stdout.trim());
                assert!(
                    README.contains(&said),
                    "check-config printed {said}, which the README does not show"
                );
                seen.push("check-config");
            }
            _ => {}
        }
    }
    // The install step itself is cargo's; the README names both ways.
    let install: String = blocks()
        .iter()
        .filter(|b| b.section.starts_with("## Install"))
        .map(|b| b.text.clone())
        .collect();
    assert!(
        install.contains("cargo install --locked --path ."),
        "{install}"
    );
    assert!(README.contains("target/release/rollbot"));
    for expected in [
        "version",
        "demo",
        "audit verify",
        "postmortem",
        "manifest",
        "check-config",
        "serve",
    ] {
        assert!(
            seen.contains(&expected),
            "the README's followed sections lost their `{expected}` line; found {lines:#?}"
        );
    }
}

/// The cluster the README's first setup talks to: `checkout` (three
/// revisions) and its canary Deployment in namespace `shop`.
async fn shop_cluster() -> (FakeKube, DeploymentController) {
    let kube = FakeKube::standard().await;
    let controller = DeploymentController::install(&kube, Pace::Immediate);
    fake_kube::seed_history(
        &kube,
        "shop",
        "checkout",
        3,
        &[
            ("registry.example.com/checkout:1.0", "deploy 1.0"),
            ("registry.example.com/checkout:1.1", "deploy 1.1"),
        ],
    );
    kube.create(
        "deployments",
        "shop",
        fake_kube::deployment("checkout-canary", "registry.example.com/checkout:1.2", 1),
    );
    (kube, controller)
}

/// The README's first-setup `config` listening on `port`, with its store
/// in `data`, reading Prometheus at `prometheus` and Slack at `slack`.
/// Each line replaced must still be in the README, so the test follows it
/// when it changes.
fn pointed_at_stand_ins(
    config: &str,
    port: u16,
    data: &Path,
    prometheus: &str,
    slack: &str,
) -> String {
    let replace = |text: String, from: &str, to: String| {
        assert!(
            text.contains(from),
            "the README's config no longer has `{from}`"
        );
        text.replace(from, &to)
    };
    let served = replace(
        config.to_string(),
        "listen = \"127.0.0.1:8080\"",
        format!("listen = \"127.0.0.1:{port}\""),
    );
    let served = replace(
        served,
        "path = \"./rollbot-data\"",
        format!("path = \"{}\"", data.display()),
    );
    let served = replace(
        served,
        "url = \"http://prometheus.example.com:9090\"",
        format!("url = \"{prometheus}\""),
    );
    replace(
        served,
        "mode = \"socket\"",
        format!("mode = \"socket\"\napi_url = \"{slack}\""),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_setup_config_joins_slack_reads_prometheus_and_answers_status() {
    let config = first_setup_config();
    let channel = quoted_value(&config, "C");
    let me = quoted_value(&config, "slack:U")
        .trim_start_matches("slack:")
        .to_string();

    // Slack, with the channel the bot was invited to.
    let slack = FakeSlack::start().await;
    slack.add_channel(&channel, true);

    // The service's metrics, labelled as the README says, scraped by a real Prometheus.
    let dir = tempfile::tempdir().unwrap();
    let rates = |errors| app::TrackRates::new(200.0, errors);
    let service = app::App::start("checkout", rates(0.01), rates(0.01));
    let prometheus = {
        let d = dir.path().join("prometheus");
        let target = service.target();
        tokio::task::spawn_blocking(move || Prometheus::scraping(&d, &target))
            .await
            .unwrap()
    };

    // The cluster: `checkout` and its canary Deployment in `shop`, reached
    // through a kubeconfig as on the reader's machine.
    let (kube, _controller) = shop_cluster().await;
    let kubeconfig = kube.kubeconfig(dir.path(), "shop");

    // The README's file, pointed at the stand-ins.
    let port = free_port();
    let served = pointed_at_stand_ins(
        &config,
        port,
        &dir.path().join("data"),
        &prometheus.url(),
        &slack.api_url(),
    );
    let path = dir.path().join("rollbot.toml");
    std::fs::write(&path, served).unwrap();
    let env = [
        (
            "SLACK_SIGNING_SECRET",
            fake_slack::SIGNING_SECRET.to_string(),
        ),
        ("SLACK_BOT_TOKEN", fake_slack::BOT_TOKEN.to_string()),
        ("SLACK_APP_TOKEN", fake_slack::APP_TOKEN.to_string()),
        ("KUBECONFIG", kubeconfig.display().to_string()),
        ("ROLLBOT_LOG", "warn".to_string()),
    ];
    let server = tokio::task::spawn_blocking(move || {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Server::start_existing(&path, port, &env)
    })
    .await
    .unwrap();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let get = |p: &str| {
        let req = http.get(server.url(p));
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };

    // Step 4: /healthz answers ok; /readyz is ready once the socket is open.
    assert_eq!(get("/healthz").await, (200, "ok\n".to_string()));
    let deadline = Instant::now() + Duration::from_secs(20);
    let ready = loop {
        let (code, body) = get("/readyz").await;
        if code == 200 {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz stayed {code}: {body}\nlog:\n{}",
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let ready: serde_json::Value = serde_json::from_str(&ready).unwrap();
    let summary = ready["summary"].as_str().unwrap_or_default();
    assert!(summary.starts_with("ready: 1 services"), "{ready}");
    assert_eq!(slack.connections(), 1, "one Socket Mode connection");

    // Step 5: `/rollbot status checkout` answers with the cluster's view.
    slack.socket_send(&fake_slack::slash_envelope(
        "env-status",
        "/rollbot",
        "status checkout",
        &me,
        &channel,
        "trig-status",
        &slack.response_url("trig-status"),
    ));
    let (ack, _) = slack.ack("env-status").await;
    assert!(
        ack["payload"]["text"]
            .as_str()
            .is_some_and(|t| t.contains("Looking that up")),
        "{ack}"
    );
    let answer = slack
        .wait_for(20, "the status answer", |f| {
            f.ephemerals(&me)
                .into_iter()
                .map(|m| m.text)
                .chain(
                    f.responses("trig-status")
                        .into_iter()
                        .map(|v| v.to_string()),
                )
                .find(|t| t.contains("checkout-canary"))
        })
        .await;
    assert!(answer.contains("checkout"), "{answer}");

    // `watch = true`: the canary is watched and its summary, judged on the
    // metrics Prometheus returns for both tracks, appears in the channel.
    // Without both tracks' series the verdict would be `no_data`.
    let summary = slack
        .wait_for(90, "a summary judged on both tracks' metrics", |f| {
            f.messages(&channel)
                .into_iter()
                .map(|m| m.current_text().to_string())
                .find(|t| t.contains("Canary checkout") && t.contains("healthy"))
        })
        .await;
    assert!(
        summary.contains("registry.example.com/checkout:1.2"),
        "{summary}"
    );
    drop(prometheus);
    server.terminate();
}
