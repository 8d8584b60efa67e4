//! A replica that becomes the leader closes what the previous leader left
//! unfinished in a shared store (`[store] kind = "postgres"`): its
//! in-flight actions are reported `interrupted` and their idempotency keys
//! answer with that, before this replica acts on anything. Recovery at
//! start alone would miss them (the standby started long before the leader
//! died), and on a shared store would close actions the leader is still
//! running.

use super::Engine;
use std::sync::Arc;
use std::time::Duration;

/// Whether this replica led when it last looked (and recovered then).
#[derive(Default)]
pub struct Takeover(tokio::sync::Mutex<bool>);

impl Engine {
    /// Recovers if this replica leads now and did not when it last looked.
    /// Requests wait here while a takeover recovers, so a retry of an
    /// interrupted action gets the interruption instead of acting again.
    pub(super) async fn recover_on_takeover(&self) {
        let mut led = self.takeover.0.lock().await;
        let leader = self.leadership.is_leader();
        if leader && !*led {
            match self.recover().await {
                Ok(found) if !found.is_empty() => tracing::warn!(
                    count = found.len(),
                    "took over the Lease: marked the previous leader's unfinished actions interrupted"
                ),
                Ok(_) => {}
                Err(e) => {
                    // Tried again on the next request or look.
                    tracing::warn!(error = %e, "took over the Lease but could not recover unfinished actions");
                    return;
                }
            }
        }
        *led = leader;
    }

    /// Looks every `every` whether this replica took the Lease over, so
    /// interrupted actions are announced without waiting for a request.
    pub async fn recover_on_takeover_forever(self: Arc<Self>, every: Duration) {
        loop {
            self.recover_on_takeover().await;
            tokio::time::sleep(every).await;
        }
    }
}
