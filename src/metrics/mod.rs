//! Metric sources: where the controller gets each tick's canary and baseline
//! numbers.
//!
//! One trait, one file per source. A source answers for every watched
//! service at once, so the number of queries per tick does not grow with the
//! number of rollouts: the default queries are grouped `by (service, track)`
//! and split here. A failed or empty query is not an error for the judge: the
//! service's tick simply has no data (`no_data`), which never rolls back.

pub(crate) mod prometheus;
pub(crate) mod simulated;

use crate::config_file::MetricQueries;
use crate::judge::Tick;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::time::Duration;

/// A service as a metric source needs it.
#[derive(Clone, Debug)]
pub struct Watched {
    pub service: String,
    pub namespace: String,
    /// Seconds since the rollout started, at the tick being fetched.
    pub t: f64,
    /// The service's own query templates, when it overrides the defaults.
    pub queries: MetricQueries,
    /// Every track of the service together, as the tick's `canary` (no
    /// baseline): a rollout judged after vs before has no second track.
    pub whole_service: bool,
}

/// What a fetch returns: a tick per service, and what went wrong for the
/// services without one.
#[derive(Debug, Default)]
pub struct Fetched {
    pub ticks: HashMap<String, Tick>,
    /// Service → why its metrics are missing (query error, empty result).
    pub missing: HashMap<String, String>,
    /// Queries sent for this fetch.
    pub queries: usize,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum MetricError {
    /// The source could not be reached or answered with an error.
    #[error("{0}")]
    Unavailable(String),
}

#[async_trait]
pub trait MetricSource: Send + Sync {
    fn kind(&self) -> &'static str;
    /// One tick for every watched service: counts over the `window` ending at `at`.
    async fn fetch(
        &self,
        services: &[Watched],
        at: DateTime<Utc>,
        window: Duration,
    ) -> Result<Fetched, MetricError>;

    /// Runs instant queries at `at` (custom checks, SLO burn rates), each
    /// distinct text once; each answer separately, so one refused query
    /// leaves the others' data. Sources that cannot run PromQL say so for
    /// every query: the checks then have no data, which never acts.
    async fn instant(&self, queries: &[String], at: DateTime<Utc>) -> Result<Answers, MetricError> {
        let _ = at;
        let why = format!("the {} metric source cannot run queries", self.kind());
        Ok(queries
            .iter()
            .map(|q| (q.clone(), Err(why.clone())))
            .collect())
    }

    /// How often the source's data is scraped, when it can tell (None:
    /// it cannot, and the judge's evidence step stays at its floor).
    async fn scrape_interval(&self) -> Result<Option<Duration>, MetricError> {
        Ok(None)
    }
}

/// One series of an instant query's answer: the labels the checks split by
/// and the value.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub service: Option<String>,
    pub track: Option<String>,
    pub value: f64,
}

/// Query text → its series, or why there are none.
pub type Answers = HashMap<String, Result<Vec<Series>, String>>;

/// The default queries, for the `http_requests_total` and
/// `http_request_duration_seconds_bucket` conventions with `service` and
/// `track` labels. `$window` is the tick length.
pub struct Defaults;

impl Defaults {
    pub const REQUESTS: &'static str =
        "sum by (service, track) (increase(http_requests_total[$window]))";
    pub const ERRORS: &'static str =
        "sum by (service, track) (increase(http_requests_total{code=~\"5..\"}[$window]))";
    pub const LATENCY: &'static str =
        "sum by (service, track, le) (increase(http_request_duration_seconds_bucket[$window]))";
}

/// Fills `$service`, `$namespace`, `$track` and `$window` into a template.
pub fn render(
    template: &str,
    service: &str,
    namespace: &str,
    track: &str,
    window: Duration,
) -> String {
    template
        .replace("$service", service)
        .replace("$namespace", namespace)
        .replace("$track", track)
        .replace("$window", &format!("{}s", window.as_secs().max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_are_filled() {
        assert_eq!(
            render(
                "rate(x{service=\"$service\",ns=\"$namespace\",track=\"$track\"}[$window])",
                "checkout",
                "shop",
                "canary",
                Duration::from_secs(15)
            ),
            "rate(x{service=\"checkout\",ns=\"shop\",track=\"canary\"}[15s])"
        );
        assert_eq!(
            render(Defaults::REQUESTS, "a", "b", "c", Duration::from_secs(10)),
            "sum by (service, track) (increase(http_requests_total[10s]))"
        );
    }
}
