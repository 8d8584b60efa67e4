//! A fake Atlassian Statuspage (API v1) on 127.0.0.1: the incidents
//! endpoints rollbot uses, with the real API's rules.
//!
//! - `Authorization: OAuth <key>`; a missing or unknown key is 401
//!   `{"error": "Could not authenticate"}`.
//! - `POST /v1/pages/{page_id}/incidents` and `PATCH
//!   …/incidents/{incident_id}` take `{"incident": {...}}`; without it 400
//!   `{"error": "param is missing or the value is empty: incident"}`; a
//!   blank name, an unknown status or component status, or an unknown
//!   component is 422 `{"error": ["…"]}`. Component statuses sent with an
//!   incident change the page's components; resolving an incident leaves
//!   them as they are (the real API does too).
//! - One request per second per key: a faster one is answered 420 with
//!   `Retry-After: 1`, as is any answer forced with [`FakeStatuspage::throttle`].
//! - Every request is recorded with the answer it got.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{patch, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request as received, and the status it was answered with.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub authorization: String,
    pub body: Value,
    pub status: u16,
    pub at: Instant,
}

#[derive(Clone, Debug)]
pub struct Incident {
    pub id: String,
    pub name: String,
    pub status: String,
    pub impact: String,
    /// Each update's status and body, in order.
    pub updates: Vec<(String, String)>,
}

struct Inner {
    page_id: String,
    keys: Vec<String>,
    /// Component ID → status.
    components: BTreeMap<String, String>,
    incidents: Vec<Incident>,
    received: Vec<Received>,
    /// Last accepted request per key, for the one-per-second limit.
    last: HashMap<String, Instant>,
    /// Answers forced before the next requests (420 or 429).
    throttled: Vec<u16>,
}

#[derive(Clone)]
pub struct FakeStatuspage {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
}

const INCIDENT_STATUSES: [&str; 8] = [
    "investigating",
    "identified",
    "monitoring",
    "resolved",
    "scheduled",
    "in_progress",
    "verifying",
    "completed",
];
const COMPONENT_STATUSES: [&str; 5] = [
    "operational",
    "under_maintenance",
    "degraded_performance",
    "partial_outage",
    "major_outage",
];

impl FakeStatuspage {
    /// A page `page_id` with these components (all operational) that
    /// accepts `key`.
    pub async fn start(page_id: &str, key: &str, components: &[&str]) -> FakeStatuspage {
        let inner = Arc::new(Mutex::new(Inner {
            page_id: page_id.into(),
            keys: vec![key.into()],
            components: components
                .iter()
                .map(|c| (c.to_string(), "operational".to_string()))
                .collect(),
            incidents: Vec::new(),
            received: Vec::new(),
            last: HashMap::new(),
            throttled: Vec::new(),
        }));
        let app = Router::new()
            .route("/v1/pages/{page}/incidents", post(create))
            .route("/v1/pages/{page}/incidents/{id}", patch(update))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeStatuspage { url, inner }
    }

    /// The next `n` requests are answered `status` (420 or 429) with
    /// `Retry-After: 1`.
    pub fn throttle(&self, n: usize, status: u16) {
        self.inner
            .lock()
            .unwrap()
            .throttled
            .extend(std::iter::repeat_n(status, n));
    }

    pub fn received(&self) -> Vec<Received> {
        self.inner.lock().unwrap().received.clone()
    }

    pub fn incidents(&self) -> Vec<Incident> {
        self.inner.lock().unwrap().incidents.clone()
    }

    pub fn component(&self, id: &str) -> Option<String> {
        self.inner.lock().unwrap().components.get(id).cloned()
    }
}

fn error(status: u16, body: Value) -> Response {
    (StatusCode::from_u16(status).unwrap(), Json(body)).into_response()
}

/// The checks every request goes through: the key, the rate limit, the
/// page. Records the request with its answer.
fn admit(
    inner: &mut Inner,
    method: &str,
    path: &str,
    page: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Value, Box<Response>> {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let mut record = Received {
        method: method.into(),
        path: path.into(),
        authorization: auth.clone(),
        body: parsed.clone(),
        status: 0,
        at: Instant::now(),
    };
    let key = auth.strip_prefix("OAuth ").unwrap_or("").to_string();
    let answer: Result<Value, Box<Response>> = (|| {
        if !inner.keys.contains(&key) {
            return Err(Box::new(error(
                401,
                json!({"error": "Could not authenticate"}),
            )));
        }
        let limited = |status: u16| {
            let mut r = error(status, json!({"error": "Rate limit exceeded"}));
            r.headers_mut().insert("retry-after", "1".parse().unwrap());
            r
        };
        if !inner.throttled.is_empty() {
            return Err(Box::new(limited(inner.throttled.remove(0))));
        }
        if let Some(last) = inner.last.get(&key) {
            if last.elapsed() < Duration::from_millis(950) {
                return Err(Box::new(limited(420)));
            }
        }
        inner.last.insert(key.clone(), Instant::now());
        if page != inner.page_id {
            return Err(Box::new(error(
                404,
                json!({"error": "The requested resource could not be found."}),
            )));
        }
        match parsed.get("incident") {
            Some(i) if i.is_object() => Ok(i.clone()),
            _ => Err(Box::new(error(
                400,
                json!({"error": "param is missing or the value is empty: incident"}),
            ))),
        }
    })();
    record.status = match &answer {
        Ok(_) => {
            if method == "POST" {
                201
            } else {
                200
            }
        }
        Err(r) => r.status().as_u16(),
    };
    inner.received.push(record);
    answer
}

/// The fields both endpoints share: status, components.
fn validate(inner: &Inner, incident: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    if let Some(s) = incident.get("status") {
        if !s.as_str().is_some_and(|s| INCIDENT_STATUSES.contains(&s)) {
            errors.push("Status is not included in the list".to_string());
        }
    }
    if let Some(ids) = incident.get("component_ids") {
        for id in ids.as_array().into_iter().flatten() {
            if !id
                .as_str()
                .is_some_and(|i| inner.components.contains_key(i))
            {
                errors.push(format!("Component {id} could not be found"));
            }
        }
    }
    if let Some(map) = incident.get("components").and_then(Value::as_object) {
        for (id, status) in map {
            if !inner.components.contains_key(id) {
                errors.push(format!("Component {id} could not be found"));
            }
            if !status
                .as_str()
                .is_some_and(|s| COMPONENT_STATUSES.contains(&s))
            {
                errors.push(format!(
                    "Component status {status} is not included in the list"
                ));
            }
        }
    }
    errors
}

fn apply_components(inner: &mut Inner, incident: &Value) {
    if let Some(map) = incident.get("components").and_then(Value::as_object) {
        for (id, status) in map {
            inner
                .components
                .insert(id.clone(), status.as_str().unwrap_or_default().into());
        }
    }
}

async fn create(
    State(inner): State<Arc<Mutex<Inner>>>,
    Path(page): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut inner = inner.lock().unwrap();
    let path = format!("/v1/pages/{page}/incidents");
    let incident = match admit(&mut inner, "POST", &path, &page, &headers, &body) {
        Ok(i) => i,
        Err(r) => return *r,
    };
    let mut errors = validate(&inner, &incident);
    let name = incident["name"].as_str().unwrap_or("").trim().to_string();
    if name.is_empty() {
        errors.insert(0, "Name can't be blank".into());
    }
    if !errors.is_empty() {
        inner.received.last_mut().unwrap().status = 422;
        return error(422, json!({ "error": errors }));
    }
    apply_components(&mut inner, &incident);
    let status = incident["status"]
        .as_str()
        .unwrap_or("investigating")
        .to_string();
    let id = format!("inc{:09}", inner.incidents.len() + 1);
    let created = Incident {
        id: id.clone(),
        name: name.clone(),
        status: status.clone(),
        impact: incident["impact_override"]
            .as_str()
            .unwrap_or("none")
            .into(),
        updates: vec![(
            status.clone(),
            incident["body"].as_str().unwrap_or("").into(),
        )],
    };
    inner.incidents.push(created.clone());
    (
        StatusCode::CREATED,
        Json(json!({"id": id, "name": name, "status": status, "impact": created.impact, "page_id": page, "shortlink": format!("https://stspg.io/{id}")})),
    )
        .into_response()
}

async fn update(
    State(inner): State<Arc<Mutex<Inner>>>,
    Path((page, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut inner = inner.lock().unwrap();
    let path = format!("/v1/pages/{page}/incidents/{id}");
    let incident = match admit(&mut inner, "PATCH", &path, &page, &headers, &body) {
        Ok(i) => i,
        Err(r) => return *r,
    };
    let Some(k) = inner.incidents.iter().position(|i| i.id == id) else {
        inner.received.last_mut().unwrap().status = 404;
        return error(
            404,
            json!({"error": "The requested resource could not be found."}),
        );
    };
    let errors = validate(&inner, &incident);
    if !errors.is_empty() {
        inner.received.last_mut().unwrap().status = 422;
        return error(422, json!({ "error": errors }));
    }
    apply_components(&mut inner, &incident);
    let i = &mut inner.incidents[k];
    if let Some(s) = incident["status"].as_str() {
        i.status = s.into();
    }
    i.updates.push((
        i.status.clone(),
        incident["body"].as_str().unwrap_or("").into(),
    ));
    let answer = json!({"id": i.id, "name": i.name, "status": i.status});
    (StatusCode::OK, Json(answer)).into_response()
}
