//! Rollback during rollback: a rollback that failed or was not verified
//! leaves the service between versions. It enters a visible `stuck` state
//! (stored, shown in `/status`), said at once in the deploy and incident
//! channels with what runs where and what failed, and escalated at once to
//! every entry of the service's `escalation` list. rollbot never retries it
//! by itself; the next verified rollback ends the state. The service's
//! fallbacks are offered on the stuck message, or tried at once with
//! `auto_fallback` (`fallback.rs`); a verified one marks the state
//! mitigated.

use super::{Engine, Request};
use crate::audit::{Outcome as AuditOutcome, Record};
use crate::chat::{Message, Severity};
use crate::config_file::ServiceConfig;
use crate::store::Table;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// A service stuck between versions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stuck {
    pub since: DateTime<Utc>,
    /// The rollback that failed, as asked (`/rollback web to 4`).
    pub rollback: String,
    /// Who asked for it (display name).
    pub by: String,
    /// What failed and why, from the action's result.
    pub failed: String,
    /// What the backend reported running right after.
    pub running: String,
    pub correlation_id: String,
    /// The fallbacks tried since, in order (`fallback.rs`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tried: Vec<super::fallback::FallbackTry>,
    /// The fallback that verified: users are served through it, while
    /// the failed rollback is still to be fixed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mitigated: Option<String>,
}

fn key(service: &str) -> String {
    format!("stuck:{service}")
}

impl Engine {
    /// The service's stuck state, if its last rollback failed.
    pub async fn stuck(&self, service: &str) -> Option<Stuck> {
        self.store
            .get::<Stuck>(Table::Settings, &key(service))
            .await
            .ok()
            .flatten()
    }

    /// Stores a changed stuck state (a fallback tried).
    pub(super) async fn save_stuck(&self, service: &str, stuck: &Stuck) {
        if let Err(e) = self.store.put(Table::Settings, &key(service), stuck).await {
            tracing::error!(service, error = %e, "could not store the stuck state");
        }
    }

    /// What the backend says runs now, in one line.
    pub(super) async fn running_now(&self, service: &str) -> String {
        match self
            .backend_status_within(service, Duration::from_secs(10))
            .await
        {
            Ok(st) => {
                let mut l = format!("live {}", st.live_revision.as_deref().unwrap_or("?"));
                if let Some(c) = &st.canary_revision {
                    l.push_str(&format!(", canary {c}"));
                    if let Some(w) = st.canary_weight {
                        l.push_str(&format!(" at {w}%"));
                    }
                }
                if st.paused {
                    l.push_str(", paused");
                }
                if let Some(n) = st.notes.first() {
                    l.push_str(&format!("; {n}"));
                }
                l
            }
            Err(e) => format!("unknown: the backend's status failed too ({e})"),
        }
    }

    /// A rollback failed or was not verified: the service is stuck.
    pub(super) async fn enter_stuck(
        &self,
        svc: &ServiceConfig,
        req: &Request,
        corr: &str,
        result: &Message,
    ) {
        let service = svc.name();
        let failed = format!("{}: {}", result.title, result.text)
            .trim_end()
            .to_string();
        let stuck = Stuck {
            since: self.clock.now(),
            rollback: req.command_line(),
            by: req.actor.display_name.clone(),
            failed: failed.clone(),
            running: self.running_now(service).await,
            correlation_id: corr.to_string(),
            tried: Vec::new(),
            mitigated: None,
        };
        if let Err(e) = self.store.put(Table::Settings, &key(service), &stuck).await {
            tracing::error!(service, error = %e, "could not store the stuck state");
        }
        let mut parameters = BTreeMap::new();
        parameters.insert("running".into(), serde_json::json!(stuck.running));
        parameters.insert("escalated_to".into(), serde_json::json!(svc.escalation));
        let record = Record {
            time: stuck.since,
            actor: crate::domain::Actor::system("engine"),
            action: "stuck".into(),
            service: Some(service.to_string()),
            parameters,
            outcome: AuditOutcome::Noted,
            reason: format!("{} by {} did not complete", stuck.rollback, stuck.by),
            detail: failed.clone(),
            correlation_id: corr.to_string(),
            idempotency_key: None,
        };
        if let Err(e) = self.append(record).await {
            tracing::error!(service, error = %e, "could not record the stuck state");
        }
        let mut m = Message::new(
            Severity::Critical,
            format!("{service} is stuck between versions"),
        )
        .text(format!(
            "The rollback did not complete, so {service} may run neither the old nor the new version as expected.\nWhat failed: {failed}\nRunning now: {}\nrollbot does not retry it by itself. Look at the platform (the failure above names the command), then `/rollback {service}` again, or roll forward with a fix.",
            stuck.running
        ))
        .field("Rollback", format!("{} (by {})", stuck.rollback, stuck.by))
        .context(format!("correlation {corr}"));
        for who in &svc.escalation {
            m = m.mention(who.clone());
        }
        let m = self.offer_fallbacks(svc, &stuck, m);
        self.announce(svc, m, true, &[]);
        self.start_auto_fallback(svc, &stuck);
    }

    /// A verified rollback ends a stuck state, and says so.
    pub(super) async fn leave_stuck(&self, svc: &ServiceConfig, req: &Request) {
        let Some(was) = self.stuck(svc.name()).await else {
            return;
        };
        if let Err(e) = self.store.remove(Table::Settings, &key(svc.name())).await {
            tracing::error!(service = svc.name(), error = %e, "could not clear the stuck state");
            return;
        }
        let m = Message::new(
            Severity::Success,
            format!("{} is no longer stuck", svc.name()),
        )
        .text(format!(
            "{} by {} was verified; it had been stuck since {} ({}).",
            req.command_line(),
            req.actor.display_name,
            was.since.format("%H:%M UTC"),
            was.rollback
        ));
        self.announce(svc, m, true, &[]);
    }

    /// The `/status` note of a stuck service.
    pub(super) async fn stuck_note(&self, service: &str) -> Option<String> {
        let s = self.stuck(service).await?;
        if let Some(f) = &s.mitigated {
            return Some(format!(
                "MITIGATED by fallback `{f}`, but {} by {} failed at {} ({}) and was not completed; fallbacks tried: {}",
                s.rollback,
                s.by,
                s.since.format("%H:%M UTC"),
                s.failed.lines().next().unwrap_or_default(),
                super::fallback::tried_line(&s.tried)
            ));
        }
        let tried = match s.tried.is_empty() {
            true => String::new(),
            false => format!(
                "; fallbacks tried: {}",
                super::fallback::tried_line(&s.tried)
            ),
        };
        Some(format!(
            "STUCK between versions since {}: {} by {} failed ({}); running: {}{tried}",
            s.since.format("%H:%M UTC"),
            s.rollback,
            s.by,
            s.failed.lines().next().unwrap_or_default(),
            s.running
        ))
    }
}
