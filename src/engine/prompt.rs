//! Prompts: pending human decisions with two buttons, stored so they survive
//! a restart, with an expiry and the roles allowed to answer. A prompt is
//! answered once: the state change is a compare-and-swap, so two presses (or
//! a press and a platform retry) cannot both act.

use crate::chat::{Button, ButtonStyle, Message, MessageRef, Severity};
use crate::domain::{Action, Actor};
use crate::roles::Role;
use crate::store::{Change, Store, Table};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    pub label: String,
    /// What the engine does when this choice is made; `None` only records it.
    pub action: Option<Action>,
    pub style: ButtonStyle,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum PromptState {
    Open,
    Answered {
        by: Actor,
        choice: String,
        at: DateTime<Utc>,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Prompt {
    pub id: String,
    pub service: String,
    pub title: String,
    pub question: String,
    pub requested_by: Actor,
    pub reason: String,
    pub approve: Choice,
    pub reject: Choice,
    /// A third way to go on, shown between the two (`prompt:ID:other`):
    /// "Only checkout" beside "Roll back all in order" and "Cancel".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other: Option<Choice>,
    pub allowed_roles: Vec<Role>,
    /// The person who asked may not answer (the two-person rule).
    pub other_person_required: bool,
    /// Approving runs a promotion, so freezes apply to the answer.
    pub promotes: bool,
    pub created: DateTime<Utc>,
    pub expires: DateTime<Utc>,
    pub channel: Option<String>,
    /// Post the prompt in this thread (the rollout's summary) when set.
    #[serde(default)]
    pub thread: Vec<MessageRef>,
    pub messages: Vec<MessageRef>,
    pub correlation_id: String,
    pub state: PromptState,
    /// How many steps of the service's `escalation` were mentioned.
    #[serde(default)]
    pub escalated: usize,
}

/// Which button of a prompt was pressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pick {
    Approve,
    Reject,
    /// The prompt's third choice, when it has one.
    Other,
}

impl Pick {
    /// The last part of the button's id, and of the answer's idempotency key.
    pub fn name(self) -> &'static str {
        match self {
            Pick::Approve => "approve",
            Pick::Reject => "reject",
            Pick::Other => "other",
        }
    }
}

impl Prompt {
    pub fn choice(&self, approve: bool) -> &Choice {
        if approve {
            &self.approve
        } else {
            &self.reject
        }
    }

    /// The choice behind a button, if the prompt offers it.
    pub fn picked(&self, pick: Pick) -> Option<&Choice> {
        match pick {
            Pick::Approve => Some(&self.approve),
            Pick::Reject => Some(&self.reject),
            Pick::Other => self.other.as_ref(),
        }
    }

    /// The prompt as a chat message: buttons while open, the answer after.
    pub fn message(&self) -> Message {
        let roles: Vec<&str> = self.allowed_roles.iter().map(|r| r.name()).collect();
        let mut m = Message::new(Severity::Warning, &self.title)
            .text(&self.question)
            .field("Requested by", self.requested_by.display_name.clone())
            .field(
                "Reason",
                if self.reason.is_empty() {
                    "—".to_string()
                } else {
                    self.reason.clone()
                },
            )
            .context(format!("prompt {}", self.id))
            .context(format!("correlation {}", self.correlation_id));
        match &self.state {
            PromptState::Open => {
                m = m
                    .field(
                        "Who can answer",
                        format!(
                            "{}{}",
                            roles.join(", "),
                            if self.other_person_required {
                                " (not the requester)"
                            } else {
                                ""
                            }
                        ),
                    )
                    .field(
                        "Expires",
                        self.expires.format("%Y-%m-%d %H:%M UTC").to_string(),
                    );
                m.buttons = self.buttons();
            }
            PromptState::Answered { by, choice, at } => {
                m.severity = Severity::Info;
                m = m.field(
                    "Answer",
                    format!(
                        "{choice} by {} at {}",
                        by.display_name,
                        at.format("%H:%M:%S UTC")
                    ),
                );
            }
        }
        m
    }
}

impl Prompt {
    /// The prompt's buttons, in order (approve, other, reject); a
    /// destructive choice carries what it asks before acting.
    pub fn buttons(&self) -> Vec<Button> {
        let mut choices = vec![(&self.approve, Pick::Approve)];
        if let Some(o) = &self.other {
            choices.push((o, Pick::Other));
        }
        choices.push((&self.reject, Pick::Reject));
        choices
            .into_iter()
            .map(|(c, pick)| Button {
                label: c.label.clone(),
                action_id: format!("prompt:{}:{}", self.id, pick.name()),
                style: c.style,
                confirm: c
                    .action
                    .as_ref()
                    .and_then(|a| crate::chat::confirm::destructive(a, &self.service)),
            })
            .collect()
    }

    /// The prompt after its expiry: no buttons, and when it expired.
    pub fn expired_message(&self) -> Message {
        let mut m = self.message();
        m.buttons.clear();
        m.fields
            .retain(|f| f.name != "Who can answer" && f.name != "Expires");
        m.severity = Severity::Info;
        m.field(
            "Expired",
            format!(
                "{}; nothing was done. Ask again to decide.",
                self.expires.format("%Y-%m-%d %H:%M UTC")
            ),
        )
    }
}

/// Parses a button's action id: `prompt:ID:approve`, `prompt:ID:reject`
/// or `prompt:ID:other`.
pub fn parse_action_id(action_id: &str) -> Option<(String, Pick)> {
    let rest = action_id.strip_prefix("prompt:")?;
    let (id, choice) = rest.rsplit_once(':')?;
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return None;
    }
    match choice {
        "approve" => Some((id.to_string(), Pick::Approve)),
        "reject" => Some((id.to_string(), Pick::Reject)),
        "other" => Some((id.to_string(), Pick::Other)),
        _ => None,
    }
}

pub struct Prompts {
    store: Arc<Store>,
    /// IDs of the prompts still open and not yet expired, so the periodic
    /// escalation reads those instead of every prompt ever stored. Rebuilt
    /// from the store on first use.
    open: std::sync::Mutex<Option<std::collections::BTreeSet<String>>>,
}

/// The result of trying to answer.
pub enum Answer {
    /// This caller won: act on the choice.
    Accepted(Prompt),
    /// Someone else answered first.
    AlreadyAnswered(Prompt),
}

impl Prompts {
    pub fn new(store: Arc<Store>) -> Prompts {
        Prompts {
            store,
            open: std::sync::Mutex::new(None),
        }
    }

    pub async fn get(&self, id: &str) -> anyhow::Result<Option<Prompt>> {
        Ok(self.store.get(Table::Prompts, id).await?)
    }

    pub async fn save(&self, p: &Prompt) -> anyhow::Result<()> {
        self.store.put(Table::Prompts, &p.id, p).await?;
        if let Some(open) = self.open.lock().unwrap().as_mut() {
            if p.state == PromptState::Open {
                open.insert(p.id.clone());
            } else {
                open.remove(&p.id);
            }
        }
        Ok(())
    }

    /// Forgets the index of open prompts, so the next [`Prompts::open`]
    /// reads the store: on a shared store another replica may have asked
    /// since this one built it (see `Controller::reload`).
    pub fn reindex(&self) {
        *self.open.lock().unwrap() = None;
    }

    /// The prompts still open at `now`; expired ones leave the index here.
    pub async fn open(&self, now: DateTime<Utc>) -> anyhow::Result<Vec<Prompt>> {
        let known = self.open.lock().unwrap().clone();
        let ids: Vec<String> = match known {
            Some(ids) => ids.into_iter().collect(),
            None => {
                let ids: std::collections::BTreeSet<String> = self
                    .store
                    .scan::<Prompt>(Table::Prompts, "")
                    .await?
                    .into_iter()
                    .filter(|(_, p)| p.state == PromptState::Open && p.expires > now)
                    .map(|(_, p)| p.id)
                    .collect();
                let mut open = self.open.lock().unwrap();
                let merged = open.get_or_insert_with(Default::default);
                merged.extend(ids);
                merged.iter().cloned().collect()
            }
        };
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            match self.get(&id).await? {
                Some(p) if p.state == PromptState::Open && p.expires > now => out.push(p),
                _ => {
                    if let Some(open) = self.open.lock().unwrap().as_mut() {
                        open.remove(&id);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Marks the prompt answered if it is still open; exactly one caller wins.
    pub async fn answer(
        &self,
        id: &str,
        by: &Actor,
        pick: Pick,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Option<Answer>> {
        let (answer, _) = self
            .store
            .update(Table::Prompts, id, |cur: Option<Prompt>| match cur {
                None => Change::unchanged(None),
                Some(p) if p.state != PromptState::Open => {
                    Change::unchanged(Some(Answer::AlreadyAnswered(p)))
                }
                Some(mut p) => {
                    let Some(label) = p.picked(pick).map(|c| c.label.clone()) else {
                        return Change::unchanged(None);
                    };
                    p.state = PromptState::Answered {
                        by: by.clone(),
                        choice: label,
                        at: now,
                    };
                    Change::set(p.clone(), Some(Answer::Accepted(p)))
                }
            })
            .await?;
        if let Some(Answer::Accepted(_)) = &answer {
            if let Some(open) = self.open.lock().unwrap().as_mut() {
                open.remove(id);
            }
        }
        Ok(answer)
    }

    /// Records that escalation step `step` (1-based) was posted, if the
    /// prompt is still open and not escalated that far; true when this
    /// caller moved it on (so the step is posted once).
    pub async fn escalate(&self, id: &str, step: usize) -> anyhow::Result<bool> {
        let (moved, _) = self
            .store
            .update(Table::Prompts, id, |cur: Option<Prompt>| match cur {
                Some(mut p) if p.state == PromptState::Open && p.escalated < step => {
                    p.escalated = step;
                    Change::set(p, true)
                }
                _ => Change::unchanged(false),
            })
            .await?;
        Ok(moved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_ids_round_trip_and_forgeries_fail() {
        assert_eq!(
            parse_action_id("prompt:ab12-cd:approve"),
            Some(("ab12-cd".into(), Pick::Approve))
        );
        assert_eq!(
            parse_action_id("prompt:ab12:reject"),
            Some(("ab12".into(), Pick::Reject))
        );
        assert_eq!(
            parse_action_id("prompt:ab12:other"),
            Some(("ab12".into(), Pick::Other))
        );
        assert_eq!(parse_action_id("prompt:ab12:promote"), None);
        assert_eq!(parse_action_id("prompt::approve"), None);
        assert_eq!(parse_action_id("prompt:../x:approve"), None);
        assert_eq!(parse_action_id("rollback:checkout"), None);
    }
}
