//! The action engine: the one function every action goes through, whoever
//! asks (a chat command, a button, the controller, the HTTP API), and the
//! only caller of rollback backends.
//!
//! The order is fixed and each step has a reason:
//!  1. authorize      deny by default; a refusal names the missing permission
//!  2. freeze check   promotions only; rollbacks are never frozen
//!  3. idempotency    a retried request acts once and gets the first outcome
//!  4. audit          `requested`, durable before any side effect
//!  5. lock           one action per service at a time, bounded wait
//!  6. preflight      the target exists before anything changes
//!  7. act            with a time limit, through a circuit breaker
//!  8. verify         the service reached the promised state
//!  9. audit          `succeeded` or `failed`
//! 10. notify         in the chat bulkhead, never holding up the action

mod automation;
mod escalation;
mod idempotency;
mod lock;
mod maintenance;
pub mod prompt;
mod query;
mod recovery;
mod refusal;

pub use automation::{AutomationOff, DEFAULT_AUTOMATION_OFF, MAX_AUTOMATION_OFF};
pub use prompt::{parse_action_id, Prompt, PromptState};
pub use query::audit_line;
pub use recovery::Inflight;
pub use refusal::Refusal;

use crate::audit::{AuditStore, Outcome as AuditOutcome, Record};
use crate::backend::{
    self, ActionReport, BackendError, CallContext, Operation, RollbackBackend, Target,
};
use crate::breaker::{Breaker, BreakerStatus, Rejected};
use crate::chat::{ButtonStyle, Message, Notifier, Severity};
use crate::clock::SharedClock;
use crate::config_file::{Config, ServiceConfig};
use crate::domain::{human_duration, Action, Actor, Scope};
use crate::freeze::{AdHocFreeze, Freezes};
use crate::roles::{Permission, Role, RoleBook};
use crate::store::{Store, StoreError, Table, Tx};
use crate::telemetry::{ActionKind, Telemetry};
use idempotency::{Claim, Idempotency};
use lock::{Holder, ServiceLocks};
use prompt::{Answer, Choice, Prompts};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// A request for an action.
#[derive(Clone, Debug)]
pub struct Request {
    pub actor: Actor,
    pub action: Action,
    /// The service, for actions on one service (name or `env/name`).
    pub service: Option<String>,
    pub reason: String,
    /// Requests with the same key act once (chat retries, double clicks).
    pub idempotency_key: Option<String>,
    pub correlation_id: Option<String>,
}

impl Request {
    pub fn new(actor: Actor, action: Action) -> Request {
        Request {
            actor,
            action,
            service: None,
            reason: String::new(),
            idempotency_key: None,
            correlation_id: None,
        }
    }
    pub fn service(mut self, s: impl Into<String>) -> Self {
        self.service = Some(s.into());
        self
    }
    pub fn reason(mut self, r: impl Into<String>) -> Self {
        self.reason = r.into();
        self
    }
    pub fn idempotency_key(mut self, k: impl Into<String>) -> Self {
        self.idempotency_key = Some(k.into());
        self
    }
    pub fn correlation_id(mut self, c: impl Into<String>) -> Self {
        self.correlation_id = Some(c.into());
        self
    }

    /// The request as a person would type it, to name it in messages (an
    /// idempotency key reused for another command says which).
    pub fn command_line(&self) -> String {
        let svc = self.service.as_deref().unwrap_or("");
        match &self.action {
            Action::Rollback { to: None } => format!("/rollback {svc}"),
            Action::Rollback { to: Some(t) } => format!("/rollback {svc} to {t}"),
            Action::Promote { full, force } => format!(
                "/promote {svc}{}{}",
                if *full { " full" } else { "" },
                if *force { " force" } else { "" }
            ),
            Action::Pause => format!("/pause {svc}"),
            Action::Resume => format!("/resume {svc}"),
            Action::Freeze { scope, duration } => {
                format!("/freeze {scope} for {}", human_duration(*duration))
            }
            Action::Unfreeze { scope } => format!("/unfreeze {scope}"),
            Action::Automation { enabled: true, .. } => format!("/auto {svc} on"),
            Action::Automation {
                enabled: false,
                duration,
            } => format!("/auto {svc} off for {}", human_duration(*duration)),
            Action::Approve { prompt } => format!("approve prompt {prompt}"),
            Action::Reject { prompt } => format!("reject prompt {prompt}"),
            Action::Query { view } => {
                let v = match view {
                    crate::domain::View::Status => "status",
                    crate::domain::View::Audit => "audit",
                };
                format!("/{v} {svc}").trim_end().to_string()
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Succeeded,
    Failed,
    Refused,
    /// Waiting for a person's approval (a prompt was posted).
    Pending,
}

/// The result of a request, as a platform-neutral message for the asker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub status: Status,
    pub message: Message,
    pub correlation_id: String,
    pub prompt: Option<String>,
    /// The result was also posted in the service's channel.
    pub announced: bool,
    /// This is the stored outcome of an earlier identical request.
    #[serde(default)]
    pub repeat: bool,
    /// Why it was refused, when `status` is `refused`.
    #[serde(default)]
    pub refusal: Option<Refusal>,
}

/// A service's latest successful rollback.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecentRollback {
    pub at: chrono::DateTime<chrono::Utc>,
    /// Who asked for it (display name).
    pub by: String,
    pub reason: String,
}

/// A backend with its breaker and pool.
struct BackendSlot {
    backend: Arc<dyn RollbackBackend>,
    breaker: Breaker,
}

/// Everything the engine is built from.
pub struct EngineParts {
    pub config: Arc<Config>,
    pub store: Arc<Store>,
    pub backends: HashMap<String, Arc<dyn RollbackBackend>>,
    pub notifier: Notifier,
    pub clock: SharedClock,
    pub telemetry: Arc<Telemetry>,
}

pub struct Engine {
    pub config: Arc<Config>,
    pub store: Arc<Store>,
    /// This engine, so an action can run in a task of its own.
    me: Weak<Engine>,
    pub roles: RoleBook,
    pub freezes: Freezes,
    backends: HashMap<String, BackendSlot>,
    locks: ServiceLocks,
    status_cache: query::StatusCache,
    /// Turns for read-only views (see `query_turn`).
    queries: tokio::sync::Semaphore,
    idem: Idempotency,
    pub prompts: Prompts,
    pub notifier: Notifier,
    pub clock: SharedClock,
    pub telemetry: Arc<Telemetry>,
    active: tokio::sync::watch::Sender<usize>,
    closing: AtomicBool,
    /// Whether this replica may act (always, unless `[leader_election]`).
    pub leadership: crate::leader::Leadership,
}

pub fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

/// Counts an action in flight for graceful shutdown.
struct ActiveGuard<'a>(&'a tokio::sync::watch::Sender<usize>);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

impl Engine {
    pub fn new(parts: EngineParts) -> Arc<Engine> {
        let c = &parts.config.engine;
        let backends = parts
            .backends
            .into_iter()
            .map(|(name, backend)| {
                let breaker = Breaker::new(
                    format!("backend:{name}"),
                    c.breaker_failures,
                    c.breaker_cooldown.0,
                    c.backend_pool,
                    parts.telemetry.clone(),
                );
                (name, BackendSlot { backend, breaker })
            })
            .collect();
        Arc::new_cyclic(|me| Engine {
            me: me.clone(),
            roles: RoleBook::new(&parts.config.roles),
            freezes: Freezes::new(parts.store.clone(), parts.config.freeze.windows.clone()),
            idem: Idempotency::new(parts.store.clone()),
            prompts: Prompts::new(parts.store.clone()),
            locks: ServiceLocks::default(),
            status_cache: query::StatusCache::default(),
            queries: tokio::sync::Semaphore::new(query::QUERIES_AT_ONCE),
            backends,
            notifier: parts.notifier,
            clock: parts.clock,
            telemetry: parts.telemetry,
            config: parts.config,
            store: parts.store,
            active: tokio::sync::watch::channel(0).0,
            closing: AtomicBool::new(false),
            leadership: crate::leader::Leadership::default(),
        })
    }

    pub fn audit(&self) -> &dyn AuditStore {
        self.store.audit()
    }

    pub fn breakers(&self) -> Vec<BreakerStatus> {
        let mut v: Vec<BreakerStatus> =
            self.backends.values().map(|b| b.breaker.status()).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Stops taking new actions and waits for those in flight.
    pub async fn drain(&self, limit: Duration) -> bool {
        self.closing.store(true, Ordering::SeqCst);
        let mut rx = self.active.subscribe();
        let drained = tokio::time::timeout(limit, rx.wait_for(|n| *n == 0))
            .await
            .is_ok();
        drained
    }

    /// Runs one request to its outcome. Never panics on bad input; every
    /// path ends in an audited outcome.
    ///
    /// The request runs in a task of its own: once accepted it runs to its
    /// end and is audited even if whoever asked goes away (a closed HTTP
    /// connection, a cancelled chat handler).
    pub async fn execute(&self, req: Request) -> Outcome {
        let Some(me) = self.me.upgrade() else {
            return self.execute_here(req).await;
        };
        let correlation = req.correlation_id.clone();
        let action = req.action.name();
        match tokio::spawn(async move { me.execute_here(req).await }).await {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(error = %e, action, "an action stopped unexpectedly");
                plain_outcome(
                    Status::Failed,
                    Severity::Critical,
                    &format!("{action} stopped unexpectedly"),
                    "rollbot hit an internal error while running it. Check `/status` and the audit log before repeating it.",
                    correlation.as_deref().unwrap_or("-"),
                )
            }
        }
    }

    async fn execute_here(&self, req: Request) -> Outcome {
        self.active.send_modify(|n| *n += 1);
        let _active = ActiveGuard(&self.active);
        let started = Instant::now();
        let correlation = req.correlation_id.clone().unwrap_or_else(new_id);
        let outcome = match self.run(&req, &correlation).await {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(error = %e, correlation = %correlation, "action could not be recorded");
                // Every path that reaches a backend records its result
                // itself (see `act_once`); an error here came before that.
                plain_refusal(
                    Refusal::StoreUnavailable,
                    Severity::Critical,
                    &format!("{} could not be recorded", req.action.name()),
                    &format!("rollbot's store did not record the request ({e}), so no backend was asked to act. Check `/readyz`, and retry when the store answers, or act on the platform by hand."),
                    &correlation,
                )
            }
        };
        if outcome.repeat {
            // A replayed outcome is not a new action.
            return outcome;
        }
        self.telemetry
            .count_action(req.action.name(), status_name(outcome.status));
        self.telemetry
            .action_seconds
            .get_or_create(&ActionKind {
                action: req.action.name().into(),
            })
            .observe(started.elapsed().as_secs_f64());
        outcome
    }

    async fn run(&self, req: &Request, corr: &str) -> anyhow::Result<Outcome> {
        if !self.leadership.is_leader() {
            let view = self.leadership.view();
            return Ok(plain_refusal(
                Refusal::Standby,
                Severity::Warning,
                "this rollbot replica is standing by",
                &format!("{}. Nothing was done; send the command to the leader (the Service routes to it once it is ready) or retry in a few seconds.", view.describe()),
                corr,
            ));
        }
        if let Some(what) = self.store.health.damaged() {
            return Ok(plain_refusal(
                Refusal::StoreDamaged,
                Severity::Critical,
                "rollbot's store is damaged",
                &format!("{what}. rollbot does not act on a store it cannot trust: nothing was done. Act on the platform by hand, and restore the store from a backup (see `/readyz`)."),
                corr,
            ));
        }
        if self.closing.load(Ordering::SeqCst) {
            return Ok(plain_refusal(
                Refusal::ShuttingDown,
                Severity::Warning,
                "rollbot is shutting down",
                "This instance is stopping and takes no new actions; retry in a moment.",
                corr,
            ));
        }
        match &req.action {
            Action::Approve { prompt } => return self.answer(req, corr, prompt, true).await,
            Action::Reject { prompt } => return self.answer(req, corr, prompt, false).await,
            Action::Freeze { scope, .. } | Action::Unfreeze { scope } => {
                return self.freeze_action(req, corr, scope).await
            }
            Action::Query {
                view: crate::domain::View::Status,
            } => return self.status(req).await,
            Action::Query {
                view: crate::domain::View::Audit,
            } => return self.audit_view(req, 10).await,
            _ => {}
        }
        let svc = match self.resolve(req.service.as_deref()) {
            Ok(s) => s,
            Err(text) => {
                return self
                    .refuse(
                        req,
                        corr,
                        None,
                        Refusal::UnknownService,
                        "Unknown service",
                        text,
                    )
                    .await
            }
        };
        let perm = match &req.action {
            Action::Rollback { .. } => Permission::Rollback,
            Action::Promote { .. } => Permission::Promote,
            Action::Pause | Action::Automation { .. } => Permission::Pause,
            _ => Permission::Resume,
        };
        if let Err(r) = self
            .roles
            .check(&req.actor, perm, &svc.environment, svc.name())
        {
            return self
                .refuse(
                    req,
                    corr,
                    Some(svc),
                    Refusal::NotAllowed,
                    "Not allowed",
                    r.to_string(),
                )
                .await;
        }
        if let Action::Automation { .. } = &req.action {
            return self
                .once(req, corr, self.automation_action(req, corr, svc))
                .await;
        }
        let mut params = BTreeMap::new();
        if let Action::Promote { force, .. } = &req.action {
            if let Some(block) = self
                .freezes
                .promotion_block(&svc.environment, svc.name(), self.clock.now())
                .await?
            {
                let may_override = self
                    .roles
                    .check(
                        &req.actor,
                        Permission::OverrideFreeze,
                        &svc.environment,
                        svc.name(),
                    )
                    .is_ok();
                if !force {
                    let hint = format!("Rollbacks are not affected. An admin can promote through it with `/promote {} force <reason>` (break-glass, audited and announced).", svc.name());
                    return self
                        .refuse(
                            req,
                            corr,
                            Some(svc),
                            Refusal::Frozen,
                            "Promotion refused: frozen",
                            format!("{block}.\n{hint}"),
                        )
                        .await;
                }
                if !may_override {
                    return self.refuse(req, corr, Some(svc), Refusal::NotAllowed, "Break-glass refused", format!("{block}.\nOnly the admin role may promote through a freeze with `force`.")).await;
                }
                if req.reason.trim().is_empty() {
                    return self
                        .refuse(
                            req,
                            corr,
                            Some(svc),
                            Refusal::Invalid,
                            "Break-glass needs a reason",
                            format!(
                                "{block}.\nSay why: `/promote {} force <reason>`.",
                                svc.name()
                            ),
                        )
                        .await;
                }
                params.insert("break_glass".into(), json!(true));
                params.insert("freeze".into(), json!(block.to_string()));
            }
            if svc.critical {
                return self.ask_second_person(req, corr, svc).await;
            }
        }
        self.act(req, corr, svc, params, None).await
    }

    /// Steps 3–10 for an action on a service's backend.
    async fn act(
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

    /// Runs `work` once per idempotency key; a repeat gets the stored outcome.
    /// A refusal (a busy lock, nothing to unfreeze) is not stored, so a
    /// retry may succeed later.
    async fn once(
        &self,
        req: &Request,
        corr: &str,
        work: impl std::future::Future<Output = anyhow::Result<Outcome>>,
    ) -> anyhow::Result<Outcome> {
        let Some(k) = req.idempotency_key.as_deref() else {
            return work.await;
        };
        let command = req.command_line();
        let now = self.clock.now();
        let ttl = chrono::Duration::from_std(self.config.store.idempotency_ttl.0)?;
        match self.idem.claim(k, &command, now, ttl).await? {
            Claim::Done(mut o) => {
                o.repeat = true;
                Ok(o)
            }
            Claim::Conflict { first } => {
                let text = format!(
                    "The idempotency key `{k}` was already used for `{first}`, so `{command}` was not run. Send a new key with a new command; repeat a key only to retry the same command."
                );
                self.refuse(
                    req,
                    corr,
                    None,
                    Refusal::IdempotencyConflict,
                    "Idempotency key reused",
                    text,
                )
                .await
            }
            Claim::Run(tx) => {
                let outcome = work.await;
                if let Ok(o) = &outcome {
                    self.idem
                        .finish(k, &command, now, tx, o, o.status != Status::Refused)
                        .await?;
                }
                outcome
            }
        }
    }

    async fn act_once(
        &self,
        req: &Request,
        corr: &str,
        svc: &ServiceConfig,
        mut params: BTreeMap<String, serde_json::Value>,
        via_prompt: Option<&Prompt>,
    ) -> anyhow::Result<Outcome> {
        let op = match &req.action {
            Action::Rollback { to } => Operation::Rollback { to: to.clone() },
            Action::Promote { full, .. } => Operation::Promote { full: *full },
            Action::Pause => Operation::Pause,
            Action::Resume => Operation::Resume,
            other => anyhow::bail!("{} is not a backend action", other.name()),
        };
        if let Some(p) = via_prompt {
            params.insert("prompt".into(), json!(p.id));
            params.insert("requested_by".into(), json!(p.requested_by.qualified_id()));
        }
        params.insert("operation".into(), serde_json::to_value(&op)?);
        let slot = self
            .backends
            .get(svc.backend.as_ref())
            .ok_or_else(|| anyhow::anyhow!("backend {} is not running", svc.backend.as_ref()))?;

        // Durable before any side effect, in this order: the `requested`
        // entry, then the `inflight` record. So at the next start an
        // `inflight` record means "may have acted" and a `requested` entry
        // without one means "never acted" (see recovery.rs).
        if let Err(e) = self
            .record(
                req,
                corr,
                Some(svc.name()),
                params.clone(),
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
        };
        if let Err(e) = self.store.put(Table::Inflight, corr, &inflight).await {
            let e = anyhow::Error::from(e);
            self.close_unrecorded(req, corr, svc, &e);
            return Err(e);
        }

        let holder = Holder {
            who: req.actor.display_name.clone(),
            action: req.action.name().into(),
            since: self.clock.now(),
        };
        let _lock = match self
            .locks
            .acquire(svc.name(), holder, self.config.engine.lock_wait.0)
            .await
        {
            Ok(g) => g,
            Err(h) => {
                let text = format!(
                    "Another action is running on {}: {} by {} since {} ({} ago). Nothing was changed; try again when it finishes.",
                    svc.name(), h.action, h.who, h.since.format("%H:%M:%S UTC"), human_duration((self.clock.now() - h.since).to_std().unwrap_or_default())
                );
                return self
                    .refuse_with(
                        req,
                        corr,
                        Some(svc.name()),
                        BTreeMap::new(),
                        Refusal::Busy,
                        "Busy",
                        text,
                        Tx::new().remove(Table::Inflight, corr),
                    )
                    .await;
            }
        };

        let target = Target {
            service: svc.name().into(),
            environment: svc.environment.clone(),
            settings: svc.target.clone(),
        };
        let ctx = CallContext {
            actor: req.actor.to_string(),
            reason: req.reason.clone(),
            correlation_id: corr.into(),
            idempotency_key: req.idempotency_key.clone().unwrap_or_else(|| corr.into()),
            progress: self.progress_reporter(svc, corr, via_prompt),
        };
        let timeout = self.config.engine.backend_timeout.0;
        let refusal_only = |e: &BackendError| !matches!(e, BackendError::Refused(_));

        // A failure keeps the requests the backend sent, for the audit entry.
        type Failure<'a> = (Vec<String>, String, &'a str);
        let result: Result<(ActionReport, String, bool), Failure> = async {
            let pre = slot
                .breaker
                .call(
                    timeout,
                    slot.backend.preflight(&target, &op, &ctx),
                    refusal_only,
                )
                .await
                .map_err(|e| {
                    // The backend saying "cannot be done as asked" at
                    // preflight is a refusal: nothing was sent to change.
                    let stage = match e {
                        Rejected::Inner(BackendError::Refused(_)) => "preflight refused",
                        _ => "preflight",
                    };
                    (requests_of(&e), describe(e), stage)
                })?;
            params.insert(
                "preflight".into(),
                serde_json::to_value(&pre).unwrap_or_default(),
            );
            let report = slot
                .breaker
                .call(
                    timeout,
                    backend::perform(slot.backend.as_ref(), &target, &op, &ctx),
                    refusal_only,
                )
                .await
                .map_err(|e| (requests_of(&e), describe(e), "act"))?;
            let verification = slot
                .breaker
                .call(
                    timeout,
                    slot.backend.verify(&target, &op, &report, &ctx),
                    refusal_only,
                )
                .await;
            let (verified, vtext) = match verification {
                Ok(v) => (v.ok, v.detail),
                Err(e) => {
                    let requests = requests_of(&e);
                    if !requests.is_empty() {
                        params.insert("requests".into(), json!(requests));
                    }
                    (false, format!("could not verify: {}", describe(e)))
                }
            };
            Ok((report, vtext, verified))
        }
        .await;

        // Whatever happened, the backend's status may have changed.
        self.status_cache.forget(svc.name());
        let name = svc.name();
        let mut change = Tx::new();
        let action = req.action.name();
        let mut refusal = None;
        let (status, audit_outcome, message) = match result {
            Ok((report, vtext, verified)) => {
                params.insert(
                    "report".into(),
                    serde_json::to_value(&report).unwrap_or_default(),
                );
                params.insert(
                    "verification".into(),
                    json!({ "ok": verified, "detail": vtext }),
                );
                let revs = match (&report.from_revision, &report.to_revision) {
                    (Some(f), Some(t)) => format!(" {f} → {t}"),
                    (None, Some(t)) => format!(" to {t}"),
                    _ => String::new(),
                };
                if verified && action == "rollback" {
                    change = self.record_rollback(change, svc, req);
                }
                if verified {
                    let m = Message::new(
                        Severity::Success,
                        format!("{} {name}{revs}", past_tense(action)),
                    )
                    .text(&report.summary)
                    .field("By", req.actor.display_name.clone())
                    .field("Reason", or_dash(&req.reason))
                    .field("Verified", vtext.clone());
                    (Status::Succeeded, AuditOutcome::Succeeded, m)
                } else {
                    let m = Message::new(Severity::Critical, format!("{} {name}{revs}: NOT verified", past_tense(action)))
                        .text(format!("{}\nThe backend acted but the service did not reach the promised state: {vtext}.\nCheck it by hand: `/status {name}`.", report.summary))
                        .field("By", req.actor.display_name.clone());
                    (Status::Failed, AuditOutcome::Failed, m)
                }
            }
            Err((_, error, "preflight refused")) => {
                // `failed_at` stays as it was before refusals had a reason.
                params.insert("failed_at".into(), json!("preflight"));
                params.insert("refusal".into(), json!(Refusal::Preflight.audit_name()));
                params.insert("error".into(), json!(error));
                self.telemetry
                    .count_refusal(action, Refusal::Preflight.audit_name());
                refusal = Some(Refusal::Preflight);
                // A rollback that will not happen stays loud.
                let sev = if action == "rollback" {
                    Severity::Critical
                } else {
                    Severity::Warning
                };
                let m = Message::new(sev, format!("{} of {name} refused", capitalize(action)))
                    .text(format!("{error}\nNothing was changed."))
                    .field("By", req.actor.display_name.clone());
                (Status::Refused, AuditOutcome::Refused, m)
            }
            Err((requests, error, stage)) => {
                params.insert("failed_at".into(), json!(stage));
                // The audit's `error` keeps the requests after the message.
                let recorded = match requests.is_empty() {
                    true => error.clone(),
                    false => format!("{error}\nRequests: {}", requests.join("; ")),
                };
                params.insert("error".into(), json!(recorded));
                if !requests.is_empty() {
                    params.insert("requests".into(), json!(requests));
                }
                let changed = if stage == "preflight" {
                    "Nothing was changed."
                } else {
                    "The service may be unchanged or partly changed."
                };
                let by_hand = by_hand_hint(action, name, svc.backend.as_ref(), slot.backend.kind());
                let m = Message::new(
                    Severity::Critical,
                    format!("{} of {name} failed", capitalize(action)),
                )
                .text(format!("{error}\n{changed} {by_hand}"))
                .field("By", req.actor.display_name.clone());
                (Status::Failed, AuditOutcome::Failed, m)
            }
        };
        let detail = message.plain();
        // The result and the end of `inflight` land together.
        let change = change.remove(Table::Inflight, corr);
        let result = self
            .record_with(
                req,
                corr,
                Some(name),
                params.clone(),
                audit_outcome,
                detail.clone(),
                change.clone(),
            )
            .await;
        let message = match result {
            Ok(entry) => message
                .context(format!("correlation {corr}"))
                .context(format!("audit #{}", entry.seq)),
            Err(e) => {
                // The backend acted: say what happened, and keep trying to
                // record it rather than pretend nothing was done.
                tracing::error!(error = %e, correlation = %corr, "the result of an action could not be recorded");
                let record =
                    self.record_of(req, corr, Some(name), params.clone(), audit_outcome, detail);
                self.record_later(record, change);
                message
                    .text(format!("⚠ rollbot's audit log could not record this result yet ({e}); it keeps trying, and the next start reports the action if it never can."))
                    .context(format!("correlation {corr}"))
            }
        };
        if params.contains_key("break_glass") && status != Status::Refused {
            let warn = Message::new(
                Severity::Critical,
                format!(
                    "Break-glass: {} promoted {name} through a freeze",
                    req.actor.display_name
                ),
            )
            .text(
                params
                    .get("freeze")
                    .and_then(|v| v.as_str())
                    .unwrap_or_default(),
            )
            .field("Reason", req.reason.clone())
            .context(format!("correlation {corr}"));
            self.announce(svc, warn, true, &[]);
        }
        // An answered prompt's follow-up goes in the prompt's thread.
        let thread = via_prompt.map(|p| p.messages.as_slice()).unwrap_or(&[]);
        let announced = self.announce(svc, message.clone(), action == "rollback", thread);
        Ok(Outcome {
            status,
            message,
            correlation_id: corr.into(),
            prompt: None,
            announced,
            repeat: false,
            refusal,
        })
    }

    /// Posts to the deploy channel (and the incident channel for rollbacks)
    /// without waiting for chat; in `thread` (a prompt's messages) where the
    /// deploy channel has one.
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

    fn announce(
        &self,
        svc: &ServiceConfig,
        msg: Message,
        incident: bool,
        thread: &[crate::chat::MessageRef],
    ) -> bool {
        let mut sent = false;
        if let Some(ch) = &svc.deploy_channel {
            self.notifier
                .reply_or_post_detached(thread.to_vec(), ch.as_ref().clone(), msg.clone());
            sent = true;
        }
        if incident {
            if let Some(ch) = svc
                .incident_channel
                .as_ref()
                .filter(|c| Some(*c) != svc.deploy_channel.as_ref())
            {
                self.notifier.post_detached(ch.as_ref().clone(), msg);
            }
        }
        sent
    }

    /// The two-person rule: a critical service's promote waits for someone else.
    async fn ask_second_person(
        &self,
        req: &Request,
        corr: &str,
        svc: &ServiceConfig,
    ) -> anyhow::Result<Outcome> {
        let full = matches!(req.action, Action::Promote { full: true, .. });
        let question = format!(
            "{} asks to promote {}{}. {} is critical: a second person with the approver role must approve.",
            req.actor.display_name, svc.name(), if full { " fully" } else { " one step" }, svc.name()
        );
        let prompt = Prompt {
            id: new_id(),
            service: svc.name().into(),
            title: format!("Approve promotion of {}?", svc.name()),
            question,
            requested_by: req.actor.clone(),
            reason: req.reason.clone(),
            approve: Choice {
                label: "Approve".into(),
                action: Some(req.action.clone()),
                style: ButtonStyle::Primary,
            },
            reject: Choice {
                label: "Reject".into(),
                action: None,
                style: ButtonStyle::Danger,
            },
            allowed_roles: vec![Role::Approver, Role::Admin],
            other_person_required: true,
            promotes: true,
            created: self.clock.now(),
            expires: self.clock.now()
                + chrono::Duration::from_std(self.config.engine.prompt_ttl.0)?,
            channel: svc.deploy_channel.as_ref().map(|c| c.as_ref().clone()),
            thread: vec![],
            messages: vec![],
            correlation_id: corr.into(),
            state: PromptState::Open,
            escalated: 0,
        };
        self.post_prompt(prompt, req).await
    }

    /// Stores a prompt, audits it as pending and posts it with its buttons.
    pub async fn post_prompt(&self, mut prompt: Prompt, req: &Request) -> anyhow::Result<Outcome> {
        self.prompts.save(&prompt).await?;
        let mut params = BTreeMap::new();
        params.insert("prompt".into(), json!(prompt.id));
        params.insert(
            "on_approve".into(),
            serde_json::to_value(&prompt.approve.action)?,
        );
        params.insert(
            "on_reject".into(),
            serde_json::to_value(&prompt.reject.action)?,
        );
        self.record(
            req,
            &prompt.correlation_id,
            Some(&prompt.service),
            params,
            AuditOutcome::Pending,
            prompt.question.clone(),
        )
        .await?;
        if let Some(ch) = &prompt.channel {
            prompt.messages = self
                .notifier
                .reply_or_post(&prompt.thread, ch, &prompt.message())
                .await;
            self.prompts.save(&prompt).await?;
        }
        let announced = !prompt.messages.is_empty();
        let message = Message::new(
            Severity::Info,
            format!("Waiting for approval: {}", prompt.title),
        )
        .text(&prompt.question)
        .context(format!("prompt {}", prompt.id))
        .context(format!("correlation {}", prompt.correlation_id));
        Ok(Outcome {
            status: Status::Pending,
            message,
            correlation_id: prompt.correlation_id.clone(),
            prompt: Some(prompt.id.clone()),
            announced,
            repeat: false,
            refusal: None,
        })
    }

    /// Approve or reject a prompt: once, by someone allowed, not frozen.
    async fn answer(
        &self,
        req: &Request,
        corr: &str,
        id: &str,
        approve: bool,
    ) -> anyhow::Result<Outcome> {
        let Some(p) = self.prompts.get(id).await? else {
            return self.refuse(req, corr, None, Refusal::UnknownPrompt, "Unknown prompt", format!("There is no prompt `{id}`; the button may be forged or from another rollbot.")).await;
        };
        let svc = match self.resolve(Some(&p.service)) {
            Ok(s) => s,
            Err(t) => {
                return self
                    .refuse(
                        req,
                        corr,
                        None,
                        Refusal::UnknownService,
                        "Unknown service",
                        t,
                    )
                    .await
            }
        };
        if let PromptState::Answered { by, choice, at } = &p.state {
            return Ok(plain_refusal(
                Refusal::AlreadyAnswered,
                Severity::Info,
                "Already answered",
                &format!(
                    "{choice} by {} at {}; nothing more to do.",
                    by.display_name,
                    at.format("%H:%M:%S UTC")
                ),
                corr,
            )
            .with_prompt(&p.id));
        }
        let now = self.clock.now();
        if now >= p.expires {
            // Show it on the prompt itself, so nobody else presses a dead button.
            self.notifier
                .update(&p.messages, &p.expired_message())
                .await;
            return self
                .refuse(
                    req,
                    corr,
                    Some(svc),
                    Refusal::Expired,
                    "Prompt expired",
                    format!(
                        "This prompt expired at {}. Ask again, for example `/promote {}`.",
                        p.expires.format("%Y-%m-%d %H:%M UTC"),
                        p.service
                    ),
                )
                .await;
        }
        let roles = self
            .roles
            .roles_on(&req.actor, &svc.environment, svc.name());
        if !roles.iter().any(|r| p.allowed_roles.contains(r)) {
            let names: Vec<&str> = p.allowed_roles.iter().map(|r| r.name()).collect();
            return self.refuse(req, corr, Some(svc), Refusal::NotAllowed, "Not allowed to answer", format!("Answering this prompt needs the role {} on {}. The prompt stays open for someone who holds it.", names.join(" or "), svc.name())).await;
        }
        if p.other_person_required && req.actor.qualified_id() == p.requested_by.qualified_id() {
            return self.refuse(req, corr, Some(svc), Refusal::TwoPerson, "Second person needed", format!("You asked for this promotion of {}; a different person must approve it. The prompt stays open.", svc.name())).await;
        }
        let choice = p.choice(approve).clone();
        if p.promotes && approve {
            if let Some(block) = self
                .freezes
                .promotion_block(&svc.environment, svc.name(), now)
                .await?
            {
                return self.refuse(req, corr, Some(svc), Refusal::Frozen, "Approval refused: frozen", format!("{block}.\nThe prompt stays open; approve it after the freeze, or an admin can `/promote {} force <reason>`.", svc.name())).await;
            }
        }
        let p = match self.prompts.answer(id, &req.actor, approve, now).await? {
            Some(Answer::Accepted(p)) => p,
            Some(Answer::AlreadyAnswered(p)) => {
                let text = match &p.state {
                    PromptState::Answered { by, choice, at } => format!(
                        "{choice} by {} at {}; nothing more to do.",
                        by.display_name,
                        at.format("%H:%M:%S UTC")
                    ),
                    PromptState::Open => "answered".into(),
                };
                return Ok(plain_refusal(
                    Refusal::AlreadyAnswered,
                    Severity::Info,
                    "Already answered",
                    &text,
                    corr,
                )
                .with_prompt(&p.id));
            }
            None => {
                return self
                    .refuse(
                        req,
                        corr,
                        Some(svc),
                        Refusal::UnknownPrompt,
                        "Unknown prompt",
                        format!("Prompt `{id}` disappeared."),
                    )
                    .await
            }
        };
        self.notifier.update(&p.messages, &p.message()).await;
        let mut params = BTreeMap::new();
        params.insert("prompt".into(), json!(p.id));
        params.insert("choice".into(), json!(choice.label));
        let answer_req = Request {
            reason: if req.reason.is_empty() {
                p.reason.clone()
            } else {
                req.reason.clone()
            },
            ..req.clone()
        };
        self.record(
            &answer_req,
            &p.correlation_id,
            Some(svc.name()),
            params,
            AuditOutcome::Succeeded,
            format!("{} answered {}", req.actor.display_name, choice.label),
        )
        .await?;
        match choice.action {
            None => {
                let m = Message::new(Severity::Info, format!("{}: {}", choice.label, p.title))
                    .text(format!(
                        "{} chose {}; nothing else is done.",
                        req.actor.display_name, choice.label
                    ));
                self.announce(svc, m.clone(), false, &p.messages);
                Ok(Outcome {
                    status: Status::Succeeded,
                    message: m,
                    correlation_id: p.correlation_id.clone(),
                    prompt: Some(p.id.clone()),
                    announced: svc.deploy_channel.is_some(),
                    repeat: false,
                    refusal: None,
                })
            }
            Some(action) => {
                let follow = Request {
                    actor: req.actor.clone(),
                    action,
                    service: Some(p.service.clone()),
                    reason: answer_req.reason.clone(),
                    idempotency_key: Some(format!(
                        "prompt:{}:{}",
                        p.id,
                        if approve { "approve" } else { "reject" }
                    )),
                    correlation_id: Some(p.correlation_id.clone()),
                };
                let mut o = self
                    .act(&follow, &p.correlation_id, svc, BTreeMap::new(), Some(&p))
                    .await?;
                // The answer is counted as approve/reject by `execute`; the
                // action it ran is counted here, so dashboards see promotes.
                if !o.repeat {
                    self.telemetry
                        .count_action(follow.action.name(), status_name(o.status));
                }
                o.prompt = Some(p.id.clone());
                Ok(o)
            }
        }
    }

    async fn freeze_action(
        &self,
        req: &Request,
        corr: &str,
        scope: &Scope,
    ) -> anyhow::Result<Outcome> {
        let covered: Vec<&ServiceConfig> = self
            .config
            .services
            .iter()
            .filter(|s| scope.covers(&s.environment, s.name()))
            .collect();
        if covered.is_empty() {
            let names = self.config.service_names();
            let near = crate::config::closest(&scope.to_string(), names.iter().copied());
            let hint = match near.first() {
                Some(n) => format!("did you mean {n}?"),
                None => format!("known services: {}", names.join(", ")),
            };
            return self.refuse(req, corr, None, Refusal::UnknownService, "Scope matches no service", format!("`{scope}` covers no service; {hint} A scope is a service, a glob such as `prod/*`, or `all`.")).await;
        }
        for s in &covered {
            if let Err(r) =
                self.roles
                    .check(&req.actor, Permission::Freeze, &s.environment, s.name())
            {
                return self
                    .refuse(
                        req,
                        corr,
                        None,
                        Refusal::NotAllowed,
                        "Not allowed",
                        r.to_string(),
                    )
                    .await;
            }
        }
        self.once(req, corr, self.apply_freeze(req, corr, scope, &covered))
            .await
    }

    /// Records and applies an authorized freeze or unfreeze.
    async fn apply_freeze(
        &self,
        req: &Request,
        corr: &str,
        scope: &Scope,
        covered: &[&ServiceConfig],
    ) -> anyhow::Result<Outcome> {
        let now = self.clock.now();
        let names: Vec<&str> = covered.iter().map(|s| s.name()).collect();
        let service_label = if covered.len() == 1 {
            Some(covered[0].name())
        } else {
            None
        };
        let mut params = BTreeMap::new();
        params.insert("scope".into(), json!(scope.to_string()));
        params.insert("services".into(), json!(names));
        let freeze = match &req.action {
            Action::Freeze { duration, .. } => Some(AdHocFreeze {
                scope: scope.clone(),
                author: req.actor.clone(),
                reason: req.reason.clone(),
                start: now,
                until: now + chrono::Duration::from_std(*duration)?,
            }),
            _ => None,
        };
        if let Some(f) = &freeze {
            params.insert("until".into(), json!(f.until.to_rfc3339()));
        }
        self.record(
            req,
            corr,
            service_label,
            params.clone(),
            AuditOutcome::Requested,
            String::new(),
        )
        .await?;
        let unfrozen = |f: &AdHocFreeze| {
            Message::new(Severity::Success, format!("Unfrozen: {scope}")).text(format!(
                "The freeze by {} ({}) is lifted; promotions of {} are allowed again.",
                f.author.display_name,
                or_dash(&f.reason),
                names.join(", ")
            ))
        };
        // The freeze and its `succeeded` entry land in one commit.
        let (message, entry) = match freeze {
            Some(f) => {
                let m = Message::new(Severity::Warning, format!("Frozen: {scope}"))
                    .text(format!(
                        "Promotions of {} are refused until {} ({}). Rollbacks are not affected.",
                        names.join(", "),
                        f.until.format("%Y-%m-%d %H:%M UTC"),
                        human_duration((f.until - f.start).to_std().unwrap_or_default())
                    ))
                    .field("By", req.actor.display_name.clone())
                    .field("Reason", or_dash(&req.reason));
                let rec = self.record_of(
                    req,
                    corr,
                    service_label,
                    params,
                    AuditOutcome::Succeeded,
                    m.plain(),
                );
                let mut entries = self.freezes.add(&f, vec![rec]).await?;
                self.telemetry.audit_appends.inc();
                (m, entries.remove(0))
            }
            None => {
                let removed = self
                    .freezes
                    .remove(scope, |f| {
                        vec![self.record_of(
                            req,
                            corr,
                            service_label,
                            params.clone(),
                            AuditOutcome::Succeeded,
                            unfrozen(f).plain(),
                        )]
                    })
                    .await?;
                match removed {
                    Some((f, mut entries)) => {
                        self.telemetry.audit_appends.inc();
                        (unfrozen(&f), entries.remove(0))
                    }
                    None => {
                        let others: Vec<String> = self
                            .freezes
                            .active_ad_hoc(now)
                            .await?
                            .iter()
                            .filter(|f| {
                                covered
                                    .iter()
                                    .any(|s| f.scope.covers(&s.environment, s.name()))
                            })
                            .map(|f| format!("`{}` by {}", f.scope, f.author.display_name))
                            .collect();
                        let text = if others.is_empty() {
                            format!("There is no freeze on `{scope}`.")
                        } else {
                            format!("There is no freeze on exactly `{scope}`; these cover it: {}. Lift one with `/unfreeze <that scope>`.", others.join(", "))
                        };
                        return self
                            .refuse_recorded_scope(
                                req,
                                corr,
                                service_label,
                                params,
                                Refusal::NotFrozen,
                                "Nothing to unfreeze",
                                text,
                            )
                            .await;
                    }
                }
            }
        };
        let message = message
            .context(format!("correlation {corr}"))
            .context(format!("audit #{}", entry.seq));
        let mut channels: Vec<String> = covered
            .iter()
            .filter_map(|s| s.deploy_channel.as_ref().map(|c| c.as_ref().clone()))
            .collect();
        channels.sort();
        channels.dedup();
        for ch in &channels {
            self.notifier.post_detached(ch.clone(), message.clone());
        }
        Ok(Outcome {
            status: Status::Succeeded,
            message,
            correlation_id: corr.into(),
            prompt: None,
            announced: !channels.is_empty(),
            repeat: false,
            refusal: None,
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

    /// The latest successful rollback of `service`, if any.
    pub async fn recent_rollback(&self, service: &str) -> Option<RecentRollback> {
        self.store
            .get(Table::Settings, &format!("rollback:{service}"))
            .await
            .ok()?
    }

    /// Until when automatic promotion of `service` is held after a rollback.
    pub async fn cooldown_until(&self, service: &str) -> Option<chrono::DateTime<chrono::Utc>> {
        let svc = self.config.service(service)?;
        let until = self.recent_rollback(service).await?.at
            + chrono::Duration::from_std(svc.cooldown.0).ok()?;
        (until > self.clock.now()).then_some(until)
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

    /// Appends `record` (with `tx`) in the background, retrying for a few
    /// minutes while the store does not answer.
    fn record_later(&self, record: Record, tx: Tx) {
        let Some(me) = self.me.upgrade() else { return };
        tokio::spawn(async move {
            let mut wait = Duration::from_secs(1);
            for _ in 0..8 {
                let t = Tx {
                    records: vec![record.clone()],
                    writes: tx.writes.clone(),
                };
                match me.store.apply(t).await {
                    Ok(_) => {
                        me.telemetry.audit_appends.inc();
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, correlation = %record.correlation_id, "audit entry still not recorded; retrying")
                    }
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(60));
            }
            tracing::error!(correlation = %record.correlation_id, "gave up recording an audit entry; the next start reports the action");
        });
    }

    /// Tells every deploy channel that the store failed its check at start.
    pub async fn announce_damaged_store(&self, what: &str) {
        let m = Message::new(Severity::Critical, "rollbot's store is damaged: actions are refused")
            .text(format!("{what}.\nrollbot started but acts on nothing until its store is restored from a backup. Roll back by hand on the platform meanwhile; `/readyz` says the same."));
        let mut channels: Vec<String> = self
            .config
            .services
            .iter()
            .filter_map(|s| s.deploy_channel.as_ref().map(|c| c.as_ref().clone()))
            .collect();
        channels.sort();
        channels.dedup();
        for ch in channels {
            self.notifier.post(&ch, &m).await;
        }
    }

    /// Finds a configured service by name or `env/name`.
    pub fn resolve(&self, name: Option<&str>) -> Result<&ServiceConfig, String> {
        let names = self.config.service_names();
        let Some(name) = name.filter(|n| !n.is_empty()) else {
            return Err(format!(
                "Name a service; known services: {}.",
                names.join(", ")
            ));
        };
        self.config.service(name).ok_or_else(|| {
            let near = crate::config::closest(name, names.iter().copied());
            match near.first() {
                Some(n) => format!("There is no service `{name}`; did you mean {n}?"),
                None => format!(
                    "There is no service `{name}`; known services: {}.",
                    names.join(", ")
                ),
            }
        })
    }

    /// Appends an audit entry for this request.
    pub async fn record(
        &self,
        req: &Request,
        corr: &str,
        service: Option<&str>,
        params: BTreeMap<String, serde_json::Value>,
        outcome: AuditOutcome,
        detail: String,
    ) -> anyhow::Result<crate::audit::Entry> {
        self.record_with(req, corr, service, params, outcome, detail, Tx::new())
            .await
    }

    /// Appends an audit entry for this request together with `change`
    /// (state that must not exist without its entry, written after it).
    #[allow(clippy::too_many_arguments)]
    pub async fn record_with(
        &self,
        req: &Request,
        corr: &str,
        service: Option<&str>,
        params: BTreeMap<String, serde_json::Value>,
        outcome: AuditOutcome,
        detail: String,
        mut change: Tx,
    ) -> anyhow::Result<crate::audit::Entry> {
        let record = self.record_of(req, corr, service, params, outcome, detail);
        change.records.insert(0, record);
        let n = change.records.len();
        let mut entries = self.store.apply(change).await?;
        self.telemetry.audit_appends.inc_by(n as u64);
        Ok(entries.remove(0))
    }

    /// The audit record of this request at one step.
    fn record_of(
        &self,
        req: &Request,
        corr: &str,
        service: Option<&str>,
        mut params: BTreeMap<String, serde_json::Value>,
        outcome: AuditOutcome,
        detail: String,
    ) -> Record {
        match &req.action {
            Action::Rollback { to: Some(t) } => {
                params.entry("to".into()).or_insert(json!(t));
            }
            Action::Promote { full, force } => {
                params.entry("full".into()).or_insert(json!(full));
                params.entry("force".into()).or_insert(json!(force));
            }
            Action::Freeze { duration, .. }
            | Action::Automation {
                enabled: false,
                duration,
            } => {
                params
                    .entry("duration_secs".into())
                    .or_insert(json!(duration.as_secs()));
            }
            _ => {}
        }
        Record {
            time: self.clock.now(),
            actor: req.actor.clone(),
            action: req.action.name().into(),
            service: service.map(str::to_string),
            parameters: params,
            outcome,
            reason: req.reason.clone(),
            detail,
            correlation_id: corr.into(),
            idempotency_key: req.idempotency_key.clone(),
        }
    }

    /// Appends any record durably and counts it.
    pub async fn append(&self, record: Record) -> anyhow::Result<crate::audit::Entry> {
        let entry = self.store.append(record).await?;
        self.telemetry.audit_appends.inc();
        Ok(entry)
    }

    async fn refuse(
        &self,
        req: &Request,
        corr: &str,
        svc: Option<&ServiceConfig>,
        why: Refusal,
        title: &str,
        text: String,
    ) -> anyhow::Result<Outcome> {
        let service = svc.map(|s| s.name()).or(req.service.as_deref());
        self.refuse_recorded_scope(req, corr, service, BTreeMap::new(), why, title, text)
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn refuse_recorded_scope(
        &self,
        req: &Request,
        corr: &str,
        service: Option<&str>,
        params: BTreeMap<String, serde_json::Value>,
        why: Refusal,
        title: &str,
        text: String,
    ) -> anyhow::Result<Outcome> {
        self.refuse_with(req, corr, service, params, why, title, text, Tx::new())
            .await
    }

    /// A refusal recorded together with `change`.
    #[allow(clippy::too_many_arguments)]
    async fn refuse_with(
        &self,
        req: &Request,
        corr: &str,
        service: Option<&str>,
        mut params: BTreeMap<String, serde_json::Value>,
        why: Refusal,
        title: &str,
        text: String,
        change: Tx,
    ) -> anyhow::Result<Outcome> {
        params.insert("refusal".into(), json!(why.audit_name()));
        let entry = self
            .record_with(
                req,
                corr,
                service,
                params,
                AuditOutcome::Refused,
                text.clone(),
                change,
            )
            .await?;
        self.telemetry
            .count_refusal(req.action.name(), why.audit_name());
        let what = match service {
            Some(s) => format!("{}: {} {s}", title, req.action.name()),
            None => format!("{}: {}", title, req.action.name()),
        };
        let m = Message::new(Severity::Warning, what)
            .text(text)
            .context(format!("correlation {corr}"))
            .context(format!("audit #{}", entry.seq));
        Ok(Outcome {
            status: Status::Refused,
            message: m,
            correlation_id: corr.into(),
            prompt: None,
            announced: false,
            repeat: false,
            refusal: Some(why),
        })
    }
}

impl Outcome {
    fn with_prompt(mut self, id: &str) -> Self {
        self.prompt = Some(id.into());
        self
    }
}

fn status_name(s: Status) -> &'static str {
    match s {
        Status::Succeeded => "succeeded",
        Status::Failed => "failed",
        Status::Refused => "refused",
        Status::Pending => "pending",
    }
}

fn plain_outcome(status: Status, sev: Severity, title: &str, text: &str, corr: &str) -> Outcome {
    Outcome {
        status,
        message: Message::new(sev, title)
            .text(text)
            .context(format!("correlation {corr}")),
        correlation_id: corr.into(),
        prompt: None,
        announced: false,
        repeat: false,
        refusal: None,
    }
}

/// A refusal that is not audited (nothing was asked of a service yet).
fn plain_refusal(why: Refusal, sev: Severity, title: &str, text: &str, corr: &str) -> Outcome {
    Outcome {
        status: Status::Refused,
        message: Message::new(sev, title)
            .text(text)
            .context(format!("correlation {corr}")),
        correlation_id: corr.into(),
        prompt: None,
        announced: false,
        repeat: false,
        refusal: Some(why),
    }
}

fn describe(e: Rejected<BackendError>) -> String {
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

/// The requests a failed backend call sent, for the audit entry.
fn requests_of(e: &Rejected<BackendError>) -> Vec<String> {
    match e {
        Rejected::Inner(e) => e.requests().to_vec(),
        _ => Vec::new(),
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
        other => capitalize(other),
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

fn or_dash(s: &str) -> String {
    if s.trim().is_empty() {
        "—".into()
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests;
