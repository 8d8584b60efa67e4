//! `POST /api/v1/actions` for CI and scripts: the same command grammar as
//! chat, run as the API client `api:NAME`, which needs roles like anyone.
//!
//! Body: `{"command": "/rollback checkout bad deploy", "idempotency_key": "ci-1234"}`
//! (and `"dry_run": true` to see what a rollback or promote would send),
//! at most 64 KiB (413 beyond), the key at most 200 characters.
//!
//! The answer is the engine's outcome as JSON. Its HTTP status says who has
//! to act: 200 done, 202 waiting for a person, 4xx refused with nothing
//! changed (`"status": "refused"` and a machine-readable `"refusal"`: 403
//! not allowed, 409 frozen, busy or past a migration, 422 the backend's preflight refused…),
//! 502 only when the backend was called and failed.
//!
//! The engine's idempotency key is `api:CLIENT:KEY`, so two clients' keys
//! never meet; backends receive that same key (a webhook's
//! `Idempotency-Key` header, a GitOps commit's trailer).

use super::AppState;
use crate::domain::{Actor, Platform};
use crate::engine::{Refusal, Status};
use crate::limits::{check_length, MAX_API_BODY, MAX_IDEMPOTENCY_KEY};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionBody {
    pub command: String,
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Check and show what the command would send, send nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// Compares tokens without leaking where they differ.
fn same(a: &str, b: &str) -> bool {
    let (x, y) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    x.iter()
        .zip(y.iter())
        .fold(0u8, |acc, (p, q)| acc | (p ^ q))
        == 0
}

/// The API client a request's bearer token belongs to, or the 401 answer.
pub(super) fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<String, (StatusCode, Json<Value>)> {
    client(state, headers).ok_or_else(|| {
        (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "missing or unknown bearer token; send Authorization: Bearer <token of an [[api.clients]] entry>"})),
        )
    })
}

fn client(state: &AppState, headers: &HeaderMap) -> Option<String> {
    let token = headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")?;
    state
        .api_tokens
        .iter()
        .find(|(_, t)| same(t.expose(), token))
        .map(|(n, _)| n.clone())
}

/// Reads a request body of at most [`MAX_API_BODY`] bytes; a longer one
/// is answered 413 naming the limit. Its rest is read and dropped (up to
/// [`MAX_DRAIN`], within a few seconds) so the client, still sending, gets
/// the answer instead of a reset connection; nothing of it is kept.
/// The most of an oversized body read (and dropped) before answering.
const MAX_DRAIN: usize = 4 * 1024 * 1024;

pub(super) async fn read_body(
    body: axum::body::Body,
    endpoint: &str,
) -> Result<axum::body::Bytes, (StatusCode, Json<Value>)> {
    use futures_util::StreamExt;
    let mut stream = body.into_data_stream();
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": format!("could not read the request body: {e}")})),
            )
        })?;
        if out.len() + chunk.len() > MAX_API_BODY {
            let mut drained = out.len() + chunk.len();
            drop(out);
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
                while drained < MAX_DRAIN {
                    match stream.next().await {
                        Some(Ok(c)) => drained += c.len(),
                        _ => break,
                    }
                }
            })
            .await;
            return Err((
                StatusCode::PAYLOAD_TOO_LARGE,
                Json(
                    json!({"error": format!("the request body is larger than {} KiB, the most {endpoint} accepts; nothing was done", MAX_API_BODY / 1024)}),
                ),
            ));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.into())
}

pub async fn action(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> (StatusCode, Json<Value>) {
    let name = match authenticate(&state, &headers) {
        Ok(n) => n,
        Err(refusal) => return refusal,
    };
    let body = match read_body(body, "/api/v1/actions").await {
        Ok(b) => b,
        Err(refusal) => return refusal,
    };
    // A standby replica answers 503 so clients retry (against the leader,
    // once the Service routes to it) instead of treating it as a refusal.
    let leader = state.engine.leadership.view();
    if !leader.leader {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(
                json!({"error": format!("{}; nothing was done, retry in a few seconds", leader.describe()), "leader": leader.holder, "refusal": Refusal::Standby}),
            ),
        );
    }
    let body: ActionBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(
                    json!({"error": format!("body must be JSON like {{\"command\": \"/rollback checkout reason\", \"idempotency_key\": \"…\"}}: {e}")}),
                ),
            )
        }
    };
    if let Some(Err(e)) = body
        .idempotency_key
        .as_deref()
        .map(|k| check_length("idempotency_key", k, MAX_IDEMPOTENCY_KEY))
    {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": format!("{e}; nothing was done")})),
        );
    }
    let mut command =
        match crate::command::parse(&body.command, &state.engine.config.service_names()) {
            Ok(c) => c,
            Err(e) => {
                return (
                    StatusCode::BAD_REQUEST,
                    Json(json!({"error": e.to_string()})),
                )
            }
        };
    if body.dry_run && !command.make_dry_run() {
        return (
            StatusCode::BAD_REQUEST,
            Json(
                json!({"error": "\"dry_run\" applies to /rollback and /promote only; nothing was done"}),
            ),
        );
    }
    let actor = Actor::new(Platform::Api, name.clone(), format!("API client {name}"));
    let key = body.idempotency_key.map(|k| format!("api:{name}:{k}"));
    let outcome = crate::intake::handle(&state.engine, actor, command, key).await;
    let code = match outcome.status {
        Status::Succeeded => StatusCode::OK,
        Status::Pending => StatusCode::ACCEPTED,
        Status::Refused => outcome
            .refusal
            .map(refusal_status)
            .unwrap_or(StatusCode::FORBIDDEN),
        Status::Failed => StatusCode::BAD_GATEWAY,
    };
    (
        code,
        Json(serde_json::to_value(&outcome).unwrap_or_default()),
    )
}

/// The HTTP status of a refusal: what the client can do about it.
fn refusal_status(r: Refusal) -> StatusCode {
    match r {
        Refusal::NotAllowed | Refusal::TwoPerson => StatusCode::FORBIDDEN,
        // The request is fine; the service's state is in the way right now.
        Refusal::Frozen
        | Refusal::Busy
        | Refusal::AlreadyAnswered
        | Refusal::NotFrozen
        | Refusal::IdempotencyConflict
        | Refusal::MigrationGuard => StatusCode::CONFLICT,
        Refusal::Preflight | Refusal::Invalid => StatusCode::UNPROCESSABLE_ENTITY,
        Refusal::UnknownService | Refusal::UnknownPrompt | Refusal::UnknownRelease => {
            StatusCode::NOT_FOUND
        }
        Refusal::Expired => StatusCode::GONE,
        Refusal::Unreadable => StatusCode::BAD_REQUEST,
        // rollbot itself cannot act now; the same request may work later.
        Refusal::Standby
        | Refusal::ShuttingDown
        | Refusal::StoreDamaged
        | Refusal::StoreUnavailable
        | Refusal::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
    }
}
