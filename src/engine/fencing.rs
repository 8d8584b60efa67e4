//! The engine's side of fencing (`crate::fence`): backend calls run inside
//! the replica's fence, one more check stands right before the act step,
//! and an action whose replica stopped leading on the way ends as a
//! standby refusal that is neither recorded nor announced: the leader owns
//! the service now, and its recovery reports the action as interrupted
//! from the `inflight` record this replica could not remove.

use super::act::Called;
use super::{ActiveGuard, Engine, Outcome, Refusal, Request};
use crate::chat::Severity;
use crate::config_file::ServiceConfig;
use crate::store::StoreError;
use std::sync::atomic::Ordering;
use std::time::Duration;

impl Engine {
    /// Counts an action into its act step, unless rollbot is stopping:
    /// then it is refused before anything is recorded, so a stopping
    /// replica's "no action is acting" stays true once it was seen.
    pub(super) fn begin_acting(&self, corr: &str) -> Result<ActiveGuard<'_>, Box<Outcome>> {
        self.acting.send_modify(|n| *n += 1);
        let guard = ActiveGuard(&self.acting);
        if self.closing.load(Ordering::SeqCst) {
            return Err(Box::new(super::refusal::unaudited(
                Refusal::ShuttingDown,
                Severity::Warning,
                "rollbot is shutting down",
                "This instance is stopping and takes no new actions; nothing was done. Retry in a moment: another replica takes over.",
                corr,
            )));
        }
        Ok(guard)
    }

    /// Stops taking new actions and waits (at most `limit`) until no
    /// action can send a change any more: those running are verifying or
    /// recording their result. Then the Lease can be handed over.
    pub async fn stop_acting(&self, limit: Duration) -> bool {
        self.closing.store(true, Ordering::SeqCst);
        let mut rx = self.acting.subscribe();
        let acted = tokio::time::timeout(limit, rx.wait_for(|n| *n == 0))
            .await
            .is_ok();
        acted
    }

    /// The fence this replica's backend calls run in.
    pub(super) fn fence(&self) -> crate::fence::Fence {
        self.leadership.fence()
    }

    /// The act step's own check, for every backend (the simulated one
    /// too): `Some` when this replica may not send a change now.
    pub(super) fn fenced_before_act(&self) -> Option<Called> {
        let why = self.fence().before_send().err()?;
        Some(Called::Failed {
            error: format!("the action was not sent to the backend: {why}"),
            requests: Vec::new(),
            stage: "act",
        })
    }

    /// When a backend call failed because this replica stopped leading
    /// during it: the asker's answer, naming what had been sent.
    pub(super) fn fenced_off(
        &self,
        req: &Request,
        corr: &str,
        svc: &ServiceConfig,
        called: &Called,
    ) -> Option<Outcome> {
        let Called::Failed {
            error, requests, ..
        } = called
        else {
            return None;
        };
        self.fence().before_send().err()?;
        let sent = match requests.is_empty() {
            true => "Nothing was sent to the backend.".to_string(),
            false => format!("Sent before that: {}.", requests.join("; ")),
        };
        tracing::warn!(correlation = %corr, service = svc.name(), error = %error, "stopped an action: this replica is no longer the leader");
        Some(super::refusal::unaudited(
            Refusal::Standby,
            Severity::Warning,
            &format!(
                "{} of {} stopped: this replica is no longer the leader",
                req.action.name(),
                svc.name()
            ),
            &format!("{error}\n{sent} This replica records nothing more; the leader reports the action as interrupted. Check `/status {}` on the leader before repeating it.", svc.name()),
            corr,
        ))
    }
}

/// A request that failed because the store refused this replica's write.
pub(super) fn fenced_store_error(e: &anyhow::Error) -> Option<&str> {
    match e.downcast_ref::<StoreError>() {
        Some(StoreError::Fenced(why)) => Some(why),
        _ => None,
    }
}
