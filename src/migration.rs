//! Database migrations a rollout carries, and what they mean for a
//! rollback: code rolled back past a migration it cannot read breaks, so a
//! rollback past an irreversible migration or a `contract` phase is refused
//! by default (the engine's migration guard), with roll-forward advice.
//!
//! The list comes from `POST /api/v1/rollouts` (`"migrations": [{"id":
//! "2026_12_add_orders_idx", "reversible": true, "phase": "expand"}]`) and
//! from the demo's `/deploy`. It is checked here, in one place, so bad input
//! gets the same clear message wherever it was written.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;

/// Where a migration sits in an expand/contract change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Adds (columns, tables, indexes): old code still works with it.
    Expand,
    /// Removes or renames what old code reads: old code breaks.
    Contract,
    /// Moves or rewrites data.
    Data,
}

impl Phase {
    pub const ALL: [Phase; 3] = [Phase::Expand, Phase::Contract, Phase::Data];

    pub fn name(self) -> &'static str {
        match self {
            Phase::Expand => "expand",
            Phase::Contract => "contract",
            Phase::Data => "data",
        }
    }

    fn parse(text: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.name() == text)
    }
}

/// One migration a rollout ran.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Migration {
    pub id: String,
    /// It has a tested down step.
    pub reversible: bool,
    pub phase: Phase,
}

impl Migration {
    /// Old code cannot be trusted on the schema this migration leaves.
    pub fn blocks_rollback(&self) -> bool {
        !self.reversible || self.phase == Phase::Contract
    }

    /// Why it blocks a rollback, in a few words.
    pub fn why_blocking(&self) -> &'static str {
        match (self.reversible, self.phase) {
            (false, Phase::Contract) => "irreversible, contract phase",
            (false, _) => "irreversible",
            _ => "contract phase: old code may read what it removed",
        }
    }
}

impl fmt::Display for Migration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}, {})",
            self.id,
            self.phase.name(),
            if self.reversible {
                "reversible"
            } else {
                "irreversible"
            }
        )
    }
}

/// The longest migration id.
pub const MAX_ID: usize = 200;
/// The most migrations one rollout may carry.
pub const MAX_MIGRATIONS: usize = 100;

const EXAMPLE: &str =
    r#"[{"id": "2026_12_add_orders_idx", "reversible": true, "phase": "expand"}]"#;

/// A migration list that cannot be taken: where (`migrations[1].phase`)
/// and what to write instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MigrationError {
    pub field: String,
    pub message: String,
}

impl fmt::Display for MigrationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

fn bad(field: String, what: String) -> MigrationError {
    MigrationError {
        message: format!("{field}: {what}"),
        field,
    }
}

/// Reads the JSON value of a rollout's `migrations`: an array of objects
/// with exactly `id` (a name), `reversible` (true or false) and `phase`
/// (expand, contract, data), ids unique.
pub fn from_json(v: &Value) -> Result<Vec<Migration>, MigrationError> {
    let Some(items) = v.as_array() else {
        return Err(bad(
            "migrations".into(),
            format!(
                "expected a list of migrations such as {EXAMPLE}, not {}",
                kind(v)
            ),
        ));
    };
    if items.len() > MAX_MIGRATIONS {
        return Err(bad(
            "migrations".into(),
            format!(
                "{} migrations; one rollout carries at most {MAX_MIGRATIONS}",
                items.len()
            ),
        ));
    }
    let mut out: Vec<Migration> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = format!("migrations[{i}]");
        let Some(obj) = item.as_object() else {
            return Err(bad(
                at,
                format!("expected an object such as {EXAMPLE}, not {}", kind(item)),
            ));
        };
        if let Some(k) = obj
            .keys()
            .find(|k| !["id", "reversible", "phase"].contains(&k.as_str()))
        {
            return Err(bad(
                format!("{at}.{k}"),
                "unknown field; a migration has only `id`, `reversible` and `phase`".into(),
            ));
        }
        let id = match obj.get("id") {
            None => return Err(bad(format!("{at}.id"), "missing; name the migration as your migration tool does, for example \"2026_12_add_orders_idx\"".into())),
            Some(Value::String(s)) => s.clone(),
            Some(other) => return Err(bad(format!("{at}.id"), format!("expected a string such as \"2026_12_add_orders_idx\", not {}", kind(other)))),
        };
        check_id(&id).map_err(|e| bad(format!("{at}.id"), e))?;
        let reversible = match obj.get("reversible") {
            None => return Err(bad(
                format!("{at}.reversible"),
                "missing; write true when the migration has a tested down step, false otherwise"
                    .into(),
            )),
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(bad(
                    format!("{at}.reversible"),
                    format!("expected true or false, not {}", kind(other)),
                ))
            }
        };
        let phase = match obj.get("phase") {
            None => {
                return Err(bad(
                    format!("{at}.phase"),
                    "missing; write one of expand, contract, data".into(),
                ))
            }
            Some(Value::String(s)) => phase(s).map_err(|e| bad(format!("{at}.phase"), e))?,
            Some(other) => {
                return Err(bad(
                    format!("{at}.phase"),
                    format!(
                        "expected one of \"expand\", \"contract\", \"data\", not {}",
                        kind(other)
                    ),
                ))
            }
        };
        if let Some(first) = out.iter().position(|m| m.id == id) {
            return Err(bad(
                format!("{at}.id"),
                format!(
                    "`{id}` is listed twice (also migrations[{first}]); list each migration once"
                ),
            ));
        }
        out.push(Migration {
            id,
            reversible,
            phase,
        });
    }
    Ok(out)
}

/// Reads the demo's short form, `ID:PHASE` or `ID:PHASE:irreversible`
/// (reversible otherwise), one word per migration, with the same checks.
pub fn from_words(words: &[&str]) -> Result<Vec<Migration>, MigrationError> {
    let mut list = Vec::new();
    for (i, w) in words.iter().enumerate() {
        let at = format!("migration {}", i + 1);
        let parts: Vec<&str> = w.split(':').collect();
        let reversible = match parts.get(2).copied() {
            None | Some("reversible") => true,
            Some("irreversible") => false,
            Some(x) => return Err(bad(at, format!("`{x}` in `{w}` is neither reversible nor irreversible; write ID:PHASE or ID:PHASE:irreversible, for example 2026_12_drop_sku:contract:irreversible"))),
        };
        let (Some(id), Some(p), true) = (parts.first(), parts.get(1), parts.len() <= 3) else {
            return Err(bad(at, format!("`{w}` is not ID:PHASE[:irreversible]; for example 2026_12_add_orders_idx:expand")));
        };
        list.push(serde_json::json!({"id": id, "reversible": reversible, "phase": p}));
    }
    from_json(&Value::Array(list))
}

fn phase(text: &str) -> Result<Phase, String> {
    Phase::parse(text).ok_or_else(|| {
        let shown: String = text.chars().take(40).collect();
        format!("`{shown}` is not a phase; write one of expand (adds what old code ignores), contract (removes what old code reads), data (moves or rewrites data)")
    })
}

/// A migration id is a name: letters, digits and `. _ - : / @ +`.
fn check_id(id: &str) -> Result<(), String> {
    crate::limits::check_length("the id", id, MAX_ID)?;
    if id.trim().is_empty() {
        return Err("empty; name the migration, for example \"2026_12_add_orders_idx\"".into());
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._-@+/".contains(*c)))
    {
        return Err(format!(
            "`{id}` contains `{c}`; an id is letters, digits and . _ - @ + /"
        ));
    }
    Ok(())
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// What to do instead of rolling back past `blocking`: the roll-forward
/// advice from the decision matrix and the safe order of a migration
/// reversal. Never "reverse the migration while traffic flows".
pub fn advice(service: &str, blocking: &[&Migration]) -> String {
    let list: Vec<String> = blocking
        .iter()
        .map(|m| format!("{} ({})", m.id, m.why_blocking()))
        .collect();
    format!(
        "Rolling {service} back would run old code on a schema it cannot read: {}.\n\
         Roll forward instead (can't roll back → roll forward):\n\
         • error rate high, fix simple: ship the fix now as a hotfix, then watch the canary.\n\
         • error rate high, fix complex: turn the feature off (flag or config) or shed the failing path, then fix forward.\n\
         • error rate low, fix simple: fix forward in the next deploy.\n\
         • error rate low, fix complex: keep it running, open an incident, fix forward with review.\n\
         If the migration must be undone, in this order: stop traffic to {service} → reverse the migration → deploy the old code → start traffic. Never reverse a migration while traffic flows.\n\
         An admin can override with `/rollback {service} force <reason>`; a second person must approve, and it is audited as break-glass.",
        list.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_well_formed_list_reads() {
        let v = json!([{"id": "2026_12_add_orders_idx", "reversible": true, "phase": "expand"},
                       {"id": "2026_12_drop_sku", "reversible": false, "phase": "contract"}]);
        let l = from_json(&v).unwrap();
        assert_eq!(l.len(), 2);
        assert!(!l[0].blocks_rollback());
        assert!(l[1].blocks_rollback());
        assert_eq!(
            from_words(&["a:expand", "b:data:irreversible"]).unwrap()[1].phase,
            Phase::Data
        );
    }

    #[test]
    fn malformed_lists_say_where_and_what_to_write() {
        for (v, field, says) in [
            (json!({"id": "x"}), "migrations", "expected a list"),
            (
                json!([{"reversible": true, "phase": "expand"}]),
                "migrations[0].id",
                "missing",
            ),
            (
                json!([{"id": "a", "reversible": true, "phase": "shrink"}]),
                "migrations[0].phase",
                "`shrink` is not a phase; write one of expand",
            ),
            (
                json!([{"id": "a", "reversible": "yes", "phase": "expand"}]),
                "migrations[0].reversible",
                "expected true or false, not a string",
            ),
            (
                json!([{"id": 7, "reversible": true, "phase": "expand"}]),
                "migrations[0].id",
                "expected a string",
            ),
            (
                json!([{"id": "a", "reversible": true, "phase": "data"}, {"id": "a", "reversible": false, "phase": "data"}]),
                "migrations[1].id",
                "listed twice",
            ),
            (
                json!([{"id": "a", "phase": "data"}]),
                "migrations[0].reversible",
                "missing; write true",
            ),
            (
                json!([{"id": "a", "reversible": true, "phase": "data", "down": "x"}]),
                "migrations[0].down",
                "unknown field",
            ),
            (
                json!([{"id": "a b", "reversible": true, "phase": "data"}]),
                "migrations[0].id",
                "contains ` `",
            ),
        ] {
            let e = from_json(&v).unwrap_err();
            assert_eq!(e.field, field, "{v}: {e}");
            assert!(e.message.contains(says), "{v}: {e}");
        }
        assert!(from_words(&["a:grow"])
            .unwrap_err()
            .message
            .contains("not a phase"));
        assert!(from_words(&["a"]).unwrap_err().message.contains("ID:PHASE"));
    }

    #[test]
    fn advice_says_roll_forward_and_the_safe_order() {
        let m = Migration {
            id: "2026_12_drop_sku".into(),
            reversible: false,
            phase: Phase::Contract,
        };
        let a = advice("payments", &[&m]);
        assert!(
            a.contains("2026_12_drop_sku (irreversible, contract phase)"),
            "{a}"
        );
        assert!(a.contains("roll forward"), "{a}");
        assert!(a.contains("stop traffic to payments → reverse the migration → deploy the old code → start traffic"), "{a}");
    }
}
