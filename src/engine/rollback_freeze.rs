//! `freeze_after_rollback`: after a successful rollback of a service that
//! sets it, promotions of that service are frozen for a while through an
//! ordinary ad hoc freeze (audited, shown in `/status`, lifted with
//! `/unfreeze <service>`), so the bad version is not pushed out again
//! before anyone has looked.

use super::{Engine, Request};
use crate::audit::{Outcome as AuditOutcome, Record};
use crate::chat::Message;
use crate::config_file::ServiceConfig;
use crate::domain::{human_duration, Action, Actor, Platform, Scope};
use crate::freeze::AdHocFreeze;
use chrono::{DateTime, Utc};
use serde_json::json;
use std::collections::BTreeMap;

/// Who a freeze made by rollbot itself is by (`system:rollbot`).
fn rollbot() -> Actor {
    Actor::new(Platform::System, "rollbot", "rollbot")
}

impl Engine {
    /// After a succeeded rollback of `svc`: freezes its promotions for
    /// `freeze_after_rollback`, unless a freeze on the service that lasts
    /// at least as long is already there, and says so in `message` (the
    /// rollback's result, announced in the deploy channel).
    pub(super) async fn freeze_after_rollback(
        &self,
        req: &Request,
        corr: &str,
        svc: &ServiceConfig,
        message: Message,
    ) -> Message {
        let Some(duration) = svc.freeze_after_rollback.as_ref().map(|d| d.0) else {
            return message;
        };
        if req.dry_run || !matches!(req.action, Action::Rollback { .. }) {
            return message;
        }
        let name = svc.name();
        match self.add_rollback_freeze(corr, svc, duration).await {
            Ok(Ok(until)) => message.field(
                "Freeze",
                format!(
                    "Promotions of {name} are frozen until {} (freeze_after_rollback); `/unfreeze {name}` lifts it.",
                    until.format("%Y-%m-%d %H:%M UTC")
                ),
            ),
            Ok(Err(kept)) => message.field(
                "Freeze",
                format!(
                    "Promotions of {name} stay frozen until {} by the freeze already in place, which outlasts freeze_after_rollback; `/unfreeze {name}` lifts it.",
                    kept.until.format("%Y-%m-%d %H:%M UTC")
                ),
            ),
            Err(e) => {
                tracing::error!(service = name, error = %e, "could not store the freeze after a rollback");
                message.field(
                    "Freeze",
                    format!(
                        "⚠ freeze_after_rollback could not freeze {name} ({e}); freeze it by hand with `/freeze {name} for {}`.",
                        human_duration(duration)
                    ),
                )
            }
        }
    }

    /// Stores the freeze with its audit entry in one commit, and returns
    /// its end; or returns the freeze on the service it would shorten.
    async fn add_rollback_freeze(
        &self,
        corr: &str,
        svc: &ServiceConfig,
        duration: std::time::Duration,
    ) -> anyhow::Result<Result<DateTime<Utc>, AdHocFreeze>> {
        let now = self.clock.now();
        let name = svc.name();
        let scope = Scope::Service(name.to_string());
        let until = now + chrono::Duration::from_std(duration)?;
        // The store holds one freeze per scope: never replace a longer one.
        if let Some(kept) = self
            .freezes
            .active_ad_hoc(now)
            .await?
            .into_iter()
            .find(|f| f.scope == scope && f.until >= until)
        {
            return Ok(Err(kept));
        }
        let freeze = AdHocFreeze {
            scope: scope.clone(),
            author: rollbot(),
            reason: format!(
                "automatic freeze for {} after the rollback of {name} (freeze_after_rollback)",
                human_duration(duration)
            ),
            start: now,
            until,
        };
        let record = Record {
            time: now,
            actor: freeze.author.clone(),
            action: "freeze".into(),
            service: Some(name.to_string()),
            parameters: BTreeMap::from([
                ("scope".to_string(), json!(scope.to_string())),
                ("services".to_string(), json!([name])),
                ("until".to_string(), json!(until.to_rfc3339())),
                ("duration_secs".to_string(), json!(duration.as_secs())),
                ("after_rollback".to_string(), json!(corr)),
            ]),
            outcome: AuditOutcome::Succeeded,
            reason: freeze.reason.clone(),
            detail: format!(
                "Promotions of {name} are refused until {}. Rollbacks are not affected.",
                until.format("%Y-%m-%d %H:%M UTC")
            ),
            correlation_id: corr.to_string(),
            idempotency_key: None,
        };
        self.freezes.add(&freeze, vec![record]).await?;
        self.telemetry.audit_appends.inc();
        Ok(Ok(until))
    }
}
