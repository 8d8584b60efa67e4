//! A request carrying an idempotency key acts once; a repeat gets the first
//! outcome. Finished outcomes are stored (they survive a restart); a repeat
//! that arrives while the first is still running waits for it.

use super::Outcome;
use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::watch;

pub struct Idempotency {
    tree: sled::Tree,
    running: Mutex<HashMap<String, watch::Receiver<Option<Outcome>>>>,
}

/// What to do with a keyed request.
pub enum Claim {
    /// First time: run it, then call [`Idempotency::finish`].
    Run(watch::Sender<Option<Outcome>>),
    /// Already done (or finished while we waited): here is the outcome.
    Done(Outcome),
}

impl Idempotency {
    pub fn new(tree: sled::Tree) -> Idempotency {
        Idempotency {
            tree,
            running: Mutex::new(HashMap::new()),
        }
    }

    pub async fn claim(&self, key: &str) -> anyhow::Result<Claim> {
        loop {
            if let Some(done) = crate::store::get::<Outcome>(&self.tree, key)? {
                return Ok(Claim::Done(done));
            }
            let waiting = {
                let mut running = self.running.lock().unwrap();
                match running.get(key) {
                    Some(rx) => rx.clone(),
                    None => {
                        let (tx, rx) = watch::channel(None);
                        running.insert(key.to_string(), rx);
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

    /// Stores the outcome (when it should be replayed) and wakes waiters.
    pub fn finish(
        &self,
        key: &str,
        tx: watch::Sender<Option<Outcome>>,
        outcome: &Outcome,
        remember: bool,
    ) -> anyhow::Result<()> {
        if remember {
            crate::store::put(&self.tree, key, outcome)?;
        }
        self.running.lock().unwrap().remove(key);
        let _ = tx.send(Some(outcome.clone()));
        Ok(())
    }
}
