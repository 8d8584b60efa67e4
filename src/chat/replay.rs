//! Replay protection for signed platform requests. A signed request stays
//! valid for a few minutes, so a captured one could be sent again: each
//! signature is accepted once within its window, and nothing signed before
//! this process started is accepted at all, so a restart forgets nothing
//! (a platform sends a retry signed anew).
//!
//! The seen signatures are kept in memory, per minute of their timestamp,
//! and dropped when they leave the window: memory is bounded by the
//! request rate times the window (about 11 MB at 1,000 requests a second),
//! and capped beyond that. They are not written to the store: one record
//! per request made the store, and rollbot's memory, grow with every
//! request until the records expired.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

/// Seconds before the process start a request may be signed, for clocks
/// that disagree slightly.
const START_SKEW: i64 = 2;
/// Signatures remembered at most; the oldest minute goes first beyond it.
const MAX_SEEN: usize = 1_000_000;

pub struct ReplayGuard {
    /// Unix seconds when this process started taking requests.
    started: i64,
    /// Seconds a signed request stays acceptable.
    window: i64,
    /// Signature prefixes (128 bits) by minute of their timestamp.
    seen: Mutex<BTreeMap<i64, HashSet<u128>>>,
}

impl ReplayGuard {
    pub fn new(started: i64, window: i64) -> ReplayGuard {
        ReplayGuard {
            started,
            window,
            seen: Mutex::new(BTreeMap::new()),
        }
    }

    /// Accepts a valid signature made at `at` once; `now` in Unix seconds.
    pub fn first_time(&self, signature: &[u8], at: i64, now: i64) -> Result<(), &'static str> {
        if at < self.started.saturating_sub(START_SKEW) {
            return Err("signed before rollbot started: a replay, or a request from before a restart (the platform sends its retry signed anew)");
        }
        let mut key = [0u8; 16];
        let n = signature.len().min(16);
        key[..n].copy_from_slice(&signature[..n]);
        let key = u128::from_be_bytes(key);
        let mut seen = self.seen.lock().unwrap();
        let oldest = now.saturating_sub(self.window + 60).div_euclid(60);
        while let Some((&minute, _)) = seen.first_key_value() {
            if minute >= oldest {
                break;
            }
            seen.pop_first();
        }
        if seen.values().any(|s| s.contains(&key)) {
            return Err("replayed request");
        }
        seen.entry(at.div_euclid(60)).or_default().insert(key);
        while seen.values().map(HashSet::len).sum::<usize>() > MAX_SEEN {
            seen.pop_first();
        }
        Ok(())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.seen.lock().unwrap().values().map(HashSet::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_within_the_window_and_never_from_before_the_start() {
        let g = ReplayGuard::new(1_000, 300);
        let sig = [7u8; 32];
        assert_eq!(g.first_time(&sig, 1_010, 1_010), Ok(()));
        assert_eq!(g.first_time(&sig, 1_010, 1_020), Err("replayed request"));
        // Another signature of the same second is fine.
        assert_eq!(g.first_time(&[8u8; 32], 1_010, 1_020), Ok(()));
        // Signed before this process started (a restart in between).
        assert!(g
            .first_time(&[9u8; 32], 990, 1_020)
            .unwrap_err()
            .starts_with("signed before rollbot started"));
        // Seen signatures leave memory with their window.
        assert_eq!(g.first_time(&[1u8; 32], 1_500, 1_500), Ok(()));
        assert_eq!(g.len(), 1);
    }
}
