//! Outbound: the `ChatSink` for Slack. Posts with `chat.postMessage`,
//! replies in threads with `thread_ts`, updates in place with `chat.update`,
//! sends `chat.postEphemeral` to one person, and shares files (the canary
//! chart) in a message's thread with `files.getUploadURLExternal` and
//! `files.completeUploadExternal`.

use super::api::SlackApi;
use super::blocks;
use crate::chat::{Attachment, ChatError, ChatSink, Message, MessageRef};
use crate::domain::{Actor, Platform};
use async_trait::async_trait;
use slack_morphism::prelude::*;
use std::sync::Arc;

pub struct SlackSink {
    api: Arc<SlackApi>,
}

impl SlackSink {
    pub fn new(api: Arc<SlackApi>) -> SlackSink {
        SlackSink { api }
    }
}

#[async_trait]
impl ChatSink for SlackSink {
    fn platform(&self) -> Platform {
        Platform::Slack
    }

    async fn post(&self, channel: &str, msg: &Message) -> Result<MessageRef, ChatError> {
        let req =
            SlackApiChatPostMessageRequest::new(channel.to_string().into(), blocks::content(msg));
        let ts = self.api.post_message(req).await?;
        Ok(MessageRef::posted(Platform::Slack, channel, ts.to_string()))
    }

    async fn reply(&self, thread: &MessageRef, msg: &Message) -> Result<MessageRef, ChatError> {
        let root = thread.thread_root();
        let req = SlackApiChatPostMessageRequest::new(
            thread.channel.clone().into(),
            blocks::content(msg),
        )
        .with_thread_ts(root.clone().into());
        let ts = self.api.post_message(req).await?;
        Ok(thread.replied(Platform::Slack, ts.to_string(), root))
    }

    async fn update(&self, at: &MessageRef, msg: &Message) -> Result<(), ChatError> {
        let req = SlackApiChatUpdateRequest::new(
            at.channel.clone().into(),
            blocks::content(msg),
            at.id.clone().into(),
        );
        self.api.update_message(req).await
    }

    /// Shares the file in the message's thread.
    async fn upload(&self, at: &MessageRef, file: &Attachment) -> Result<(), ChatError> {
        let root = at.thread_root();
        self.api
            .upload_file(&at.channel, Some(root), file.clone())
            .await
    }

    async fn ephemeral(&self, channel: &str, user: &Actor, msg: &Message) -> Result<(), ChatError> {
        let req = SlackApiChatPostEphemeralRequest::new(
            channel.to_string().into(),
            user.id.clone().into(),
            blocks::content(msg),
        );
        self.api.post_ephemeral(req).await
    }
}
