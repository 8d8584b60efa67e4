//! The Slack form (a modal) a rollback typed without a reason opens, and
//! what its `view_submission` says.
//!
//! `views.open` gets the slash command's `trigger_id` (valid once, for
//! 3 s). The view's `callback_id` marks it as rollbot's form and its
//! `private_metadata` carries the command context: the command without
//! its reason, the channel and user it was typed by, its `response_url`
//! and when the form opened. Slack returns that metadata untouched in the
//! signed submission, and the engine checks everything again, so a
//! submission can do nothing its submitter could not have typed.

use crate::command::form::{Form, FormError, Input, REASON_MAX};
use crate::limits::MAX_REVISION;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use slack_morphism::prelude::*;

/// The `callback_id` of rollbot's form.
pub const CALLBACK_ID: &str = "rollbot-form";

/// The command context a form carries in `private_metadata`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// The command without its reason (`rollback checkout force`).
    pub command: String,
    pub channel: String,
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_url: Option<String>,
    /// When the form was opened (Unix seconds, rollbot's clock).
    pub opened: i64,
}

fn plain(s: &str) -> SlackBlockPlainTextOnly {
    SlackBlockPlainText::new(s.to_string()).into()
}

/// The modal for `form`.
pub fn view(form: &Form, meta: &Metadata) -> SlackView {
    let mut blocks: Vec<SlackBlock> = vec![SlackSectionBlock::new()
        .with_text(SlackBlockMarkDownText::new(super::blocks::escape(&form.what)).into())
        .into()];
    let reason = SlackBlockPlainTextInputElement::new()
        .with_action_id(Input::Reason.id().into())
        .with_multiline(true)
        .with_min_length(1)
        .with_max_length(REASON_MAX as u64)
        .with_focus_on_load(true)
        .with_placeholder(plain("What is wrong, with a link to the incident"));
    blocks.push(
        SlackInputBlock::new(
            plain("Reason"),
            SlackInputBlockElement::PlainTextInput(reason),
        )
        .with_block_id(Input::Reason.id().into())
        .into(),
    );
    if form.asks_revision {
        let mut rev = SlackBlockPlainTextInputElement::new()
            .with_action_id(Input::Revision.id().into())
            .with_max_length(MAX_REVISION as u64);
        if let Some(r) = &form.revision {
            rev = rev.with_initial_value(r.clone());
        }
        blocks.push(
            SlackInputBlock::new(
                plain("Target revision"),
                SlackInputBlockElement::PlainTextInput(rev),
            )
            .with_block_id(Input::Revision.id().into())
            .with_optional(true)
            .with_hint(plain("Leave empty for the previous revision."))
            .into(),
        );
    }
    SlackView::Modal(
        SlackModalView::new(plain(form.title), blocks)
            .with_submit(plain(form.submit))
            .with_close(plain("Cancel"))
            .with_callback_id(CALLBACK_ID.into())
            .with_private_metadata(serde_json::to_string(meta).expect("metadata serializes")),
    )
}

/// The text in one of the form's inputs, when filled.
pub fn value(view: &SlackStatefulView, input: Input) -> Option<String> {
    let values = &view.state_params.state.as_ref()?.values;
    let block = values.get(&input.id().into())?;
    block.get(&input.id().into())?.value.clone()
}

/// Slack's answer that keeps the form open with `message` under `input`.
pub fn errors(input: Input, message: &str) -> Value {
    json!({"response_action": "errors", "errors": {input.id(): message}})
}

/// [`errors`] for a submission the grammar refused.
pub fn refused(e: &FormError) -> Value {
    errors(e.input, &e.message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_carries_its_context_and_asks_for_the_reason() {
        let form = crate::command::form::asks(&crate::command::Command::Rollback {
            service: "checkout".into(),
            to: Some("v41".into()),
            force: false,
            reason: String::new(),
            dry_run: false,
        })
        .unwrap();
        let meta = Metadata {
            command: form.context.clone(),
            channel: "C0DEPLOYS".into(),
            user: "U0RESP".into(),
            response_url: None,
            opened: 1_700_000_000,
        };
        let v = serde_json::to_value(view(&form, &meta)).unwrap();
        assert_eq!(v["type"], "modal");
        assert_eq!(v["callback_id"], CALLBACK_ID);
        assert_eq!(v["title"]["text"], "Roll back");
        let back: Metadata = serde_json::from_str(v["private_metadata"].as_str().unwrap()).unwrap();
        assert_eq!(back, meta);
        let blocks = v["blocks"].as_array().unwrap();
        assert_eq!(blocks[1]["type"], "input");
        assert_eq!(blocks[1]["block_id"], "reason");
        assert_eq!(blocks[1]["element"]["type"], "plain_text_input");
        assert!(blocks[1].get("optional").is_none() || blocks[1]["optional"] == false);
        assert_eq!(blocks[2]["block_id"], "revision");
        assert_eq!(blocks[2]["optional"], true);
        assert_eq!(blocks[2]["element"]["initial_value"], "v41");
        assert_eq!(
            errors(Input::Revision, "bad"),
            json!({"response_action": "errors", "errors": {"revision": "bad"}})
        );
    }
}
