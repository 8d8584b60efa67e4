//! Intake: turns a parsed command from any platform into an engine call.
//! Chat adapters verify and parse; this is where they all meet.

use crate::chat::{Message, Severity};
use crate::command::{self, Command};
use crate::domain::{Action, Actor, View};
use crate::engine::{Engine, Outcome, Pick, Refusal, Request, Status};

/// Runs a parsed command for `actor`. `idempotency_key` comes from the
/// platform (a Slack retry, a Discord interaction id).
pub async fn handle(
    engine: &Engine,
    actor: Actor,
    cmd: Command,
    idempotency_key: Option<String>,
) -> Outcome {
    let req = |action: Action, service: Option<String>, reason: String| {
        let mut r = Request::new(actor.clone(), action).reason(reason);
        r.service = service;
        r.idempotency_key = idempotency_key.clone();
        r
    };
    let view = |o: anyhow::Result<Outcome>| o.unwrap_or_else(|e| failure(&e.to_string()));
    match cmd {
        Command::Rollback {
            service,
            to,
            force,
            reason,
            dry_run,
        } => {
            engine
                .execute(
                    req(Action::Rollback { to, force }, Some(service), reason).dry_run(dry_run),
                )
                .await
        }
        Command::Fallback {
            service,
            name,
            reason,
            dry_run,
        } => {
            let action = Action::Fallback {
                name,
                episode: None,
            };
            engine
                .execute(req(action, Some(service), reason).dry_run(dry_run))
                .await
        }
        Command::RollbackRelease { release, reason } => {
            engine
                .execute(req(Action::RollbackRelease { release }, None, reason))
                .await
        }
        Command::Promote {
            service,
            full,
            force,
            reason,
            dry_run,
        } => {
            engine
                .execute(
                    req(Action::Promote { full, force }, Some(service), reason).dry_run(dry_run),
                )
                .await
        }
        Command::Pause { service, reason } => {
            engine
                .execute(req(Action::Pause, Some(service), reason))
                .await
        }
        Command::Resume { service, reason } => {
            engine
                .execute(req(Action::Resume, Some(service), reason))
                .await
        }
        Command::Freeze {
            scope,
            duration,
            reason,
        } => {
            let duration = duration.unwrap_or(engine.config.freeze.default_duration.0);
            engine
                .execute(req(Action::Freeze { scope, duration }, None, reason))
                .await
        }
        Command::Unfreeze { scope } => {
            engine
                .execute(req(Action::Unfreeze { scope }, None, String::new()))
                .await
        }
        Command::Auto {
            service,
            enabled,
            duration,
            reason,
        } => {
            let duration = if enabled {
                std::time::Duration::ZERO
            } else {
                duration.unwrap_or(crate::engine::DEFAULT_AUTOMATION_OFF)
            };
            engine
                .execute(req(
                    Action::Automation { enabled, duration },
                    Some(service),
                    reason,
                ))
                .await
        }
        Command::Status { service } => view(
            engine
                .status(&req(
                    Action::Query { view: View::Status },
                    service,
                    String::new(),
                ))
                .await,
        ),
        Command::Audit { service, last } => view(
            engine
                .audit_view(
                    &req(Action::Query { view: View::Audit }, service, String::new()),
                    last,
                )
                .await,
        ),
        Command::Help { command } => Outcome::new(
            Status::Succeeded,
            Message::new(Severity::Info, "rollbot help").text(command::help(command.as_deref())),
            "",
        ),
    }
}

/// Parses a line and runs it; a parse error becomes a refusal message.
pub async fn handle_line(
    engine: &Engine,
    actor: Actor,
    line: &str,
    idempotency_key: Option<String>,
) -> Outcome {
    let names = engine.config.service_names();
    match command::parse(line, &names) {
        Ok(cmd) => handle(engine, actor, cmd, idempotency_key).await,
        Err(e) => Outcome::refused(
            Refusal::Unreadable,
            Message::new(Severity::Warning, "Cannot read that command").text(e.to_string()),
            "",
        ),
    }
}

/// Presses a prompt button (`prompt:ID:approve`).
pub async fn press(
    engine: &Engine,
    actor: Actor,
    action_id: &str,
    idempotency_key: Option<String>,
) -> Outcome {
    press_because(engine, actor, action_id, String::new(), idempotency_key).await
}

/// [`press`] with the answerer's reason (a confirmation form's), which the
/// answer's audit entry keeps instead of the prompt's.
pub async fn press_because(
    engine: &Engine,
    actor: Actor,
    action_id: &str,
    reason: String,
    idempotency_key: Option<String>,
) -> Outcome {
    if let Some((service, episode, n)) = crate::engine::parse_fallback_id(action_id) {
        return press_fallback(engine, actor, action_id, (service, episode, n), reason).await;
    }
    match crate::engine::parse_action_id(action_id) {
        Some((id, pick)) => {
            let action = match pick {
                Pick::Approve => Action::Approve { prompt: id },
                Pick::Reject => Action::Reject { prompt: id },
                Pick::Other => Action::Choose { prompt: id },
            };
            let mut r = Request::new(actor, action).reason(reason);
            r.idempotency_key = idempotency_key;
            engine.execute(r).await
        }
        None => Outcome::refused(
            Refusal::UnknownPrompt,
            Message::new(Severity::Warning, "Unknown button")
                .text("This button is not one rollbot made; nothing was done."),
            "",
        ),
    }
}

/// A fallback button of a stuck message (`fallback:SERVICE:EPISODE:N`).
/// Its idempotency key is the button itself, not the platform's press:
/// every press, by anyone, and the automatic fallback of that stuck
/// episode share it, so the fallback acts once.
async fn press_fallback(
    engine: &Engine,
    actor: Actor,
    action_id: &str,
    (service, episode, n): (String, String, usize),
    reason: String,
) -> Outcome {
    let name = engine
        .config
        .service(&service)
        .and_then(|s| s.fallback.get(n - 1))
        .map(|f| f.name().to_string())
        // Gone from the config since: the engine says which it has.
        .unwrap_or_else(|| n.to_string());
    let action = Action::Fallback {
        name,
        episode: Some(episode),
    };
    let r = Request::new(actor, action)
        .service(service)
        .reason(reason)
        .idempotency_key(action_id);
    engine.execute(r).await
}

fn failure(e: &str) -> Outcome {
    Outcome::new(
        Status::Failed,
        Message::new(Severity::Critical, "rollbot could not answer").text(format!(
            "{e}. Retry in a moment; if it persists, check rollbot's logs."
        )),
        "",
    )
}
