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
use crate::judge::{Tick, TrackSample};
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

/// A service's ticks over a past window (a before/after reference): what
/// [`MetricSource::fetch_range`] returns.
#[derive(Debug, Default)]
pub struct Ranged {
    /// One sample per step that has data, oldest first.
    pub samples: Vec<TrackSample>,
    /// Why there are none, when there are none.
    pub missing: Option<String>,
    /// Queries sent.
    pub queries: usize,
}

/// The most points Prometheus returns per series of one range query; a
/// longer range is asked for in pieces.
pub const MAX_POINTS: usize = 11_000;

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

    /// The whole service `w` (every track together) for the ticks ending at
    /// `first`, `first + step`, … up to `last`, each over `window`. By
    /// default one fetch per tick; Prometheus answers with one range query
    /// per signal.
    async fn fetch_range(
        &self,
        w: &Watched,
        span: (DateTime<Utc>, DateTime<Utc>),
        step: Duration,
        window: Duration,
    ) -> Result<Ranged, MetricError> {
        by_ticks(self, w, span, step, window).await
    }

    /// Whether `instant` sends queries (and so counts toward a tick's).
    fn runs_queries(&self) -> bool {
        false
    }

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

/// `MetricSource::fetch_range` as one `fetch` per tick: the default, and
/// what the range queries are measured against.
pub(crate) async fn by_ticks<S: MetricSource + ?Sized>(
    source: &S,
    w: &Watched,
    (first, last): (DateTime<Utc>, DateTime<Utc>),
    step: Duration,
    window: Duration,
) -> Result<Ranged, MetricError> {
    let step_ms = step.as_millis().max(1) as i64;
    let mut out = Ranged::default();
    let mut last_error = None;
    let mut at = first;
    while at <= last {
        match source.fetch(std::slice::from_ref(w), at, window).await {
            Ok(f) => {
                out.queries += f.queries;
                match f.ticks.get(&w.service).and_then(|t| t.canary.clone()) {
                    Some(s) => out.samples.push(s),
                    None => {
                        if out.missing.is_none() {
                            out.missing = f.missing.get(&w.service).cloned();
                        }
                    }
                }
            }
            Err(e) => last_error = Some(e),
        }
        at += chrono::Duration::milliseconds(step_ms);
    }
    if out.samples.is_empty() {
        if let Some(e) = last_error {
            return Err(e);
        }
    }
    Ok(out)
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
