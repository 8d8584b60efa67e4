//! Actions cut off by a crash or a failing store.
//!
//! The engine writes an action's durable `requested` entry first and its
//! `inflight` record second, and removes the record in the same commit as
//! the result. So at start-up:
//!
//! - an `inflight` record without a result may have acted: it is marked
//!   `interrupted`, announced, and its idempotency key answers with that,
//!   so a client's retry does not act a second time;
//! - a `requested` entry with neither a record nor a result never reached
//!   the backend (the store failed in between): it gets a `failed` entry
//!   that says nothing was sent, so the log never shows a request without
//!   its end;
//! - a record whose `requested` entry never became durable is dropped: that
//!   action never started.

use super::idempotency::Idempotency;
use super::{Engine, Outcome, Status};
use crate::audit::{Entry, Outcome as AuditOutcome, Record};
use crate::chat::{Message, Severity};
use crate::domain::Actor;
use crate::store::{Committed, Table, Tx};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::{BTreeMap, HashSet};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Inflight {
    pub correlation_id: String,
    pub service: String,
    pub action: String,
    pub actor: Actor,
    pub started: DateTime<Utc>,
    pub channel: Option<String>,
    /// The request's key, so a retry after the crash gets the interruption.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    #[serde(default)]
    pub command: Option<String>,
    /// The replica and leadership that runs it (with leader election).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<crate::fence::Owner>,
}

/// How far back the first start on a store looks for unfinished requests.
const FIRST_LOOK_BACK: u64 = 10_000;
/// Most entries one start reads looking for them.
const MAX_LOOK: u64 = 200_000;
const CHECKED_KEY: &str = "recovery:checked_through";

impl Engine {
    /// Closes every action found unfinished. Call once at start, before
    /// any action can run.
    pub async fn recover(&self) -> anyhow::Result<Vec<Inflight>> {
        let head = self.store.audit_len();
        let checked: u64 = self
            .store
            .get(Table::Settings, CHECKED_KEY)
            .await?
            .unwrap_or(0);
        let from = if checked == 0 {
            head.saturating_sub(FIRST_LOOK_BACK) + 1
        } else {
            (checked + 1).max(head.saturating_sub(MAX_LOOK) + 1)
        };
        let recent = self.entries_between(from, head).await?;
        let mut interrupted = Vec::new();
        let records: Vec<Inflight> = self
            .store
            .scan::<Inflight>(Table::Inflight, "")
            .await?
            .into_iter()
            .map(|(_, v)| v)
            .collect();
        let open: HashSet<String> = records.iter().map(|f| f.correlation_id.clone()).collect();
        for f in records {
            let steps = self
                .store
                .audit_query(crate::audit::Query {
                    correlation_id: Some(f.correlation_id.clone()),
                    ..Default::default()
                })
                .await?;
            match unfinished(&steps, &f.action) {
                // The leader that handed the Lease over records it.
                Some(true) if self.handed_over_by_its_owner(&f) => self.await_its_owner(f),
                Some(true) => {
                    if self.mark_interrupted(&f).await?.is_some() {
                        interrupted.push(f);
                    }
                }
                Some(false) => {
                    // Its result is recorded; only the record was left.
                    self.store
                        .remove(Table::Inflight, &f.correlation_id)
                        .await?;
                }
                None => {
                    tracing::warn!(correlation = %f.correlation_id, action = %f.action, "dropping an in-flight record whose request was never recorded: it never started");
                    self.store
                        .remove(Table::Inflight, &f.correlation_id)
                        .await?;
                }
            }
        }
        for r in orphans(&recent, &open) {
            let mut params = BTreeMap::new();
            // A cascade has no record of its own: its steps have theirs,
            // and may have acted.
            let detail = if matches!(r.action.as_str(), "rollback_release" | "rollback_in_order") {
                params.insert("interrupted".into(), json!(true));
                format!(
                    "rollbot stopped during this rollback of several services. Each step's own entries (correlation {}-1, -2, …) say which services were rolled back; check `/status` and run it again: services already rolled back are skipped.",
                    r.correlation_id
                )
            } else {
                params.insert("not_acted".into(), json!(true));
                format!(
                    "Not done: rollbot's store failed after it recorded this {} request and before it acted, so nothing was sent to the backend. Repeat it if it is still needed.",
                    r.action
                )
            };
            tracing::warn!(correlation = %r.correlation_id, action = %r.action, "closing a request that never acted");
            self.append(Record {
                time: self.clock.now(),
                outcome: AuditOutcome::Failed,
                parameters: params,
                detail,
                ..r
            })
            .await?;
        }
        self.store
            .put(Table::Settings, CHECKED_KEY, &self.store.audit_len())
            .await?;
        self.store.flush().await?;
        Ok(interrupted)
    }

    /// Reports `f` interrupted, unless its record changed or went since it
    /// was read (its owner recorded the result meanwhile: on a shared
    /// store a leader that handed over, or woke, may): then `None`.
    pub(super) async fn mark_interrupted(&self, f: &Inflight) -> anyhow::Result<Option<Outcome>> {
        let Some(read) = self
            .store
            .get_raw(Table::Inflight, &f.correlation_id)
            .await?
        else {
            return Ok(None);
        };
        let text = format!(
            "rollbot stopped while {} of {} (asked by {} at {}) was in progress. It may or may not have been applied: check `/status {}` and repeat the action if needed.",
            f.action, f.service, f.actor.display_name, f.started.format("%Y-%m-%d %H:%M:%S UTC"), f.service
        );
        let mut params = BTreeMap::new();
        params.insert("interrupted_action".into(), json!(f.action));
        params.insert("requested_by".into(), json!(f.actor.qualified_id()));
        params.insert("started".into(), json!(f.started.to_rfc3339()));
        let m = Message::new(
            Severity::Critical,
            format!("Interrupted: {} of {}", f.action, f.service),
        )
        .text(text.clone())
        .context(format!("correlation {}", f.correlation_id));
        let mut tx = Tx::new()
            .record(Record {
                time: self.clock.now(),
                actor: Actor::system("recovery"),
                action: f.action.clone(),
                service: Some(f.service.clone()),
                parameters: params,
                outcome: AuditOutcome::Interrupted,
                reason: String::new(),
                detail: text,
                correlation_id: f.correlation_id.clone(),
                idempotency_key: None,
            })
            .expect(Table::Inflight, &f.correlation_id, Some(read))
            .remove(Table::Inflight, &f.correlation_id);
        let outcome = Outcome {
            status: Status::Failed,
            message: m.clone(),
            correlation_id: f.correlation_id.clone(),
            prompt: None,
            announced: f.channel.is_some(),
            repeat: false,
            refusal: None,
        };
        if let (Some(key), Some(command)) = (&f.idempotency_key, &f.command) {
            // A retry with the same key learns what happened instead of acting again.
            tx = tx.put(
                Table::Idempotency,
                key,
                &Idempotency::kept(command, self.clock.now(), &outcome),
            );
        }
        if let Committed::Conflict = self.store.commit(tx).await? {
            return Ok(None);
        }
        self.telemetry.audit_appends.inc();
        tracing::warn!(service = %f.service, action = %f.action, correlation = %f.correlation_id, "found an interrupted action");
        if let Some(ch) = &f.channel {
            self.notifier.post(ch, &m).await;
        }
        Ok(Some(outcome))
    }

    /// Entries `from..=to`, read off the async workers.
    async fn entries_between(&self, from: u64, to: u64) -> anyhow::Result<Vec<Entry>> {
        let mut out = Vec::new();
        let mut seq = from;
        while seq <= to {
            let end = (seq + 999).min(to);
            let audit = self.store.audit_handle();
            let page = tokio::task::spawn_blocking(move || {
                (seq..=end)
                    .filter_map(|s| audit.get(s).ok().flatten())
                    .collect::<Vec<_>>()
            })
            .await?;
            out.extend(page);
            seq = end + 1;
        }
        Ok(out)
    }
}

/// Whether the latest `requested` step of `action` in `steps` (one
/// correlation, newest first) has no result after it; `None` when there is
/// no `requested` step.
pub(super) fn unfinished(steps: &[Entry], action: &str) -> Option<bool> {
    let requested = steps
        .iter()
        .find(|e| e.record.action == action && e.record.outcome == AuditOutcome::Requested)?;
    Some(!steps.iter().any(|e| {
        e.seq > requested.seq && e.record.action == action && e.record.outcome.is_terminal()
    }))
}

/// `requested` records in `entries` (oldest first) with no result after
/// them and no in-flight record.
fn orphans(entries: &[Entry], open: &HashSet<String>) -> Vec<Record> {
    let mut ended: HashSet<(&str, &str)> = HashSet::new();
    let mut out = Vec::new();
    for e in entries.iter().rev() {
        let key = (e.record.correlation_id.as_str(), e.record.action.as_str());
        match e.record.outcome {
            AuditOutcome::Requested => {
                if !ended.contains(&key) && !open.contains(&e.record.correlation_id) {
                    out.push(e.record.clone());
                }
                // An earlier request of the same step needs its own end.
                ended.remove(&key);
            }
            o if o.is_terminal() => {
                ended.insert(key);
            }
            _ => {}
        }
    }
    out.reverse();
    out
}
