//! `GET /readyz`: one JSON shape on every replica, whatever its role, so a
//! client reads the leader's and a standby's answers the same way:
//!
//! ```json
//! {"ready": true, "role": "leader", "leader": "rollbot-0", "identity": "rollbot-0",
//!  "lease": "rollbot", "store": {"state": "ok", "problems": []},
//!  "detail": "leader: rollbot-0 holds the Lease `rollbot`",
//!  "summary": "ready: 2 services, audit log at #41", "lines": ["ready: …", "metrics: ok …"],
//!  "problems": []}
//! ```
//!
//! `lines` are the lines a person reads; `Accept: text/plain` (or
//! `?format=text`) answers just those, as text, for `curl` at 3 a.m. The
//! status codes are the probes' contract and did not change: 503 while
//! shutting down, while the store is unusable, on a standby (unless
//! `label_pod` makes a healthy standby Ready) and when a chat adapter
//! reports a problem; 200 otherwise.

use super::AppState;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::sync::atomic::Ordering;

#[derive(serde::Deserialize)]
pub(super) struct Format {
    format: Option<String>,
}

pub(super) async fn readyz(
    State(s): State<AppState>,
    Query(f): Query<Format>,
    headers: HeaderMap,
) -> Response {
    let (code, body) = readiness(&s);
    let text = f.format.as_deref() == Some("text")
        || headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.starts_with("text/plain"));
    if text {
        let lines: Vec<&str> = body["lines"]
            .as_array()
            .map(|l| l.iter().filter_map(|l| l.as_str()).collect())
            .unwrap_or_default();
        return (code, format!("{}\n", lines.join("\n"))).into_response();
    }
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        format!("{body}\n"),
    )
        .into_response()
}

/// The status code and the JSON answer.
fn readiness(s: &AppState) -> (StatusCode, serde_json::Value) {
    let leader = s.engine.leadership.view();
    let store = s.engine.store.problems();
    let store_lines: Vec<String> = store.iter().map(|p| p.text.clone()).collect();
    let role = match leader.leader {
        true => "leader",
        false => "standby",
    };
    let answer = |code: StatusCode, summary: &str, lines: Vec<String>, problems: &[String]| {
        let body = json!({
            "ready": code == StatusCode::OK,
            "role": role,
            "leader": leader.holder,
            "identity": (leader.elected).then_some(&leader.identity),
            "lease": (leader.elected).then_some(&leader.lease),
            "store": {
                "state": s.engine.store.state(),
                "problems": store_lines,
            },
            "detail": leader.describe(),
            "summary": summary,
            "lines": lines,
            "problems": problems,
        });
        (code, body)
    };
    let not_ready = |problems: Vec<String>| {
        let mut lines = vec!["not ready:".to_string()];
        lines.extend(problems.iter().cloned());
        answer(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready",
            lines,
            &problems,
        )
    };
    if s.shutting_down.load(Ordering::SeqCst) {
        let why = "shutting down".to_string();
        return answer(
            StatusCode::SERVICE_UNAVAILABLE,
            &why,
            vec![why.clone()],
            std::slice::from_ref(&why),
        );
    }
    if !store.is_empty() {
        return not_ready(store_lines.clone());
    }
    let checks: Vec<String> = s.checks.iter().flat_map(|c| c()).collect();
    // A standby is not ready, so the Service sends chat and gate traffic to
    // the Lease holder; with `label_pod` the Service routes by the leader's
    // label instead and a healthy standby is Ready.
    if !leader.leader && leader.standby_ready {
        let mut lines = vec![leader.describe()];
        lines.extend(checks.iter().cloned());
        let code = match checks.is_empty() {
            true => StatusCode::OK,
            false => StatusCode::SERVICE_UNAVAILABLE,
        };
        let summary = if checks.is_empty() {
            "standby"
        } else {
            "not ready"
        };
        return answer(code, summary, lines, &checks);
    }
    if !leader.leader {
        return not_ready(vec![leader.describe()]);
    }
    if !checks.is_empty() {
        return not_ready(checks);
    }
    let metrics = match &s.controller {
        None => "metrics: no source configured".to_string(),
        Some(c) => {
            let h = c.health();
            match h.down_since {
                Some(since) => format!("metrics: UNAVAILABLE since {} ({}); verdicts are no_data, nothing is rolled back automatically", since.format("%Y-%m-%d %H:%M:%S UTC"), h.last_error.unwrap_or_default()),
                None => format!("metrics: ok ({} queries last tick, {} ticks)", h.queries_last_tick, h.ticks),
            }
        }
    };
    let summary = format!(
        "ready: {} services, audit log at #{}",
        s.engine.config.services.len(),
        s.engine.store.audit_len(),
    );
    let mut lines = vec![summary.clone(), metrics];
    // A tick shorter than two scrapes is reported, not unready.
    if let Some(w) = s.controller.as_ref().and_then(|c| c.tick_warning()) {
        lines.push(w);
    }
    // The status page and the pager are reported the same way: a wrong
    // key there must not stop anyone from rolling back.
    if let Some(c) = s.engine.comms() {
        lines.extend(c.readiness());
    }
    lines.push(leader.describe());
    // Not ready means "send chat traffic elsewhere"; missing metrics must not
    // stop people from rolling back, so they are reported but readiness stays.
    answer(StatusCode::OK, &summary, lines, &[])
}
