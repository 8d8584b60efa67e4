//! The Slack adapter: signed slash commands, buttons and mentions in
//! (HTTP or Socket Mode), Block Kit messages out.
//!
//! - `api.rs`: the Web API client with per-channel queues, 429/5xx handling
//!   and configuration errors for `/readyz`.
//! - `blocks.rs`: the neutral message model as Block Kit.
//! - `sink.rs`: the `ChatSink` (post, reply in thread, update, ephemeral).
//! - `identity.rs`: user ID and user groups → `Actor`.
//! - `inbound.rs`: commands, button presses, mentions (shared by both modes).
//! - `http.rs`: the three signed endpoints. `socket.rs`: Socket Mode.
//! - `manifest.rs`: the app manifest in `commands/slack-manifest.yaml`.

pub(crate) mod api;
pub(crate) mod blocks;
pub(crate) mod http;
pub(crate) mod identity;
pub(crate) mod inbound;
pub mod manifest;
pub(crate) mod modal;
pub(crate) mod sink;
pub(crate) mod socket;

use crate::chat::ChatSink;
use crate::config_file::{Config, SlackMode};
use crate::engine::Engine;
use crate::server::Adapters;
use std::sync::Arc;

/// The Slack adapter before the engine exists: its client and sink.
pub struct Slack {
    pub api: Arc<api::SlackApi>,
}

impl Slack {
    /// Reads `[chat.slack]` (resolving its secrets); `None` when absent.
    pub fn from_config(config: &Config) -> anyhow::Result<Option<Slack>> {
        let Some(c) = &config.chat.slack else {
            return Ok(None);
        };
        Ok(Some(Slack {
            api: Arc::new(api::SlackApi::from_config(c)?),
        }))
    }

    pub fn sink(&self) -> Arc<dyn ChatSink> {
        Arc::new(sink::SlackSink::new(self.api.clone()))
    }

    /// Checks the token and the channels, then mounts the HTTP endpoints
    /// and, in Socket Mode, opens the socket. Problems found are printed and
    /// kept in `/readyz`; rollbot still starts, so the rest keeps working.
    pub async fn start(self, engine: Arc<Engine>, adapters: &mut Adapters) -> anyhow::Result<()> {
        let config = engine.config.clone();
        let c = config
            .chat
            .slack
            .as_ref()
            .expect("started only with [chat.slack]");
        let mut channels: Vec<(String, String)> = config
            .channels
            .iter()
            .filter_map(|(alias, ch)| ch.slack.clone().map(|id| (alias.clone(), id)))
            .collect();
        channels.sort();
        for problem in self.api.check(&channels).await {
            eprintln!("warning: {problem}");
        }
        let secret = c
            .signing_secret_source()
            .map_err(anyhow::Error::msg)?
            .ok_or_else(|| anyhow::anyhow!("[chat.slack] needs signing_secret"))?
            .resolve()
            .map_err(|e| anyhow::anyhow!("[chat.slack] signing_secret: {e}"))?;
        let identities =
            identity::Identities::new(self.api.clone(), &config, c.usergroup_cache_ttl.0);
        let inbound = Arc::new(inbound::Inbound::new(
            engine.clone(),
            self.api.clone(),
            identities,
        ));
        let verifier = Arc::new(http::Verifier::new(
            secret.expose(),
            engine.telemetry.clone(),
        ));
        adapters
            .routes
            .push(http::routes(inbound.clone(), verifier));
        let api = self.api.clone();
        adapters.checks.push(Arc::new(move || api.problems()));
        if c.mode == SlackMode::Socket {
            let state = socket::SocketState::default();
            let s = state.clone();
            adapters.checks.push(Arc::new(move || s.problems()));
            tokio::spawn(socket::run(inbound, state));
        }
        Ok(())
    }
}
