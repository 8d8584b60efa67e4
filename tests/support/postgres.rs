//! A throwaway PostgreSQL cluster: `initdb` in a temporary directory, the
//! server on a free port of 127.0.0.1 (trust authentication, loopback
//! only), stopped and removed on drop. It can be stopped and started again
//! on the same port and data, as a database that went away and came back.
//!
//! `scripts/test.sh` installs Debian's `postgresql` package; without it a
//! test fails with a message naming that script. As root, the server runs
//! as the `postgres` user the package creates (PostgreSQL refuses root).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Postgres {
    pub port: u16,
    /// The superuser `initdb` created (no password: trust on loopback).
    pub user: String,
    /// From `initdb` to accepting connections.
    pub startup: Duration,
    bin: PathBuf,
    dir: PathBuf,
    who: Option<(u32, u32)>,
    fsync: bool,
    child: Option<Child>,
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn missing(what: &str) -> ! {
    panic!("{what} is missing: run scripts/test.sh once (as root) to install PostgreSQL")
}

/// Debian's PostgreSQL binaries, the newest version installed.
pub fn bin_dir() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    found.retain(|b| b.join("initdb").exists() && b.join("postgres").exists());
    found.sort();
    found
        .pop()
        .unwrap_or_else(|| missing("PostgreSQL (initdb under /usr/lib/postgresql/*/bin)"))
}

/// PostgreSQL refuses to run as root: as root, run it as the `postgres`
/// user the Debian package creates.
fn run_as() -> Option<(u32, u32)> {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find(|l| l.starts_with("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .parse::<u32>()
        .ok()?;
    if uid != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    let line = passwd.lines().find(|l| l.starts_with("postgres:"))?;
    let f: Vec<&str> = line.split(':').collect();
    Some((f[2].parse().ok()?, f[3].parse().ok()?))
}

fn as_postgres(cmd: &mut Command, who: Option<(u32, u32)>) {
    use std::os::unix::process::CommandExt;
    if let Some((uid, gid)) = who {
        cmd.gid(gid).uid(uid);
    }
}

pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

impl Postgres {
    /// A cluster whose superuser is `rollbot`, without fsync (fast tests).
    pub fn start() -> Postgres {
        Postgres::start_as("rollbot", false)
    }

    /// A cluster whose superuser is `user`; `fsync` as a production
    /// server has it (for benchmarks), or off.
    pub fn start_as(user: &str, fsync: bool) -> Postgres {
        let bin = bin_dir();
        let who = run_as();
        let started = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix("rollbot-postgres-")
            .tempdir()
            .unwrap()
            .keep();
        if let Some((uid, gid)) = who {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
        }
        let mut pg = Postgres {
            port: super::free_port(),
            user: user.to_string(),
            startup: Duration::ZERO,
            bin,
            dir,
            who,
            fsync,
            child: None,
        };
        let mut initdb = Command::new(pg.bin.join("initdb"));
        initdb
            .args(["-D", pg.data().to_str().unwrap()])
            .args(["-U", user, "--auth=trust", "-E", "UTF8", "--no-sync"])
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(pg.log()).unwrap()));
        as_postgres(&mut initdb, who);
        let st = initdb.status().expect("run initdb");
        assert!(
            st.success(),
            "initdb failed ({st}):\n{}",
            log_tail(&pg.log())
        );
        pg.resume();
        pg.startup = started.elapsed();
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.join("pg")
    }

    pub fn log(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    /// The server's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The temporary directory (removed on drop).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A URL for database `db` (without a password: trust on loopback).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{}@127.0.0.1:{}/{db}", self.user, self.port)
    }

    /// Creates database `name` and returns its URL.
    pub fn create_database(&self, name: &str) -> String {
        self.sql("postgres", &format!("CREATE DATABASE \"{name}\""));
        self.url(name)
    }

    /// Runs SQL with `psql` and returns its unaligned output.
    pub fn sql(&self, db: &str, sql: &str) -> String {
        let o = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args([
                "-U",
                &self.user,
                "-d",
                db,
                "-tA",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ])
            .output()
            .expect("run psql");
        assert!(
            o.status.success(),
            "psql {sql:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// Turns TLS on with this certificate (chain, PEM) and key, as
    /// `ssl = on` in postgresql.conf, and waits until new connections can
    /// use it. Plain connections are still accepted (`host` in pg_hba).
    pub fn enable_tls(&self, cert_pem: &str, key_pem: &str) {
        use std::os::unix::fs::PermissionsExt;
        let data = self.data();
        for (name, text, mode) in [
            ("server.crt", cert_pem, 0o644),
            ("server.key", key_pem, 0o600),
        ] {
            let path = data.join(name);
            std::fs::write(&path, text).unwrap();
            // PostgreSQL refuses a key others can read.
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            if let Some((uid, gid)) = self.who {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid)).unwrap();
            }
        }
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .unwrap();
        std::io::Write::write_all(
            &mut conf,
            b"\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
        )
        .unwrap();
        self.sql("postgres", "SELECT pg_reload_conf()");
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.sql("postgres", "SHOW ssl") != "on" {
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not turn ssl on within 30 s:\n{}",
                log_tail(&self.log())
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A login `user` with `password` that owns database `db` and may
    /// only connect over TLS with SCRAM, as managed databases ask.
    pub fn tls_login(&self, user: &str, password: &str, db: &str) {
        self.sql(
            "postgres",
            &format!("CREATE ROLE \"{user}\" LOGIN PASSWORD '{password}'"),
        );
        self.sql(
            "postgres",
            &format!("CREATE DATABASE \"{db}\" OWNER \"{user}\""),
        );
        let hba = self.data().join("pg_hba.conf");
        let rest = std::fs::read_to_string(&hba).unwrap();
        // The first matching line wins: this user over TLS by password only.
        let ours = format!(
            "hostssl all {user} 127.0.0.1/32 scram-sha-256\nhost all {user} 127.0.0.1/32 reject\n"
        );
        std::fs::write(&hba, ours + &rest).unwrap();
        self.sql("postgres", "SELECT pg_reload_conf()");
    }

    /// How many of rollbot's connections (application_name `rollbot`)
    /// are encrypted, and how many are not.
    pub fn rollbot_connections(&self) -> (usize, usize) {
        let out = self.sql(
            "postgres",
            "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.application_name = 'rollbot'",
        );
        let (tls, plain) = out.split_once('|').unwrap();
        (tls.parse().unwrap(), plain.parse().unwrap())
    }

    /// Starts the server again on the same port and data (after `stop`),
    /// and waits until it accepts connections.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "PostgreSQL already runs");
        let mut cmd = Command::new(self.bin.join("postgres"));
        cmd.args(["-D", self.data().to_str().unwrap()])
            .args(["-p", &self.port.to_string()])
            .args(["-k", self.dir.to_str().unwrap()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", if self.fsync { "fsync=on" } else { "fsync=off" }])
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::OpenOptions::new()
                    .append(true)
                    .open(self.log())
                    .unwrap(),
            ));
        as_postgres(&mut cmd, self.who);
        self.child = Some(cmd.spawn().expect("start postgres"));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            if let Some(Ok(Some(st))) = self.child.as_mut().map(Child::try_wait) {
                panic!(
                    "PostgreSQL exited ({st}) before it was ready:\n{}",
                    log_tail(&self.log())
                );
            }
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not accept connections within 60 s:\n{}",
                log_tail(&self.log())
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server (fast shutdown: connections are closed) and waits
    /// until it is gone.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGINT is PostgreSQL's fast shutdown; its children follow.
            let _ = Command::new("kill")
                .args(["-INT", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }
}
