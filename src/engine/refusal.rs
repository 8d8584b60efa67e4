//! Why the engine refused a request. A refusal changed nothing and called no
//! backend to act, which is what sets it apart from a failure: callers (the
//! HTTP API, CI clients, chat) must be able to tell a bad or untimely request
//! from a broken backend.

use serde::{Deserialize, Serialize};

/// The reason for a refusal, machine-readable (`"not_allowed"`, `"frozen"`…).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// The actor's roles do not carry the permission the action needs.
    NotAllowed,
    /// A freeze holds promotions of the service.
    Frozen,
    /// Another action holds the service's lock.
    Busy,
    /// The backend's preflight found the action cannot be done as asked
    /// (an unknown revision, a paused Deployment…).
    Preflight,
    /// A critical service's promotion needs a different person's approval.
    TwoPerson,
    /// The prompt expired before it was answered.
    Expired,
    /// The prompt was answered already.
    AlreadyAnswered,
    /// No such service, or a scope that covers none.
    UnknownService,
    /// No such prompt (a forged or foreign button).
    UnknownPrompt,
    /// There is no freeze on that exact scope.
    NotFrozen,
    /// Something the request needs is missing (a break-glass reason).
    Invalid,
    /// The command could not be read.
    Unreadable,
    /// This replica is standing by; the leader acts.
    Standby,
    /// rollbot is stopping and takes no new actions.
    ShuttingDown,
    /// The idempotency key was used before for a different command.
    IdempotencyConflict,
    /// rollbot's store failed its check at start: it acts on nothing.
    StoreDamaged,
    /// rollbot's store did not record the request, so nothing was done.
    StoreUnavailable,
    /// Too many views were asked for at once; try again shortly.
    Overloaded,
}

impl Refusal {
    /// The audit entry's `refusal` parameter and the refusal metric's
    /// `reason` label. These strings predate the enum and stay as they were,
    /// so stored logs, queries and dashboards keep working.
    pub fn audit_name(self) -> &'static str {
        use Refusal::*;
        match self {
            NotAllowed => "permission",
            Frozen => "freeze",
            Busy => "lock",
            Preflight => "preflight",
            TwoPerson => "two_person",
            Expired => "expired",
            AlreadyAnswered => "answered",
            UnknownService | UnknownPrompt | NotFrozen | Invalid | Unreadable => "invalid",
            Standby => "standby",
            ShuttingDown => "shutting_down",
            IdempotencyConflict => "idempotency_conflict",
            StoreDamaged => "store_damaged",
            StoreUnavailable => "store_unavailable",
            Overloaded => "overloaded",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_sees_snake_case_and_the_audit_keeps_its_old_words() {
        assert_eq!(
            serde_json::to_value(Refusal::NotAllowed).unwrap(),
            "not_allowed"
        );
        assert_eq!(
            serde_json::to_value(Refusal::TwoPerson).unwrap(),
            "two_person"
        );
        assert_eq!(Refusal::NotAllowed.audit_name(), "permission");
        assert_eq!(Refusal::Frozen.audit_name(), "freeze");
        assert_eq!(Refusal::Busy.audit_name(), "lock");
        assert_eq!(Refusal::UnknownService.audit_name(), "invalid");
    }
}
