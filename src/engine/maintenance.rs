//! Housekeeping that keeps the store small and its health honest: expired
//! idempotency records and ad hoc freezes go, and a store that failed a call
//! is probed until it answers again (so `/readyz` recovers by itself even
//! when no request comes in to try it).

use super::Engine;
use crate::store::Table;
use std::sync::Arc;
use std::time::Duration;

/// How often expired records are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(600);
/// How often a failing store is probed.
const PROBE_EVERY: Duration = Duration::from_secs(2);

impl Engine {
    /// Runs until the process ends.
    pub async fn maintain_forever(self: Arc<Self>) {
        let mut tick = tokio::time::interval(PROBE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut next_sweep = tokio::time::Instant::now() + SWEEP_EVERY;
        loop {
            tick.tick().await;
            if self.store.health.failing() {
                let probe = self
                    .store
                    .put(Table::Settings, "store:probe", &self.clock.now())
                    .await
                    .and(
                        self.store
                            .get_raw(Table::Settings, "store:probe")
                            .await
                            .map(drop),
                    );
                if let Err(e) = probe {
                    tracing::warn!(error = %e, "the store still fails");
                }
            }
            // A standby's store is the leader's to sweep (and fenced).
            if tokio::time::Instant::now() >= next_sweep && self.leadership.is_leader() {
                next_sweep = tokio::time::Instant::now() + SWEEP_EVERY;
                if let Err(e) = self.sweep().await {
                    tracing::warn!(error = %e, "could not sweep expired records");
                }
            }
        }
    }

    /// Removes expired idempotency records and ad hoc freezes now.
    pub async fn sweep(&self) -> anyhow::Result<(usize, usize)> {
        let now = self.clock.now();
        let ttl = chrono::Duration::from_std(self.config.store.idempotency_ttl.0)?;
        let keys = self.idem.sweep(now, ttl).await?;
        let freezes = self.freezes.sweep(now).await?;
        if keys + freezes > 0 {
            tracing::info!(keys, freezes, "swept expired records");
        }
        Ok((keys, freezes))
    }
}
