//! Chat forms: a rollback (or a forced promotion) typed in Slack or Discord
//! without a reason asks for the reason in a form (a Slack or Discord
//! modal) instead of acting without one.
//!
//! The form carries the command without its reason, as the grammar reads
//! it (`rollback checkout force`), and asks for the reason and, for a
//! service's rollback, the target revision. Its submission is turned back
//! into a [`Command`] by the grammar with the reason and revision set, so a
//! submitted form is exactly the command typed in full: the same checks,
//! and a reason that starts with "to" is never a revision. Nothing in a
//! form's context is trusted beyond what its submitter could have typed:
//! the engine checks roles, freezes and everything else on submission.

use super::{checked_reason, err, parse, revision, Command, ParseError};
use crate::limits::MAX_REASON;
use std::time::Duration;

/// The form a command asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Form {
    /// The command without its reason (`rollback checkout force`), as the
    /// grammar reads it.
    pub context: String,
    /// A short title (Slack allows 24 characters): "Roll back".
    pub title: &'static str,
    /// What it acts on: `checkout`, `release 2026-12-06.1`.
    pub target: String,
    /// What submitting does, in a sentence.
    pub what: String,
    /// The submit button's label.
    pub submit: &'static str,
    /// Whether the form asks for a target revision (optional), and the one
    /// typed already.
    pub asks_revision: bool,
    pub revision: Option<String>,
}

/// Which input of a form a problem is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    Reason,
    Revision,
}

impl Input {
    /// The input's id in the form (Slack's `block_id` and `action_id`,
    /// Discord's `custom_id`).
    pub fn id(self) -> &'static str {
        match self {
            Input::Reason => "reason",
            Input::Revision => "revision",
        }
    }
}

/// A submission that cannot act, and which input to fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FormError {
    pub input: Input,
    pub message: String,
}

/// The form a command typed in chat asks for: a rollback or a forced
/// promotion without a reason. A dry run changes nothing and asks nothing.
pub fn asks(cmd: &Command) -> Option<Form> {
    match cmd {
        Command::Rollback {
            service,
            to,
            force,
            reason,
            dry_run: false,
        } if reason.trim().is_empty() => Some(Form {
            context: format!("rollback {service}{}", if *force { " force" } else { "" }),
            title: "Roll back",
            target: service.clone(),
            what: format!(
                "Roll back {service}{}. Your reason is recorded in the audit log and shown to the team.",
                if *force {
                    " past the migration guard (a second person approves)"
                } else {
                    ""
                }
            ),
            submit: "Roll back",
            asks_revision: true,
            revision: to.clone(),
        }),
        Command::RollbackRelease { release, reason } if reason.trim().is_empty() => Some(Form {
            context: format!("rollback release {release}"),
            title: "Roll back release",
            target: release.clone(),
            what: format!(
                "Roll back every service of release {release}, dependents first. Your reason is recorded in the audit log and shown to the team."
            ),
            submit: "Roll back",
            asks_revision: false,
            revision: None,
        }),
        Command::Promote {
            service,
            full,
            force: true,
            reason,
            dry_run: false,
        } if reason.trim().is_empty() => Some(Form {
            context: format!("promote {service}{} force", if *full { " full" } else { "" }),
            title: "Force promote",
            target: service.clone(),
            what: format!(
                "Promote {service} {}through a freeze, as break-glass. Your reason is recorded in the audit log and announced.",
                if *full { "fully " } else { "" }
            ),
            submit: "Force promote",
            asks_revision: false,
            revision: None,
        }),
        _ => None,
    }
}

/// The command a submitted form makes: `context` read by the grammar, with
/// the `reason` and (for a rollback) the `revision` written in the form.
pub fn submit(
    context: &str,
    reason: &str,
    revision_text: Option<&str>,
    services: &[&str],
) -> Result<Command, FormError> {
    let whole = |e: ParseError| FormError {
        input: Input::Reason,
        message: format!("{}; nothing was done", e.message),
    };
    let mut cmd = parse(context, services).map_err(whole)?;
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(FormError {
            input: Input::Reason,
            message: "write why: the reason is recorded in the audit log and shown to the team"
                .into(),
        });
    }
    let name = match &cmd {
        Command::Promote { .. } => "promote",
        _ => "rollback",
    };
    checked_reason(reason, name).map_err(|e| FormError {
        input: Input::Reason,
        message: e.message,
    })?;
    let to = match revision_text.map(str::trim).filter(|r| !r.is_empty()) {
        Some(r) => Some(revision(r, "rollback").map_err(|e| FormError {
            input: Input::Revision,
            message: e.message,
        })?),
        None => None,
    };
    match &mut cmd {
        Command::Rollback {
            reason: r, to: t, ..
        } => {
            *r = reason.to_string();
            if to.is_some() {
                *t = to;
            }
        }
        Command::RollbackRelease { reason: r, .. } | Command::Promote { reason: r, .. } => {
            *r = reason.to_string();
        }
        _ => return Err(whole(err("this form is not one rollbot makes", "rollback"))),
    }
    Ok(cmd)
}

/// The longest reason a form takes, for the input's own limit.
pub const REASON_MAX: usize = MAX_REASON;

/// Refuses a form opened at `opened` (Unix seconds) when `ttl` has passed
/// by `now`: it was asked for a moment that is over, like a prompt.
pub fn check_open(opened: i64, now: i64, ttl: Duration) -> Result<(), String> {
    let age = now.saturating_sub(opened);
    if age <= ttl.as_secs() as i64 {
        return Ok(());
    }
    let at = chrono::DateTime::from_timestamp(opened, 0)
        .map(|t| t.format("%H:%M UTC").to_string())
        .unwrap_or_else(|| "long ago".into());
    Err(format!(
        "This form was opened at {at} and expired after {} ([engine] prompt_ttl); nothing was done. Type the command again, with the reason at its end.",
        humantime::format_duration(ttl)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVICES: &[&str] = &["checkout", "payments"];

    #[test]
    fn only_destructive_commands_without_a_reason_ask() {
        let form = |line: &str| asks(&parse(line, SERVICES).unwrap());
        let f = form("/rollback checkout to v41").unwrap();
        assert_eq!(f.context, "rollback checkout");
        assert_eq!(f.revision.as_deref(), Some("v41"));
        assert!(f.asks_revision);
        assert_eq!(
            form("/rollback checkout force").unwrap().context,
            "rollback checkout force"
        );
        assert_eq!(
            form("/rollback release 2026-12-06.1").unwrap().context,
            "rollback release 2026-12-06.1"
        );
        assert_eq!(
            form("/promote checkout full force").unwrap().context,
            "promote checkout full force"
        );
        for line in [
            "/rollback checkout bad deploy",
            "/rollback checkout dry-run",
            "/promote checkout full",
            "/pause checkout",
            "/freeze all",
        ] {
            assert_eq!(form(line), None, "{line}");
        }
    }

    #[test]
    fn a_submitted_form_is_the_command_typed_in_full() {
        let cmd = submit(
            "rollback checkout force",
            " to v41 was bad ",
            Some("v40"),
            SERVICES,
        )
        .unwrap();
        assert_eq!(
            cmd,
            Command::Rollback {
                service: "checkout".into(),
                to: Some("v40".into()),
                force: true,
                reason: "to v41 was bad".into(),
                dry_run: false,
            }
        );
        // The grammar's checks, naming the input to fix.
        let e = submit("rollback checkout", "   ", None, SERVICES).unwrap_err();
        assert_eq!(e.input, Input::Reason);
        let e = submit("rollback checkout", "bad", Some("--force"), SERVICES).unwrap_err();
        assert_eq!(e.input, Input::Revision);
        assert!(e.message.contains("starts with `-`"), "{}", e.message);
        let e = submit("rollback checkout", &"x".repeat(2_001), None, SERVICES).unwrap_err();
        assert!(e.message.contains("at most 2,000"), "{}", e.message);
        // A service removed from the config since the form opened.
        let e = submit("rollback search", "bad", None, SERVICES).unwrap_err();
        assert!(e.message.contains("no service `search`"), "{}", e.message);
        assert!(submit("status checkout", "x", None, SERVICES).is_err());
    }

    #[test]
    fn a_form_expires_like_a_prompt() {
        let ttl = Duration::from_secs(1800);
        assert!(check_open(1_000, 1_000 + 1800, ttl).is_ok());
        let e = check_open(0, 1801, ttl).unwrap_err();
        assert!(
            e.contains("opened at 00:00 UTC and expired after 30m"),
            "{e}"
        );
    }
}
