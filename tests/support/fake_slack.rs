//! A fake Slack that speaks the real wire format, for end-to-end tests.
//!
//! - Web API under `/api/METHOD` (GET query or POST JSON / form, token in
//!   `Authorization: Bearer` or `token`): `auth.test`, `conversations.info`,
//!   `chat.postMessage`, `chat.update`, `chat.postEphemeral`,
//!   `usergroups.users.list`, `apps.connections.open`, and file sharing the
//!   current way: `files.getUploadURLExternal` answers an upload URL on this
//!   server (`/upload/FILE`, which takes the raw bytes), then
//!   `files.completeUploadExternal` shares the uploaded files in a channel
//!   or thread (checking length, channel and thread). It checks the token
//!   (bot token for everything but `apps.connections.open`, which takes the
//!   app-level token) and answers like Slack: HTTP 200 with
//!   `{"ok": false, "error": "invalid_auth" | "channel_not_found" |
//!   "not_in_channel" | …}`, and 429 with `Retry-After` when told to.
//! - Modals: the fake issues `trigger_id`s ([`FakeSlack::trigger`]) the
//!   way Slack does for a user action, and `views.open` exchanges one for
//!   a view: once (`exchanged_trigger_id` after that), within 3 s
//!   (`expired_trigger_id`), and only one it issued (`invalid_trigger_id`);
//!   a view over Slack's limits gets `invalid_arguments` with Slack's
//!   `response_metadata.messages`. [`FakeSlack::view_submission`] builds the
//!   `view_submission` payload Slack sends when the person submits an open
//!   view, with `state.values` for its input blocks.
//! - `response_url` endpoints under `/response/ID`.
//! - A Socket Mode WebSocket: `hello` on connect, envelopes pushed by the
//!   test, acknowledgements recorded, `disconnect` and dropped sockets.
//! - Helpers that sign requests the way Slack does (v0 HMAC-SHA256).

#![allow(dead_code)]

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use axum::{Json, Router};
use futures_util::{SinkExt, StreamExt};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as Frame;

pub const BOT_TOKEN: &str = "xoxb-1111-2222-fakebottoken";
pub const APP_TOKEN: &str = "xapp-1-A0ROLLBOT-3333-fakeapptoken";
pub const SIGNING_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
pub const BOT_USER: &str = "U0ROLLBOT";
pub const TEAM: &str = "T0FAKE";

/// A message as Slack stores it.
#[derive(Clone, Debug)]
pub struct Posted {
    pub channel: String,
    pub ts: String,
    pub thread_ts: Option<String>,
    pub text: String,
    pub blocks: Value,
    /// For ephemerals: who sees it.
    pub user: Option<String>,
    pub at: Instant,
    /// Every `chat.update`, oldest first (text, blocks).
    pub updates: Vec<(String, Value)>,
}

impl Posted {
    /// The current blocks (after the last update).
    pub fn current_blocks(&self) -> &Value {
        self.updates.last().map(|u| &u.1).unwrap_or(&self.blocks)
    }
    pub fn current_text(&self) -> &str {
        self.updates
            .last()
            .map(|u| u.0.as_str())
            .unwrap_or(&self.text)
    }
    /// Action ids of the buttons it shows now.
    pub fn buttons(&self) -> Vec<String> {
        self.current_blocks()
            .as_array()
            .into_iter()
            .flatten()
            .filter(|b| b["type"] == "actions")
            .flat_map(|b| b["elements"].as_array().cloned().unwrap_or_default())
            .filter_map(|e| e["action_id"].as_str().map(str::to_string))
            .collect()
    }

    /// The action id of the button it shows whose id ends in `ending`
    /// (`:approve`, `:reject`).
    pub fn button(&self, ending: &str) -> String {
        self.buttons()
            .into_iter()
            .find(|b| b.ends_with(ending))
            .unwrap_or_else(|| panic!("no {ending} button on {}", self.current_text()))
    }
}

#[derive(Clone, Debug)]
pub struct Call {
    pub method: String,
    pub at: Instant,
    pub status: u16,
    pub error: Option<String>,
}

enum WsCmd {
    Send(String),
    Drop,
}

/// A file shared with `files.completeUploadExternal`.
#[derive(Clone, Debug)]
pub struct SharedFile {
    pub id: String,
    pub filename: String,
    pub title: Option<String>,
    pub alt_txt: Option<String>,
    pub channel: String,
    pub thread_ts: Option<String>,
    pub bytes: Vec<u8>,
}

/// A file announced with `files.getUploadURLExternal`.
#[derive(Clone, Debug, Default)]
pub struct PendingFile {
    pub filename: String,
    pub length: usize,
    pub alt_txt: Option<String>,
    pub bytes: Option<Vec<u8>>,
}

/// A `trigger_id` Slack issued for a user's action.
#[derive(Clone, Debug)]
pub struct Trigger {
    pub user: String,
    pub issued: Instant,
    pub exchanged: bool,
}

/// A view opened with `views.open`.
#[derive(Clone, Debug)]
pub struct OpenedView {
    pub id: String,
    pub user: String,
    pub trigger: String,
    /// The view as rollbot sent it.
    pub view: Value,
    pub at: Instant,
}

impl OpenedView {
    /// The view's `private_metadata`, parsed as JSON.
    pub fn metadata(&self) -> Value {
        serde_json::from_str(self.view["private_metadata"].as_str().unwrap_or("null"))
            .unwrap_or(Value::Null)
    }

    /// The view's input blocks.
    pub fn inputs(&self) -> Vec<Value> {
        self.view["blocks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|b| b["type"] == "input")
            .cloned()
            .collect()
    }
}

#[derive(Default)]
pub struct Inner {
    pub triggers: HashMap<String, Trigger>,
    pub views: Vec<OpenedView>,
    pub files: Vec<SharedFile>,
    pub pending: HashMap<String, PendingFile>,
    /// Channel ID → is the bot a member.
    pub channels: HashMap<String, bool>,
    pub usergroups: HashMap<String, Vec<String>>,
    pub messages: Vec<Posted>,
    pub ephemerals: Vec<Posted>,
    pub responses: Vec<(String, Value)>,
    pub calls: Vec<Call>,
    /// The next N `chat.postMessage` calls answer 429.
    pub rate_limit: u32,
    pub retry_after: u64,
    /// The next N calls of any method answer 500.
    pub server_errors: u32,
    next_ts: u64,
    socket: Option<mpsc::UnboundedSender<WsCmd>>,
    pub connections: u32,
    pub acks: Vec<(Value, Instant)>,
}

#[derive(Clone)]
pub struct FakeSlack {
    pub port: u16,
    pub ws_port: u16,
    pub inner: Arc<Mutex<Inner>>,
}

impl FakeSlack {
    /// Starts on 127.0.0.1 (call from a multi-threaded tokio runtime).
    pub async fn start() -> FakeSlack {
        let inner = Arc::new(Mutex::new(Inner {
            retry_after: 1,
            next_ts: 1_700_000_000_000_100,
            ..Inner::default()
        }));
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ws = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let fake = FakeSlack {
            port: http.local_addr().unwrap().port(),
            ws_port: ws.local_addr().unwrap().port(),
            inner: inner.clone(),
        };
        let app = Router::new()
            .route("/api/{method}", any(web_api))
            .route("/response/{id}", post(response_url))
            .route("/upload/{id}", post(upload_bytes))
            .with_state(fake.clone());
        tokio::spawn(async move { axum::serve(http, app).await.unwrap() });
        let f = fake.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = ws.accept().await {
                let f = f.clone();
                tokio::spawn(async move { f.socket_session(stream).await });
            }
        });
        fake
    }

    pub fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}/api/", self.port)
    }

    pub fn response_url(&self, id: &str) -> String {
        format!("http://127.0.0.1:{}/response/{id}", self.port)
    }

    pub fn add_channel(&self, id: &str, member: bool) {
        self.inner
            .lock()
            .unwrap()
            .channels
            .insert(id.into(), member);
    }

    pub fn add_usergroup(&self, id: &str, users: &[&str]) {
        self.inner
            .lock()
            .unwrap()
            .usergroups
            .insert(id.into(), users.iter().map(|u| u.to_string()).collect());
    }

    pub fn rate_limit_next(&self, n: u32, retry_after: u64) {
        let mut i = self.inner.lock().unwrap();
        i.rate_limit = n;
        i.retry_after = retry_after;
    }

    pub fn messages(&self, channel: &str) -> Vec<Posted> {
        let i = self.inner.lock().unwrap();
        i.messages
            .iter()
            .filter(|m| m.channel == channel)
            .cloned()
            .collect()
    }

    /// Files shared in `channel`, in order.
    pub fn files(&self, channel: &str) -> Vec<SharedFile> {
        self.inner
            .lock()
            .unwrap()
            .files
            .iter()
            .filter(|f| f.channel == channel)
            .cloned()
            .collect()
    }

    pub fn ephemerals(&self, user: &str) -> Vec<Posted> {
        let i = self.inner.lock().unwrap();
        i.ephemerals
            .iter()
            .filter(|m| m.user.as_deref() == Some(user))
            .cloned()
            .collect()
    }

    pub fn responses(&self, id: &str) -> Vec<Value> {
        let i = self.inner.lock().unwrap();
        i.responses
            .iter()
            .filter(|(r, _)| r == id)
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub fn calls(&self, method: &str) -> Vec<Call> {
        let i = self.inner.lock().unwrap();
        i.calls
            .iter()
            .filter(|c| c.method == method)
            .cloned()
            .collect()
    }

    /// A `trigger_id` for an action `user` just took (a slash command, a
    /// button press), in Slack's format.
    pub fn trigger(&self, user: &str) -> String {
        let mut i = self.inner.lock().unwrap();
        let id = format!(
            "{}.{}.{:032x}",
            8_000_000_000u64 + i.triggers.len() as u64,
            1_700_000_000u64,
            rand::random::<u128>()
        );
        i.triggers.insert(
            id.clone(),
            Trigger {
                user: user.into(),
                issued: Instant::now(),
                exchanged: false,
            },
        );
        id
    }

    /// The views opened so far, oldest first.
    pub fn views(&self) -> Vec<OpenedView> {
        self.inner.lock().unwrap().views.clone()
    }

    /// The `view_submission` payload Slack sends when the person the view
    /// was opened for submits it with `values` typed into its inputs
    /// (`(block_id, text)`). Like Slack's client, it refuses to submit a
    /// view whose required input is empty.
    pub fn view_submission(&self, view: &OpenedView, values: &[(&str, &str)]) -> Value {
        let mut state = serde_json::Map::new();
        for block in view.inputs() {
            let block_id = block["block_id"].as_str().expect("input blocks have ids");
            let action_id = block["element"]["action_id"].as_str().unwrap_or(block_id);
            let typed = values
                .iter()
                .find(|(b, _)| *b == block_id)
                .map(|(_, v)| v.to_string())
                .or_else(|| {
                    block["element"]["initial_value"]
                        .as_str()
                        .map(str::to_string)
                })
                .filter(|v| !v.is_empty());
            if typed.is_none() && block["optional"] != true {
                panic!("Slack's client does not submit a view with {block_id} empty");
            }
            state.insert(
                block_id.into(),
                json!({action_id: {"type": block["element"]["type"], "value": typed}}),
            );
        }
        let mut v = view.view.clone();
        for (k, val) in [
            ("id", json!(view.id)),
            ("team_id", json!(TEAM)),
            ("state", json!({"values": state})),
            ("hash", json!(format!("1700000000.{}", &view.id[1..]))),
            ("previous_view_id", Value::Null),
            ("root_view_id", json!(view.id)),
            ("app_id", json!("A0ROLLBOT")),
            ("app_installed_team_id", json!(TEAM)),
            ("bot_id", json!("B0ROLLBOT")),
            ("external_id", json!("")),
            ("clear_on_close", json!(false)),
            ("notify_on_close", json!(false)),
        ] {
            v[k] = val;
        }
        let user = &view.user;
        let trigger = self.trigger(user);
        json!({
            "type": "view_submission",
            "team": {"id": TEAM, "domain": "fake"},
            "user": {"id": user, "username": user.to_lowercase(), "name": user.to_lowercase(), "team_id": TEAM},
            "api_app_id": "A0ROLLBOT",
            "token": "deprecated-verification-token",
            "trigger_id": trigger,
            "view": v,
            "response_urls": [],
            "is_enterprise_install": false,
            "enterprise": null
        })
    }

    pub fn connections(&self) -> u32 {
        self.inner.lock().unwrap().connections
    }

    /// Waits until `f` holds, or panics with `what` after `secs`.
    pub async fn wait_for<T>(
        &self,
        secs: u64,
        what: &str,
        f: impl Fn(&FakeSlack) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(v) = f(self) {
                return v;
            }
            if Instant::now() > deadline {
                let i = self.inner.lock().unwrap();
                let calls: Vec<String> = i
                    .calls
                    .iter()
                    .map(|c| format!("{} {} {:?}", c.method, c.status, c.error))
                    .collect();
                let msgs: Vec<String> = i
                    .messages
                    .iter()
                    .map(|m| format!("{} {:?}: {}", m.channel, m.thread_ts, m.current_text()))
                    .collect();
                let eph: Vec<String> = i
                    .ephemerals
                    .iter()
                    .map(|m| format!("{} {:?}: {}", m.channel, m.user, m.text))
                    .collect();
                panic!(
                    "timed out waiting for {what}\ncalls: {calls:#?}\nmessages: {msgs:#?}\nephemerals: {eph:#?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits up to `secs` for the first private message `user` got whose
    /// text contains `needle` (`""`: any).
    pub async fn ephemeral(&self, secs: u64, what: &str, user: &str, needle: &str) -> Posted {
        self.wait_for(secs, what, |f| {
            f.ephemerals(user)
                .into_iter()
                .find(|m| m.text.contains(needle))
        })
        .await
    }

    // ---- Socket Mode ----

    async fn socket_session(&self, stream: tokio::net::TcpStream) {
        let Ok(ws) = tokio_tungstenite::accept_async(stream).await else {
            return;
        };
        let (mut tx, mut rx) = ws.split();
        let (cmd_tx, mut cmd_rx) = mpsc::unbounded_channel();
        {
            let mut i = self.inner.lock().unwrap();
            i.connections += 1;
            i.socket = Some(cmd_tx);
        }
        let hello = json!({"type": "hello", "num_connections": 1,
            "debug_info": {"host": "applink-fake", "approximate_connection_time": 3600},
            "connection_info": {"app_id": "A0ROLLBOT"}});
        if tx
            .send(Frame::Text(hello.to_string().into()))
            .await
            .is_err()
        {
            return;
        }
        loop {
            tokio::select! {
                cmd = cmd_rx.recv() => match cmd {
                    Some(WsCmd::Send(t)) => { if tx.send(Frame::Text(t.into())).await.is_err() { return; } }
                    // Drop the TCP connection without a close frame.
                    Some(WsCmd::Drop) | None => return,
                },
                frame = rx.next() => match frame {
                    Some(Ok(Frame::Text(t))) => {
                        if let Ok(v) = serde_json::from_str::<Value>(&t) {
                            self.inner.lock().unwrap().acks.push((v, Instant::now()));
                        }
                    }
                    Some(Ok(Frame::Close(_))) | None | Some(Err(_)) => return,
                    _ => {}
                },
            }
        }
    }

    /// Sends an envelope on the open socket.
    pub fn socket_send(&self, envelope: &Value) {
        let i = self.inner.lock().unwrap();
        i.socket
            .as_ref()
            .expect("a socket is open")
            .send(WsCmd::Send(envelope.to_string()))
            .expect("socket alive");
    }

    /// Slack's `disconnect` envelope (a connection refresh).
    pub fn socket_disconnect(&self) {
        self.socket_send(&json!({"type": "disconnect", "reason": "refresh_requested",
            "debug_info": {"host": "applink-fake"}}));
    }

    /// Drops the socket without a close frame.
    pub fn socket_drop(&self) {
        let i = self.inner.lock().unwrap();
        if let Some(s) = &i.socket {
            let _ = s.send(WsCmd::Drop);
        }
    }

    /// The acknowledgement of an envelope, waiting up to 5 s.
    pub async fn ack(&self, envelope_id: &str) -> (Value, Instant) {
        self.wait_for(5, &format!("ack of {envelope_id}"), |f| {
            f.inner
                .lock()
                .unwrap()
                .acks
                .iter()
                .find(|(v, _)| v["envelope_id"] == envelope_id)
                .cloned()
        })
        .await
    }

    /// `ch` when it exists and the bot is a member, else Slack's error.
    fn member_channel(&self, ch: &Option<String>) -> Result<String, &'static str> {
        let Some(ch) = ch.clone() else {
            return Err("channel_not_found");
        };
        match self.inner.lock().unwrap().channels.get(&ch) {
            None => Err("channel_not_found"),
            Some(false) => Err("not_in_channel"),
            Some(true) => Ok(ch),
        }
    }

    fn ts(&self) -> String {
        let mut i = self.inner.lock().unwrap();
        i.next_ts += 100;
        let n = i.next_ts;
        format!("{}.{:06}", n / 1_000_000, n % 1_000_000)
    }
}

fn ok(v: Value) -> Response {
    let mut v = v;
    v["ok"] = json!(true);
    Json(v).into_response()
}

fn fail(error: &str) -> Response {
    Json(json!({"ok": false, "error": error})).into_response()
}

fn args(query: Option<String>, headers: &HeaderMap, body: &[u8]) -> HashMap<String, Value> {
    let mut a = HashMap::new();
    if let Some(q) = query {
        for (k, v) in serde_urlencoded::from_str::<Vec<(String, String)>>(&q).unwrap_or_default() {
            a.insert(k, Value::String(v));
        }
    }
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if ct.starts_with("application/json") {
        if let Ok(Value::Object(o)) = serde_json::from_slice::<Value>(body) {
            a.extend(o);
        }
    } else if !body.is_empty() {
        for (k, v) in
            serde_urlencoded::from_bytes::<Vec<(String, String)>>(body).unwrap_or_default()
        {
            // Form posts carry blocks as a JSON string.
            let v = if k == "blocks" {
                serde_json::from_str(&v).unwrap_or(Value::String(v))
            } else {
                Value::String(v)
            };
            a.insert(k, v);
        }
    }
    a
}

fn s(a: &HashMap<String, Value>, k: &str) -> Option<String> {
    a.get(k).and_then(|v| v.as_str()).map(str::to_string)
}

async fn web_api(
    State(f): State<FakeSlack>,
    Path(method): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let a = args(query, &headers, &body);
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string)
        .or_else(|| s(&a, "token"));
    let r = answer(&f, &method, token.as_deref(), &a);
    let status = r.status().as_u16();
    // Keep the Web API's `error` code with the call, as Slack's logs show it.
    let (parts, body) = r.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let error = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string));
    f.inner.lock().unwrap().calls.push(Call {
        method: method.clone(),
        at: Instant::now(),
        status,
        error,
    });
    Response::from_parts(parts, axum::body::Body::from(bytes))
}

fn answer(
    f: &FakeSlack,
    method: &str,
    token: Option<&str>,
    a: &HashMap<String, Value>,
) -> Response {
    let wanted = if method == "apps.connections.open" {
        APP_TOKEN
    } else {
        BOT_TOKEN
    };
    match token {
        None => return fail("not_authed"),
        Some(t) if t == wanted => {}
        Some(t) if t == BOT_TOKEN || t == APP_TOKEN => return fail("not_allowed_token_type"),
        Some(_) => return fail("invalid_auth"),
    }
    {
        let mut i = f.inner.lock().unwrap();
        if i.server_errors > 0 {
            i.server_errors -= 1;
            return (StatusCode::INTERNAL_SERVER_ERROR, "upstream error").into_response();
        }
    }
    match method {
        "auth.test" => ok(json!({"url": "https://fake.slack.test/", "team": "Fake",
            "user": "rollbot", "team_id": TEAM, "user_id": BOT_USER, "bot_id": "B0ROLLBOT"})),
        "conversations.info" => {
            let ch = s(a, "channel").unwrap_or_default();
            match f.inner.lock().unwrap().channels.get(&ch) {
                None => fail("channel_not_found"),
                Some(member) => ok(json!({"channel": {"id": ch, "name": ch.to_lowercase(),
                    "is_channel": true, "created": 1_600_000_000, "is_member": member,
                    "is_archived": false, "is_private": false}})),
            }
        }
        "chat.postMessage" => post_message(f, a),
        "chat.update" => update(f, a),
        "chat.postEphemeral" => post_ephemeral(f, a),
        "usergroups.users.list" => {
            let g = s(a, "usergroup").unwrap_or_default();
            match f.inner.lock().unwrap().usergroups.get(&g) {
                Some(users) => ok(json!({"users": users})),
                None => fail("no_such_subteam"),
            }
        }
        "views.open" => open_view(f, a),
        "files.getUploadURLExternal" => upload_url(f, a),
        "files.completeUploadExternal" => complete_upload(f, a),
        "apps.connections.open" => {
            ok(json!({"url": format!("ws://127.0.0.1:{}/link/?ticket=fake", f.ws_port)}))
        }
        _ => fail("unknown_method"),
    }
}

/// `chat.postMessage`: 429 while told to rate-limit, else the message in
/// its channel (and thread).
fn post_message(f: &FakeSlack, a: &HashMap<String, Value>) -> Response {
    {
        let mut i = f.inner.lock().unwrap();
        if i.rate_limit > 0 {
            i.rate_limit -= 1;
            let ra = i.retry_after.to_string();
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", ra)],
                Json(json!({"ok": false, "error": "ratelimited"})),
            )
                .into_response();
        }
    }
    let ch = match f.member_channel(&s(a, "channel")) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let text = s(a, "text").unwrap_or_default();
    let blocks = a.get("blocks").cloned().unwrap_or(Value::Null);
    if text.is_empty() && blocks.is_null() {
        return fail("no_text");
    }
    let thread_ts = s(a, "thread_ts");
    if let Some(t) = &thread_ts {
        let known = f
            .inner
            .lock()
            .unwrap()
            .messages
            .iter()
            .any(|m| &m.ts == t && m.channel == ch);
        if !known {
            return fail("thread_not_found");
        }
    }
    let ts = f.ts();
    f.inner.lock().unwrap().messages.push(Posted {
        channel: ch.clone(),
        ts: ts.clone(),
        thread_ts: thread_ts.clone(),
        text: text.clone(),
        blocks: blocks.clone(),
        user: None,
        at: Instant::now(),
        updates: vec![],
    });
    let mut message = json!({"type": "message", "text": text, "ts": ts,
        "user": BOT_USER, "bot_id": "B0ROLLBOT", "blocks": blocks});
    if let Some(t) = thread_ts {
        message["thread_ts"] = json!(t);
    }
    ok(json!({"channel": ch, "ts": ts, "message": message}))
}

/// `chat.update` of a message the bot posted.
fn update(f: &FakeSlack, a: &HashMap<String, Value>) -> Response {
    let ch = match f.member_channel(&s(a, "channel")) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let ts = s(a, "ts").unwrap_or_default();
    let text = s(a, "text").unwrap_or_default();
    let blocks = a.get("blocks").cloned().unwrap_or(Value::Null);
    let mut i = f.inner.lock().unwrap();
    let Some(m) = i
        .messages
        .iter_mut()
        .find(|m| m.ts == ts && m.channel == ch)
    else {
        return fail("message_not_found");
    };
    m.updates.push((text.clone(), blocks.clone()));
    let thread_ts = m.thread_ts.clone();
    let mut r = json!({"channel": ch, "ts": ts, "text": text,
        "message": {"text": text, "blocks": blocks}});
    if let Some(t) = thread_ts {
        r["thread_ts"] = json!(t);
    }
    ok(r)
}

/// `chat.postEphemeral`: a message only `user` sees.
fn post_ephemeral(f: &FakeSlack, a: &HashMap<String, Value>) -> Response {
    let ch = match f.member_channel(&s(a, "channel")) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let Some(user) = s(a, "user") else {
        return fail("user_not_in_channel");
    };
    let ts = f.ts();
    f.inner.lock().unwrap().ephemerals.push(Posted {
        channel: ch,
        ts: ts.clone(),
        thread_ts: s(a, "thread_ts"),
        text: s(a, "text").unwrap_or_default(),
        blocks: a.get("blocks").cloned().unwrap_or(Value::Null),
        user: Some(user),
        at: Instant::now(),
        updates: vec![],
    });
    ok(json!({"message_ts": ts}))
}

/// Where a view breaks Slack's limits, as Slack's `response_metadata`
/// messages say it (`[ERROR] … [json-pointer:/view/…]`).
fn view_problems(view: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let len = |v: &Value| v.as_str().map(|s| s.chars().count()).unwrap_or(0);
    let mut check = |ok: bool, what: &str, at: &str| {
        if !ok {
            out.push(format!("[ERROR] {what} [json-pointer:/view{at}]"));
        }
    };
    check(view["type"] == "modal", "must be modal", "/type");
    check(
        view["title"]["type"] == "plain_text" && (1..=24).contains(&len(&view["title"]["text"])),
        "must be plain_text of 1 to 24 characters",
        "/title",
    );
    let blocks = view["blocks"].as_array().cloned().unwrap_or_default();
    check(
        !blocks.is_empty() && blocks.len() <= 100,
        "must have 1 to 100 blocks",
        "/blocks",
    );
    let has_input = blocks.iter().any(|b| b["type"] == "input");
    check(
        !has_input || view["submit"]["type"] == "plain_text",
        "submit is required when the view has input blocks",
        "/submit",
    );
    for k in ["submit", "close"] {
        check(
            view.get(k).is_none() || len(&view[k]["text"]) <= 24,
            "must be less than 25 characters",
            &format!("/{k}/text"),
        );
    }
    check(
        len(&view["private_metadata"]) <= 3000,
        "must be less than 3001 characters",
        "/private_metadata",
    );
    check(
        len(&view["callback_id"]) <= 255,
        "must be less than 256 characters",
        "/callback_id",
    );
    let mut ids = std::collections::HashSet::new();
    for (n, b) in blocks.iter().enumerate() {
        if let Some(id) = b["block_id"].as_str() {
            check(
                ids.insert(id.to_string()),
                "duplicate block_id",
                &format!("/blocks/{n}/block_id"),
            );
        }
        if b["type"] == "input" {
            let e = &b["element"];
            check(
                b["label"]["type"] == "plain_text"
                    && (1..=2000).contains(&len(&b["label"]["text"])),
                "label must be plain_text of 1 to 2000 characters",
                &format!("/blocks/{n}/label"),
            );
            if e["type"] == "plain_text_input" {
                let max = e["max_length"].as_u64().unwrap_or(3000);
                check(
                    max <= 3000,
                    "must be at most 3000",
                    &format!("/blocks/{n}/element/max_length"),
                );
                check(
                    len(&e["initial_value"]) as u64 <= max,
                    "must be at most max_length",
                    &format!("/blocks/{n}/element/initial_value"),
                );
            }
        }
    }
    out
}

/// `views.open`: exchanges a trigger Slack issued (once, within 3 s) for
/// a view shown to the trigger's user.
fn open_view(f: &FakeSlack, a: &HashMap<String, Value>) -> Response {
    let Some(trigger) = s(a, "trigger_id") else {
        return fail("invalid_arguments");
    };
    let view = match a.get("view") {
        Some(Value::String(j)) => serde_json::from_str(j).unwrap_or(Value::Null),
        Some(v) => v.clone(),
        None => return fail("invalid_arguments"),
    };
    let mut i = f.inner.lock().unwrap();
    let Some(t) = i.triggers.get(&trigger).cloned() else {
        return fail("invalid_trigger_id");
    };
    if t.exchanged {
        return fail("exchanged_trigger_id");
    }
    if t.issued.elapsed() > Duration::from_secs(3) {
        return fail("expired_trigger_id");
    }
    let problems = view_problems(&view);
    if !problems.is_empty() {
        return Json(json!({"ok": false, "error": "invalid_arguments",
            "response_metadata": {"messages": problems}}))
        .into_response();
    }
    i.triggers.get_mut(&trigger).unwrap().exchanged = true;
    let id = format!("V0{:08}", i.views.len() + 1);
    i.views.push(OpenedView {
        id: id.clone(),
        user: t.user.clone(),
        trigger,
        view: view.clone(),
        at: Instant::now(),
    });
    let mut shown = view;
    for (k, v) in [
        ("id", json!(id)),
        ("team_id", json!(TEAM)),
        ("state", json!({"values": {}})),
        ("hash", json!(format!("1700000000.{}", &id[1..]))),
        ("previous_view_id", Value::Null),
        ("root_view_id", json!(id)),
        ("app_id", json!("A0ROLLBOT")),
        ("bot_id", json!("B0ROLLBOT")),
        ("external_id", json!("")),
        ("clear_on_close", json!(false)),
        ("notify_on_close", json!(false)),
    ] {
        shown[k] = v;
    }
    ok(json!({ "view": shown }))
}

/// `files.getUploadURLExternal`: an upload URL on this server for a file
/// of the announced length.
fn upload_url(f: &FakeSlack, a: &HashMap<String, Value>) -> Response {
    let Some(filename) = s(a, "filename").filter(|n| !n.is_empty()) else {
        return fail("invalid_arguments");
    };
    let Some(length) = s(a, "length").and_then(|l| l.parse::<usize>().ok()) else {
        return fail("invalid_arguments");
    };
    if length == 0 {
        return fail("invalid_arguments");
    }
    let mut i = f.inner.lock().unwrap();
    let id = format!("F0{:08}", i.pending.len() + i.files.len() + 1);
    i.pending.insert(
        id.clone(),
        PendingFile {
            filename,
            length,
            alt_txt: s(a, "alt_txt"),
            bytes: None,
        },
    );
    ok(
        json!({"upload_url": format!("http://127.0.0.1:{}/upload/{id}", f.port),
        "file_id": id}),
    )
}

/// `files.completeUploadExternal`: shares the uploaded files in a channel
/// or thread, checking each file's length.
fn complete_upload(f: &FakeSlack, a: &HashMap<String, Value>) -> Response {
    let files = match a.get("files") {
        Some(Value::String(j)) => serde_json::from_str(j).unwrap_or(Value::Null),
        Some(v) => v.clone(),
        None => Value::Null,
    };
    let Some(files) = files.as_array().filter(|f| !f.is_empty()).cloned() else {
        return fail("invalid_arguments");
    };
    let channel = match s(a, "channel_id") {
        Some(c) => match f.member_channel(&Some(c)) {
            Ok(c) => Some(c),
            Err(e) => return fail(e),
        },
        None => None,
    };
    let thread_ts = s(a, "thread_ts");
    let mut i = f.inner.lock().unwrap();
    if let (Some(t), Some(ch)) = (&thread_ts, &channel) {
        if !i.messages.iter().any(|m| &m.ts == t && &m.channel == ch) {
            return fail("invalid_thread_ts");
        }
    }
    let mut done = Vec::new();
    for file in &files {
        let id = file["id"].as_str().unwrap_or_default().to_string();
        let Some(p) = i.pending.get(&id) else {
            return fail("file_not_found");
        };
        let Some(bytes) = p.bytes.clone() else {
            return fail("file_upload_not_found");
        };
        if bytes.len() != p.length {
            return fail("file_upload_size_mismatch");
        }
        done.push((id, file["title"].as_str().map(str::to_string), bytes));
    }
    let mut answer = Vec::new();
    for (id, title, bytes) in done {
        let p = i.pending.remove(&id).unwrap();
        answer.push(json!({"id": id, "name": p.filename, "title": title.clone()
            .unwrap_or_else(|| p.filename.clone()), "mimetype": "image/png",
            "size": bytes.len()}));
        if let Some(ch) = &channel {
            i.files.push(SharedFile {
                id,
                filename: p.filename,
                title,
                alt_txt: p.alt_txt,
                channel: ch.clone(),
                thread_ts: thread_ts.clone(),
                bytes,
            });
        }
    }
    ok(json!({"files": answer}))
}

/// The upload URL: takes the file's bytes, raw or as one multipart part
/// (here raw), and answers like Slack with `OK - LENGTH` as text.
async fn upload_bytes(State(f): State<FakeSlack>, Path(id): Path<String>, body: Bytes) -> Response {
    let mut i = f.inner.lock().unwrap();
    i.calls.push(Call {
        method: "upload".into(),
        at: Instant::now(),
        status: 200,
        error: None,
    });
    match i.pending.get_mut(&id) {
        Some(p) => {
            p.bytes = Some(body.to_vec());
            (StatusCode::OK, format!("OK - {}", body.len())).into_response()
        }
        None => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}

async fn response_url(State(f): State<FakeSlack>, Path(id): Path<String>, body: Bytes) -> Response {
    match serde_json::from_slice::<Value>(&body) {
        Ok(v) => {
            f.inner.lock().unwrap().responses.push((id, v));
            (StatusCode::OK, "ok").into_response()
        }
        Err(_) => (StatusCode::BAD_REQUEST, "invalid_payload").into_response(),
    }
}

// ---- Signing, as Slack does ----

pub fn sign(secret: &str, ts: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("v0:{ts}:{body}").as_bytes());
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A slash command's form body.
pub fn slash_body(
    command: &str,
    text: &str,
    user: &str,
    channel: &str,
    trigger: &str,
    response_url: &str,
) -> String {
    serde_urlencoded::to_string([
        ("token", "deprecated-verification-token"),
        ("team_id", TEAM),
        ("team_domain", "fake"),
        ("channel_id", channel),
        ("channel_name", "deploys"),
        ("user_id", user),
        ("user_name", &user.to_lowercase()),
        ("command", command),
        ("text", text),
        ("api_app_id", "A0ROLLBOT"),
        ("is_enterprise_install", "false"),
        ("response_url", response_url),
        ("trigger_id", trigger),
    ])
    .unwrap()
}

/// A `block_actions` payload for pressing `action_id` on a message.
pub fn press_payload(
    user: &str,
    channel: &str,
    message: &Posted,
    action_id: &str,
    trigger: &str,
    response_url: &str,
) -> Value {
    let mut msg = json!({"type": "message", "ts": message.ts, "text": message.current_text(),
        "user": BOT_USER, "bot_id": "B0ROLLBOT", "blocks": message.current_blocks()});
    if let Some(t) = &message.thread_ts {
        msg["thread_ts"] = json!(t);
    }
    json!({
        "type": "block_actions",
        "team": {"id": TEAM, "domain": "fake"},
        "user": {"id": user, "username": user.to_lowercase(), "name": user.to_lowercase(), "team_id": TEAM},
        "api_app_id": "A0ROLLBOT",
        "token": "deprecated-verification-token",
        "container": {"type": "message", "message_ts": message.ts, "channel_id": channel, "is_ephemeral": false},
        "trigger_id": trigger,
        "channel": {"id": channel, "name": "deploys"},
        "message": msg,
        "response_url": response_url,
        "actions": [{"type": "button", "action_id": action_id, "block_id": "rollbot-choices",
            "text": {"type": "plain_text", "text": "Approve", "emoji": true},
            "value": action_id, "action_ts": "1700000000.000100"}]
    })
}

/// An `app_mention` event callback.
pub fn mention_event(
    event_id: &str,
    user: &str,
    channel: &str,
    text: &str,
    ts: &str,
    thread_ts: Option<&str>,
) -> Value {
    let mut event = json!({"type": "app_mention", "user": user, "text": text, "ts": ts,
        "channel": channel, "event_ts": ts});
    if let Some(t) = thread_ts {
        event["thread_ts"] = json!(t);
    }
    json!({"token": "deprecated", "team_id": TEAM, "api_app_id": "A0ROLLBOT",
        "event": event, "type": "event_callback", "event_id": event_id,
        "event_time": 1_700_000_000, "authed_users": [BOT_USER]})
}

/// A Socket Mode envelope carrying a slash command, as Slack sends it: the
/// command's form fields as a JSON object, answerable in the acknowledgement.
pub fn slash_envelope(
    envelope_id: &str,
    command: &str,
    text: &str,
    user: &str,
    channel: &str,
    trigger: &str,
    response_url: &str,
) -> Value {
    let form = slash_body(command, text, user, channel, trigger, response_url);
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(&form).unwrap();
    let payload: serde_json::Map<String, Value> = pairs
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    json!({"envelope_id": envelope_id, "type": "slash_commands", "payload": payload,
        "accepts_response_payload": true, "retry_attempt": 0, "retry_reason": ""})
}
