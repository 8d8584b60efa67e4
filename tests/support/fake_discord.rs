//! A fake Discord that speaks the real wire format, for end-to-end tests:
//!
//! - REST (`/api/v10`): channel messages create and edit, threads started
//!   from a message, the interaction callback, interaction follow-ups and
//!   `@original` edits and deletes, and the bulk command overwrite. Bot
//!   routes check `Authorization: Bot TOKEN`; interaction webhooks are
//!   authorized by their token and exist only once the interaction has been
//!   acknowledged. Errors come back the way Discord sends them
//!   (`{"code": 50001, "message": "Missing Access"}`, 50035 for an invalid
//!   form body with Discord's limits, 160004 for a second thread), and a
//!   channel can be told to answer 429 with `retry_after`; a request sent
//!   to it again before that time is up gets another 429.
//! - Uploads: message create and edit also take `multipart/form-data` with
//!   a `payload_json` part and `files[N]` parts; `attachments` entries with
//!   `id: N` describe `files[N]`, entries with an existing attachment's ID
//!   keep it, and on an edit the list replaces the message's attachments.
//! - Interactions: payloads shaped like Discord's (member with roles,
//!   channel, entitlements, …), signed with Ed25519 over timestamp + body,
//!   POSTed to rollbot; the HTTP answer is recorded as the interaction's
//!   first response, as Discord does.
//! - Visibility, as Discord documents it: a deferred command (type 5) shows
//!   a "thinking…" message, ephemeral when the deferral had flags 64. The
//!   first follow-up after that deferral does not create a message: it
//!   edits the deferred one and keeps the deferral's visibility, ignoring
//!   its own ephemeral flag; later follow-ups (and those after a button's
//!   type 6) are new messages with their own flags. Editing `@original`
//!   never changes whether it is ephemeral. Every state the original
//!   passed through is kept, so a test can tell what the channel saw.

#![allow(dead_code)]

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use axum::{Json, Router};
use ed25519_dalek::{Signer, SigningKey};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const APP_ID: &str = "1100000000000000001";
pub const GUILD_ID: &str = "1200000000000000001";

/// A member of the fake guild.
#[derive(Clone, Debug)]
pub struct Person {
    pub id: String,
    pub name: String,
    pub roles: Vec<String>,
}

impl Person {
    pub fn new(id: &str, name: &str, roles: &[&str]) -> Person {
        Person {
            id: id.into(),
            name: name.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
        }
    }
}

/// One request the fake received, with its answer.
#[derive(Clone, Debug)]
pub struct Logged {
    pub method: String,
    pub path: String,
    pub status: u16,
    pub at: Instant,
    pub body: Value,
}

/// An interaction the fake sent to rollbot, as Discord tracks it.
#[derive(Clone, Debug, Default)]
pub struct Itx {
    pub id: String,
    pub kind: u64,
    /// The HTTP answer rollbot gave (type 1, 4, 5, 6, 8…).
    pub response: Option<Value>,
    /// For commands: the original response message (the deferred
    /// placeholder, then whatever `@original` edits made it).
    pub original: Option<Value>,
    pub original_deleted: bool,
    /// Every state of `original`, oldest first (the deferral, then each edit).
    pub history: Vec<Value>,
    pub followups: Vec<Value>,
    /// For buttons: the channel and message the button was on.
    pub message: Option<(String, String)>,
}

impl Itx {
    fn ephemeral(m: &Value) -> bool {
        m["flags"].as_u64().unwrap_or(0) & 64 == 64
    }

    /// What only the person who asked can see now: the original when it is
    /// ephemeral and not deleted, and ephemeral follow-ups.
    pub fn author_only(&self) -> Vec<Value> {
        let original = self
            .original
            .iter()
            .filter(|o| !self.original_deleted && Self::ephemeral(o));
        original
            .chain(self.followups.iter().filter(|f| Self::ephemeral(f)))
            .cloned()
            .collect()
    }

    /// Everything the channel saw at some moment: each state of a visible
    /// original (even one deleted later) and visible follow-ups.
    pub fn channel_saw(&self) -> Vec<Value> {
        self.history
            .iter()
            .filter(|o| !Self::ephemeral(o))
            .chain(self.followups.iter().filter(|f| !Self::ephemeral(f)))
            .cloned()
            .collect()
    }
}

#[derive(Default)]
pub struct FakeState {
    token: String,
    next_id: u64,
    /// Channel ID → (parent, forbidden).
    pub channels: BTreeMap<String, (Option<String>, bool)>,
    /// Every message by ID (channel messages and thread messages).
    pub messages: BTreeMap<String, Value>,
    /// Message IDs in posting order per channel.
    pub order: BTreeMap<String, Vec<String>>,
    /// Interactions by token.
    pub interactions: HashMap<String, Itx>,
    /// Registered commands: "global" or a guild ID.
    pub commands: BTreeMap<String, Value>,
    pub log: Vec<Logged>,
    /// Channel → (429s still to give, retry_after seconds).
    rate_limits: HashMap<String, (u32, f64)>,
    /// Channel → not before (a request earlier than this gets 429 again).
    blocked: HashMap<String, Instant>,
    /// Channel → 5xx answers still to give.
    failures: HashMap<String, u32>,
    /// Channel → reset_after: its next success says the bucket is empty
    /// (`X-RateLimit-Remaining: 0`) and blocks it that long.
    exhaust: HashMap<String, f64>,
    /// Attachment ID → the uploaded bytes.
    pub files: HashMap<String, Vec<u8>>,
}

impl FakeState {
    fn id(&mut self) -> String {
        self.next_id += 1;
        (1_300_000_000_000_000_000u64 + self.next_id).to_string()
    }

    /// The messages of a channel and of the threads started in it.
    pub fn messages_under(&self, channel: &str) -> Vec<Value> {
        let mut all = self.messages_in(channel);
        for (id, (parent, _)) in &self.channels {
            if parent.as_deref() == Some(channel) {
                all.extend(self.messages_in(id));
            }
        }
        all
    }

    /// The bytes of an attachment of a message (an object from `attachments`).
    pub fn attachment_bytes(&self, attachment: &Value) -> Option<Vec<u8>> {
        self.files.get(attachment["id"].as_str()?).cloned()
    }

    /// The messages of a channel, oldest first.
    pub fn messages_in(&self, channel: &str) -> Vec<Value> {
        self.order
            .get(channel)
            .map(|ids| ids.iter().map(|i| self.messages[i].clone()).collect())
            .unwrap_or_default()
    }
}

pub struct FakeDiscord {
    /// What rollbot's `api_url` is set to.
    pub api: String,
    pub state: Arc<Mutex<FakeState>>,
    key: SigningKey,
    http: reqwest::Client,
}

type Shared = Arc<Mutex<FakeState>>;

fn error(status: u16, code: i64, message: &str) -> Response {
    (
        StatusCode::from_u16(status).unwrap(),
        Json(json!({ "code": code, "message": message })),
    )
        .into_response()
}

fn bot_ok(s: &FakeState, headers: &HeaderMap) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bot {}", s.token))
}

fn now_iso() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, false)
}

/// Discord's limits on a message body; `Some(errors)` when broken.
fn invalid_form(body: &Value) -> Option<Value> {
    invalid_form_with(body, 0)
}

/// As [`invalid_form`] for a body sent with `files` uploaded files: a
/// message that carries a file is not empty.
fn invalid_form_with(body: &Value, files: usize) -> Option<Value> {
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

fn message_object(
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
fn pinged(body: &Value) -> (Vec<String>, Vec<String>, bool) {
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
fn apply_edit(m: &mut Value, body: &Value) {
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
fn gate(s: &mut FakeState, channel: &str) -> Option<Response> {
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

fn too_many(after: f64) -> Response {
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

fn ok(v: Value) -> Response {
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

fn record(s: &mut FakeState, method: &str, path: String, r: &Response, body: &Value) {
    s.log.push(Logged {
        method: method.into(),
        path,
        status: r.status().as_u16(),
        at: Instant::now(),
        body: body.clone(),
    });
}

fn parse(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or(Value::Null)
}

/// One uploaded file: (`files[N]` index, filename, bytes).
type Upload = (u64, String, Vec<u8>);

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

fn disposition(headers: &str, key: &str) -> Option<String> {
    let line = headers
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("content-disposition:"))?;
    let pat = format!("{key}=\"");
    let at = line.find(&pat)? + pat.len();
    let end = line[at..].find('"')? + at;
    Some(line[at..end].to_string())
}

/// A JSON body, or a multipart one (`payload_json` and `files[N]`), as
/// Discord takes them; `Err` answers a malformed multipart body.
fn read_body(headers: &HeaderMap, body: &[u8]) -> Result<(Value, Vec<Upload>), Box<Response>> {
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let Some(boundary) = ct
        .strip_prefix("multipart/form-data")
        .and_then(|r| r.split("boundary=").nth(1))
    else {
        return Ok((parse(&String::from_utf8_lossy(body)), Vec::new()));
    };
    let bad = || Box::new(error(400, 50035, "Invalid Form Body"));
    let delim = format!("--{}", boundary.trim_matches('"'));
    let mut payload = Value::Null;
    let mut files = Vec::new();
    let mut at = find(body, delim.as_bytes(), 0).ok_or_else(bad)? + delim.len();
    loop {
        if body[at..].starts_with(b"--") {
            break;
        }
        at = find(body, b"\r\n", at).ok_or_else(bad)? + 2;
        let head_end = find(body, b"\r\n\r\n", at).ok_or_else(bad)?;
        let head = String::from_utf8_lossy(&body[at..head_end]).to_string();
        let start = head_end + 4;
        let next_delim = format!("\r\n{delim}");
        let end = find(body, next_delim.as_bytes(), start).ok_or_else(bad)?;
        let content = &body[start..end];
        let name = disposition(&head, "name").ok_or_else(bad)?;
        if name == "payload_json" {
            payload = serde_json::from_slice(content).map_err(|_| bad())?;
        } else if let Some(n) = name
            .strip_prefix("files[")
            .and_then(|r| r.strip_suffix(']'))
            .and_then(|n| n.parse().ok())
        {
            let filename = disposition(&head, "filename").ok_or_else(bad)?;
            files.push((n, filename, content.to_vec()));
        }
        at = end + next_delim.len();
    }
    Ok((payload, files))
}

/// The message's attachments after a create or edit with `uploads`: Discord
/// keeps the listed existing ones, adds the uploaded files, and answers
/// 50035 when an entry names a file that was not sent.
fn attachments(
    s: &mut FakeState,
    current: &Value,
    body: &Value,
    uploads: &[Upload],
) -> Result<Option<Value>, Box<Response>> {
    let listed = body.get("attachments").and_then(|a| a.as_array());
    if listed.is_none() && uploads.is_empty() {
        return Ok(None);
    }
    let mut out: Vec<Value> = match listed {
        Some(_) => Vec::new(),
        None => current.as_array().cloned().unwrap_or_default(),
    };
    let mut described = HashMap::new();
    for a in listed.into_iter().flatten() {
        let id = match &a["id"] {
            Value::Number(n) => n.to_string(),
            Value::String(s) => s.clone(),
            _ => return Err(Box::new(error(400, 50035, "Invalid Form Body"))),
        };
        if let Some(old) = current
            .as_array()
            .and_then(|c| c.iter().find(|o| o["id"] == id.as_str()))
        {
            out.push(old.clone());
        } else if let Ok(n) = id.parse::<u64>() {
            if !uploads.iter().any(|u| u.0 == n) {
                return Err(Box::new(error(400, 50035, "Invalid Form Body")));
            }
            described.insert(n, a.clone());
        } else {
            return Err(Box::new(error(400, 50035, "Invalid Form Body")));
        }
    }
    for (n, filename, bytes) in uploads {
        let id = s.id();
        let d = described.get(n).cloned().unwrap_or(Value::Null);
        let name = d["filename"].as_str().unwrap_or(filename).to_string();
        let mut a = json!({
            "id": id,
            "filename": name,
            "size": bytes.len(),
            "url": format!("https://cdn.fake-discord.test/attachments/{id}/{name}"),
            "proxy_url": format!("https://media.fake-discord.test/attachments/{id}/{name}"),
            "content_type": if name.ends_with(".png") { "image/png" } else { "application/octet-stream" },
        });
        if let Some(desc) = d["description"].as_str() {
            a["description"] = json!(desc);
        }
        s.files.insert(id, bytes.clone());
        out.push(a);
    }
    Ok(Some(Value::Array(out)))
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
        &r,
        &body,
    );
    r
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
        &r,
        &body,
    );
    r
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
        &r,
        &body,
    );
    r
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
        &r,
        &body,
    );
    r
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
    record(&mut s, "POST", "/webhooks/<app>/<token>".into(), &r, &body);
    r
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
        &r,
        &body,
    );
    r
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
        &r,
        &body,
    );
    r
}

impl FakeDiscord {
    /// Starts the fake on 127.0.0.1 with the given bot token and channels.
    pub async fn start(token: &str, channels: &[&str]) -> FakeDiscord {
        let state: Shared = Arc::new(Mutex::new(FakeState {
            token: token.into(),
            ..Default::default()
        }));
        for c in channels {
            state
                .lock()
                .unwrap()
                .channels
                .insert(c.to_string(), (None, false));
        }
        let g = state.clone();
        let gg = state.clone();
        let app = Router::new()
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
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeDiscord {
            api: format!("http://{addr}/api/v10"),
            state,
            key: SigningKey::from_bytes(&rand::random::<[u8; 32]>()),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        }
    }

    /// The application's public key, as the developer portal shows it.
    pub fn public_key_hex(&self) -> String {
        hex::encode(self.key.verifying_key().to_bytes())
    }

    pub fn add_channel(&self, id: &str, forbidden: bool) {
        self.state
            .lock()
            .unwrap()
            .channels
            .insert(id.into(), (None, forbidden));
    }

    /// The next `n` calls on `channel` get 429 with `retry_after` seconds.
    pub fn rate_limit(&self, channel: &str, n: u32, retry_after: f64) {
        self.state
            .lock()
            .unwrap()
            .rate_limits
            .insert(channel.into(), (n, retry_after));
    }

    /// The next message created in `channel` empties its bucket for `reset_after` seconds.
    pub fn exhaust_bucket(&self, channel: &str, reset_after: f64) {
        self.state
            .lock()
            .unwrap()
            .exhaust
            .insert(channel.into(), reset_after);
    }

    /// The next `n` calls on `channel` get 502.
    pub fn fail(&self, channel: &str, n: u32) {
        self.state
            .lock()
            .unwrap()
            .failures
            .insert(channel.into(), n);
    }

    pub fn with<T>(&self, f: impl FnOnce(&FakeState) -> T) -> T {
        f(&self.state.lock().unwrap())
    }

    pub fn interaction(&self, token: &str) -> Itx {
        self.with(|s| s.interactions.get(token).cloned().unwrap_or_default())
    }

    /// Polls until `f` gives something, or fails the test after 15 s.
    pub async fn wait_for<T>(&self, what: &str, f: impl Fn(&FakeState) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(v) = self.with(&f) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "fake Discord: timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn member(p: &Person) -> Value {
        json!({
            "user": {"id": p.id, "username": p.name.to_lowercase(), "global_name": p.name, "discriminator": "0", "avatar": null, "public_flags": 0},
            "nick": null, "avatar": null, "banner": null,
            "roles": p.roles,
            "joined_at": "2024-01-15T09:30:00.000000+00:00",
            "premium_since": null, "deaf": false, "mute": false, "flags": 0, "pending": false,
            "permissions": "2248473465835073",
            "communication_disabled_until": null, "unusual_dm_activity_until": null
        })
    }

    fn base(&self, kind: u64, channel: &str, who: &Person, data: Value) -> Value {
        let (id, token) = {
            let mut s = self.state.lock().unwrap();
            let id = s.id();
            (id.clone(), format!("aW50ZXJhY3Rpb246{id}:fake-token"))
        };
        let parent = self.with(|s| s.channels.get(channel).and_then(|c| c.0.clone()));
        json!({
            "id": id,
            "application_id": APP_ID,
            "type": kind,
            "token": token,
            "version": 1,
            "guild_id": GUILD_ID,
            "channel_id": channel,
            "channel": {"id": channel, "type": if parent.is_some() { 11 } else { 0 }, "name": "deploys", "guild_id": GUILD_ID, "parent_id": parent, "permissions": "2248473465835073", "flags": 0},
            "member": Self::member(who),
            "app_permissions": "2248473465835073",
            "locale": "en-US",
            "guild_locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": GUILD_ID},
            "context": 0,
            "attachment_size_limit": 10485760,
            "data": data,
        })
    }

    /// A slash command with options `[(name, value)]`; strings, booleans
    /// and integers get Discord's option types 3, 5 and 4.
    pub fn command(
        &self,
        channel: &str,
        who: &Person,
        name: &str,
        options: &[(&str, Value)],
    ) -> Value {
        let opts: Vec<Value> = options
            .iter()
            .map(|(n, v)| {
                let t = if v.is_boolean() {
                    5
                } else if v.is_i64() || v.is_u64() {
                    4
                } else {
                    3
                };
                json!({"name": n, "type": t, "value": v})
            })
            .collect();
        self.base(2, channel, who, json!({"id": "1400000000000000001", "name": name, "type": 1, "guild_id": GUILD_ID, "options": opts}))
    }

    /// An autocomplete request while `who` types `typed` into `option`.
    pub fn autocomplete(
        &self,
        channel: &str,
        who: &Person,
        name: &str,
        option: &str,
        typed: &str,
    ) -> Value {
        self.base(4, channel, who, json!({"id": "1400000000000000001", "name": name, "type": 1, "options": [{"name": option, "type": 3, "value": typed, "focused": true}]}))
    }

    /// A press of the button `custom_id` on the stored message `message`.
    pub fn press(&self, who: &Person, message: &Value, custom_id: &str) -> Value {
        let channel = message["channel_id"].as_str().unwrap().to_string();
        let mut p = self.base(
            3,
            &channel,
            who,
            json!({"custom_id": custom_id, "component_type": 2}),
        );
        p["message"] = message.clone();
        p
    }

    pub fn sign(&self, timestamp: &str, body: &str) -> String {
        let mut msg = timestamp.as_bytes().to_vec();
        msg.extend_from_slice(body.as_bytes());
        hex::encode(self.key.sign(&msg).to_bytes())
    }

    /// POSTs with the given headers; returns the status, the answer and how long it took.
    pub async fn post_raw(
        &self,
        url: &str,
        body: &str,
        signature: Option<&str>,
        timestamp: Option<&str>,
    ) -> (u16, Value, Duration) {
        let mut r = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(s) = signature {
            r = r.header("x-signature-ed25519", s);
        }
        if let Some(t) = timestamp {
            r = r.header("x-signature-timestamp", t);
        }
        let started = Instant::now();
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
            started.elapsed(),
        )
    }

    /// Signs and delivers an interaction as Discord does, and records the
    /// answer as the interaction's first response.
    pub async fn send(&self, url: &str, payload: &Value) -> (u16, Value, Duration) {
        let body = payload.to_string();
        let ts = chrono::Utc::now().timestamp().to_string();
        let sig = self.sign(&ts, &body);
        let token = payload["token"].as_str().unwrap_or_default().to_string();
        {
            let mut s = self.state.lock().unwrap();
            let it = s.interactions.entry(token.clone()).or_default();
            it.id = payload["id"].as_str().unwrap_or_default().into();
            it.kind = payload["type"].as_u64().unwrap_or(0);
            if let Some(m) = payload.get("message") {
                it.message = Some((
                    m["channel_id"].as_str().unwrap().into(),
                    m["id"].as_str().unwrap().into(),
                ));
            }
        }
        let (status, answer, took) = self.post_raw(url, &body, Some(&sig), Some(&ts)).await;
        if status == 200 {
            let mut s = self.state.lock().unwrap();
            let it = s.interactions.get_mut(&token).unwrap();
            if it.response.is_none() {
                it.response = Some(answer.clone());
                if matches!(answer["type"].as_u64(), Some(4) | Some(5)) && it.message.is_none() {
                    let data = answer.get("data").cloned().unwrap_or(json!({}));
                    let first = json!({
                        "content": data["content"].as_str().unwrap_or(""),
                        "embeds": data["embeds"].as_array().cloned().unwrap_or_default(),
                        "flags": data["flags"].as_u64().unwrap_or(0),
                        "deferred": answer["type"] == 5,
                    });
                    it.history.push(first.clone());
                    it.original = Some(first);
                }
            }
        }
        (status, answer, took)
    }
}
