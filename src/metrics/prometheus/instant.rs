//! Instant queries for custom checks and SLO burn rates: every distinct
//! query text once per tick, a few at a time, each answer on its own so a
//! refused query costs only its own check's data.

use super::super::{Answers, MetricError, Series};
use super::PrometheusSource;
use chrono::{DateTime, Utc};
use futures_util::stream::{self, StreamExt};
use std::collections::BTreeSet;

/// Queries in flight at once: long-window queries (`[3d]`) are slow, and
/// the tick's other queries must not wait behind them one by one.
const IN_FLIGHT: usize = 4;

impl PrometheusSource {
    pub(super) async fn instant_all(
        &self,
        queries: &[String],
        at: DateTime<Utc>,
    ) -> Result<Answers, MetricError> {
        let distinct: BTreeSet<String> = queries.iter().cloned().collect();
        let answers: Vec<(String, Result<Vec<Series>, MetricError>)> = stream::iter(distinct)
            .map(|q: String| async move {
                let a = self.instant_one(&q, at).await;
                (q, a)
            })
            .buffer_unordered(IN_FLIGHT)
            .collect()
            .await;
        // Prometheus down is an outage (the breaker counts it), not one
        // refused query per check.
        if !answers.is_empty() && answers.iter().all(|(_, a)| a.is_err()) {
            if let Some((_, Err(e @ MetricError::Unavailable(text)))) = answers.first() {
                if text.starts_with("cannot reach") || text.contains("did not answer within") {
                    return Err(e.clone());
                }
            }
        }
        Ok(answers
            .into_iter()
            .map(|(q, a)| (q, a.map_err(|e| e.to_string())))
            .collect())
    }

    async fn instant_one(
        &self,
        promql: &str,
        at: DateTime<Utc>,
    ) -> Result<Vec<Series>, MetricError> {
        let body = self.query(promql, at).await?;
        let samples = self.parse(&body, promql)?;
        Ok(samples
            .into_iter()
            .filter_map(|s| {
                let value = s.value.1.parse::<f64>().ok().filter(|v| v.is_finite())?;
                Some(Series {
                    service: s.metric.get("service").map(|v| v.to_string()),
                    track: s.metric.get("track").map(|v| v.to_string()),
                    value,
                })
            })
            .collect())
    }
}
