//! The action engine: the one function every action goes through, whoever
//! asks (a chat command, a button, the controller, the HTTP API), and the
//! only caller of rollback backends.
//!
//! The order is fixed (ARCHITECTURE.md lists the same steps) and each step
//! has a reason:
//! 1. authorize: deny by default; a refusal names the missing permission
//!    and the roles that grant it (`authorize`).
//! 2. freeze check: promotions only, rollbacks are never frozen; `force`
//!    with a reason by an admin passes as break-glass (`freeze.rs`).
//!    2b. migration guard: rollbacks only; one past an irreversible or
//!    contract migration is refused with roll-forward advice, and `force`
//!    (admins, a reason) becomes a prompt for a second person
//!    (`migration_guard.rs`).
//! 3. two-person rule: a critical service's promote becomes a prompt for
//!    a different person (`approval.rs`).
//! 4. idempotency: a retried request acts once and gets the first outcome
//!    (`once`).
//! 5. audit `requested`, then the `inflight` record: two durable commits,
//!    in this order, before any side effect (`act.rs` holds steps 5–9, one
//!    function each).
//! 6. lock: one action per service at a time, bounded wait.
//! 7. preflight → act → verify, each with a time limit through the
//!    backend's circuit breaker; a preflight refusal changes nothing.
//! 8. audit the result and drop the `inflight` record, in one commit.
//! 9. notify, in the chat bulkhead, never holding up the action.
//!
//! Every refusal carries a [`Refusal`] and goes through `refusal.rs`.

mod act;
mod approval;
mod automation;
mod cascade;
mod comms;
mod dependents;
mod dry_run;
mod escalation;
pub(crate) mod fallback;
mod fencing;
mod freeze;
mod idempotency;
mod lock;
mod maintenance;
mod migration_guard;
pub(crate) mod prompt;
pub use stuck::Stuck;
mod query;
mod record;
mod recovery;
mod refusal;
mod rollback_freeze;
mod status_page_ask;
mod stuck;
mod takeover;
mod verify_checks;

pub use automation::{AutomationOff, DEFAULT_AUTOMATION_OFF, MAX_AUTOMATION_OFF};
pub use fallback::{fallback_action_id, parse_fallback_id, FallbackTry};
pub use freeze::FreezeGate;
pub use prompt::{parse_action_id, Pick, Prompt, PromptState};
pub use query::audit_line;
pub use recovery::Inflight;
pub use refusal::Refusal;
pub use takeover::HANDOVER_GRACE;

use crate::audit::AuditStore;
use crate::backend::RollbackBackend;
use crate::breaker::{Breaker, BreakerStatus};
use crate::chat::{Message, Notifier, Severity};
use crate::clock::SharedClock;
use crate::config_file::{Config, ServiceConfig};
use crate::domain::{human_duration, Action, Actor};
use crate::freeze::Freezes;
use crate::roles::{Permission, RoleBook};
use crate::store::{Store, Table};
use crate::telemetry::{ActionKind, Telemetry};
use idempotency::{Claim, Idempotency};
use lock::ServiceLocks;
use prompt::Prompts;
use refusal::unaudited;
use serde::{Deserialize, Serialize};
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
    /// Check and show what would be sent, send nothing (`dry-run`).
    pub dry_run: bool,
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
            dry_run: false,
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
    pub fn dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    /// The request as a person would type it, to name it in messages (an
    /// idempotency key reused for another command says which).
    pub fn command_line(&self) -> String {
        let svc = self.service.as_deref().unwrap_or("");
        match &self.action {
            Action::Rollback { to, force } => format!(
                "/rollback {svc}{}{}",
                to.as_ref().map(|t| format!(" to {t}")).unwrap_or_default(),
                if *force { " force" } else { "" }
            ),
            Action::RollbackRelease { release } => format!("/rollback release {release}"),
            Action::RollbackInOrder { services } => {
                format!("/rollback {svc} with dependents ({})", services.join(" → "))
            }
            Action::Promote { full, force } => format!(
                "/promote {svc}{}{}",
                if *full { " full" } else { "" },
                if *force { " force" } else { "" }
            ),
            Action::Fallback { name, .. } => format!("/rollback {svc} fallback \"{name}\""),
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
            Action::Choose { prompt } => format!("choose the third option of prompt {prompt}"),
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

impl Outcome {
    /// An outcome that names no prompt, was not announced, is not a repeat
    /// and is no refusal.
    pub fn new(status: Status, message: Message, corr: &str) -> Outcome {
        Outcome {
            status,
            message,
            correlation_id: corr.into(),
            prompt: None,
            announced: false,
            repeat: false,
            refusal: None,
        }
    }
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
    /// Actions that may still send a change (up to the end of their act
    /// step): a stopping replica hands the Lease over when none is left.
    acting: tokio::sync::watch::Sender<usize>,
    closing: AtomicBool,
    /// Whether this replica may act (always, unless `[leader_election]`).
    pub leadership: crate::leader::Leadership,
    /// The status page and the pager, once started (`runtime.rs`).
    comms: std::sync::OnceLock<crate::incident_comms::Comms>,
    takeover: takeover::Takeover,
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
            acting: tokio::sync::watch::channel(0).0,
            closing: AtomicBool::new(false),
            leadership: crate::leader::Leadership::default(),
            comms: std::sync::OnceLock::new(),
            takeover: takeover::Takeover::default(),
        })
    }

    /// Starts sending incidents to the status page and the pager.
    pub fn attach_comms(&self, comms: crate::incident_comms::Comms) {
        let _ = self.comms.set(comms);
    }

    /// The status page and the pager, when configured.
    pub fn comms(&self) -> Option<&crate::incident_comms::Comms> {
        self.comms.get()
    }

    /// Queues an event for the status page and the pager, never waiting.
    pub fn tell_comms(&self, event: crate::incident_comms::IncidentEvent) {
        if let Some(c) = self.comms.get() {
            c.send(event);
        }
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
            Ok(o) if req.dry_run => Ok(dry_run::refused_as_dry_run(&req, o)),
            other => other,
        };
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) if fencing::fenced_store_error(&e).is_some() => unaudited(
                Refusal::Standby,
                Severity::Warning,
                "this rollbot replica is no longer the leader",
                &format!("{e}. Nothing more was sent or recorded here; send the command to the leader (the Service routes to it once it is ready) or retry in a few seconds."),
                &correlation,
            ),
            Err(e) => {
                tracing::error!(error = %e, correlation = %correlation, "action could not be recorded");
                // Every path that reaches a backend records its result
                // itself (see `act_once`); an error here came before that.
                unaudited(
                    Refusal::StoreUnavailable,
                    Severity::Critical,
                    &format!("{} could not be recorded", req.action.name()),
                    &format!("rollbot's store did not record the request ({e}), so no backend was asked to act. Check `/readyz`, and retry when the store answers, or act on the platform by hand."),
                    &correlation,
                )
            }
        };
        if outcome.repeat || req.dry_run {
            // A replayed outcome is not a new action, nor is a dry run.
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

    /// The steps listed at the top of this file, in their order.
    async fn run(&self, req: &Request, corr: &str) -> anyhow::Result<Outcome> {
        if self.may_need_recovery() {
            self.recover_on_takeover().await;
        }
        if let Some(refused) = self.cannot_act(corr) {
            return Ok(refused);
        }
        match &req.action {
            Action::Approve { prompt } => {
                return self.answer(req, corr, prompt, Pick::Approve).await
            }
            Action::Reject { prompt } => return self.answer(req, corr, prompt, Pick::Reject).await,
            Action::Choose { prompt } => return self.answer(req, corr, prompt, Pick::Other).await,
            Action::Freeze { scope, .. } | Action::Unfreeze { scope } => {
                return self.freeze_action(req, corr, scope).await
            }
            Action::RollbackRelease { release } => {
                return self
                    .once(req, corr, self.rollback_release(req, corr, release))
                    .await
            }
            Action::RollbackInOrder { services } => {
                return self
                    .once(req, corr, self.rollback_in_order(req, corr, services, None))
                    .await
            }
            Action::Query {
                view: crate::domain::View::Status,
            } => return self.status(req).await,
            Action::Query {
                view: crate::domain::View::Audit,
            } => return self.audit_view(req, 10).await,
            _ => {}
        }
        let svc = match self.service_of(req, corr, req.service.as_deref()).await? {
            Ok(s) => s,
            Err(refused) => return Ok(refused),
        };
        // 1. authorize
        if let Some(refused) = self.authorize(req, corr, svc).await? {
            return Ok(refused);
        }
        if let Action::Automation { .. } = &req.action {
            return self
                .once(req, corr, self.automation_action(req, corr, svc))
                .await;
        }
        // 2. freeze check
        let mut params = BTreeMap::new();
        if let Some(refused) = self.check_freeze(req, corr, svc, &mut params).await? {
            return Ok(refused);
        }
        // A fallback must be one of the service's, a button's still current.
        if let Some(refused) = self.fallback_gate(req, corr, svc).await? {
            return Ok(refused);
        }
        // 2b. migration guard
        if let Some(stopped) = self.migration_guard(req, corr, svc, &mut params).await? {
            return Ok(stopped);
        }
        // A dry run ends here: the backend's preflight and plan, one
        // audit entry, nothing sent (dry_run.rs).
        if req.dry_run {
            return self.dry_run(req, corr, svc, params).await;
        }
        // A person's rollback that could strand services depending on
        // this one shows the plan and asks first (dependents.rs).
        if let Some(moved) = self.dependents_moved_after(req, svc).await? {
            return self
                .once(req, corr, self.ask_rollback_plan(req, corr, svc, moved))
                .await;
        }
        // 3. two-person rule
        if matches!(req.action, Action::Promote { .. }) && svc.critical {
            return self.ask_second_person(req, corr, svc).await;
        }
        // 4.–9. idempotency, then the backend's steps
        self.act(req, corr, svc, params, None).await
    }

    /// The configured service `name` names, or the refusal that says it is
    /// unknown (with the closest name).
    async fn service_of(
        &self,
        req: &Request,
        corr: &str,
        name: Option<&str>,
    ) -> anyhow::Result<Result<&ServiceConfig, Outcome>> {
        match self.resolve(name) {
            Ok(s) => Ok(Ok(s)),
            Err(text) => self
                .refuse(
                    req,
                    corr,
                    None,
                    Refusal::UnknownService,
                    "Unknown service",
                    text,
                )
                .await
                .map(Err),
        }
    }

    /// Refuses every request while this replica stands by, its store is
    /// damaged, or it is shutting down.
    fn cannot_act(&self, corr: &str) -> Option<Outcome> {
        if !self.leadership.is_leader() {
            let view = self.leadership.view();
            return Some(unaudited(
                Refusal::Standby,
                Severity::Warning,
                "this rollbot replica is standing by",
                &format!("{}. Nothing was done; send the command to the leader (the Service routes to it once it is ready) or retry in a few seconds.", view.describe()),
                corr,
            ));
        }
        if let Some(what) = self.store.health.damaged() {
            return Some(unaudited(
                Refusal::StoreDamaged,
                Severity::Critical,
                "rollbot's store is damaged",
                &format!("{what}. rollbot does not act on a store it cannot trust: nothing was done. Act on the platform by hand, and restore the store from a backup (see `/readyz`)."),
                corr,
            ));
        }
        if self.closing.load(Ordering::SeqCst) {
            return Some(unaudited(
                Refusal::ShuttingDown,
                Severity::Warning,
                "rollbot is shutting down",
                "This instance is stopping and takes no new actions; retry in a moment.",
                corr,
            ));
        }
        None
    }

    /// Step 1: the actor's roles on the service must carry the action's
    /// permission; the refusal names it and the roles that grant it.
    async fn authorize(
        &self,
        req: &Request,
        corr: &str,
        svc: &ServiceConfig,
    ) -> anyhow::Result<Option<Outcome>> {
        let perm = match &req.action {
            Action::Rollback { .. } => Permission::Rollback,
            Action::Fallback { .. } => Permission::Fallback,
            Action::Promote { .. } => Permission::Promote,
            Action::Pause | Action::Automation { .. } => Permission::Pause,
            _ => Permission::Resume,
        };
        let Err(r) = self
            .roles
            .check(&req.actor, perm, &svc.environment, svc.name())
        else {
            return Ok(None);
        };
        self.refuse(
            req,
            corr,
            Some(svc),
            Refusal::NotAllowed,
            "Not allowed",
            r.to_string(),
        )
        .await
        .map(Some)
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
                    let kept = self
                        .idem
                        .finish(k, &command, now, tx, o, o.status != Status::Refused)
                        .await;
                    match kept {
                        // Handed over as it stopped: the result is in the
                        // audit log, and the new leader keeps the key's
                        // outcome from it (`takeover.rs`).
                        Err(e) if fencing::fenced_store_error(&e).is_some() => {
                            tracing::warn!(correlation = %corr, error = %e, "the outcome of this idempotency key is kept by the new leader");
                        }
                        other => other?,
                    }
                }
                outcome
            }
        }
    }

    /// Posts to the deploy channel (and the incident channel for rollbacks)
    /// without waiting for chat; in `thread` (a prompt's messages) where the
    /// deploy channel has one.
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
}

fn status_name(s: Status) -> &'static str {
    match s {
        Status::Succeeded => "succeeded",
        Status::Failed => "failed",
        Status::Refused => "refused",
        Status::Pending => "pending",
    }
}

/// An outcome whose message is a title, a text and the correlation id.
fn plain_outcome(status: Status, sev: Severity, title: &str, text: &str, corr: &str) -> Outcome {
    let message = Message::new(sev, title)
        .text(text)
        .context(format!("correlation {corr}"));
    Outcome::new(status, message, corr)
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
