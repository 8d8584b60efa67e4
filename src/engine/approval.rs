//! Prompts in the engine: the two-person rule (step 3) asks a second person
//! through a prompt, and a prompt's answer runs the choice's action through
//! the same steps as any request.

use super::prompt::{Answer, Choice, Pick};
use super::{
    new_id, status_name, unaudited, Engine, Outcome, Prompt, PromptState, Refusal, Request, Status,
};
use crate::audit::Outcome as AuditOutcome;
use crate::chat::{ButtonStyle, Message, Severity};
use crate::config_file::ServiceConfig;
use crate::domain::Action;
use crate::roles::Role;
use chrono::{DateTime, Utc};
use serde_json::json;
use std::collections::BTreeMap;

impl Engine {
    /// The two-person rule: a critical service's promote waits for someone else.
    pub(super) async fn ask_second_person(
        &self,
        req: &Request,
        corr: &str,
        svc: &ServiceConfig,
    ) -> anyhow::Result<Outcome> {
        let full = matches!(req.action, Action::Promote { full: true, .. });
        let question = format!(
            "{} asks to promote {}{}. {} is critical: a second person with the approver role must approve.",
            req.actor.display_name, svc.name(), if full { " fully" } else { " one step" }, svc.name()
        );
        let prompt = Prompt {
            id: new_id(),
            service: svc.name().into(),
            title: format!("Approve promotion of {}?", svc.name()),
            question,
            requested_by: req.actor.clone(),
            reason: req.reason.clone(),
            approve: Choice {
                label: "Approve".into(),
                action: Some(req.action.clone()),
                style: ButtonStyle::Primary,
            },
            reject: Choice {
                label: "Reject".into(),
                action: None,
                style: ButtonStyle::Danger,
            },
            allowed_roles: vec![Role::Approver, Role::Admin],
            other: None,
            other_person_required: true,
            promotes: true,
            created: self.clock.now(),
            expires: self.clock.now()
                + chrono::Duration::from_std(self.config.engine.prompt_ttl.0)?,
            channel: svc.deploy_channel.as_ref().map(|c| c.as_ref().clone()),
            thread: vec![],
            messages: vec![],
            correlation_id: corr.into(),
            state: PromptState::Open,
            escalated: 0,
        };
        self.post_prompt(prompt, req).await
    }

    /// Stores a prompt, audits it as pending and posts it with its buttons.
    pub async fn post_prompt(&self, mut prompt: Prompt, req: &Request) -> anyhow::Result<Outcome> {
        self.prompts.save(&prompt).await?;
        let mut params = BTreeMap::new();
        params.insert("prompt".into(), json!(prompt.id));
        params.insert(
            "on_approve".into(),
            serde_json::to_value(&prompt.approve.action)?,
        );
        params.insert(
            "on_reject".into(),
            serde_json::to_value(&prompt.reject.action)?,
        );
        self.record(
            req,
            &prompt.correlation_id,
            Some(&prompt.service),
            params,
            AuditOutcome::Pending,
            prompt.question.clone(),
        )
        .await?;
        if let Some(ch) = &prompt.channel {
            prompt.messages = self
                .notifier
                .reply_or_post(&prompt.thread, ch, &prompt.message())
                .await;
            self.prompts.save(&prompt).await?;
        }
        let message = Message::new(
            Severity::Info,
            format!("Waiting for approval: {}", prompt.title),
        )
        .text(&prompt.question)
        .context(format!("prompt {}", prompt.id))
        .context(format!("correlation {}", prompt.correlation_id));
        Ok(Outcome {
            prompt: Some(prompt.id.clone()),
            announced: !prompt.messages.is_empty(),
            ..Outcome::new(Status::Pending, message, &prompt.correlation_id)
        })
    }

    /// Approve or reject a prompt: once, by someone allowed, not frozen.
    pub(super) async fn answer(
        &self,
        req: &Request,
        corr: &str,
        id: &str,
        pick: Pick,
    ) -> anyhow::Result<Outcome> {
        let Some(p) = self.prompts.get(id).await? else {
            return self.refuse(req, corr, None, Refusal::UnknownPrompt, "Unknown prompt", format!("There is no prompt `{id}`; the button may be forged or from another rollbot.")).await;
        };
        let Some(choice) = p.picked(pick).cloned() else {
            return self.refuse(req, corr, None, Refusal::UnknownPrompt, "Unknown choice", format!("Prompt `{id}` offers no third choice; the button may be forged. The prompt stays open.")).await;
        };
        let approve = pick == Pick::Approve;
        let svc = match self.service_of(req, corr, Some(&p.service)).await? {
            Ok(s) => s,
            Err(refused) => return Ok(refused),
        };
        let now = self.clock.now();
        if let Some(refused) = self.check_answer(req, corr, &p, svc, approve, now).await? {
            return Ok(refused);
        }
        // The compare-and-swap: of two presses, one is accepted.
        let p = match self.prompts.answer(id, &req.actor, pick, now).await? {
            Some(Answer::Accepted(p)) => p,
            Some(Answer::AlreadyAnswered(p)) => return Ok(already_answered(&p, corr)),
            None => {
                return self
                    .refuse(
                        req,
                        corr,
                        Some(svc),
                        Refusal::UnknownPrompt,
                        "Unknown prompt",
                        format!("Prompt `{id}` disappeared."),
                    )
                    .await
            }
        };
        self.carry_out(req, &p, svc, choice, pick).await
    }

    /// Refuses an answer to a prompt that is answered or expired, by someone
    /// without an allowed role, by the person who asked when a second person
    /// must answer, or approving a promotion during a freeze.
    async fn check_answer(
        &self,
        req: &Request,
        corr: &str,
        p: &Prompt,
        svc: &ServiceConfig,
        approve: bool,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Option<Outcome>> {
        if let PromptState::Answered { .. } = &p.state {
            return Ok(Some(already_answered(p, corr)));
        }
        if now >= p.expires {
            // Show it on the prompt itself, so nobody else presses a dead button.
            self.notifier
                .update(&p.messages, &p.expired_message())
                .await;
            return self
                .refuse(
                    req,
                    corr,
                    Some(svc),
                    Refusal::Expired,
                    "Prompt expired",
                    format!(
                        "This prompt expired at {}. Ask again, for example `{}`.",
                        p.expires.format("%Y-%m-%d %H:%M UTC"),
                        ask_again(p)
                    ),
                )
                .await
                .map(Some);
        }
        let roles = self
            .roles
            .roles_on(&req.actor, &svc.environment, svc.name());
        if !roles.iter().any(|r| p.allowed_roles.contains(r)) {
            let names: Vec<&str> = p.allowed_roles.iter().map(|r| r.name()).collect();
            return self.refuse(req, corr, Some(svc), Refusal::NotAllowed, "Not allowed to answer", format!("Answering this prompt needs the role {} on {}. The prompt stays open for someone who holds it.", names.join(" or "), svc.name())).await.map(Some);
        }
        if p.other_person_required && req.actor.qualified_id() == p.requested_by.qualified_id() {
            let what = if p.promotes { "promotion" } else { "rollback" };
            return self.refuse(req, corr, Some(svc), Refusal::TwoPerson, "Second person needed", format!("You asked for this {what} of {}; a different person must approve it. The prompt stays open.", svc.name())).await.map(Some);
        }
        if p.promotes && approve {
            return self.check_freeze_on_approval(req, corr, svc, now).await;
        }
        Ok(None)
    }

    /// An accepted answer: the prompt shows it, it is audited, and the
    /// choice's action (if any) runs in the prompt's thread.
    async fn carry_out(
        &self,
        req: &Request,
        p: &Prompt,
        svc: &ServiceConfig,
        choice: Choice,
        pick: Pick,
    ) -> anyhow::Result<Outcome> {
        self.notifier.update(&p.messages, &p.message()).await;
        let mut params = BTreeMap::new();
        params.insert("prompt".into(), json!(p.id));
        params.insert("choice".into(), json!(choice.label));
        let answer_req = Request {
            reason: if req.reason.is_empty() {
                p.reason.clone()
            } else {
                req.reason.clone()
            },
            ..req.clone()
        };
        self.record(
            &answer_req,
            &p.correlation_id,
            Some(svc.name()),
            params,
            AuditOutcome::Succeeded,
            format!("{} answered {}", req.actor.display_name, choice.label),
        )
        .await?;
        let Some(action) = choice.action else {
            if let Some(o) = self.answer_status_page(req, p, pick).await? {
                return Ok(o);
            }
            let m = Message::new(Severity::Info, format!("{}: {}", choice.label, p.title)).text(
                format!(
                    "{} chose {}; nothing else is done.",
                    req.actor.display_name, choice.label
                ),
            );
            self.announce(svc, m.clone(), false, &p.messages);
            return Ok(Outcome {
                prompt: Some(p.id.clone()),
                announced: svc.deploy_channel.is_some(),
                ..Outcome::new(Status::Succeeded, m, &p.correlation_id)
            });
        };
        let mut params = BTreeMap::new();
        if let Some(refused) = self
            .guard_answered_rollback(&answer_req, &p.correlation_id, svc, &action, &mut params)
            .await?
        {
            return Ok(Outcome {
                prompt: Some(p.id.clone()),
                ..refused
            });
        }
        let follow = Request {
            actor: req.actor.clone(),
            action,
            service: Some(p.service.clone()),
            reason: answer_req.reason.clone(),
            idempotency_key: Some(format!("prompt:{}:{}", p.id, pick.name())),
            correlation_id: Some(p.correlation_id.clone()),
            dry_run: false,
        };
        let mut o = match &follow.action {
            // A plan of several rollbacks (a service and its dependents).
            Action::RollbackInOrder { services } => {
                let cascade = self.rollback_in_order(&follow, &p.correlation_id, services, Some(p));
                self.once(&follow, &p.correlation_id, cascade).await?
            }
            _ => {
                self.act(&follow, &p.correlation_id, svc, params, Some(p))
                    .await?
            }
        };
        // The answer is counted as approve/reject by `execute`; the
        // action it ran is counted here, so dashboards see promotes.
        if !o.repeat {
            self.telemetry
                .count_action(follow.action.name(), status_name(o.status));
        }
        o.prompt = Some(p.id.clone());
        Ok(o)
    }
}

/// The refusal of an answer to an answered prompt: who chose what, when.
fn already_answered(p: &Prompt, corr: &str) -> Outcome {
    let text = match &p.state {
        PromptState::Answered { by, choice, at } => format!(
            "{choice} by {} at {}; nothing more to do.",
            by.display_name,
            at.format("%H:%M:%S UTC")
        ),
        PromptState::Open => "answered".into(),
    };
    Outcome {
        prompt: Some(p.id.clone()),
        ..unaudited(
            Refusal::AlreadyAnswered,
            Severity::Info,
            "Already answered",
            &text,
            corr,
        )
    }
}

/// The command that asks again for what an expired prompt offered: a
/// rollback prompt suggests `/rollback`, never `/promote`.
fn ask_again(p: &Prompt) -> String {
    let verb = match p
        .approve
        .action
        .as_ref()
        .or(p.other.as_ref().and_then(|o| o.action.as_ref()))
    {
        Some(Action::Rollback { .. } | Action::RollbackInOrder { .. }) => "rollback",
        Some(Action::Promote { .. }) => "promote",
        Some(Action::Pause) => "pause",
        Some(Action::Resume) => "resume",
        _ => "status",
    };
    format!("/{verb} {}", p.service)
}
