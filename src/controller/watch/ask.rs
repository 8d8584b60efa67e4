//! A borderline rollout: the question asked in its summary thread (Approve
//! / Roll back), asked once even across a restart or a new leader.

use super::{capitalised, controller, RolloutWatch, WatchState};
use crate::chat::ButtonStyle;
use crate::config_file::ServiceConfig;
use crate::domain::Action;
use crate::engine::prompt::Choice;
use crate::engine::{new_id, Engine, Prompt, PromptState, Request, Status};
use crate::judge::Evaluation;
use crate::roles::Role;

impl RolloutWatch {
    pub(super) async fn on_borderline(
        &mut self,
        engine: &Engine,
        svc: &ServiceConfig,
        eval: &Evaluation,
    ) {
        self.record_verdict(engine, eval).await;
        if engine.automation_off(&self.service).await.is_some() {
            // Not paused: approving only means "stop asking".
            return self
                .ask(
                    engine,
                    svc,
                    eval,
                    &self.headline("borderline"),
                    Choice {
                        label: "Approve".into(),
                        action: None,
                        style: ButtonStyle::Primary,
                    },
                    Choice {
                        label: "Roll back".into(),
                        action: Some(Action::Rollback {
                            to: None,
                            force: false,
                        }),
                        style: ButtonStyle::Danger,
                    },
                )
                .await;
        }
        let paused = engine
            .execute(self.request(
                Action::Pause,
                format!("borderline — {}", self.short_reason(eval)),
                "pause",
            ))
            .await;
        if paused.status != Status::Succeeded {
            tracing::warn!(service = %self.service, "could not pause a borderline canary: {}", paused.message.plain());
        }
        self.ask(
            engine,
            svc,
            eval,
            &self.headline("borderline"),
            Choice {
                label: "Approve".into(),
                action: Some(Action::Resume),
                style: ButtonStyle::Primary,
            },
            Choice {
                label: "Roll back".into(),
                action: Some(Action::Rollback {
                    to: None,
                    force: false,
                }),
                style: ButtonStyle::Danger,
            },
        )
        .await;
    }

    /// A prompt's headline: what is borderline or failing.
    pub(super) fn headline(&self, verdict: &str) -> String {
        if self.before_after.is_some() {
            format!("{} after the change", capitalised(verdict))
        } else {
            format!("The canary is {verdict}")
        }
    }

    /// The same question asked about this rollout before this watch began
    /// (by this process before a restart, or by the previous leader): the
    /// newest unexpired one, open or answered, that this watch has not
    /// seen. Its buttons are in the thread already; asking again would
    /// post a second prompt for one decision.
    pub(super) async fn asked_before(&self, engine: &Engine, title: &str) -> Option<String> {
        let start = self.start?;
        let now = engine.clock.now();
        let all = engine
            .store
            .scan::<Prompt>(crate::store::Table::Prompts, "")
            .await
            .ok()?;
        all.into_iter()
            .map(|(_, p)| p)
            .filter(|p| {
                p.service == self.service
                    && p.requested_by == controller()
                    && p.title == title
                    && p.created >= start
                    && p.expires > now
                    && !self.prompts_seen.contains(&p.id)
            })
            .max_by_key(|p| p.created)
            .map(|p| p.id)
    }

    pub(super) async fn ask(
        &mut self,
        engine: &Engine,
        svc: &ServiceConfig,
        eval: &Evaluation,
        headline: &str,
        approve: Choice,
        reject: Choice,
    ) {
        let title = format!("{headline}: {} {}", self.service, self.to);
        if let Some(earlier) = self.asked_before(engine, &title).await {
            // Its answer, if any, is picked up at the next tick.
            self.prompts_seen.push(earlier.clone());
            self.state = WatchState::Asking { prompt: earlier };
            return;
        }
        let now = engine.clock.now();
        // In the summary's thread the evidence is one message up: the
        // question does not repeat it.
        let evidence = if self.summary.is_empty() {
            format!("{}\n", eval.reasons.join("\n"))
        } else {
            String::new()
        };
        let mut question = format!(
            "{evidence}Score {:.0}/100{}. {} or {}?",
            eval.score,
            if self.summary.is_empty() {
                ""
            } else {
                "; the evidence is in the summary above"
            },
            approve.label,
            reject.label
        );
        if let Some(off) = engine.automation_off(&self.service).await {
            question.push_str(&format!(
                "\nAutomation is off for {} {}, so rollbot asks instead of acting by itself.",
                self.service,
                off.describe()
            ));
        }
        let prompt = Prompt {
            id: new_id(),
            service: self.service.clone(),
            title,
            question,
            requested_by: controller(),
            reason: format!("{} — {}", eval.verdict, self.short_reason(eval)),
            approve,
            reject,
            other: None,
            allowed_roles: vec![Role::Approver, Role::Admin],
            other_person_required: false,
            promotes: false,
            created: now,
            expires: now
                + chrono::Duration::from_std(engine.config.engine.prompt_ttl.0).unwrap_or_default(),
            channel: svc.deploy_channel.as_ref().map(|c| c.as_ref().clone()),
            messages: Vec::new(),
            thread: self.summary.clone(),
            correlation_id: new_id(),
            state: PromptState::Open,
            escalated: 0,
        };
        let req = Request::new(controller(), Action::Pause).service(self.service.clone());
        match engine.post_prompt(prompt, &req).await {
            Ok(o) => {
                let prompt = o.prompt.unwrap_or_default();
                self.prompts_seen.push(prompt.clone());
                self.state = WatchState::Asking { prompt }
            }
            Err(e) => {
                tracing::error!(service = %self.service, error = %e, "could not post a prompt")
            }
        }
    }
}
