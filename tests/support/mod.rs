//! Helpers shared by the end-to-end tests: the rollbot binary, free ports,
//! a server process that is stopped when the test ends.

#![allow(dead_code)]

pub mod api;
pub mod app;
pub mod audit;
pub mod chat_record;
pub mod fake_argo;
pub mod fake_discord;
pub mod fake_kube;
pub mod fake_pagerduty;
pub mod fake_slack;
pub mod fake_statuspage;
pub mod health_endpoint;
pub mod in_process;
pub mod kube_bot;
pub mod postgres;
pub mod prometheus;
pub mod registry;
pub mod slack_rig;
pub mod tcp_proxy;
pub mod unleash;
pub mod webhook_receiver;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rollbot"))
}

pub fn rollbot(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env("ROLLBOT_LOG", "warn")
        .output()
        .expect("run rollbot")
}

/// `rollbot demo --script SCRIPT --data DATA`.
pub fn demo(script: &Path, data: &Path) -> Output {
    rollbot(&[
        "demo",
        "--script",
        script.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ])
}

/// `rollbot replay ARGS --json`, which must succeed: the summary on its
/// last line.
pub fn replay_summary(args: &[&str]) -> serde_json::Value {
    let o = rollbot(&[&["replay"], args, &["--json"]].concat());
    assert!(o.status.success(), "replay {args:?}: {}", text(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    let last = out.lines().last().unwrap_or_default();
    serde_json::from_str::<serde_json::Value>(last).unwrap()["summary"].clone()
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `rollbot serve` process on 127.0.0.1, killed on drop.
pub struct Server {
    pub child: Child,
    pub port: u16,
    pub config: PathBuf,
    /// rollbot's standard error (its log).
    pub log: PathBuf,
}

impl Server {
    /// Writes `config` (with `{port}` and `{data}` filled in) and starts the server.
    pub fn start(dir: &Path, config: &str, env: &[(&str, &str)]) -> Server {
        let port = free_port();
        let text = config
            .replace("{port}", &port.to_string())
            .replace("{data}", &dir.join("data").display().to_string());
        let path = dir.join("rollbot.toml");
        std::fs::write(&path, text).unwrap();
        Server::start_existing(&path, port, env)
    }

    /// [`Server::start`] from async code: waiting for the port blocks, so
    /// it waits off the test's runtime.
    pub async fn start_async(dir: &Path, config: &str, env: &[(&str, &str)]) -> Server {
        let (dir, config) = (dir.to_path_buf(), config.to_string());
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        tokio::task::spawn_blocking(move || {
            let env: Vec<(&str, &str)> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            Server::start(&dir, &config, &env)
        })
        .await
        .unwrap()
    }

    pub fn start_existing(path: &Path, port: u16, env: &[(&str, &str)]) -> Server {
        let log = path.with_extension(format!("{port}.log"));
        let mut cmd = Command::new(bin());
        cmd.args(["serve", "--config", path.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .env("ROLLBOT_LOG", "warn,rollbot::chat=info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start rollbot serve");
        let s = Server {
            child,
            port,
            config: path.to_path_buf(),
            log,
        };
        s.wait_ready();
        s
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// GETs `path` (`/readyz`, `/metrics`): the status and the body.
    pub async fn get(&self, path: &str) -> (u16, String) {
        let r = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
            .get(self.url(path))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// Waits (bounded by `within`) until `/readyz` answers 200 (`ready`)
    /// or anything else (`!ready`, a standby or a failing store): how long
    /// that took, and the last answer's body.
    pub async fn wait_readyz(&self, ready: bool, within: Duration) -> (Duration, String) {
        let started = Instant::now();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        loop {
            let (code, body) = match http.get(self.url("/readyz")).send().await {
                Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
                Err(e) => (0, e.to_string()),
            };
            if (code == 200) == ready {
                return (started.elapsed(), body);
            }
            assert!(
                started.elapsed() < within,
                "rollbot on port {} not {} within {within:?}: /readyz {code} {body}\n{}",
                self.port,
                if ready { "ready" } else { "not ready" },
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// What rollbot logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "rollbot serve did not listen on port {} within 20 s",
            self.port
        );
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "rollbot did not stop within 30 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: a crash.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The port a config written by [`Server::start`] listens on.
pub fn free_port_for(config: &Path) -> u16 {
    let text = std::fs::read_to_string(config).unwrap();
    let line = text.lines().find(|l| l.starts_with("listen")).unwrap();
    line.rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('"')
        .parse()
        .unwrap()
}

/// `rollbot audit export` (JSON Lines) of the store in `data`, parsed: one
/// value per entry, oldest first. Read after the server stopped.
pub fn audit_export(data: &Path) -> Vec<serde_json::Value> {
    let out = rollbot(&["audit", "export", "--data", data.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}
