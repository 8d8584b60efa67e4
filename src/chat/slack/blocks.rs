//! The neutral message model as Block Kit: a header with the severity icon,
//! the text as a section, fields as a section's two-column fields, buttons
//! in an actions block (`action_id` and `value` both name the prompt and the
//! choice stored server-side), and the context line (rollout, correlation
//! id, audit entry). `text` carries a plain fallback for notifications.

use crate::chat::confirm::Confirm;
use crate::chat::{ButtonStyle, Message};
use slack_morphism::prelude::*;

/// Slack's limits: header 150 characters, section text 3,000, a field
/// 2,000, 10 fields per section, 10 context elements, 25 buttons.
const HEADER_MAX: usize = 150;
const TEXT_MAX: usize = 3000;
const FIELD_MAX: usize = 2000;

fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut t: String = s.chars().take(max - 1).collect();
    t.push('…');
    t
}

/// The length of the Slack mention at the start of `s` (`<@U0ABC>`,
/// `<!subteam^S0ABC>`), if there is one.
fn mention_at(s: &str) -> Option<usize> {
    let rest = s
        .strip_prefix("<@")
        .or_else(|| s.strip_prefix("<!subteam^"))?;
    let id_len = rest
        .find(|c: char| !c.is_ascii_uppercase() && !c.is_ascii_digit())
        .unwrap_or(rest.len());
    (id_len > 0 && rest[id_len..].starts_with('>')).then(|| s.len() - rest.len() + id_len + 1)
}

/// Escapes the three characters Slack's mrkdwn treats as control, except in
/// user and user-group mentions (how rollbot names people), which Slack
/// renders as names.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while let Some(c) = s[i..].chars().next() {
        if let Some(n) = (c == '<').then(|| mention_at(&s[i..])).flatten() {
            out.push_str(&s[i..i + n]);
            i += n;
            continue;
        }
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
        i += c.len_utf8();
    }
    out
}

/// Whether `s` names someone with a mention, which a header (plain text)
/// would show as raw `<@U…>`.
fn has_mention(s: &str) -> bool {
    s.match_indices('<')
        .any(|(i, _)| mention_at(&s[i..]).is_some())
}

fn md(s: &str, max: usize) -> SlackBlockText {
    SlackBlockMarkDownText::new(cut(&escape(s), max)).into()
}

/// A platform-qualified id as a Slack mention: `slack-group:S…` →
/// `<!subteam^S…>`, `slack:U…` → `<@U…>`; other platforms' ids as text.
pub fn mention(who: &str) -> String {
    match who.split_once(':') {
        Some(("slack-group", id)) => format!("<!subteam^{id}>"),
        Some(("slack", id)) => format!("<@{id}>"),
        _ => escape(who),
    }
}

/// A destructive button's confirmation dialog (Slack's confirmation
/// object: title 100, text 300, buttons 30 characters), red because the
/// choice cannot be taken back.
fn confirm(c: &Confirm) -> SlackBlockConfirmItem {
    SlackBlockConfirmItem::new(
        SlackBlockPlainText::new(cut(&c.title, 100)).into(),
        SlackBlockPlainText::new(cut(&c.text, 300)).into(),
        SlackBlockPlainText::new(cut(&c.yes, 30)).into(),
        SlackBlockPlainText::new("Cancel".into()).into(),
    )
    .with_style("danger".into())
}

/// The blocks and fallback text for a message.
pub fn content(msg: &Message) -> SlackMessageContent {
    let mut blocks: Vec<SlackBlock> = Vec::new();
    let title = format!("{} {}", msg.severity.icon(), msg.title);
    if has_mention(&title) {
        // Headers are plain text; a bold line shows the person's name.
        blocks.push(
            SlackSectionBlock::new()
                .with_text(
                    SlackBlockMarkDownText::new(format!("*{}*", escape(&cut(&title, HEADER_MAX))))
                        .into(),
                )
                .into(),
        );
    } else {
        blocks.push(
            SlackHeaderBlock::new(SlackBlockPlainText::new(cut(&title, HEADER_MAX)).into()).into(),
        );
    }
    if !msg.text.trim().is_empty() {
        blocks.push(
            SlackSectionBlock::new()
                .with_text(md(&msg.text, TEXT_MAX))
                .into(),
        );
    }
    for chunk in msg.fields.chunks(10) {
        let fields = chunk
            .iter()
            .map(|f| {
                SlackBlockMarkDownText::new(cut(
                    &format!("*{}*\n{}", escape(&f.name), escape(&f.value)),
                    FIELD_MAX,
                ))
                .into()
            })
            .collect();
        blocks.push(SlackSectionBlock::new().with_fields(fields).into());
    }
    if !msg.buttons.is_empty() {
        let elements = msg
            .buttons
            .iter()
            .take(25)
            .map(|b| {
                let mut e = SlackBlockButtonElement::new(
                    SlackBlockPlainText::new(cut(&b.label, 75)).into(),
                )
                .with_action_id(b.action_id.clone().into())
                .with_value(b.action_id.clone());
                match b.style {
                    ButtonStyle::Primary => e = e.with_style(SlackBlockButtonStyle::Primary),
                    ButtonStyle::Danger => e = e.with_style(SlackBlockButtonStyle::Danger),
                    ButtonStyle::Default => {}
                }
                if let Some(c) = &b.confirm {
                    e = e.with_confirm(confirm(c));
                }
                SlackActionBlockElement::Button(e)
            })
            .collect();
        blocks.push(
            SlackActionsBlock::new(elements)
                .with_block_id("rollbot-choices".to_string().into())
                .into(),
        );
    }
    let mentions: Vec<String> = msg.mentions.iter().map(|m| mention(m)).collect();
    if !mentions.is_empty() {
        blocks.push(
            SlackSectionBlock::new()
                .with_text(SlackBlockMarkDownText::new(cut(&mentions.join(" "), TEXT_MAX)).into())
                .into(),
        );
    }
    if !msg.context.is_empty() {
        let elements = vec![SlackContextBlockElement::MarkDown(
            SlackBlockMarkDownText::new(cut(&escape(&msg.context.join(" · ")), TEXT_MAX)),
        )];
        blocks.push(SlackContextBlock::new(elements).into());
    }
    let mut fallback = format!("{} {}", msg.severity.icon(), msg.plain());
    if !mentions.is_empty() {
        fallback = format!("{} {fallback}", mentions.join(" "));
    }
    SlackMessageContent::new()
        .with_text(cut(&fallback, 3900))
        .with_blocks(blocks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::Severity;

    #[test]
    fn mentions_become_slack_mentions() {
        assert_eq!(mention("slack-group:S0ONCALL"), "<!subteam^S0ONCALL>");
        assert_eq!(mention("slack:U0MANAGER"), "<@U0MANAGER>");
        assert_eq!(
            mention("discord-role:945678901234567890"),
            "discord-role:945678901234567890"
        );
        let m = Message::new(Severity::Warning, "Still waiting").mention("slack-group:S0LEADS");
        let v = serde_json::to_value(content(&m)).unwrap();
        let text = v.to_string();
        assert!(text.contains("<!subteam^S0LEADS>"), "{text}");
    }

    #[test]
    fn people_are_mentions_and_everything_else_is_escaped() {
        assert_eq!(
            escape("By <@U0ALICE> & <@bob> <!subteam^S0LEADS> <!channel> <@U0X"),
            "By <@U0ALICE> &amp; &lt;@bob&gt; <!subteam^S0LEADS> &lt;!channel&gt; &lt;@U0X"
        );
        let m = Message::new(Severity::Critical, "Break-glass: <@U0ALICE> promoted web")
            .field("By", "<@U0ALICE>");
        let v = serde_json::to_value(content(&m)).unwrap();
        let blocks = v["blocks"].as_array().unwrap();
        assert_eq!(blocks[0]["type"], "section", "a header cannot show a name");
        assert_eq!(
            blocks[0]["text"]["text"],
            "*🚨 Break-glass: <@U0ALICE> promoted web*"
        );
        assert_eq!(blocks[1]["fields"][0]["text"], "*By*\n<@U0ALICE>");
    }

    #[test]
    fn renders_header_fields_buttons_and_context() {
        let m = Message::new(Severity::Warning, "Approve promotion of payments?")
            .text("sam asks to promote <payments> & more")
            .field("Requested by", "sam")
            .button("Approve", "prompt:ab12:approve", ButtonStyle::Primary)
            .button("Reject", "prompt:ab12:reject", ButtonStyle::Danger)
            .context("prompt ab12")
            .context("correlation c0ffee");
        let v = serde_json::to_value(content(&m)).unwrap();
        let blocks = v["blocks"].as_array().unwrap();
        assert_eq!(blocks[0]["type"], "header");
        assert_eq!(blocks[0]["text"]["type"], "plain_text");
        assert_eq!(blocks[1]["type"], "section");
        assert_eq!(
            blocks[1]["text"]["text"],
            "sam asks to promote &lt;payments&gt; &amp; more"
        );
        assert_eq!(blocks[2]["fields"][0]["text"], "*Requested by*\nsam");
        assert_eq!(blocks[3]["type"], "actions");
        assert_eq!(blocks[3]["elements"][0]["action_id"], "prompt:ab12:approve");
        assert_eq!(blocks[3]["elements"][0]["value"], "prompt:ab12:approve");
        assert_eq!(blocks[3]["elements"][0]["style"], "primary");
        assert_eq!(blocks[3]["elements"][1]["style"], "danger");
        assert_eq!(blocks[4]["type"], "context");
        assert_eq!(
            blocks[4]["elements"][0]["text"],
            "prompt ab12 · correlation c0ffee"
        );
        assert!(v["text"].as_str().unwrap().contains("Approve promotion"));
    }

    #[test]
    fn destructive_buttons_carry_a_danger_confirmation_and_safe_ones_none() {
        let mut m = Message::new(Severity::Warning, "Canary failing")
            .button("Roll back", "prompt:ab12:approve", ButtonStyle::Danger)
            .button("Continue", "prompt:ab12:reject", ButtonStyle::Default);
        m.buttons[0].confirm = crate::chat::confirm::destructive(
            &crate::domain::Action::Rollback {
                to: None,
                force: false,
            },
            "checkout",
        );
        let v = serde_json::to_value(content(&m)).unwrap();
        let buttons = &v["blocks"][1]["elements"];
        let c = &buttons[0]["confirm"];
        assert_eq!(c["title"]["type"], "plain_text");
        assert_eq!(c["title"]["text"], "Roll back checkout?");
        assert!(c["text"]["text"]
            .as_str()
            .unwrap()
            .starts_with("checkout goes back to its previous revision"));
        assert_eq!(c["confirm"]["text"], "Roll back");
        assert_eq!(c["deny"]["text"], "Cancel");
        assert_eq!(c["style"], "danger");
        assert!(buttons[1].get("confirm").is_none(), "{buttons}");
    }

    #[test]
    fn long_titles_and_many_fields_stay_within_slack_limits() {
        let mut m = Message::new(Severity::Info, "x".repeat(400));
        for i in 0..23 {
            m = m.field(format!("f{i}"), "v");
        }
        let v = serde_json::to_value(content(&m)).unwrap();
        let blocks = v["blocks"].as_array().unwrap();
        assert!(blocks[0]["text"]["text"].as_str().unwrap().chars().count() <= 150);
        let sections: Vec<_> = blocks.iter().filter(|b| b["fields"].is_array()).collect();
        assert_eq!(sections.len(), 3);
        assert!(sections
            .iter()
            .all(|s| s["fields"].as_array().unwrap().len() <= 10));
    }
}
