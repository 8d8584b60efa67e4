//! `status_page = "ask"`: when an incident of such a service is
//! identified, a prompt in the incident's thread asks a responder or an
//! approver whether customers see it. "Post to status page" opens the
//! status page incident as it stands then (later steps follow it); "Not
//! customer-facing" posts nothing. Either answer is audited like any
//! prompt's, and the prompt is stored, expires and is answered once (a
//! compare-and-swap), like every other.

use super::prompt::{Choice, Pick};
use super::{new_id, Engine, Outcome, Prompt, PromptState, Request, Status};
use crate::audit::{Outcome as AuditOutcome, Record};
use crate::chat::{ButtonStyle, Message, Severity};
use crate::domain::Actor;
use crate::incident_comms::{IncidentEvent, IncidentRef, Thread};
use crate::roles::Role;
use crate::store::Table;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Which rollout's incident a status page prompt is about, stored under
/// `status_page_prompt:ID` in the settings table.
#[derive(Debug, Serialize, Deserialize)]
struct Asked {
    rollout: String,
}

fn asked_key(prompt: &str) -> String {
    format!("status_page_prompt:{prompt}")
}

impl Engine {
    /// Asks in `incident`'s thread whether it goes on the status page.
    /// Failures are logged: the incident goes on without the prompt.
    pub async fn ask_status_page(&self, incident: &IncidentRef) {
        if let Err(e) = self.try_ask_status_page(incident).await {
            tracing::error!(service = %incident.service, rollout = %incident.rollout, error = %e, "could not ask whether the incident goes on the status page");
        }
    }

    async fn try_ask_status_page(&self, incident: &IncidentRef) -> anyhow::Result<()> {
        let now = self.clock.now();
        let service = &incident.service;
        let controller = Actor::system("controller");
        let prompt = Prompt {
            id: new_id(),
            service: service.clone(),
            title: format!("Post the {service} incident to the status page?"),
            question: format!(
                "{service} is set to ask before its incidents go on the public status page. \
                 Post to status page opens incident {} there, with {service}'s components, and follows it to Resolved. \
                 Not customer-facing posts nothing.",
                incident.rollout
            ),
            requested_by: controller.clone(),
            reason: format!("incident {} identified", incident.rollout),
            approve: Choice {
                label: "Post to status page".into(),
                action: None,
                style: ButtonStyle::Primary,
            },
            reject: Choice {
                label: "Not customer-facing".into(),
                action: None,
                style: ButtonStyle::Default,
            },
            other: None,
            allowed_roles: vec![Role::Responder, Role::Approver, Role::Admin],
            other_person_required: false,
            promotes: false,
            created: now,
            expires: now + chrono::Duration::from_std(self.config.engine.prompt_ttl.0)?,
            channel: incident.thread.channel.clone(),
            thread: incident.thread.root.clone(),
            messages: Vec::new(),
            correlation_id: new_id(),
            state: PromptState::Open,
            escalated: 0,
        };
        // The link first: an answer must always find its incident.
        self.store
            .put(
                Table::Settings,
                &asked_key(&prompt.id),
                &Asked {
                    rollout: incident.rollout.clone(),
                },
            )
            .await?;
        self.prompts.save(&prompt).await?;
        let mut parameters = BTreeMap::new();
        parameters.insert("prompt".to_string(), serde_json::json!(prompt.id));
        parameters.insert("rollout".to_string(), serde_json::json!(incident.rollout));
        self.append(Record {
            time: now,
            actor: controller,
            action: "status_page".into(),
            service: Some(service.clone()),
            parameters,
            outcome: AuditOutcome::Pending,
            reason: prompt.reason.clone(),
            detail: prompt.question.clone(),
            correlation_id: prompt.correlation_id.clone(),
            idempotency_key: None,
        })
        .await?;
        if let Some(ch) = &prompt.channel {
            let mut posted = prompt.clone();
            posted.messages = self
                .notifier
                .reply_or_post(&prompt.thread, ch, &prompt.message())
                .await;
            self.prompts.save(&posted).await?;
        }
        Ok(())
    }

    /// An accepted answer to a status page prompt (already audited by
    /// `carry_out`): tells the status page, says so in the thread. `None`
    /// when `p` is another kind of prompt.
    pub(super) async fn answer_status_page(
        &self,
        req: &Request,
        p: &Prompt,
        pick: Pick,
    ) -> anyhow::Result<Option<Outcome>> {
        let Some(asked) = self
            .store
            .get::<Asked>(Table::Settings, &asked_key(&p.id))
            .await?
        else {
            return Ok(None);
        };
        let post = pick == Pick::Approve;
        self.tell_comms(IncidentEvent::StatusPageAnswer {
            incident: IncidentRef {
                rollout: asked.rollout.clone(),
                service: p.service.clone(),
                thread: Thread {
                    channel: p.channel.clone(),
                    root: p.thread.clone(),
                },
            },
            post,
        });
        let who = &req.actor.display_name;
        let m = if post {
            Message::new(
                Severity::Info,
                format!("{} incident going on the status page", p.service),
            )
            .text(format!(
                "{who} chose Post to status page: incident {} is posted as it stands now, and its next steps follow it there.",
                asked.rollout
            ))
        } else {
            Message::new(
                Severity::Info,
                format!("{} incident kept off the status page", p.service),
            )
            .text(format!(
                "{who} chose Not customer-facing: nothing about incident {} is posted to the status page.",
                asked.rollout
            ))
        }
        .context(format!("prompt {}", p.id));
        if let Some(ch) = &p.channel {
            self.notifier
                .reply_or_post_detached(p.messages.clone(), ch.clone(), m.clone());
        }
        Ok(Some(Outcome {
            prompt: Some(p.id.clone()),
            announced: p.channel.is_some(),
            ..Outcome::new(Status::Succeeded, m, &p.correlation_id)
        }))
    }
}
