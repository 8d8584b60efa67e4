//! A fake PagerDuty Events API v2 on 127.0.0.1: `POST /v2/enqueue`
//! (alerts: trigger, acknowledge, resolve, grouped by `dedup_key`) and
//! `POST /v2/change/enqueue` (change events), with the real API's rules.
//!
//! - 202 `{"status": "success", "message": "Event processed", "dedup_key"}`
//!   (`"Change event processed"` for a change event).
//! - 400 `{"status": "invalid event", "message": "Event object is invalid",
//!   "errors": [...]}` for a missing or blank field: `routing_key` (and its
//!   length, 32 characters), `event_action`, `dedup_key` on resolve,
//!   `payload.summary`, `payload.source`, `payload.severity` (one of
//!   critical, error, warning, info) on trigger; `payload.summary` on a
//!   change event. A routing key no integration has is refused the same way.
//! - 429 with `Retry-After` for answers forced with [`FakePagerDuty::throttle`].
//! - Every request is recorded with the answer it got; open alerts are
//!   kept by `dedup_key`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    pub body: Value,
    pub status: u16,
}

#[derive(Default)]
struct Inner {
    keys: Vec<String>,
    received: Vec<Received>,
    /// dedup_key → "triggered" | "acknowledged" | "resolved".
    alerts: BTreeMap<String, String>,
    throttled: usize,
}

#[derive(Clone)]
pub struct FakePagerDuty {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
}

impl FakePagerDuty {
    /// Accepts events for these integration keys (32 characters each).
    pub async fn start(keys: &[&str]) -> FakePagerDuty {
        let inner = Arc::new(Mutex::new(Inner {
            keys: keys.iter().map(|k| k.to_string()).collect(),
            ..Inner::default()
        }));
        let app = Router::new()
            .route("/v2/enqueue", post(enqueue))
            .route("/v2/change/enqueue", post(change))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakePagerDuty { url, inner }
    }

    /// The next `n` requests are answered 429 with `Retry-After: 1`.
    pub fn throttle(&self, n: usize) {
        self.inner.lock().unwrap().throttled += n;
    }

    pub fn received(&self) -> Vec<Received> {
        self.inner.lock().unwrap().received.clone()
    }

    /// Accepted alert events (`/v2/enqueue`), in order.
    pub fn events(&self) -> Vec<Value> {
        self.accepted("/v2/enqueue")
    }

    /// Accepted change events, in order.
    pub fn changes(&self) -> Vec<Value> {
        self.accepted("/v2/change/enqueue")
    }

    fn accepted(&self, path: &str) -> Vec<Value> {
        self.received()
            .into_iter()
            .filter(|r| r.path == path && r.status == 202)
            .map(|r| r.body)
            .collect()
    }

    /// The alert's state by `dedup_key`.
    pub fn alert(&self, dedup_key: &str) -> Option<String> {
        self.inner.lock().unwrap().alerts.get(dedup_key).cloned()
    }
}

fn invalid(errors: Vec<String>) -> Box<Response> {
    Box::new((
        StatusCode::BAD_REQUEST,
        Json(json!({"status": "invalid event", "message": "Event object is invalid", "errors": errors})),
    )
        .into_response())
}

fn blank(v: &Value, path: &[&str]) -> bool {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_str().is_none_or(|s| s.trim().is_empty())
}

/// Throttle and routing key: what both endpoints check first.
fn admit(inner: &mut Inner, event: &Value) -> Result<(), Box<Response>> {
    if inner.throttled > 0 {
        inner.throttled -= 1;
        let mut r = (StatusCode::TOO_MANY_REQUESTS, "").into_response();
        r.headers_mut().insert("retry-after", "1".parse().unwrap());
        return Err(Box::new(r));
    }
    let key = event["routing_key"].as_str().unwrap_or("");
    if key.trim().is_empty() {
        return Err(invalid(vec!["'routing_key' is missing or blank".into()]));
    }
    if key.len() != 32 {
        return Err(invalid(vec![
            "Length of 'routing_key' is incorrect (should be 32 characters)".into(),
        ]));
    }
    if !inner.keys.iter().any(|k| k == key) {
        return Err(invalid(vec!["Invalid routing key".into()]));
    }
    Ok(())
}

fn record(inner: &mut Inner, path: &str, body: Value, r: Response) -> Response {
    inner.received.push(Received {
        path: path.into(),
        body,
        status: r.status().as_u16(),
    });
    r
}

async fn enqueue(State(inner): State<Arc<Mutex<Inner>>>, body: Bytes) -> Response {
    let mut inner = inner.lock().unwrap();
    let event: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let answer = (|| {
        admit(&mut inner, &event)?;
        let action = event["event_action"].as_str().unwrap_or("");
        let mut errors = Vec::new();
        match action {
            "trigger" => {
                for f in ["summary", "source", "severity"] {
                    if blank(&event, &["payload", f]) {
                        errors.push(format!("'payload.{f}' is missing or blank"));
                    }
                }
                let sev = event["payload"]["severity"].as_str().unwrap_or("");
                if !sev.is_empty() && !["critical", "error", "warning", "info"].contains(&sev) {
                    errors.push("'payload.severity' is invalid (must be one of the following: 'critical', 'warning', 'error' or 'info')".into());
                }
            }
            "acknowledge" | "resolve" => {
                if blank(&event, &["dedup_key"]) {
                    errors.push("'dedup_key' is missing or blank".into());
                }
            }
            "" => errors.push("'event_action' is missing or blank".into()),
            _ => errors.push("'event_action' is invalid (must be one of the following: 'trigger', 'acknowledge' or 'resolve')".into()),
        }
        if !errors.is_empty() {
            return Err(invalid(errors));
        }
        let key = event["dedup_key"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("generated{}", inner.received.len()));
        let state = match action {
            "trigger" => "triggered",
            "acknowledge" => "acknowledged",
            _ => "resolved",
        };
        inner.alerts.insert(key.clone(), state.into());
        Ok((
            StatusCode::ACCEPTED,
            Json(json!({"status": "success", "message": "Event processed", "dedup_key": key})),
        )
            .into_response())
    })();
    let r = answer.unwrap_or_else(|e| *e);
    record(&mut inner, "/v2/enqueue", event, r)
}

async fn change(State(inner): State<Arc<Mutex<Inner>>>, body: Bytes) -> Response {
    let mut inner = inner.lock().unwrap();
    let event: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let answer = (|| {
        admit(&mut inner, &event)?;
        if blank(&event, &["payload", "summary"]) {
            return Err(invalid(
                vec!["'payload.summary' is missing or blank".into()],
            ));
        }
        Ok((
            StatusCode::ACCEPTED,
            Json(json!({"status": "success", "message": "Change event processed"})),
        )
            .into_response())
    })();
    let r = answer.unwrap_or_else(|e| *e);
    record(&mut inner, "/v2/change/enqueue", event, r)
}
