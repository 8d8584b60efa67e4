//! Sends messages to a named channel on every platform where it exists,
//! inside the chat bulkhead, so a slow chat API never holds up an action.

use super::{Attachment, ChatSink, Message, MessageRef};
use crate::config_file::ChannelConfig;
use crate::domain::Platform;
use crate::telemetry::{PlatformLabels, Telemetry};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

#[derive(Clone)]
pub struct Notifier {
    sinks: Vec<Arc<dyn ChatSink>>,
    channels: Arc<BTreeMap<String, ChannelConfig>>,
    pool: Arc<Semaphore>,
    telemetry: Arc<Telemetry>,
    timeout: Duration,
    /// Detached posts still on their way, so callers can wait for quiet.
    detached: Arc<tokio::sync::watch::Sender<usize>>,
}

impl Notifier {
    pub fn new(
        channels: BTreeMap<String, ChannelConfig>,
        pool: usize,
        telemetry: Arc<Telemetry>,
    ) -> Notifier {
        Notifier {
            sinks: Vec::new(),
            channels: Arc::new(channels),
            pool: Arc::new(Semaphore::new(pool.max(1))),
            telemetry,
            timeout: Duration::from_secs(30),
            detached: Arc::new(tokio::sync::watch::channel(0).0),
        }
    }

    pub fn add_sink(&mut self, sink: Arc<dyn ChatSink>) {
        self.sinks.push(sink);
    }

    /// The platform channel ID of a named channel, if it exists there.
    pub fn channel_id(&self, alias: &str, platform: Platform) -> Option<String> {
        let c = self.channels.get(alias)?;
        match platform {
            Platform::Slack => c.slack.clone(),
            Platform::Discord => c.discord.clone(),
            Platform::Console => Some(c.console.clone().unwrap_or_else(|| format!("#{alias}"))),
            _ => None,
        }
    }

    fn failed(&self, platform: Platform, what: &str, e: impl std::fmt::Display) {
        tracing::warn!(platform = platform.prefix(), error = %e, "chat {what} failed");
        self.telemetry
            .chat_errors
            .get_or_create(&PlatformLabels {
                platform: platform.prefix().into(),
            })
            .inc();
    }

    /// Posts to the named channel everywhere it exists; returns what was posted.
    pub async fn post(&self, alias: &str, msg: &Message) -> Vec<MessageRef> {
        let mut refs = Vec::new();
        for sink in &self.sinks {
            let Some(channel) = self.channel_id(alias, sink.platform()) else {
                continue;
            };
            let _slot = self.pool.acquire().await.expect("chat pool open");
            match tokio::time::timeout(self.timeout, sink.post(&channel, msg)).await {
                Ok(Ok(r)) => refs.push(r),
                Ok(Err(e)) => self.failed(sink.platform(), "post", e),
                Err(_) => self.failed(sink.platform(), "post", "timed out"),
            }
        }
        refs
    }

    /// Replies in each thread, or posts to the channel where there is none.
    pub async fn reply_or_post(
        &self,
        threads: &[MessageRef],
        alias: &str,
        msg: &Message,
    ) -> Vec<MessageRef> {
        if threads.is_empty() {
            return self.post(alias, msg).await;
        }
        let mut refs = Vec::new();
        for t in threads {
            let Some(sink) = self.sinks.iter().find(|s| s.platform() == t.platform) else {
                continue;
            };
            let _slot = self.pool.acquire().await.expect("chat pool open");
            match tokio::time::timeout(self.timeout, sink.reply(t, msg)).await {
                Ok(Ok(r)) => refs.push(r),
                Ok(Err(e)) => self.failed(sink.platform(), "reply", e),
                Err(_) => self.failed(sink.platform(), "reply", "timed out"),
            }
        }
        refs
    }

    /// Updates messages in place (a summary, an answered prompt).
    pub async fn update(&self, refs: &[MessageRef], msg: &Message) {
        for r in refs {
            let Some(sink) = self.sinks.iter().find(|s| s.platform() == r.platform) else {
                continue;
            };
            let _slot = self.pool.acquire().await.expect("chat pool open");
            match tokio::time::timeout(self.timeout, sink.update(r, msg)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => self.failed(sink.platform(), "update", e),
                Err(_) => self.failed(sink.platform(), "update", "timed out"),
            }
        }
    }

    /// Attaches a file to posted messages (the summary's chart).
    pub async fn upload(&self, refs: &[MessageRef], file: &Attachment) {
        for r in refs {
            let Some(sink) = self.sinks.iter().find(|s| s.platform() == r.platform) else {
                continue;
            };
            let _slot = self.pool.acquire().await.expect("chat pool open");
            match tokio::time::timeout(self.timeout, sink.upload(r, file)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => self.failed(sink.platform(), "upload", e),
                Err(_) => self.failed(sink.platform(), "upload", "timed out"),
            }
        }
    }

    /// Fire and forget: the caller does not wait for chat.
    pub fn post_detached(&self, alias: String, msg: Message) {
        let me = self.clone();
        self.detached.send_modify(|n| *n += 1);
        tokio::spawn(async move {
            me.post(&alias, &msg).await;
            me.detached.send_modify(|n| *n -= 1);
        });
    }

    /// Fire and forget, in `threads` where given (see [`Notifier::reply_or_post`]).
    pub fn reply_or_post_detached(&self, threads: Vec<MessageRef>, alias: String, msg: Message) {
        if threads.is_empty() {
            return self.post_detached(alias, msg);
        }
        let me = self.clone();
        self.detached.send_modify(|n| *n += 1);
        tokio::spawn(async move {
            me.reply_or_post(&threads, &alias, &msg).await;
            me.detached.send_modify(|n| *n -= 1);
        });
    }

    /// Waits until every detached post has been sent (or given up).
    pub async fn settle(&self) {
        let mut rx = self.detached.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }
}
