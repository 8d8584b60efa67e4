//! `POST /api/v1/rollouts`: CI announces a rollout for rollbot to watch.
//! `GET /api/v1/rollouts`: every rollout with its state and latest verdict.
//!
//! Body: `{"service": "checkout", "from_revision": "v41", "to_revision": "v42",
//! "strategy": "canary", "start_time": "2026-11-29T03:00:00Z"}`
//! (`strategy` defaults to the service's `strategy`, itself canary by default;
//! `rolling`, `blue-green` and `flag` are judged after vs before;
//! `start_time` defaults to now). The client needs the
//! deployer role on the service. `"migrations": [{"id": "2026_12_add_orders_idx",
//! "reversible": true, "phase": "expand"}]` lists the database migrations the
//! rollout runs, which the engine's migration guard reads before a rollback
//! (`crate::migration` checks the list; a bad one is a 400 and nothing is
//! stored).
//! `"release": "2026-12-06.1"` groups the
//! rollouts of several services announced together, so
//! `/rollback release 2026-12-06.1` rolls them all back.

use super::api::{authenticate, read_body};
use super::AppState;
use crate::controller::Rollout;
use crate::domain::{Actor, Platform};
use crate::roles::Permission;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Announcement {
    service: String,
    from_revision: String,
    to_revision: String,
    #[serde(default)]
    strategy: Option<String>,
    #[serde(default)]
    start_time: Option<DateTime<Utc>>,
    /// Checked by `crate::migration::from_json`, for messages that say
    /// what to write.
    #[serde(default)]
    migrations: Option<Value>,
    #[serde(default)]
    release: Option<String>,
}

const STRATEGIES: [&str; 4] = ["canary", "blue-green", "rolling", "flag"];

fn bad(field: &str, what: String) -> (StatusCode, Json<Value>) {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": what, "field": field})),
    )
}

pub async fn announce(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> (StatusCode, Json<Value>) {
    let name = match authenticate(&state, &headers) {
        Ok(n) => n,
        Err(refusal) => return refusal,
    };
    let body = match read_body(body, "/api/v1/rollouts").await {
        Ok(b) => b,
        Err(refusal) => return refusal,
    };
    let Some(controller) = &state.controller else {
        return (
            StatusCode::CONFLICT,
            Json(
                json!({"error": "no metric source is configured ([metrics] source), so rollbot cannot watch rollouts"}),
            ),
        );
    };
    let mut de = serde_json::Deserializer::from_slice(&body);
    let a: Announcement = match serde_path_to_error::deserialize(&mut de) {
        Ok(a) => a,
        Err(e) => {
            let field = e.path().to_string();
            let field = if field == "." { String::new() } else { field };
            let inner = e.into_inner();
            let what = if field.is_empty() {
                inner.to_string()
            } else {
                format!("{field}: {inner}")
            };
            return bad(&field, format!("{what}; expected {{\"service\", \"from_revision\", \"to_revision\", \"strategy\" (optional), \"start_time\" (optional, RFC 3339), \"migrations\" (optional), \"release\" (optional)}}"));
        }
    };
    let svc = match state.engine.resolve(Some(&a.service)) {
        Ok(s) => s,
        Err(e) => return bad("service", e),
    };
    for (field, v) in [
        ("from_revision", &a.from_revision),
        ("to_revision", &a.to_revision),
    ] {
        if v.trim().is_empty() {
            return bad(
                field,
                format!("{field} is empty; name the revision, for example \"v42\""),
            );
        }
        if let Err(e) = crate::limits::check_revision(v) {
            return bad(field, format!("{field}: {e}"));
        }
    }
    let migrations = match a.migrations.as_ref().map(crate::migration::from_json) {
        None => Vec::new(),
        Some(Ok(list)) => list,
        Some(Err(e)) => return bad(&e.field, format!("{e}; nothing was stored")),
    };
    if let Some(Err(e)) = a.release.as_deref().map(crate::limits::check_release) {
        return bad("release", format!("release: {e}"));
    }
    // Without one, the service's own `strategy` (default canary).
    let strategy = a.strategy.unwrap_or_else(|| svc.strategy.to_string());
    if !STRATEGIES.contains(&strategy.as_str()) {
        return bad(
            "strategy",
            format!(
                "strategy `{strategy}` is not one of {}",
                STRATEGIES.join(", ")
            ),
        );
    }
    let now = state.engine.clock.now();
    let start = a.start_time.unwrap_or(now);
    if start > now + chrono::Duration::minutes(5) {
        return bad(
            "start_time",
            format!("start_time {} is in the future", start.to_rfc3339()),
        );
    }
    let actor = Actor::new(Platform::Api, name.clone(), format!("API client {name}"));
    if let Err(r) =
        state
            .engine
            .roles
            .check(&actor, Permission::Promote, &svc.environment, svc.name())
    {
        return (StatusCode::FORBIDDEN, Json(json!({"error": r.to_string()})));
    }
    let rollout = Rollout {
        strategy,
        migrations,
        release: a.release,
        ..Rollout::watching(
            crate::engine::new_id(),
            svc.name(),
            (a.from_revision, a.to_revision),
            start,
            &actor.qualified_id(),
        )
    };
    match controller.announce(rollout).await {
        Ok(r) => (
            StatusCode::CREATED,
            Json(serde_json::to_value(&r).unwrap_or_default()),
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": e.to_string()})),
        ),
    }
}

pub async fn list(State(state): State<AppState>, headers: HeaderMap) -> (StatusCode, Json<Value>) {
    if let Err(refusal) = authenticate(&state, &headers) {
        return refusal;
    }
    match &state.controller {
        None => (StatusCode::OK, Json(json!({"rollouts": []}))),
        Some(c) => match c.list().await {
            Ok(all) => (StatusCode::OK, Json(json!({"rollouts": all}))),
            Err(e) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({"error": e.to_string()})),
            ),
        },
    }
}
