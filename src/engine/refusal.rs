//! Why the engine refused a request. A refusal changed nothing and called no
//! backend to act, which is what sets it apart from a failure: callers (the
//! HTTP API, CI clients, chat) must be able to tell a bad or untimely request
//! from a broken backend.
//!
//! Every refused outcome is made by [`Outcome::refused`], which sets its
//! [`Refusal`]: the HTTP API maps it to a status code, chat adapters can
//! read it, and the audit entry records its [`Refusal::audit_name`]. The
//! engine gets there through [`Engine::refuse`] (audited, on a service),
//! [`Engine::refuse_recorded`] (audited with parameters and state written
//! in the same commit) or [`unaudited`] (nothing was asked of a service
//! yet); intake calls it directly for a command it cannot read.

use super::{Engine, Outcome, Request, Status};
use crate::audit::Outcome as AuditOutcome;
use crate::chat::{Message, Severity};
use crate::config_file::ServiceConfig;
use crate::store::Tx;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;

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
    /// No rollout was announced with that release.
    UnknownRelease,
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
    /// A rollback would cross an irreversible or contract migration.
    MigrationGuard,
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
            UnknownService | UnknownPrompt | UnknownRelease | NotFrozen | Invalid | Unreadable => {
                "invalid"
            }
            Standby => "standby",
            ShuttingDown => "shutting_down",
            IdempotencyConflict => "idempotency_conflict",
            StoreDamaged => "store_damaged",
            StoreUnavailable => "store_unavailable",
            Overloaded => "overloaded",
            MigrationGuard => "migration",
        }
    }
}

/// What a refusal's audit entry holds besides its reason.
#[derive(Default)]
pub(super) struct RefusalEntry<'a> {
    /// The service the entry names.
    pub service: Option<&'a str>,
    /// Parameters beside `refusal` (a freeze's scope and services).
    pub params: BTreeMap<String, serde_json::Value>,
    /// State written in the same commit as the entry (the end of an
    /// `inflight` record).
    pub change: Tx,
}

impl Engine {
    /// Refuses `req`: a `refused` entry naming the reason, on `svc` (else on
    /// the service the request named), and the asker's message.
    pub(super) async fn refuse(
        &self,
        req: &Request,
        corr: &str,
        svc: Option<&ServiceConfig>,
        why: Refusal,
        title: &str,
        text: String,
    ) -> anyhow::Result<Outcome> {
        let entry = RefusalEntry {
            service: svc.map(|s| s.name()).or(req.service.as_deref()),
            ..RefusalEntry::default()
        };
        self.refuse_recorded(req, corr, entry, why, title, text)
            .await
    }

    /// Refuses `req` with an audit entry that carries `entry`'s service,
    /// parameters and change.
    pub(super) async fn refuse_recorded(
        &self,
        req: &Request,
        corr: &str,
        entry: RefusalEntry<'_>,
        why: Refusal,
        title: &str,
        text: String,
    ) -> anyhow::Result<Outcome> {
        let RefusalEntry {
            service,
            mut params,
            change,
        } = entry;
        params.insert("refusal".into(), json!(why.audit_name()));
        let recorded = self
            .record_with(
                req,
                corr,
                service,
                params,
                AuditOutcome::Refused,
                text.clone(),
                change,
            )
            .await?;
        self.telemetry
            .count_refusal(req.action.name(), why.audit_name());
        let what = match service {
            Some(s) => format!("{}: {} {s}", title, req.action.name()),
            None => format!("{}: {}", title, req.action.name()),
        };
        let m = Message::new(Severity::Warning, what)
            .text(text)
            .context(format!("correlation {corr}"))
            .context(format!("audit #{}", recorded.seq));
        Ok(Outcome::refused(why, m, corr))
    }
}

impl Outcome {
    /// A refusal with its message as it is, not audited. The engine's own
    /// unaudited refusals come through [`unaudited`].
    pub fn refused(why: Refusal, message: Message, corr: &str) -> Outcome {
        Outcome {
            refusal: Some(why),
            ..Outcome::new(Status::Refused, message, corr)
        }
    }
}

/// A refusal that is not audited: it came before anything was asked of a
/// service (a standby replica, a damaged store, an answered prompt).
pub(super) fn unaudited(
    why: Refusal,
    sev: Severity,
    title: &str,
    text: &str,
    corr: &str,
) -> Outcome {
    let message = Message::new(sev, title)
        .text(text)
        .context(format!("correlation {corr}"));
    Outcome::refused(why, message, corr)
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
