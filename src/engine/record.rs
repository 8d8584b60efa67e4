//! Audit entries of a request, one per step (`requested`, `pending`,
//! `refused`, `succeeded`, `failed`), each written with the state that must
//! not exist without it.

use super::{Engine, Request};
use crate::audit::{Entry, Outcome as AuditOutcome, Record};
use crate::domain::Action;
use crate::store::Tx;
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

impl Engine {
    /// Appends an audit entry for this request.
    pub async fn record(
        &self,
        req: &Request,
        corr: &str,
        service: Option<&str>,
        params: BTreeMap<String, serde_json::Value>,
        outcome: AuditOutcome,
        detail: String,
    ) -> anyhow::Result<Entry> {
        self.record_with(req, corr, service, params, outcome, detail, Tx::new())
            .await
    }

    /// Appends an audit entry for this request together with `change`
    /// (state that must not exist without its entry, written after it).
    #[allow(clippy::too_many_arguments)]
    pub async fn record_with(
        &self,
        req: &Request,
        corr: &str,
        service: Option<&str>,
        params: BTreeMap<String, serde_json::Value>,
        outcome: AuditOutcome,
        detail: String,
        mut change: Tx,
    ) -> anyhow::Result<Entry> {
        let record = self.record_of(req, corr, service, params, outcome, detail);
        change.records.insert(0, record);
        let n = change.records.len();
        let mut entries = self.store.apply(change).await?;
        self.telemetry.audit_appends.inc_by(n as u64);
        Ok(entries.remove(0))
    }

    /// The audit record of this request at one step.
    pub(super) fn record_of(
        &self,
        req: &Request,
        corr: &str,
        service: Option<&str>,
        mut params: BTreeMap<String, serde_json::Value>,
        outcome: AuditOutcome,
        detail: String,
    ) -> Record {
        if req.dry_run {
            params.insert("dry_run".into(), json!(true));
        }
        match &req.action {
            Action::Rollback { to: Some(t), .. } => {
                params.entry("to".into()).or_insert(json!(t));
            }
            // Every entry of a fallback names it, refusals too.
            Action::Fallback { name, episode } => {
                params.entry("fallback".into()).or_insert(json!(name));
                if let Some(e) = episode {
                    params.entry("stuck_episode".into()).or_insert(json!(e));
                }
            }
            Action::Promote { full, force } => {
                params.entry("full".into()).or_insert(json!(full));
                params.entry("force".into()).or_insert(json!(force));
            }
            Action::Freeze { duration, .. }
            | Action::Automation {
                enabled: false,
                duration,
            } => {
                params
                    .entry("duration_secs".into())
                    .or_insert(json!(duration.as_secs()));
            }
            _ => {}
        }
        Record {
            time: self.clock.now(),
            actor: req.actor.clone(),
            action: req.action.name().into(),
            service: service.map(str::to_string),
            parameters: params,
            outcome,
            reason: req.reason.clone(),
            detail,
            correlation_id: corr.into(),
            idempotency_key: req.idempotency_key.clone(),
        }
    }

    /// Appends any record durably and counts it.
    pub async fn append(&self, record: Record) -> anyhow::Result<Entry> {
        let entry = self.store.append(record).await?;
        self.telemetry.audit_appends.inc();
        Ok(entry)
    }

    /// Appends `record` (with `tx`) in the background, retrying for a few
    /// minutes while the store does not answer.
    pub(super) fn record_later(&self, record: Record, tx: Tx) {
        let Some(me) = self.me.upgrade() else { return };
        tokio::spawn(async move {
            let mut wait = Duration::from_secs(1);
            for _ in 0..8 {
                let t = Tx {
                    records: vec![record.clone()],
                    ..tx.clone()
                };
                match me.store.apply(t).await {
                    Ok(_) => {
                        me.telemetry.audit_appends.inc();
                        return;
                    }
                    // Retrying cannot help: the leader reports the action.
                    Err(e @ crate::store::StoreError::Fenced(_)) => {
                        tracing::warn!(error = %e, correlation = %record.correlation_id, "audit entry not recorded: this replica is no longer the leader");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, correlation = %record.correlation_id, "audit entry still not recorded; retrying")
                    }
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(60));
            }
            tracing::error!(correlation = %record.correlation_id, "gave up recording an audit entry; the next start reports the action");
        });
    }
}
