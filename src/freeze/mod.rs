//! Freezes: time windows during which promotions are refused for a scope of
//! services. Rollbacks are never frozen.
//!
//! Two kinds: ad hoc freezes (`/freeze prod/* for 2h launch`), stored so they
//! survive a restart, and scheduled windows from the config with Argo CD
//! sync-window semantics: `deny` windows block; when `allow` windows exist for
//! a service, promotion is blocked outside all of them; deny wins.

mod window;

pub use window::{ActiveWindow, WindowKind};

use crate::config::WindowConfig;
use crate::domain::{human_duration, Actor, Scope};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

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
    tree: sled::Tree,
    windows: Vec<WindowConfig>,
}

impl Freezes {
    pub fn new(tree: sled::Tree, windows: Vec<WindowConfig>) -> Freezes {
        Freezes { tree, windows }
    }

    fn key(scope: &Scope) -> String {
        scope.to_string()
    }

    /// Adds or replaces the ad hoc freeze on exactly this scope.
    pub fn add(&self, f: &AdHocFreeze) -> anyhow::Result<()> {
        crate::store::put(&self.tree, &Self::key(&f.scope), f)
    }

    /// Lifts the ad hoc freeze on exactly this scope.
    pub fn remove(&self, scope: &Scope) -> anyhow::Result<Option<AdHocFreeze>> {
        match self.tree.remove(Self::key(scope).as_bytes())? {
            Some(v) => Ok(Some(serde_json::from_slice(&v)?)),
            None => Ok(None),
        }
    }

    /// Ad hoc freezes in force at `now`; expired ones are dropped.
    pub fn active_ad_hoc(&self, now: DateTime<Utc>) -> anyhow::Result<Vec<AdHocFreeze>> {
        let mut out = Vec::new();
        for (k, f) in crate::store::all::<AdHocFreeze>(&self.tree)? {
            if f.until <= now {
                self.tree.remove(k.as_bytes())?;
            } else {
                out.push(f);
            }
        }
        out.sort_by_key(|f| f.until);
        Ok(out)
    }

    pub fn active_windows(&self, now: DateTime<Utc>) -> Vec<ActiveWindow> {
        self.windows
            .iter()
            .filter_map(|w| window::active(w, now))
            .collect()
    }

    /// Why promoting `environment/name` is blocked at `now`, if it is.
    /// Deny wins over allow; an ad hoc freeze is reported first.
    pub fn promotion_block(
        &self,
        environment: &str,
        name: &str,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Option<Block>> {
        if let Some(f) = self
            .active_ad_hoc(now)?
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
