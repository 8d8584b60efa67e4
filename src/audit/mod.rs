//! The tamper-evident audit log.
//!
//! Every request, refusal, decision and result is appended as an entry with a
//! sequence number. Each entry carries the hash of the one before it and its
//! own hash, SHA-256 over the previous hash and the entry's canonical
//! encoding, so an edited, deleted or reordered entry breaks the chain and
//! `rollbot audit verify` names the first bad sequence number.
//!
//! The log lives behind [`AuditStore`]; [`sled_store::SledAuditStore`] is the
//! one implementation.

pub mod bench;
pub(crate) mod chain;
pub mod export;
pub mod kpi;
pub mod postgres_store;
pub(crate) mod sled_store;

use crate::domain::Actor;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;

pub use sled_store::SledAuditStore;

/// What happened at this step of an action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Accepted and about to act; written durably before any side effect.
    Requested,
    Succeeded,
    Failed,
    /// Not allowed (permission, freeze, two-person rule, lock).
    Refused,
    /// Waiting for a person's answer to a prompt.
    Pending,
    /// Found unfinished after a restart.
    Interrupted,
    /// A decision or notice that is not an action: a verdict, an expiry.
    Noted,
}

impl Outcome {
    pub fn is_terminal(self) -> bool {
        !matches!(self, Outcome::Requested)
    }
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Requested => "requested",
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::Refused => "refused",
            Outcome::Pending => "pending",
            Outcome::Interrupted => "interrupted",
            Outcome::Noted => "noted",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a caller records; the store adds the sequence number and hashes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub time: DateTime<Utc>,
    pub actor: Actor,
    pub action: String,
    pub service: Option<String>,
    pub parameters: BTreeMap<String, serde_json::Value>,
    pub outcome: Outcome,
    pub reason: String,
    /// What happened, in words: the result, the error, the refusal.
    pub detail: String,
    pub correlation_id: String,
    pub idempotency_key: Option<String>,
}

/// One sealed entry of the log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub seq: u64,
    #[serde(flatten)]
    pub record: Record,
    pub prev_hash: String,
    pub hash: String,
}

/// The part of an entry that is hashed: everything but its own hash. Field
/// order is fixed by the struct and maps are sorted, so the JSON encoding is
/// canonical.
#[derive(Serialize)]
pub(crate) struct Body<'a> {
    pub seq: u64,
    pub prev_hash: &'a str,
    pub record: &'a Record,
}

#[derive(Deserialize)]
pub(crate) struct OwnedBody {
    pub seq: u64,
    pub prev_hash: String,
    pub record: Record,
}

pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// SHA-256 over the previous hash and the canonical body.
pub fn chain_hash(prev_hash: &str, body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    h.update(body);
    h.finalize().into()
}

/// Which entries to return, newest first.
#[derive(Clone, Debug, Default)]
pub struct Query {
    pub service: Option<String>,
    /// Platform-qualified actor ID, such as `slack:U0123`.
    pub actor: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub correlation_id: Option<String>,
    pub limit: usize,
}

/// The result of checking the whole chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    pub checked: u64,
    /// The first bad sequence number and what is wrong with it.
    pub first_bad: Option<(u64, String)>,
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.first_bad {
            None => write!(f, "audit log intact: {} entries, hash chain verified", self.checked),
            Some((seq, what)) => write!(
                f,
                "audit log TAMPERED: first bad entry is #{seq}: {what} ({} entries checked before it)",
                self.checked
            ),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit store: {0}")]
    Store(String),
    #[error("audit store: entry #{0} cannot be read: {1}")]
    Corrupt(u64, String),
}

impl From<sled::Error> for AuditError {
    fn from(e: sled::Error) -> Self {
        AuditError::Store(e.to_string())
    }
}

/// Called with each stored entry's sequence number, hash and body;
/// returns false to stop.
pub type RawVisit<'a> = dyn FnMut(u64, &[u8], &[u8]) -> bool + 'a;

/// The audit log's read side. Appends go through [`crate::store::Store`],
/// so they share its one writer and its time limit.
pub trait AuditStore: Send + Sync {
    fn get(&self, seq: u64) -> Result<Option<Entry>, AuditError>;
    /// Matching entries, newest first.
    fn query(&self, q: &Query) -> Result<Vec<Entry>, AuditError>;
    /// Every entry in sequence order, for export.
    fn for_each(&self, f: &mut dyn FnMut(Entry) -> bool) -> Result<(), AuditError>;
    /// Every entry in sequence order as stored (sequence number, hash,
    /// body), for copying a log to another store with its bytes unchanged.
    fn for_each_raw(&self, f: &mut RawVisit) -> Result<(), AuditError>;
    fn verify(&self) -> Result<VerifyReport, AuditError>;
    /// Checks the head record and the last `n` entries only: what start-up
    /// can afford on a large log.
    fn verify_tail(&self, n: u64) -> Result<VerifyReport, AuditError>;
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
