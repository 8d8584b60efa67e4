//! Dry runs (`/rollback checkout dry-run`, `"dry_run": true` in the API):
//! the same steps as the real action up to the backend (authorize, the
//! freeze check), then the backend's preflight and its plan, which says
//! exactly what it would send. Nothing is sent, no lock is taken, no
//! idempotency record is kept: a dry run changes nothing, so it is never a
//! repeat. Every entry of a dry run carries `dry_run = true` (`record.rs`),
//! which `rollbot audit` and `/audit` show and the KPIs leave out.

use super::act::describe;
use super::{capitalize, Engine, Outcome, Refusal, Request, Status};
use crate::audit::Outcome as AuditOutcome;
use crate::backend::{CallContext, Operation, Plan, Preflight, Target};
use crate::breaker::Rejected;
use crate::chat::{Message, Severity};
use crate::config_file::ServiceConfig;
use crate::domain::Action;
use serde_json::json;
use std::collections::BTreeMap;

impl Engine {
    /// Steps 1–2 have passed: preflight and plan through the backend's
    /// breaker, one audit entry, an answer to the asker only.
    pub(super) async fn dry_run(
        &self,
        req: &Request,
        corr: &str,
        svc: &ServiceConfig,
        mut params: BTreeMap<String, serde_json::Value>,
    ) -> anyhow::Result<Outcome> {
        let name = svc.name();
        let action = req.action.name();
        let op = match &req.action {
            Action::Rollback { to, .. } => Operation::Rollback { to: to.clone() },
            Action::Fallback { .. } => Operation::Rollback { to: None },
            Action::Promote { full, .. } => Operation::Promote { full: *full },
            Action::Pause => Operation::Pause,
            Action::Resume => Operation::Resume,
            other => anyhow::bail!("{} has no dry run", other.name()),
        };
        params.insert("operation".into(), serde_json::to_value(&op)?);
        let (backend, settings) = self.route(req, svc)?;
        let slot = self
            .backends
            .get(backend)
            .ok_or_else(|| anyhow::anyhow!("backend {backend} is not running"))?;
        let target = Target {
            service: name.into(),
            environment: svc.environment.clone(),
            settings: settings.clone(),
        };
        let ctx = CallContext {
            actor: req.actor.to_string(),
            reason: req.reason.clone(),
            correlation_id: corr.into(),
            idempotency_key: req.idempotency_key.clone().unwrap_or_else(|| corr.into()),
            progress: Default::default(),
            migrations: super::migration_guard::crossed_in(&params),
            preflight: None,
        };
        let timeout = self.config.engine.backend_timeout.0;
        let refusal_only = |e: &crate::backend::BackendError| {
            !matches!(e, crate::backend::BackendError::Refused(_))
        };
        let b = slot.backend.as_ref();
        let planned = match slot
            .breaker
            .call(timeout, b.preflight(&target, &op, &ctx), refusal_only)
            .await
        {
            Ok(pre) => {
                params.insert("preflight".into(), serde_json::to_value(&pre)?);
                slot.breaker
                    .call(timeout, b.plan(&target, &op, &ctx), refusal_only)
                    .await
                    .map(|plan| (pre, plan))
                    .map_err(|e| ("plan", e))
            }
            Err(e) => Err(("preflight", e)),
        };
        let ((pre, plan), title) = match planned {
            Ok(p) => (p, format!("Dry run: {action} of {name}")),
            Err((stage, e)) => {
                let refused =
                    matches!(e, Rejected::Inner(crate::backend::BackendError::Refused(_)));
                let error = describe(e);
                params.insert("failed_at".into(), json!(stage));
                params.insert("error".into(), json!(error));
                let (status, audit, refusal, said) = if refused {
                    let r = Refusal::Preflight;
                    params.insert("refusal".into(), json!(r.audit_name()));
                    (
                        Status::Refused,
                        AuditOutcome::Refused,
                        Some(r),
                        "would be refused",
                    )
                } else {
                    (
                        Status::Failed,
                        AuditOutcome::Failed,
                        None,
                        "could not be checked",
                    )
                };
                let m = Message::new(
                    Severity::Warning,
                    format!("Dry run: {action} of {name} {said}"),
                )
                .text(format!("{error}\nNothing was sent."));
                return self
                    .dry_run_result(req, corr, name, params, audit, m, status, refusal)
                    .await;
            }
        };
        params.insert("plan".into(), serde_json::to_value(&plan)?);
        let m = Message::new(Severity::Info, title)
            .text(plan_text(
                action,
                &pre,
                &plan,
                approval_note(req, svc, &params),
            ))
            .field("By", req.actor.display_name.clone());
        self.dry_run_result(
            req,
            corr,
            name,
            params,
            AuditOutcome::Succeeded,
            m,
            Status::Succeeded,
            None,
        )
        .await
    }

    /// Records the dry run's one entry and answers the asker; nothing is
    /// announced in the service's channels.
    #[allow(clippy::too_many_arguments)]
    async fn dry_run_result(
        &self,
        req: &Request,
        corr: &str,
        name: &str,
        params: BTreeMap<String, serde_json::Value>,
        audit: AuditOutcome,
        message: Message,
        status: Status,
        refusal: Option<Refusal>,
    ) -> anyhow::Result<Outcome> {
        let entry = self
            .record(req, corr, Some(name), params, audit, message.plain())
            .await?;
        let message = message
            .context(format!("correlation {corr}"))
            .context(format!("audit #{}", entry.seq));
        Ok(Outcome {
            refusal,
            ..Outcome::new(status, message, corr)
        })
    }
}

/// Whom the real action would wait for: a second person for a promote
/// of a critical service, or for a forced rollback past a migration.
fn approval_note(
    req: &Request,
    svc: &ServiceConfig,
    params: &BTreeMap<String, serde_json::Value>,
) -> Option<String> {
    if matches!(req.action, Action::Promote { .. }) && svc.critical {
        return Some("A real promote of this critical service would first ask a second person to approve it.".into());
    }
    let crossed = params
        .get(super::migration_guard::SECOND_PERSON)?
        .as_str()?;
    Some(format!("A real forced rollback past {crossed} would first ask a second person with the approver role to approve it, and would then act as break-glass."))
}

/// The plan in words: each request as it would be sent, then what else.
fn plan_text(action: &str, pre: &Preflight, plan: &Plan, approval: Option<String>) -> String {
    let mut out = String::new();
    if let (Some(f), Some(t)) = (&pre.from_revision, &pre.to_revision) {
        out.push_str(&format!("{} {f} → {t}.\n", capitalize(action)));
    } else if let Some(t) = &pre.to_revision {
        out.push_str(&format!("{} to {t}.\n", capitalize(action)));
    }
    for n in &pre.notes {
        out.push_str(&format!("Preflight: {n}\n"));
    }
    match plan.requests.len() {
        0 => out.push_str("Nothing would be sent.\n"),
        1 => out.push_str("Would send 1 request:\n"),
        n => out.push_str(&format!("Would send {n} requests, in this order:\n")),
    }
    for (i, r) in plan.requests.iter().enumerate() {
        out.push_str(&format!("{}. {r}\n", i + 1));
    }
    for n in &plan.notes {
        out.push_str(&format!("{n}\n"));
    }
    if let Some(note) = approval {
        out.push_str(&format!("{note}\n"));
    }
    out.push_str("Nothing was sent.");
    out
}

/// A dry run refused before the backend (not allowed, frozen, unknown
/// service) says so as a dry run: the real action would be refused the
/// same way.
pub(super) fn refused_as_dry_run(req: &Request, mut o: Outcome) -> Outcome {
    if o.status == Status::Refused && !o.message.title.starts_with("Dry run") {
        o.message.title = format!("Dry run: {}", o.message.title);
        o.message.text = format!(
            "{}\nA real {} would be refused the same way; nothing was sent.",
            o.message.text,
            req.action.name()
        );
    }
    o
}
