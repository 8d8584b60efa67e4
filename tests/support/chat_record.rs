//! A chat sink that remembers each message with the channel it went to,
//! for tests that check where rollbot said something (the incident
//! channel, a prompt's thread).

use rollbot::chat::{ChatError, ChatSink, Message, MessageRef};
use rollbot::domain::{Actor, Platform};
use std::sync::Mutex;

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
