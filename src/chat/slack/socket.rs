//! Socket Mode: the same handlers as HTTP, over a WebSocket that rollbot
//! opens (`apps.connections.open` with the app-level `xapp-` token), for
//! installations that cannot receive requests from the internet.
//!
//! Every envelope is acknowledged by its `envelope_id` at once (a slash
//! command's acknowledgement carries the ephemeral answer as its payload),
//! before the work runs. A `disconnect` envelope (Slack refreshes
//! connections) reconnects at once; a dropped socket or a failed
//! `apps.connections.open` reconnects with exponential backoff (0.5 s
//! doubling to 30 s, with jitter).

use super::inbound::Inbound;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use slack_morphism::prelude::*;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message as Frame;

/// Connection state for `/readyz`.
#[derive(Default)]
pub struct SocketStatus {
    connected: bool,
    last_error: Option<String>,
}

#[derive(Default, Clone)]
pub struct SocketState(Arc<Mutex<SocketStatus>>);

impl SocketState {
    pub fn problems(&self) -> Vec<String> {
        let s = self.0.lock().unwrap();
        if s.connected {
            return Vec::new();
        }
        vec![format!(
            "slack socket mode: not connected{}",
            s.last_error
                .as_ref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        )]
    }

    fn set(&self, connected: bool, error: Option<String>) {
        let mut s = self.0.lock().unwrap();
        s.connected = connected;
        if error.is_some() || connected {
            s.last_error = error;
        }
    }
}

enum Ended {
    /// Slack asked us to reconnect.
    Refresh,
}

/// Runs Socket Mode until the process stops.
pub async fn run(inbound: Arc<Inbound>, state: SocketState) {
    let initial = Duration::from_millis(500);
    let mut backoff = initial;
    loop {
        match connect_once(&inbound, &state).await {
            Ok(Ended::Refresh) => {
                state.set(false, Some("reconnecting after disconnect".into()));
                backoff = initial;
                continue;
            }
            Err((e, was_connected)) => {
                tracing::warn!(error = %e, "slack socket mode connection ended");
                state.set(false, Some(e));
                if was_connected {
                    backoff = initial;
                }
                let jitter = Duration::from_millis(rand::random::<u64>() % 250);
                tokio::time::sleep(backoff + jitter).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

async fn connect_once(
    inbound: &Arc<Inbound>,
    state: &SocketState,
) -> Result<Ended, (String, bool)> {
    let url = inbound
        .api
        .open_socket()
        .await
        .map_err(|e| (format!("apps.connections.open: {e}"), false))?;
    let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .map_err(|e| (format!("cannot open the socket: {e}"), false))?;
    let (mut tx, mut rx) = ws.split();
    let mut connected = false;
    while let Some(frame) = rx.next().await {
        let frame = frame.map_err(|e| (format!("socket: {e}"), connected))?;
        let text = match frame {
            Frame::Text(t) => t.to_string(),
            Frame::Ping(p) => {
                let _ = tx.send(Frame::Pong(p)).await;
                continue;
            }
            Frame::Close(_) => return Err(("socket closed by Slack".into(), connected)),
            _ => continue,
        };
        let Ok(envelope) = serde_json::from_str::<Value>(&text) else {
            tracing::warn!("slack socket mode: unreadable frame");
            continue;
        };
        let kind = envelope["type"].as_str().unwrap_or_default().to_string();
        if kind == "hello" {
            connected = true;
            state.set(true, None);
            continue;
        }
        if kind == "disconnect" {
            tracing::info!(reason = %envelope["reason"], "slack asked to reconnect");
            let _ = tx.send(Frame::Close(None)).await;
            return Ok(Ended::Refresh);
        }
        let Some(envelope_id) = envelope["envelope_id"].as_str().map(str::to_string) else {
            continue;
        };
        let payload = envelope["payload"].clone();
        // Acknowledge first; the work runs in its own task.
        let ack = match kind.as_str() {
            "slash_commands" => {
                match serde_json::from_value::<SlackCommandEvent>(payload.clone()) {
                    Ok(event) => {
                        let answer = inbound.command(event);
                        json!({"envelope_id": envelope_id, "payload": answer})
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "slack socket mode: unreadable slash command");
                        json!({"envelope_id": envelope_id})
                    }
                }
            }
            // A form's submission is answered in the acknowledgement.
            "interactive" => match serde_json::from_value::<SlackInteractionEvent>(payload.clone())
            {
                Ok(ev) => match inbound.interaction(ev) {
                    Some(answer) => json!({"envelope_id": envelope_id, "payload": answer}),
                    None => json!({"envelope_id": envelope_id}),
                },
                Err(e) => {
                    tracing::info!(error = %e, "slack: interaction not handled");
                    json!({"envelope_id": envelope_id})
                }
            },
            _ => json!({"envelope_id": envelope_id}),
        };
        tx.send(Frame::Text(ack.to_string().into()))
            .await
            .map_err(|e| (format!("cannot acknowledge: {e}"), connected))?;
        if kind == "events_api" {
            match serde_json::from_value::<SlackPushEvent>(payload) {
                Ok(SlackPushEvent::EventCallback(cb)) => inbound.event(cb),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "slack socket mode: unreadable event"),
            }
        }
    }
    Err(("socket dropped".into(), connected))
}
