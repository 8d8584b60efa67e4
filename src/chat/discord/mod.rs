//! The Discord adapter.
//!
//! - `interactions.rs`: inbound, `POST /discord/interactions` (commands,
//!   buttons, autocomplete), signature-verified and answered by deferral.
//! - `render.rs`: the neutral message model as embeds and buttons.
//! - `modal.rs`: reason forms and destructive buttons' confirmations.
//! - `rest.rs`: Discord's REST API with per-channel queues and rate limits,
//!   shared by both directions.
//! - here: the `ChatSink` (messages posted and edited; replies go in a
//!   thread started from the message they answer, a rollout's summary), and
//!   [`Discord`], which starts the adapter the way Slack's does.

pub mod interactions;
pub(crate) mod modal;
pub(crate) mod render;
pub mod rest;

use super::*;
use crate::config_file::Config;
use crate::engine::Engine;
use crate::server::Adapters;
use crate::telemetry::Telemetry;
use rest::{Call, Rest, RestError};
use serde_json::json;
use serenity::builder::{CreateMessage, EditMessage};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The Discord adapter before the engine exists: its REST client (shared
/// by the sink and the interaction endpoint: same queues, same rate limits)
/// and the interactions' signature verifier.
pub struct Discord {
    rest: Arc<Rest>,
    interactions: interactions::Interactions,
}

impl Discord {
    /// Reads `[chat.discord]`: resolves the bot token and checks the public
    /// key, so a bad one stops rollbot before it opens its store; `None`
    /// when absent. The REST client counts its calls in `telemetry`.
    pub fn from_config(
        config: &Config,
        telemetry: Arc<Telemetry>,
    ) -> anyhow::Result<Option<Discord>> {
        let Some(c) = &config.chat.discord else {
            return Ok(None);
        };
        let rest = Rest::from_config(c, telemetry)?;
        let interactions = interactions::Interactions::new(c, rest.clone())?;
        Ok(Some(Discord { rest, interactions }))
    }

    pub fn sink(&self) -> Arc<dyn ChatSink> {
        Arc::new(DiscordSink::new(self.rest.clone()))
    }

    /// Mounts `POST /discord/interactions`. Unlike Slack, nothing is checked
    /// at start, so Discord adds no readiness check.
    pub fn start(self, engine: Arc<Engine>, adapters: &mut Adapters) {
        adapters
            .routes
            .push(interactions::routes(engine, Arc::new(self.interactions)));
    }
}

/// Discord's code for "a thread has already been created for this message".
const THREAD_EXISTS: i64 = 160004;

pub struct DiscordSink {
    rest: Arc<Rest>,
    /// Message → the thread started from it, so a reply needs one call.
    threads: Mutex<HashMap<String, String>>,
}

fn snowflake(s: &str, what: &str) -> Result<u64, ChatError> {
    s.parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| ChatError::Config(format!("Discord {what} `{s}` is not a Discord ID")))
}

/// Discord's answer as a chat error that says what to fix.
pub fn explain(e: RestError, channel: &str) -> ChatError {
    match &e {
        RestError::Discord { status: 401, .. } => ChatError::Config(format!(
            "{e}: Discord refused the bot token; check [chat.discord] bot_token"
        )),
        RestError::Discord { code: 50001, .. } => ChatError::Config(format!(
            "{e}: the bot cannot see channel {channel}; invite it to the server and give it View Channel there"
        )),
        RestError::Discord { code: 50013, .. } => ChatError::Config(format!(
            "{e}: the bot lacks a permission in channel {channel} (Send Messages, Send Messages in Threads, Create Public Threads, Embed Links)"
        )),
        RestError::Discord { code: 10003, .. } => ChatError::Config(format!(
            "{e}: channel {channel} does not exist; check the discord ID in [channels]"
        )),
        _ => ChatError::Platform(e.to_string()),
    }
}

fn id_of(v: &serde_json::Value) -> Result<String, ChatError> {
    v.get("id")
        .and_then(|i| i.as_str())
        .map(str::to_string)
        .ok_or_else(|| ChatError::Platform(format!("Discord answered without an id: {v}")))
}

/// The queue a channel's calls wait in.
pub fn channel_queue(channel: &str) -> String {
    format!("channel:{channel}")
}

impl DiscordSink {
    pub fn new(rest: Arc<Rest>) -> DiscordSink {
        DiscordSink {
            rest,
            threads: Mutex::new(HashMap::new()),
        }
    }

    pub fn rest(&self) -> &Arc<Rest> {
        &self.rest
    }

    async fn create(&self, channel: &str, msg: &Message) -> Result<String, ChatError> {
        let ch = snowflake(channel, "channel")?;
        let (content, allowed) = render::pings(msg);
        let mut body = CreateMessage::new()
            .embed(render::embed(msg))
            .components(render::components(&msg.buttons, false))
            .allowed_mentions(allowed);
        if !content.is_empty() {
            body = body.content(content);
        }
        let v = self
            .rest
            .call(
                &channel_queue(channel),
                Call::CreateMessage { channel: ch },
                Some(&serde_json::to_value(body).expect("builders serialize")),
            )
            .await
            .map_err(|e| explain(e, channel))?;
        id_of(&v)
    }

    /// The thread started from `root` in `channel`, starting it if needed.
    async fn thread_of(&self, channel: &str, root: &str, title: &str) -> Result<String, ChatError> {
        let key = format!("{channel}/{root}");
        if let Some(t) = self.threads.lock().unwrap().get(&key) {
            return Ok(t.clone());
        }
        let body = json!({
            "name": render::clip(title, 100),
            "auto_archive_duration": 1440,
        });
        let call = Call::StartThread {
            channel: snowflake(channel, "channel")?,
            message: snowflake(root, "message")?,
        };
        let thread = match self
            .rest
            .call(&channel_queue(channel), call, Some(&body))
            .await
        {
            Ok(v) => id_of(&v)?,
            // Started earlier (by another rollbot or before a restart): a
            // thread started from a message has the message's ID.
            Err(e) if e.code() == Some(THREAD_EXISTS) => root.to_string(),
            Err(e) => return Err(explain(e, channel)),
        };
        let mut threads = self.threads.lock().unwrap();
        // A cache, not a record (a thread started from a message has the
        // message's ID): bounded, so months of rollouts cannot grow it.
        if threads.len() >= MAX_THREADS {
            threads.clear();
        }
        threads.insert(key, thread.clone());
        Ok(thread)
    }
}

/// Threads remembered at most.
const MAX_THREADS: usize = 10_000;

#[async_trait]
impl ChatSink for DiscordSink {
    fn platform(&self) -> Platform {
        Platform::Discord
    }

    async fn post(&self, channel: &str, msg: &Message) -> Result<MessageRef, ChatError> {
        let id = self.create(channel, msg).await?;
        Ok(MessageRef::posted(Platform::Discord, channel, id))
    }

    async fn reply(&self, to: &MessageRef, msg: &Message) -> Result<MessageRef, ChatError> {
        let thread = match &to.thread {
            Some(t) => t.clone(),
            None => self.thread_of(&to.channel, &to.id, &msg.title).await?,
        };
        let id = self.create(&thread, msg).await?;
        Ok(MessageRef {
            platform: Platform::Discord,
            channel: thread.clone(),
            id,
            thread: Some(thread),
        })
    }

    async fn update(&self, at: &MessageRef, msg: &Message) -> Result<(), ChatError> {
        let body = EditMessage::new()
            .embed(render::embed(msg))
            .components(render::components(&msg.buttons, false))
            .allowed_mentions(render::no_mentions());
        self.rest
            .call(
                &channel_queue(&at.channel),
                Call::EditMessage {
                    channel: snowflake(&at.channel, "channel")?,
                    message: snowflake(&at.id, "message")?,
                },
                Some(&serde_json::to_value(body).expect("builders serialize")),
            )
            .await
            .map_err(|e| explain(e, &at.channel))?;
        Ok(())
    }

    /// Edits the message to carry the file as its only attachment (so a
    /// new chart replaces the old one); it shows under the embed.
    async fn upload(&self, at: &MessageRef, file: &Attachment) -> Result<(), ChatError> {
        let payload = json!({
            "attachments": [{"id": 0, "filename": file.name, "description": render::clip(&file.alt, 1024)}],
        });
        self.rest
            .call_with_files(
                &channel_queue(&at.channel),
                Call::EditMessage {
                    channel: snowflake(&at.channel, "channel")?,
                    message: snowflake(&at.id, "message")?,
                },
                &payload,
                &[(file.name.clone(), file.png.clone())],
            )
            .await
            .map_err(|e| explain(e, &at.channel))?;
        Ok(())
    }

    /// Discord shows a message to one person only in answer to that
    /// person's interaction; rollbot does that in the interaction handler.
    async fn ephemeral(
        &self,
        channel: &str,
        user: &Actor,
        _msg: &Message,
    ) -> Result<(), ChatError> {
        Err(ChatError::Platform(format!(
            "Discord cannot show {} a private message in {channel} outside an interaction",
            user.qualified_id()
        )))
    }
}
