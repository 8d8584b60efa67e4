//! The REST endpoints rollbot calls: messages, threads, interaction
//! callbacks, follow-ups, `@original`, and the command overwrite.

use super::multipart::{attachments, read_body};
use super::wire::{
    apply_edit, bot_ok, error, gate, invalid_form, invalid_form_with, message_object, now_iso, ok,
    parse, record,
};
use super::{Itx, Shared, APP_ID, GUILD_ID};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// The REST routes rollbot calls, on `state`.
pub(super) fn router(state: Shared) -> Router {
    let g = state.clone();
    let gg = state.clone();
    Router::new()
        .route("/api/v10/channels/{channel}/messages", post(create_message))
        .route(
            "/api/v10/channels/{channel}/messages/{message}",
            axum::routing::patch(edit_message),
        )
        .route(
            "/api/v10/channels/{channel}/messages/{message}/threads",
            post(start_thread),
        )
        .route(
            "/api/v10/interactions/{id}/{token}/callback",
            post(callback),
        )
        .route("/api/v10/webhooks/{app}/{token}", post(followup))
        .route(
            "/api/v10/webhooks/{app}/{token}/messages/{message}",
            axum::routing::patch(original).delete(original),
        )
        .route(
            "/api/v10/applications/{app}/commands",
            put(move |Path(app): Path<String>, h: HeaderMap, b: String| {
                overwrite(g.clone(), app, None, h, b)
            }),
        )
        .route(
            "/api/v10/applications/{app}/guilds/{guild}/commands",
            put(
                move |Path((app, guild)): Path<(String, String)>, h: HeaderMap, b: String| {
                    overwrite(gg.clone(), app, Some(guild), h, b)
                },
            ),
        )
        .fallback(|| async { error(404, 0, "404: Not Found") })
        .with_state(state)
}

async fn create_message(
    State(st): State<Shared>,
    Path(channel): Path<String>,
    headers: HeaderMap,
    raw: axum::body::Bytes,
) -> Response {
    let (body, uploads) = match read_body(&headers, &raw) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let mut s = st.lock().unwrap();
    let r = (|| {
        if !bot_ok(&s, &headers) {
            return error(401, 0, "401: Unauthorized");
        }
        let Some(&(_, forbidden)) = s.channels.get(&channel) else {
            return error(404, 10003, "Unknown Channel");
        };
        if forbidden {
            return error(403, 50001, "Missing Access");
        }
        if let Some(r) = gate(&mut s, &channel) {
            return r;
        }
        if let Some(errors) = invalid_form_with(&body, uploads.len()) {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"code": 50035, "message": "Invalid Form Body", "errors": errors})),
            )
                .into_response();
        }
        let id = s.id();
        let mut m = message_object(&mut s, id.clone(), &channel, &body, false);
        match attachments(&mut s, &Value::Null, &body, &uploads) {
            Ok(Some(a)) => m["attachments"] = a,
            Ok(None) => {}
            Err(r) => return *r,
        }
        s.messages.insert(id.clone(), m.clone());
        s.order.entry(channel.clone()).or_default().push(id);
        match s.exhaust.remove(&channel) {
            Some(after) => {
                s.blocked.insert(
                    channel.clone(),
                    Instant::now() + Duration::from_secs_f64(after),
                );
                let mut r = ok(m);
                let h = r.headers_mut();
                h.insert("x-ratelimit-remaining", "0".parse().unwrap());
                h.insert(
                    "x-ratelimit-reset-after",
                    format!("{after:.3}").parse().unwrap(),
                );
                r
            }
            None => ok(m),
        }
    })();
    record(
        &mut s,
        "POST",
        format!("/channels/{channel}/messages"),
        r,
        &body,
    )
}

async fn edit_message(
    State(st): State<Shared>,
    Path((channel, message)): Path<(String, String)>,
    headers: HeaderMap,
    raw: axum::body::Bytes,
) -> Response {
    let (body, uploads) = match read_body(&headers, &raw) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let mut s = st.lock().unwrap();
    let r = (|| {
        if !bot_ok(&s, &headers) {
            return error(401, 0, "401: Unauthorized");
        }
        if !s.channels.contains_key(&channel) {
            return error(404, 10003, "Unknown Channel");
        }
        if let Some(r) = gate(&mut s, &channel) {
            return r;
        }
        if let Some(errors) = invalid_form_with(&body, uploads.len()) {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"code": 50035, "message": "Invalid Form Body", "errors": errors})),
            )
                .into_response();
        }
        let current = match s.messages.get(&message) {
            Some(m) if m["channel_id"] == channel.as_str() => m["attachments"].clone(),
            _ => return error(404, 10008, "Unknown Message"),
        };
        let atts = match attachments(&mut s, &current, &body, &uploads) {
            Ok(a) => a,
            Err(r) => return *r,
        };
        let m = s.messages.get_mut(&message).expect("checked above");
        apply_edit(m, &body);
        if let Some(a) = atts {
            m["attachments"] = a;
        }
        ok(m.clone())
    })();
    record(
        &mut s,
        "PATCH",
        format!("/channels/{channel}/messages/{message}"),
        r,
        &body,
    )
}

async fn start_thread(
    State(st): State<Shared>,
    Path((channel, message)): Path<(String, String)>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let body = parse(&body);
    let mut s = st.lock().unwrap();
    let r = (|| {
        if !bot_ok(&s, &headers) {
            return error(401, 0, "401: Unauthorized");
        }
        if !s.channels.contains_key(&channel) {
            return error(404, 10003, "Unknown Channel");
        }
        if s.messages
            .get(&message)
            .is_none_or(|m| m["channel_id"] != channel.as_str())
        {
            return error(404, 10008, "Unknown Message");
        }
        if s.channels.contains_key(&message) {
            return error(
                400,
                160004,
                "A thread has already been created for this message",
            );
        }
        let name = body["name"].as_str().unwrap_or("");
        if name.is_empty() || name.chars().count() > 100 {
            return (StatusCode::BAD_REQUEST, Json(json!({"code": 50035, "message": "Invalid Form Body", "errors": {"name": "1 to 100 characters"}}))).into_response();
        }
        s.channels
            .insert(message.clone(), (Some(channel.clone()), false));
        ok(json!({
            "id": message, "type": 11, "guild_id": GUILD_ID, "parent_id": channel, "name": name,
            "owner_id": APP_ID, "message_count": 0, "member_count": 1,
            "thread_metadata": {"archived": false, "auto_archive_duration": body["auto_archive_duration"], "archive_timestamp": now_iso(), "locked": false},
            "flags": 0
        }))
    })();
    record(
        &mut s,
        "POST",
        format!("/channels/{channel}/messages/{message}/threads"),
        r,
        &body,
    )
}

async fn callback(
    State(st): State<Shared>,
    Path((id, token)): Path<(String, String)>,
    body: String,
) -> Response {
    let body = parse(&body);
    let mut s = st.lock().unwrap();
    let r = match s.interactions.get_mut(&token) {
        Some(i) if i.id == id => {
            if i.response.is_some() {
                error(400, 40060, "Interaction has already been acknowledged.")
            } else {
                i.response = Some(body.clone());
                StatusCode::NO_CONTENT.into_response()
            }
        }
        _ => error(404, 10062, "Unknown interaction"),
    };
    record(
        &mut s,
        "POST",
        format!("/interactions/{id}/<token>/callback"),
        r,
        &body,
    )
}

async fn followup(
    State(st): State<Shared>,
    Path((app, token)): Path<(String, String)>,
    body: String,
) -> Response {
    let body = parse(&body);
    let mut s = st.lock().unwrap();
    let acked = app == APP_ID
        && s.interactions
            .get(&token)
            .is_some_and(|i| i.response.is_some());
    let r = if !acked {
        error(404, 10015, "Unknown Webhook")
    } else if let Some(errors) = invalid_form(&body) {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({"code": 50035, "message": "Invalid Form Body", "errors": errors})),
        )
            .into_response()
    } else if let Some(m) = settle_deferral(s.interactions.get_mut(&token).unwrap(), &body) {
        ok(m)
    } else {
        let id = s.id();
        let m = message_object(&mut s, id, "0", &body, true);
        s.interactions
            .get_mut(&token)
            .unwrap()
            .followups
            .push(m.clone());
        ok(m)
    };
    record(&mut s, "POST", "/webhooks/<app>/<token>".into(), r, &body)
}

/// The first follow-up after a command's deferral edits the deferred
/// message instead of creating one, and keeps its visibility: Discord
/// ignores the follow-up's ephemeral flag. `None` when no deferral waits.
fn settle_deferral(it: &mut Itx, body: &Value) -> Option<Value> {
    let waiting = it.message.is_none()
        && !it.original_deleted
        && it.response.as_ref().is_some_and(|r| r["type"] == 5)
        && it.original.as_ref().is_some_and(|o| o["deferred"] == true);
    if !waiting {
        return None;
    }
    Some(edit_original(it, body))
}

/// Edits a command's original response; whether it is ephemeral stays as
/// the first response made it.
fn edit_original(it: &mut Itx, body: &Value) -> Value {
    let m = it.original.get_or_insert_with(|| json!({}));
    let flags = m["flags"].clone();
    apply_edit(m, body);
    m["flags"] = flags;
    m["deferred"] = json!(false);
    let m = m.clone();
    it.history.push(m.clone());
    m
}

async fn original(
    State(st): State<Shared>,
    method: axum::http::Method,
    Path((app, token, message)): Path<(String, String, String)>,
    body: String,
) -> Response {
    let body = parse(&body);
    let mut s = st.lock().unwrap();
    let r = (|| {
        let Some(i) = s
            .interactions
            .get(&token)
            .filter(|i| app == APP_ID && i.response.is_some())
            .cloned()
        else {
            return error(404, 10015, "Unknown Webhook");
        };
        if message != "@original" {
            return error(404, 10008, "Unknown Message");
        }
        if method == axum::http::Method::PATCH {
            if let Some(errors) = invalid_form(&body) {
                return (
                    StatusCode::BAD_REQUEST,
                    Json(json!({"code": 50035, "message": "Invalid Form Body", "errors": errors})),
                )
                    .into_response();
            }
        }
        match (&i.message, method.as_str()) {
            // A button's @original is the message the button is on.
            (Some((_, mid)), "PATCH") => match s.messages.get_mut(mid) {
                Some(m) => {
                    apply_edit(m, &body);
                    ok(m.clone())
                }
                None => error(404, 10008, "Unknown Message"),
            },
            (None, "PATCH") => {
                let it = s.interactions.get_mut(&token).unwrap();
                if it.original_deleted {
                    return error(404, 10008, "Unknown Message");
                }
                ok(edit_original(it, &body))
            }
            (None, "DELETE") => {
                let it = s.interactions.get_mut(&token).unwrap();
                it.original_deleted = true;
                StatusCode::NO_CONTENT.into_response()
            }
            _ => error(405, 0, "405: Method Not Allowed"),
        }
    })();
    record(
        &mut s,
        method.as_str(),
        "/webhooks/<app>/<token>/messages/@original".into(),
        r,
        &body,
    )
}

async fn overwrite(
    st: Shared,
    app: String,
    guild: Option<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let body = parse(&body);
    let mut s = st.lock().unwrap();
    let r = (|| {
        if !bot_ok(&s, &headers) {
            return error(401, 0, "401: Unauthorized");
        }
        if app != APP_ID {
            return error(403, 50001, "Missing Access");
        }
        if let Some(g) = &guild {
            if g != GUILD_ID {
                return error(403, 50001, "Missing Access");
            }
        }
        let Some(list) = body.as_array() else {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"code": 50035, "message": "Invalid Form Body"})),
            )
                .into_response();
        };
        let mut out = Vec::new();
        for c in list {
            let mut c = c.clone();
            c["id"] = json!(s.id());
            c["application_id"] = json!(APP_ID);
            c["version"] = json!(s.id());
            out.push(c);
        }
        s.commands.insert(
            guild.clone().unwrap_or_else(|| "global".into()),
            body.clone(),
        );
        ok(Value::Array(out))
    })();
    record(
        &mut s,
        "PUT",
        "/applications/<app>/commands".into(),
        r,
        &body,
    )
}
