//! The Slack Web API as rollbot uses it: slack-morphism's client, with
//! rollbot's own delivery rules on top.
//!
//! - One queue per channel: messages to a channel leave one at a time, at
//!   least `channel_interval` apart (Slack allows about one per second per
//!   channel), so a burst is delayed, never dropped.
//! - `429` waits for `Retry-After` and tries again; a 5xx or a dropped
//!   connection is retried with exponential backoff.
//! - `invalid_auth`, `channel_not_found`, `not_in_channel` and their kin are
//!   configuration errors when they concern the token or a channel named in
//!   `[channels.*]`: reported at start-up and in `/readyz` until a later
//!   call to the same channel succeeds. The same errors from a conversation
//!   rollbot was not configured with (a DM, a channel someone typed a
//!   command in) are that one request's problem: the caller answers
//!   another way (`response_url`) and readiness does not change.
//! - A send runs in its own task, so a caller that stops waiting (a timeout
//!   in the notifier) does not cancel a message already queued.

use crate::chat::ChatError;
use crate::config_file::SlackConfig;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use slack_morphism::errors::{SlackClientError, SlackClientSystemError};
use slack_morphism::prelude::*;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long one Web API call may take before it is retried.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

pub type Connector = SlackClientHyperConnector<HttpsConnector<HttpConnector>>;
pub type Client = SlackClient<Connector>;

/// Web API errors that mean rollbot is set up wrongly, with what to do.
pub fn config_hint(code: &str) -> Option<&'static str> {
    Some(match code {
        "invalid_auth" | "not_authed" | "account_inactive" | "token_revoked" | "token_expired" => {
            "the bot token is wrong or revoked; copy the Bot User OAuth Token (xoxb-…) from the app's OAuth & Permissions page into [chat.slack] bot_token"
        }
        "not_allowed_token_type" => {
            "a token of the wrong kind: bot_token must be the xoxb- bot token, app_token the xapp- app-level token"
        }
        "channel_not_found" => {
            "no channel with this ID is visible to the bot; use the channel ID (C…, from the channel's details), not its name, in [channels.*] slack, and for a private channel invite the bot first (/invite @rollbot)"
        }
        "not_in_channel" => "the bot is not a member of this channel; invite it with /invite @rollbot",
        "is_archived" => "the channel is archived; unarchive it or name another channel",
        "missing_scope" => {
            "the app lacks a scope; reinstall it from commands/slack-manifest.yaml (chat:write, commands, usergroups:read, channels:read, groups:read, app_mentions:read)"
        }
        _ => return None,
    })
}

/// A failed call, sorted by what to do about it.
enum Failure {
    Retry(Duration),
    Give(ChatError),
}

/// Private replies sent at once.
const EPHEMERAL_LANES: usize = 4;
/// Private replies that may wait; more are dropped.
pub const EPHEMERAL_PENDING: usize = 1_000;

/// Counts a waiting reply until it is sent or dropped.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

pub struct SlackApi {
    pub client: Arc<Client>,
    bot: SlackApiToken,
    app: Option<SlackApiToken>,
    http: reqwest::Client,
    interval: Duration,
    retries: u32,
    queues: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Instant>>>>>,
    /// Private replies being sent (a few at a time) and waiting.
    ephemeral_lane: tokio::sync::Semaphore,
    ephemeral_waiting: AtomicUsize,
    ephemeral_dropped: AtomicUsize,
    /// Configuration problems by subject ("auth", "channel C…").
    problems: Mutex<BTreeMap<String, String>>,
    /// The channel IDs named in `[channels.*]`: only their failures are
    /// configuration problems.
    configured: Mutex<HashSet<String>>,
    /// The bot's own user ID, from `auth.test`.
    bot_user: Mutex<Option<String>>,
}

impl SlackApi {
    /// Resolves the tokens and builds the client; errors name the key.
    pub fn from_config(c: &SlackConfig) -> anyhow::Result<SlackApi> {
        let resolve =
            |src: Result<Option<crate::config::SecretSource>, String>, key: &str| match src
                .map_err(anyhow::Error::msg)?
            {
                Some(s) => s
                    .resolve()
                    .map(Some)
                    .map_err(|e| anyhow::anyhow!("[chat.slack] {key}: {e}")),
                None => Ok(None),
            };
        let bot = resolve(c.bot_token_source(), "bot_token")?
            .ok_or_else(|| anyhow::anyhow!("[chat.slack] needs bot_token"))?;
        let app = resolve(c.app_token_source(), "app_token")?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| anyhow::anyhow!("cannot load the system's TLS roots: {e}"))?
            .https_or_http()
            .enable_http1()
            .build();
        // slack-morphism joins the base and the method with a '/'.
        let url = c.api_url.trim_end_matches('/').to_string();
        let client = SlackClient::new(
            SlackClientHyperConnector::with_connector(connector).with_slack_api_url(&url),
        );
        Ok(SlackApi {
            client: Arc::new(client),
            bot: SlackApiToken::new(bot.expose().to_string().into()),
            app: app.map(|a| SlackApiToken::new(a.expose().to_string().into())),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
            interval: c.channel_interval.0,
            retries: c.retries,
            queues: Mutex::new(HashMap::new()),
            ephemeral_lane: tokio::sync::Semaphore::new(EPHEMERAL_LANES),
            ephemeral_waiting: AtomicUsize::new(0),
            ephemeral_dropped: AtomicUsize::new(0),
            problems: Mutex::new(BTreeMap::new()),
            configured: Mutex::new(HashSet::new()),
            bot_user: Mutex::new(None),
        })
    }

    pub fn bot_user(&self) -> Option<String> {
        self.bot_user.lock().unwrap().clone()
    }

    /// Configuration problems seen so far, for `/readyz`.
    pub fn problems(&self) -> Vec<String> {
        self.problems
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| format!("slack {k}: {v}"))
            .collect()
    }

    /// Whether a failure about `subject` says something about rollbot's
    /// own setup: the token, the app token, or a configured channel. A
    /// conversation nobody configured (a DM, a channel a command was typed
    /// in) is not rollbot's setup.
    fn is_setup(&self, subject: &str) -> bool {
        match subject.strip_prefix("channel ") {
            Some(id) => self.configured.lock().unwrap().contains(id),
            None => true,
        }
    }

    fn set_problem(&self, subject: &str, text: String) {
        if !self.is_setup(subject) {
            return;
        }
        self.problems
            .lock()
            .unwrap()
            .insert(subject.to_string(), text);
    }

    fn clear_problem(&self, subject: &str) {
        self.problems.lock().unwrap().remove(subject);
    }

    fn classify(&self, e: SlackClientError, subject: &str, attempt: u32) -> Failure {
        let backoff = Duration::from_millis(500 * 2u64.pow(attempt.min(6)));
        match e {
            SlackClientError::RateLimitError(r) => {
                Failure::Retry(r.retry_after.unwrap_or(Duration::from_secs(1)))
            }
            SlackClientError::HttpError(h) if h.status_code.is_server_error() => {
                Failure::Retry(backoff)
            }
            SlackClientError::HttpProtocolError(_) | SlackClientError::SystemError(_) => {
                Failure::Retry(backoff)
            }
            SlackClientError::ApiError(a) => {
                let code = a.code.clone();
                match config_hint(&code) {
                    Some(hint) => {
                        let subject = match code.as_str() {
                            "invalid_auth"
                            | "not_authed"
                            | "account_inactive"
                            | "token_revoked"
                            | "token_expired"
                            | "not_allowed_token_type" => "auth",
                            _ => subject,
                        };
                        let text = format!("{code}: {hint}");
                        if !self.is_setup(subject) {
                            // One request's conversation, not rollbot's setup.
                            return Failure::Give(ChatError::Platform(format!(
                                "{subject}: {code}"
                            )));
                        }
                        self.set_problem(subject, text.clone());
                        Failure::Give(ChatError::Config(format!("{subject}: {text}")))
                    }
                    None => Failure::Give(ChatError::Platform(code)),
                }
            }
            other => Failure::Give(ChatError::Platform(other.to_string())),
        }
    }

    /// Calls `f` until it succeeds, retrying 429s after `Retry-After` and
    /// 5xx with backoff.
    async fn retrying<T, Fut>(
        &self,
        subject: &str,
        mut f: impl FnMut() -> Fut,
    ) -> Result<T, ChatError>
    where
        Fut: Future<Output = ClientResult<T>>,
    {
        let mut failures = 0u32;
        let mut limited = 0u32;
        loop {
            // A call that hangs counts as a dropped connection.
            let result = match tokio::time::timeout(CALL_TIMEOUT, f()).await {
                Ok(r) => r,
                Err(_) => Err(SlackClientError::SystemError(
                    SlackClientSystemError::new().with_message("no answer within 15 s".into()),
                )),
            };
            match result {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let rate_limited = matches!(e, SlackClientError::RateLimitError(_));
                    match self.classify(e, subject, failures) {
                        Failure::Give(err) => return Err(err),
                        Failure::Retry(wait) => {
                            if rate_limited {
                                limited += 1;
                                // Slack keeps asking to wait; keep waiting, within reason.
                                if limited > 20 {
                                    return Err(ChatError::Platform(
                                        "rate limited 20 times in a row".into(),
                                    ));
                                }
                            } else {
                                failures += 1;
                                if failures > self.retries {
                                    return Err(ChatError::Platform(format!(
                                        "Slack failed {failures} times in a row"
                                    )));
                                }
                            }
                            tracing::info!(
                                subject,
                                wait_ms = wait.as_millis() as u64,
                                rate_limited,
                                "slack call retried"
                            );
                            tokio::time::sleep(wait).await;
                        }
                    }
                }
            }
        }
    }

    fn queue(&self, channel: &str) -> Arc<tokio::sync::Mutex<Option<Instant>>> {
        self.queues
            .lock()
            .unwrap()
            .entry(channel.to_string())
            .or_default()
            .clone()
    }

    /// Runs a send to `channel` in its turn, in a task of its own.
    async fn in_channel<T: Send + 'static, Fut>(
        self: &Arc<Self>,
        channel: &str,
        f: impl FnOnce(Arc<SlackApi>) -> Fut + Send + 'static,
    ) -> Result<T, ChatError>
    where
        Fut: Future<Output = Result<T, ChatError>> + Send + 'static,
    {
        let me = self.clone();
        let channel = channel.to_string();
        let task = tokio::spawn(async move {
            let q = me.queue(&channel);
            let mut last = q.lock().await;
            if let Some(t) = *last {
                tokio::time::sleep_until((t + me.interval).into()).await;
            }
            let subject = format!("channel {channel}");
            let r = f(me.clone()).await;
            if r.is_ok() {
                me.clear_problem(&subject);
            }
            *last = Some(Instant::now());
            r
        });
        task.await
            .map_err(|e| ChatError::Platform(format!("send task failed: {e}")))?
    }

    pub async fn post_message(
        self: &Arc<Self>,
        req: SlackApiChatPostMessageRequest,
    ) -> Result<SlackTs, ChatError> {
        let channel = req.channel.to_string();
        self.in_channel(&channel.clone(), move |api| async move {
            let subject = format!("channel {channel}");
            let r = api
                .retrying(&subject, || {
                    let (api, req) = (&api, &req);
                    async move {
                        api.client
                            .open_session(&api.bot)
                            .chat_post_message(req)
                            .await
                    }
                })
                .await?;
            Ok(r.ts)
        })
        .await
    }

    pub async fn update_message(
        self: &Arc<Self>,
        req: SlackApiChatUpdateRequest,
    ) -> Result<(), ChatError> {
        let channel = req.channel.to_string();
        self.in_channel(&channel.clone(), move |api| async move {
            let subject = format!("channel {channel}");
            api.retrying(&subject, || {
                let (api, req) = (&api, &req);
                async move { api.client.open_session(&api.bot).chat_update(req).await }
            })
            .await
            .map(|_| ())
        })
        .await
    }

    /// A private reply. It is not a channel message, so it does not wait in
    /// the channel's queue behind announcements (a flood of `/status` must
    /// not delay a rollback's announcement); a few are sent at a time, and
    /// at most [`EPHEMERAL_PENDING`] wait: beyond that a reply is dropped
    /// (its asker already has the immediate acknowledgement) so memory
    /// stays bounded.
    pub async fn post_ephemeral(
        self: &Arc<Self>,
        req: SlackApiChatPostEphemeralRequest,
    ) -> Result<(), ChatError> {
        let channel = req.channel.to_string();
        let waiting = self.ephemeral_waiting.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(&self.ephemeral_waiting);
        if waiting >= EPHEMERAL_PENDING {
            let dropped = self.ephemeral_dropped.fetch_add(1, Ordering::SeqCst) + 1;
            // One line per thousand, not one per reply: a flood must not
            // flood the log too.
            if dropped % 1000 == 1 {
                tracing::warn!(channel = %channel, waiting, dropped, "slack: too many private replies waiting; replies are being dropped");
            }
            return Err(ChatError::Overloaded(format!(
                "{waiting} private replies are already waiting to be sent; this one was dropped"
            )));
        }
        let Ok(_turn) = self.ephemeral_lane.acquire().await else {
            return Err(ChatError::Platform("the reply lane is closed".into()));
        };
        let subject = format!("channel {channel}");
        let r = self
            .retrying(&subject, || {
                let req = &req;
                async move {
                    self.client
                        .open_session(&self.bot)
                        .chat_post_ephemeral(req)
                        .await
                }
            })
            .await
            .map(|_| ());
        if r.is_ok() {
            self.clear_problem(&subject);
        }
        r
    }

    /// Shares a file in `channel` (in the thread `thread_ts` when given)
    /// the current way: `files.getUploadURLExternal`, the bytes to the URL
    /// it answers, then `files.completeUploadExternal`.
    pub async fn upload_file(
        self: &Arc<Self>,
        channel: &str,
        thread_ts: Option<String>,
        file: crate::chat::Attachment,
    ) -> Result<(), ChatError> {
        let ch = channel.to_string();
        self.in_channel(channel, move |api| async move {
            let subject = format!("channel {ch}");
            let get =
                SlackApiFilesGetUploadUrlExternalRequest::new(file.name.clone(), file.png.len())
                    .with_alt_txt(file.alt.clone());
            let url = api
                .retrying(&subject, || {
                    let (api, get) = (&api, &get);
                    async move {
                        api.client
                            .open_session(&api.bot)
                            .get_upload_url_external(get)
                            .await
                    }
                })
                .await?;
            let put = SlackApiFilesUploadViaUrlRequest::new(
                url.upload_url.clone(),
                file.png.clone(),
                "image/png".into(),
            );
            api.retrying(&subject, || {
                let (api, put) = (&api, &put);
                async move {
                    api.client
                        .open_session(&api.bot)
                        .files_upload_via_url(put)
                        .await
                }
            })
            .await?;
            let mut done =
                SlackApiFilesCompleteUploadExternalRequest::new(vec![SlackApiFilesComplete::new(
                    url.file_id.clone(),
                )
                .with_title(file.name.clone())])
                .with_channel_id(ch.clone().into());
            if let Some(t) = thread_ts {
                done = done.with_thread_ts(t.into());
            }
            api.retrying(&subject, || {
                let (api, done) = (&api, &done);
                async move {
                    api.client
                        .open_session(&api.bot)
                        .files_complete_upload_external(done)
                        .await
                }
            })
            .await
            .map(|_| ())
        })
        .await
    }

    /// `views.open` with a slash command's `trigger_id`. Sent once, never
    /// retried: the trigger is valid once and for 3 s, so a second try
    /// could only get `exchanged_trigger_id` or `expired_trigger_id`. The
    /// error is Slack's code, for the person's answer.
    pub async fn open_view(&self, trigger: &str, view: SlackView) -> Result<(), ChatError> {
        let req = SlackApiViewsOpenRequest::new(trigger.to_string().into(), view);
        let session = self.client.open_session(&self.bot);
        match tokio::time::timeout(Duration::from_secs(3), session.views_open(&req)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(SlackClientError::ApiError(a))) => Err(ChatError::Platform(a.code)),
            Ok(Err(e)) => Err(ChatError::Platform(e.to_string())),
            Err(_) => Err(ChatError::Platform(
                "Slack did not answer views.open within 3 s".into(),
            )),
        }
    }

    /// Members of a user group (`usergroups.users.list`).
    pub async fn usergroup_members(&self, group: &str) -> Result<Vec<String>, ChatError> {
        let req = SlackApiUserGroupsUsersListRequest::new(group.to_string().into());
        let r = self
            .retrying(&format!("usergroup {group}"), || {
                let req = &req;
                async move {
                    self.client
                        .open_session(&self.bot)
                        .usergroups_users_list(req)
                        .await
                }
            })
            .await?;
        Ok(r.users.into_iter().map(|u| u.to_string()).collect())
    }

    /// `apps.connections.open` with the app-level token: a Socket Mode URL.
    pub async fn open_socket(&self) -> Result<String, ChatError> {
        let Some(app) = &self.app else {
            return Err(ChatError::Config(
                "Socket Mode needs [chat.slack] app_token (an xapp- token with connections:write)"
                    .into(),
            ));
        };
        let req = SlackApiAppsConnectionOpenRequest::new();
        let r = self
            .retrying("app token", || {
                let req = &req;
                async move {
                    self.client
                        .open_session(app)
                        .apps_connections_open(req)
                        .await
                }
            })
            .await?;
        self.clear_problem("app token");
        Ok(r.url.0.to_string())
    }

    /// Answers through a `response_url` (slash commands, buttons).
    pub async fn respond(&self, url: &str, body: &serde_json::Value) -> Result<(), ChatError> {
        let mut attempt = 0u32;
        loop {
            let r = self.http.post(url).json(body).send().await;
            let retry = match &r {
                Ok(resp) if resp.status().is_success() => return Ok(()),
                Ok(resp) if resp.status().as_u16() == 429 => resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .map(Duration::from_secs)
                    .unwrap_or(Duration::from_secs(1)),
                Ok(resp) if resp.status().is_server_error() => {
                    Duration::from_millis(500 * 2u64.pow(attempt))
                }
                Ok(resp) => {
                    return Err(ChatError::Platform(format!(
                        "response_url answered {}",
                        resp.status()
                    )))
                }
                Err(_) => Duration::from_millis(500 * 2u64.pow(attempt)),
            };
            attempt += 1;
            if attempt > self.retries {
                return Err(ChatError::Platform(format!(
                    "response_url failed {attempt} times"
                )));
            }
            tokio::time::sleep(retry).await;
        }
    }

    /// Start-up checks: the token (`auth.test`) and every configured
    /// channel (`conversations.info`: exists, the bot is a member). Returns
    /// the problems found; they stay in `/readyz` until fixed. `channels`
    /// (alias, ID) become the channels whose later failures count as
    /// configuration problems.
    pub async fn check(&self, channels: &[(String, String)]) -> Vec<String> {
        self.configured
            .lock()
            .unwrap()
            .extend(channels.iter().map(|(_, id)| id.clone()));
        let auth = tokio::time::timeout(
            CALL_TIMEOUT,
            self.client.open_session(&self.bot).auth_test(),
        )
        .await
        .unwrap_or_else(|_| {
            Err(SlackClientError::SystemError(
                SlackClientSystemError::new().with_message("no answer within 15 s".into()),
            ))
        });
        match auth {
            Ok(r) => {
                *self.bot_user.lock().unwrap() = Some(r.user_id.to_string());
                self.clear_problem("auth");
            }
            Err(e) => {
                if let Failure::Retry(_) = self.classify(e, "auth", 0) {
                    self.set_problem(
                        "auth",
                        "auth.test did not answer; is [chat.slack] api_url right?".into(),
                    );
                }
                return self.problems();
            }
        }
        for (alias, id) in channels {
            let subject = format!("channel {id}");
            let req = SlackApiConversationsInfoRequest::new(id.clone().into());
            let info = tokio::time::timeout(
                CALL_TIMEOUT,
                self.client.open_session(&self.bot).conversations_info(&req),
            )
            .await;
            let Ok(info) = info else {
                self.set_problem(
                    &subject,
                    format!("conversations.info did not answer ([channels.{alias}])"),
                );
                continue;
            };
            match info {
                Ok(r) => {
                    if r.channel.flags.is_member == Some(false) {
                        self.set_problem(
                            &subject,
                            format!(
                                "not_in_channel ([channels.{alias}]): {}",
                                config_hint("not_in_channel").unwrap_or_default()
                            ),
                        );
                    }
                }
                Err(SlackClientError::ApiError(a)) => {
                    let hint = config_hint(&a.code).unwrap_or("see Slack's error reference");
                    self.set_problem(&subject, format!("{} ([channels.{alias}]): {hint}", a.code));
                }
                Err(e) => {
                    self.set_problem(
                        &subject,
                        format!("could not check ([channels.{alias}]): {e}"),
                    );
                }
            }
        }
        self.problems()
    }
}
