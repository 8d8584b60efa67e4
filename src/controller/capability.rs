//! Rollback capability, checked before it is needed: when a rollout is
//! announced and every `capability_check_interval` while it is active, the
//! service's backend names what a rollback would restore and each image's
//! registry is asked whether the image is still there.
//!
//! A missing target is said at once in the rollout's summary thread, shown
//! in `/status`, and holds automatic promotion until someone presses
//! Acknowledge (a prompt, answered through the engine, so it is
//! role-checked and audited). A check that cannot be made (registry
//! unreachable, credentials refused) is said the same way but holds
//! nothing: rollbot never blocks a rollout on its own blind spot.

use super::RolloutWatch;
use crate::backend::capability::Capability;
use crate::chat::{ButtonStyle, Message, Severity};
use crate::config::HumanDuration;
use crate::domain::{Action, Actor};
use crate::engine::prompt::Choice;
use crate::engine::{new_id, Engine, Prompt, PromptState, Request};
use crate::registry::{ImageState, RegistryClient};
use crate::roles::Role;
use crate::store::Table;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// `[controller]` in the config.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct ControllerConfig {
    /// How often an active rollout's rollback target is checked again;
    /// a service's own `capability_check_interval` wins.
    #[serde(default = "default_interval")]
    pub capability_check_interval: HumanDuration,
}

fn default_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(600))
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            capability_check_interval: default_interval(),
        }
    }
}

/// What one check found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Finding {
    /// The backend cannot tell what a rollback restores.
    NotChecked,
    /// The target exists and every image is in its registry.
    Possible {
        revision: String,
        images: Vec<String>,
    },
    /// A rollback would fail: `headline` says why in one line.
    Impossible { headline: String, detail: String },
    /// The check could not be made; nothing is held.
    Unknown { headline: String },
}

impl Finding {
    fn headline(&self) -> Option<&str> {
        match self {
            Finding::Impossible { headline, .. } | Finding::Unknown { headline } => Some(headline),
            _ => None,
        }
    }
}

/// The latest finding for a service's active rollout, kept in the store
/// for `/status` and the promotion hold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CapabilityRecord {
    pub rollout: String,
    pub checked_at: DateTime<Utc>,
    pub finding: Finding,
    /// Who acknowledged a missing target (display name).
    pub acknowledged_by: Option<String>,
}

fn key(service: &str) -> String {
    format!("capability:{service}")
}

pub async fn load(engine: &Engine, service: &str) -> Option<CapabilityRecord> {
    engine
        .store
        .get::<CapabilityRecord>(Table::Settings, &key(service))
        .await
        .ok()
        .flatten()
}

/// Forgets a service's finding when its rollout is no longer watched.
pub async fn forget(engine: &Engine, service: &str) {
    let _ = engine.store.remove(Table::Settings, &key(service)).await;
}

/// Why automatic promotion of `rollout` is held, if it is.
pub async fn promotion_hold(engine: &Engine, service: &str, rollout: &str) -> Option<String> {
    let r = load(engine, service).await?;
    match (&r.finding, &r.acknowledged_by) {
        (Finding::Impossible { headline, .. }, None) if r.rollout == rollout => {
            Some(headline.clone())
        }
        _ => None,
    }
}

/// The `/status` note of a service, if its rollback is in doubt.
pub async fn status_note(engine: &Engine, service: &str) -> Option<String> {
    let r = load(engine, service).await?;
    let at = r.checked_at.format("%H:%M UTC");
    match (&r.finding, &r.acknowledged_by) {
        (Finding::Impossible { headline, .. }, None) => Some(format!(
            "{headline} (checked {at}); automatic promotion held until someone acknowledges it in the rollout's thread"
        )),
        (Finding::Impossible { headline, .. }, Some(by)) => Some(format!(
            "{headline} (checked {at}; acknowledged by {by})"
        )),
        (Finding::Unknown { headline }, _) => Some(format!("{headline} (checked {at})")),
        _ => None,
    }
}

/// Asks the backend and the registries; never fails, never blocks long
/// (each registry request has `[registry] timeout`).
pub async fn check(engine: Arc<Engine>, registry: Arc<RegistryClient>, service: String) -> Finding {
    let cap = match engine.backend_capability(&service).await {
        Ok(c) => c,
        Err(e) => {
            return Finding::Unknown {
                headline: format!(
                    "could not check whether {service} can be rolled back: the backend said: {e}"
                ),
            }
        }
    };
    let (revision, images) = match cap {
        Capability::NotChecked => return Finding::NotChecked,
        Capability::Missing { revision, reason } => {
            return Finding::Impossible {
                headline: format!(
                    "rollback{} is not possible: {reason}",
                    revision
                        .map(|r| format!(" to revision {r}"))
                        .unwrap_or_default()
                ),
                detail: String::new(),
            }
        }
        Capability::Target {
            revision, images, ..
        } => (revision, images),
    };
    let answers = futures_util::future::join_all(images.iter().map(|i| registry.check(i))).await;
    let (mut gone, mut details, mut unknown) = (Vec::new(), Vec::new(), Vec::new());
    for (image, state) in images.iter().zip(answers) {
        match state {
            ImageState::Present => {}
            ImageState::Gone(d) => {
                gone.push(format!("image {image} is gone from the registry"));
                details.push(d);
            }
            ImageState::Unknown(e) => unknown.push(format!("{image}: {e}")),
        }
    }
    if !gone.is_empty() {
        return Finding::Impossible {
            headline: format!(
                "rollback to revision {revision} is not possible: {}",
                gone.join("; ")
            ),
            detail: details.join("\n"),
        };
    }
    if !unknown.is_empty() {
        return Finding::Unknown {
            headline: format!(
                "could not check that the images of revision {revision} are still in their registries: {}",
                unknown.join("; ")
            ),
        };
    }
    Finding::Possible { revision, images }
}

/// One rollout's checks: when the next is due, the one running, and what
/// its thread was last told.
#[derive(Default)]
pub struct CapabilityWatch {
    next: Option<DateTime<Utc>>,
    running: Option<tokio::task::JoinHandle<Finding>>,
    told: Option<Finding>,
    prompt: Option<String>,
    acknowledged_by: Option<String>,
}

fn controller() -> Actor {
    Actor::system("controller")
}

impl CapabilityWatch {
    /// Starts a check when one is due and none is running.
    pub fn start_if_due(
        &mut self,
        engine: &Arc<Engine>,
        registry: &Arc<RegistryClient>,
        service: &str,
        now: DateTime<Utc>,
    ) {
        if self.running.is_some() || self.next.is_some_and(|n| now < n) {
            return;
        }
        let interval = engine
            .config
            .service(service)
            .and_then(|s| s.capability_check_interval)
            .unwrap_or(engine.config.controller.capability_check_interval)
            .0;
        self.next = Some(now + chrono::Duration::from_std(interval).unwrap_or_default());
        self.running = Some(tokio::spawn(check(
            engine.clone(),
            registry.clone(),
            service.to_string(),
        )));
    }

    /// Takes a finished check's finding (and an answer to our prompt),
    /// stores it and tells the rollout's thread what changed.
    pub async fn follow(&mut self, engine: &Engine, watch: &RolloutWatch, now: DateTime<Utc>) {
        self.acknowledgement(engine, watch).await;
        if !self.running.as_ref().is_some_and(|h| h.is_finished()) {
            return;
        }
        let finding = match self.running.take().expect("finished").await {
            Ok(f) => f,
            Err(e) => Finding::Unknown {
                headline: format!("the rollback capability check stopped: {e}"),
            },
        };
        let record = CapabilityRecord {
            rollout: watch.id.clone(),
            checked_at: now,
            finding: finding.clone(),
            acknowledged_by: self.acknowledged_by.clone(),
        };
        if let Err(e) = engine
            .store
            .put(Table::Settings, &key(&watch.service), &record)
            .await
        {
            tracing::error!(service = %watch.service, error = %e, "could not store a rollback capability finding");
        }
        if let Finding::Impossible { .. } | Finding::Unknown { .. } = &finding {
            tracing::warn!(service = %watch.service, finding = ?finding, "rollback capability");
        }
        let changed = self.told.as_ref().map(Finding::headline) != Some(finding.headline());
        let was_told = self.told.is_some();
        self.told = Some(finding.clone());
        // An Acknowledge prompt that expired unanswered is asked again, so
        // the hold always has a button that lifts it.
        let ask_again = matches!(finding, Finding::Impossible { .. })
            && self.acknowledged_by.is_none()
            && self.prompt.is_some()
            && !self.prompt_open(engine).await;
        if (changed && (finding.headline().is_some() || was_told)) || ask_again {
            self.tell(engine, watch, &finding).await;
        }
    }

    /// Posts a finding in the rollout's thread; a missing target comes
    /// with the Acknowledge prompt (once per rollout unless it expired).
    async fn tell(&mut self, engine: &Engine, watch: &RolloutWatch, finding: &Finding) {
        let Some(svc) = engine.config.service(&watch.service) else {
            return;
        };
        let Some(channel) = svc.deploy_channel.as_ref().map(|c| c.as_ref().clone()) else {
            return;
        };
        let service = &watch.service;
        let m = match finding {
            Finding::Impossible { headline, detail } => {
                let held = if self.acknowledged_by.is_some() {
                    "It was acknowledged earlier, so automatic promotion continues."
                } else {
                    "Automatic promotion stays at the current step until someone acknowledges this below. Restore the target (push the image again, raise revisionHistoryLimit) or plan a roll-forward."
                };
                Message::new(
                    Severity::Warning,
                    format!("Rollback of {service} is not possible"),
                )
                .text(format!("{headline}\n{detail}\n{held}").replace("\n\n", "\n"))
            }
            Finding::Unknown { headline } => Message::new(
                Severity::Warning,
                format!("Rollback capability of {service} not checked"),
            )
            .text(format!(
                "{headline}\nThe rollout goes on; nothing is held. rollbot checks again in a while."
            )),
            Finding::Possible { revision, images } => Message::new(
                Severity::Success,
                format!("Rollback of {service} is possible again"),
            )
            .text(format!(
                "revision {revision} exists and its images are in their registries: {}",
                images.join(", ")
            )),
            Finding::NotChecked => return,
        }
        .context(format!("rollout {}", watch.id));
        engine
            .notifier
            .reply_or_post(watch.summary_thread(), &channel, &m)
            .await;
        if let Finding::Impossible { headline, .. } = finding {
            if self.acknowledged_by.is_none() && !self.prompt_open(engine).await {
                self.ask(engine, watch, &channel, headline).await;
            }
        }
    }

    async fn prompt_open(&self, engine: &Engine) -> bool {
        let Some(id) = &self.prompt else { return false };
        matches!(engine.prompts.get(id).await, Ok(Some(p))
            if p.state == PromptState::Open && p.expires > engine.clock.now())
    }

    async fn ask(&mut self, engine: &Engine, watch: &RolloutWatch, channel: &str, headline: &str) {
        let now = engine.clock.now();
        let service = watch.service.clone();
        let prompt = Prompt {
            id: new_id(),
            service: service.clone(),
            title: format!("Acknowledge: {service} cannot be rolled back"),
            question: format!(
                "{headline}. Acknowledge to let automatic promotion continue anyway, or pause the rollout."
            ),
            requested_by: controller(),
            reason: headline.to_string(),
            approve: Choice {
                label: "Acknowledge".into(),
                action: None,
                style: ButtonStyle::Primary,
            },
            reject: Choice {
                label: "Pause rollout".into(),
                action: Some(Action::Pause),
                style: ButtonStyle::Danger,
            },
            other: None,
            allowed_roles: vec![Role::Approver, Role::Admin],
            other_person_required: false,
            promotes: false,
            created: now,
            expires: now
                + chrono::Duration::from_std(engine.config.engine.prompt_ttl.0).unwrap_or_default(),
            channel: Some(channel.to_string()),
            messages: Vec::new(),
            thread: watch.summary_thread().to_vec(),
            correlation_id: new_id(),
            state: PromptState::Open,
            escalated: 0,
        };
        let req = Request::new(controller(), Action::Pause)
            .service(service.clone())
            .reason(headline.to_string());
        match engine.post_prompt(prompt, &req).await {
            Ok(o) => self.prompt = o.prompt,
            Err(e) => {
                tracing::error!(service = %service, error = %e, "could not post the acknowledge prompt")
            }
        }
    }

    /// Picks up an Acknowledge pressed on our prompt: the hold ends and
    /// the thread says who lifted it.
    async fn acknowledgement(&mut self, engine: &Engine, watch: &RolloutWatch) {
        if self.acknowledged_by.is_some() {
            return;
        }
        let Some(id) = &self.prompt else { return };
        let Ok(Some(p)) = engine.prompts.get(id).await else {
            return;
        };
        let PromptState::Answered { by, choice, .. } = &p.state else {
            return;
        };
        if *choice != p.approve.label {
            return;
        }
        let who = by.display_name.clone();
        self.acknowledged_by = Some(who.clone());
        if let Some(mut r) = load(engine, &watch.service).await {
            r.acknowledged_by = Some(who.clone());
            let _ = engine
                .store
                .put(Table::Settings, &key(&watch.service), &r)
                .await;
        }
        if let Some(ch) = engine
            .config
            .service(&watch.service)
            .and_then(|s| s.deploy_channel.as_ref())
        {
            let m = Message::new(
                Severity::Info,
                format!("{who} acknowledged that {} cannot be rolled back", watch.service),
            )
            .text("Automatic promotion continues. A failing canary is still rolled back when possible; be ready to roll forward.")
            .context(format!("rollout {}", watch.id));
            engine
                .notifier
                .reply_or_post(watch.summary_thread(), ch.as_ref(), &m)
                .await;
        }
    }
}
