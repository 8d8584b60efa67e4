//! A real Prometheus (Debian's package) on 127.0.0.1 for the tests: either
//! on backfilled history (OpenMetrics → `promtool tsdb
//! create-blocks-from openmetrics`) or scraping a target. Stopped on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Prometheus {
    child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
    config: PathBuf,
}

fn require(tool: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin", "/bin"] {
        let p = Path::new(dir).join(tool);
        if p.exists() {
            return p;
        }
    }
    panic!("`{tool}` is not installed: these tests need a real Prometheus. Run scripts/test.sh, which installs Debian's `prometheus` package (apt-get install prometheus).");
}

impl Prometheus {
    /// Prometheus serving `openmetrics` (text ending in `# EOF`) as history.
    pub fn with_history(dir: &Path, openmetrics: &str) -> Prometheus {
        let data = dir.join("tsdb");
        std::fs::create_dir_all(&data).unwrap();
        let file = dir.join("history.om");
        std::fs::write(&file, openmetrics).unwrap();
        let out = Command::new(require("promtool"))
            .args([
                "tsdb",
                "create-blocks-from",
                "openmetrics",
                file.to_str().unwrap(),
                data.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Prometheus::start(dir, "global:\n  scrape_interval: 1m\n")
    }

    /// Prometheus scraping `target` (host:port) every second.
    pub fn scraping(dir: &Path, target: &str) -> Prometheus {
        std::fs::create_dir_all(dir.join("tsdb")).unwrap();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: app\n    static_configs:\n      - targets: ['{target}']\n"
        );
        Prometheus::start(dir, &config)
    }

    fn start(dir: &Path, config: &str) -> Prometheus {
        let path = dir.join("prometheus.yml");
        std::fs::write(&path, config).unwrap();
        let mut p = Prometheus {
            child: None,
            port: super::free_port(),
            dir: dir.to_path_buf(),
            config: path,
        };
        p.restart();
        p
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port and data.
    pub fn restart(&mut self) {
        let log =
            std::fs::File::create(self.dir.join(format!("prometheus-{}.log", self.port))).unwrap();
        let child = Command::new(require("prometheus"))
            .args([
                &format!("--config.file={}", self.config.display()),
                &format!("--storage.tsdb.path={}", self.dir.join("tsdb").display()),
                &format!("--web.listen-address=127.0.0.1:{}", self.port),
                "--storage.tsdb.retention.time=100y",
                "--web.enable-lifecycle",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start prometheus");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                use std::io::{Read, Write};
                let _ = s.write_all(b"GET /-/ready HTTP/1.0\r\n\r\n");
                let mut buf = String::new();
                let _ = s.read_to_string(&mut buf);
                if buf.starts_with("HTTP/1.0 200") || buf.starts_with("HTTP/1.1 200") {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "prometheus did not become ready on port {} within 30 s",
            self.port
        );
    }

    /// Stops it, as an outage would.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.stop();
    }
}

/// OpenMetrics history for one service from simulated ticks: counters
/// `http_requests_total{code}` and the latency histogram, sampled every 5 s
/// (two samples per 10 s tick), starting at `start` (seconds since the epoch).
pub fn openmetrics(service: &str, start: i64, ticks: &[rollbot::judge::Tick]) -> String {
    use rollbot::judge::TrackSample;
    struct Series {
        ok: u64,
        err: u64,
        buckets: Vec<(f64, u64)>,
    }
    let mut out_ok = Vec::new();
    let mut out_err = Vec::new();
    let mut out_b = Vec::new();
    for track in ["baseline", "canary"] {
        let pick = |t: &rollbot::judge::Tick| -> Option<TrackSample> {
            if track == "baseline" {
                t.baseline.clone()
            } else {
                t.canary.clone()
            }
        };
        let bounds: Vec<f64> = ticks
            .iter()
            .find_map(&pick)
            .map(|s| s.latency_buckets.iter().map(|b| b.0).collect())
            .unwrap_or_default();
        let mut s = Series {
            ok: 0,
            err: 0,
            buckets: bounds.iter().map(|b| (*b, 0)).collect(),
        };
        let label = |le: Option<f64>| {
            let mut l = format!("service=\"{service}\",track=\"{track}\"");
            if let Some(le) = le {
                l.push_str(&format!(
                    ",le=\"{}\"",
                    if le.is_infinite() {
                        "+Inf".to_string()
                    } else {
                        le.to_string()
                    }
                ));
            }
            l
        };
        let mut emit = |ts: i64, s: &Series| {
            out_ok.push((label(None), ts, s.ok));
            out_err.push((label(None), ts, s.err));
            for (le, c) in &s.buckets {
                out_b.push((label(Some(*le)), ts, *c));
            }
        };
        emit(start, &s);
        for (k, t) in ticks.iter().enumerate() {
            let Some(x) = pick(t) else { continue };
            let end = start + 10 * (k as i64 + 1);
            // Half of the tick's counts by the middle, the rest at the end.
            for (ts, half) in [(end - 5, true), (end, false)] {
                let part = |n: u64| if half { n / 2 } else { n - n / 2 };
                s.err += part(x.errors);
                s.ok += part(x.requests - x.errors);
                for (i, b) in x.latency_buckets.iter().enumerate() {
                    s.buckets[i].1 += part(b.1);
                }
                emit(ts, &s);
            }
        }
    }
    // OpenMetrics wants each family contiguous and each series in time order.
    let mut text = String::from("# TYPE http_requests counter\n");
    let by_series =
        |rows: &mut Vec<(String, i64, u64)>, name: &str, extra: &str, text: &mut String| {
            rows.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
            for (l, ts, v) in rows.iter() {
                text.push_str(&format!("{name}{{{l}{extra}}} {v} {ts}\n"));
            }
        };
    by_series(
        &mut out_ok,
        "http_requests_total",
        ",code=\"200\"",
        &mut text,
    );
    by_series(
        &mut out_err,
        "http_requests_total",
        ",code=\"500\"",
        &mut text,
    );
    text.push_str("# TYPE http_request_duration_seconds histogram\n");
    by_series(
        &mut out_b,
        "http_request_duration_seconds_bucket",
        "",
        &mut text,
    );
    text.push_str("# EOF\n");
    text
}

/// The `rollbot serve` config of the tests that judge service checkout
/// against Prometheus at `prom` (every 10 s): the deploy and incident
/// channels on the console, the simulated backend with `history` (its
/// revisions per service, such as `{ checkout = ["v41", "v42"] }`),
/// checkout's `service` keys (tables last), and the API client `ci`
/// (token in `ROLLBOT_TEST_TOKEN`) as deployer and viewer. `{port}` and
/// `{data}` are left for `Server::start`.
pub fn serve_config(prom: &str, history: &str, service: &str) -> String {
    format!(
        r##"
[server]
listen = "127.0.0.1:{{port}}"
[store]
path = "{{data}}"
[metrics]
source = "prometheus"
url = "{prom}"
interval = "10s"
[channels.deploys]
console = "#deploys"
[channels.incidents]
console = "#incidents"
[backends.sim]
type = "simulated"
history = {history}
[[services]]
name = "checkout"
backend = "sim"
deploy_channel = "deploys"
incident_channel = "incidents"
{service}
[[roles.deployer]]
members = ["api:ci"]
[[roles.viewer]]
members = ["api:ci"]
[[api.clients]]
name = "ci"
token = "${{ROLLBOT_TEST_TOKEN}}"
"##
    )
}
