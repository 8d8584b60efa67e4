//! Fallbacks: when a rollback leaves a service stuck (`stuck.rs`), the
//! service's `[[services.fallback]]` mechanisms (Istio traffic to stable, a
//! flag off, the canary scaled to zero) are offered as buttons on the stuck
//! message, and typed as `/rollback SERVICE fallback "NAME"`. A fallback is
//! its backend's rollback with the fallback's own target, run through the
//! same steps as any action (roles, idempotency, audit, lock, preflight →
//! act → verify); it is its own action kind, `fallback`, so the audit log
//! and the metrics tell it from the rollback that failed.
//!
//! Within one stuck episode (named by the failed rollback's correlation id)
//! each fallback acts at most once: a button and the automatic fallback
//! share one idempotency key per fallback, so a second press, or a press
//! of what `auto_fallback` already tried, gets the first outcome. With
//! `auto_fallback = true` rollbot tries them in order, once each, right
//! after the service got stuck, and stops at the first that verifies: the
//! list bounds it, nothing loops. A verified fallback marks the stuck state
//! mitigated (users are served by the fallback; the failed rollback is
//! still there to fix); a verified rollback ends it as before.

use super::{Engine, Outcome, Refusal, Request, Status, Stuck};
use crate::chat::{ButtonStyle, Message, Severity};
use crate::config_file::{FallbackConfig, ServiceConfig};
use crate::domain::{Action, Actor};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One fallback tried while the service was stuck.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FallbackTry {
    pub name: String,
    pub at: DateTime<Utc>,
    /// Who tried it (display name; `rollbot controller` when automatic).
    pub by: String,
    /// `verified`, `failed` or `refused`.
    pub result: String,
    /// The result's title, one line.
    pub detail: String,
}

const PREFIX: &str = "fallback:";

/// A fallback button's action id, `fallback:SERVICE:EPISODE:N` (N from 1);
/// also the idempotency key of that fallback in that stuck episode.
pub fn fallback_action_id(service: &str, episode: &str, n: usize) -> String {
    format!("{PREFIX}{service}:{episode}:{n}")
}

/// The service, stuck episode and 1-based position a fallback button names.
pub fn parse_fallback_id(action_id: &str) -> Option<(String, String, usize)> {
    let rest = action_id.strip_prefix(PREFIX)?;
    let mut parts = rest.split(':');
    let (service, episode, n) = (parts.next()?, parts.next()?, parts.next()?);
    let plain = |s: &str, extra: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || extra.contains(c))
    };
    if parts.next().is_some() || !plain(service, "-_.") || !plain(episode, "-_.") {
        return None;
    }
    let n: usize = n.parse().ok().filter(|n| *n >= 1)?;
    Some((service.to_string(), episode.to_string(), n))
}

/// The tries of an episode as one line: "a (failed), b (verified)".
pub(super) fn tried_line(tried: &[FallbackTry]) -> String {
    tried
        .iter()
        .map(|t| format!("`{}` ({} by {})", t.name, t.result, t.by))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Engine {
    /// The backend an action on `svc` goes to, and its target: the
    /// fallback's own for a fallback, else the service's.
    pub(super) fn route<'a>(
        &self,
        req: &Request,
        svc: &'a ServiceConfig,
    ) -> anyhow::Result<(&'a str, &'a BTreeMap<String, String>)> {
        match &req.action {
            Action::Fallback { name, .. } => {
                let (_, f) = svc
                    .fallback_named(name)
                    .ok_or_else(|| anyhow::anyhow!("{} has no fallback `{name}`", svc.name()))?;
                Ok((f.backend.as_ref(), &f.target))
            }
            _ => Ok((svc.backend.as_ref(), &svc.target)),
        }
    }

    /// Before a fallback acts: it must be one of the service's, and a
    /// button's must belong to the stuck state the service is in now (a
    /// button left from an earlier episode does nothing).
    pub(super) async fn fallback_gate(
        &self,
        req: &Request,
        corr: &str,
        svc: &ServiceConfig,
    ) -> anyhow::Result<Option<Outcome>> {
        let Action::Fallback { name, episode } = &req.action else {
            return Ok(None);
        };
        let service = svc.name();
        if svc.fallback_named(name).is_none() {
            let text = if svc.fallback.is_empty() {
                format!("{service} has no fallback configured, so nothing was done. Add [[services.fallback]] entries (name, backend, target) to its config, or act on the platform by hand.")
            } else {
                format!(
                    "{service} has no fallback `{name}`, so nothing was done. Its fallbacks, in order: {}. Write for example `/rollback {service} fallback \"{}\"`.",
                    list(&svc.fallback),
                    svc.fallback[0].name()
                )
            };
            return self
                .refuse(
                    req,
                    corr,
                    Some(svc),
                    Refusal::Invalid,
                    "Unknown fallback",
                    text,
                )
                .await
                .map(Some);
        }
        let Some(episode) = episode else {
            return Ok(None);
        };
        if self
            .stuck(service)
            .await
            .is_some_and(|s| &s.correlation_id == episode)
        {
            return Ok(None);
        }
        let text = format!(
            "This button belongs to a stuck state of {service} that has ended, so nothing was done. `/status {service}` shows where it is now; to try the fallback anyway, type `/rollback {service} fallback \"{name}\"`."
        );
        self.refuse(
            req,
            corr,
            Some(svc),
            Refusal::Expired,
            "That stuck state has ended",
            text,
        )
        .await
        .map(Some)
    }

    /// The stuck message offers the fallbacks: a button each, or says that
    /// rollbot tries them now (`auto_fallback`).
    pub(super) fn offer_fallbacks(
        &self,
        svc: &ServiceConfig,
        stuck: &Stuck,
        m: Message,
    ) -> Message {
        if svc.fallback.is_empty() {
            return m;
        }
        let how = if svc.auto_fallback {
            "rollbot tries them now, in order, once each (auto_fallback), and stops at the first that verifies."
        } else {
            "Press one to try it (responders, approvers and admins); each acts once."
        };
        let mut m = m.append_text(format!("Fallbacks: {}. {how}", list(&svc.fallback)));
        for (i, f) in svc.fallback.iter().enumerate() {
            m = m.button(
                format!("Try fallback: {}", f.name()),
                fallback_action_id(svc.name(), &stuck.correlation_id, i + 1),
                ButtonStyle::Primary,
            );
        }
        m
    }

    /// With `auto_fallback`, tries the fallbacks in order in a task of its
    /// own (the failed rollback still holds the service's lock), each at
    /// most once, until one verifies or the stuck state changes.
    pub(super) fn start_auto_fallback(&self, svc: &ServiceConfig, stuck: &Stuck) {
        if !svc.auto_fallback || svc.fallback.is_empty() {
            return;
        }
        let Some(me) = self.me.upgrade() else {
            return;
        };
        let (service, episode) = (svc.name().to_string(), stuck.correlation_id.clone());
        let rollback = stuck.rollback.clone();
        tokio::spawn(async move {
            let Some(svc) = me.config.service(&service) else {
                return;
            };
            let n = svc.fallback.len();
            for (i, f) in svc.fallback.iter().enumerate() {
                match me.stuck(&service).await {
                    Some(s) if s.correlation_id == episode && s.mitigated.is_none() => {
                        if s.tried.iter().any(|t| t.name == f.name()) {
                            continue;
                        }
                    }
                    // Ended, mitigated by a person, or another episode.
                    _ => return,
                }
                let req = Request::new(
                    Actor::system("controller"),
                    Action::Fallback {
                        name: f.name().to_string(),
                        episode: Some(episode.clone()),
                    },
                )
                .service(service.clone())
                .reason(format!(
                    "automatic fallback {} of {n}: {rollback} did not complete",
                    i + 1
                ))
                .idempotency_key(fallback_action_id(&service, &episode, i + 1));
                if me.execute(req).await.status == Status::Succeeded {
                    return;
                }
            }
        });
    }

    /// After a fallback's result is recorded, still under the service's
    /// lock: when the service is stuck, the stuck state notes the try (and
    /// the mitigation when it was verified), and the channels hear, in one
    /// message with the result, what it changed, what still runs and what
    /// is left to try. Whether it posted (else the result is announced as
    /// any action's).
    pub(super) async fn after_fallback(
        &self,
        svc: &ServiceConfig,
        req: &Request,
        (status, refused): (Status, bool),
        result: &Message,
    ) -> bool {
        let Action::Fallback { name, .. } = &req.action else {
            return false;
        };
        let Some((_, f)) = svc.fallback_named(name) else {
            return false;
        };
        let service = svc.name();
        let Some(mut stuck) = self.stuck(service).await else {
            return false;
        };
        let outcome = match (status, refused) {
            (Status::Succeeded, false) => "verified",
            (_, true) | (Status::Refused, _) => "refused",
            _ => "failed",
        };
        stuck.tried.push(FallbackTry {
            name: f.name().to_string(),
            at: self.clock.now(),
            by: req.actor.display_name.clone(),
            result: outcome.into(),
            detail: result.title.clone(),
        });
        if outcome == "verified" && stuck.mitigated.is_none() {
            stuck.mitigated = Some(f.name().to_string());
        }
        self.save_stuck(service, &stuck).await;
        let tried = tried_line(&stuck.tried);
        let mut m = if outcome == "verified" {
            Message::new(
                Severity::Warning,
                format!(
                    "{service}: fallback `{}` worked; the rollback is still incomplete",
                    f.name()
                ),
            )
            .text(format!(
                "{}\nStill running on backend `{}`: {}\nUsers are served through the fallback now, but {} by {} did not complete. Fix it on the platform and `/rollback {service}` again (a verified rollback ends this state), or roll forward with a fix.\nFallbacks tried: {tried}",
                result.text.trim_end(),
                svc.backend.as_ref(),
                self.running_now(service).await,
                stuck.rollback,
                stuck.by,
            ))
        } else {
            let m = Message::new(
                Severity::Critical,
                format!(
                    "{service}: fallback `{}` did not work; still stuck",
                    f.name()
                ),
            )
            .text(format!(
                "{}: {}\nFallbacks tried: {tried}",
                result.title,
                result.text.trim_end()
            ));
            self.what_next(svc, req, &stuck, m)
        };
        m.fields = result.fields.clone();
        m.context = result.context.clone();
        let m = m.context(format!("stuck since {}", stuck.since.format("%H:%M UTC")));
        self.announce(svc, m, true, &[])
    }

    /// After a fallback that did not work: the next one (tried now by
    /// `auto_fallback`, else offered as a button), or, with none left,
    /// that rollbot tries nothing more, to the escalation chain again.
    fn what_next(&self, svc: &ServiceConfig, req: &Request, stuck: &Stuck, m: Message) -> Message {
        let service = svc.name();
        if stuck.mitigated.is_some() {
            return m;
        }
        let next = svc
            .fallback
            .iter()
            .enumerate()
            .find(|(_, n)| !stuck.tried.iter().any(|t| t.name == n.name()));
        match next {
            Some((_, n)) if svc.auto_fallback && req.actor.is_system() => {
                m.append_text(format!("rollbot tries the next one now: `{}`.", n.name()))
            }
            Some((i, n)) => m.append_text(format!("Next: `{}`.", n.name())).button(
                format!("Try fallback: {}", n.name()),
                fallback_action_id(service, &stuck.correlation_id, i + 1),
                ButtonStyle::Primary,
            ),
            None => {
                let mut m = m.append_text(format!(
                    "Every fallback of {service} was tried; rollbot tries nothing more by itself. Act on the platform by hand (see `/status {service}`)."
                ));
                for who in &svc.escalation {
                    m = m.mention(who.clone());
                }
                m
            }
        }
    }
}

/// "1. traffic to stable (backend `mesh`), 2. …".
fn list(fallbacks: &[FallbackConfig]) -> String {
    fallbacks
        .iter()
        .enumerate()
        .map(|(i, f)| format!("{}. {} (backend `{}`)", i + 1, f.name(), f.backend.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fallback_button_names_its_service_episode_and_position_and_nothing_else() {
        let id = fallback_action_id("check-out.v2", "ab12cd34ef56", 2);
        assert_eq!(id, "fallback:check-out.v2:ab12cd34ef56:2");
        assert_eq!(
            parse_fallback_id(&id),
            Some(("check-out.v2".into(), "ab12cd34ef56".into(), 2))
        );
        for bad in [
            "fallback:web:ab12:0",
            "fallback:web:ab12",
            "fallback:web:ab12:1:2",
            "fallback::ab12:1",
            "fallback:web:../x:1",
            "fallback:we b:ab12:1",
            "prompt:ab12:approve",
        ] {
            assert_eq!(parse_fallback_id(bad), None, "{bad}");
        }
    }
}
