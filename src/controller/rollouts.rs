//! Rollouts under watch: announced by CI (`POST /api/v1/rollouts`) or taken
//! from services marked `watch = true`. Stored, so a restart resumes them.

use crate::store::{Store, Table};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    pub id: String,
    pub service: String,
    pub from_revision: String,
    pub to_revision: String,
    /// canary, blue-green, rolling, flag.
    pub strategy: String,
    pub start: DateTime<Utc>,
    /// Who announced it: `api:ci`, `config`.
    pub announced_by: String,
    /// watching, paused…, rolled back…, fully promoted…
    pub state: String,
    pub verdict: Option<String>,
    pub score: Option<f64>,
    pub reasons: Vec<String>,
    /// The database migrations it ran, which a rollback past it crosses
    /// (see `engine/migration_guard.rs`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub migrations: Vec<crate::migration::Migration>,
    /// The release this rollout belongs to (`2026-12-06.1`): services
    /// announced together, rolled back together with `/rollback release`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
}

impl Rollout {
    /// A canary rollout from `from` to `to` that starts being watched now:
    /// no verdict yet.
    pub fn watching(
        id: String,
        service: &str,
        (from, to): (String, String),
        start: DateTime<Utc>,
        announced_by: &str,
    ) -> Rollout {
        Rollout {
            id,
            service: service.to_string(),
            from_revision: from,
            to_revision: to,
            strategy: "canary".into(),
            start,
            announced_by: announced_by.to_string(),
            state: "watching".into(),
            verdict: None,
            score: None,
            reasons: vec![],
            migrations: vec![],
            release: None,
        }
    }

    pub fn active(&self) -> bool {
        !(self.state.starts_with("rolled back")
            || self.state.starts_with("fully promoted")
            || self.state.starts_with("automatic")
            || self.state.starts_with("replaced")
            || self.state.starts_with("ended"))
    }
}

const PREFIX: &str = "rollout:";

pub async fn save(store: &Store, r: &Rollout) -> anyhow::Result<()> {
    Ok(store
        .put(Table::Settings, &format!("{PREFIX}{}", r.id), r)
        .await?)
}

/// The rollouts of `release`, oldest first.
pub async fn of_release(store: &Store, release: &str) -> anyhow::Result<Vec<Rollout>> {
    let mut all = load_all(store).await?;
    all.retain(|r| r.release.as_deref() == Some(release));
    Ok(all)
}

pub async fn load_all(store: &Store) -> anyhow::Result<Vec<Rollout>> {
    let mut out: Vec<Rollout> = store
        .scan(Table::Settings, PREFIX)
        .await?
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    out.sort_by_key(|r: &Rollout| r.start);
    Ok(out)
}
