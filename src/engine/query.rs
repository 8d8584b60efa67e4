//! Read-only views: `/status` and `/audit`. They need the `view` permission
//! and are audited like everything else would be if refused.

use super::{plain_outcome, Engine, Outcome, Refusal, Request, Status};
use crate::audit::{Entry, Query};
use crate::backend::Target;
use crate::breaker::State;
use crate::chat::{Message, Severity};
use crate::domain::human_duration;
use crate::roles::Permission;
use std::time::Duration;

impl Engine {
    /// The backend's view of a service, through its breaker.
    pub async fn backend_status(
        &self,
        service: &str,
    ) -> Result<crate::backend::BackendStatus, String> {
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
            .call(
                self.config.engine.backend_timeout.0,
                slot.backend.status(&target),
                |_| true,
            )
            .await
            .map_err(super::describe)
    }

    /// `/status [service]`: revisions, canary, freezes, prompts, breakers.
    pub async fn status(&self, req: &Request) -> anyhow::Result<Outcome> {
        let corr = super::new_id();
        let services: Vec<_> = match req.service.as_deref() {
            Some(name) => match self.resolve(Some(name)) {
                Ok(s) => vec![s],
                Err(t) => {
                    return self
                        .refuse(
                            req,
                            &corr,
                            None,
                            Refusal::UnknownService,
                            "Unknown service",
                            t,
                        )
                        .await
                }
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
            let r = crate::roles::Refusal {
                permission: Permission::View,
                service: req.service.clone().unwrap_or_else(|| "any service".into()),
                roles: Permission::View.granted_by(),
            };
            return self
                .refuse(
                    req,
                    &corr,
                    svc,
                    Refusal::NotAllowed,
                    "Not allowed",
                    r.to_string(),
                )
                .await;
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
            let Some(slot) = self.backends.get(s.backend.as_ref()) else {
                continue;
            };
            let target = Target {
                service: s.name().into(),
                environment: s.environment.clone(),
                settings: s.target.clone(),
            };
            let line = match slot
                .breaker
                .call(
                    Duration::from_secs(10),
                    slot.backend.status(&target),
                    |_| true,
                )
                .await
            {
                Ok(st) => {
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
                    if req.service.is_some() && !st.history.is_empty() {
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
                Err(e) => format!("status unavailable: {}", super::describe(e)),
            };
            let mut name = format!(
                "{} ({}{})",
                s.name(),
                s.environment,
                if s.critical { ", critical" } else { "" }
            );
            if let Some(block) = self
                .freezes
                .promotion_block(&s.environment, s.name(), now)?
            {
                name.push_str(&format!(" — promotions blocked: {block}"));
            }
            if let Some(until) = self.cooldown_until(s.name()) {
                name.push_str(&format!(
                    " — automatic promotion held until {} after a rollback",
                    until.format("%H:%M UTC")
                ));
            }
            if let Some(off) = self.automation_off(s.name()) {
                name.push_str(&format!(" — automation off {}", off.describe()));
            }
            m = m.field(name, line);
        }
        let freezes = self.freezes.active_ad_hoc(now)?;
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
        for p in self
            .prompts
            .open(now)?
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
        Ok(Outcome {
            status: Status::Succeeded,
            message: m,
            correlation_id: corr,
            prompt: None,
            announced: false,
            repeat: false,
            refusal: None,
        })
    }

    /// `/audit [service] [last N]`.
    pub async fn audit_view(&self, req: &Request, last: usize) -> anyhow::Result<Outcome> {
        let corr = super::new_id();
        let svc = match req.service.as_deref() {
            Some(name) => match self.resolve(Some(name)) {
                Ok(s) => Some(s),
                Err(t) => {
                    return self
                        .refuse(
                            req,
                            &corr,
                            None,
                            Refusal::UnknownService,
                            "Unknown service",
                            t,
                        )
                        .await
                }
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
            let r = crate::roles::Refusal {
                permission: Permission::View,
                service: svc
                    .map(|s| s.name().to_string())
                    .unwrap_or_else(|| "every service".into()),
                roles: Permission::View.granted_by(),
            };
            return self
                .refuse(
                    req,
                    &corr,
                    svc,
                    Refusal::NotAllowed,
                    "Not allowed",
                    r.to_string(),
                )
                .await;
        }
        let entries = self.audit.query(&Query {
            service: svc.map(|s| s.name().to_string()),
            limit: last.clamp(1, 200),
            ..Default::default()
        })?;
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
    if !r.reason.is_empty() {
        l.push_str(&format!(" ({})", r.reason));
    }
    if let Some(first) = r.detail.lines().next().filter(|d| !d.is_empty()) {
        l.push_str(&format!(": {first}"));
    }
    l
}
