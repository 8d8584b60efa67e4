//! How often Prometheus scrapes: the longest `scrapeInterval` of its active
//! targets (`/api/v1/targets`), else (an older Prometheus that does not list
//! it) the global `scrape_interval` of its configuration
//! (`/api/v1/status/config`). The judge's evidence step
//! cannot be shorter: a window without a new sample holds no evidence.

use super::super::MetricError;
use super::PrometheusSource;
use serde::Deserialize;
use std::time::Duration;

#[derive(Deserialize)]
struct Targets {
    data: TargetsData,
}

#[derive(Deserialize)]
struct TargetsData {
    #[serde(default, rename = "activeTargets")]
    active: Vec<Target>,
}

#[derive(Deserialize)]
struct Target {
    #[serde(default, rename = "scrapeInterval")]
    scrape_interval: Option<String>,
}

#[derive(Deserialize)]
struct Status {
    data: StatusData,
}

#[derive(Deserialize)]
struct StatusData {
    yaml: String,
}

impl PrometheusSource {
    async fn get_json<T: for<'de> Deserialize<'de>>(&self, path: &str) -> Result<T, MetricError> {
        let url = format!("{}{path}", self.base);
        let req = self.auth.apply(self.client.get(&url));
        let resp = req.send().await.map_err(|e| {
            MetricError::Unavailable(format!("cannot reach Prometheus at {}: {e}", self.base))
        })?;
        let status = resp.status();
        if !status.is_success() {
            return Err(MetricError::Unavailable(format!(
                "Prometheus at {} answered HTTP {status} to {path}",
                self.base
            )));
        }
        resp.json::<T>().await.map_err(|e| {
            MetricError::Unavailable(format!(
                "Prometheus' answer to {path} is not its API's JSON: {e}"
            ))
        })
    }

    /// The scrape interval, or None when Prometheus does not say. A
    /// Prometheus that scrapes nothing (its data backfilled or remote
    /// written) has no scrape interval, whatever its configuration's
    /// default says.
    pub(super) async fn scrape_interval_of(&self) -> Result<Option<Duration>, MetricError> {
        // Targets first: a job can scrape less often than the global default.
        if let Ok(t) = self
            .get_json::<Targets>("/api/v1/targets?state=active")
            .await
        {
            if t.data.active.is_empty() {
                return Ok(None);
            }
            let longest = t
                .data
                .active
                .iter()
                .filter_map(|t| t.scrape_interval.as_deref())
                .filter_map(|s| humantime::parse_duration(s).ok())
                .max();
            if longest.is_some() {
                return Ok(longest);
            }
        }
        let status: Status = self.get_json("/api/v1/status/config").await?;
        Ok(global_scrape_interval(&status.data.yaml))
    }
}

/// `global: scrape_interval:` from Prometheus' configuration as YAML (it
/// always writes the global section first, with defaults filled in).
fn global_scrape_interval(yaml: &str) -> Option<Duration> {
    let mut in_global = false;
    for line in yaml.lines() {
        if !line.starts_with(' ') && !line.trim().is_empty() {
            in_global = line.trim_end() == "global:";
            continue;
        }
        if in_global {
            if let Some(v) = line.trim().strip_prefix("scrape_interval:") {
                return humantime::parse_duration(v.trim()).ok();
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_global_scrape_interval_is_read_from_prometheus_config() {
        let yaml = "global:\n  scrape_interval: 30s\n  scrape_timeout: 10s\nscrape_configs:\n- job_name: app\n  scrape_interval: 1m\n";
        assert_eq!(global_scrape_interval(yaml), Some(Duration::from_secs(30)));
        assert_eq!(global_scrape_interval("scrape_configs: []\n"), None);
    }
}
