//! `rollbot replay --from-prometheus`: judges a service's past rollout tick by
//! tick from Prometheus, with the same queries and judge the controller uses,
//! so a policy can be backtested on real history.

use crate::config_file::{MetricQueries, ServiceConfig};
use crate::judge::{replay, JudgePolicy, Tick};
use crate::metrics::prometheus::{Auth, PrometheusSource};
use crate::metrics::{MetricSource, Watched};
use chrono::{DateTime, Utc};
use std::time::Duration;

/// "2026-11-29T03:00:00Z", or a duration meaning that long ago ("2h").
pub fn parse_time(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    match crate::config::parse_duration(text) {
        Ok(d) => Ok(now - chrono::Duration::from_std(d).map_err(|e| e.to_string())?),
        Err(_) => Err(format!(
            "`{text}` is neither an RFC 3339 time (2026-11-29T03:00:00Z) nor a duration ago (2h)"
        )),
    }
}

pub struct HistoryReplay<'a> {
    pub url: &'a str,
    pub service: &'a str,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub interval: Duration,
    pub policy: JudgePolicy,
    /// The service's own query templates and namespace, when it has them.
    pub service_config: Option<&'a ServiceConfig>,
    pub json: bool,
}

impl HistoryReplay<'_> {
    pub async fn run(&self) -> anyhow::Result<String> {
        anyhow::ensure!(self.end > self.start, "--end must be after --start");
        let steps = ((self.end - self.start).num_milliseconds() as f64
            / self.interval.as_millis() as f64)
            .floor() as i64;
        anyhow::ensure!(
            steps >= 1,
            "the range is shorter than one tick ({})",
            crate::domain::human_duration(self.interval)
        );
        anyhow::ensure!(steps <= 100_000, "the range holds {steps} ticks; replay at most 100,000 (a longer --interval or a shorter range)");
        let source = PrometheusSource::new(
            self.url,
            Auth::None,
            Duration::from_secs(30),
            MetricQueries::default(),
        );
        let (queries, namespace) = match self.service_config {
            Some(s) => (
                s.metrics.clone(),
                s.namespace
                    .clone()
                    .or_else(|| s.target.get("namespace").cloned())
                    .unwrap_or_default(),
            ),
            None => (MetricQueries::default(), String::new()),
        };
        let mut ticks = Vec::with_capacity(steps as usize);
        let mut missing = 0;
        for k in 1..=steps {
            let at = self.start + chrono::Duration::from_std(self.interval * k as u32)?;
            let t = (at - self.start).num_milliseconds() as f64 / 1000.0;
            let w = Watched {
                service: self.service.to_string(),
                namespace: namespace.clone(),
                t,
                queries: queries.clone(),
                whole_service: false,
            };
            let fetched = source
                .fetch(std::slice::from_ref(&w), at, self.interval)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let tick = fetched.ticks.get(self.service).cloned().unwrap_or(Tick {
                t,
                baseline: None,
                canary: None,
            });
            if tick.canary.is_none() {
                missing += 1;
            }
            ticks.push(tick);
        }
        anyhow::ensure!(missing < ticks.len(), "Prometheus at {} has no canary series for service=\"{}\" between {} and {}; check the labels (service, track) or the queries", self.url, self.service, self.start.to_rfc3339(), self.end.to_rfc3339());
        let evals = replay::judge_ticks(&ticks, &self.policy);
        Ok(if self.json {
            replay::render_json(&evals)
        } else {
            replay::render_timeline(&evals)
        })
    }
}
