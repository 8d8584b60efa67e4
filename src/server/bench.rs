//! `rollbot bench memory`: resident memory of `rollbot serve` under a long
//! stream of signed Slack commands. A chat flood during an incident must not
//! grow rollbot until it is killed: every cache, queue and record kept per
//! request is bounded or expires.
//!
//! The bench starts a minimal Slack Web API on 127.0.0.1 (it answers every
//! call `ok`), runs this binary's `serve` against it as a child process, so
//! only the server's memory is measured, and sends `/rollbot status` commands
//! signed like Slack at a fixed rate. It samples the server's resident memory
//! every 10,000 commands and once more after the server has been idle.

use axum::extract::Path as UrlPath;
use axum::routing::post;
use axum::{Json, Router};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use std::fmt::Write as _;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SECRET: &str = "bench-signing-secret-0b9e";
const BOT_TOKEN: &str = "xoxb-bench-token";
const CHANNEL: &str = "C0BENCH";
const USERS: usize = 50;
/// Targets from the memory issue: peak, and the end against the 10,000 mark.
const PEAK_MB: f64 = 150.0;
const DRIFT_MB: f64 = 20.0;

pub struct MemoryOptions {
    pub commands: u64,
    pub rate: u64,
    /// Idle time before the last sample.
    pub settle: Duration,
    /// `[store] cache_mb` of the server.
    pub cache_mb: u64,
}

/// The Slack Web API as far as `serve` needs it: every method answers `ok`.
async fn slack_api(UrlPath(method): UrlPath<String>) -> Json<Value> {
    let mut v = match method.as_str() {
        "auth.test" => json!({"url": "https://bench.slack.test/", "team": "Bench",
            "user": "rollbot", "team_id": "T0BENCH", "user_id": "U0BOT", "bot_id": "B0BOT"}),
        "conversations.info" => json!({"channel": {"id": CHANNEL, "name": "deploys",
            "is_channel": true, "created": 1_600_000_000, "is_member": true,
            "is_archived": false, "is_private": false}}),
        "chat.postMessage" => json!({"channel": CHANNEL, "ts": "1700000000.000100",
            "message": {"type": "message", "text": "", "ts": "1700000000.000100"}}),
        "chat.postEphemeral" => json!({"message_ts": "1700000000.000200"}),
        "usergroups.users.list" => json!({"users": []}),
        _ => json!({}),
    };
    v["ok"] = json!(true);
    Json(v)
}

fn sign(ts: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("any key length");
    mac.update(format!("v0:{ts}:").as_bytes());
    mac.update(body.as_bytes());
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn config(port: u16, api: u16, dir: &std::path::Path, cache_mb: u64) -> String {
    let members: Vec<String> = (0..USERS)
        .map(|i| format!("\"slack:U0BENCH{i:02}\""))
        .collect();
    format!(
        r#"[server]
listen = "127.0.0.1:{port}"

[store]
path = "{store}"
cache_mb = {cache_mb}

[channels.deploys]
slack = "{CHANNEL}"

[backends.sim]
type = "simulated"

[[services]]
name = "checkout"
backend = "sim"
deploy_channel = "deploys"

[[roles.viewer]]
members = [{members}]

[chat.slack]
mode = "http"
api_url = "http://127.0.0.1:{api}/api"
signing_secret = "${{ROLLBOT_BENCH_SIGNING_SECRET}}"
bot_token = "${{ROLLBOT_BENCH_BOT_TOKEN}}"
"#,
        store = dir.join("store").display(),
        members = members.join(", ")
    )
}

/// Stops the child server when the bench ends, however it ends.
struct Child(std::process::Child);

impl Drop for Child {
    /// SIGTERM first, so the server stops as it would in production; a
    /// kill only if it has not stopped within 20 s.
    fn drop(&mut self) {
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub async fn run(o: MemoryOptions) -> anyhow::Result<String> {
    let dir = tempfile::Builder::new()
        .prefix("rollbot-bench-memory-")
        .tempdir()?;
    let api = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let api_port = api.local_addr()?.port();
    let app = Router::new().route("/api/{method}", post(slack_api));
    tokio::spawn(async move { axum::serve(api, app).await });

    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let config = dir.path().join("rollbot.toml");
    std::fs::write(
        &config,
        self::config(port, api_port, dir.path(), o.cache_mb),
    )?;
    let child = Child(
        Command::new(std::env::current_exe()?)
            .args(["serve", "--config", config.to_str().unwrap_or_default()])
            .env("ROLLBOT_BENCH_SIGNING_SECRET", SECRET)
            .env("ROLLBOT_BENCH_BOT_TOKEN", BOT_TOKEN)
            .env("ROLLBOT_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let pid = child.0.id();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(64)
        .build()?;
    let base = format!("http://127.0.0.1:{port}");
    // Bounded wait for the server to answer.
    let up = Instant::now();
    while http.get(format!("{base}/healthz")).send().await.is_err() {
        anyhow::ensure!(
            up.elapsed() < Duration::from_secs(60),
            "rollbot serve did not start within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let start_mb = rss_mb(pid);

    let in_flight = Arc::new(tokio::sync::Semaphore::new(256));
    let failed = Arc::new(AtomicU64::new(0));
    let url = format!("{base}/slack/commands");
    let mut samples: Vec<(u64, f64)> = Vec::new();
    let t0 = Instant::now();
    let per_tick = (o.rate / 100).max(1);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sent = 0u64;
    while sent < o.commands {
        tick.tick().await;
        for _ in 0..per_tick.min(o.commands - sent) {
            let permit = in_flight.clone().acquire_owned().await?;
            let user = format!("U0BENCH{:02}", sent % USERS as u64);
            let trigger = format!("bench-{sent}");
            let body = serde_urlencoded::to_string([
                ("team_id", "T0BENCH"),
                ("channel_id", CHANNEL),
                ("user_id", user.as_str()),
                ("command", "/rollbot"),
                ("text", "status checkout"),
                ("response_url", "http://127.0.0.1:9/unused"),
                ("trigger_id", trigger.as_str()),
            ])?;
            let ts = chrono::Utc::now().timestamp();
            let req = http
                .post(&url)
                .header("content-type", "application/x-www-form-urlencoded")
                .header("x-slack-request-timestamp", ts.to_string())
                .header("x-slack-signature", sign(ts, &body))
                .body(body);
            let failed = failed.clone();
            tokio::spawn(async move {
                match req.send().await {
                    Ok(r) if r.status().is_success() => {}
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                drop(permit);
            });
            sent += 1;
        }
        if sent.is_multiple_of(10_000) {
            samples.push((sent, rss_mb(pid)));
        }
    }
    // Every answer is in before the idle wait.
    let _ = in_flight.acquire_many(256).await?;
    let took = t0.elapsed();
    tokio::time::sleep(o.settle).await;
    let settled = rss_mb(pid);
    drop(child);

    let peak = samples.iter().map(|s| s.1).fold(settled, f64::max);
    let at_10k = samples.first().map(|s| s.1).unwrap_or(start_mb);
    let met = |b: bool| if b { "met" } else { "NOT met" };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "rollbot bench memory — {} signed Slack commands at {:.0}/s ({} asked), {} refused or failed; [store] cache_mb = {}\n",
        sent,
        sent as f64 / took.as_secs_f64(),
        o.rate,
        failed.load(Ordering::Relaxed),
        o.cache_mb
    );
    let _ = writeln!(out, "{:<34} {:>12}", "commands sent", "resident MB");
    let _ = writeln!(out, "{:<34} {:>12.1}", "0 (started)", start_mb);
    for (n, mb) in &samples {
        let _ = writeln!(out, "{n:<34} {mb:>12.1}");
    }
    let _ = writeln!(
        out,
        "{:<34} {:>12.1}",
        format!("after {} idle", crate::domain::human_duration(o.settle)),
        settled
    );
    let _ = writeln!(
        out,
        "\n{:<44} {:>10}  {:<22} status",
        "measure", "result", "target"
    );
    let _ = writeln!(
        out,
        "{:<44} {:>7.1} MB  {:<22} {}",
        "peak resident memory",
        peak,
        format!("≤ {PEAK_MB:.0} MB"),
        met(peak <= PEAK_MB)
    );
    let _ = writeln!(
        out,
        "{:<44} {:>+7.1} MB  {:<22} {}",
        "idle at the end vs after 10,000",
        settled - at_10k,
        format!("within {DRIFT_MB:.0} MB"),
        met((settled - at_10k).abs() <= DRIFT_MB)
    );
    Ok(out)
}
