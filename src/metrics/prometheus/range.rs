//! Range queries for a before/after rollout's reference window: one
//! `/api/v1/query_range` per signal (and per 11,000 points) instead of one
//! instant query per signal and tick. `increase(…[$window])` evaluated at
//! each step of a range query is what the instant query at that instant
//! returns, so the reference and the verdict are the same.

use super::super::{render, Ranged, Watched, MAX_POINTS};
use super::{seconds, whole, Collected, Expected, MetricError, PrometheusSource, Sample, KINDS};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Deserialize)]
struct RangeSeries<'a> {
    #[serde(borrow)]
    metric: BTreeMap<&'a str, Cow<'a, str>>,
    #[serde(borrow, default)]
    values: Vec<(f64, &'a str)>,
}

/// `(first, last)` cut into pieces of at most [`MAX_POINTS`] steps each.
pub(crate) fn pieces(
    (first, last): (DateTime<Utc>, DateTime<Utc>),
    step: Duration,
) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let step = chrono::Duration::milliseconds(step.as_millis().max(1) as i64);
    let span = step * (MAX_POINTS as i32 - 1);
    let mut out = Vec::new();
    let mut from = first;
    while from <= last {
        let to = (from + span).min(last);
        out.push((from, to));
        from = to + step;
    }
    out
}

/// Keeps only `service`'s series of a query shared by every service, so
/// Prometheus sends one service's points, not every service's.
fn only(promql: &str, service: &str) -> String {
    let name = service.replace('\\', "\\\\").replace('"', "\\\"");
    format!(
        "({promql}) and on (service) label_replace(vector(1), \"service\", \"{name}\", \"\", \"\")"
    )
}

impl PrometheusSource {
    /// The whole service over `span`, one tick per `step`: see
    /// `MetricSource::fetch_range`.
    pub(super) async fn range_whole(
        &self,
        w: &Watched,
        span: (DateTime<Utc>, DateTime<Utc>),
        step: Duration,
        window: Duration,
    ) -> Result<Ranged, MetricError> {
        let step_ms = step.as_millis().max(1) as i64;
        let ticks = ((span.1 - span.0).num_milliseconds().max(-1) / step_ms + 1).max(0) as usize;
        let mut collected: Vec<Collected> = (0..ticks).map(|_| Collected::default()).collect();
        let mut out = Ranged::default();
        for kind in KINDS {
            let (promql, service) = match kind.template(&w.queries) {
                Some(own) => (
                    render(own, &w.service, &w.namespace, "", window),
                    Some(w.service.as_str()),
                ),
                None => match kind.template(&self.defaults).or(kind.default()) {
                    Some(shared) => (only(&render(shared, "", "", "", window), &w.service), None),
                    None => continue,
                },
            };
            for piece in pieces(span, step) {
                out.queries += 1;
                let body = self
                    .get(
                        "query_range",
                        &[
                            ("query", promql.clone()),
                            ("start", seconds(piece.0)),
                            ("end", seconds(piece.1)),
                            ("step", format!("{:.3}", step_ms as f64 / 1000.0)),
                        ],
                    )
                    .await?;
                for series in self.parse_range(&body, &promql)? {
                    for (t, v) in series.values {
                        let k = ((t * 1000.0) as i64 - span.0.timestamp_millis()) as f64
                            / step_ms as f64;
                        let k = k.round();
                        if k < 0.0 || k as usize >= ticks {
                            continue;
                        }
                        let point = Sample {
                            metric: series.metric.clone(),
                            value: (t, v),
                        };
                        Self::collect(&mut collected[k as usize], kind, vec![point], service, None);
                    }
                }
            }
        }
        out.samples = collected
            .iter()
            .filter_map(|c| whole(c, &w.service))
            .collect();
        if out.samples.is_empty() {
            out.missing = Some(format!(
                "the request query returned no series for service=\"{}\" (any track or none) from {} to {}; check that its pods are scraped with a `service` label, or set the service's [services.metrics] requests query",
                w.service,
                (span.0 - chrono::Duration::from_std(window).unwrap_or_default()).format("%H:%M:%S UTC"),
                span.1.format("%H:%M:%S UTC"),
            ));
        }
        Ok(out)
    }

    /// Checks and parses an answer to the range query `promql`.
    fn parse_range<'a>(
        &self,
        body: &'a [u8],
        promql: &str,
    ) -> Result<Vec<RangeSeries<'a>>, MetricError> {
        self.checked(
            body,
            promql,
            Expected {
                query: "range query",
                result_type: "matrix",
                named: "a range vector",
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_range_is_cut_below_prometheus_points_limit() {
        let first = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let step = Duration::from_secs(1);
        // 24 hours at 1 s: 86,401 points, in eight pieces.
        let last = first + chrono::Duration::hours(24);
        let p = pieces((first, last), step);
        assert_eq!(p.len(), 8);
        assert_eq!(p[0].0, first);
        assert_eq!(p.last().unwrap().1, last);
        for (a, b) in &p {
            assert!(((*b - *a).num_seconds() as usize) < MAX_POINTS, "{a} {b}");
        }
        for w in p.windows(2) {
            assert_eq!(
                w[1].0 - w[0].1,
                chrono::Duration::seconds(1),
                "no gap, no overlap"
            );
        }
        // 30 minutes at 10 s: one query.
        let p = pieces(
            (first, first + chrono::Duration::minutes(30)),
            Duration::from_secs(10),
        );
        assert_eq!(p, vec![(first, first + chrono::Duration::minutes(30))]);
    }

    #[test]
    fn a_shared_query_is_narrowed_to_the_service() {
        assert_eq!(
            only("sum by (service, track) (x)", "check\"out"),
            "(sum by (service, track) (x)) and on (service) label_replace(vector(1), \"service\", \"check\\\"out\", \"\", \"\")"
        );
    }

    /// A real Prometheus on backfilled history of two services (checkout
    /// and search, two tracks, requests by code and a latency histogram,
    /// every 5 s); stopped on drop.
    struct RealPrometheus {
        child: std::process::Child,
        url: String,
        _dir: tempfile::TempDir,
    }

    impl Drop for RealPrometheus {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn tool(name: &str) -> String {
        ["/usr/bin", "/usr/local/bin", "/bin"]
            .iter()
            .map(|d| format!("{d}/{name}"))
            .find(|p| std::path::Path::new(p).exists())
            .unwrap_or_else(|| panic!("`{name}` is not installed: this test needs a real Prometheus (apt-get install prometheus)"))
    }

    async fn real_prometheus(start: i64, minutes: i64) -> RealPrometheus {
        use std::fmt::Write as _;
        let dir = tempfile::tempdir().unwrap();
        let mut om = String::from("# TYPE http_requests counter\n");
        let samples = minutes * 12;
        // Uneven but deterministic traffic, so each tick differs.
        let rate = |i: i64, k: i64| 40 + (k * 7 + i * 13) % 23;
        for (code, share) in [("200", 0), ("500", 1)] {
            for (i, (svc, track)) in [
                ("checkout", "baseline"),
                ("checkout", "canary"),
                ("search", "baseline"),
            ]
            .into_iter()
            .enumerate()
            {
                let mut total = 0;
                for k in 0..=samples {
                    total += rate(i as i64, k);
                    let v = if share == 1 {
                        total / 97
                    } else {
                        total - total / 97
                    };
                    let _ = writeln!(om, "http_requests_total{{service=\"{svc}\",track=\"{track}\",code=\"{code}\"}} {v} {}", start + 5 * k);
                }
            }
        }
        om.push_str("# TYPE http_request_duration_seconds histogram\n");
        for (i, (svc, track)) in [
            ("checkout", "baseline"),
            ("checkout", "canary"),
            ("search", "baseline"),
        ]
        .into_iter()
        .enumerate()
        {
            for (le, share) in [("0.1", 80), ("0.5", 97), ("+Inf", 100)] {
                let mut total = 0;
                for k in 0..=samples {
                    total += rate(i as i64, k);
                    let _ = writeln!(om, "http_request_duration_seconds_bucket{{service=\"{svc}\",track=\"{track}\",le=\"{le}\"}} {} {}", total * share / 100, start + 5 * k);
                }
            }
        }
        om.push_str("# EOF\n");
        let file = dir.path().join("history.om");
        std::fs::write(&file, om).unwrap();
        let tsdb = dir.path().join("tsdb");
        let out = std::process::Command::new(tool("promtool"))
            .args(["tsdb", "create-blocks-from", "openmetrics"])
            .arg(&file)
            .arg(&tsdb)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cfg = dir.path().join("prometheus.yml");
        std::fs::write(&cfg, "global:\n  scrape_interval: 1m\n").unwrap();
        let child = std::process::Command::new(tool("prometheus"))
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--storage.tsdb.path={}", tsdb.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--storage.tsdb.retention.time=100y")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let p = RealPrometheus {
            child,
            url,
            _dir: dir,
        };
        let client = reqwest::Client::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !client
            .get(format!("{}/-/ready", p.url))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            assert!(
                std::time::Instant::now() < deadline,
                "prometheus did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        p
    }

    /// The reference window as range queries is the reference the instant
    /// queries gave, tick for tick, in 3 queries instead of 540; the
    /// figures are printed (`--nocapture`) for the record, not asserted.
    #[tokio::test]
    async fn range_queries_give_the_reference_instant_queries_gave() {
        let minutes = 40;
        let start = (chrono::Utc::now().timestamp() - (minutes + 5) * 60) / 10 * 10;
        let prom = real_prometheus(start, minutes).await;
        let source = PrometheusSource::new(
            &prom.url,
            super::super::Auth::None,
            Duration::from_secs(30),
            Default::default(),
        );
        let w = Watched {
            service: "checkout".into(),
            namespace: String::new(),
            t: 0.0,
            queries: Default::default(),
            whole_service: true,
        };
        let step = Duration::from_secs(10);
        let last = DateTime::from_timestamp(start + 35 * 60, 0).unwrap();
        let span = (last - chrono::Duration::seconds(179 * 10), last);
        let t = std::time::Instant::now();
        let before = crate::metrics::by_ticks(&source, &w, span, step, step)
            .await
            .unwrap();
        let instant_time = t.elapsed();
        let t = std::time::Instant::now();
        let after = source.range_whole(&w, span, step, step).await.unwrap();
        let range_time = t.elapsed();
        eprintln!(
            "reference of 30m at 10s ticks: instant queries {} in {:.0} ms; range queries {} in {:.0} ms",
            before.queries,
            instant_time.as_secs_f64() * 1e3,
            after.queries,
            range_time.as_secs_f64() * 1e3
        );
        assert_eq!(before.samples.len(), 180, "{:?}", before.missing);
        assert_eq!(after.queries, 3, "one range query per signal");
        assert_eq!(before.queries, 540, "one instant query per signal and tick");
        assert_eq!(
            after.samples, before.samples,
            "the same reference, tick for tick"
        );
        // Before any history, both say so rather than inventing a reference.
        let early = (
            DateTime::from_timestamp(start - 3600, 0).unwrap(),
            DateTime::from_timestamp(start - 1800, 0).unwrap(),
        );
        let none = source.range_whole(&w, early, step, step).await.unwrap();
        assert!(none.samples.is_empty());
        assert!(
            none.missing
                .as_deref()
                .unwrap_or("")
                .contains("returned no series for service=\"checkout\""),
            "{:?}",
            none.missing
        );
    }
}
