//! How the store is doing, from the calls made on it: `/readyz` reports it,
//! and the engine refuses to act while writes cannot be recorded.

use super::StoreError;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The last failure of each kind of call, cleared by the next success.
#[derive(Default)]
pub struct Health {
    reads: Mutex<Option<(Instant, String)>>,
    writes: Mutex<Option<(Instant, String)>>,
    /// Set by the start-up integrity check; never cleared while running.
    damaged: Mutex<Option<String>>,
}

/// One thing wrong with the store, in words for an operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreProblem {
    /// Actions cannot be recorded while this holds.
    pub blocks_actions: bool,
    pub text: String,
}

impl Health {
    pub(super) fn answered(&self, write: bool) {
        let slot = if write { &self.writes } else { &self.reads };
        let mut s = slot.lock().unwrap();
        if s.is_some() {
            tracing::info!(
                kind = if write { "write" } else { "read" },
                "the store answers again"
            );
            *s = None;
        }
    }

    pub(super) fn failed(&self, write: bool, e: &StoreError) {
        // A stored value that does not decode is that value's problem, not
        // the store's.
        if matches!(e, StoreError::Corrupt(_)) {
            return;
        }
        let slot = if write { &self.writes } else { &self.reads };
        let mut s = slot.lock().unwrap();
        if s.is_none() {
            *s = Some((Instant::now(), e.to_string()));
        }
    }

    /// Marks the store damaged (failed integrity check at start).
    pub fn set_damaged(&self, what: String) {
        *self.damaged.lock().unwrap() = Some(what);
    }

    /// Whether a call failed and has not been followed by a success.
    pub fn failing(&self) -> bool {
        self.reads.lock().unwrap().is_some() || self.writes.lock().unwrap().is_some()
    }

    pub fn damaged(&self) -> Option<String> {
        self.damaged.lock().unwrap().clone()
    }

    pub(super) fn problems(
        &self,
        writer_busy: Option<Duration>,
        timeout: Duration,
    ) -> Vec<StoreProblem> {
        let mut out = Vec::new();
        if let Some(d) = self.damaged() {
            out.push(StoreProblem {
                blocks_actions: true,
                text: format!("store damaged: {d}"),
            });
        }
        if let Some(busy) = writer_busy.filter(|b| *b > timeout) {
            out.push(StoreProblem {
                blocks_actions: true,
                text: format!(
                    "store writer stuck for {} (limit {}); actions are refused until it answers",
                    crate::domain::human_duration(busy),
                    crate::domain::human_duration(timeout)
                ),
            });
        }
        for (kind, slot, blocks) in [
            ("writes", &self.writes, true),
            ("reads", &self.reads, false),
        ] {
            if let Some((since, e)) = slot.lock().unwrap().as_ref() {
                out.push(StoreProblem {
                    blocks_actions: blocks,
                    text: format!(
                        "store {kind} failing for {}: {e}",
                        crate::domain::human_duration(since.elapsed())
                    ),
                });
            }
        }
        out
    }
}
