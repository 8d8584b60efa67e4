//! Freezes: time windows during which promotions are refused for a scope of
//! services. Rollbacks are never frozen.
//!
//! Two kinds: ad hoc freezes (`/freeze prod/* for 2h launch`), stored so they
//! survive a restart, and scheduled windows from the config with Argo CD
//! sync-window semantics: `deny` windows block; when `allow` windows exist for
//! a service, promotion is blocked outside all of them; deny wins.

mod window;

pub use window::{ActiveWindow, FreezeConfig, WindowConfig, WindowKind};

use crate::audit::{Entry, Record};
use crate::domain::{human_duration, Actor, Scope};
use crate::store::{Change, Store, Table, Tx};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdHocFreeze {
    pub scope: Scope,
    pub author: Actor,
    pub reason: String,
    pub start: DateTime<Utc>,
    pub until: DateTime<Utc>,
}

/// Why a promotion is blocked right now.
#[derive(Clone, Debug, PartialEq)]
pub enum Block {
    AdHoc(AdHocFreeze),
    DenyWindow(ActiveWindow),
    OutsideAllow {
        windows: Vec<String>,
        next_open: Option<DateTime<Utc>>,
    },
}

impl fmt::Display for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Block::AdHoc(z) => write!(
                f,
                "{} is frozen by {} since {} until {} ({}): {}",
                z.scope,
                z.author.display_name,
                z.start.format("%H:%M UTC"),
                z.until.format("%Y-%m-%d %H:%M UTC"),
                human_duration((z.until - z.start).to_std().unwrap_or_default()),
                if z.reason.is_empty() {
                    "no reason given"
                } else {
                    &z.reason
                }
            ),
            Block::DenyWindow(w) => write!(
                f,
                "the scheduled freeze window `{}` is active until {}{}",
                w.name,
                w.end.format("%Y-%m-%d %H:%M UTC"),
                w.reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            ),
            Block::OutsideAllow { windows, next_open } => write!(
                f,
                "promotions are only allowed inside the window{} {}{}",
                if windows.len() == 1 { "" } else { "s" },
                windows.join(", "),
                next_open
                    .map(|t| format!("; the next opens at {}", t.format("%Y-%m-%d %H:%M UTC")))
                    .unwrap_or_default()
            ),
        }
    }
}

/// All freezes, ad hoc and scheduled.
pub struct Freezes {
    store: Arc<Store>,
    windows: Vec<WindowConfig>,
}

impl Freezes {
    pub fn new(store: Arc<Store>, windows: Vec<WindowConfig>) -> Freezes {
        Freezes { store, windows }
    }

    fn key(scope: &Scope) -> String {
        scope.to_string()
    }

    /// Adds or replaces the ad hoc freeze on exactly this scope, together
    /// with the audit records that say so.
    pub async fn add(&self, f: &AdHocFreeze, records: Vec<Record>) -> anyhow::Result<Vec<Entry>> {
        let mut tx = Tx::new().put(Table::Freezes, &Self::key(&f.scope), f);
        tx.records = records;
        // The records come first in the commit: never a freeze without its entry.
        Ok(self.store.apply(tx).await?)
    }

    /// Lifts the ad hoc freeze on exactly this scope, recording what
    /// `records` makes of it in the same commit.
    pub async fn remove(
        &self,
        scope: &Scope,
        mut records: impl FnMut(&AdHocFreeze) -> Vec<Record>,
    ) -> anyhow::Result<Option<(AdHocFreeze, Vec<Entry>)>> {
        let (found, entries) = self
            .store
            .update(
                Table::Freezes,
                &Self::key(scope),
                |cur: Option<AdHocFreeze>| match cur {
                    Some(f) => Change::remove(Some(f.clone())).with_records(records(&f)),
                    None => Change::unchanged(None),
                },
            )
            .await?;
        Ok(found.map(|f| (f, entries)))
    }

    /// Ad hoc freezes in force at `now`.
    pub async fn active_ad_hoc(&self, now: DateTime<Utc>) -> anyhow::Result<Vec<AdHocFreeze>> {
        let mut out: Vec<AdHocFreeze> = self
            .store
            .scan::<AdHocFreeze>(Table::Freezes, "")
            .await?
            .into_iter()
            .map(|(_, f)| f)
            .filter(|f| f.until > now)
            .collect();
        out.sort_by_key(|f| f.until);
        Ok(out)
    }

    /// Removes ad hoc freezes that ended before `now`.
    pub async fn sweep(&self, now: DateTime<Utc>) -> anyhow::Result<usize> {
        let expired: Vec<String> = self
            .store
            .scan::<AdHocFreeze>(Table::Freezes, "")
            .await?
            .into_iter()
            .filter(|(_, f)| f.until <= now)
            .map(|(k, _)| k)
            .collect();
        let mut tx = Tx::new();
        for k in &expired {
            tx = tx.remove(Table::Freezes, k);
        }
        if !tx.is_empty() {
            self.store.apply(tx).await?;
        }
        Ok(expired.len())
    }

    pub fn active_windows(&self, now: DateTime<Utc>) -> Vec<ActiveWindow> {
        self.windows
            .iter()
            .filter_map(|w| window::active(w, now))
            .collect()
    }

    /// Why promoting `environment/name` is blocked at `now`, if it is.
    /// Deny wins over allow; an ad hoc freeze is reported first.
    pub async fn promotion_block(
        &self,
        environment: &str,
        name: &str,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Option<Block>> {
        if let Some(f) = self
            .active_ad_hoc(now)
            .await?
            .into_iter()
            .find(|f| f.scope.covers(environment, name))
        {
            return Ok(Some(Block::AdHoc(f)));
        }
        let applies = |w: &WindowConfig| {
            w.services
                .iter()
                .any(|g| crate::glob_matches(&g.0, environment, name))
        };
        for w in self
            .windows
            .iter()
            .filter(|w| w.kind == WindowKind::Deny && applies(w))
        {
            if let Some(a) = window::active(w, now) {
                return Ok(Some(Block::DenyWindow(a)));
            }
        }
        let allows: Vec<&WindowConfig> = self
            .windows
            .iter()
            .filter(|w| w.kind == WindowKind::Allow && applies(w))
            .collect();
        if !allows.is_empty() && !allows.iter().any(|w| window::active(w, now).is_some()) {
            return Ok(Some(Block::OutsideAllow {
                windows: allows.iter().map(|w| w.name.clone()).collect(),
                next_open: allows
                    .iter()
                    .filter_map(|w| window::next_start(w, now))
                    .min(),
            }));
        }
        Ok(None)
    }
}
