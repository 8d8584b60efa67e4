//! Writes every outbound message to rollbot's log (target `rollbot::chat`),
//! so what rollbot said is on record even where no chat platform is
//! configured, and so a log pipeline sees the same words people saw.

use super::*;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub struct LogSink {
    next: AtomicU64,
}

impl LogSink {
    fn id(&self) -> String {
        (self.next.fetch_add(1, Ordering::Relaxed) + 1).to_string()
    }
}

#[async_trait]
impl ChatSink for LogSink {
    /// Uses the console's channel labels.
    fn platform(&self) -> Platform {
        Platform::Console
    }

    async fn post(&self, channel: &str, msg: &Message) -> Result<MessageRef, ChatError> {
        let id = self.id();
        tracing::info!(target: "rollbot::chat", channel, message = id.as_str(), severity = ?msg.severity, title = %msg.title, text = %msg.text, "post");
        Ok(MessageRef::posted(Platform::Console, channel, id))
    }

    async fn reply(&self, thread: &MessageRef, msg: &Message) -> Result<MessageRef, ChatError> {
        let id = self.id();
        tracing::info!(target: "rollbot::chat", channel = %thread.channel, thread = %thread.id, message = id.as_str(), severity = ?msg.severity, title = %msg.title, text = %msg.text, "reply");
        Ok(thread.replied(Platform::Console, id, thread.id.clone()))
    }

    async fn update(&self, at: &MessageRef, msg: &Message) -> Result<(), ChatError> {
        tracing::info!(target: "rollbot::chat", channel = %at.channel, message = %at.id, severity = ?msg.severity, title = %msg.title, text = %msg.text, "update");
        Ok(())
    }

    async fn upload(&self, at: &MessageRef, file: &Attachment) -> Result<(), ChatError> {
        tracing::info!(target: "rollbot::chat", channel = %at.channel, message = %at.id, file = %file.name, bytes = file.png.len(), "upload");
        Ok(())
    }

    async fn ephemeral(&self, channel: &str, user: &Actor, msg: &Message) -> Result<(), ChatError> {
        tracing::info!(target: "rollbot::chat", channel, user = %user.qualified_id(), title = %msg.title, "ephemeral");
        Ok(())
    }
}
