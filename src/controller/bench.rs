//! `rollbot bench controller`: many active rollouts against a real
//! Prometheus holding matching series. Prints queries per tick, rollbot's CPU
//! time per tick (Prometheus runs in its own process, so it is excluded) and
//! resident memory.
//!
//! Needs Debian's `prometheus` package (`prometheus` and `promtool`).

use crate::clock::ManualClock;
use crate::config_file::Config;
use crate::controller::Rollout;
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const INTERVAL: i64 = 10;

/// Process CPU time (user + system), from /proc.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of stat (11 and 12 after the name).
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

fn rss_mb(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn tool(name: &str) -> anyhow::Result<String> {
    for dir in ["/usr/bin", "/usr/local/bin", "/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return Ok(p.display().to_string());
        }
    }
    anyhow::bail!("`{name}` is not installed; the controller bench needs a real Prometheus (apt-get install prometheus)")
}

/// Writes history for `n` services: requests by code and a small latency
/// histogram per track, every 5 s for `minutes`. Streamed to the file so the
/// bench's own memory stays out of the figures.
fn write_history(path: &Path, n: usize, start: i64, minutes: i64) -> std::io::Result<()> {
    use std::io::Write;
    let samples = minutes * 60 / 5;
    let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
    let tracks = [("baseline", 90.0), ("canary", 10.0)];
    writeln!(w, "# TYPE http_requests counter")?;
    for (code, errors_only) in [("200", false), ("500", true)] {
        for i in 0..n {
            for (track, rps) in tracks {
                for k in 0..=samples {
                    let total = (rps * 5.0 * k as f64).floor();
                    let errors = (total * 0.001).floor();
                    let v = if errors_only { errors } else { total - errors };
                    writeln!(w, "http_requests_total{{service=\"svc-{i:04}\",track=\"{track}\",code=\"{code}\"}} {v} {}", start + 5 * k)?;
                }
            }
        }
    }
    writeln!(w, "# TYPE http_request_duration_seconds histogram")?;
    for i in 0..n {
        for (track, rps) in tracks {
            for (le, share) in [("0.1", 0.8), ("0.5", 0.97), ("+Inf", 1.0)] {
                for k in 0..=samples {
                    let total = (rps * 5.0 * k as f64 * share).floor();
                    writeln!(w, "http_request_duration_seconds_bucket{{service=\"svc-{i:04}\",track=\"{track}\",le=\"{le}\"}} {total} {}", start + 5 * k)?;
                }
            }
        }
    }
    writeln!(w, "# EOF")?;
    w.flush()
}

fn config(n: usize, prom: &str, store: &Path) -> String {
    let mut c = format!(
        "[store]\npath = \"{}\"\n[metrics]\nsource = \"prometheus\"\nurl = \"{prom}\"\ninterval = \"{INTERVAL}s\"\ntimeout = \"30s\"\n[backends.sim]\ntype = \"simulated\"\n",
        store.display()
    );
    for i in 0..n {
        let _ = write!(
            c,
            "[[services]]\nname = \"svc-{i:04}\"\nbackend = \"sim\"\n"
        );
    }
    c
}

pub async fn run(rollouts: usize, minutes: i64) -> anyhow::Result<String> {
    let promtool = tool("promtool")?;
    let prometheus = tool("prometheus")?;
    let dir = tempfile::Builder::new()
        .prefix("rollbot-bench-controller-")
        .tempdir()?;
    let now = chrono::Utc::now().timestamp();
    let start = (now - (minutes + 2) * 60) / INTERVAL * INTERVAL;

    let t = Instant::now();
    let om = dir.path().join("history.om");
    write_history(&om, rollouts, start, minutes)?;
    let tsdb = dir.path().join("tsdb");
    let out = Command::new(&promtool)
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&om)
        .arg(&tsdb)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "promtool failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_file(&om)?;
    let backfill = t.elapsed();

    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(&cfg, "global:\n  scrape_interval: 1m\n")?;
    let mut child = Command::new(&prometheus)
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!("--storage.tsdb.path={}", tsdb.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--storage.tsdb.retention.time=100y")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let url = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while client
        .get(format!("{url}/-/ready"))
        .send()
        .await
        .map(|r| !r.status().is_success())
        .unwrap_or(true)
    {
        anyhow::ensure!(Instant::now() < deadline, "prometheus did not become ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let result = measure(rollouts, minutes, start, &url, dir.path()).await;
    let _ = child.kill();
    let _ = child.wait();
    let (rows, rss_before) = result?;
    let mut out = format!(
        "rollbot bench controller — {rollouts} active rollouts, {minutes} min of history every 5 s, tick {INTERVAL}s, real Prometheus on {url}\n(backfill {:.1}s; RSS before the controller {rss_before:.0} MB)\n\n",
        backfill.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "{:>5} {:>9} {:>12} {:>14} {:>10} {:>10}",
        "tick", "queries", "CPU (ms)", "wall (ms)", "RSS (MB)", "peak (MB)"
    );
    for (i, r) in rows.iter().enumerate() {
        let _ = writeln!(
            out,
            "{:>5} {:>9} {:>12.0} {:>14.0} {:>10.0} {:>10.0}",
            i + 1,
            r.0,
            r.1.as_secs_f64() * 1e3,
            r.2.as_secs_f64() * 1e3,
            r.3,
            r.4
        );
    }
    let steady: Vec<_> = rows.iter().skip(1).collect();
    let max_cpu = steady.iter().map(|r| r.1).max().unwrap_or_default();
    let queries: Vec<usize> = rows.iter().map(|r| r.0).collect();
    let constant = queries.windows(2).all(|w| w[0] == w[1]);
    let peak = rss_mb("VmHWM:");
    let ok = |b: bool| if b { "met" } else { "NOT met" };
    let _ = writeln!(
        out,
        "\nqueries per tick: {} ({}); target constant: {}",
        queries.first().copied().unwrap_or(0),
        if constant {
            "the same every tick"
        } else {
            "varies"
        },
        ok(constant)
    );
    let _ = writeln!(
        out,
        "CPU per tick after the first: max {:.0} ms; target <= 1000 ms: {}",
        max_cpu.as_secs_f64() * 1e3,
        ok(max_cpu <= Duration::from_secs(1))
    );
    let _ = writeln!(
        out,
        "peak resident memory: {peak:.0} MB; target <= 150 MB: {}",
        ok(peak <= 150.0)
    );
    Ok(out)
}

/// Queries, CPU time, wall time, resident and peak resident memory (MB).
type Row = (usize, Duration, Duration, f64, f64);

async fn measure(
    n: usize,
    minutes: i64,
    start: i64,
    url: &str,
    dir: &Path,
) -> anyhow::Result<(Vec<Row>, f64)> {
    let store = dir.join("store");
    let config = Config::parse(Path::new("bench.toml"), &config(n, url, &store))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let begin = chrono::DateTime::from_timestamp(start, 0).expect("valid time");
    let clock = ManualClock::new(begin);
    let rt = crate::runtime::start(config, &store, vec![], Arc::new(clock.clone())).await?;
    let rss_before = rss_mb("VmRSS:");
    let controller = rt
        .controller
        .clone()
        .ok_or_else(|| anyhow::anyhow!("no controller"))?;
    for i in 0..n {
        controller
            .announce(Rollout::watching(
                format!("bench-{i}"),
                &format!("svc-{i:04}"),
                ("v1".into(), "v2".into()),
                begin,
                "bench",
            ))
            .await?;
    }
    let mut rows = Vec::new();
    let ticks = minutes * 60 / INTERVAL;
    for k in 1..=ticks {
        let at = begin + chrono::Duration::seconds(k * INTERVAL);
        clock.set(at);
        let (cpu0, wall0) = (cpu_time(), Instant::now());
        controller.step(at).await;
        let h = controller.health();
        anyhow::ensure!(
            h.down_since.is_none(),
            "metrics failed during the bench: {}",
            h.last_error.unwrap_or_default()
        );
        rows.push((
            h.queries_last_tick,
            cpu_time().saturating_sub(cpu0),
            wall0.elapsed(),
            rss_mb("VmRSS:"),
            rss_mb("VmHWM:"),
        ));
    }
    Ok((rows, rss_before))
}
