//! A chat sink that remembers each message with the channel it went to,
//! for tests that check where rollbot said something (the incident
//! channel, a prompt's thread).

use rollbot::chat::{ChatError, ChatSink, Message, MessageRef};
use rollbot::domain::{Actor, Platform};
use std::sync::Mutex;
use std::time::Duration;

/// Every message posted, replied or updated: (channel, plain text).
#[derive(Default)]
pub struct ChatRecord(pub Mutex<Vec<(String, String)>>);

impl ChatRecord {
    /// The plain texts posted in `channel`.
    pub fn in_channel(&self, channel: &str) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(c, _)| c == channel)
            .map(|(_, t)| t.clone())
            .collect()
    }

    /// The channels that got a message containing `what`, waiting a
    /// little for detached posts.
    pub async fn channels_with(&self, what: &str) -> Vec<String> {
        for _ in 0..100 {
            let found: Vec<String> = self
                .0
                .lock()
                .unwrap()
                .iter()
                .filter(|(_, t)| t.contains(what))
                .map(|(c, _)| c.clone())
                .collect();
            if !found.is_empty() {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Vec::new()
    }

    /// The first message containing `what`, or nothing.
    pub fn text_with(&self, what: &str) -> String {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(_, t)| t.clone())
            .find(|t| t.contains(what))
            .unwrap_or_default()
    }
}

#[async_trait::async_trait]
impl ChatSink for ChatRecord {
    fn platform(&self) -> Platform {
        Platform::Console
    }
    async fn post(&self, channel: &str, msg: &Message) -> Result<MessageRef, ChatError> {
        let mut v = self.0.lock().unwrap();
        v.push((channel.to_string(), msg.plain()));
        Ok(MessageRef {
            platform: Platform::Console,
            channel: channel.into(),
            id: v.len().to_string(),
            thread: None,
        })
    }
    async fn reply(&self, t: &MessageRef, msg: &Message) -> Result<MessageRef, ChatError> {
        self.post(&t.channel, msg).await
    }
    async fn update(&self, at: &MessageRef, msg: &Message) -> Result<(), ChatError> {
        self.post(&at.channel, msg).await.map(|_| ())
    }
    async fn ephemeral(&self, channel: &str, _u: &Actor, msg: &Message) -> Result<(), ChatError> {
        self.post(channel, msg).await.map(|_| ())
    }
}
