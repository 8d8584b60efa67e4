//! How long a store's writer has been on its current group, read by the
//! health probe without waiting for the writer: a write that never ends
//! shows as a growing number instead of a hung probe.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub(crate) struct WriterBusy {
    /// Milliseconds since `epoch` when the writer started its current
    /// group; 0 while it waits for work.
    since_ms: AtomicU64,
    epoch: Instant,
}

impl WriterBusy {
    pub(crate) fn new() -> WriterBusy {
        WriterBusy {
            since_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// The writer took a group.
    pub(crate) fn start(&self) {
        let now = (self.epoch.elapsed().as_millis() as u64).max(1);
        self.since_ms.store(now, Ordering::Release);
    }

    /// The writer finished its group and waits for work.
    pub(crate) fn idle(&self) {
        self.since_ms.store(0, Ordering::Release);
    }

    /// How long the current group has taken so far; `None` when idle.
    pub(crate) fn busy_for(&self) -> Option<Duration> {
        match self.since_ms.load(Ordering::Acquire) {
            0 => None,
            ms => Some(
                self.epoch
                    .elapsed()
                    .saturating_sub(Duration::from_millis(ms)),
            ),
        }
    }
}
