//! Steps 5 to 9 for an action on a service's backend, one function each:
//! record the request, take the service's lock, preflight → act → verify
//! through the backend's breaker, record the result, announce it.
//!
//! The durable order is what recovery reads after a crash (see
//! `recovery.rs`): the `requested` entry, then the `inflight` record, each
//! its own commit, before any side effect; the result entry and the removal
//! of the record in one commit at the end.

use super::refusal::RefusalEntry;
use super::{
    capitalize, or_dash, BackendSlot, Engine, Inflight, Outcome, Prompt, RecentRollback, Refusal,
    Request, Status,
};
use crate::audit::Outcome as AuditOutcome;
use crate::backend::{self, ActionReport, BackendError, CallContext, Operation, Target};
use crate::breaker::Rejected;
use crate::chat::{Message, Severity};
use crate::config_file::ServiceConfig;
use crate::domain::{human_duration, Action};
use crate::store::{StoreError, Table, Tx};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

/// One action on a service's backend, as its steps see it.
struct Act<'a> {
    req: &'a Request,
    corr: &'a str,
    svc: &'a ServiceConfig,
    /// The prompt whose answer runs this action, if any.
    via_prompt: Option<&'a Prompt>,
    slot: &'a BackendSlot,
    op: Operation,
    /// Held until the act step has sent its last change.
    acting: Option<super::ActiveGuard<'a>>,
    /// The audit entries' parameters, growing step by step.
    params: BTreeMap<String, serde_json::Value>,
}

/// How the backend calls ended.
pub(super) enum Called {
    Acted {
        report: ActionReport,
        /// What verification found.
        detail: String,
        verified: bool,
    },
    /// The backend's preflight said it cannot be done as asked (an unknown
    /// revision, a paused Deployment): nothing was sent to change.
    Refused { error: String },
    /// A call failed at `stage` (`preflight` or `act`); `requests` are
    /// what the backend sent, for the audit entry.
    Failed {
        error: String,
        requests: Vec<String>,
        stage: &'static str,
    },
}

/// An action's end, before it is recorded and announced.
struct Settled {
    status: Status,
    audit: AuditOutcome,
    message: Message,
    refusal: Option<Refusal>,
    /// State written with the result entry (the latest rollback).
    change: Tx,
}

impl Engine {
    /// Steps 4–9 for an action on a service's backend.
    pub(super) async fn act(
        &self,
        req: &Request,
        corr: &str,
        svc: &ServiceConfig,
        params: BTreeMap<String, serde_json::Value>,
        via_prompt: Option<&Prompt>,
    ) -> anyhow::Result<Outcome> {
        self.once(req, corr, self.act_once(req, corr, svc, params, via_prompt))
            .await
    }

    /// Steps 5–9, in this order.
    async fn act_once(
        &self,
        req: &Request,
        corr: &str,
        svc: &ServiceConfig,
        mut params: BTreeMap<String, serde_json::Value>,
        via_prompt: Option<&Prompt>,
    ) -> anyhow::Result<Outcome> {
        let acting = match self.begin_acting(corr) {
            Ok(guard) => guard,
            Err(stopping) => return Ok(*stopping),
        };
        let op = match &req.action {
            Action::Rollback { to, .. } => Operation::Rollback { to: to.clone() },
            // A fallback is its backend's rollback (fallback.rs).
            Action::Fallback { .. } => Operation::Rollback { to: None },
            Action::Promote { full, .. } => Operation::Promote { full: *full },
            Action::Pause => Operation::Pause,
            Action::Resume => Operation::Resume,
            other => anyhow::bail!("{} is not a backend action", other.name()),
        };
        let (backend, _) = self.route(req, svc)?;
        if let Action::Fallback { .. } = &req.action {
            params.insert("backend".into(), json!(backend));
        }
        if let Some(p) = via_prompt {
            params.insert("prompt".into(), json!(p.id));
            params.insert("requested_by".into(), json!(p.requested_by.qualified_id()));
        }
        params.insert("operation".into(), serde_json::to_value(&op)?);
        let slot = self
            .backends
            .get(backend)
            .ok_or_else(|| anyhow::anyhow!("backend {backend} is not running"))?;
        let mut a = Act {
            req,
            corr,
            svc,
            via_prompt,
            slot,
            op,
            acting: Some(acting),
            params,
        };
        self.record_request(&a).await?;
        let _lock = match self.take_lock(&a).await? {
            Ok(guard) => guard,
            Err(busy) => return Ok(busy),
        };
        let called = self.call_backend(&mut a).await;
        if let Some(stopped) = self.fenced_off(req, corr, svc, &called) {
            return Ok(stopped);
        }
        // Whatever happened, the backend's status may have changed.
        self.status_cache.forget(svc.name());
        let mut settled = self.settle(&mut a, called);
        settled.message = super::verify_checks::show(settled.message, &a.params);
        if let Action::Fallback { name, .. } = &req.action {
            settled.message = settled
                .message
                .field("Fallback", format!("{name} (backend `{backend}`)"));
        }
        // A rollback that found nothing to do does not prove the service
        // came unstuck (its verification only reads the live state).
        let changed = a.params.get("report").and_then(|r| r["changed"].as_bool()) == Some(true);
        let (status, refusal) = (settled.status, settled.refusal);
        let mut message = self.record_result(&a, settled).await;
        // A rollback that found the service already there put nothing
        // back, so there is nothing new to hold off.
        if status == Status::Succeeded && refusal.is_none() && changed {
            message = self.freeze_after_rollback(req, corr, svc, message).await;
        }
        // A fallback of a stuck service says its result with what it
        // changed for the stuck state, in one message (fallback.rs).
        let announced = match self
            .after_fallback(svc, req, (status, refusal.is_some()), &message)
            .await
        {
            true => true,
            false => self.announce_result(&a, status, &message),
        };
        if matches!(req.action, Action::Rollback { .. }) && refusal.is_none() {
            match status {
                Status::Failed => self.enter_stuck(svc, req, corr, &message).await,
                Status::Succeeded if changed => self.leave_stuck(svc, req).await,
                _ => {}
            }
        }
        self.tell_result(req, corr, svc, (status, refusal), &message);
        let outcome = match refusal {
            // A preflight refusal is the action's result: recorded with
            // it and announced like it.
            Some(why) => Outcome::refused(why, message, corr),
            None => Outcome::new(status, message, corr),
        };
        Ok(Outcome {
            announced,
            ..outcome
        })
    }

    /// Step 5: durable before any side effect, in this order, the
    /// `requested` entry, then the `inflight` record. So at the next start
    /// an `inflight` record means "may have acted" and a `requested` entry
    /// without one means "never acted" (see recovery.rs).
    async fn record_request(&self, a: &Act<'_>) -> anyhow::Result<()> {
        let (req, corr, svc) = (a.req, a.corr, a.svc);
        if let Err(e) = self
            .record(
                req,
                corr,
                Some(svc.name()),
                a.params.clone(),
                AuditOutcome::Requested,
                String::new(),
            )
            .await
        {
            self.close_unrecorded(req, corr, svc, &e);
            return Err(e);
        }
        let inflight = Inflight {
            correlation_id: corr.into(),
            service: svc.name().into(),
            action: req.action.name().into(),
            actor: req.actor.clone(),
            started: self.clock.now(),
            channel: svc.deploy_channel.as_ref().map(|c| c.as_ref().clone()),
            idempotency_key: req.idempotency_key.clone(),
            command: Some(req.command_line()),
            owner: self.leadership.owner(),
        };
        if let Err(e) = self.store.put(Table::Inflight, corr, &inflight).await {
            let e = anyhow::Error::from(e);
            self.close_unrecorded(req, corr, svc, &e);
            return Err(e);
        }
        Ok(())
    }

    /// Step 6: the service's lock, waiting at most `lock_wait`. A busy
    /// service is refused naming who holds it; that refusal ends the
    /// `inflight` record in its own commit.
    async fn take_lock(
        &self,
        a: &Act<'_>,
    ) -> anyhow::Result<Result<super::lock::LockGuard, Outcome>> {
        let (req, corr, svc) = (a.req, a.corr, a.svc);
        let holder = super::lock::Holder {
            who: req.actor.display_name.clone(),
            action: req.action.name().into(),
            since: self.clock.now(),
        };
        let h = match self
            .locks
            .acquire(svc.name(), holder, self.config.engine.lock_wait.0)
            .await
        {
            Ok(guard) => return Ok(Ok(guard)),
            Err(h) => h,
        };
        let text = format!(
            "Another action is running on {}: {} by {} since {} ({} ago). Nothing was changed; try again when it finishes.",
            svc.name(), h.action, h.who, h.since.format("%H:%M:%S UTC"), human_duration((self.clock.now() - h.since).to_std().unwrap_or_default())
        );
        let entry = RefusalEntry {
            service: Some(svc.name()),
            change: Tx::new().remove(Table::Inflight, corr),
            ..RefusalEntry::default()
        };
        let busy = self
            .refuse_recorded(req, corr, entry, Refusal::Busy, "Busy", text)
            .await?;
        Ok(Err(busy))
    }

    /// Step 7: preflight → act → verify, each through the backend's breaker
    /// with `backend_timeout`. A refusal from the backend does not count
    /// against the breaker.
    async fn call_backend(&self, a: &mut Act<'_>) -> Called {
        let (req, corr, svc, slot, op) = (a.req, a.corr, a.svc, a.slot, &a.op);
        let settings = match self.route(req, svc) {
            Ok((_, target)) => target.clone(),
            Err(e) => {
                return Called::Failed {
                    error: e.to_string(),
                    requests: Vec::new(),
                    stage: "preflight",
                }
            }
        };
        let target = Target {
            service: svc.name().into(),
            environment: svc.environment.clone(),
            settings,
        };
        let ctx = CallContext {
            actor: req.actor.to_string(),
            reason: req.reason.clone(),
            correlation_id: corr.into(),
            idempotency_key: req.idempotency_key.clone().unwrap_or_else(|| corr.into()),
            progress: self.progress_reporter(svc, corr, a.via_prompt),
            // What the audit entry says the rollback crosses, so deploy
            // hooks can run data fix-ups.
            migrations: super::migration_guard::crossed_in(&a.params),
            preflight: None,
        };
        let timeout = self.config.engine.backend_timeout.0;
        let refusal_only = |e: &BackendError| !matches!(e, BackendError::Refused(_));
        let pre = slot
            .breaker
            .call(
                timeout,
                slot.backend.preflight(&target, op, &ctx),
                refusal_only,
            )
            .await;
        let pre = match pre {
            Ok(pre) => pre,
            // The backend saying "cannot be done as asked" at preflight
            // is a refusal: nothing was sent to change.
            Err(e @ Rejected::Inner(BackendError::Refused(_))) => {
                return Called::Refused { error: describe(e) }
            }
            Err(e) => {
                return Called::Failed {
                    requests: requests_of(&e),
                    error: describe(e),
                    stage: "preflight",
                }
            }
        };
        a.params.insert(
            "preflight".into(),
            serde_json::to_value(&pre).unwrap_or_default(),
        );
        // A replica paused since its preflight may have lost the Lease.
        if let Some(fenced) = self.fenced_before_act() {
            return fenced;
        }
        // The act's writes are conditional on what preflight found.
        let ctx = CallContext {
            preflight: Some(pre),
            ..ctx
        };
        let act = backend::perform(slot.backend.as_ref(), &target, op, &ctx);
        let acted = slot
            .breaker
            .call(
                timeout,
                crate::fence::scope(self.fence(), act),
                refusal_only,
            )
            .await;
        // Its last change is sent: a stopping replica may hand over now.
        a.acting = None;
        let report = match acted {
            Ok(report) => report,
            Err(e) => {
                return Called::Failed {
                    requests: requests_of(&e),
                    error: describe(e),
                    stage: "act",
                }
            }
        };
        let verification = slot
            .breaker
            .call(
                timeout,
                slot.backend.verify(&target, op, &report, &ctx),
                refusal_only,
            )
            .await;
        let (verified, detail) = match verification {
            Ok(v) => (v.ok, v.detail),
            Err(e) => {
                let requests = requests_of(&e);
                if !requests.is_empty() {
                    a.params.insert("requests".into(), json!(requests));
                }
                (false, format!("could not verify: {}", describe(e)))
            }
        };
        // The service's own checks, once the backend says it is done; they
        // look at its rollback, which a fallback leaves as it was.
        let (verified, detail) = match req.action {
            Action::Fallback { .. } => (verified, detail),
            _ => {
                self.post_rollback_checks(svc, &target, &a.op, (verified, detail), &mut a.params)
                    .await
            }
        };
        Called::Acted {
            report,
            detail,
            verified,
        }
    }

    /// What the backend calls mean for the asker and the audit log.
    fn settle(&self, a: &mut Act<'_>, called: Called) -> Settled {
        let (req, svc) = (a.req, a.svc);
        let (name, action) = (svc.name(), req.action.name());
        let (error, requests, stage) = match called {
            Called::Acted {
                report,
                detail,
                verified,
            } => return self.settle_acted(a, report, detail, verified),
            Called::Refused { error } => return self.settle_refused(a, error),
            Called::Failed {
                error,
                requests,
                stage,
            } => (error, requests, stage),
        };
        a.params.insert("failed_at".into(), json!(stage));
        // The audit's `error` keeps the requests after the message.
        let recorded = match requests.is_empty() {
            true => error.clone(),
            false => format!("{error}\nRequests: {}", requests.join("; ")),
        };
        a.params.insert("error".into(), json!(recorded));
        if !requests.is_empty() {
            a.params.insert("requests".into(), json!(requests));
        }
        let changed = if stage == "preflight" {
            "Nothing was changed."
        } else {
            "The service may be unchanged or partly changed."
        };
        let by_hand = by_hand_hint(action, name, svc.backend.as_ref(), a.slot.backend.kind());
        let message = Message::new(
            Severity::Critical,
            format!("{} of {name} failed", capitalize(action)),
        )
        .text(format!("{error}\n{changed} {by_hand}"))
        .field("By", req.actor.display_name.clone());
        Settled {
            status: Status::Failed,
            audit: AuditOutcome::Failed,
            message,
            refusal: None,
            change: Tx::new(),
        }
    }

    /// The backend's preflight refused: nothing was changed.
    fn settle_refused(&self, a: &mut Act<'_>, error: String) -> Settled {
        let (name, action) = (a.svc.name(), a.req.action.name());
        // `failed_at` stays as it was before refusals had a reason.
        a.params.insert("failed_at".into(), json!("preflight"));
        a.params
            .insert("refusal".into(), json!(Refusal::Preflight.audit_name()));
        a.params.insert("error".into(), json!(error));
        self.telemetry
            .count_refusal(action, Refusal::Preflight.audit_name());
        // A rollback that will not happen stays loud.
        let sev = if action == "rollback" {
            Severity::Critical
        } else {
            Severity::Warning
        };
        let message = Message::new(sev, format!("{} of {name} refused", capitalize(action)))
            .text(format!("{error}\nNothing was changed."))
            .field("By", a.req.actor.display_name.clone());
        Settled {
            status: Status::Refused,
            audit: AuditOutcome::Refused,
            message,
            refusal: Some(Refusal::Preflight),
            change: Tx::new(),
        }
    }

    /// The backend acted: succeeded when verified, failed otherwise. A
    /// verified rollback is remembered with the result.
    fn settle_acted(
        &self,
        a: &mut Act<'_>,
        report: ActionReport,
        detail: String,
        verified: bool,
    ) -> Settled {
        let (req, svc) = (a.req, a.svc);
        let (name, action) = (svc.name(), req.action.name());
        a.params.insert(
            "report".into(),
            serde_json::to_value(&report).unwrap_or_default(),
        );
        a.params.insert(
            "verification".into(),
            json!({ "ok": verified, "detail": detail }),
        );
        let revs = match (&report.from_revision, &report.to_revision) {
            (Some(f), Some(t)) => format!(" {f} → {t}"),
            (None, Some(t)) => format!(" to {t}"),
            _ => String::new(),
        };
        if !verified {
            let message = Message::new(Severity::Critical, format!("{} {name}{revs}: NOT verified", past_tense(action)))
                .text(format!("{}\nThe backend acted but the service did not reach the promised state: {detail}.\nCheck it by hand: `/status {name}`.", report.summary))
                .field("By", req.actor.display_name.clone());
            return Settled {
                status: Status::Failed,
                audit: AuditOutcome::Failed,
                message,
                refusal: None,
                change: Tx::new(),
            };
        }
        let change = if action == "rollback" {
            self.record_rollback(Tx::new(), svc, req)
        } else {
            Tx::new()
        };
        let message = Message::new(
            Severity::Success,
            format!("{} {name}{revs}", past_tense(action)),
        )
        .text(&report.summary)
        .field("By", req.actor.display_name.clone())
        .field("Reason", or_dash(&req.reason))
        .field("Verified", detail);
        Settled {
            status: Status::Succeeded,
            audit: AuditOutcome::Succeeded,
            message,
            refusal: None,
            change,
        }
    }

    /// Step 8: the result entry and the end of the `inflight` record, in
    /// one commit. When the store cannot take it, the backend has acted
    /// all the same: the message says so and the entry is retried.
    async fn record_result(&self, a: &Act<'_>, settled: Settled) -> Message {
        let (req, corr, name) = (a.req, a.corr, a.svc.name());
        let Settled {
            audit,
            message,
            change,
            ..
        } = settled;
        let detail = message.plain();
        let change = change.remove(Table::Inflight, corr);
        let result = self
            .record_with(
                req,
                corr,
                Some(name),
                a.params.clone(),
                audit,
                detail.clone(),
                change.clone(),
            )
            .await;
        match result {
            Ok(entry) => message
                .context(format!("correlation {corr}"))
                .context(format!("audit #{}", entry.seq)),
            Err(e) => {
                // The backend acted: say what happened, and keep trying to
                // record it rather than pretend nothing was done.
                tracing::error!(error = %e, correlation = %corr, "the result of an action could not be recorded");
                let record = self.record_of(req, corr, Some(name), a.params.clone(), audit, detail);
                self.record_later(record, change);
                message
                    .append_text(format!("⚠ rollbot's audit log could not record this result yet ({e}); it keeps trying, and the next start reports the action if it never can."))
                    .context(format!("correlation {corr}"))
            }
        }
    }

    /// Step 9: a break-glass promotion's warning, then the result in the
    /// deploy channel (the incident channel too for a rollback); an
    /// answered prompt's follow-up goes in the prompt's thread. Whether the
    /// deploy channel was told.
    fn announce_result(&self, a: &Act<'_>, status: Status, message: &Message) -> bool {
        if a.params.contains_key("break_glass") && status != Status::Refused {
            match a.req.action {
                Action::Rollback { .. } => {
                    self.announce_migration_override(a.req, a.corr, a.svc, &a.params)
                }
                _ => self.announce_break_glass(a.req, a.corr, a.svc, &a.params),
            }
        }
        let thread = a.via_prompt.map(|p| p.messages.as_slice()).unwrap_or(&[]);
        let rollback = matches!(a.req.action.name(), "rollback" | "fallback");
        self.announce(a.svc, message.clone(), rollback, thread)
    }

    /// Progress lines from a backend go to the prompt's thread when the
    /// action answers a prompt, otherwise to the deploy channel.
    fn progress_reporter(
        &self,
        svc: &ServiceConfig,
        corr: &str,
        via_prompt: Option<&Prompt>,
    ) -> crate::backend::Progress {
        let Some(ch) = svc.deploy_channel.as_ref().map(|c| c.as_ref().clone()) else {
            return crate::backend::Progress::default();
        };
        let notifier = self.notifier.clone();
        let thread = via_prompt.map(|p| p.messages.clone()).unwrap_or_default();
        let (service, corr) = (svc.name().to_string(), corr.to_string());
        crate::backend::Progress::new(move |line| {
            let msg = Message::new(Severity::Info, format!("{service}: {line}"))
                .context(format!("correlation {corr}"));
            notifier.reply_or_post_detached(thread.clone(), ch.clone(), msg);
        })
    }

    /// Remembers a service's latest rollback (in `tx`): it starts the
    /// cooldown that holds automatic promotion, and lets a watched rollout
    /// notice a rollback made by hand.
    fn record_rollback(&self, tx: Tx, svc: &ServiceConfig, req: &Request) -> Tx {
        let rb = RecentRollback {
            at: self.clock.now(),
            by: req.actor.display_name.clone(),
            reason: req.reason.clone(),
        };
        tx.put(Table::Settings, &format!("rollback:{}", svc.name()), &rb)
    }

    /// After the `requested` commit failed: nothing was sent, but the entry
    /// may still reach the disk once the store answers. A `failed` entry is
    /// queued behind it (the writer keeps order), so the log never shows a
    /// request without its end.
    fn close_unrecorded(&self, req: &Request, corr: &str, svc: &ServiceConfig, e: &anyhow::Error) {
        let maybe_written = matches!(
            e.downcast_ref::<StoreError>(),
            Some(StoreError::Stalled { .. } | StoreError::NotDurable(_))
        );
        if !maybe_written {
            return;
        }
        let mut params = BTreeMap::new();
        params.insert("not_acted".into(), json!(true));
        let record = self.record_of(
            req,
            corr,
            Some(svc.name()),
            params,
            AuditOutcome::Failed,
            format!("Not done: rollbot's store did not confirm the request ({e}), so nothing was sent to the backend."),
        );
        self.record_later(record, Tx::new().remove(Table::Inflight, corr));
    }
}

/// The requests a failed backend call sent, for the audit entry.
fn requests_of(e: &Rejected<BackendError>) -> Vec<String> {
    match e {
        Rejected::Inner(e) => e.requests().to_vec(),
        _ => Vec::new(),
    }
}

/// A backend call's error as one sentence.
pub(super) fn describe(e: Rejected<BackendError>) -> String {
    match e {
        Rejected::Open { name, retry_in, last_error } => format!(
            "{name} is failing and its circuit breaker is open (last error: {}); rollbot will try it again in {}",
            last_error.unwrap_or_else(|| "unknown".into()),
            human_duration(retry_in.max(Duration::from_secs(1)))
        ),
        Rejected::Timeout(d) => format!("the backend did not answer within {}", human_duration(d)),
        Rejected::Inner(e) => e.to_string(),
    }
}

/// What to do when a backend call failed. Each backend's error names the
/// exact step for its platform; this adds where to look afterwards.
fn by_hand_hint(action: &str, service: &str, backend: &str, kind: &str) -> String {
    match action {
        "rollback" => format!("To roll back by hand, act on the platform behind backend `{backend}` ({kind}) as the error says, then check `/status {service}`."),
        _ => format!("Check `/status {service}` and the platform behind backend `{backend}` ({kind})."),
    }
}

fn past_tense(action: &str) -> String {
    match action {
        "rollback" => "Rolled back".into(),
        "promote" => "Promoted".into(),
        "pause" => "Paused".into(),
        "resume" => "Resumed".into(),
        "fallback" => "Fallback applied to".into(),
        other => capitalize(other),
    }
}
