//! The Prometheus metric source: instant queries against `/api/v1/query`.
//!
//! Services that keep the default queries share one grouped query per metric
//! per tick; a service with its own templates gets its own queries. Error
//! bodies (`{"status":"error","errorType":…,"error":…}`) and empty results
//! are reported with the query that caused them.

use super::*;
use crate::config::SecretValue;
use crate::judge::TrackSample;
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::BTreeMap;

mod instant;
mod range;
mod scrape;

/// An instant as Prometheus' API takes it: seconds since the epoch.
fn seconds(at: DateTime<Utc>) -> String {
    format!("{:.3}", at.timestamp_millis() as f64 / 1000.0)
}

/// How requests authenticate to Prometheus.
#[derive(Clone, Debug)]
pub enum Auth {
    None,
    Bearer(SecretValue),
    Basic { user: String, password: SecretValue },
}

impl Auth {
    /// `req` with these credentials, read at the time of the call.
    pub fn apply(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Auth::None => req,
            Auth::Bearer(t) => req.bearer_auth(t.expose()),
            Auth::Basic { user, password } => req.basic_auth(user, Some(password.expose())),
        }
    }
}

pub struct PrometheusSource {
    client: reqwest::Client,
    base: String,
    auth: Auth,
    timeout: Duration,
    defaults: MetricQueries,
}

// Answers are parsed borrowing from the body: a grouped query for thousands
// of rollouts returns tens of thousands of samples every tick.
// The envelope is the same for instant (`Sample`) and range
// (`range::RangeSeries`) queries.
#[derive(Deserialize)]
#[serde(bound(deserialize = "R: Deserialize<'de>"))]
struct Answer<'a, R> {
    status: &'a str,
    #[serde(default)]
    data: Option<Data<'a, R>>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(bound(deserialize = "R: Deserialize<'de>"))]
struct Data<'a, R> {
    #[serde(rename = "resultType")]
    result_type: &'a str,
    result: Vec<R>,
}

/// What a query's answer must hold: `query` / `vector` / `an instant
/// vector`, or `range query` / `matrix` / `a range vector`.
struct Expected {
    query: &'static str,
    result_type: &'static str,
    named: &'static str,
}

#[derive(Deserialize)]
struct Sample<'a> {
    #[serde(borrow)]
    metric: BTreeMap<&'a str, Cow<'a, str>>,
    #[serde(borrow)]
    value: (f64, &'a str),
}

/// One metric kind, one query.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    Requests,
    Errors,
    Latency,
    Cpu,
    Memory,
    Ready,
}

const KINDS: [Kind; 6] = [
    Kind::Requests,
    Kind::Errors,
    Kind::Latency,
    Kind::Cpu,
    Kind::Memory,
    Kind::Ready,
];

impl Kind {
    fn template(self, q: &MetricQueries) -> Option<&str> {
        match self {
            Kind::Requests => q.requests.as_deref(),
            Kind::Errors => q.errors.as_deref(),
            Kind::Latency => q.latency.as_deref(),
            Kind::Cpu => q.cpu.as_deref(),
            Kind::Memory => q.memory.as_deref(),
            Kind::Ready => q.ready_failures.as_deref(),
        }
    }
    fn default(self) -> Option<&'static str> {
        match self {
            Kind::Requests => Some(Defaults::REQUESTS),
            Kind::Errors => Some(Defaults::ERRORS),
            Kind::Latency => Some(Defaults::LATENCY),
            _ => None,
        }
    }
}

/// Values by (service, track) and, for histograms, by bucket.
#[derive(Default)]
struct Collected {
    values: HashMap<(Kind, String, String), f64>,
    buckets: HashMap<(String, String), Vec<(f64, f64)>>,
}

impl PrometheusSource {
    pub fn new(
        url: &str,
        auth: Auth,
        timeout: Duration,
        defaults: MetricQueries,
    ) -> PrometheusSource {
        PrometheusSource {
            client: reqwest::Client::builder()
                .timeout(timeout)
                .build()
                .expect("HTTP client"),
            base: url.trim_end_matches('/').to_string(),
            auth,
            timeout,
            defaults,
        }
    }

    /// Runs one instant query at `at`; returns the answer's body.
    async fn query(&self, promql: &str, at: DateTime<Utc>) -> Result<bytes::Bytes, MetricError> {
        self.get(
            "query",
            &[("query", promql.to_string()), ("time", seconds(at))],
        )
        .await
    }

    /// Sends `params` to `/api/v1/{api}`; returns the answer's body.
    async fn get(&self, api: &str, params: &[(&str, String)]) -> Result<bytes::Bytes, MetricError> {
        let url = format!("{}/api/v1/{api}", self.base);
        let req = self.auth.apply(self.client.get(&url).query(params));
        let resp = req.send().await.map_err(|e| {
            MetricError::Unavailable(if e.is_timeout() {
                format!(
                    "Prometheus at {} did not answer within {}",
                    self.base,
                    crate::domain::human_duration(self.timeout)
                )
            } else {
                format!(
                    "cannot reach Prometheus at {}: {}",
                    self.base,
                    root_cause(&e)
                )
            })
        })?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| MetricError::Unavailable(format!("reading Prometheus' answer: {e}")))?;
        // An error page instead of the API's JSON is reported as it is.
        if !status.is_success() && !body.starts_with(b"{") {
            return Err(MetricError::Unavailable(format!(
                "Prometheus at {} answered HTTP {status}: {}",
                self.base,
                String::from_utf8_lossy(&body[..body.len().min(200)])
            )));
        }
        Ok(body)
    }

    /// Checks and parses an answer to `promql`.
    fn parse<'a>(&self, body: &'a [u8], promql: &str) -> Result<Vec<Sample<'a>>, MetricError> {
        self.checked(
            body,
            promql,
            Expected {
                query: "query",
                result_type: "vector",
                named: "an instant vector",
            },
        )
    }

    /// Checks an answer's envelope and result type; returns its result.
    fn checked<'a, R: Deserialize<'a>>(
        &self,
        body: &'a [u8],
        promql: &str,
        want: Expected,
    ) -> Result<Vec<R>, MetricError> {
        let answer: Answer<R> = serde_json::from_slice(body).map_err(|_| {
            MetricError::Unavailable(format!(
                "Prometheus at {} answered with a body that is not its API's JSON: {}",
                self.base,
                String::from_utf8_lossy(&body[..body.len().min(200)])
            ))
        })?;
        if answer.status != "success" {
            return Err(MetricError::Unavailable(format!(
                "Prometheus refused the {} `{promql}`: {}: {}",
                want.query,
                answer.error_type.unwrap_or_else(|| "error".to_string()),
                answer.error.unwrap_or_default()
            )));
        }
        let data = answer.data.ok_or_else(|| {
            MetricError::Unavailable("Prometheus answered success without data".into())
        })?;
        if data.result_type != want.result_type {
            return Err(MetricError::Unavailable(format!(
                "the {} `{promql}` returns a {}, not {}",
                want.query, data.result_type, want.named
            )));
        }
        Ok(data.result)
    }

    /// Runs a query and adds its samples to `into`.
    async fn run(
        &self,
        into: &mut Collected,
        kind: Kind,
        promql: &str,
        at: DateTime<Utc>,
        service: Option<&str>,
        track: Option<&str>,
    ) -> Result<(), MetricError> {
        let body = self.query(promql, at).await?;
        let samples = self.parse(&body, promql)?;
        Self::collect(into, kind, samples, service, track);
        Ok(())
    }

    fn collect(
        into: &mut Collected,
        kind: Kind,
        samples: Vec<Sample>,
        service: Option<&str>,
        track: Option<&str>,
    ) {
        for s in samples {
            let Some(svc) = service
                .map(str::to_string)
                .or_else(|| s.metric.get("service").map(|v| v.to_string()))
            else {
                continue;
            };
            // A series without a track label counts only for a whole
            // service (a rollout judged after vs before).
            let tr = track
                .map(str::to_string)
                .or_else(|| s.metric.get("track").map(|v| v.to_string()))
                .unwrap_or_default();
            let Ok(v) = s.value.1.parse::<f64>() else {
                continue;
            };
            if !v.is_finite() {
                continue;
            }
            if kind == Kind::Latency {
                let le = match s.metric.get("le").map(|v| v.as_ref()) {
                    Some("+Inf") => f64::INFINITY,
                    Some(x) => match x.parse() {
                        Ok(v) => v,
                        Err(_) => continue,
                    },
                    None => continue,
                };
                into.buckets.entry((svc, tr)).or_default().push((le, v));
            } else {
                *into.values.entry((kind, svc, tr)).or_insert(0.0) += v;
            }
        }
    }
}

impl PrometheusSource {
    /// Says which tracks of a service the request query had no series for,
    /// and the query as it was sent.
    fn no_series(&self, w: &Watched, absent: &[&str], window: Duration) -> String {
        let own = Kind::Requests.template(&w.queries);
        let template = own
            .or(Kind::Requests.template(&self.defaults))
            .or(Kind::Requests.default())
            .unwrap_or_default();
        let tracks: Vec<String> = absent.iter().map(|t| format!("track=\"{t}\"")).collect();
        let queries: Vec<String> = match own {
            // The service's own query, once per track when it names one.
            Some(t) if t.contains("$track") => absent
                .iter()
                .map(|track| render(t, &w.service, &w.namespace, track, window))
                .collect(),
            Some(t) => vec![render(t, &w.service, &w.namespace, "", window)],
            None => vec![render(template, "", "", "", window)],
        };
        format!(
            "the request query `{}` returned no series for service=\"{}\", {}; check that the {} pods are scraped with these labels, or set the service's [services.metrics] requests query",
            queries.join("` / `"),
            w.service,
            tracks.join(" and "),
            absent.join(" and "),
        )
    }
}

fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cause = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        cause = s.to_string();
        src = s.source();
    }
    cause
}

/// Builds one track's sample; counts are rounded and made consistent
/// (Prometheus' `increase` extrapolates, so buckets can disagree slightly).
fn sample(c: &Collected, service: &str, track: &str) -> Option<TrackSample> {
    let get = |k: Kind| {
        c.values
            .get(&(k, service.to_string(), track.to_string()))
            .copied()
    };
    let requests = get(Kind::Requests)?.round().max(0.0) as u64;
    let errors = (get(Kind::Errors).unwrap_or(0.0).round().max(0.0) as u64).min(requests);
    let mut buckets: Vec<(f64, u64)> = c
        .buckets
        .get(&(service.to_string(), track.to_string()))
        .map(|b| {
            b.iter()
                .map(|(le, v)| (*le, v.round().max(0.0) as u64))
                .collect()
        })
        .unwrap_or_default();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut running = 0;
    for b in &mut buckets {
        running = running.max(b.1);
        b.1 = running;
    }
    if let Some(last) = buckets.last() {
        if !last.0.is_infinite() {
            buckets.clear();
        }
    }
    Some(TrackSample {
        requests,
        errors,
        latency_buckets: buckets,
        cpu: get(Kind::Cpu),
        memory: get(Kind::Memory),
        ready_failures: get(Kind::Ready).map(|v| v.round().max(0.0) as u64),
        circuit_open: None,
    })
}

/// Every track of a service as one sample (a rollout judged after vs
/// before has no second track): values added, histograms added bucket by
/// bucket.
fn whole(c: &Collected, service: &str) -> Option<TrackSample> {
    const ALL: &str = "\u{0}all";
    let mut merged = Collected::default();
    for ((kind, svc, _), v) in &c.values {
        if svc == service {
            *merged
                .values
                .entry((*kind, svc.clone(), ALL.to_string()))
                .or_insert(0.0) += v;
        }
    }
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    for ((svc, _), b) in &c.buckets {
        if svc != service {
            continue;
        }
        for &(le, v) in b {
            match buckets.iter_mut().find(|(x, _)| *x == le) {
                Some(slot) => slot.1 += v,
                None => buckets.push((le, v)),
            }
        }
    }
    if !buckets.is_empty() {
        merged
            .buckets
            .insert((service.to_string(), ALL.to_string()), buckets);
    }
    sample(&merged, service, ALL)
}

#[async_trait]
impl MetricSource for PrometheusSource {
    fn kind(&self) -> &'static str {
        "prometheus"
    }

    async fn instant(&self, queries: &[String], at: DateTime<Utc>) -> Result<Answers, MetricError> {
        self.instant_all(queries, at).await
    }

    fn runs_queries(&self) -> bool {
        true
    }

    async fn fetch_range(
        &self,
        w: &Watched,
        span: (DateTime<Utc>, DateTime<Utc>),
        step: Duration,
        window: Duration,
    ) -> Result<Ranged, MetricError> {
        self.range_whole(w, span, step, window).await
    }

    async fn scrape_interval(&self) -> Result<Option<Duration>, MetricError> {
        self.scrape_interval_of().await
    }

    async fn fetch(
        &self,
        services: &[Watched],
        at: DateTime<Utc>,
        window: Duration,
    ) -> Result<Fetched, MetricError> {
        let mut collected = Collected::default();
        let mut out = Fetched::default();
        let mut reached = false;
        let mut last_error = None;
        for kind in KINDS {
            // Services on the shared (grouped) query for this kind.
            let shared: Vec<&Watched> = services
                .iter()
                .filter(|w| kind.template(&w.queries).is_none())
                .collect();
            if let Some(template) = kind.template(&self.defaults).or(kind.default()) {
                if !shared.is_empty() {
                    out.queries += 1;
                    match self
                        .run(
                            &mut collected,
                            kind,
                            &render(template, "", "", "", window),
                            at,
                            None,
                            None,
                        )
                        .await
                    {
                        Ok(()) => reached = true,
                        Err(e) => {
                            for w in &shared {
                                out.missing
                                    .entry(w.service.clone())
                                    .or_insert_with(|| e.to_string());
                            }
                            last_error = Some(e);
                        }
                    }
                }
            }
            for w in services
                .iter()
                .filter(|w| kind.template(&w.queries).is_some())
            {
                let template = kind.template(&w.queries).expect("filtered");
                let tracks: Vec<Option<&str>> = if template.contains("$track") && !w.whole_service {
                    vec![Some("baseline"), Some("canary")]
                } else {
                    vec![None]
                };
                for track in tracks {
                    out.queries += 1;
                    let q = render(
                        template,
                        &w.service,
                        &w.namespace,
                        track.unwrap_or(""),
                        window,
                    );
                    match self
                        .run(&mut collected, kind, &q, at, Some(&w.service), track)
                        .await
                    {
                        Ok(()) => reached = true,
                        Err(e) => {
                            out.missing
                                .entry(w.service.clone())
                                .or_insert_with(|| e.to_string());
                            last_error = Some(e);
                        }
                    }
                }
            }
        }
        if !reached {
            if let Some(e) = last_error {
                return Err(e);
            }
        }
        for w in services {
            if out.missing.contains_key(&w.service) {
                continue;
            }
            if w.whole_service {
                let canary = whole(&collected, &w.service);
                if canary.is_none() {
                    out.missing.insert(
                        w.service.clone(),
                        format!(
                            "the request query returned no series for service=\"{}\" (any track or none); check that its pods are scraped with a `service` label, or set the service's [services.metrics] requests query",
                            w.service
                        ),
                    );
                }
                out.ticks.insert(
                    w.service.clone(),
                    Tick {
                        t: w.t,
                        baseline: None,
                        canary,
                    },
                );
                continue;
            }
            let baseline = sample(&collected, &w.service, "baseline");
            let canary = sample(&collected, &w.service, "canary");
            let absent: Vec<&str> = [("baseline", &baseline), ("canary", &canary)]
                .into_iter()
                .filter(|(_, s)| s.is_none())
                .map(|(track, _)| track)
                .collect();
            if !absent.is_empty() {
                out.missing
                    .insert(w.service.clone(), self.no_series(w, &absent, window));
            }
            out.ticks.insert(
                w.service.clone(),
                Tick {
                    t: w.t,
                    baseline,
                    canary,
                },
            );
        }
        Ok(out)
    }
}
