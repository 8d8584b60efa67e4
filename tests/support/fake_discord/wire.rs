//! Answers as Discord words them: error bodies, rate limits, the limits on
//! a message body, and the message objects it returns.

use super::{FakeState, Logged, APP_ID, GUILD_ID};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

pub(super) fn error(status: u16, code: i64, message: &str) -> Response {
    (
        StatusCode::from_u16(status).unwrap(),
        Json(json!({ "code": code, "message": message })),
    )
        .into_response()
}

pub(super) fn bot_ok(s: &FakeState, headers: &HeaderMap) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bot {}", s.token))
}

pub(super) fn now_iso() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, false)
}

/// Discord's limits on a message body; `Some(errors)` when broken.
pub(super) fn invalid_form(body: &Value) -> Option<Value> {
    invalid_form_with(body, 0)
}

/// As [`invalid_form`] for a body sent with `files` uploaded files: a
/// message that carries a file is not empty.
pub(super) fn invalid_form_with(body: &Value, files: usize) -> Option<Value> {
    let embeds = body["embeds"].as_array().cloned().unwrap_or_default();
    let components = body["components"].as_array().cloned().unwrap_or_default();
    let content = body["content"].as_str().unwrap_or("");
    let mut errors = Vec::new();
    if content.is_empty()
        && files == 0
        && embeds.is_empty()
        && components.is_empty()
        && body.get("embeds").is_none()
    {
        errors.push("Cannot send an empty message".to_string());
    }
    if embeds.len() > 10 {
        errors.push("embeds: at most 10".into());
    }
    let len = |v: &Value| v.as_str().map(|s| s.chars().count()).unwrap_or(0);
    for e in &embeds {
        let fields = e["fields"].as_array().cloned().unwrap_or_default();
        let mut total = len(&e["title"]) + len(&e["description"]) + len(&e["footer"]["text"]);
        if len(&e["title"]) > 256
            || len(&e["description"]) > 4096
            || len(&e["footer"]["text"]) > 2048
            || fields.len() > 25
        {
            errors.push("embed over a limit".into());
        }
        for f in &fields {
            total += len(&f["name"]) + len(&f["value"]);
            if len(&f["name"]) == 0
                || len(&f["value"]) == 0
                || len(&f["name"]) > 256
                || len(&f["value"]) > 1024
            {
                errors.push("embed field empty or over a limit".into());
            }
        }
        if total > 6000 {
            errors.push("embed over 6000 characters".into());
        }
    }
    if components.len() > 5 {
        errors.push("components: at most 5 rows".into());
    }
    // Discord refuses a list of IDs next to the same kind in `parse`.
    let am = &body["allowed_mentions"];
    let parses = |k: &str| {
        am["parse"]
            .as_array()
            .is_some_and(|p| p.iter().any(|v| v == k))
    };
    for (kind, ids) in [("users", &am["users"]), ("roles", &am["roles"])] {
        if parses(kind) && ids.as_array().is_some_and(|a| !a.is_empty()) {
            errors.push(format!(
                "allowed_mentions: parse:[\"{kind}\"] and {kind}: [ids] are mutually exclusive"
            ));
        }
    }
    for row in &components {
        let buttons = row["components"].as_array().cloned().unwrap_or_default();
        if row["type"] != 1 || buttons.is_empty() || buttons.len() > 5 {
            errors.push("an action row holds 1 to 5 buttons".into());
        }
        for b in &buttons {
            if b["type"] != 2
                || len(&b["custom_id"]) == 0
                || len(&b["custom_id"]) > 100
                || len(&b["label"]) > 80
            {
                errors.push("button without a custom_id or over a limit".into());
            }
        }
    }
    if errors.is_empty() {
        None
    } else {
        Some(json!(errors))
    }
}

pub(super) fn message_object(
    s: &mut FakeState,
    id: String,
    channel: &str,
    body: &Value,
    webhook: bool,
) -> Value {
    let mut m = json!({
        "id": id,
        "channel_id": channel,
        "guild_id": GUILD_ID,
        "author": {"id": APP_ID, "username": "rollbot", "discriminator": "0", "global_name": null, "avatar": null, "bot": true, "public_flags": 0},
        "content": body["content"].as_str().unwrap_or(""),
        "timestamp": now_iso(),
        "edited_timestamp": null,
        "tts": false,
        "mention_everyone": false,
        "mentions": [],
        "mention_roles": [],
        "attachments": [],
        "embeds": body["embeds"].as_array().cloned().unwrap_or_default(),
        "components": body["components"].as_array().cloned().unwrap_or_default(),
        "pinned": false,
        "type": 0,
        "flags": body["flags"].as_u64().unwrap_or(0),
        "application_id": APP_ID,
    });
    if webhook {
        m["webhook_id"] = json!(APP_ID);
    }
    let (users, roles, everyone) = pinged(body);
    m["mentions"] = json!(users
        .iter()
        .map(|id| json!({"id": id, "username": format!("user{id}"), "discriminator": "0", "global_name": null, "avatar": null, "public_flags": 0}))
        .collect::<Vec<_>>());
    m["mention_roles"] = json!(roles);
    m["mention_everyone"] = json!(everyone);
    let _ = s;
    m
}

/// Who a message notifies, as Discord decides it: mentions in `content`
/// only (never in embeds), filtered by `allowed_mentions` when it is sent
/// (`parse` lets a whole kind through, `users`/`roles` list IDs).
pub(super) fn pinged(body: &Value) -> (Vec<String>, Vec<String>, bool) {
    let content = body["content"].as_str().unwrap_or("");
    let am = body.get("allowed_mentions");
    let allows = |kind: &str, id: &str| match am {
        None => true,
        Some(am) => {
            am["parse"]
                .as_array()
                .is_some_and(|p| p.iter().any(|v| v == kind))
                || am[kind]
                    .as_array()
                    .is_some_and(|ids| ids.iter().any(|v| v == id))
        }
    };
    let (mut users, mut roles) = (Vec::new(), Vec::new());
    let mut rest = content;
    while let Some(start) = rest.find("<@") {
        rest = &rest[start + 2..];
        let Some(end) = rest.find('>') else { break };
        let token = &rest[..end];
        if let Some(id) = token.strip_prefix('&') {
            if allows("roles", id) && !roles.iter().any(|r| r == id) {
                roles.push(id.to_string());
            }
        } else {
            let id = token.trim_start_matches('!');
            if allows("users", id) && !users.iter().any(|u| u == id) {
                users.push(id.to_string());
            }
        }
    }
    let everyone =
        (content.contains("@everyone") || content.contains("@here")) && allows("everyone", "");
    (users, roles, everyone)
}

/// Applies an edit body to a stored message, as Discord does: only the keys sent change.
pub(super) fn apply_edit(m: &mut Value, body: &Value) {
    for k in ["content", "embeds", "components", "flags"] {
        if let Some(v) = body.get(k) {
            if !v.is_null() {
                m[k] = v.clone();
            }
        }
    }
    m["edited_timestamp"] = json!(now_iso());
}

/// Rate limits and injected failures for calls on a channel.
pub(super) fn gate(s: &mut FakeState, channel: &str) -> Option<Response> {
    if let Some(until) = s.blocked.get(channel) {
        let left = until.saturating_duration_since(Instant::now());
        if !left.is_zero() {
            return Some(too_many(left.as_secs_f64()));
        }
    }
    if let Some((n, after)) = s.rate_limits.get_mut(channel) {
        if *n > 0 {
            *n -= 1;
            let after = *after;
            s.blocked.insert(
                channel.to_string(),
                Instant::now() + Duration::from_secs_f64(after),
            );
            return Some(too_many(after));
        }
    }
    if let Some(n) = s.failures.get_mut(channel) {
        if *n > 0 {
            *n -= 1;
            return Some(error(502, 0, "502 Bad Gateway"));
        }
    }
    None
}

pub(super) fn too_many(after: f64) -> Response {
    let mut r = (
        StatusCode::TOO_MANY_REQUESTS,
        Json(json!({"message": "You are being rate limited.", "retry_after": after, "global": false})),
    )
        .into_response();
    let h = r.headers_mut();
    h.insert(
        "retry-after",
        (after.ceil() as u64).to_string().parse().unwrap(),
    );
    h.insert("x-ratelimit-scope", "user".parse().unwrap());
    h.insert("x-ratelimit-remaining", "0".parse().unwrap());
    h.insert(
        "x-ratelimit-reset-after",
        format!("{after:.3}").parse().unwrap(),
    );
    h.insert(
        "x-ratelimit-bucket",
        "fake-channel-messages".parse().unwrap(),
    );
    r
}

pub(super) fn ok(v: Value) -> Response {
    let mut r = Json(v).into_response();
    let h = r.headers_mut();
    h.insert("x-ratelimit-limit", "5".parse().unwrap());
    h.insert("x-ratelimit-remaining", "4".parse().unwrap());
    h.insert("x-ratelimit-reset-after", "1.000".parse().unwrap());
    h.insert(
        "x-ratelimit-bucket",
        "fake-channel-messages".parse().unwrap(),
    );
    r
}

/// Logs the request with the answer `r`, and answers it.
pub(super) fn record(
    s: &mut FakeState,
    method: &str,
    path: String,
    r: Response,
    body: &Value,
) -> Response {
    s.log.push(Logged {
        method: method.into(),
        path,
        status: r.status().as_u16(),
        at: Instant::now(),
        body: body.clone(),
    });
    r
}

pub(super) fn parse(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or(Value::Null)
}

/// Where a MODAL response's data breaks Discord's limits: a title of 1 to
/// 45 characters, a custom ID of 1 to 100, 1 to 5 action rows of one text
/// input each (label 1 to 45, style 1 or 2, placeholder 100, lengths and
/// value within 4000).
pub(super) fn modal_problems(form: &Value) -> Vec<String> {
    let len = |v: &Value| v.as_str().map(|s| s.chars().count()).unwrap_or(0);
    let mut out = Vec::new();
    if !(1..=45).contains(&len(&form["title"])) {
        out.push("title: 1 to 45 characters".to_string());
    }
    if !(1..=100).contains(&len(&form["custom_id"])) {
        out.push("custom_id: 1 to 100 characters".into());
    }
    let rows = form["components"].as_array().cloned().unwrap_or_default();
    if rows.is_empty() || rows.len() > 5 {
        out.push("components: 1 to 5 action rows".into());
    }
    for row in &rows {
        let inputs = row["components"].as_array().cloned().unwrap_or_default();
        if row["type"] != 1 || inputs.len() != 1 {
            out.push("an action row in a form holds one text input".into());
            continue;
        }
        let i = &inputs[0];
        let within = |k: &str| i[k].as_u64().is_none_or(|n| n <= 4000);
        if i["type"] != 4
            || !(1..=100).contains(&len(&i["custom_id"]))
            || !(1..=45).contains(&len(&i["label"]))
            || !matches!(i["style"].as_u64(), Some(1 | 2))
            || len(&i["placeholder"]) > 100
            || len(&i["value"]) > 4000
            || !within("min_length")
            || !within("max_length")
        {
            out.push(format!("text input over a limit: {i}"));
        }
    }
    out
}
