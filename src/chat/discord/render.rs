//! The neutral [`Message`] as Discord embeds and components, with serenity's
//! builders. Discord's limits are applied here (title 256, description 4096,
//! 25 fields of 256/1024, footer 2048, 6000 in all, 5 buttons a row), and
//! only a message's own mentions ping (an escalation's next group): a reason
//! typed as `@everyone` pings nobody.

use crate::chat::{Button, ButtonStyle, Message, Severity};
use serenity::builder::{
    CreateActionRow, CreateAllowedMentions, CreateButton, CreateEmbed, CreateEmbedFooter,
};
use serenity::model::application::ButtonStyle as DiscordStyle;
use serenity::model::id::{RoleId, UserId};

/// Embed colour by severity.
pub fn colour(s: Severity) -> u32 {
    match s {
        Severity::Info => 0x3B82F6,
        Severity::Success => 0x22C55E,
        Severity::Warning => 0xF59E0B,
        Severity::Critical => 0xDC2626,
    }
}

/// Cuts `s` to at most `max` characters, ending in `…` when cut.
pub fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

pub fn embed(msg: &Message) -> CreateEmbed {
    let mut budget: usize = 6000;
    fn take(budget: &mut usize, s: &str, max: usize) -> String {
        let t = clip(s, max.min(*budget));
        *budget = budget.saturating_sub(t.chars().count());
        t
    }
    let title = take(
        &mut budget,
        &format!("{} {}", msg.severity.icon(), msg.title),
        256,
    );
    let mut e = CreateEmbed::new().title(title).colour(colour(msg.severity));
    if !msg.context.is_empty() {
        e = e.footer(CreateEmbedFooter::new(take(
            &mut budget,
            &msg.context.join(" · "),
            2048,
        )));
    }
    if !msg.text.is_empty() {
        e = e.description(take(&mut budget, &msg.text, 4096));
    }
    for f in msg.fields.iter().take(25) {
        if budget < 2 {
            break;
        }
        let name = take(
            &mut budget,
            if f.name.is_empty() { "—" } else { &f.name },
            256,
        );
        let value = take(
            &mut budget,
            if f.value.is_empty() { "—" } else { &f.value },
            1024,
        );
        let inline = value.chars().count() <= 40 && !value.contains('\n');
        e = e.field(name, value, inline);
    }
    // Discord users and roles are pinged in the content (see [`pings`]);
    // the embed names the others as text.
    let others: Vec<&String> = msg
        .mentions
        .iter()
        .filter(|m| !m.starts_with("discord:") && !m.starts_with("discord-role:"))
        .collect();
    if !others.is_empty() && budget > 20 && msg.fields.len() < 25 {
        let who: Vec<String> = others.iter().map(|m| mention(m)).collect();
        let value = take(&mut budget, &who.join(" "), 1024);
        e = e.field("Mentions", value, false);
    }
    e
}

/// A platform-qualified id as Discord mention syntax: `discord-role:…` →
/// `<@&…>`, `discord:…` → `<@…>`; other platforms' ids as text.
pub fn mention(who: &str) -> String {
    match who.split_once(':') {
        Some(("discord-role", id)) => format!("<@&{id}>"),
        Some(("discord", id)) => format!("<@{id}>"),
        _ => who.to_string(),
    }
}

fn style(s: ButtonStyle) -> DiscordStyle {
    match s {
        ButtonStyle::Primary => DiscordStyle::Primary,
        ButtonStyle::Danger => DiscordStyle::Danger,
        ButtonStyle::Default => DiscordStyle::Secondary,
    }
}

/// Buttons in rows of five; `custom_id` is the neutral action id
/// (`prompt:ID:approve`), which names a prompt stored server-side.
pub fn components(buttons: &[Button], disabled: bool) -> Vec<CreateActionRow> {
    buttons
        .iter()
        .filter(|b| b.action_id.len() <= 100)
        .take(25)
        .collect::<Vec<_>>()
        .chunks(5)
        .map(|row| {
            CreateActionRow::Buttons(
                row.iter()
                    .map(|b| {
                        CreateButton::new(b.action_id.clone())
                            .label(clip(&b.label, 80))
                            .style(style(b.style))
                            .disabled(disabled)
                    })
                    .collect(),
            )
        })
        .collect()
}

/// No @everyone, @here, user or role pings from anything rollbot echoes.
pub fn no_mentions() -> CreateAllowedMentions {
    CreateAllowedMentions::new()
}

/// The message content and allowed mentions that ping the message's own
/// mentions. Discord notifies only for mentions in `content`, never in an
/// embed, and only those `allowed_mentions` names: so each Discord user and
/// role in [`Message::mentions`] is listed by ID, and nothing echoed
/// elsewhere in the message (a reason typed as `@everyone`) pings anyone.
pub fn pings(msg: &Message) -> (String, CreateAllowedMentions) {
    let (mut users, mut roles, mut shown) = (Vec::new(), Vec::new(), Vec::new());
    for who in &msg.mentions {
        let Some((kind, raw)) = who.split_once(':') else {
            continue;
        };
        // Snowflakes are non-zero; anything else is shown as text only.
        let Some(id) = raw.parse::<u64>().ok().filter(|n| *n != 0) else {
            continue;
        };
        match kind {
            "discord-role" => roles.push(RoleId::new(id)),
            "discord" => users.push(UserId::new(id)),
            _ => continue,
        }
        shown.push(mention(who));
    }
    let allowed = CreateAllowedMentions::new().users(users).roles(roles);
    (shown.join(" "), allowed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embeds_respect_discord_limits() {
        let mut m = Message::new(Severity::Critical, "x".repeat(300)).text("y".repeat(5000));
        for i in 0..30 {
            m = m.field(format!("f{i}"), "z".repeat(2000));
        }
        let v = serde_json::to_value(embed(&m)).unwrap();
        assert_eq!(v["title"].as_str().unwrap().chars().count(), 256);
        assert_eq!(v["description"].as_str().unwrap().chars().count(), 4096);
        assert_eq!(v["color"], 0xDC2626);
        let fields = v["fields"].as_array().unwrap();
        assert!(fields.len() <= 25);
        let total: usize = fields
            .iter()
            .map(|f| {
                f["name"].as_str().unwrap().chars().count()
                    + f["value"].as_str().unwrap().chars().count()
            })
            .sum::<usize>()
            + 256
            + 4096;
        assert!(total <= 6000, "{total}");
    }

    #[test]
    fn only_the_messages_own_discord_mentions_ping() {
        let m = Message::new(Severity::Warning, "Still waiting")
            .text("reason: @everyone <@&999>")
            .mention("discord-role:123456789012345678")
            .mention("discord:234567890123456789")
            .mention("slack-group:S0LEADS")
            .mention("discord:not-a-number");
        let (content, allowed) = pings(&m);
        assert_eq!(content, "<@&123456789012345678> <@234567890123456789>");
        let allowed = serde_json::to_value(allowed).unwrap();
        assert_eq!(allowed["parse"], serde_json::json!([]));
        assert_eq!(allowed["roles"], serde_json::json!(["123456789012345678"]));
        assert_eq!(allowed["users"], serde_json::json!(["234567890123456789"]));
        // The embed shows the mentions Discord cannot ping, as text.
        let e = serde_json::to_value(embed(&m)).unwrap();
        let shown = e["fields"].to_string();
        assert!(shown.contains("slack-group:S0LEADS"), "{shown}");
        assert!(!shown.contains("123456789012345678"), "{shown}");
    }

    #[test]
    fn buttons_become_rows_of_five() {
        let mut m = Message::new(Severity::Warning, "t");
        for i in 0..7 {
            m = m.button(
                format!("b{i}"),
                format!("prompt:p{i}:approve"),
                ButtonStyle::Danger,
            );
        }
        let rows = serde_json::to_value(components(&m.buttons, true)).unwrap();
        assert_eq!(rows.as_array().unwrap().len(), 2);
        assert_eq!(rows[0]["type"], 1);
        assert_eq!(rows[0]["components"][0]["type"], 2);
        assert_eq!(rows[0]["components"][0]["style"], 4);
        assert_eq!(rows[0]["components"][0]["custom_id"], "prompt:p0:approve");
        assert_eq!(rows[0]["components"][0]["disabled"], true);
        assert_eq!(rows[1]["components"].as_array().unwrap().len(), 2);
    }
}
