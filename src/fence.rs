//! Fencing: a replica that is no longer within its renew deadline sends no
//! mutating request to a backend and appends nothing to the store.
//!
//! Leader election alone does not stop a holder that was paused (a long GC
//! pause, a frozen VM, SIGSTOP) in the middle of an action: when it wakes
//! it carries on where it stopped, seconds after another replica took the
//! Lease and maybe rolled the same service back. So every write asks the
//! [`Fence`] immediately before it goes out. The fence reads
//! [`Leadership`] on the monotonic clock, which a paused process sees jump
//! past its deadline the moment it runs again.
//!
//! The engine runs each backend call inside its replica's fence
//! ([`scope`]); a backend checks it with [`check`] right before each
//! request that changes something (a PATCH, a program run, a webhook POST,
//! a push), so no backend signature carries it. The store holds its own
//! copy ([`crate::store::Store::fence_with`]) and checks it before every
//! commit. Without leader election the fence is always open.

use crate::leader::{Leadership, Write};
use std::future::Future;

/// Why a write was not sent: this replica may not act any more.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct Fenced(pub String);

/// Who started an action: a replica in one leadership. In-flight records
/// carry it; a shared store lets that leadership record the action's
/// result after a successor took over (see `store::postgres_store`), and
/// the successor waits for it when the Lease was handed over.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Owner {
    /// The replica's `holderIdentity`.
    pub identity: String,
    /// The Lease's `leaseTransitions` when it won it.
    pub epoch: u64,
}

/// What a replica asks before it writes. Cheap to clone; the default is
/// open (no leader election).
#[derive(Clone, Debug, Default)]
pub struct Fence(Option<Leadership>);

impl Fence {
    /// The fence of a replica whose leadership is `l`.
    pub(crate) fn of(l: &Leadership) -> Fence {
        Fence(Some(l.clone()))
    }

    /// Whether a mutating request to a backend may be sent now.
    pub fn before_send(&self) -> Result<(), Fenced> {
        self.check(Write::Send)
    }

    /// Whether the store may take a commit now.
    pub fn before_append(&self) -> Result<(), Fenced> {
        self.check(Write::Append)
    }

    /// The leadership epoch a shared store checks inside each commit, so a
    /// write that passed [`Fence::before_append`] just before its replica
    /// lost the Lease is still refused once a newer leader has written.
    pub fn epoch(&self) -> Option<u64> {
        self.0.as_ref().and_then(Leadership::epoch)
    }

    /// The owner that in-flight records of this replica name now.
    pub fn owner(&self) -> Option<Owner> {
        self.0.as_ref().and_then(Leadership::owner)
    }

    fn check(&self, w: Write) -> Result<(), Fenced> {
        match &self.0 {
            None => Ok(()),
            Some(l) => l.may_write(w).map_err(Fenced),
        }
    }

    /// The fence of an elected replica that never won the Lease, for
    /// backends' tests.
    #[cfg(test)]
    pub(crate) fn closed() -> Fence {
        Fence::of(&tests::elected())
    }
}

tokio::task_local! {
    static CURRENT: Fence;
}

/// Runs `f` (a backend call) inside `fence`: every [`check`] it makes
/// asks that fence.
pub async fn scope<F: Future>(fence: Fence, f: F) -> F::Output {
    CURRENT.scope(fence, f).await
}

/// Asked by a backend immediately before a request that changes
/// something; `what` names the request in the error (`PATCH
/// deployments/web`, `the exec program`). Outside a [`scope`] (tests,
/// tools) the fence is open.
pub fn check(what: &str) -> Result<(), Fenced> {
    CURRENT
        .try_with(|f| f.before_send())
        .unwrap_or(Ok(()))
        .map_err(|Fenced(why)| Fenced(format!("{what} was not sent: {why}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::kube_common::KubeConnection;
    use crate::leader::ElectionSettings;
    use std::time::{Duration, Instant};

    pub(crate) fn elected() -> Leadership {
        let l = Leadership::default();
        let _ = l.elect(ElectionSettings {
            connection: KubeConnection::default(),
            lease: "rollbot".into(),
            namespace: None,
            identity: "rollbot-a".into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        });
        l
    }

    #[tokio::test]
    async fn without_an_election_every_write_goes_out() {
        let f = Fence::of(&Leadership::default());
        assert!(f.before_send().is_ok());
        assert!(f.before_append().is_ok());
        assert!(scope(f, async { check("PATCH x") }).await.is_ok());
        assert!(check("outside any scope").is_ok());
    }

    #[tokio::test]
    async fn a_holder_past_its_renew_deadline_neither_sends_nor_appends() {
        let l = elected();
        let f = Fence::of(&l);
        let refused = f.before_send().unwrap_err();
        assert!(refused.0.contains("does not hold the Lease"), "{refused}");
        l.won(Instant::now() + Duration::from_millis(60), "rollbot-a", 1);
        assert!(f.before_send().is_ok());
        assert!(f.before_append().is_ok());
        // The deadline passes as it does for a paused process: nothing ran
        // in between, the monotonic clock moved on.
        std::thread::sleep(Duration::from_millis(100));
        let sent = scope(f.clone(), async { check("PATCH deployments/web") }).await;
        let why = sent.unwrap_err().0;
        assert!(
            why.starts_with("PATCH deployments/web was not sent"),
            "{why}"
        );
        assert!(why.contains("rollbot-a"), "{why}");
        assert!(why.contains("renew deadline"), "{why}");
        let append = f.before_append().unwrap_err().0;
        assert!(append.contains("renew deadline"), "{append}");
    }

    #[tokio::test]
    async fn a_replica_that_hands_the_lease_over_only_records_what_it_started() {
        let l = elected();
        l.won(Instant::now() + Duration::from_secs(10), "rollbot-a", 1);
        let f = Fence::of(&l);
        l.hand_over();
        assert!(!l.is_leader());
        let why = f.before_send().unwrap_err().0;
        assert!(why.contains("handed the Lease"), "{why}");
        // The results of the actions it started while leading still land.
        assert!(f.before_append().is_ok());
    }

    #[tokio::test]
    async fn a_replica_that_saw_another_holder_names_it() {
        let l = elected();
        l.lost(Some("rollbot-b".into()));
        let why = Fence::of(&l).before_append().unwrap_err().0;
        assert!(why.contains("held by rollbot-b"), "{why}");
    }
}
