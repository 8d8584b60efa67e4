//! The hash chain itself, shared by every audit store: sealing a record
//! into stored bytes, and checking stored bytes entry by entry. Both stores
//! keep the same bytes (a 32-byte hash and the canonical JSON body), so a
//! log copied from one to the other verifies the same way.

use super::{chain_hash, Body, Entry, OwnedBody, Record};
use serde::Deserialize;

/// A record sealed as entry `seq` after `prev`: the canonical body and its
/// hash, as stored.
pub(crate) fn seal(seq: u64, prev: &str, record: &Record) -> (Vec<u8>, [u8; 32]) {
    let body = serde_json::to_vec(&Body {
        seq,
        prev_hash: prev,
        record,
    })
    .expect("audit records serialize");
    let hash = chain_hash(prev, &body);
    (body, hash)
}

/// An entry from its stored hash and body.
pub(crate) fn decode_parts(seq: u64, hash: &[u8], body: &[u8]) -> Result<Entry, super::AuditError> {
    let b: OwnedBody =
        serde_json::from_slice(body).map_err(|e| super::AuditError::Corrupt(seq, e.to_string()))?;
    Ok(Entry {
        seq: b.seq,
        record: b.record,
        prev_hash: b.prev_hash,
        hash: hex::encode(hash),
    })
}

/// Checks stored entries in sequence order, each against the one before.
pub(crate) struct ChainCheck {
    expected: u64,
    prev: String,
    checked: u64,
    prefix: String,
    digits: [u8; 20],
}

impl ChainCheck {
    /// Starts at entry `start`, which must link to `prev`.
    pub fn new(start: u64, prev: String) -> ChainCheck {
        ChainCheck {
            expected: start,
            prev,
            checked: 0,
            prefix: String::with_capacity(128),
            digits: [0; 20],
        }
    }

    /// Entries found good so far.
    pub fn checked(&self) -> u64 {
        self.checked
    }

    /// The hash of the last good entry (the start's `prev` before any).
    pub fn last_hash(&self) -> &str {
        &self.prev
    }

    /// Checks the next stored entry, found under `key_seq`; on a bad one,
    /// its sequence number and what is wrong with it.
    pub fn next(&mut self, key_seq: u64, stored: &[u8], body: &[u8]) -> Result<(), (u64, String)> {
        #[derive(Deserialize)]
        struct Head<'a> {
            seq: u64,
            #[serde(borrow)]
            prev_hash: &'a str,
        }
        if key_seq != self.expected {
            return Err((
                self.expected,
                format!(
                    "missing: the log jumps from #{} to #{key_seq} (entries deleted)",
                    self.expected - 1
                ),
            ));
        }
        if stored.len() != 32 {
            return Err((key_seq, "truncated: shorter than its hash".into()));
        }
        // Fast path: a canonical body starts with exactly this; only a
        // body that does not needs parsing to say what is wrong.
        self.prefix.clear();
        self.prefix.push_str("{\"seq\":");
        self.prefix
            .push_str(super::sled_store::itoa_u64(key_seq, &mut self.digits));
        self.prefix.push_str(",\"prev_hash\":\"");
        self.prefix.push_str(&self.prev);
        self.prefix.push_str("\",");
        if !body.starts_with(self.prefix.as_bytes()) {
            let Ok(head) = serde_json::from_slice::<Head>(body) else {
                return Err((
                    key_seq,
                    "its contents are not a readable entry (edited)".into(),
                ));
            };
            if head.seq != key_seq {
                return Err((
                    key_seq,
                    format!(
                        "stored at #{key_seq} but its contents say #{} (entries moved or swapped)",
                        head.seq
                    ),
                ));
            }
            if head.prev_hash != self.prev {
                return Err((key_seq, format!(
                    "its prev_hash does not match the hash of #{} (an entry before it was changed, removed or reordered)",
                    key_seq - 1
                )));
            }
        }
        if chain_hash(&self.prev, body) != stored {
            return Err((
                key_seq,
                "its hash does not match its contents (the entry was edited)".into(),
            ));
        }
        self.prev.clear();
        self.prev.push_str(&hex::encode(stored));
        self.checked += 1;
        self.expected += 1;
        Ok(())
    }
}
