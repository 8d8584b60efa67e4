//! Inbound: slash commands, button presses and `app_mention` events, the
//! same for HTTP and Socket Mode once the request is verified (HTTP) or
//! arrived on the app's socket (Socket Mode).
//!
//! Each handler answers at once, synchronously (the acknowledgement), and
//! finishes in a task of its own: who the user is (user groups), the engine
//! call, then the report. Slack's 3-second deadline never waits for a
//! backend.
//!
//! Acting once: the engine's idempotency key comes from Slack's own IDs, the
//! same on every retry (`trigger_id` for commands, `event_id` for events);
//! a delivery already seen here (a retry, a redelivered envelope) is
//! acknowledged and dropped. Prompt answers are a compare-and-swap in the
//! engine, so two presses act once.

use super::api::SlackApi;
use super::blocks;
use super::identity::Identities;
use super::modal;
use crate::chat::{Message, Severity};
use crate::command::form::{self, Form, Input};
use crate::command::{self, Command};
use crate::domain::Platform;
use crate::engine::{Engine, Outcome, Status};
use serde_json::{json, Value};
use slack_morphism::prelude::*;
use std::sync::Arc;
use std::time::Duration;

/// How long a delivery ID is remembered for dropping retries (Slack retries
/// for about 5 minutes), and how many are kept at most.
const SEEN_FOR: Duration = Duration::from_secs(600);
const SEEN_MAX: usize = 20_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Via {
    Slash,
    Mention,
    Button,
}

/// Where a request came from and how to answer the person privately.
#[derive(Clone, Debug)]
struct Origin {
    via: Via,
    channel: String,
    user: String,
    response_url: Option<String>,
    /// The thread to answer in (a mention's thread, a prompt's thread).
    thread_ts: Option<String>,
}

pub struct Inbound {
    pub engine: Arc<Engine>,
    pub api: Arc<SlackApi>,
    pub identities: Identities,
    seen: crate::chat::recent::RecentIds,
}

impl Inbound {
    pub fn new(engine: Arc<Engine>, api: Arc<SlackApi>, identities: Identities) -> Inbound {
        Inbound {
            engine,
            api,
            identities,
            seen: crate::chat::recent::RecentIds::new(SEEN_FOR, SEEN_MAX),
        }
    }

    /// True the first time a delivery ID is seen.
    fn first_time(&self, id: &str) -> bool {
        self.seen.first_time(id)
    }

    /// A slash command (form fields, or a Socket Mode payload): returns the
    /// immediate (ephemeral) answer and runs the command in the background.
    /// The payload's `user_name` is deprecated and not used: people are
    /// shown as mentions (see `Identities::actor`).
    pub fn command(self: &Arc<Self>, ev: SlackCommandEvent) -> Value {
        let (name, text) = split_command(ev.command.as_ref(), ev.text.as_deref().unwrap_or(""));
        let services = self.engine.config.service_names();
        let parsed = match command::parse_parts(&name, &text, &services) {
            Ok(c) => c,
            Err(e) => {
                return json!({"response_type": "ephemeral", "text": format!("⚠️ {e}")});
            }
        };
        let ack = acknowledgement(&parsed);
        let key = format!("slack:command:{}", ev.trigger_id);
        if self.first_time(&key) {
            let me = self.clone();
            let origin = Origin {
                via: Via::Slash,
                channel: ev.channel_id.to_string(),
                user: ev.user_id.to_string(),
                response_url: Some(ev.response_url.0.to_string()),
                thread_ts: None,
            };
            if let Some(form) = crate::command::form::asks(&parsed) {
                // Before anything slow: the trigger lasts 3 s.
                let trigger = ev.trigger_id.to_string();
                tokio::spawn(async move { me.open_form(&origin, &trigger, form).await });
                return json!({"response_type": "ephemeral",
                    "text": format!("📝 {} asks for the reason in a form…", form_name(&parsed))});
            }
            tokio::spawn(async move {
                let actor = me.identities.actor(&origin.user).await;
                let outcome =
                    crate::intake::handle(&me.engine, actor, parsed.clone(), Some(key)).await;
                me.report(&origin, Some(&parsed), outcome).await;
            });
        }
        json!({"response_type": "ephemeral", "text": ack})
    }

    /// Opens the reason form for a command typed without one; when Slack
    /// refuses (the trigger expired or was used), says how to type it.
    async fn open_form(&self, origin: &Origin, trigger: &str, form: Form) {
        let meta = modal::Metadata {
            command: form.context.clone(),
            channel: origin.channel.clone(),
            user: origin.user.clone(),
            response_url: origin.response_url.clone(),
            opened: self.engine.clock.now().timestamp(),
        };
        if let Err(e) = self.api.open_view(trigger, modal::view(&form, &meta)).await {
            tracing::warn!(error = %e, "slack: cannot open the reason form");
            let said = match &e {
                crate::chat::ChatError::Platform(code) => code.clone(),
                other => other.to_string(),
            };
            let msg = Message::new(Severity::Warning, "The reason form did not open").text(format!(
                "Slack said: {said}. Nothing was done. Type the reason with the command instead: /{} <reason>",
                form.context
            ));
            self.privately(origin, &msg).await;
        }
    }

    /// An interaction: a button press (`block_actions`, answered with an
    /// empty 200) or a form's `view_submission`, whose answer (`Some`) is
    /// Slack's `response_action` when the form must stay open.
    pub fn interaction(self: &Arc<Self>, ev: SlackInteractionEvent) -> Option<Value> {
        match ev {
            SlackInteractionEvent::BlockActions(ev) => {
                self.press(ev);
                None
            }
            SlackInteractionEvent::ViewSubmission(ev) => self.submission(ev),
            _ => None,
        }
    }

    /// A form's submission acts as the command typed in full would, keyed
    /// on the view's ID so a double submission acts once. An expired or
    /// unreadable form, or a refused input, keeps the form open with the
    /// problem under the input to fix; nothing is done.
    fn submission(self: &Arc<Self>, ev: SlackInteractionViewSubmissionEvent) -> Option<Value> {
        let SlackView::Modal(view) = &ev.view.view else {
            return None;
        };
        if view.callback_id.as_ref().map(|c| c.0.as_str()) != Some(modal::CALLBACK_ID) {
            return None;
        }
        let meta = view
            .private_metadata
            .as_deref()
            .and_then(|m| serde_json::from_str::<modal::Metadata>(m).ok());
        let Some(meta) = meta else {
            return Some(modal::errors(
                Input::Reason,
                "This form's context is unreadable; nothing was done. Type the command again.",
            ));
        };
        let user = ev.user.id.to_string();
        if user != meta.user {
            return Some(modal::errors(
                Input::Reason,
                "This form was opened by someone else; nothing was done.",
            ));
        }
        let now = self.engine.clock.now().timestamp();
        if let Err(why) = form::check_open(meta.opened, now, self.engine.config.engine.prompt_ttl.0)
        {
            return Some(modal::errors(Input::Reason, &why));
        }
        let reason = modal::value(&ev.view, Input::Reason).unwrap_or_default();
        let revision = modal::value(&ev.view, Input::Revision);
        let services = self.engine.config.service_names();
        let cmd = match form::submit(&meta.command, &reason, revision.as_deref(), &services) {
            Ok(c) => c,
            Err(e) => return Some(modal::refused(&e)),
        };
        let key = format!("slack:view:{}", ev.view.state_params.id);
        if self.first_time(&key) {
            let me = self.clone();
            let origin = Origin {
                via: Via::Slash,
                channel: meta.channel,
                user,
                response_url: meta.response_url,
                thread_ts: None,
            };
            tokio::spawn(async move {
                let actor = me.identities.actor(&origin.user).await;
                let outcome =
                    crate::intake::handle(&me.engine, actor, cmd.clone(), Some(key)).await;
                me.report(&origin, Some(&cmd), outcome).await;
            });
        }
        None
    }

    /// A `block_actions` payload (a button press).
    fn press(self: &Arc<Self>, ev: SlackInteractionBlockActionsEvent) {
        let Some(user) = ev.user.clone() else { return };
        let channel =
            ev.channel
                .as_ref()
                .map(|c| c.id.to_string())
                .or_else(|| match &ev.container {
                    SlackInteractionActionContainer::Message(m) => {
                        m.channel_id.as_ref().map(|c| c.to_string())
                    }
                    _ => None,
                });
        let Some(channel) = channel else { return };
        let message_ts = match &ev.container {
            SlackInteractionActionContainer::Message(m) => m.message_ts.to_string(),
            _ => String::new(),
        };
        let thread_ts = ev
            .message
            .as_ref()
            .and_then(|m| m.origin.thread_ts.as_ref())
            .map(|t| t.to_string());
        for action in ev.actions.clone().unwrap_or_default() {
            let action_id = action.action_id.to_string();
            let key = format!("slack:press:{message_ts}:{action_id}:{}", ev.trigger_id);
            if !self.first_time(&key) {
                continue;
            }
            let me = self.clone();
            let origin = Origin {
                via: Via::Button,
                channel: channel.clone(),
                user: user.id.to_string(),
                response_url: ev.response_url.as_ref().map(|u| u.0.to_string()),
                thread_ts: thread_ts.clone(),
            };
            let pressed = message_ts.clone();
            tokio::spawn(async move {
                let actor = me.identities.actor(&origin.user).await;
                let outcome = crate::intake::press(&me.engine, actor, &action_id, Some(key)).await;
                me.show_answer_on(&origin.channel, &pressed, &action_id, &outcome)
                    .await;
                me.report(&origin, None, outcome).await;
            });
        }
    }

    /// Shows an answered prompt on the message whose button was pressed
    /// when the prompt does not know that message: a leader that died
    /// between posting a prompt and storing where it went leaves its
    /// successor without it, and the buttons would stay.
    async fn show_answer_on(&self, channel: &str, ts: &str, action_id: &str, outcome: &Outcome) {
        if outcome.status != Status::Succeeded || outcome.repeat || ts.is_empty() {
            return;
        }
        let Some((id, _)) = crate::engine::prompt::parse_action_id(action_id) else {
            return;
        };
        let Ok(Some(p)) = self.engine.prompts.get(&id).await else {
            return;
        };
        let known = p
            .messages
            .iter()
            .any(|m| m.platform == Platform::Slack && m.id == ts);
        if p.state == crate::engine::PromptState::Open || known {
            return;
        }
        let req = SlackApiChatUpdateRequest::new(
            channel.to_string().into(),
            blocks::content(&p.message()),
            ts.to_string().into(),
        );
        if let Err(e) = self.api.update_message(req).await {
            tracing::warn!(error = %e, "slack: cannot show the answer on the pressed prompt");
        }
    }

    /// An Events API callback; `app_mention` runs the mentioned command.
    pub fn event(self: &Arc<Self>, cb: SlackPushEventCallback) {
        let key = format!("slack:event:{}", cb.event_id);
        if !self.first_time(&key) {
            return;
        }
        let SlackEventCallbackBody::AppMention(m) = cb.event else {
            return;
        };
        let text = m.content.text.clone().unwrap_or_default();
        let line = mention_line(&text, self.api.bot_user().as_deref());
        let ts = m.origin.ts.to_string();
        let origin = Origin {
            via: Via::Mention,
            channel: m.channel.to_string(),
            user: m.user.to_string(),
            response_url: None,
            thread_ts: Some(
                m.origin
                    .thread_ts
                    .as_ref()
                    .map(|t| t.to_string())
                    .unwrap_or(ts),
            ),
        };
        let me = self.clone();
        tokio::spawn(async move {
            let services = me.engine.config.service_names();
            let (name, text) = split_command(
                line.split_whitespace().next().unwrap_or("/help"),
                line.split_once(char::is_whitespace)
                    .map(|x| x.1)
                    .unwrap_or(""),
            );
            let parsed = command::parse_parts(&name, &text, &services).ok();
            let actor = me.identities.actor(&origin.user).await;
            let outcome = match &parsed {
                Some(c) => crate::intake::handle(&me.engine, actor, c.clone(), Some(key)).await,
                None => crate::intake::handle_line(&me.engine, actor, &line, Some(key)).await,
            };
            me.report(&origin, parsed.as_ref(), outcome).await;
        });
    }

    /// Tells the person what happened: refusals and errors privately,
    /// results in the channel (unless the engine already announced them
    /// there).
    async fn report(&self, origin: &Origin, cmd: Option<&Command>, outcome: Outcome) {
        if outcome.repeat {
            // Reported when it first ran.
            return;
        }
        let query = matches!(
            cmd,
            Some(Command::Status { .. } | Command::Audit { .. } | Command::Help { .. })
        );
        let private = query
            || outcome.status == Status::Refused
            || (outcome.status == Status::Failed && !outcome.announced);
        if private {
            self.privately(origin, &outcome.message).await;
            return;
        }
        match origin.via {
            // The engine updated the prompt and posted the result in its thread.
            Via::Button => {}
            Via::Mention => {
                let req = SlackApiChatPostMessageRequest::new(
                    origin.channel.clone().into(),
                    blocks::content(&outcome.message),
                )
                .opt_thread_ts(origin.thread_ts.clone().map(Into::into));
                if let Err(e) = self.api.post_message(req).await {
                    tracing::warn!(error = %e, "slack: cannot answer a mention");
                }
            }
            Via::Slash => {
                if outcome.announced && self.announced_here(cmd, &origin.channel) {
                    return;
                }
                if let Some(url) = &origin.response_url {
                    let mut body =
                        serde_json::to_value(blocks::content(&outcome.message)).unwrap_or_default();
                    body["response_type"] = json!("in_channel");
                    if let Err(e) = self.api.respond(url, &body).await {
                        tracing::warn!(error = %e, "slack: cannot answer through response_url");
                    }
                }
            }
        }
    }

    /// An ephemeral message to the person who asked (`chat.postEphemeral`),
    /// through the `response_url` where the bot cannot post (a DM, a
    /// channel it is not in).
    async fn privately(&self, origin: &Origin, msg: &Message) {
        let req = SlackApiChatPostEphemeralRequest::new(
            origin.channel.clone().into(),
            origin.user.clone().into(),
            blocks::content(msg),
        )
        .opt_thread_ts(origin.thread_ts.clone().map(Into::into));
        match self.api.post_ephemeral(req).await {
            Ok(()) => {}
            // A flood: the asker has the acknowledgement; nothing more is queued.
            Err(e @ crate::chat::ChatError::Overloaded(_)) => {
                tracing::debug!(error = %e, "slack: private reply dropped")
            }
            Err(e) => match &origin.response_url {
                Some(url) => {
                    let mut body = serde_json::to_value(blocks::content(msg)).unwrap_or_default();
                    body["response_type"] = json!("ephemeral");
                    if let Err(e2) = self.api.respond(url, &body).await {
                        tracing::warn!(error = %e, fallback = %e2, "slack: cannot answer privately");
                    }
                }
                None => tracing::warn!(error = %e, "slack: cannot answer privately"),
            },
        }
    }

    /// Whether the engine posted this command's result in `channel`.
    fn announced_here(&self, cmd: Option<&Command>, channel: &str) -> bool {
        let config = &self.engine.config;
        let slack_id = |alias: &str| self.engine.notifier.channel_id(alias, Platform::Slack);
        let services: Vec<&crate::config_file::ServiceConfig> = match cmd {
            Some(
                Command::Rollback { service, .. }
                | Command::Promote { service, .. }
                | Command::Pause { service, .. }
                | Command::Resume { service, .. }
                | Command::Auto { service, .. },
            ) => config.service(service).into_iter().collect(),
            Some(Command::Freeze { scope, .. } | Command::Unfreeze { scope }) => config
                .services
                .iter()
                .filter(|s| scope.covers(&s.environment, s.name()))
                .collect(),
            _ => Vec::new(),
        };
        services.iter().any(|s| {
            s.deploy_channel
                .iter()
                .chain(s.incident_channel.iter())
                .any(|alias| slack_id(alias.as_ref()).as_deref() == Some(channel))
        })
    }
}

/// `/rollback` + `checkout …`, or the umbrella `/rollbot status checkout`.
fn split_command(command: &str, text: &str) -> (String, String) {
    let name = command.trim().trim_start_matches('/').to_ascii_lowercase();
    if name == "rollbot" {
        let text = text.trim();
        let (first, rest) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
        let first = if first.is_empty() { "help" } else { first };
        return (first.trim_start_matches('/').to_string(), rest.to_string());
    }
    (name, text.to_string())
}

/// The text of an `app_mention` without the bot's mention, as a command line.
fn mention_line(text: &str, bot: Option<&str>) -> String {
    let mut rest = text.trim();
    while let Some(after) = rest.strip_prefix("<@") {
        let Some(end) = after.find('>') else { break };
        let id = &after[..end];
        if bot.is_some_and(|b| b != id.split('|').next().unwrap_or(id)) {
            break;
        }
        rest = after[end + 1..].trim_start();
    }
    let line = rest.trim();
    if line.starts_with('/') {
        line.to_string()
    } else {
        format!("/{line}")
    }
}

/// The command a form asks the reason for, as the acknowledgement names it.
fn form_name(c: &Command) -> String {
    match c {
        Command::Rollback { service, .. } => format!("Rolling back {service}"),
        Command::RollbackRelease { release, .. } => format!("Rolling back release {release}"),
        Command::Promote { service, .. } => format!("Force-promoting {service}"),
        _ => "This command".to_string(),
    }
}

/// What the person sees at once, before the engine runs.
fn acknowledgement(c: &Command) -> String {
    match c {
        Command::Rollback { service, .. } => format!("⏳ Rolling back {service}…"),
        Command::Fallback { service, name, .. } => {
            format!("⏳ Trying fallback `{name}` of {service}…")
        }
        Command::RollbackRelease { release, .. } => {
            format!("⏳ Rolling back release {release}, dependents first…")
        }
        Command::Promote { service, .. } => format!("⏳ Promoting {service}…"),
        Command::Pause { service, .. } => format!("⏳ Pausing {service}…"),
        Command::Resume { service, .. } => format!("⏳ Resuming {service}…"),
        Command::Freeze { scope, .. } => format!("⏳ Freezing {scope}…"),
        Command::Unfreeze { scope } => format!("⏳ Lifting the freeze on {scope}…"),
        Command::Auto {
            service, enabled, ..
        } => format!(
            "⏳ Switching automation of {service} {}…",
            if *enabled { "on" } else { "off" }
        ),
        Command::Status { .. } | Command::Audit { .. } | Command::Help { .. } => {
            "⏳ Looking that up…".to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_the_umbrella_command() {
        assert_eq!(
            split_command("/rollback", "checkout bad"),
            ("rollback".into(), "checkout bad".into())
        );
        assert_eq!(
            split_command("/rollbot", "status checkout"),
            ("status".into(), "checkout".into())
        );
        assert_eq!(split_command("/rollbot", " "), ("help".into(), "".into()));
    }

    #[test]
    fn mentions_become_command_lines() {
        assert_eq!(
            mention_line("<@U0BOT> rollback checkout bad deploy", Some("U0BOT")),
            "/rollback checkout bad deploy"
        );
        assert_eq!(
            mention_line("<@U0BOT|rollbot> /status", Some("U0BOT")),
            "/status"
        );
        // Someone else's mention first is not stripped.
        assert_eq!(
            mention_line("<@U0ALICE> rollback x", Some("U0BOT")),
            "/<@U0ALICE> rollback x"
        );
        assert_eq!(mention_line("<@U0BOT> help", None), "/help");
    }
}
