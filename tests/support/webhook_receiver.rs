//! A webhook receiver on 127.0.0.1 that checks rollbot's signature the way
//! the README tells receivers to, and answers from a script: succeed, fail
//! with a status and body, hang, or answer slowly.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Debug)]
pub enum Reply {
    /// 200 with this body.
    Ok(String),
    /// This status and body.
    Status(u16, String),
    /// Never answers.
    Hang,
    /// Waits, then 200.
    Slow(Duration),
}

/// One request as received.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: String,
    pub body: serde_json::Value,
    pub idempotency_key: String,
    pub signature_ok: bool,
}

impl Received {
    fn new(
        method: &str,
        body: serde_json::Value,
        headers: &HeaderMap,
        signature_ok: bool,
    ) -> Received {
        Received {
            method: method.into(),
            body,
            idempotency_key: headers
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string(),
            signature_ok,
        }
    }
}

#[derive(Default)]
struct Inner {
    replies: VecDeque<Reply>,
    status: VecDeque<String>,
    received: Vec<Received>,
}

#[derive(Clone)]
struct Shared {
    secret: Vec<u8>,
    inner: Arc<Mutex<Inner>>,
}

pub struct Receiver {
    pub port: u16,
    inner: Arc<Mutex<Inner>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Checks `X-Rollbot-Signature` over `"{X-Rollbot-Timestamp}.{body}"`, and
/// that the timestamp is recent.
fn check(secret: &[u8], headers: &HeaderMap, body: &[u8]) -> bool {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
    let ts = h("x-rollbot-timestamp");
    let fresh = ts
        .parse::<i64>()
        .is_ok_and(|t| (chrono::Utc::now().timestamp() - t).abs() <= 300);
    fresh && rollbot::backend::webhook::verify_signature(secret, ts, body, h("x-rollbot-signature"))
}

impl Receiver {
    pub async fn start(secret: &str) -> Receiver {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let shared = Shared {
            secret: secret.as_bytes().to_vec(),
            inner: inner.clone(),
        };
        let app = Router::new()
            .route("/hook", post(hook))
            .route("/status", get(status))
            .with_state(shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver { port, inner, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Answers for the next POSTs, in order; 200 `{}` once they run out.
    pub fn script(&self, replies: Vec<Reply>) {
        self.inner.lock().unwrap().replies = replies.into();
    }

    /// States the status endpoint reports, in order; the last one repeats.
    pub fn states(&self, states: &[&str]) {
        self.inner.lock().unwrap().status = states.iter().map(|s| s.to_string()).collect();
    }

    pub fn received(&self) -> Vec<Received> {
        self.inner.lock().unwrap().received.clone()
    }
}

async fn hook(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> (StatusCode, String) {
    let ok = check(&s.secret, &headers, &body);
    let reply = {
        let mut inner = s.inner.lock().unwrap();
        inner.received.push(Received::new(
            "POST",
            serde_json::from_slice(&body).unwrap_or_default(),
            &headers,
            ok,
        ));
        if !ok {
            return (StatusCode::UNAUTHORIZED, "bad signature".into());
        }
        inner.replies.pop_front()
    };
    match reply.unwrap_or(Reply::Ok("{}".into())) {
        Reply::Ok(b) => (StatusCode::OK, b),
        Reply::Status(c, b) => (StatusCode::from_u16(c).unwrap(), b),
        Reply::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            (StatusCode::OK, String::new())
        }
        Reply::Slow(d) => {
            tokio::time::sleep(d).await;
            (StatusCode::OK, "{\"detail\": \"slow but done\"}".into())
        }
    }
}

async fn status(State(s): State<Shared>, headers: HeaderMap) -> (StatusCode, String) {
    let ok = check(&s.secret, &headers, b"");
    let mut inner = s.inner.lock().unwrap();
    inner
        .received
        .push(Received::new("GET", serde_json::Value::Null, &headers, ok));
    if !ok {
        return (StatusCode::UNAUTHORIZED, "bad signature".into());
    }
    let state = if inner.status.len() > 1 {
        inner.status.pop_front().unwrap()
    } else {
        inner
            .status
            .front()
            .cloned()
            .unwrap_or_else(|| "done".into())
    };
    (
        StatusCode::OK,
        serde_json::json!({"state": state, "detail": format!("deploy job is {state}")}).to_string(),
    )
}
