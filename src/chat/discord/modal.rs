//! Discord forms (interaction response type 9, MODAL) and their
//! submissions (interaction type 5, MODAL_SUBMIT).
//!
//! - A rollback or forced promotion typed without a reason is answered
//!   with a form asking for it (`form:` custom IDs). The custom ID carries
//!   the command context: the command's interaction ID (the idempotency
//!   key of every submission of that form, so a double submission acts
//!   once), when the form opened (it expires like a prompt) and the
//!   command without its reason, which the grammar reads again on
//!   submission.
//! - Discord buttons have no confirm dialog, so a press on a destructive
//!   prompt button is answered with a form naming what will happen, with
//!   an optional reason (`confirm:` custom IDs holding the button's own
//!   `prompt:ID:choice`); submitting it is the press.
//!
//! Discord's limits: title 45 characters, custom ID 100, label 45,
//! placeholder 100, at most 5 rows of one text input each.

use super::render::clip;
use crate::chat::confirm::Confirm;
use crate::command::form::{Form, Input, REASON_MAX};
use crate::limits::MAX_REVISION;
use serenity::builder::{CreateActionRow, CreateInputText, CreateInteractionResponse, CreateModal};
use serenity::model::application::{ActionRowComponent, InputTextStyle, ModalInteraction};

const FORM: &str = "form:";
const CONFIRM: &str = "confirm:";
const CUSTOM_ID_MAX: usize = 100;

/// What a submitted form was for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Submitted {
    /// The reason form of the command interaction `command`, opened at
    /// `opened` (Unix seconds) for `context`.
    Form {
        command: String,
        opened: i64,
        context: String,
    },
    /// The confirmation of the prompt button `action_id`.
    Confirm { action_id: String },
}

/// Reads a form's custom ID.
pub fn submitted(custom_id: &str) -> Option<Submitted> {
    if let Some(action_id) = custom_id.strip_prefix(CONFIRM) {
        return Some(Submitted::Confirm {
            action_id: action_id.to_string(),
        });
    }
    let rest = custom_id.strip_prefix(FORM)?;
    let mut parts = rest.splitn(3, ':');
    let command = parts.next()?.to_string();
    let opened = parts.next()?.parse().ok()?;
    let context = parts.next()?.to_string();
    (!command.is_empty() && command.chars().all(|c| c.is_ascii_digit())).then_some(
        Submitted::Form {
            command,
            opened,
            context,
        },
    )
}

fn reason_input(label: &str, required: bool, placeholder: &str) -> CreateActionRow {
    let mut input = CreateInputText::new(InputTextStyle::Paragraph, label, Input::Reason.id())
        .required(required)
        .max_length(REASON_MAX as u16)
        .placeholder(clip(placeholder, 100));
    if required {
        input = input.min_length(1);
    }
    CreateActionRow::InputText(input)
}

/// The reason form for a command typed without one, or `None` when its
/// context does not fit in a custom ID (the person is then asked to type
/// the reason in the command's `reason` option).
pub fn form(form: &Form, interaction: u64, opened: i64) -> Option<CreateInteractionResponse> {
    let custom_id = format!("{FORM}{interaction}:{opened}:{}", form.context);
    if custom_id.chars().count() > CUSTOM_ID_MAX {
        return None;
    }
    let mut rows = vec![reason_input("Reason", true, &form.what)];
    if form.asks_revision {
        let mut rev = CreateInputText::new(
            InputTextStyle::Short,
            "Target revision (empty: the previous one)",
            Input::Revision.id(),
        )
        .required(false)
        .max_length(MAX_REVISION as u16);
        if let Some(r) = &form.revision {
            rev = rev.value(r.clone());
        }
        rows.push(CreateActionRow::InputText(rev));
    }
    let title = clip(&format!("{} {}", form.title, form.target), 45);
    Some(CreateInteractionResponse::Modal(
        CreateModal::new(custom_id, title).components(rows),
    ))
}

/// The confirmation step of a destructive button `action_id`.
pub fn confirmation(action_id: &str, c: &Confirm) -> Option<CreateInteractionResponse> {
    let custom_id = format!("{CONFIRM}{action_id}");
    if custom_id.chars().count() > CUSTOM_ID_MAX {
        return None;
    }
    Some(CreateInteractionResponse::Modal(
        CreateModal::new(custom_id, clip(&c.title, 45)).components(vec![reason_input(
            "Reason (optional)",
            false,
            &c.text,
        )]),
    ))
}

/// The text written in the input `input`, if any.
pub fn value(m: &ModalInteraction, input: Input) -> Option<String> {
    m.data
        .components
        .iter()
        .flat_map(|row| row.components.iter())
        .find_map(|c| match c {
            ActionRowComponent::InputText(t) if t.custom_id == input.id() => t.value.clone(),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_are_shaped_like_discords_and_carry_their_context() {
        let f = crate::command::form::asks(&crate::command::Command::Rollback {
            service: "checkout".into(),
            to: None,
            force: true,
            reason: String::new(),
            dry_run: false,
        })
        .unwrap();
        let r = serde_json::to_value(form(&f, 1234, 1_700_000_000).unwrap()).unwrap();
        assert_eq!(r["type"], 9);
        assert_eq!(r["data"]["title"], "Roll back checkout");
        let id = r["data"]["custom_id"].as_str().unwrap();
        assert_eq!(id, "form:1234:1700000000:rollback checkout force");
        assert_eq!(
            submitted(id),
            Some(Submitted::Form {
                command: "1234".into(),
                opened: 1_700_000_000,
                context: "rollback checkout force".into()
            })
        );
        let rows = r["data"]["components"].as_array().unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["type"], 1);
        assert_eq!(rows[0]["components"][0]["type"], 4);
        assert_eq!(rows[0]["components"][0]["custom_id"], "reason");
        assert_eq!(rows[0]["components"][0]["required"], true);
        assert_eq!(rows[1]["components"][0]["required"], false);
        assert_eq!(
            submitted("confirm:prompt:ab12:approve"),
            Some(Submitted::Confirm {
                action_id: "prompt:ab12:approve".into()
            })
        );
        assert_eq!(submitted("form:x:1:rollback checkout"), None);
        let long = Form {
            context: format!("rollback {}", "s".repeat(90)),
            ..f
        };
        assert!(form(&long, 1234, 1).is_none());
    }
}
