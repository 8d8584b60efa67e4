//! `/rollback release <release>`: every service of a release rolled back in
//! reverse dependency order (dependents first, so nothing is left calling
//! an API its dependency no longer serves), one step at a time.
//!
//! Each step is an ordinary rollback through the same steps as any request
//! (roles, idempotency, audit, the service's lock, preflight → act →
//! verify), with its own correlation id `CASCADE-N` and the release in its
//! audit parameters. A step must end verified before the next starts; the
//! first step that fails or is refused halts the cascade. The cascade's own
//! `requested` entry names the plan, and its result entry says, service by
//! service, what was rolled back, what failed and why, and what was not
//! reached, so a partial rollback is never silent.

use super::{capitalize, status_name, Engine, Outcome, Prompt, Refusal, Request, Status};
use crate::audit::Outcome as AuditOutcome;
use crate::chat::{Message, Severity};
use crate::controller::rollouts::{self, Rollout};
use crate::domain::Action;
use crate::roles::Permission;
use serde_json::json;
use std::collections::BTreeMap;

/// One service of a release and what the cascade makes of it.
struct Planned {
    service: String,
    /// Why it is left alone (already rolled back, moved on), if it is.
    skip: Option<String>,
}

/// What a cascade rolls back, as its messages name it.
struct Cascade<'a> {
    /// `release 2026-12-06.1`, `checkout and its dependents`.
    label: String,
    release: Option<&'a str>,
    /// What to run after a halt to finish the job.
    again: String,
    /// The prompt whose answer runs it: steps report in its thread.
    via_prompt: Option<&'a Prompt>,
}

/// How a cascade ended, service by service.
#[derive(Default)]
struct Tally {
    rolled_back: Vec<(String, String)>,
    /// The step that halted the cascade: service, its status, what it said.
    halted: Option<(String, Status, Option<Refusal>, String)>,
    not_reached: Vec<String>,
}

impl Engine {
    /// Rolls back the services of `release`, dependents first, halting at
    /// the first step that does not end verified.
    pub(super) async fn rollback_release(
        &self,
        req: &Request,
        corr: &str,
        release: &str,
    ) -> anyhow::Result<Outcome> {
        let rollouts = rollouts::of_release(&self.store, release).await?;
        if rollouts.is_empty() {
            let text = self.unknown_release_text(release).await?;
            return self
                .refuse(
                    req,
                    corr,
                    None,
                    Refusal::UnknownRelease,
                    "Unknown release",
                    text,
                )
                .await;
        }
        let plan = self.release_plan(&rollouts).await;
        let order: Vec<String> = plan
            .iter()
            .filter(|p| p.skip.is_none())
            .map(|p| p.service.clone())
            .collect();
        if let Some(refused) = self.authorize_release(req, corr, &order).await? {
            return Ok(refused);
        }
        let c = Cascade {
            label: format!("release {release}"),
            release: Some(release),
            again: format!(
                "run `/rollback release {release}` again: services already rolled back are skipped"
            ),
            via_prompt: None,
        };
        self.cascade(req, corr, &c, &plan).await
    }

    /// The answer "Roll back all in order": `services` (a service and the
    /// dependents that moved after it), dependents first, each step
    /// verified; one rolled back since the prompt was asked is left alone.
    pub(super) async fn rollback_in_order(
        &self,
        req: &Request,
        corr: &str,
        services: &[String],
        via_prompt: Option<&Prompt>,
    ) -> anyhow::Result<Outcome> {
        let mut plan = Vec::new();
        for name in self.config.rollback_order(services) {
            let since = via_prompt.map(|p| p.created);
            let skip = match (self.recent_rollback(&name).await, since) {
                (Some(rb), Some(asked)) if rb.at >= asked => Some(format!(
                    "already rolled back at {} by {}",
                    rb.at.format("%H:%M:%S UTC"),
                    rb.by
                )),
                _ => None,
            };
            plan.push(Planned {
                service: name,
                skip,
            });
        }
        let order: Vec<String> = plan
            .iter()
            .filter(|p| p.skip.is_none())
            .map(|p| p.service.clone())
            .collect();
        if let Some(refused) = self.authorize_release(req, corr, &order).await? {
            return Ok(refused);
        }
        let first = req.service.clone().unwrap_or_default();
        let c = Cascade {
            label: format!("{first} and its dependents"),
            release: None,
            again: "roll back the rest one by one, in the order shown".into(),
            via_prompt,
        };
        self.cascade(req, corr, &c, &plan).await
    }

    /// The plan's steps under one lock (a second cascade of the same
    /// services waits, then finds them rolled back), between the cascade's
    /// `requested` and result entries.
    async fn cascade(
        &self,
        req: &Request,
        corr: &str,
        c: &Cascade<'_>,
        plan: &[Planned],
    ) -> anyhow::Result<Outcome> {
        let order: Vec<String> = plan
            .iter()
            .filter(|p| p.skip.is_none())
            .map(|p| p.service.clone())
            .collect();
        let holder = super::lock::Holder {
            who: req.actor.display_name.clone(),
            action: format!("rollback of {}", c.label),
            since: self.clock.now(),
        };
        let lock_name = match c.release {
            Some(r) => format!("release:{r}"),
            None => format!("cascade:{}", order.join(",")),
        };
        let _cascade_lock = match self
            .locks
            .acquire(&lock_name, holder, self.config.engine.lock_wait.0)
            .await
        {
            Ok(g) => g,
            Err(h) => {
                let text = format!("{} is already rolling back {} (since {}). Nothing was changed; its result will say which services are rolled back.", h.who, c.label, h.since.format("%H:%M:%S UTC"));
                return self
                    .refuse(req, corr, None, Refusal::Busy, "Busy", text)
                    .await;
            }
        };
        let skipped: BTreeMap<&str, &str> = plan
            .iter()
            .filter_map(|p| Some((p.service.as_str(), p.skip.as_deref()?)))
            .collect();
        let mut params = BTreeMap::new();
        if let Some(r) = c.release {
            params.insert("release".into(), json!(r));
        }
        if let Some(p) = c.via_prompt {
            params.insert("prompt".into(), json!(p.id));
        }
        params.insert("order".into(), json!(order));
        params.insert("skipped".into(), json!(skipped));
        self.record(
            req,
            corr,
            req.service.as_deref(),
            params.clone(),
            AuditOutcome::Requested,
            format!("plan: {}", plan_line(&order)),
        )
        .await?;
        let tally = self.run_steps(req, corr, c, &order).await?;
        self.finish_cascade(req, corr, c, &order, &skipped, tally, params)
            .await
    }

    /// The release's services, latest rollout of each, with the ones to
    /// leave alone: rolled back since the release, or moved on to a later
    /// rollout outside it.
    async fn release_plan(&self, rollouts: &[Rollout]) -> Vec<Planned> {
        let mut latest: Vec<&Rollout> = Vec::new();
        for r in rollouts {
            latest.retain(|l| l.service != r.service);
            latest.push(r);
        }
        let services: Vec<String> = latest.iter().map(|r| r.service.clone()).collect();
        let mut plan = Vec::new();
        for name in self.config.rollback_order(&services) {
            let Some(r) = latest.iter().find(|r| r.service == name) else {
                continue;
            };
            let skip = if self.config.service(&name).is_none() {
                Some("no longer configured".to_string())
            } else if let Some(rb) = self
                .recent_rollback(&name)
                .await
                .filter(|rb| rb.at >= r.start)
            {
                Some(format!(
                    "already rolled back at {} by {}",
                    rb.at.format("%H:%M:%S UTC"),
                    rb.by
                ))
            } else if r.state.starts_with("rolled back") || r.state.starts_with("replaced") {
                Some(r.state.clone())
            } else {
                None
            };
            plan.push(Planned {
                service: name,
                skip,
            });
        }
        plan
    }

    /// Every step's role check before the first step: a cascade that would
    /// be refused halfway is refused whole, with nothing changed.
    async fn authorize_release(
        &self,
        req: &Request,
        corr: &str,
        order: &[String],
    ) -> anyhow::Result<Option<Outcome>> {
        let mut refused = Vec::new();
        for name in order {
            let Some(svc) = self.config.service(name) else {
                continue;
            };
            if let Err(r) =
                self.roles
                    .check(&req.actor, Permission::Rollback, &svc.environment, name)
            {
                refused.push(r.to_string());
            }
        }
        if refused.is_empty() {
            return Ok(None);
        }
        let text = format!(
            "{}\nNothing was rolled back: a release is rolled back whole or not started.",
            refused.join("\n")
        );
        self.refuse(req, corr, None, Refusal::NotAllowed, "Not allowed", text)
            .await
            .map(Some)
    }

    /// The steps in order, each an ordinary rollback; the first that does
    /// not succeed halts the rest.
    async fn run_steps(
        &self,
        req: &Request,
        corr: &str,
        c: &Cascade<'_>,
        order: &[String],
    ) -> anyhow::Result<Tally> {
        let mut tally = Tally::default();
        for (i, name) in order.iter().enumerate() {
            if tally.halted.is_some() {
                tally.not_reached.push(name.clone());
                continue;
            }
            let step_corr = format!("{corr}-{}", i + 1);
            let step = Request {
                actor: req.actor.clone(),
                action: Action::Rollback {
                    to: None,
                    force: false,
                },
                service: Some(name.clone()),
                reason: req.reason.clone(),
                idempotency_key: req.idempotency_key.as_ref().map(|k| format!("{k}:{name}")),
                correlation_id: Some(step_corr.clone()),
                dry_run: false,
            };
            let o = self
                .release_step(&step, &step_corr, c, corr, (i, order.len()))
                .await?;
            if !o.repeat {
                self.telemetry
                    .count_action("rollback", status_name(o.status));
            }
            if o.status == Status::Succeeded {
                tally
                    .rolled_back
                    .push((name.clone(), o.message.title.clone()));
            } else {
                let why = match o.message.text.is_empty() {
                    true => o.message.title.clone(),
                    false => format!("{}: {}", o.message.title, o.message.text),
                };
                tally.halted = Some((name.clone(), o.status, o.refusal, why));
            }
        }
        Ok(tally)
    }

    /// One step: the single-rollback steps for one service, its audit
    /// entries naming the release and the cascade.
    async fn release_step(
        &self,
        step: &Request,
        step_corr: &str,
        c: &Cascade<'_>,
        cascade: &str,
        (i, n): (usize, usize),
    ) -> anyhow::Result<Outcome> {
        let svc = match self
            .service_of(step, step_corr, step.service.as_deref())
            .await?
        {
            Ok(s) => s,
            Err(refused) => return Ok(refused),
        };
        if let Some(refused) = self.authorize(step, step_corr, svc).await? {
            return Ok(refused);
        }
        let mut params = BTreeMap::new();
        if let Some(refused) = self.check_freeze(step, step_corr, svc, &mut params).await? {
            return Ok(refused);
        }
        // A step past an irreversible migration halts the cascade like a
        // single rollback would be refused.
        if let Some(stopped) = self
            .migration_guard(step, step_corr, svc, &mut params)
            .await?
        {
            return Ok(stopped);
        }
        if let Some(r) = c.release {
            params.insert("release".into(), json!(r));
        }
        params.insert("cascade".into(), json!(cascade));
        params.insert("step".into(), json!(format!("{} of {n}", i + 1)));
        self.act(step, step_corr, svc, params, c.via_prompt).await
    }

    /// The cascade's result: one audit entry and one message that say, per
    /// service, rolled back, failed (and why), not reached or skipped.
    #[allow(clippy::too_many_arguments)]
    async fn finish_cascade(
        &self,
        req: &Request,
        corr: &str,
        c: &Cascade<'_>,
        order: &[String],
        skipped: &BTreeMap<&str, &str>,
        tally: Tally,
        mut params: BTreeMap<String, serde_json::Value>,
    ) -> anyhow::Result<Outcome> {
        let mut states = BTreeMap::new();
        for (s, _) in &tally.rolled_back {
            states.insert(s.clone(), "rolled_back".to_string());
        }
        for s in &tally.not_reached {
            states.insert(s.clone(), "not_reached".to_string());
        }
        for s in skipped.keys() {
            states.insert(s.to_string(), "skipped".to_string());
        }
        let rolled: Vec<&str> = tally.rolled_back.iter().map(|(s, _)| s.as_str()).collect();
        params.insert("rolled_back".into(), json!(rolled));
        params.insert("not_reached".into(), json!(tally.not_reached));
        let mut m;
        let (status, audit, refusal) = match &tally.halted {
            None => {
                m = Message::new(
                    Severity::Success,
                    if rolled.is_empty() {
                        format!("{}: nothing to roll back", capitalize(&c.label))
                    } else {
                        format!("Rolled back {}: {}", c.label, rolled.join(", "))
                    },
                );
                (Status::Succeeded, AuditOutcome::Succeeded, None)
            }
            Some((s, st, why, text)) => {
                states.insert(
                    s.clone(),
                    if *st == Status::Refused {
                        "refused"
                    } else {
                        "failed"
                    }
                    .to_string(),
                );
                params.insert(
                    "failed".into(),
                    json!({"service": s, "status": status_name(*st), "error": text}),
                );
                m = Message::new(
                    Severity::Critical,
                    format!(
                        "Rollback of {} halted at {s}: {} of {} services rolled back",
                        c.label,
                        rolled.len(),
                        order.len()
                    ),
                )
                .text(format!("{s}: {text}"));
                // Nothing changed when the first step was refused; else the
                // release is half rolled back, which is a failure to act on.
                if rolled.is_empty() && *st == Status::Refused {
                    (Status::Refused, AuditOutcome::Refused, *why)
                } else {
                    (Status::Failed, AuditOutcome::Failed, None)
                }
            }
        };
        params.insert("states".into(), json!(states));
        m = m.field("Order (dependents first)", plan_line(order));
        if !tally.rolled_back.is_empty() {
            // Each step's title starts with the field's own words.
            let lines: Vec<&str> = tally
                .rolled_back
                .iter()
                .map(|(_, t)| t.strip_prefix("Rolled back ").unwrap_or(t))
                .collect();
            m = m.field("Rolled back", lines.join("\n"));
        }
        if let Some((s, ..)) = &tally.halted {
            let mut not = vec![format!("{s} (halted here)")];
            not.extend(
                tally
                    .not_reached
                    .iter()
                    .map(|n| format!("{n} (not reached)")),
            );
            m = m.field("Not rolled back", not.join(", ")).field(
                "What to do",
                format!("Fix {s} or roll it back by hand, then {}.", c.again),
            );
        }
        if !skipped.is_empty() {
            let lines: Vec<String> = skipped
                .iter()
                .map(|(s, why)| format!("{s}: {why}"))
                .collect();
            m = m.field("Left alone", lines.join("\n"));
        }
        m = m.field("By", req.actor.display_name.clone());
        if !req.reason.is_empty() {
            m = m.field("Reason", req.reason.clone());
        }
        if let Some(r) = refusal {
            params.insert("refusal".into(), json!(r.audit_name()));
        }
        let entry = self
            .record(req, corr, req.service.as_deref(), params, audit, m.plain())
            .await?;
        let m = m
            .context(format!("correlation {corr}"))
            .context(format!("audit #{}", entry.seq));
        let thread = c.via_prompt.map(|p| p.messages.as_slice()).unwrap_or(&[]);
        let announced = self.announce_cascade(order, skipped, &m, thread);
        let outcome = match refusal {
            Some(r) => Outcome::refused(r, m, corr),
            None => Outcome::new(status, m, corr),
        };
        Ok(Outcome {
            announced,
            ..outcome
        })
    }

    /// The cascade's result in each deploy channel of its services, once
    /// per channel.
    fn announce_cascade(
        &self,
        order: &[String],
        skipped: &BTreeMap<&str, &str>,
        m: &Message,
        thread: &[crate::chat::MessageRef],
    ) -> bool {
        let mut channels: Vec<String> = order
            .iter()
            .map(String::as_str)
            .chain(skipped.keys().copied())
            .filter_map(|n| self.config.service(n)?.deploy_channel.as_ref())
            .map(|c| c.as_ref().clone())
            .collect();
        channels.sort();
        channels.dedup();
        for ch in &channels {
            self.notifier
                .reply_or_post_detached(thread.to_vec(), ch.clone(), m.clone());
        }
        !channels.is_empty()
    }

    /// The release of the service's latest rollout, while that rollout
    /// is what runs (not rolled back or replaced), for `/status`.
    pub async fn current_release(&self, service: &str) -> Option<String> {
        let all = rollouts::load_all(&self.store).await.ok()?;
        let latest = all.into_iter().rev().find(|r| r.service == service)?;
        let gone = latest.state.starts_with("rolled back")
            || self
                .recent_rollback(service)
                .await
                .is_some_and(|rb| rb.at >= latest.start);
        latest.release.filter(|_| !gone)
    }

    /// Says that no rollout carries `release`, and which releases do.
    async fn unknown_release_text(&self, release: &str) -> anyhow::Result<String> {
        let mut known: Vec<String> = Vec::new();
        for r in rollouts::load_all(&self.store).await?.into_iter().rev() {
            if let Some(rel) = r.release {
                if !known.contains(&rel) {
                    known.push(rel);
                }
            }
        }
        let list = match known.is_empty() {
            true => "No rollout was announced with a release yet (`\"release\"` in `POST /api/v1/rollouts`).".to_string(),
            false => format!(
                "Known releases, latest first: {}.",
                known.iter().take(10).cloned().collect::<Vec<_>>().join(", ")
            ),
        };
        Ok(format!(
            "There is no release `{release}`: no rollout was announced with it. {list} Nothing was done."
        ))
    }
}

/// `frontend → checkout → payments`.
fn plan_line(order: &[String]) -> String {
    if order.is_empty() {
        "—".into()
    } else {
        order.join(" → ")
    }
}
