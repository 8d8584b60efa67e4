//! Flagger: rollbot as the human in the loop of a Flagger canary.
//!
//! Flagger drives the canary itself and asks webhooks before it moves on:
//! it POSTs `{name, namespace, phase, checksum, metadata}` to a
//! `confirm-rollout` or `confirm-promotion` hook every analysis interval
//! and goes on at the first 2xx; a `rollback` hook answering 2xx makes it
//! roll back. rollbot serves those hooks (`src/server/gates.rs`) and this
//! backend opens them, so a chat `/promote` or `/rollback` of a Flagger
//! canary is an ordinary engine action: authorized, freeze-checked,
//! audited, announced.
//!
//! The gates live in the store (tree `flagger_gates`, one record per
//! service), because an approval must survive a restart between the press
//! and Flagger's next call. A gate belongs to one checksum: Flagger's hash
//! of the canary's spec, so a new revision is a new question.

use super::factory::{BackendSettings, BuildContext, Built, CheckContext};
use super::poll::{poll_until, Look, Polled};
use super::*;
use crate::config::{ConfigError, HumanDuration};
use crate::store::{Change, Store, Table};
use chrono::{DateTime, Utc};
use std::sync::{Arc, OnceLock};

/// The sled tree holding every Flagger canary's gates.
pub const TREE: &str = "flagger_gates";

/// Flagger's webhook types rollbot answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Hook {
    ConfirmRollout,
    ConfirmPromotion,
    Rollback,
}

impl Hook {
    pub fn name(self) -> &'static str {
        match self {
            Hook::ConfirmRollout => "confirm-rollout",
            Hook::ConfirmPromotion => "confirm-promotion",
            Hook::Rollback => "rollback",
        }
    }
}

/// Flagger's `CanaryWebhookPayload`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Payload {
    pub name: String,
    pub namespace: String,
    #[serde(default)]
    pub phase: String,
    /// Hash of the canary's tracked spec: one per revision.
    #[serde(default)]
    pub checksum: String,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// Who opened a gate, through which action.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Opened {
    pub by: String,
    pub at: DateTime<Utc>,
    pub correlation_id: String,
}

/// One gate of one canary revision.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Gate {
    pub checksum: String,
    /// The prompt that asks people about this revision (confirm gates).
    pub prompt: Option<String>,
    pub opened: Option<Opened>,
    /// When Flagger first got the open answer.
    pub passed: Option<DateTime<Utc>>,
    /// Why the gate last refused an opened gate (a freeze), so the refusal
    /// is audited once, not every analysis interval.
    pub held: Option<String>,
}

/// Flagger's latest call, whatever the hook.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LastCall {
    pub hook: Hook,
    pub phase: String,
    pub checksum: String,
    pub at: DateTime<Utc>,
    /// The HTTP status rollbot answered.
    pub answer: u16,
}

/// Everything rollbot knows about one service's Flagger canary.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CanaryGates {
    /// `name.namespace`, as Flagger names it.
    pub canary: String,
    pub last: Option<LastCall>,
    pub confirm_rollout: Option<Gate>,
    pub confirm_promotion: Option<Gate>,
    pub rollback: Option<Gate>,
    /// The latest prompts the gates posted, with the revision each asked
    /// about, so approving an old prompt cannot open a newer revision.
    #[serde(default)]
    pub asked: Vec<Asked>,
}

/// A prompt a gate posted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Asked {
    pub prompt: String,
    pub hook: Hook,
    pub checksum: String,
}

/// How many past prompts are remembered per canary.
const ASKED_KEPT: usize = 16;

impl CanaryGates {
    pub fn gate(&self, hook: Hook) -> Option<&Gate> {
        match hook {
            Hook::ConfirmRollout => self.confirm_rollout.as_ref(),
            Hook::ConfirmPromotion => self.confirm_promotion.as_ref(),
            Hook::Rollback => self.rollback.as_ref(),
        }
    }

    pub fn gate_mut(&mut self, hook: Hook) -> &mut Option<Gate> {
        match hook {
            Hook::ConfirmRollout => &mut self.confirm_rollout,
            Hook::ConfirmPromotion => &mut self.confirm_promotion,
            Hook::Rollback => &mut self.rollback,
        }
    }

    /// The gate for `checksum`, replaced by a fresh one when Flagger moved
    /// on to another revision.
    pub fn gate_for(&mut self, hook: Hook, checksum: &str) -> &mut Gate {
        let slot = self.gate_mut(hook);
        if slot.as_ref().is_none_or(|g| g.checksum != checksum) {
            *slot = Some(Gate {
                checksum: checksum.to_string(),
                ..Gate::default()
            });
        }
        slot.as_mut().expect("just set")
    }

    /// Records that `prompt` asks about `checksum` at `hook`.
    pub fn remember_prompt(&mut self, prompt: &str, hook: Hook, checksum: &str) {
        self.asked.retain(|a| a.prompt != prompt);
        self.asked.push(Asked {
            prompt: prompt.to_string(),
            hook,
            checksum: checksum.to_string(),
        });
        let extra = self.asked.len().saturating_sub(ASKED_KEPT);
        self.asked.drain(..extra);
    }

    /// Why an action answering a gate prompt must not open `hook`'s gate
    /// now: the prompt asked about another revision (or another gate).
    pub fn stale_prompt(&self, hook: Hook, idempotency_key: &str) -> Option<String> {
        let id = idempotency_key.strip_prefix("prompt:")?.split(':').next()?;
        let asked = self.asked.iter().find(|a| a.prompt == id)?;
        let now = self.gate(hook).map(|g| g.checksum.as_str()).unwrap_or("");
        if asked.hook == hook && asked.checksum == now {
            return None;
        }
        Some(format!(
            "prompt {id} asked about revision {} at the {} gate; Flagger now waits at the {} gate with revision {}, which has its own prompt. Nothing was changed; answer the newer prompt",
            short(&asked.checksum),
            asked.hook.name(),
            hook.name(),
            short(now)
        ))
    }

    /// The revision Flagger is working on, from its latest call.
    pub fn current_checksum(&self) -> Option<&str> {
        self.last
            .as_ref()
            .map(|l| l.checksum.as_str())
            .filter(|c| !c.is_empty())
    }
}

/// The stored gates, shared by the backend and the HTTP handlers.
#[derive(Clone)]
pub struct GateBook {
    store: Arc<Store>,
}

impl GateBook {
    pub fn open(store: &Arc<Store>) -> GateBook {
        GateBook {
            store: store.clone(),
        }
    }

    pub async fn get(&self, service: &str) -> anyhow::Result<CanaryGates> {
        Ok(self
            .store
            .get(Table::Gates, service)
            .await?
            .unwrap_or_default())
    }

    /// Changes a service's record with `f` as one compare-and-swap, so the
    /// gate handler and the backend never overwrite each other; `f` may run
    /// more than once. Durable before it returns, because Flagger acts on
    /// what it is told.
    pub async fn update<R>(
        &self,
        service: &str,
        mut f: impl FnMut(&mut CanaryGates) -> R,
    ) -> anyhow::Result<(CanaryGates, R)> {
        let ((state, r), _) = self
            .store
            .update(Table::Gates, service, |cur: Option<CanaryGates>| {
                let mut state = cur.unwrap_or_default();
                let r = f(&mut state);
                Change::set(state.clone(), (state, r))
            })
            .await?;
        Ok((state, r))
    }
}

/// The canary a service stands for: `target.canary` (default: the service
/// name) in `target.namespace`.
pub fn canary_of(service: &str, settings: &BTreeMap<String, String>) -> String {
    let name = settings
        .get("canary")
        .map(String::as_str)
        .unwrap_or(service);
    let ns = settings
        .get("namespace")
        .map(String::as_str)
        .unwrap_or("default");
    format!("{name}.{ns}")
}

/// `[backends.NAME]` with `type = "flagger"`: answers Flagger's confirm
/// and rollback webhooks (`/gates/flagger/…`); a service's
/// `target.namespace` and `target.canary` name its Canary.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct FlaggerConfig {
    /// How long an action waits for Flagger to call the opened gate
    /// (default 20s); Flagger calls once per analysis interval.
    #[serde(default)]
    verify_wait: Option<HumanDuration>,
}

impl BackendSettings for FlaggerConfig {
    /// The wait ends before the engine's cut, `[gates]` has the token
    /// Flagger sends, and each service names its own Canary.
    fn check(&self, cx: &CheckContext) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        if let Some(w) = self.verify_wait {
            if w.0 >= cx.backend_timeout {
                errors.push(
                    cx.error(format!(
                        "verify_wait {} must be shorter than [engine] backend_timeout {}",
                        crate::domain::human_duration(w.0),
                        crate::domain::human_duration(cx.backend_timeout)
                    ))
                    .help("lower verify_wait; an open gate stays open after the wait, and rollbot posts when Flagger passes it"),
                );
            }
        }
        if cx.no_gates_token {
            errors.push(
                cx.error("Flagger calls rollbot's gates, which need [gates] token")
                    .help("add [gates] with token = \"${ROLLBOT_GATES_TOKEN}\" (or token_file) and send it from the Canary's webhooks as a bearer token"),
            );
        }
        errors.extend(check_canaries(cx));
        errors
    }

    fn build(&self, _cx: &BuildContext) -> Built {
        let mut s = FlaggerSettings::default();
        if let Some(w) = self.verify_wait {
            s.verify_wait = w.0;
        }
        FlaggerBackend::new(s).into()
    }
}

/// Each service of this backend names the namespace of its Canary, and no
/// two services of any Flagger backend stand for the same Canary (the gates
/// find a service by its Canary).
fn check_canaries(cx: &CheckContext) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    let mut canaries: BTreeMap<String, &str> = BTreeMap::new();
    let flagger = cx
        .services
        .iter()
        .filter(|s| s.backend_type == Some("flagger"));
    for s in flagger {
        let mine = s.backend == cx.name;
        let name = s.name;
        let Some(ns) = s.target.get("namespace") else {
            if mine {
                errors.push(
                    cx.at(
                        s.name_span.clone(),
                        format!("service `{name}` uses a flagger backend but has no target.namespace"),
                    )
                    .help("write target = { namespace = \"prod\" } (and canary = \"NAME\" when the Canary is not named like the service)"),
                );
            }
            continue;
        };
        for (key, v) in [("namespace", Some(ns)), ("canary", s.target.get("canary"))] {
            if let Some(v) = v.filter(|_| mine) {
                if v.is_empty()
                    || !v
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                {
                    errors.push(
                        cx.at(
                            s.name_span.clone(),
                            format!(
                                "service `{name}`: target.{key} `{v}` is not a Kubernetes name"
                            ),
                        )
                        .help("use lowercase letters, digits and `-`, as in the Canary's metadata"),
                    );
                }
            }
        }
        let canary = canary_of(name, s.target);
        if let Some(first) = canaries.insert(canary.clone(), name) {
            if mine {
                errors.push(
                    cx.at(
                        s.name_span.clone(),
                        format!("services `{first}` and `{name}` both stand for Flagger canary {canary}"),
                    )
                    .help("give one of them target.canary (or target.namespace) naming its own Canary"),
                );
            }
        }
    }
    errors
}

#[derive(Clone, Debug)]
pub struct FlaggerSettings {
    /// How long verify waits for Flagger to call an opened gate.
    pub verify_wait: Duration,
    /// How often verify looks.
    pub poll: Duration,
}

impl Default for FlaggerSettings {
    fn default() -> Self {
        FlaggerSettings {
            verify_wait: Duration::from_secs(20),
            poll: Duration::from_millis(200),
        }
    }
}

pub struct FlaggerBackend {
    s: FlaggerSettings,
    book: OnceLock<GateBook>,
}

impl FlaggerBackend {
    pub fn new(s: FlaggerSettings) -> FlaggerBackend {
        FlaggerBackend {
            s,
            book: OnceLock::new(),
        }
    }

    fn book(&self) -> Result<&GateBook, BackendError> {
        self.book.get().ok_or_else(|| {
            BackendError::Unavailable(
                "the Flagger gates are not attached to rollbot's store".into(),
            )
        })
    }

    async fn state(&self, t: &Target) -> Result<CanaryGates, BackendError> {
        self.book()?
            .get(&t.service)
            .await
            .map_err(|e| BackendError::failed(format!("cannot read the Flagger gates: {e}")))
    }

    /// Opens `hook`'s gate for the revision Flagger asked about.
    async fn open(
        &self,
        t: &Target,
        hook: Hook,
        ctx: &CallContext,
    ) -> Result<ActionReport, BackendError> {
        let canary = canary_of(&t.service, &t.settings);
        let opened = Opened {
            by: ctx.actor.clone(),
            at: Utc::now(),
            correlation_id: ctx.correlation_id.clone(),
        };
        let (_, done) = self
            .book()?
            .update(&t.service, |st| {
                if let Some(why) = st.stale_prompt(hook, &ctx.idempotency_key) {
                    return Err(why);
                }
                let Some(checksum) = gate_checksum(st, hook) else {
                    return Ok(None);
                };
                let g = st.gate_for(hook, &checksum);
                let changed = g.opened.is_none();
                if changed {
                    g.opened = Some(opened.clone());
                    g.held = None;
                }
                Ok(Some((checksum, changed)))
            })
            .await
            .map_err(|e| {
                BackendError::failed(format!(
                    "cannot store the open {} gate: {e}; nothing was changed",
                    hook.name()
                ))
            })?;
        // Preflight saw the checksum; only a concurrent reset can lose it.
        let (checksum, changed) = done.map_err(BackendError::Refused)?.ok_or_else(|| {
            BackendError::Refused(format!(
                "Flagger has not asked rollbot about canary {canary}; nothing was changed"
            ))
        })?;
        let what = match hook {
            Hook::ConfirmRollout => "start the analysis",
            Hook::ConfirmPromotion => "promote",
            Hook::Rollback => "roll back",
        };
        Ok(ActionReport {
            summary: format!(
                "Opened the {} gate of Flagger canary {canary} (revision {}); Flagger will {what} at its next check.",
                hook.name(),
                short(&checksum)
            ),
            from_revision: None,
            to_revision: None,
            changed,
            requests: vec![format!(
                "store: {}{}",
                open_gate(hook, &canary, &checksum),
                if changed { "" } else { " (already open)" }
            )],
        })
    }

    /// What opening `hook`'s gate would change, read from the store and
    /// written nowhere: Flagger is told nothing until it calls the gate,
    /// so nothing is sent to Kubernetes either way.
    async fn plan_gate(&self, t: &Target, hook: Hook, ctx: &CallContext) -> Result<Plan, BackendError> {
        let canary = canary_of(&t.service, &t.settings);
        let st = self.state(t).await?;
        if let Some(why) = st.stale_prompt(hook, &ctx.idempotency_key) {
            return Err(BackendError::Refused(why));
        }
        let checksum = gate_checksum(&st, hook).ok_or_else(|| {
            BackendError::Refused(format!(
                "Flagger has not asked rollbot about canary {canary}; nothing would be changed"
            ))
        })?;
        let rev = short(&checksum);
        let phase = st.last.as_ref().map(|l| l.phase.as_str()).unwrap_or("unknown");
        let already = st
            .gate(hook)
            .is_some_and(|g| g.checksum == checksum && g.opened.is_some());
        if already {
            return Ok(Plan {
                requests: vec![],
                notes: vec![format!("nothing would be changed: the {} gate of Flagger canary {canary} (revision {rev}) is already open", hook.name())],
            });
        }
        let then = match hook {
            Hook::Rollback => "route all traffic to the primary, scale the canary to zero and mark the Canary Failed",
            Hook::ConfirmPromotion => "promote the canary (phase Promoting, then Finalising and Succeeded)",
            Hook::ConfirmRollout => "start the canary's analysis (phase Progressing)",
        };
        Ok(Plan {
            requests: vec![PlannedRequest::new("store", open_gate(hook, &canary, &checksum))],
            notes: vec![
                format!("the Canary is now in phase {phase}; rollbot sends nothing to Kubernetes: at its next call to the {} gate, Flagger would {then}", hook.name()),
                format!("then it would wait up to {} for Flagger to pass the gate", crate::domain::human_duration(self.s.verify_wait)),
            ],
        })
    }
}

/// The revision a hook's gate opens for: whatever Flagger runs now for a
/// rollback, else the revision waiting at that gate.
fn gate_checksum(st: &CanaryGates, hook: Hook) -> Option<String> {
    match hook {
        Hook::Rollback => st.current_checksum().map(str::to_string),
        _ => st.gate(hook).map(|g| g.checksum.clone()),
    }
}

/// The one write an open gate is, as the report and the plan show it.
fn open_gate(hook: Hook, canary: &str, checksum: &str) -> String {
    format!("open gate {} of {canary} for checksum {checksum}", hook.name())
}

/// Flagger's checksums are long hashes; messages show the start.
pub fn short(checksum: &str) -> &str {
    let end = checksum
        .char_indices()
        .nth(10)
        .map(|(i, _)| i)
        .unwrap_or(checksum.len());
    &checksum[..end]
}

fn hook_of(op: &Operation) -> Option<Hook> {
    match op {
        Operation::Promote { .. } => Some(Hook::ConfirmPromotion),
        Operation::Resume => Some(Hook::ConfirmRollout),
        Operation::Rollback { .. } => Some(Hook::Rollback),
        Operation::Pause => None,
    }
}

#[async_trait]
impl RollbackBackend for FlaggerBackend {
    fn kind(&self) -> &'static str {
        "flagger"
    }

    fn attach(&self, store: &Arc<Store>) -> anyhow::Result<()> {
        let book = GateBook::open(store);
        // A second attach (tests re-using a backend) keeps the first store.
        let _ = self.book.set(book);
        Ok(())
    }

    async fn preflight(
        &self,
        t: &Target,
        op: &Operation,
        ctx: &CallContext,
    ) -> Result<Preflight, BackendError> {
        let canary = canary_of(&t.service, &t.settings);
        let Some(hook) = hook_of(op) else {
            return Err(BackendError::Refused(format!(
                "Flagger canaries are not paused through rollbot; to halt {canary}, set spec.suspend: true on the Canary (kubectl -n {} patch canary {} --type merge -p '{{\"spec\":{{\"suspend\":true}}}}')",
                t.settings.get("namespace").map(String::as_str).unwrap_or("default"),
                canary.split('.').next().unwrap_or_default()
            )));
        };
        if let Operation::Rollback { to: Some(rev) } = op {
            return Err(BackendError::Refused(format!(
                "Flagger rolls back to its primary, not to a chosen revision (`{rev}`); use `/rollback {}` without a revision",
                t.service
            )));
        }
        let st = self.state(t).await?;
        if let Some(why) = st.stale_prompt(hook, &ctx.idempotency_key) {
            return Err(BackendError::Refused(why));
        }
        let checksum = match hook {
            Hook::Rollback => st.current_checksum().map(str::to_string),
            _ => st
                .gate(hook)
                .map(|g| g.checksum.clone())
                .filter(|c| Some(c.as_str()) == st.current_checksum()),
        };
        let Some(checksum) = checksum else {
            let why = match hook {
                Hook::Rollback => format!("Flagger has not called any of rollbot's gates for canary {canary}, so rollbot cannot tell it to roll back. Add rollbot's rollback webhook to the Canary's analysis, or roll back by hand: revert the Deployment (kubectl rollout undo) and Flagger rolls the old spec out as a new canary"),
                _ => format!("Flagger is not waiting at the {} gate of canary {canary}; nothing to confirm now. It calls the gate when the canary reaches that point", hook.name()),
            };
            return Err(BackendError::Refused(why));
        };
        let phase = st
            .last
            .as_ref()
            .map(|l| l.phase.clone())
            .unwrap_or_default();
        Ok(Preflight {
            from_revision: None,
            to_revision: None,
            notes: vec![format!(
                "canary {canary} revision {} in phase {phase}",
                short(&checksum)
            )],
        })
    }

    async fn rollback(
        &self,
        t: &Target,
        _to: Option<&str>,
        ctx: &CallContext,
    ) -> Result<ActionReport, BackendError> {
        self.open(t, Hook::Rollback, ctx).await
    }

    async fn plan(
        &self,
        t: &Target,
        op: &Operation,
        ctx: &CallContext,
    ) -> Result<Plan, BackendError> {
        match hook_of(op) {
            Some(hook) => self.plan_gate(t, hook, ctx).await,
            None => Err(BackendError::Refused(
                "Flagger canaries are not paused through rollbot".into(),
            )),
        }
    }

    async fn promote(
        &self,
        t: &Target,
        _full: bool,
        ctx: &CallContext,
    ) -> Result<ActionReport, BackendError> {
        self.open(t, Hook::ConfirmPromotion, ctx).await
    }

    async fn pause(&self, t: &Target, ctx: &CallContext) -> Result<ActionReport, BackendError> {
        // Preflight refuses pause; reaching here means it was skipped.
        self.preflight(t, &Operation::Pause, ctx).await?;
        Err(BackendError::Refused("pause is not supported".into()))
    }

    async fn resume(&self, t: &Target, ctx: &CallContext) -> Result<ActionReport, BackendError> {
        self.open(t, Hook::ConfirmRollout, ctx).await
    }

    /// Waits (bounded) until Flagger called the opened gate and got the open
    /// answer. Flagger calls once per analysis interval, which may be longer
    /// than the wait: then the gate stays open, the result says so, and the
    /// gate handler announces the moment Flagger passes it.
    async fn verify(
        &self,
        t: &Target,
        op: &Operation,
        _report: &ActionReport,
        _ctx: &CallContext,
    ) -> Result<Verification, BackendError> {
        let Some(hook) = hook_of(op) else {
            return Ok(Verification {
                ok: false,
                detail: "nothing to verify".into(),
            });
        };
        let waited = poll_until(
            self.s.verify_wait,
            self.s.poll,
            |_| async move {
                let st = self.state(t).await?;
                let Some(g) = st.gate(hook) else {
                    return Ok(Look::Done(Verification {
                        ok: false,
                        detail: format!("the {} gate disappeared", hook.name()),
                    }));
                };
                // A closed gate here means Flagger presented a new checksum.
                if g.opened.is_none() {
                    return Ok(Look::Done(Verification {
                        ok: false,
                        detail: format!(
                            "Flagger moved to another revision ({}) before it saw the open gate",
                            short(&g.checksum)
                        ),
                    }));
                }
                Ok::<_, BackendError>(match g.passed {
                    Some(at) => {
                        let phase = st.last.map(|l| l.phase).unwrap_or_default();
                        Look::Done(Verification {
                            ok: true,
                            detail: format!(
                                "Flagger passed the {} gate at {} (phase {phase})",
                                hook.name(),
                                at.format("%H:%M:%S UTC")
                            ),
                        })
                    }
                    None => Look::Waiting(()),
                })
            },
            |_| {},
        )
        .await?;
        Ok(match waited {
            Polled::Done(v) => v,
            Polled::TimedOut { .. } => Verification {
                ok: true,
                detail: format!(
                    "the gate is open; Flagger has not called it within {}. It goes on at its next check (every analysis interval) and rollbot posts when it does",
                    crate::domain::human_duration(self.s.verify_wait)
                ),
            },
        })
    }

    async fn status(&self, t: &Target) -> Result<BackendStatus, BackendError> {
        let st = self.state(t).await?;
        let canary = canary_of(&t.service, &t.settings);
        let mut notes = vec![];
        match &st.last {
            Some(l) => notes.push(format!(
                "Flagger canary {canary}: last call {} at {} in phase {}, answered {}",
                l.hook.name(),
                l.at.format("%Y-%m-%d %H:%M:%S UTC"),
                l.phase,
                l.answer
            )),
            None => notes.push(format!(
                "Flagger canary {canary}: Flagger has not called rollbot's gates yet"
            )),
        }
        let mut waiting = false;
        for hook in [Hook::ConfirmRollout, Hook::ConfirmPromotion, Hook::Rollback] {
            if let Some(g) = st.gate(hook) {
                let state = match (&g.opened, g.passed) {
                    (None, _) => {
                        waiting |= hook != Hook::Rollback;
                        "closed".to_string()
                    }
                    (Some(o), None) => format!("open (by {}), Flagger has not called since", o.by),
                    (Some(o), Some(p)) => format!(
                        "open (by {}), passed by Flagger at {}",
                        o.by,
                        p.format("%H:%M:%S UTC")
                    ),
                };
                notes.push(format!(
                    "{} gate, revision {}: {state}",
                    hook.name(),
                    short(&g.checksum)
                ));
            }
        }
        Ok(BackendStatus {
            live_revision: None,
            canary_revision: st.current_checksum().map(|c| short(c).to_string()),
            canary_weight: None,
            step: st.last.as_ref().map(|l| l.phase.clone()),
            paused: waiting,
            history: vec![],
            notes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn target() -> Target {
        Target {
            service: "podinfo".into(),
            environment: "prod".into(),
            settings: [("namespace".to_string(), "test".to_string())].into(),
        }
    }

    async fn backend() -> (FlaggerBackend, Arc<Store>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let b = FlaggerBackend::new(FlaggerSettings {
            verify_wait: Duration::from_millis(300),
            poll: Duration::from_millis(20),
        });
        b.attach(&store).unwrap();
        (b, store, dir)
    }

    fn called(hook: Hook, checksum: &str) -> impl FnMut(&mut CanaryGates) {
        let checksum = checksum.to_string();
        move |st: &mut CanaryGates| {
            st.canary = "podinfo.test".into();
            st.gate_for(hook, &checksum);
            st.last = Some(LastCall {
                hook,
                phase: "WaitingPromotion".into(),
                checksum: checksum.clone(),
                at: Utc::now(),
                answer: 403,
            });
        }
    }

    #[test]
    fn canary_names_default_to_the_service() {
        let t = target();
        assert_eq!(canary_of(&t.service, &t.settings), "podinfo.test");
        let mut s = t.settings.clone();
        s.insert("canary".into(), "web".into());
        assert_eq!(canary_of("podinfo", &s), "web.test");
    }

    #[tokio::test]
    async fn promote_is_refused_until_flagger_asks_then_opens_that_revision_only() {
        let (b, store, _d) = backend().await;
        let t = target();
        let ctx = CallContext::default();
        let op = Operation::Promote { full: true };
        let e = b.preflight(&t, &op, &ctx).await.unwrap_err();
        assert!(e.to_string().contains("not waiting"), "{e}");

        let book = GateBook::open(&store);
        book.update("podinfo", called(Hook::ConfirmPromotion, "abc123"))
            .await
            .unwrap();
        b.preflight(&t, &op, &ctx).await.unwrap();
        let r = b.promote(&t, true, &ctx).await.unwrap();
        assert!(r.changed);
        assert!(r.requests[0].contains("abc123"), "{:?}", r.requests);
        let again = b.promote(&t, true, &ctx).await.unwrap();
        assert!(!again.changed, "opening twice changes nothing");

        // Flagger has not called since: verify says so after its wait, still ok.
        let v = b.verify(&t, &op, &r, &ctx).await.unwrap();
        assert!(v.ok && v.detail.contains("has not called"), "{v:?}");

        // A new revision is a new, closed gate.
        book.update("podinfo", called(Hook::ConfirmPromotion, "def456"))
            .await
            .unwrap();
        let st = book.get("podinfo").await.unwrap();
        let g = st.gate(Hook::ConfirmPromotion).unwrap();
        assert_eq!(g.checksum, "def456");
        assert!(g.opened.is_none());
    }

    #[tokio::test]
    async fn a_rollback_plan_says_what_flagger_would_do_and_opens_no_gate() {
        let (b, store, _d) = backend().await;
        let (t, ctx) = (target(), CallContext::default());
        let op = Operation::Rollback { to: None };
        let e = b.plan(&t, &op, &ctx).await.unwrap_err();
        assert!(e.to_string().contains("has not asked"), "{e}");
        let book = GateBook::open(&store);
        book.update("podinfo", called(Hook::ConfirmPromotion, "abc123"))
            .await
            .unwrap();
        let before = book.get("podinfo").await.unwrap();
        let p = b.plan(&t, &op, &ctx).await.unwrap();
        assert_eq!(
            p.requests[0].to_string(),
            "store open gate rollback of podinfo.test for checksum abc123"
        );
        assert!(p.notes[0].contains("phase WaitingPromotion"), "{:?}", p.notes);
        assert!(p.notes[0].contains("Flagger would route all traffic to the primary"), "{:?}", p.notes);
        let after = book.get("podinfo").await.unwrap();
        assert!(after.gate(Hook::Rollback).is_none_or(|g| g.opened.is_none()));
        assert_eq!(
            serde_json::to_value(&after).unwrap(),
            serde_json::to_value(&before).unwrap(),
            "a plan changed the gates"
        );
        // The real rollback opens what the plan showed.
        let r = b.rollback(&t, None, &ctx).await.unwrap();
        assert_eq!(r.requests, [format!("store: {}", p.requests[0].target)]);
        let p = b.plan(&t, &op, &ctx).await.unwrap();
        assert!(p.requests.is_empty() && p.notes[0].starts_with("nothing would be changed"), "{p:?}");
    }

    #[tokio::test]
    async fn approving_an_old_revisions_prompt_opens_nothing() {
        let (b, store, _d) = backend().await;
        let t = target();
        let book = GateBook::open(&store);
        book.update("podinfo", called(Hook::ConfirmPromotion, "old1"))
            .await
            .unwrap();
        book.update("podinfo", |st| {
            st.remember_prompt("p1", Hook::ConfirmPromotion, "old1")
        })
        .await
        .unwrap();
        book.update("podinfo", called(Hook::ConfirmPromotion, "new2"))
            .await
            .unwrap();
        book.update("podinfo", |st| {
            st.remember_prompt("p2", Hook::ConfirmPromotion, "new2")
        })
        .await
        .unwrap();
        let op = Operation::Promote { full: true };
        let old = CallContext {
            idempotency_key: "prompt:p1:approve".into(),
            ..CallContext::default()
        };
        let e = b.preflight(&t, &op, &old).await.unwrap_err();
        assert!(e.to_string().contains("revision old1"), "{e}");
        let e = b.promote(&t, true, &old).await.unwrap_err();
        assert!(e.to_string().contains("Nothing was changed"), "{e}");
        let st = book.get("podinfo").await.unwrap();
        assert!(st.gate(Hook::ConfirmPromotion).unwrap().opened.is_none());

        // The current prompt, or a chat /promote (no prompt), opens it.
        let new = CallContext {
            idempotency_key: "prompt:p2:approve".into(),
            ..CallContext::default()
        };
        b.preflight(&t, &op, &new).await.unwrap();
        assert!(b.promote(&t, true, &new).await.unwrap().changed);
        // A confirm-promotion prompt does not answer the rollout gate.
        let e = b.preflight(&t, &Operation::Resume, &new).await.unwrap_err();
        assert!(e.to_string().contains("prompt p2"), "{e}");
    }

    #[tokio::test]
    async fn verify_sees_flagger_pass_the_gate() {
        let (b, store, _d) = backend().await;
        let t = target();
        let ctx = CallContext::default();
        let book = GateBook::open(&store);
        book.update("podinfo", called(Hook::Rollback, "abc"))
            .await
            .unwrap();
        let op = Operation::Rollback { to: None };
        b.preflight(&t, &op, &ctx).await.unwrap();
        let r = b.rollback(&t, None, &ctx).await.unwrap();
        let b2 = book.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            b2.update("podinfo", |st| {
                st.rollback.as_mut().unwrap().passed = Some(Utc::now());
            })
            .await
            .unwrap();
        });
        let v = b.verify(&t, &op, &r, &ctx).await.unwrap();
        assert!(v.ok && v.detail.contains("passed"), "{v:?}");
        let e = b
            .preflight(
                &t,
                &Operation::Rollback {
                    to: Some("v1".into()),
                },
                &ctx,
            )
            .await
            .unwrap_err();
        assert!(e.to_string().contains("primary"), "{e}");
    }
}
