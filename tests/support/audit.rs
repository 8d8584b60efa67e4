//! The audit log as the end-to-end tests read it back: each entry's
//! record, the few fields most tests compare, and one assertion for how
//! many entries each (action, outcome, actor) has.

use serde_json::Value;
use std::fmt;
use std::path::Path;

/// The records of the store in `data`, oldest first (read after the
/// server stopped). An exported entry carries its record inline or under
/// `record`; this reads either.
pub fn records(data: &Path) -> Vec<Value> {
    super::audit_export(data)
        .into_iter()
        .map(|v| {
            if v["record"].is_object() {
                v["record"].clone()
            } else {
                v
            }
        })
        .collect()
}

/// One audit entry: what was asked, how it ended, who asked (the actor's
/// platform ID), and the detail.
#[derive(Clone, PartialEq, Eq)]
pub struct Row {
    pub action: String,
    pub outcome: String,
    pub actor: String,
    pub detail: String,
}

impl Row {
    pub fn of(record: &Value) -> Row {
        let field = |v: &Value| v.as_str().unwrap_or_default().to_string();
        Row {
            action: field(&record["action"]),
            outcome: field(&record["outcome"]),
            actor: field(&record["actor"]["id"]),
            detail: field(&record["detail"]),
        }
    }
}

/// `promote pending by flagger: "…"`, one line an entry in a failure.
impl fmt::Debug for Row {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} by {}", self.action, self.outcome, self.actor)?;
        if !self.detail.is_empty() {
            write!(f, ": {:?}", self.detail)?;
        }
        Ok(())
    }
}

/// The [`Row`]s of the store in `data`, oldest first.
pub fn rows(data: &Path) -> Vec<Row> {
    records(data).iter().map(Row::of).collect()
}

/// Asserts how many entries each `(action, outcome, actor, count)` has;
/// an empty actor counts every actor. All counts are compared at once, so
/// a failure shows every one that is off, and the whole log.
pub fn assert_audit_counts(audit: &[Row], expected: &[(&str, &str, &str, usize)]) {
    let found: Vec<(&str, &str, &str, usize)> = expected
        .iter()
        .map(|&(action, outcome, actor, _)| {
            let n = audit
                .iter()
                .filter(|r| {
                    r.action == action
                        && r.outcome == outcome
                        && (actor.is_empty() || r.actor == actor)
                })
                .count();
            (action, outcome, actor, n)
        })
        .collect();
    assert_eq!(
        found, expected,
        "audit entries by (action, outcome, actor, count); the log:\n{audit:#?}"
    );
}

/// `rollbot audit list --data DATA FILTER…` (`--service checkout`,
/// `--actor console:dana`): what it printed.
pub fn list(data: &Path, filter: &[&str]) -> String {
    let mut args = vec!["audit", "list", "--data", data.to_str().unwrap()];
    args.extend_from_slice(filter);
    super::text(&super::rollbot(&args))
}
