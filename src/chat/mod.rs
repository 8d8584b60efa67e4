//! The neutral message model and the outbound chat trait.
//!
//! The engine and the controller speak only in [`Message`]s; each platform
//! adapter (one file each) renders them: Block Kit for Slack, embeds for
//! Discord, text for the console.

pub mod confirm;
pub mod console;
pub mod discord;
pub mod log;
mod notifier;
pub(crate) mod recent;
pub(crate) mod replay;
pub mod slack;

pub use notifier::Notifier;

use crate::domain::{Actor, Platform};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Success,
    Warning,
    Critical,
}

impl Severity {
    pub fn icon(self) -> &'static str {
        match self {
            Severity::Info => "ℹ️",
            Severity::Success => "✅",
            Severity::Warning => "⚠️",
            Severity::Critical => "🚨",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ButtonStyle {
    Primary,
    Danger,
    Default,
}

/// A button; `action_id` names a prompt and a choice stored server-side
/// (`prompt:ID:approve`), so a forged or stale click cannot act.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Button {
    pub label: String,
    pub action_id: String,
    pub style: ButtonStyle,
    /// Asked before a destructive choice acts (see `confirm.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirm: Option<confirm::Confirm>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Field {
    pub name: String,
    pub value: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub title: String,
    pub severity: Severity,
    pub text: String,
    pub fields: Vec<Field>,
    pub buttons: Vec<Button>,
    /// The context line: rollout, correlation id.
    pub context: Vec<String>,
    /// People and groups to notify, as platform-qualified ids
    /// (`slack-group:S…`, `slack:U…`, `discord-role:…`, `discord:…`); each
    /// platform's renderer turns its own into mentions, others show as text.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mentions: Vec<String>,
}

impl Message {
    pub fn new(severity: Severity, title: impl Into<String>) -> Message {
        Message {
            title: title.into(),
            severity,
            text: String::new(),
            fields: Vec::new(),
            buttons: Vec::new(),
            context: Vec::new(),
            mentions: Vec::new(),
        }
    }

    pub fn mention(mut self, who: impl Into<String>) -> Self {
        self.mentions.push(who.into());
        self
    }

    pub fn text(mut self, text: impl Into<String>) -> Self {
        self.text = text.into();
        self
    }

    /// Adds a paragraph after the text already there, so a warning never
    /// hides what the message said before it.
    pub fn append_text(mut self, more: impl Into<String>) -> Self {
        let more = more.into();
        if !self.text.is_empty() && !more.is_empty() {
            self.text.push('\n');
        }
        self.text.push_str(&more);
        self
    }

    pub fn field(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.fields.push(Field {
            name: name.into(),
            value: value.into(),
        });
        self
    }

    pub fn button(
        mut self,
        label: impl Into<String>,
        action_id: impl Into<String>,
        style: ButtonStyle,
    ) -> Self {
        self.buttons.push(Button {
            label: label.into(),
            action_id: action_id.into(),
            style,
            confirm: None,
        });
        self
    }

    pub fn context(mut self, line: impl Into<String>) -> Self {
        self.context.push(line.into());
        self
    }

    /// Title, text and fields as plain text, for logs and tests.
    pub fn plain(&self) -> String {
        let mut s = self.title.clone();
        if !self.text.is_empty() {
            s.push('\n');
            s.push_str(&self.text);
        }
        for f in &self.fields {
            s.push_str(&format!("\n{}: {}", f.name, f.value));
        }
        if !self.mentions.is_empty() {
            s.push_str(&format!("\nMentions: {}", self.mentions.join(", ")));
        }
        s
    }
}

/// A message already posted, so it can be updated or replied to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRef {
    pub platform: Platform,
    /// The platform's channel ID.
    pub channel: String,
    /// The platform's message ID (Slack `ts`, Discord snowflake).
    pub id: String,
    /// The thread the message lives in, if any.
    pub thread: Option<String>,
}

impl MessageRef {
    /// A message just posted at the top of `channel`.
    pub fn posted(platform: Platform, channel: &str, id: String) -> MessageRef {
        MessageRef {
            platform,
            channel: channel.to_string(),
            id,
            thread: None,
        }
    }

    /// Where a reply to this message goes: the thread it is in, else the
    /// thread it starts (a Slack thread is named by its root's `ts`).
    pub fn thread_root(&self) -> String {
        self.thread.clone().unwrap_or_else(|| self.id.clone())
    }

    /// A reply `id` just posted in `thread` of this message's channel.
    pub fn replied(&self, platform: Platform, id: String, thread: String) -> MessageRef {
        MessageRef {
            platform,
            channel: self.channel.clone(),
            id,
            thread: Some(thread),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// Bad configuration: wrong token, unknown channel, bot not invited.
    #[error("chat configuration: {0}")]
    Config(String),
    #[error("chat platform: {0}")]
    Platform(String),
    /// Too much is waiting to be sent already; this message was dropped
    /// to keep memory bounded.
    #[error("chat overloaded: {0}")]
    Overloaded(String),
}

/// A picture that goes with a message (the canary chart).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    /// File name, `canary-ROLLOUT.png`.
    pub name: String,
    /// What the picture shows, for people who cannot see it.
    pub alt: String,
    pub png: Vec<u8>,
}

/// What a chat adapter can do outbound.
#[async_trait]
pub trait ChatSink: Send + Sync {
    fn platform(&self) -> Platform;
    async fn post(&self, channel: &str, msg: &Message) -> Result<MessageRef, ChatError>;
    async fn reply(&self, thread: &MessageRef, msg: &Message) -> Result<MessageRef, ChatError>;
    async fn update(&self, at: &MessageRef, msg: &Message) -> Result<(), ChatError>;
    /// Visible only to `user`.
    async fn ephemeral(&self, channel: &str, user: &Actor, msg: &Message) -> Result<(), ChatError>;
    /// Attaches `file` to the posted message `at` (Discord: to the message
    /// itself, replacing an earlier one; Slack: in its thread). Platforms
    /// that cannot show files do nothing.
    async fn upload(&self, at: &MessageRef, file: &Attachment) -> Result<(), ChatError> {
        let _ = (at, file);
        Ok(())
    }
}
