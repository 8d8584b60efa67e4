//! A real Unleash server (npm `unleash-server`) on a real PostgreSQL, both on
//! 127.0.0.1 with free ports and a temporary data directory. One server per
//! test binary run, shared by the Unleash tests (its start-up runs the
//! database migrations); each test uses its own flag names.
//!
//! `scripts/test.sh` installs both: Debian's `postgresql` package and
//! `unleash-server` under /opt/rollbot-test/unleash (or `ROLLBOT_UNLEASH_DIR`).
//! A missing part fails the test with a message naming that script.

use super::postgres::{log_tail, Postgres};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const ADMIN_TOKEN: &str = "*:*.rollbot-test-admin-4f1d";
/// A client token of `production`, the environment the tests switch.
pub const CLIENT_TOKEN: &str = "*:production.rollbot-test-client-8e2a";
pub const VERSION: &str = "6.10.1";

pub struct Unleash {
    pub url: String,
    /// From spawning PostgreSQL to Unleash answering `/health`.
    pub startup: Duration,
    node: Child,
    /// Stops both when the test process is gone (see [`watchdog`]).
    watchdog: Option<Child>,
    /// Dropped after the fields above, so Unleash stops first.
    postgres: Postgres,
}

impl Drop for Unleash {
    fn drop(&mut self) {
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
        let _ = self.node.kill();
        let _ = self.node.wait();
    }
}

/// The shared server, started by the first test that asks.
pub fn shared() -> &'static Unleash {
    static SERVER: OnceLock<Unleash> = OnceLock::new();
    SERVER.get_or_init(|| {
        let u = Unleash::start();
        eprintln!(
            "unleash-server {VERSION} with PostgreSQL ready at {} in {} ms",
            u.url,
            u.startup.as_millis()
        );
        u
    })
}

fn missing(what: &str) -> ! {
    panic!(
        "{what} is missing: run scripts/test.sh once (as root) to install PostgreSQL and unleash-server {VERSION}, or set ROLLBOT_UNLEASH_DIR to a directory where `npm install unleash-server@{VERSION}` was run"
    )
}

/// The directory whose node_modules holds unleash-server.
fn unleash_dir() -> PathBuf {
    let dir = std::env::var_os("ROLLBOT_UNLEASH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/rollbot-test/unleash"));
    if !dir
        .join("node_modules/unleash-server/package.json")
        .exists()
    {
        missing(&format!(
            "unleash-server in {}",
            dir.join("node_modules").display()
        ));
    }
    dir
}

/// A plain HTTP GET on 127.0.0.1, so start-up needs no async runtime.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

const START_JS: &str = r#"
const unleash = require('unleash-server');
unleash.start({
  db: { host: '127.0.0.1', port: Number(process.env.PG_PORT), user: 'unleash', password: 'unleash', database: 'postgres', ssl: false },
  server: { host: '127.0.0.1', port: Number(process.env.UNLEASH_PORT) },
  authentication: { type: 'open-source' },
  versionCheck: { enable: false },
  telemetry: false,
  logLevel: 'warn',
}).then(() => console.log('unleash started'), (e) => { console.error(e); process.exit(1); });
"#;

impl Unleash {
    pub fn start() -> Unleash {
        let unleash = unleash_dir();
        let started = Instant::now();
        let postgres = Postgres::start_as("unleash", false);
        let pg_port = postgres.port;
        let dir = postgres.dir().to_path_buf();
        let pg_log = postgres.log();
        let script = dir.join("start.js");
        std::fs::write(&script, START_JS).unwrap();
        let port = super::free_port();
        let node_log = dir.join("unleash.log");
        let node = Command::new("node")
            .arg(&script)
            .current_dir(&dir)
            .env("NODE_PATH", unleash.join("node_modules"))
            .env("PG_PORT", pg_port.to_string())
            .env("UNLEASH_PORT", port.to_string())
            .env("INIT_ADMIN_API_TOKENS", ADMIN_TOKEN)
            .env("INIT_CLIENT_API_TOKENS", CLIENT_TOKEN)
            // Unleash retries the database while PostgreSQL starts.
            .env("DATABASE_POOL_MIN", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::from(std::fs::File::create(&node_log).unwrap()))
            .stderr(Stdio::from(
                std::fs::OpenOptions::new()
                    .append(true)
                    .open(&node_log)
                    .unwrap(),
            ))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run node ({e}): scripts/test.sh expects Node 20"));
        let mut u = Unleash {
            url: format!("http://127.0.0.1:{port}"),
            startup: Duration::ZERO,
            node,
            watchdog: None,
            postgres,
        };
        u.watchdog = Some(watchdog(&u));
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            if http_get(port, "/health").is_some_and(|r| r.contains("GOOD")) {
                break;
            }
            if let Ok(Some(st)) = u.node.try_wait() {
                panic!(
                    "unleash-server exited ({st}) before it was ready:\n{}\nPostgreSQL:\n{}",
                    log_tail(&node_log),
                    log_tail(&pg_log)
                );
            }
            assert!(
                Instant::now() < deadline,
                "unleash-server did not answer /health within 180 s:\n{}\nPostgreSQL:\n{}",
                log_tail(&node_log),
                log_tail(&pg_log)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        u.startup = started.elapsed();
        u
    }

    /// The admin API, for setting up and inspecting flags.
    pub async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = reqwest::Client::new()
            .request(method.clone(), format!("{}{path}", self.url))
            .header("Authorization", ADMIN_TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let code = r.status();
        let text = r.text().await.unwrap();
        assert!(code.is_success(), "{method} {path} → {code}: {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// Creates `flag` in the default project with one strategy per
    /// environment (`flexibleRollout` at the given percentage, or `default`)
    /// and switches each environment on or off.
    pub async fn create_flag(&self, flag: &str, envs: &[(&str, bool, Option<u8>)]) {
        use reqwest::Method;
        self.admin(
            Method::POST,
            "/api/admin/projects/default/features",
            Some(json!({ "name": flag })),
        )
        .await;
        for (env, on, rollout) in envs {
            let strategy = match rollout {
                Some(p) => json!({
                    "name": "flexibleRollout",
                    "parameters": { "rollout": p.to_string(), "stickiness": "default", "groupId": flag }
                }),
                None => json!({ "name": "default" }),
            };
            let base = format!("/api/admin/projects/default/features/{flag}/environments/{env}");
            self.admin(Method::POST, &format!("{base}/strategies"), Some(strategy))
                .await;
            self.admin(
                Method::POST,
                &format!("{base}/{}", if *on { "on" } else { "off" }),
                None,
            )
            .await;
        }
    }

    /// The flag's environment as the admin API reports it.
    pub async fn env_state(&self, flag: &str, env: &str) -> Value {
        let f = self
            .admin(
                reqwest::Method::GET,
                &format!("/api/admin/projects/default/features/{flag}"),
                None,
            )
            .await;
        f["environments"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == env)
            .cloned()
            .unwrap_or_else(|| panic!("{flag} has no environment {env}: {f}"))
    }

    /// What SDKs of `production` are served for `flag`, once `ready`
    /// holds: the client API is cached briefly, so a flag just created or
    /// changed by the test shows up within a few seconds.
    pub async fn client_view_when(&self, flag: &str, ready: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let r = reqwest::Client::new()
                .get(format!("{}/api/client/features", self.url))
                .header("Authorization", CLIENT_TOKEN)
                .send()
                .await
                .unwrap();
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["query"]["environment"], "production", "{v}");
            let found = v["features"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["name"] == flag)
                .cloned();
            match found {
                Some(f) if ready(&f) => return f,
                other => assert!(
                    Instant::now() < deadline,
                    "the client API did not serve {flag} as expected within 15 s; last: {other:?}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// What SDKs of `production` are served for `flag` now.
    pub async fn client_view(&self, flag: &str) -> Value {
        self.client_view_when(flag, |_| true).await
    }
}

/// The shared server lives in a static, which is never dropped: a small
/// shell loop stops PostgreSQL and Unleash once the test process is gone.
fn watchdog(u: &Unleash) -> Child {
    let script = format!(
        "while kill -0 {me} 2>/dev/null; do sleep 1; done; kill {node} 2>/dev/null; kill -INT {pg} 2>/dev/null; \
         for i in $(seq 1 50); do kill -0 {pg} 2>/dev/null || break; sleep 0.2; done; rm -rf '{dir}'",
        me = std::process::id(),
        node = u.node.id(),
        pg = u.postgres.pid().expect("PostgreSQL runs"),
        dir = u.postgres.dir().display()
    );
    Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the Unleash watchdog")
}
