//! Escalation: a prompt nobody answers mentions the next entry of the
//! service's `escalation` list (on-call, then team lead, then manager) once
//! per `escalate_after`, in the prompt's thread. Escalating never acts: the
//! prompt keeps its buttons and its expiry.

use super::Engine;
use crate::audit::{Outcome as AuditOutcome, Record};
use crate::chat::{Message, Severity};
use crate::domain::{human_duration, Actor};
use chrono::{DateTime, Utc};
use serde_json::json;
use std::collections::BTreeMap;

impl Engine {
    /// Escalates every `every` until the process ends; used when no
    /// controller runs (the controller escalates at each of its steps).
    pub async fn escalate_forever(self: std::sync::Arc<Self>, every: std::time::Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if !self.leadership.is_leader() {
                continue;
            }
            if let Err(e) = self.escalate_prompts(self.clock.now()).await {
                tracing::error!(error = %e, "could not escalate unanswered prompts");
            }
        }
    }

    /// Posts the escalations due at `now`, at most one step per prompt per
    /// call; returns how many were posted. The controller calls it every step.
    pub async fn escalate_prompts(&self, now: DateTime<Utc>) -> anyhow::Result<usize> {
        let mut posted = 0;
        for p in self.prompts.open(now).await? {
            let Some(svc) = self.config.service(&p.service) else {
                continue;
            };
            let period = svc.escalate_after.0.as_millis().max(1) as i64;
            let waited = (now - p.created).num_milliseconds().max(0);
            let due = ((waited / period) as usize).min(svc.escalation.len());
            if p.escalated >= due {
                continue;
            }
            let step = p.escalated + 1;
            if !self.prompts.escalate(&p.id, step).await? {
                continue;
            }
            let who = svc.escalation[step - 1].clone();
            let waited_text = human_duration(std::time::Duration::from_millis(waited as u64));
            let m = Message::new(
                Severity::Warning,
                format!("Still waiting for an answer: {}", p.title),
            )
            .text(format!(
                "Nobody has answered for {waited_text}. {} or {}? Only the buttons above decide: rollbot does nothing by itself meanwhile. The prompt expires at {}.",
                p.approve.label,
                p.reject.label,
                p.expires.format("%Y-%m-%d %H:%M UTC")
            ))
            .field("Escalation", format!("step {step} of {}", svc.escalation.len()))
            .mention(who.clone())
            .context(format!("prompt {}", p.id))
            .context(format!("correlation {}", p.correlation_id));
            let mut parameters = BTreeMap::new();
            parameters.insert("prompt".to_string(), json!(p.id));
            parameters.insert("step".to_string(), json!(step));
            parameters.insert("mentioned".to_string(), json!(who));
            self.append(Record {
                time: now,
                actor: Actor::system("controller"),
                action: "escalate".into(),
                service: Some(p.service.clone()),
                parameters,
                outcome: AuditOutcome::Noted,
                reason: format!("unanswered for {waited_text}"),
                detail: m.plain(),
                correlation_id: p.correlation_id.clone(),
                idempotency_key: None,
            })
            .await?;
            match &p.channel {
                Some(ch) => {
                    self.notifier.reply_or_post(&p.messages, ch, &m).await;
                }
                None => tracing::warn!(prompt = %p.id, "an escalation has no channel to go to"),
            }
            // A canary only a person will roll back (page_and_suggest, or
            // automation off), and nobody answered: the pager too, once.
            let rollback = |c: &super::prompt::Choice| {
                matches!(c.action, Some(crate::domain::Action::Rollback { .. }))
            };
            let only_people = svc.on_failing == crate::config_file::OnFailing::PageAndSuggest
                || self.automation_off(&p.service).await.is_some();
            let page = p.requested_by.is_system()
                && (rollback(&p.approve) || rollback(&p.reject))
                && only_people;
            if page && step == 1 && self.comms().is_some_and(|c| !c.is_empty()) {
                let thread = crate::incident_comms::Thread {
                    channel: p.channel.clone(),
                    root: p.messages.clone(),
                };
                let summary = format!(
                    "{} — unanswered for {waited_text}; roll back or continue in chat",
                    p.title
                );
                self.page(
                    &p.service,
                    thread,
                    summary,
                    format!("{}-prompt-{}", p.service, p.id),
                );
            }
            posted += 1;
        }
        Ok(posted)
    }
}
