//! `POST /discord/interactions`: Discord's interactions, verified first.
//!
//! 1. The Ed25519 signature over `X-Signature-Timestamp` + the raw body is
//!    checked with the application's public key before anything is read; a
//!    bad or missing one, or a timestamp more than five minutes from now,
//!    gets 401 and does nothing else (Discord sends bad signatures on
//!    purpose when the URL is saved).
//! 2. PING gets PONG; autocomplete gets the matching services at once.
//! 3. A command or a button is acknowledged at once (a deferred response,
//!    type 5 or 6, in the HTTP answer), well inside Discord's 3 seconds;
//!    the engine runs meanwhile and its result edits the deferred answer
//!    (`@original`) or, for a button, arrives as a follow-up.
//! 4. Who sees the answer is decided before deferring, because Discord
//!    keeps the deferral's visibility: the first follow-up after a type 5
//!    edits the deferred message and ignores its ephemeral flag. Read-only
//!    views, and commands the engine will refuse on grounds known at once
//!    (the roles in `[roles]`, a freeze on a promotion), are deferred
//!    ephemerally (flags 64) and answered only to their author; actions
//!    are deferred visibly and their result shows in the channel. A refusal
//!    only the backend or a lock can tell (a busy service, a revision that
//!    does not exist) is shown where the deferral is, in the channel.
//! 5. The interaction ID is the idempotency key, so the same interaction
//!    never acts twice.
//!
//! Who asks is `discord:USER_ID` with `discord-role:ROLE_ID` for each role
//! in `member.roles`; display names are only shown, never trusted.

use super::modal;
use super::render;
use super::rest::{Call, Rest};
use super::{channel_queue, explain};
use crate::chat::{Message, Severity};
use crate::command::discord::{self as dc, OptionValue};
use crate::command::form::Input;
use crate::command::Command;
use crate::config_file::DiscordConfig;
use crate::domain::{Actor, Platform};
use crate::engine::{Engine, FreezeGate, Outcome, PromptState, Status};
use crate::roles::Permission;
use crate::telemetry::{InteractionLabels, PlatformLabels};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::json;
use serenity::builder::{
    CreateAutocompleteResponse, CreateInteractionResponse, CreateInteractionResponseFollowup,
    CreateInteractionResponseMessage, EditInteractionResponse,
};
use serenity::interactions_endpoint::Verifier;
use serenity::model::application::{
    CommandDataOptionValue, CommandInteraction, ComponentInteraction, Interaction, ModalInteraction,
};
use serenity::model::guild::Member;
use serenity::model::user::User;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// How far `X-Signature-Timestamp` may be from rollbot's clock.
const MAX_SKEW_SECS: i64 = 300;

/// The Discord side of the server: verifier, filters, and the REST client
/// shared with the outbound adapter (same queues, same rate limits).
pub struct Interactions {
    verifier: Verifier,
    rest: Arc<Rest>,
    guild_ids: Vec<String>,
    channel_ids: Vec<String>,
}

impl Interactions {
    pub fn new(config: &DiscordConfig, rest: Arc<Rest>) -> anyhow::Result<Interactions> {
        let key: [u8; 32] = hex::decode(&config.public_key)
            .ok()
            .and_then(|k| k.try_into().ok())
            .ok_or_else(|| anyhow::anyhow!("[chat.discord] public_key must be 64 hex digits"))?;
        let verifier = Verifier::try_new(key).map_err(|e| {
            anyhow::anyhow!("[chat.discord] public_key is not a valid Ed25519 key: {e}")
        })?;
        Ok(Interactions {
            verifier,
            rest,
            guild_ids: config.guild_ids.clone(),
            channel_ids: config.channel_ids.clone(),
        })
    }
}

fn json_response(value: serde_json::Value) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

/// The response as Discord documents it (serenity writes `"data": null`
/// for types without data; leave it out).
fn response_json(r: &CreateInteractionResponse) -> serde_json::Value {
    let mut v = serde_json::to_value(r).expect("builders serialize");
    if let Some(o) = v.as_object_mut() {
        if o.get("data").is_some_and(|d| d.is_null()) {
            o.remove("data");
        }
    }
    v
}

fn respond(r: CreateInteractionResponse) -> Response {
    json_response(response_json(&r))
}

/// An answer shown only to the person who asked, at once.
fn ephemeral_now(msg: &Message) -> Response {
    respond(CreateInteractionResponse::Message(
        CreateInteractionResponseMessage::new()
            .embed(render::embed(msg))
            .allowed_mentions(render::no_mentions())
            .ephemeral(true),
    ))
}

/// A response body that says when hyper is done with it, so follow-ups are
/// sent only after Discord has its first answer.
struct Signalled {
    data: Option<Bytes>,
    len: u64,
    done: Option<oneshot::Sender<()>>,
}

impl http_body::Body for Signalled {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.data.take().map(|d| Ok(http_body::Frame::data(d))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.len)
    }
}

impl Drop for Signalled {
    fn drop(&mut self) {
        if let Some(tx) = self.done.take() {
            let _ = tx.send(());
        }
    }
}

/// The deferred answer, and a receiver that fires once it has been written.
fn deferred(r: CreateInteractionResponse) -> (Response, oneshot::Receiver<()>) {
    let (tx, rx) = oneshot::channel();
    let bytes = Bytes::from(response_json(&r).to_string());
    let body = Signalled {
        len: bytes.len() as u64,
        data: Some(bytes),
        done: Some(tx),
    };
    let resp = Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::new(body))
        .expect("static response parts");
    (resp, rx)
}

/// What the endpoint's handler needs.
#[derive(Clone)]
struct Endpoint {
    engine: Arc<Engine>,
    discord: Arc<Interactions>,
}

/// `POST /discord/interactions`.
pub fn routes(engine: Arc<Engine>, discord: Arc<Interactions>) -> Router {
    Router::new()
        .route("/discord/interactions", post(interactions))
        .with_state(Endpoint { engine, discord })
}

/// Without `[chat.discord]` the endpoint still answers, saying what is
/// missing (Discord shows it when the URL is saved).
pub fn not_configured() -> Router {
    Router::new().route(
        "/discord/interactions",
        post(|| async {
            (
                StatusCode::NOT_FOUND,
                "Discord is not configured: add [chat.discord] to the config\n",
            )
        }),
    )
}

async fn interactions(
    State(Endpoint { engine, discord }): State<Endpoint>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or("");
    let (signature, timestamp) = (
        header("x-signature-ed25519"),
        header("x-signature-timestamp"),
    );
    let now = engine.clock.now().timestamp();
    let fresh = timestamp
        .parse::<i64>()
        .is_ok_and(|t| crate::clock::within(now, t, MAX_SKEW_SECS));
    if !fresh
        || discord
            .verifier
            .verify(signature, timestamp, &body)
            .is_err()
    {
        engine
            .telemetry
            .signature_failures
            .get_or_create(&PlatformLabels {
                platform: "discord".into(),
            })
            .inc();
        tracing::warn!(fresh, "Discord interaction refused: bad or stale signature");
        return (StatusCode::UNAUTHORIZED, "invalid request signature\n").into_response();
    }
    let value: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return bad_request(format!("interaction body is not JSON: {e}")),
    };
    if value.get("type").and_then(|t| t.as_u64()) == Some(1) {
        count(&engine, "ping");
        return respond(CreateInteractionResponse::Pong);
    }
    let interaction: Interaction = match serde_json::from_value(value) {
        Ok(i) => i,
        Err(e) => return bad_request(format!("interaction not understood: {e}")),
    };
    match interaction {
        Interaction::Ping(_) => respond(CreateInteractionResponse::Pong),
        Interaction::Command(c) => {
            count(&engine, "command");
            command(engine, discord, c).await
        }
        Interaction::Autocomplete(c) => {
            count(&engine, "autocomplete");
            autocomplete(&engine, &c)
        }
        Interaction::Component(c) => {
            count(&engine, "button");
            component(engine, discord, c).await
        }
        Interaction::Modal(m) => {
            count(&engine, "form");
            form_submitted(engine, discord, m).await
        }
        _ => {
            count(&engine, "other");
            ephemeral_now(
                &Message::new(Severity::Warning, "Not supported")
                    .text("rollbot answers slash commands and its own buttons only."),
            )
        }
    }
}

fn bad_request(why: String) -> Response {
    tracing::warn!(error = %why, "Discord interaction refused");
    (StatusCode::BAD_REQUEST, json!({ "error": why }).to_string()).into_response()
}

fn count(engine: &Engine, kind: &str) {
    engine
        .telemetry
        .chat_interactions
        .get_or_create(&InteractionLabels {
            platform: "discord".into(),
            kind: kind.into(),
        })
        .inc();
}

/// `discord:USER_ID` with a `discord-role:ROLE_ID` per role; the name is
/// for messages only.
fn actor(member: Option<&Member>, user: &User) -> Actor {
    let display = member
        .and_then(|m| m.nick.clone())
        .or_else(|| user.global_name.clone())
        .unwrap_or_else(|| user.name.clone());
    let roles = member
        .map(|m| {
            m.roles
                .iter()
                .map(|r| format!("discord-role:{}", r.get()))
                .collect()
        })
        .unwrap_or_default();
    Actor::new(Platform::Discord, user.id.get().to_string(), display).with_groups(roles)
}

impl Interactions {
    /// `Some(refusal)` when commands are not taken here.
    fn place_refusal(
        &self,
        guild: Option<u64>,
        channel: u64,
        parent: Option<u64>,
    ) -> Option<Message> {
        if !self.guild_ids.is_empty() {
            let ok = guild.is_some_and(|g| self.guild_ids.contains(&g.to_string()));
            if !ok {
                return Some(
                    Message::new(Severity::Warning, "Not in this server")
                        .text("rollbot takes commands only in the servers listed in its configuration ([chat.discord] guild_ids). Nothing was done."),
                );
            }
        }
        if !self.channel_ids.is_empty() {
            let here = [Some(channel), parent]
                .into_iter()
                .flatten()
                .any(|c| self.channel_ids.contains(&c.to_string()));
            if !here {
                let list: Vec<String> =
                    self.channel_ids.iter().map(|c| format!("<#{c}>")).collect();
                return Some(
                    Message::new(Severity::Warning, "Not in this channel").text(format!(
                        "rollbot takes commands in {}. Nothing was done.",
                        list.join(", ")
                    )),
                );
            }
        }
        None
    }
}

fn options(c: &CommandInteraction) -> Vec<(String, OptionValue)> {
    c.data
        .options
        .iter()
        .filter_map(|o| {
            let v = match &o.value {
                CommandDataOptionValue::String(s) => OptionValue::Str(s.clone()),
                CommandDataOptionValue::Boolean(b) => OptionValue::Bool(*b),
                CommandDataOptionValue::Integer(i) => OptionValue::Int(*i),
                CommandDataOptionValue::Autocomplete { value, .. } => {
                    OptionValue::Str(value.clone())
                }
                _ => return None,
            };
            Some((o.name.clone(), v))
        })
        .collect()
}

async fn command(
    engine: Arc<Engine>,
    discord: Arc<Interactions>,
    c: CommandInteraction,
) -> Response {
    let who = actor(c.member.as_deref(), &c.user);
    let parent = c
        .channel
        .as_ref()
        .and_then(|ch| ch.parent_id)
        .map(|p| p.get());
    if let Some(m) = discord.place_refusal(c.guild_id.map(|g| g.get()), c.channel_id.get(), parent)
    {
        return ephemeral_now(&m);
    }
    let names = engine.config.service_names();
    let cmd = match dc::to_command(&c.data.name, &options(&c), &names) {
        Ok(cmd) => cmd,
        Err(e) => {
            return ephemeral_now(
                &Message::new(Severity::Warning, "Cannot read that command").text(e.to_string()),
            )
        }
    };
    if let Some(form) = crate::command::form::asks(&cmd) {
        let opened = engine.clock.now().timestamp();
        match modal::form(&form, c.id.get(), opened) {
            Some(r) => return respond(r),
            None => {
                return ephemeral_now(&Message::new(Severity::Warning, "A reason is needed").text(
                    "This command needs a reason, and its names are too long for a form: type it in the command's `reason` option. Nothing was done.",
                ))
            }
        }
    }
    let key = format!("discord:{}", c.id.get());
    run_deferred(engine, discord, who, cmd, key, c.token.clone()).await
}

/// Defers the answer (privately when the engine will refuse on grounds
/// known now) and runs `cmd`; its outcome edits the deferred answer.
async fn run_deferred(
    engine: Arc<Engine>,
    discord: Arc<Interactions>,
    who: Actor,
    cmd: Command,
    key: String,
    token: String,
) -> Response {
    let private = only_for_the_author(&engine, &who, &cmd).await;
    let defer = CreateInteractionResponseMessage::new().ephemeral(private);
    let (response, sent) = deferred(CreateInteractionResponse::Defer(defer));
    tokio::spawn(async move {
        let outcome = crate::intake::handle(&engine, who, cmd, Some(key)).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), sent).await;
        deliver(&engine, &discord.rest, &token, &outcome).await;
    });
    response
}

/// A submitted form (interaction type 5): a reason form acts exactly as
/// the command typed in full, once per form however often it is sent; a
/// confirmation is the press it confirms. An expired or refused form
/// answers privately and does nothing.
async fn form_submitted(
    engine: Arc<Engine>,
    discord: Arc<Interactions>,
    m: ModalInteraction,
) -> Response {
    let who = actor(m.member.as_ref(), &m.user);
    let reason = modal::value(&m, Input::Reason).unwrap_or_default();
    match modal::submitted(&m.data.custom_id) {
        None => ephemeral_now(
            &Message::new(Severity::Warning, "Unknown form")
                .text("This form is not one rollbot made; nothing was done."),
        ),
        Some(modal::Submitted::Confirm { action_id }) => {
            let channel = m
                .message
                .as_ref()
                .map(|msg| msg.channel_id)
                .unwrap_or(m.channel_id);
            let key = format!("discord:{}", m.id.get());
            press(
                engine,
                discord,
                who,
                action_id,
                reason,
                key,
                m.token.clone(),
                channel.get(),
            )
        }
        Some(modal::Submitted::Form {
            command,
            opened,
            context,
        }) => {
            let parent = m
                .channel
                .as_ref()
                .and_then(|ch| ch.parent_id)
                .map(|p| p.get());
            if let Some(refusal) =
                discord.place_refusal(m.guild_id.map(|g| g.get()), m.channel_id.get(), parent)
            {
                return ephemeral_now(&refusal);
            }
            let now = engine.clock.now().timestamp();
            if let Err(why) =
                crate::command::form::check_open(opened, now, engine.config.engine.prompt_ttl.0)
            {
                return ephemeral_now(
                    &Message::new(Severity::Warning, "This form expired").text(why),
                );
            }
            let revision = modal::value(&m, Input::Revision);
            let names = engine.config.service_names();
            match crate::command::form::submit(&context, &reason, revision.as_deref(), &names) {
                Ok(cmd) => {
                    let key = format!("discord:form:{command}");
                    run_deferred(engine, discord, who, cmd, key, m.token.clone()).await
                }
                Err(e) => ephemeral_now(
                    &Message::new(Severity::Warning, "Cannot act on that form").text(format!(
                        "{}: {}",
                        e.input.id(),
                        e.message
                    )),
                ),
            }
        }
    }
}

/// Whether a command is answered only to the person who typed it: a
/// read-only view, or a command the engine will refuse for reasons it can
/// tell locally and at once, the same checks in the same order as
/// `Engine::execute` (the service exists, the actor's role grants the
/// permission, `Engine::freeze_gate` does not refuse a promotion).
async fn only_for_the_author(engine: &Engine, who: &Actor, cmd: &Command) -> bool {
    let allowed = |perm: Permission, name: &str| {
        engine.config.service(name).is_some_and(|s| {
            engine
                .roles
                .check(who, perm, &s.environment, s.name())
                .is_ok()
        })
    };
    match cmd {
        Command::Status { .. } | Command::Audit { .. } | Command::Help { .. } => true,
        Command::Rollback { service, .. } => !allowed(Permission::Rollback, service),
        Command::Fallback { service, .. } => !allowed(Permission::Fallback, service),
        // Each step is checked by the engine; the outcome shows in the channel.
        Command::RollbackRelease { .. } => false,
        Command::Pause { service, .. } => !allowed(Permission::Pause, service),
        Command::Resume { service, .. } => !allowed(Permission::Resume, service),
        Command::Auto { service, .. } => !allowed(Permission::Pause, service),
        Command::Promote {
            service,
            force,
            reason,
            ..
        } => {
            let Some(svc) = engine.config.service(service) else {
                return true;
            };
            if !allowed(Permission::Promote, service) {
                return true;
            }
            // The engine's own freeze check, with its break-glass rules.
            matches!(
                engine.freeze_gate(who, svc, *force, reason).await,
                Ok(FreezeGate::Refused { .. })
            )
        }
        Command::Freeze { scope, .. } | Command::Unfreeze { scope } => {
            let mut covered = engine
                .config
                .services
                .iter()
                .filter(|s| scope.covers(&s.environment, s.name()))
                .peekable();
            covered.peek().is_none() || covered.any(|s| !allowed(Permission::Freeze, s.name()))
        }
    }
}

/// Puts a command's outcome in the deferred answer (`@original`), which
/// is visible or ephemeral as the deferral was.
async fn deliver(engine: &Engine, rest: &Arc<Rest>, token: &str, o: &Outcome) {
    let body = EditInteractionResponse::new()
        .embed(render::embed(&o.message))
        .allowed_mentions(render::no_mentions());
    let result = rest
        .call(
            &format!("interaction:{token}"),
            Call::EditOriginal {
                token: token.into(),
            },
            Some(&serde_json::to_value(body).expect("builders serialize")),
        )
        .await;
    if let Err(e) = result {
        failed(engine, "interaction answer", explain(e, "(interaction)"));
    }
}

fn failed(engine: &Engine, what: &str, e: impl std::fmt::Display) {
    tracing::warn!(platform = "discord", error = %e, "chat {what} failed");
    engine
        .telemetry
        .chat_errors
        .get_or_create(&PlatformLabels {
            platform: "discord".into(),
        })
        .inc();
}

fn autocomplete(engine: &Engine, c: &CommandInteraction) -> Response {
    let focused = c.data.options.iter().find_map(|o| match &o.value {
        CommandDataOptionValue::Autocomplete { value, .. } => {
            Some((o.name.as_str(), value.as_str()))
        }
        _ => None,
    });
    let services: Vec<(&str, &str)> = engine
        .config
        .services
        .iter()
        .map(|s| (s.environment.as_str(), s.name()))
        .collect();
    let choices = match focused {
        Some((name, typed)) => {
            let kind = dc::options(&c.data.name)
                .iter()
                .find(|o| o.name == name)
                .map(|o| o.kind)
                .unwrap_or(dc::OptionKind::Service);
            dc::complete(kind, typed, &services)
        }
        None => Vec::new(),
    };
    let answer = choices
        .into_iter()
        .fold(CreateAutocompleteResponse::new(), |a, s| {
            a.add_string_choice(s.clone(), s)
        });
    respond(CreateInteractionResponse::Autocomplete(answer))
}

async fn component(
    engine: Arc<Engine>,
    discord: Arc<Interactions>,
    c: ComponentInteraction,
) -> Response {
    let who = actor(c.member.as_ref(), &c.user);
    let custom_id = c.data.custom_id.clone();
    let key = format!("discord:{}", c.id.get());
    let channel = c.message.channel_id.get();
    // A stuck message's fallback button: no prompt, no confirmation form.
    if crate::engine::parse_fallback_id(&custom_id).is_some() {
        let token = c.token.clone();
        return press(
            engine,
            discord,
            who,
            custom_id,
            String::new(),
            key,
            token,
            channel,
        );
    }
    let Some((prompt_id, _)) = crate::engine::parse_action_id(&custom_id) else {
        return ephemeral_now(
            &Message::new(Severity::Warning, "Unknown button")
                .text("This button is not one rollbot made; nothing was done."),
        );
    };
    // A destructive choice of an open prompt is confirmed first.
    if let Ok(Some(p)) = engine.prompts.get(&prompt_id).await {
        let open = p.state == PromptState::Open && engine.clock.now() < p.expires;
        let confirm = p
            .buttons()
            .into_iter()
            .find(|b| b.action_id == custom_id)
            .and_then(|b| b.confirm);
        if let (true, Some(confirm)) = (open, confirm) {
            if let Some(r) = modal::confirmation(&custom_id, &confirm) {
                return respond(r);
            }
        }
    }
    press(
        engine,
        discord,
        who,
        custom_id,
        String::new(),
        key,
        c.token.clone(),
        channel,
    )
}

/// Answers a prompt's button (pressed, or confirmed in its form) with a
/// deferred update; the engine's answer follows privately when refused,
/// and the prompt's message then shows its state.
#[allow(clippy::too_many_arguments)]
fn press(
    engine: Arc<Engine>,
    discord: Arc<Interactions>,
    who: Actor,
    custom_id: String,
    reason: String,
    key: String,
    token: String,
    channel: u64,
) -> Response {
    let prompt_id = crate::engine::parse_action_id(&custom_id).map(|(id, _)| id);
    if prompt_id.is_none() && crate::engine::parse_fallback_id(&custom_id).is_none() {
        return ephemeral_now(
            &Message::new(Severity::Warning, "Unknown button")
                .text("This button is not one rollbot made; nothing was done."),
        );
    }
    let (response, sent) = deferred(CreateInteractionResponse::Acknowledge);
    let message_channel = channel.to_string();
    tokio::spawn(async move {
        let outcome =
            crate::intake::press_because(&engine, who, &custom_id, reason, Some(key)).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), sent).await;
        let rest = &discord.rest;
        if outcome.status == Status::Refused {
            let body = CreateInteractionResponseFollowup::new()
                .embed(render::embed(&outcome.message))
                .allowed_mentions(render::no_mentions())
                .ephemeral(true);
            if let Err(e) = rest
                .call(
                    &format!("interaction:{token}"),
                    Call::Followup {
                        token: token.clone(),
                    },
                    Some(&serde_json::to_value(body).expect("builders serialize")),
                )
                .await
            {
                failed(&engine, "button refusal", explain(e, "(interaction)"));
            }
        }
        // The prompt's message shows its state: answered (who, what, when)
        // or expired, with its buttons disabled; an open prompt is left
        // as it is. A fallback's result is posted in the channel.
        let Some(prompt_id) = prompt_id else {
            return;
        };
        let Ok(Some(p)) = engine.prompts.get(&prompt_id).await else {
            return;
        };
        let now = engine.clock.now();
        let mut shown = p.message();
        match &p.state {
            PromptState::Answered { .. } => {}
            PromptState::Open if now >= p.expires => {
                shown.buttons.clear();
                shown.severity = Severity::Info;
                shown = shown.field(
                    "Expired",
                    format!(
                        "no answer before {}",
                        p.expires.format("%Y-%m-%d %H:%M UTC")
                    ),
                );
            }
            PromptState::Open => return,
        }
        let buttons = p.buttons();
        let body = EditInteractionResponse::new()
            .embed(render::embed(&shown))
            .components(render::components(&buttons, true))
            .allowed_mentions(render::no_mentions());
        // In the channel's queue, after rollbot's own edit of the same message.
        if let Err(e) = rest
            .call(
                &channel_queue(&message_channel),
                Call::EditOriginal { token },
                Some(&serde_json::to_value(body).expect("builders serialize")),
            )
            .await
        {
            failed(&engine, "prompt update", explain(e, &message_channel));
        }
    });
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interactions(guilds: &[&str], channels: &[&str]) -> Interactions {
        let rest = Rest::new(
            "http://127.0.0.1:9/api/v10",
            "t",
            1,
            Default::default(),
            Arc::new(crate::telemetry::Telemetry::new()),
        )
        .unwrap();
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        Interactions {
            verifier: Verifier::try_new(key.verifying_key().to_bytes()).unwrap(),
            rest,
            guild_ids: guilds.iter().map(|s| s.to_string()).collect(),
            channel_ids: channels.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn commands_are_taken_only_where_configured() {
        let open = interactions(&[], &[]);
        assert!(open.place_refusal(None, 5, None).is_none());
        let d = interactions(&["10"], &["20"]);
        assert!(d.place_refusal(Some(10), 20, None).is_none());
        // A thread whose parent is an allowed channel.
        assert!(d.place_refusal(Some(10), 99, Some(20)).is_none());
        let m = d.place_refusal(Some(10), 21, None).unwrap();
        assert!(m.text.contains("<#20>"), "{}", m.text);
        assert!(d.place_refusal(Some(11), 20, None).is_some());
        assert!(
            d.place_refusal(None, 20, None).is_some(),
            "DMs are not a listed server"
        );
    }

    #[test]
    fn responses_are_shaped_like_discords() {
        assert_eq!(
            response_json(&CreateInteractionResponse::Pong),
            json!({"type": 1})
        );
        assert_eq!(
            response_json(&CreateInteractionResponse::Acknowledge),
            json!({"type": 6})
        );
        let d = response_json(&CreateInteractionResponse::Defer(
            CreateInteractionResponseMessage::new().ephemeral(true),
        ));
        assert_eq!(d["type"], 5);
        assert_eq!(d["data"]["flags"], 64);
    }
}
