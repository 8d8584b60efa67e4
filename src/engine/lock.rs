//! One action per service at a time. A second action waits a bounded time,
//! then is refused naming who holds the lock and since when.

use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::OwnedMutexGuard;

#[derive(Clone, Debug)]
pub struct Holder {
    pub who: String,
    pub action: String,
    pub since: DateTime<Utc>,
}

#[derive(Default)]
struct Slot {
    mutex: Arc<tokio::sync::Mutex<()>>,
    holder: Mutex<Option<Holder>>,
}

#[derive(Default)]
pub struct ServiceLocks {
    slots: Mutex<HashMap<String, Arc<Slot>>>,
}

/// Held while an action runs; dropping it frees the service.
pub struct LockGuard {
    _guard: OwnedMutexGuard<()>,
    slot: Arc<Slot>,
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        *self.slot.holder.lock().unwrap() = None;
    }
}

impl ServiceLocks {
    pub async fn acquire(
        &self,
        service: &str,
        holder: Holder,
        wait: Duration,
    ) -> Result<LockGuard, Holder> {
        let slot = self
            .slots
            .lock()
            .unwrap()
            .entry(service.to_string())
            .or_default()
            .clone();
        match tokio::time::timeout(wait, slot.mutex.clone().lock_owned()).await {
            Ok(guard) => {
                *slot.holder.lock().unwrap() = Some(holder);
                Ok(LockGuard {
                    _guard: guard,
                    slot,
                })
            }
            Err(_) => Err(slot.holder.lock().unwrap().clone().unwrap_or(Holder {
                who: "another action".into(),
                action: "an action".into(),
                since: Utc::now(),
            })),
        }
    }
}
