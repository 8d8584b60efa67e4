//! A person's `/rollback checkout` when a service that depends on checkout
//! was rolled out after checkout's current rollout: that service may
//! already call checkout's new API, so rolling checkout back alone could
//! break it. rollbot does not act blindly: it shows the plan (dependents
//! first) and asks, with Roll back all in order / Only checkout / Cancel.
//! Whoever may roll checkout back may answer; each step of the answer is an
//! ordinary rollback with its own refusals.
//!
//! The controller's automatic rollbacks are not held up: its policy
//! already decided, and a failing canary must not wait for a person.

use super::prompt::Choice;
use super::{new_id, Engine, Outcome, Prompt, PromptState, Request};
use crate::chat::ButtonStyle;
use crate::config_file::ServiceConfig;
use crate::controller::rollouts::{self, Rollout};
use crate::domain::Action;
use crate::roles::Permission;

/// The service's current rollout and the dependents rolled out after it.
pub(super) struct MovedAfter {
    mine: Rollout,
    dependents: Vec<Rollout>,
}

impl Engine {
    /// The dependents of `svc` rolled out after its current rollout, when
    /// a person asks to roll `svc` back and there are any.
    pub(super) async fn dependents_moved_after(
        &self,
        req: &Request,
        svc: &ServiceConfig,
    ) -> anyhow::Result<Option<MovedAfter>> {
        if req.actor.is_system() || !matches!(req.action, Action::Rollback { .. }) {
            return Ok(None);
        }
        let dependents = self.config.dependents_of(svc.name());
        if dependents.is_empty() {
            return Ok(None);
        }
        let all = rollouts::load_all(&self.store).await?;
        let Some(mine) = self.current_rollout(&all, svc.name()).await else {
            return Ok(None);
        };
        let mut moved = Vec::new();
        for d in &dependents {
            if let Some(r) = self.current_rollout(&all, d).await {
                if r.start > mine.start {
                    moved.push(r);
                }
            }
        }
        Ok((!moved.is_empty()).then_some(MovedAfter {
            mine,
            dependents: moved,
        }))
    }

    /// The latest rollout of `service` while it is what runs: not rolled
    /// back (by the controller or by anyone since it started).
    async fn current_rollout(&self, all: &[Rollout], service: &str) -> Option<Rollout> {
        let latest = all.iter().rev().find(|r| r.service == service)?;
        if latest.state.starts_with("rolled back") {
            return None;
        }
        if let Some(rb) = self.recent_rollback(service).await {
            if rb.at >= latest.start {
                return None;
            }
        }
        Some(latest.clone())
    }

    /// The plan and the three-way prompt, posted where the service's
    /// prompts go; the asker gets it as a pending outcome (202 over HTTP).
    pub(super) async fn ask_rollback_plan(
        &self,
        req: &Request,
        corr: &str,
        svc: &ServiceConfig,
        moved: MovedAfter,
    ) -> anyhow::Result<Outcome> {
        let name = svc.name();
        let mut services: Vec<String> =
            moved.dependents.iter().map(|r| r.service.clone()).collect();
        services.push(name.to_string());
        let order = self.config.rollback_order(&services);
        let described: Vec<String> = moved
            .dependents
            .iter()
            .map(|r| {
                format!(
                    "{} ({} → {} at {})",
                    r.service,
                    r.from_revision,
                    r.to_revision,
                    r.start.format("%H:%M UTC")
                )
            })
            .collect();
        let (verb, it) = match described.len() {
            1 => ("depends", "it"),
            _ => ("depend", "they"),
        };
        let m = &moved.mine;
        let question = format!(
            "{} {verb} on {name} and moved after {name}'s current rollout ({} → {} at {}), so {it} may need {name}'s new API. Plan, dependents first: {}. Roll back all in order, only {name}, or cancel.",
            described.join(", "),
            m.from_revision,
            m.to_revision,
            m.start.format("%H:%M UTC"),
            order.join(" → "),
        );
        let now = self.clock.now();
        let prompt = Prompt {
            id: new_id(),
            service: name.into(),
            title: format!("Roll back {name} alone? Services that depend on it moved after it"),
            question,
            requested_by: req.actor.clone(),
            reason: req.reason.clone(),
            approve: Choice {
                label: "Roll back all in order".into(),
                action: Some(Action::RollbackInOrder { services: order }),
                style: ButtonStyle::Danger,
            },
            reject: Choice {
                label: "Cancel".into(),
                action: None,
                style: ButtonStyle::Default,
            },
            other: Some(Choice {
                label: format!("Only {name}"),
                action: Some(req.action.clone()),
                style: ButtonStyle::Primary,
            }),
            allowed_roles: Permission::Rollback.granted_by(),
            other_person_required: false,
            promotes: false,
            created: now,
            expires: now + chrono::Duration::from_std(self.config.engine.prompt_ttl.0)?,
            channel: svc.deploy_channel.as_ref().map(|c| c.as_ref().clone()),
            thread: vec![],
            messages: vec![],
            correlation_id: corr.into(),
            state: PromptState::Open,
            escalated: 0,
        };
        self.post_prompt(prompt, req).await
    }
}
