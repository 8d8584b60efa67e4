//! A replica that becomes the leader closes what the previous leader left
//! unfinished in a shared store (`[store] kind = "postgres"`): its
//! in-flight actions are reported `interrupted` and their idempotency keys
//! answer with that, before this replica acts on anything. Recovery at
//! start alone would miss them (the standby started long before the leader
//! died), and on a shared store would close actions the leader is still
//! running.
//!
//! A Lease taken over because its holder *released* it (a graceful stop)
//! is different from one that expired (a crash): the holder hands over as
//! soon as it sends nothing more, while its last actions still verify, and
//! then records their results (the shared store lets it: see
//! `store::postgres_store::closes_its_own`). So the new leader waits for
//! those records' results, at most [`HANDOVER_GRACE`], in the background,
//! and reports `interrupted` only what is still open after that. A repeat
//! of such an action's idempotency key waits for that result meanwhile, as
//! a repeat waits for an action running on this replica.

use super::{Engine, Inflight, Outcome, Status};
use crate::audit::{Entry, Outcome as AuditOutcome};
use crate::chat::{Message, Severity};
use crate::store::Table;
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a stopping replica finishes the actions it started before it
/// exits (`serve`), and so how long its successor waits for their results.
pub const HANDOVER_GRACE: Duration = Duration::from_secs(60);

/// Whether this replica led when it last looked (and recovered then), and
/// the in-flight records of a stopping leader it is waiting for.
/// And, without an election, whether the recovery due at start waits for
/// a store that could not be reached then.
#[derive(Default)]
pub struct Takeover(
    tokio::sync::Mutex<bool>,
    std::sync::Mutex<HashSet<String>>,
    std::sync::atomic::AtomicBool,
);

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
                    tracing::warn!(error = %e, "could not recover unfinished actions yet");
                    return;
                }
            }
            self.takeover.2.store(false, Ordering::SeqCst);
        }
        *led = leader;
    }

    /// Without an election: the store could not be reached at start, so
    /// the start's recovery runs before the first request once it answers
    /// (see `runtime::when_reachable`), never while actions run.
    pub fn recover_before_acting(&self) {
        self.takeover.2.store(true, Ordering::SeqCst);
    }

    /// Whether a request must first recover (a takeover, or a recovery
    /// that waits for the store).
    pub(super) fn may_need_recovery(&self) -> bool {
        self.config.leader_election.is_some() || self.takeover.2.load(Ordering::SeqCst)
    }

    /// Recovers now if a recovery is due (see [`Self::recover_before_acting`]).
    pub async fn recover_if_due(&self) {
        if self.may_need_recovery() {
            self.recover_on_takeover().await;
        }
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

impl Engine {
    /// Whether `f` was started by the leader that released the Lease this
    /// replica took: that leader is finishing it and records its result.
    pub(super) fn handed_over_by_its_owner(&self, f: &Inflight) -> bool {
        let (Some(theirs), Some(mine)) = (&f.owner, self.leadership.owner()) else {
            return false;
        };
        self.leadership.took_released()
            && theirs.identity != mine.identity
            && theirs.epoch + 1 == mine.epoch
    }

    /// Waits in the background for the previous leader to record `f`'s
    /// result; reports it interrupted if it does not within
    /// [`HANDOVER_GRACE`] (stopped, killed past its grace period).
    pub(super) fn await_its_owner(&self, f: Inflight) {
        let Some(me) = self.me.upgrade() else { return };
        if !self
            .takeover
            .1
            .lock()
            .unwrap()
            .insert(f.correlation_id.clone())
        {
            return;
        }
        // Taken now, before any request runs on this leader: a repeat of
        // the key waits for the result instead of acting a second time.
        let held = match (&f.idempotency_key, &f.command) {
            (Some(k), Some(c)) => me.idem.hold(k, c).map(|tx| (k.clone(), c.clone(), tx)),
            _ => None,
        };
        let owner = f
            .owner
            .as_ref()
            .map(|o| o.identity.clone())
            .unwrap_or_default();
        tracing::warn!(correlation = %f.correlation_id, service = %f.service, action = %f.action, owner = %owner, "took over a released Lease: waiting for the previous leader to record this action's result");
        tokio::spawn(async move {
            let ended = me.wait_for_owner(&f).await;
            me.takeover.1.lock().unwrap().remove(&f.correlation_id);
            let (outcome, stored) = match ended {
                Ok(Some(o)) => o,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(correlation = %f.correlation_id, error = %e, "could not settle an action of the previous leader; the next takeover looks again");
                    return;
                }
            };
            if let Some((key, command, tx)) = held {
                let now = me.clock.now();
                if let Err(e) = me
                    .idem
                    .finish(&key, &command, now, tx, &outcome, !stored)
                    .await
                {
                    tracing::warn!(correlation = %f.correlation_id, error = %e, "could not keep the outcome for the action's idempotency key");
                }
            }
        });
    }

    /// Polls until `f`'s record is gone or the grace is over, then settles
    /// it: the owner's result (and whether its key's outcome is already
    /// stored), or `interrupted`. `None`: this replica stopped leading.
    async fn wait_for_owner(&self, f: &Inflight) -> anyhow::Result<Option<(Outcome, bool)>> {
        let corr = &f.correlation_id;
        let until = Instant::now() + HANDOVER_GRACE;
        while Instant::now() < until {
            if let Ok(None) = self.store.get_raw(Table::Inflight, corr).await {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        if !self.leadership.is_leader() {
            return Ok(None);
        }
        loop {
            let steps = self
                .store
                .audit_query(crate::audit::Query {
                    correlation_id: Some(corr.clone()),
                    ..Default::default()
                })
                .await?;
            match super::recovery::unfinished(&steps, &f.action) {
                Some(false) => {
                    let ended = steps
                        .iter()
                        .find(|e| e.record.action == f.action && e.record.outcome.is_terminal())
                        .expect("a finished action has its result");
                    tracing::info!(correlation = %corr, outcome = ?ended.record.outcome, "the previous leader recorded the result of its action as it stopped");
                    let kept = match &f.idempotency_key {
                        Some(k) => self.store.get_raw(Table::Idempotency, k).await?.is_some(),
                        None => true,
                    };
                    return Ok(Some((outcome_of(ended), kept)));
                }
                Some(true) => {
                    if let Some(o) = self.mark_interrupted(f).await? {
                        return Ok(Some((o, true)));
                    }
                    // Its result landed meanwhile: read it.
                }
                None => {
                    self.store.remove(Table::Inflight, corr).await?;
                    return Ok(None);
                }
            }
        }
    }
}

/// What a repeat of an action's key answers, from its result entry.
fn outcome_of(e: &Entry) -> Outcome {
    let r = &e.record;
    let (status, sev, word) = match r.outcome {
        AuditOutcome::Succeeded => (Status::Succeeded, Severity::Success, "succeeded"),
        AuditOutcome::Refused => (Status::Refused, Severity::Warning, "was refused"),
        _ => (Status::Failed, Severity::Critical, "failed"),
    };
    let service = r.service.as_deref().unwrap_or("-");
    let message = Message::new(sev, format!("{} of {service} {word}", r.action))
        .text(r.detail.clone())
        .context(format!("correlation {}", r.correlation_id))
        .context(format!("audit #{}", e.seq));
    Outcome::new(status, message, &r.correlation_id)
}
