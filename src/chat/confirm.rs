//! What a destructive button asks before it acts: "Roll back checkout?"
//! with what will happen. Slack shows it as the button's `confirm` dialog;
//! Discord, whose buttons have no dialog, answers the press with a form
//! that names it and takes an optional reason (`discord/modal.rs`).
//!
//! Destructive means the choice's action changes what runs in production
//! against the evidence or past a safeguard: a rollback (of one service,
//! a release, or several in order) and a promotion forced through a
//! freeze. A red "Reject" only records an answer, so it asks nothing.

use crate::domain::Action;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirm {
    /// A question naming the action and its target ("Roll back checkout?").
    pub title: String,
    /// What will happen when confirmed.
    pub text: String,
    /// The label of the button that goes ahead ("Roll back").
    pub yes: String,
}

/// The confirmation a choice running `action` on `service` needs, if any.
pub fn destructive(action: &Action, service: &str) -> Option<Confirm> {
    let (title, text, yes) = match action {
        Action::Rollback { to, force } => {
            let target = match to {
                Some(rev) => format!("revision {rev}"),
                None => "its previous revision".to_string(),
            };
            let past = if *force {
                " past the migration guard, as break-glass"
            } else {
                ""
            };
            (
                format!("Roll back {service}?"),
                format!(
                    "{service} goes back to {target}{past} now. The rollback is announced and recorded in the audit log under your name."
                ),
                "Roll back",
            )
        }
        Action::RollbackRelease { release } => (
            format!("Roll back release {release}?"),
            format!(
                "Every service of release {release} is rolled back, dependents first, one verified step at a time; the first step that fails stops the rest."
            ),
            "Roll back release",
        ),
        Action::RollbackInOrder { services } => (
            format!("Roll back {} services?", services.len()),
            format!(
                "These services are rolled back one verified step at a time, in this order: {}. The first step that fails stops the rest.",
                services.join(", ")
            ),
            "Roll back all",
        ),
        Action::Promote { full, force: true } => (
            format!("Force promote {service}?"),
            format!(
                "{service} is promoted {}, forced through any freeze (break-glass): announced to the team and recorded in the audit log under your name.",
                if *full { "fully" } else { "one step" }
            ),
            "Force promote",
        ),
        _ => return None,
    };
    Some(Confirm {
        title,
        text,
        yes: yes.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollbacks_and_forced_promotions_ask_and_nothing_else_does() {
        let c = destructive(
            &Action::Rollback {
                to: Some("v41".into()),
                force: false,
            },
            "checkout",
        )
        .unwrap();
        assert_eq!(c.title, "Roll back checkout?");
        assert!(c.text.starts_with("checkout goes back to revision v41 now"));
        let c = destructive(
            &Action::RollbackInOrder {
                services: vec!["search".into(), "checkout".into()],
            },
            "checkout",
        )
        .unwrap();
        assert!(
            c.text.contains("in this order: search, checkout"),
            "{}",
            c.text
        );
        assert!(destructive(
            &Action::Promote {
                full: true,
                force: true
            },
            "web"
        )
        .is_some_and(|c| c.text.contains("promoted fully, forced through any freeze")));
        for safe in [
            Action::Promote {
                full: true,
                force: false,
            },
            Action::Resume,
            Action::Pause,
        ] {
            assert_eq!(destructive(&safe, "web"), None, "{safe:?}");
        }
    }
}
