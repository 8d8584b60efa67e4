//! An incident in Monitoring survives a change of process: a restart, or
//! another replica taking the Lease over. What is watched and since when is
//! stored under `monitoring:ROLLOUT` in the settings table when the watch
//! begins, and removed in the same commit as the incident's `resolved`
//! entry, so a process that finds the record resumes the watch from the
//! rollback (the controller catches the ticks since then up from the
//! metric source's history) and one that does not has nothing to resolve.

use super::rollouts::{self, Rollout};
use crate::chat::MessageRef;
use crate::engine::Engine;
use crate::store::{Table, Tx};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

const PREFIX: &str = "monitoring:";

pub(super) fn key(rollout: &str) -> String {
    format!("{PREFIX}{rollout}")
}

/// An incident as stored while it is monitored: everything its later
/// messages need (the thread, the timeline, the template values) and what
/// it waits on. The window of counted ticks is not kept: it is rebuilt
/// from the metrics since `rolled_back_at`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct Saved {
    pub service: String,
    pub canary: String,
    pub stable: String,
    pub rollout: String,
    pub channel: Option<String>,
    pub root: Vec<MessageRef>,
    pub timeline: Vec<String>,
    pub signals: Vec<super::incident::Signal>,
    pub rolled_back_at: DateTime<Utc>,
    pub correlation: String,
    pub started: DateTime<Utc>,
    pub facts: Vec<(String, String)>,
    pub opening: String,
}

/// Stores the watch as it begins; a failure is logged, and only costs the
/// resumption after a restart.
pub(super) async fn save(engine: &Engine, saved: &Saved) {
    if let Err(e) = engine
        .store
        .put(Table::Settings, &key(&saved.rollout), saved)
        .await
    {
        tracing::error!(service = %saved.service, rollout = %saved.rollout, error = %e, "could not store the incident's monitoring; a restart before it resolves will not resume it");
    }
}

/// The removal that goes with the incident's last entry.
pub(super) fn done(tx: Tx, rollout: &str) -> Tx {
    tx.remove(Table::Settings, &key(rollout))
}

/// Forgets a rollout's monitoring: the rollout was replaced by a newer one
/// of its service, which the controller watches instead.
pub(super) async fn forget(engine: &Engine, rollout: &str) {
    if let Err(e) = engine.store.remove(Table::Settings, &key(rollout)).await {
        tracing::warn!(rollout, error = %e, "could not remove a replaced rollout's monitoring");
    }
}

/// Stored monitorings to resume, each with its rollout, oldest first. A
/// rollout that ended (replaced, ended with the demo) or whose service left
/// the config is not resumed.
pub(super) async fn resumable(engine: &Engine) -> anyhow::Result<Vec<(Rollout, Saved)>> {
    let stored: Vec<(String, Saved)> = engine.store.scan(Table::Settings, PREFIX).await?;
    let all = rollouts::load_all(&engine.store).await?;
    let mut out = Vec::new();
    for (_, saved) in stored {
        let Some(r) = all.iter().find(|r| r.id == saved.rollout) else {
            tracing::warn!(rollout = %saved.rollout, "an incident in monitoring names a rollout that is not stored; not resumed");
            continue;
        };
        if r.state.starts_with("replaced") || r.state.starts_with("ended") {
            continue;
        }
        if engine.config.service(&r.service).is_none() {
            tracing::warn!(service = %r.service, rollout = %r.id, "an incident in monitoring names a service that is no longer in the config; not resumed");
            continue;
        }
        out.push((r.clone(), saved));
    }
    out.sort_by_key(|(r, _)| r.start);
    Ok(out)
}

/// What the rollout list says the watch was doing ("rolled back
/// automatically"), from its stored state, else from who rolled back.
pub(super) fn what(r: &Rollout, saved: &Saved) -> String {
    if let Some(what) = r.state.strip_suffix(", monitoring recovery") {
        return what.to_string();
    }
    let by = saved
        .facts
        .iter()
        .find(|f| f.0 == "actor")
        .map(|f| f.1.as_str())
        .unwrap_or("someone");
    format!("rolled back by {by}")
}
