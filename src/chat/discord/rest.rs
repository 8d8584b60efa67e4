//! Discord's REST API through serenity's routes and request builder, with
//! rollbot's own rate limiting (serenity's limiter ignores a proxy URL, so
//! it is disabled and this module does its work):
//!
//! - one queue per channel (or per interaction): calls to one channel go out
//!   in order, one at a time, and a call whose caller stopped waiting is
//!   still delivered, so a slow or rate-limited channel never loses a
//!   message and never holds up another channel;
//! - per-route buckets: `X-RateLimit-Remaining: 0` holds the bucket for
//!   `X-RateLimit-Reset-After` seconds before its next call;
//! - 429: wait `retry_after` (body, else `Retry-After`), for the bucket or
//!   for every call when `global` is set, then send again; never dropped;
//! - 5xx and transport errors: retried with exponential backoff, then
//!   reported;
//! - other errors are final and keep Discord's `code` and `message`.

use crate::telemetry::{PlatformLabels, Telemetry};
use serenity::http::{LightMethod, RatelimitingBucket, Request, Route};
use serenity::model::id::{ApplicationId, ChannelId, GuildId, InteractionId, MessageId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// One Discord REST call rollbot makes, with owned parameters so it can wait
/// in a queue.
#[derive(Clone, Debug)]
pub enum Call {
    CreateMessage {
        channel: u64,
    },
    EditMessage {
        channel: u64,
        message: u64,
    },
    /// Starts a public thread from a message (the thread's ID is the message's).
    StartThread {
        channel: u64,
        message: u64,
    },
    InteractionCallback {
        interaction: u64,
        token: String,
    },
    Followup {
        token: String,
    },
    EditOriginal {
        token: String,
    },
    DeleteOriginal {
        token: String,
    },
    /// Bulk overwrite of the application's commands (global or one guild's).
    OverwriteCommands {
        guild: Option<u64>,
    },
}

impl Call {
    fn route(&self, app: ApplicationId) -> (Route<'_>, LightMethod) {
        let ch = |c: u64| ChannelId::new(c.max(1));
        let msg = |m: u64| MessageId::new(m.max(1));
        match self {
            Call::CreateMessage { channel } => (
                Route::ChannelMessages {
                    channel_id: ch(*channel),
                },
                LightMethod::Post,
            ),
            Call::EditMessage { channel, message } => (
                Route::ChannelMessage {
                    channel_id: ch(*channel),
                    message_id: msg(*message),
                },
                LightMethod::Patch,
            ),
            Call::StartThread { channel, message } => (
                Route::ChannelMessageThreads {
                    channel_id: ch(*channel),
                    message_id: msg(*message),
                },
                LightMethod::Post,
            ),
            Call::InteractionCallback { interaction, token } => (
                Route::InteractionResponse {
                    interaction_id: InteractionId::new((*interaction).max(1)),
                    token,
                },
                LightMethod::Post,
            ),
            Call::Followup { token } => (
                Route::WebhookFollowupMessages {
                    application_id: app,
                    token,
                },
                LightMethod::Post,
            ),
            Call::EditOriginal { token } => (
                Route::WebhookOriginalInteractionResponse {
                    application_id: app,
                    token,
                },
                LightMethod::Patch,
            ),
            Call::DeleteOriginal { token } => (
                Route::WebhookOriginalInteractionResponse {
                    application_id: app,
                    token,
                },
                LightMethod::Delete,
            ),
            Call::OverwriteCommands { guild: None } => (
                Route::Commands {
                    application_id: app,
                },
                LightMethod::Put,
            ),
            Call::OverwriteCommands { guild: Some(g) } => (
                Route::GuildCommands {
                    application_id: app,
                    guild_id: GuildId::new((*g).max(1)),
                },
                LightMethod::Put,
            ),
        }
    }

    /// Interaction webhooks are authorized by their token, not the bot's.
    fn uses_interaction_token(&self) -> bool {
        matches!(
            self,
            Call::InteractionCallback { .. }
                | Call::Followup { .. }
                | Call::EditOriginal { .. }
                | Call::DeleteOriginal { .. }
        )
    }
}

/// A failed call, with Discord's own error code and message when it sent one.
#[derive(Clone, Debug, thiserror::Error)]
pub enum RestError {
    #[error("Discord answered {status} (code {code}: {message})")]
    Discord {
        status: u16,
        code: i64,
        message: String,
    },
    #[error("Discord could not be reached: {0}")]
    Transport(String),
    #[error("Discord call queue closed")]
    Closed,
}

impl RestError {
    pub fn code(&self) -> Option<i64> {
        match self {
            RestError::Discord { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// Retry limits; tests shorten them.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Attempts for a 5xx or a transport error before giving up.
    pub attempts: u32,
    /// First backoff; doubled each retry, with jitter.
    pub backoff: Duration,
    /// Longest single wait honoured for a 429 (longer ones wait this long and try again).
    pub max_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            backoff: Duration::from_millis(500),
            max_wait: Duration::from_secs(60),
        }
    }
}

struct Job {
    call: Call,
    body: Option<Vec<u8>>,
    /// Set for a multipart body; JSON otherwise.
    content_type: Option<String>,
    reply: oneshot::Sender<Result<serde_json::Value, RestError>>,
}

#[derive(Default)]
struct Limits {
    /// Route bucket (route and major parameter) → not before.
    buckets: HashMap<RatelimitingBucket, Instant>,
    global: Option<Instant>,
}

pub struct Rest {
    client: reqwest::Client,
    token: String,
    /// What replaces `https://discord.com` in serenity's routes.
    proxy: String,
    app: ApplicationId,
    policy: RetryPolicy,
    queues: Mutex<HashMap<String, mpsc::UnboundedSender<Job>>>,
    limits: Mutex<Limits>,
    telemetry: Arc<Telemetry>,
}

impl Rest {
    /// `api_url` ends in `/api/v10` (checked when the config loads).
    pub fn new(
        api_url: &str,
        token: &str,
        application_id: u64,
        policy: RetryPolicy,
        telemetry: Arc<Telemetry>,
    ) -> anyhow::Result<Arc<Rest>> {
        let api = api_url.trim_end_matches('/');
        let proxy = api
            .strip_suffix("/api/v10")
            .ok_or_else(|| anyhow::anyhow!("Discord api_url must end in /api/v10"))?
            .to_string();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()?;
        let token = token.trim();
        let token = if token.starts_with("Bot ") {
            token.to_string()
        } else {
            format!("Bot {token}")
        };
        Ok(Arc::new(Rest {
            client,
            token,
            proxy,
            app: ApplicationId::new(application_id.max(1)),
            policy,
            queues: Mutex::new(HashMap::new()),
            limits: Mutex::new(Limits::default()),
            telemetry,
        }))
    }

    /// The client `[chat.discord]` describes, with its bot token read.
    pub fn from_config(
        d: &crate::config_file::DiscordConfig,
        telemetry: Arc<Telemetry>,
    ) -> anyhow::Result<Arc<Rest>> {
        let token = d
            .bot_token_source()
            .map_err(anyhow::Error::msg)?
            .resolve()
            .map_err(|e| anyhow::anyhow!("[chat.discord] bot_token: {e}"))?;
        let app: u64 = d
            .application_id
            .parse()
            .map_err(|_| anyhow::anyhow!("[chat.discord] application_id is not a Discord ID"))?;
        Rest::new(
            &d.api_url,
            token.expose(),
            app,
            RetryPolicy::default(),
            telemetry,
        )
    }

    pub fn application_id(&self) -> u64 {
        self.app.get()
    }

    /// Queues a call behind the others of the same `queue` and waits for
    /// its answer. Dropping the returned future does not cancel the call.
    pub async fn call(
        self: &Arc<Self>,
        queue: &str,
        call: Call,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, RestError> {
        let body = body.map(|b| serde_json::to_vec(b).expect("JSON values serialize"));
        self.enqueue(queue, call, body, None).await
    }

    /// Like [`Rest::call`], with files: a `multipart/form-data` body of
    /// `payload_json` and `files[N]` parts, as Discord takes uploads.
    pub async fn call_with_files(
        self: &Arc<Self>,
        queue: &str,
        call: Call,
        payload: &serde_json::Value,
        files: &[(String, Vec<u8>)],
    ) -> Result<serde_json::Value, RestError> {
        let (content_type, body) = multipart(payload, files);
        self.enqueue(queue, call, Some(body), Some(content_type))
            .await
    }

    async fn enqueue(
        self: &Arc<Self>,
        queue: &str,
        call: Call,
        body: Option<Vec<u8>>,
        content_type: Option<String>,
    ) -> Result<serde_json::Value, RestError> {
        let (tx, rx) = oneshot::channel();
        {
            let mut queues = self.queues.lock().unwrap();
            let sender = queues
                .entry(queue.to_string())
                .or_insert_with(|| self.spawn_worker(queue.to_string()));
            let mut job = Job {
                call,
                body,
                content_type,
                reply: tx,
            };
            if let Err(mpsc::error::SendError(j)) = sender.send(job) {
                // The worker stopped after being idle; start a new one.
                job = j;
                let fresh = self.spawn_worker(queue.to_string());
                let _ = fresh.send(job);
                queues.insert(queue.to_string(), fresh);
            }
        }
        rx.await.unwrap_or(Err(RestError::Closed))
    }

    fn spawn_worker(self: &Arc<Self>, queue: String) -> mpsc::UnboundedSender<Job> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                match tokio::time::timeout(Duration::from_secs(60), rx.recv()).await {
                    Ok(Some(job)) => {
                        let result = me
                            .perform(&job.call, job.body.as_deref(), job.content_type.as_deref())
                            .await;
                        if let Err(e) = &result {
                            tracing::warn!(queue = %queue, call = ?redact(&job.call), error = %e, "Discord call failed");
                        }
                        let _ = job.reply.send(result);
                    }
                    Ok(None) => return,
                    Err(_) => {
                        // Idle: leave, unless a job arrived meanwhile.
                        let mut queues = me.queues.lock().unwrap();
                        if rx.is_empty() {
                            queues.remove(&queue);
                            rx.close();
                            return;
                        }
                    }
                }
            }
        });
        tx
    }

    /// Sends one call until it succeeds or fails for good.
    async fn perform(
        &self,
        call: &Call,
        body: Option<&[u8]>,
        content_type: Option<&str>,
    ) -> Result<serde_json::Value, RestError> {
        let (route, method) = call.route(self.app);
        let bucket = route.ratelimiting_bucket();
        let mut failures = 0u32;
        loop {
            self.wait_turn(&bucket).await;
            let mut req = Request::new(route, method)
                .body(body.map(<[u8]>::to_vec))
                .build(&self.client, &self.token, Some(&self.proxy))
                .and_then(|b| Ok(b.build()?))
                .map_err(|e| RestError::Transport(e.to_string()))?;
            if let Some(ct) = content_type {
                let v = reqwest::header::HeaderValue::from_str(ct)
                    .map_err(|e| RestError::Transport(e.to_string()))?;
                req.headers_mut().insert(reqwest::header::CONTENT_TYPE, v);
            }
            if call.uses_interaction_token() {
                // Interaction webhooks are authorized by their token alone.
                req.headers_mut().remove(reqwest::header::AUTHORIZATION);
            }
            let resp = match self.client.execute(req).await {
                Ok(r) => r,
                Err(e) => {
                    failures += 1;
                    if failures >= self.policy.attempts {
                        return Err(RestError::Transport(e.to_string()));
                    }
                    tokio::time::sleep(self.backoff(failures)).await;
                    continue;
                }
            };
            let status = resp.status().as_u16();
            self.note_headers(&bucket, resp.headers());
            let bytes = resp.bytes().await.unwrap_or_default();
            let json: serde_json::Value = if bytes.is_empty() {
                serde_json::Value::Null
            } else {
                serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null)
            };
            match status {
                200..=299 => return Ok(json),
                429 => {
                    let wait = json
                        .get("retry_after")
                        .and_then(|v| v.as_f64())
                        .unwrap_or(1.0)
                        .clamp(0.0, self.policy.max_wait.as_secs_f64());
                    let global = json
                        .get("global")
                        .and_then(|v| v.as_bool())
                        .unwrap_or(false);
                    self.telemetry
                        .chat_rate_limited
                        .get_or_create(&PlatformLabels {
                            platform: "discord".into(),
                        })
                        .inc();
                    tracing::info!(
                        retry_after = wait,
                        global,
                        "Discord rate limit; waiting before sending again"
                    );
                    let until = Instant::now() + Duration::from_secs_f64(wait);
                    let mut l = self.limits.lock().unwrap();
                    if global {
                        l.global = Some(until);
                    } else {
                        l.buckets.insert(bucket, until);
                    }
                }
                500..=599 => {
                    failures += 1;
                    if failures >= self.policy.attempts {
                        return Err(discord_error(status, &json));
                    }
                    tokio::time::sleep(self.backoff(failures)).await;
                }
                404 if call.uses_interaction_token()
                    && json.get("code").and_then(|c| c.as_i64()) == Some(10015)
                    && failures < 3 =>
                {
                    // The interaction's first answer may still be on its way
                    // to Discord; its webhook appears when it arrives.
                    failures += 1;
                    tokio::time::sleep(Duration::from_millis(200 * failures as u64)).await;
                }
                _ => return Err(discord_error(status, &json)),
            }
        }
    }

    fn backoff(&self, failures: u32) -> Duration {
        let base = self.policy.backoff * 2u32.saturating_pow(failures.saturating_sub(1));
        let jitter = rand::random::<f64>() * 0.25 + 0.875;
        base.mul_f64(jitter).min(Duration::from_secs(30))
    }

    async fn wait_turn(&self, bucket: &RatelimitingBucket) {
        loop {
            let until = {
                let l = self.limits.lock().unwrap();
                [l.global, l.buckets.get(bucket).copied()]
                    .into_iter()
                    .flatten()
                    .max()
            };
            match until {
                Some(t) if t > Instant::now() => tokio::time::sleep_until(t.into()).await,
                _ => return,
            }
        }
    }

    fn note_headers(&self, bucket: &RatelimitingBucket, h: &reqwest::header::HeaderMap) {
        let get = |k: &str| h.get(k).and_then(|v| v.to_str().ok());
        let remaining = get("x-ratelimit-remaining").and_then(|v| v.parse::<u64>().ok());
        let reset_after = get("x-ratelimit-reset-after").and_then(|v| v.parse::<f64>().ok());
        if let (Some(0), Some(after)) = (remaining, reset_after) {
            let until = Instant::now() + Duration::from_secs_f64(after.clamp(0.0, 60.0));
            self.limits.lock().unwrap().buckets.insert(*bucket, until);
        }
    }
}

/// A `multipart/form-data` body: `payload_json`, then `files[N]`.
fn multipart(payload: &serde_json::Value, files: &[(String, Vec<u8>)]) -> (String, Vec<u8>) {
    let boundary = format!("rollbot-{}", uuid::Uuid::new_v4().simple());
    let mut body = Vec::new();
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"payload_json\"\r\nContent-Type: application/json\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(&serde_json::to_vec(payload).expect("JSON values serialize"));
    for (i, (name, bytes)) in files.iter().enumerate() {
        let name = name.replace(['"', '\r', '\n'], "_");
        body.extend_from_slice(
            format!(
                "\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"files[{i}]\"; filename=\"{name}\"\r\nContent-Type: image/png\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
    }
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

fn discord_error(status: u16, json: &serde_json::Value) -> RestError {
    RestError::Discord {
        status,
        code: json.get("code").and_then(|c| c.as_i64()).unwrap_or(0),
        message: json
            .get("message")
            .and_then(|m| m.as_str())
            .unwrap_or("no message")
            .to_string(),
    }
}

/// A call for the logs, without interaction tokens.
fn redact(call: &Call) -> String {
    match call {
        Call::InteractionCallback { interaction, .. } => {
            format!("InteractionCallback {{ interaction: {interaction} }}")
        }
        Call::Followup { .. } => "Followup".into(),
        Call::EditOriginal { .. } => "EditOriginal".into(),
        Call::DeleteOriginal { .. } => "DeleteOriginal".into(),
        other => format!("{other:?}"),
    }
}
