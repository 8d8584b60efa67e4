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
//! - Forms: a MODAL answer (type 9) is checked against Discord's limits
//!   and can be submitted as Discord's client does
//!   ([`FakeDiscord::modal_submit`], interaction type 5, MODAL_SUBMIT,
//!   signed like every interaction), with the typed values and, for a
//!   form opened from a button, the message the button is on.
//! - Visibility, as Discord documents it: a deferred command (type 5) shows
//!   a "thinking…" message, ephemeral when the deferral had flags 64. The
//!   first follow-up after that deferral does not create a message: it
//!   edits the deferred one and keeps the deferral's visibility, ignoring
//!   its own ephemeral flag; later follow-ups (and those after a button's
//!   type 6) are new messages with their own flags. Editing `@original`
//!   never changes whether it is ephemeral. Every state the original
//!   passed through is kept, so a test can tell what the channel saw.

#![allow(dead_code)]

mod multipart;
mod routes;
mod wire;

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
        let app = routes::router(state.clone());
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

    /// `who` submits the form rollbot answered the interaction `opened`
    /// with (response type 9), having typed `values` (`(custom_id, text)`;
    /// other inputs keep their pre-filled value). Like Discord's client,
    /// it does not submit a form whose required input is empty, and a form
    /// over Discord's limits fails the test, as Discord would refuse it.
    pub fn modal_submit(&self, opened: &Value, who: &Person, values: &[(&str, &str)]) -> Value {
        let it = self.interaction(opened["token"].as_str().unwrap());
        let answer = it.response.expect("rollbot answered the interaction");
        assert_eq!(answer["type"], 9, "not a form: {answer}");
        let form = &answer["data"];
        let problems = wire::modal_problems(form);
        assert!(
            problems.is_empty(),
            "Discord refuses this form: {problems:?}"
        );
        let rows: Vec<Value> = form["components"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| {
                let input = &row["components"][0];
                let id = input["custom_id"].as_str().unwrap();
                let typed = values
                    .iter()
                    .find(|(k, _)| *k == id)
                    .map(|(_, v)| v.to_string())
                    .or_else(|| input["value"].as_str().map(str::to_string))
                    .unwrap_or_default();
                if input["required"] != false && typed.is_empty() {
                    panic!("Discord's client does not submit the form with {id} empty");
                }
                json!({"type": 1, "components": [{"type": 4, "custom_id": id, "value": typed}]})
            })
            .collect();
        let channel = opened["channel_id"].as_str().unwrap();
        let mut p = self.base(
            5,
            channel,
            who,
            json!({"custom_id": form["custom_id"], "components": rows}),
        );
        if let Some(m) = opened.get("message") {
            p["message"] = m.clone();
        }
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
