//! A request carrying an idempotency key acts once; a repeat gets the first
//! outcome. Finished outcomes are stored (they survive a restart) for
//! `[store] idempotency_ttl`; a repeat that arrives while the first is still
//! running waits for it. A key reused for a different command is refused, as
//! payment APIs do: silently answering with the first command's outcome
//! would hide that the second was never done.

use super::Outcome;
use crate::store::{Store, Table};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// What is kept per key.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Kept {
    /// The command the key was first used for, as a person would type it.
    pub command: String,
    pub at: DateTime<Utc>,
    pub outcome: Outcome,
}

/// Stores written before commands were kept hold a bare outcome.
#[derive(Deserialize)]
#[serde(untagged)]
enum Stored {
    Kept(Kept),
    Bare(Outcome),
}

/// A key being worked on: its command, and where its outcome will appear.
type Running = (String, watch::Receiver<Option<Outcome>>);

pub struct Idempotency {
    store: Arc<Store>,
    running: Mutex<HashMap<String, Running>>,
}

/// What to do with a keyed request.
pub enum Claim {
    /// First time: run it, then call [`Idempotency::finish`].
    Run(watch::Sender<Option<Outcome>>),
    /// Already done (or finished while we waited): here is the outcome.
    Done(Outcome),
    /// The key was used for another command.
    Conflict { first: String },
}

impl Idempotency {
    pub fn new(store: Arc<Store>) -> Idempotency {
        Idempotency {
            store,
            running: Mutex::new(HashMap::new()),
        }
    }

    /// Claims `key` for `command`; records older than `ttl` are forgotten.
    pub async fn claim(
        &self,
        key: &str,
        command: &str,
        now: DateTime<Utc>,
        ttl: chrono::Duration,
    ) -> anyhow::Result<Claim> {
        loop {
            match self.store.get::<Stored>(Table::Idempotency, key).await? {
                Some(Stored::Kept(k)) if k.at + ttl > now => {
                    if k.command != command {
                        return Ok(Claim::Conflict { first: k.command });
                    }
                    return Ok(Claim::Done(k.outcome));
                }
                Some(Stored::Bare(o)) => return Ok(Claim::Done(o)),
                _ => {}
            }
            let waiting = {
                let mut running = self.running.lock().unwrap();
                match running.get(key) {
                    Some((first, _)) if first != command => {
                        return Ok(Claim::Conflict {
                            first: first.clone(),
                        })
                    }
                    Some((_, rx)) => rx.clone(),
                    None => {
                        let (tx, rx) = watch::channel(None);
                        running.insert(key.to_string(), (command.to_string(), rx));
                        return Ok(Claim::Run(tx));
                    }
                }
            };
            let mut rx = waiting;
            let seen = rx.wait_for(|o| o.is_some()).await.map(|v| v.clone());
            match seen {
                Ok(v) => {
                    if let Some(o) = v {
                        return Ok(Claim::Done(o));
                    }
                }
                // The first attempt ended without a result (its task was
                // cancelled): forget it and try again.
                Err(_) => {
                    self.running.lock().unwrap().remove(key);
                }
            }
        }
    }

    /// Marks `key` as running here (unless it already is), for an action
    /// the previous leader is finishing: repeats wait for [`Self::finish`].
    pub fn hold(&self, key: &str, command: &str) -> Option<watch::Sender<Option<Outcome>>> {
        let mut running = self.running.lock().unwrap();
        if running.contains_key(key) {
            return None;
        }
        let (tx, rx) = watch::channel(None);
        running.insert(key.to_string(), (command.to_string(), rx));
        Some(tx)
    }

    /// The record that makes a repeat of `key` get `outcome`.
    pub fn kept(command: &str, now: DateTime<Utc>, outcome: &Outcome) -> Kept {
        Kept {
            command: command.to_string(),
            at: now,
            outcome: outcome.clone(),
        }
    }

    /// Stores the outcome (when it should be replayed) and wakes waiters.
    pub async fn finish(
        &self,
        key: &str,
        command: &str,
        now: DateTime<Utc>,
        tx: watch::Sender<Option<Outcome>>,
        outcome: &Outcome,
        remember: bool,
    ) -> anyhow::Result<()> {
        let stored = if remember {
            self.store
                .put(Table::Idempotency, key, &Self::kept(command, now, outcome))
                .await
        } else {
            Ok(())
        };
        // Waiters get the outcome even when it could not be stored.
        self.running.lock().unwrap().remove(key);
        let _ = tx.send(Some(outcome.clone()));
        Ok(stored?)
    }

    /// Forgets records older than `ttl`; returns how many.
    pub async fn sweep(&self, now: DateTime<Utc>, ttl: chrono::Duration) -> anyhow::Result<usize> {
        #[derive(Deserialize)]
        struct At {
            at: Option<DateTime<Utc>>,
        }
        Ok(self
            .store
            .sweep(Table::Idempotency, |v| {
                match serde_json::from_slice::<At>(v).ok().and_then(|a| a.at) {
                    Some(at) => at + ttl <= now,
                    // Bare outcomes predate expiry: they go at the first sweep.
                    None => true,
                }
            })
            .await?)
    }
}
