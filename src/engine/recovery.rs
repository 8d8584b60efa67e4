//! Actions interrupted by a crash. An action is written to the `inflight`
//! tree together with its durable `requested` entry and removed when its
//! result is recorded. Whatever is still there at start-up was cut off: it is
//! marked `interrupted` in the audit log and announced, so nobody believes a
//! rollback happened when it may not have.

use super::Engine;
use crate::audit::{Outcome as AuditOutcome, Record};
use crate::chat::{Message, Severity};
use crate::domain::Actor;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Inflight {
    pub correlation_id: String,
    pub service: String,
    pub action: String,
    pub actor: Actor,
    pub started: DateTime<Utc>,
    pub channel: Option<String>,
}

impl Engine {
    /// Marks and announces every action found unfinished. Call once at start.
    pub async fn recover(&self) -> anyhow::Result<Vec<Inflight>> {
        let found: Vec<Inflight> = crate::store::all::<Inflight>(&self.store.inflight)?
            .into_iter()
            .map(|(_, v)| v)
            .collect();
        for f in &found {
            let text = format!(
                "rollbot stopped while {} of {} (asked by {} at {}) was in progress. It may or may not have been applied: check `/status {}` and repeat the action if needed.",
                f.action, f.service, f.actor.display_name, f.started.format("%Y-%m-%d %H:%M:%S UTC"), f.service
            );
            let mut params = BTreeMap::new();
            params.insert("interrupted_action".into(), json!(f.action));
            params.insert("requested_by".into(), json!(f.actor.qualified_id()));
            params.insert("started".into(), json!(f.started.to_rfc3339()));
            self.append(Record {
                time: self.clock.now(),
                actor: Actor::system("recovery"),
                action: f.action.clone(),
                service: Some(f.service.clone()),
                parameters: params,
                outcome: AuditOutcome::Interrupted,
                reason: String::new(),
                detail: text.clone(),
                correlation_id: f.correlation_id.clone(),
                idempotency_key: None,
            })
            .await?;
            self.store.inflight.remove(f.correlation_id.as_bytes())?;
            tracing::warn!(service = %f.service, action = %f.action, correlation = %f.correlation_id, "found an interrupted action");
            if let Some(ch) = &f.channel {
                let m = Message::new(
                    Severity::Critical,
                    format!("Interrupted: {} of {}", f.action, f.service),
                )
                .text(text)
                .context(format!("correlation {}", f.correlation_id));
                self.notifier.post(ch, &m).await;
            }
        }
        self.store.flush().await?;
        Ok(found)
    }
}
