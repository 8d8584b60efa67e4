//! Read-only views: `/status` and `/audit`. They need the `view` permission
//! and are audited like everything else would be if refused.

use super::{plain_outcome, Engine, Outcome, Refusal, Request, Status};
use crate::audit::{Entry, Query};
use crate::backend::Target;
use crate::breaker::State;
use crate::chat::{Message, Severity};
use crate::config_file::ServiceConfig;
use crate::domain::human_duration;
use crate::roles::Permission;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;

/// How long a backend's status answer is shared between askers.
pub const STATUS_FRESH: Duration = Duration::from_secs(2);

impl Engine {
    /// The backend's view of a service, through its breaker's read lane.
    /// Answers are shared for [`STATUS_FRESH`]: a burst of `/status` asks
    /// the backend once, not once each.
    pub async fn backend_status(
        &self,
        service: &str,
    ) -> Result<crate::backend::BackendStatus, String> {
        self.backend_status_within(service, self.config.engine.backend_timeout.0)
            .await
    }

    /// [`Engine::backend_status`] with its own time limit.
    pub async fn backend_status_within(
        &self,
        service: &str,
        timeout: Duration,
    ) -> Result<crate::backend::BackendStatus, String> {
        let s = self.resolve(Some(service))?;
        let slot = self
            .backends
            .get(s.backend.as_ref())
            .ok_or_else(|| format!("backend {} is not running", s.backend.as_ref()))?;
        let turn = self.status_cache.turn(s.name());
        let _turn = turn.lock().await;
        if let Some(fresh) = self.status_cache.fresh(s.name(), STATUS_FRESH) {
            return fresh;
        }
        let target = Target {
            service: s.name().into(),
            environment: s.environment.clone(),
            settings: s.target.clone(),
        };
        let asked_at = self.status_cache.generation(s.name());
        let r = slot
            .breaker
            .call_in(
                crate::breaker::Lane::Read,
                timeout,
                slot.backend.status(&target),
                |_| true,
            )
            .await
            .map_err(super::act::describe);
        self.status_cache.keep(s.name(), asked_at, r.clone());
        r
    }

    /// What a rollback of `service` would restore, through the backend's
    /// breaker like a status read (see `controller::capability`).
    pub async fn backend_capability(
        &self,
        service: &str,
    ) -> Result<crate::backend::capability::Capability, String> {
        let s = self.resolve(Some(service))?;
        let slot = self
            .backends
            .get(s.backend.as_ref())
            .ok_or_else(|| format!("backend {} is not running", s.backend.as_ref()))?;
        let target = Target {
            service: s.name().into(),
            environment: s.environment.clone(),
            settings: s.target.clone(),
        };
        slot.breaker
            .call_in(
                crate::breaker::Lane::Read,
                self.config.engine.backend_timeout.0,
                slot.backend.capability(&target),
                |_| true,
            )
            .await
            .map_err(super::act::describe)
    }

    /// `/status [service]`: revisions, canary, freezes, prompts, breakers.
    pub async fn status(&self, req: &Request) -> anyhow::Result<Outcome> {
        let corr = super::new_id();
        let Some(_turn) = self.query_turn().await else {
            return Ok(busy(&corr));
        };
        let services: Vec<_> = match req.service.as_deref() {
            Some(name) => match self.service_of(req, &corr, Some(name)).await? {
                Ok(s) => vec![s],
                Err(refused) => return Ok(refused),
            },
            None => self.config.services.iter().collect(),
        };
        let visible: Vec<_> = services
            .into_iter()
            .filter(|s| {
                self.roles
                    .check(&req.actor, Permission::View, &s.environment, s.name())
                    .is_ok()
            })
            .collect();
        if visible.is_empty() {
            let svc = req.service.as_deref().and_then(|n| self.config.service(n));
            let service = req.service.clone().unwrap_or_else(|| "any service".into());
            return self.refuse_view(req, &corr, svc, service).await;
        }
        let now = self.clock.now();
        let mut m = Message::new(
            Severity::Info,
            match req.service.as_deref() {
                Some(s) => format!("Status of {s}"),
                None => "Status".to_string(),
            },
        );
        for s in &visible {
            if !self.backends.contains_key(s.backend.as_ref()) {
                continue;
            }
            let line = self.status_line(s, req.service.is_some()).await;
            m = m.field(self.status_heading(s, now).await?, line);
        }
        m = self.freeze_fields(m, now).await?;
        for p in self
            .prompts
            .open(now)
            .await?
            .into_iter()
            .filter(|p| visible.iter().any(|s| s.name() == p.service))
        {
            m = m.field(
                format!("Prompt {}", p.id),
                format!(
                    "{} (open until {}, asked by {})",
                    p.title,
                    p.expires.format("%H:%M UTC"),
                    p.requested_by.display_name
                ),
            );
        }
        let breakers: Vec<String> = self
            .breakers()
            .into_iter()
            .map(|b| match b.state {
                State::Closed => format!("{} closed", b.name),
                other => format!(
                    "{} {} after {} failures (last: {})",
                    b.name,
                    other.name(),
                    b.failures,
                    b.last_error.unwrap_or_default()
                ),
            })
            .collect();
        m = m.field("Circuit breakers", breakers.join("; "));
        Ok(Outcome::new(Status::Succeeded, m, &corr))
    }

    /// A service's name in `/status`, with what holds its promotions and
    /// automation.
    async fn status_heading(
        &self,
        s: &ServiceConfig,
        now: DateTime<Utc>,
    ) -> anyhow::Result<String> {
        let mut name = format!(
            "{} ({}{})",
            s.name(),
            s.environment,
            if s.critical { ", critical" } else { "" }
        );
        if let Some(block) = self
            .freezes
            .promotion_block(&s.environment, s.name(), now)
            .await?
        {
            name.push_str(&format!(" — promotions blocked: {block}"));
        }
        if let Some(until) = self.cooldown_until(s.name()).await {
            name.push_str(&format!(
                " — automatic promotion held until {} after a rollback",
                until.format("%H:%M UTC")
            ));
        }
        if let Some(off) = self.automation_off(s.name()).await {
            name.push_str(&format!(" — automation off {}", off.describe()));
        }
        if let Some(note) = self.stuck_note(s.name()).await {
            name.push_str(&format!(" — {note}"));
        }
        if let Some(note) = crate::controller::capability::status_note(self, s.name()).await {
            name.push_str(&format!(" — {note}"));
        }
        if let Some(r) = self.current_release(s.name()).await {
            name.push_str(&format!(" — release {r}"));
        }
        Ok(name)
    }

    /// What the backend says of a service: live and canary revisions, and
    /// the revision history when one service was asked for.
    async fn status_line(&self, s: &ServiceConfig, history: bool) -> String {
        let st = match self
            .backend_status_within(s.name(), Duration::from_secs(10))
            .await
        {
            Ok(st) => st,
            Err(e) => return format!("status unavailable: {e}"),
        };
        let mut l = format!("live {}", st.live_revision.as_deref().unwrap_or("?"));
        if let Some(c) = &st.canary_revision {
            l.push_str(&format!(", canary {c}"));
            if let Some(w) = st.canary_weight {
                l.push_str(&format!(" at {w}%"));
            }
            if let Some(step) = &st.step {
                l.push_str(&format!(" (step {step})"));
            }
        }
        if st.paused {
            l.push_str(", paused");
        }
        if history && !st.history.is_empty() {
            let hist: Vec<String> = st
                .history
                .iter()
                .map(|h| format!("{}{}", h.revision, if h.live { "*" } else { "" }))
                .collect();
            l.push_str(&format!("; revisions {}", hist.join(" ")));
        }
        for n in &st.notes {
            l.push_str(&format!("; {n}"));
        }
        l
    }

    /// The ad hoc freezes and the open freeze windows, as fields of `m`.
    async fn freeze_fields(&self, mut m: Message, now: DateTime<Utc>) -> anyhow::Result<Message> {
        let freezes = self.freezes.active_ad_hoc(now).await?;
        if freezes.is_empty() {
            m = m.field("Freezes", "none");
        }
        for f in freezes {
            m = m.field(
                format!("Freeze {}", f.scope),
                format!(
                    "by {} since {} until {} ({} left): {}",
                    f.author.display_name,
                    f.start.format("%Y-%m-%d %H:%M UTC"),
                    f.until.format("%Y-%m-%d %H:%M UTC"),
                    human_duration((f.until - now).to_std().unwrap_or_default()),
                    super::or_dash(&f.reason)
                ),
            );
        }
        for w in self.freezes.active_windows(now) {
            m = m.field(
                format!("Window {} ({:?})", w.name, w.kind).to_lowercase(),
                format!(
                    "open since {} until {}",
                    w.start.format("%H:%M UTC"),
                    w.end.format("%H:%M UTC")
                ),
            );
        }
        Ok(m)
    }

    /// A view the actor may not see: `service` names what was asked for.
    async fn refuse_view(
        &self,
        req: &Request,
        corr: &str,
        svc: Option<&ServiceConfig>,
        service: String,
    ) -> anyhow::Result<Outcome> {
        let r = crate::roles::Refusal {
            permission: Permission::View,
            service,
            roles: Permission::View.granted_by(),
        };
        self.refuse(
            req,
            corr,
            svc,
            Refusal::NotAllowed,
            "Not allowed",
            r.to_string(),
        )
        .await
    }

    /// `/audit [service] [last N]`.
    pub async fn audit_view(&self, req: &Request, last: usize) -> anyhow::Result<Outcome> {
        let corr = super::new_id();
        let Some(_turn) = self.query_turn().await else {
            return Ok(busy(&corr));
        };
        let svc = match req.service.as_deref() {
            Some(name) => match self.service_of(req, &corr, Some(name)).await? {
                Ok(s) => Some(s),
                Err(refused) => return Ok(refused),
            },
            None => None,
        };
        let allowed = match svc {
            Some(s) => self
                .roles
                .check(&req.actor, Permission::View, &s.environment, s.name())
                .is_ok(),
            None => self.config.services.iter().all(|s| {
                self.roles
                    .check(&req.actor, Permission::View, &s.environment, s.name())
                    .is_ok()
            }),
        };
        if !allowed {
            let service = svc
                .map(|s| s.name().to_string())
                .unwrap_or_else(|| "every service".into());
            return self.refuse_view(req, &corr, svc, service).await;
        }
        let entries = self
            .store
            .audit_query(Query {
                service: svc.map(|s| s.name().to_string()),
                limit: last.clamp(1, 200),
                ..Default::default()
            })
            .await?;
        let title = match svc {
            Some(s) => format!("Audit log of {} (last {})", s.name(), entries.len()),
            None => format!("Audit log (last {})", entries.len()),
        };
        let text = if entries.is_empty() {
            "No entries yet.".to_string()
        } else {
            entries
                .iter()
                .map(audit_line)
                .collect::<Vec<_>>()
                .join("\n")
        };
        Ok(plain_outcome(
            Status::Succeeded,
            Severity::Info,
            &title,
            &text,
            &corr,
        ))
    }
}

impl Engine {
    /// A turn to build a read-only view. Views run a few at a time, so a
    /// flood of `/status` cannot queue up work ahead of an action's own
    /// reads; an asker who waits too long is told to try again.
    async fn query_turn(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        tokio::time::timeout(QUERY_WAIT, self.queries.acquire())
            .await
            .ok()?
            .ok()
    }
}

/// Views built at once, and how long an asker waits for a turn.
pub(super) const QUERIES_AT_ONCE: usize = 16;
const QUERY_WAIT: Duration = Duration::from_secs(5);

fn busy(corr: &str) -> Outcome {
    super::unaudited(
        Refusal::Overloaded,
        Severity::Warning,
        "rollbot is busy answering other requests",
        "Many views were asked for at once; nothing was done. Try again in a few seconds. Actions (rollback, promote, freeze) are not held up by this.",
        corr,
    )
}

/// One audit entry as a line: `#12 03:14:05 rollback checkout by Ada — succeeded`.
pub fn audit_line(e: &Entry) -> String {
    let r = &e.record;
    let mut l = format!(
        "#{} {} {} {}by {} — {}",
        e.seq,
        r.time.format("%m-%d %H:%M:%S"),
        r.action,
        r.service
            .as_deref()
            .map(|s| format!("{s} "))
            .unwrap_or_default(),
        r.actor.display_name,
        r.outcome
    );
    if r.parameters.get("dry_run") == Some(&serde_json::Value::Bool(true)) {
        l.push_str(" [dry run]");
    }
    if !r.reason.is_empty() {
        l.push_str(&format!(" ({})", r.reason));
    }
    if let Some(first) = r.detail.lines().next().filter(|d| !d.is_empty()) {
        l.push_str(&format!(": {first}"));
    }
    l
}

/// A backend's status answer and when it came.
type Answer = (
    std::time::Instant,
    Result<crate::backend::BackendStatus, String>,
);

/// Recent backend status answers per service, and one asker at a time per
/// service. Bounded by the number of configured services.
#[derive(Default)]
pub(super) struct StatusCache {
    answers: std::sync::Mutex<std::collections::HashMap<String, Answer>>,
    turns: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Bumped by every action on a service: an answer asked for before it
    /// is not kept.
    generations: std::sync::Mutex<std::collections::HashMap<String, u64>>,
}

impl StatusCache {
    fn turn(&self, service: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.turns
            .lock()
            .unwrap()
            .entry(service.to_string())
            .or_default()
            .clone()
    }

    fn fresh(
        &self,
        service: &str,
        within: Duration,
    ) -> Option<Result<crate::backend::BackendStatus, String>> {
        match self.answers.lock().unwrap().get(service) {
            Some((at, r)) if at.elapsed() < within => Some(r.clone()),
            _ => None,
        }
    }

    fn generation(&self, service: &str) -> u64 {
        *self.generations.lock().unwrap().get(service).unwrap_or(&0)
    }

    fn keep(&self, service: &str, asked_at: u64, r: Result<crate::backend::BackendStatus, String>) {
        if self.generation(service) == asked_at {
            self.answers
                .lock()
                .unwrap()
                .insert(service.to_string(), (std::time::Instant::now(), r));
        }
    }

    /// Drops the service's answer: an action changed what it would say.
    pub(super) fn forget(&self, service: &str) {
        *self
            .generations
            .lock()
            .unwrap()
            .entry(service.to_string())
            .or_default() += 1;
        self.answers.lock().unwrap().remove(service);
    }
}
