//! Gates: rollbot as the human in the loop of controllers that already run
//! the rollout.
//!
//! - `POST /gates/flagger/confirm-rollout`, `/gates/flagger/confirm-promotion`:
//!   Flagger's confirm webhooks. The first call for a canary revision
//!   (checksum) posts one prompt; 200 once a permitted person approved it
//!   (the approval is an engine action on the `flagger` backend, which opens
//!   the gate) and no freeze applies now; 403 otherwise, so Flagger waits.
//! - `POST /gates/flagger/rollback`: 200 while a rollback of that revision
//!   was asked for in chat, 403 otherwise.
//! - `GET /gates/argo/analysis?service=S`: the judge's verdict for an Argo
//!   Rollouts web metric (`{"verdict", "score", "reasons"}`); `no_data`
//!   when nothing is being judged.
//!
//! Every gate needs the `[gates]` token: `Authorization: Bearer <token>`,
//! or, for Flagger, which sends no headers of its own (fluxcd/flagger#1192),
//! `token` in the webhook's `metadata`, which Flagger copies into the body.

use super::AppState;
use crate::audit::{Outcome as AuditOutcome, Record};
use crate::backend::flagger::{canary_of, short, Gate, GateBook, Hook, LastCall, Payload};
use crate::backend::BackendConfig;
use crate::chat::{ButtonStyle, Message, Severity};
use crate::config::SecretValue;
use crate::config_file::ServiceConfig;
use crate::domain::{Action, Actor};
use crate::engine::prompt::{Choice, Prompt, PromptState};
use crate::engine::{new_id, Request};
use crate::roles::Permission;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// The gates' token and stored state.
pub struct Gates {
    /// `None` when `[gates]` has no token: every gate answers 401.
    token: Option<SecretValue>,
    book: GateBook,
}

impl Gates {
    pub fn new(token: Option<SecretValue>, book: GateBook) -> Gates {
        Gates { token, book }
    }
}

type Answer = (StatusCode, Json<Value>);

/// Compares tokens without leaking where they differ.
fn same(a: &str, b: &str) -> bool {
    let (x, y) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    x.iter()
        .zip(y.iter())
        .fold(0u8, |acc, (p, q)| acc | (p ^ q))
        == 0
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("authorization")
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
}

/// Checks the token sent: the bearer header, else `fallback` (Flagger's
/// metadata token).
fn authenticate_with(
    state: &AppState,
    headers: &HeaderMap,
    fallback: Option<&str>,
) -> Result<(), Answer> {
    let Some(expected) = &state.gates.token else {
        return Err((
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "the gates are off: rollbot's config has no [gates] token"})),
        ));
    };
    match bearer(headers).or(fallback) {
        Some(t) if same(expected.expose(), t) => {
            // Only the Lease holder answers gates: a standby's 503 makes
            // Flagger ask again (through the Service, at the leader).
            let leader = state.engine.leadership.view();
            if leader.leader {
                Ok(())
            } else {
                Err((
                    StatusCode::SERVICE_UNAVAILABLE,
                    Json(
                        json!({"error": leader.describe(), "leader": leader.holder, "refusal": crate::engine::Refusal::Standby}),
                    ),
                ))
            }
        }
        _ => Err((
            StatusCode::UNAUTHORIZED,
            Json(
                json!({"error": "missing or wrong token; send Authorization: Bearer <the [gates] token> (Flagger: put it in the webhook's metadata as token)"}),
            ),
        )),
    }
}

fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<(), Answer> {
    authenticate_with(state, headers, None)
}

pub async fn confirm_rollout(s: State<AppState>, h: HeaderMap, body: axum::body::Bytes) -> Answer {
    flagger(s, Hook::ConfirmRollout, h, body).await
}

pub async fn confirm_promotion(
    s: State<AppState>,
    h: HeaderMap,
    body: axum::body::Bytes,
) -> Answer {
    flagger(s, Hook::ConfirmPromotion, h, body).await
}

pub async fn rollback(s: State<AppState>, h: HeaderMap, body: axum::body::Bytes) -> Answer {
    flagger(s, Hook::Rollback, h, body).await
}

/// The service whose `flagger` backend stands for `canary` (`name.namespace`).
fn service_for<'a>(state: &'a AppState, canary: &str) -> Result<&'a ServiceConfig, Answer> {
    let config = &state.engine.config;
    let flagger = |s: &ServiceConfig| {
        config
            .backends
            .get(s.backend.as_ref())
            .is_some_and(|b| matches!(b.as_ref(), BackendConfig::Flagger { .. }))
    };
    let known: Vec<String> = config
        .services
        .iter()
        .filter(|s| flagger(s))
        .map(|s| canary_of(s.name(), &s.target))
        .collect();
    config
        .services
        .iter()
        .filter(|s| flagger(s))
        .find(|s| canary_of(s.name(), &s.target) == canary)
        .ok_or_else(|| {
            (
                StatusCode::NOT_FOUND,
                Json(json!({
                    "error": format!(
                        "no service stands for Flagger canary {canary}; known canaries: {}. Give a service a flagger backend and target.namespace (and target.canary when the names differ)",
                        if known.is_empty() { "none".to_string() } else { known.join(", ") }
                    ),
                    "known": known,
                })),
            )
        })
}

fn failed(e: impl std::fmt::Display) -> Answer {
    tracing::error!(error = %e, "gate state could not be stored");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"open": false, "error": format!("rollbot's store failed: {e}")})),
    )
}

fn flagger_actor() -> Actor {
    Actor::system("flagger")
}

async fn flagger(
    State(state): State<AppState>,
    hook: Hook,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Answer {
    let payload = match read_payload(&state, &headers, &body) {
        Ok(p) => p,
        Err(a) => return a,
    };
    let canary = format!("{}.{}", payload.name, payload.namespace);
    let svc = match service_for(&state, &canary) {
        Ok(s) => s,
        Err(a) => return a,
    };
    let call = Call {
        state: &state,
        svc,
        hook,
        payload,
        canary,
    };
    let gate = match call.claim_question().await {
        Ok(g) => g,
        Err(e) => return failed(e),
    };
    let now = state.engine.clock.now();
    let frozen = match call.frozen(now).await {
        Ok(f) => f,
        Err(e) => return failed(e),
    };
    let (code, body) = call.answer(&gate, &frozen).await;
    if let Err(e) = call.record(&gate, frozen, now, code).await {
        return failed(e);
    }
    (code, Json(body))
}

/// Reads Flagger's payload and checks the token, from the header or from
/// the payload's metadata. The metadata token is read only to
/// authenticate, then dropped: it is never stored, echoed or logged.
fn read_payload(state: &AppState, headers: &HeaderMap, body: &[u8]) -> Result<Payload, Answer> {
    let mut raw: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            authenticate(state, headers)?;
            return Err((
                StatusCode::BAD_REQUEST,
                Json(
                    json!({"error": format!("the body is not JSON ({e}); Flagger sends {{\"name\", \"namespace\", \"phase\", \"checksum\", \"metadata\"}}")}),
                ),
            ));
        }
    };
    let token = raw
        .get_mut("metadata")
        .and_then(|m| m.as_object_mut())
        .and_then(|m| m.remove("token"));
    authenticate_with(state, headers, token.as_ref().and_then(Value::as_str))?;
    let mut p: Payload = serde_json::from_value(raw).map_err(|e| {
        (
            StatusCode::BAD_REQUEST,
            Json(
                json!({"error": format!("body must be Flagger's webhook payload {{\"name\", \"namespace\", \"phase\", \"checksum\", \"metadata\"}}: {e}")}),
            ),
        )
    })?;
    p.metadata.clear();
    Ok(p)
}

/// One Flagger webhook call, read and authenticated, and the service whose
/// canary it is about.
struct Call<'a> {
    state: &'a AppState,
    svc: &'a ServiceConfig,
    hook: Hook,
    payload: Payload,
    /// `name.namespace`, as Flagger names the canary.
    canary: String,
}

impl Call<'_> {
    /// Confirm gates ask people; the rollback gate only waits for a
    /// `/rollback`.
    fn asks(&self) -> bool {
        self.hook != Hook::Rollback
    }

    /// Claims the question for this revision (the compare-and-swap lets
    /// exactly one of Flagger's repeated calls post the prompt), posts it
    /// if this call won, and returns the gate as stored.
    async fn claim_question(&self) -> anyhow::Result<Gate> {
        let (hook, checksum) = (self.hook, &self.payload.checksum);
        let prompt_id = new_id();
        let asks = self.asks();
        let (st, ask) = self
            .state
            .gates
            .book
            .update(self.svc.name(), |st| {
                st.canary = self.canary.clone();
                let g = st.gate_for(hook, checksum);
                let ask = asks && g.prompt.is_none() && g.opened.is_none();
                if ask {
                    g.prompt = Some(prompt_id.clone());
                    st.remember_prompt(&prompt_id, hook, checksum);
                }
                ask
            })
            .await?;
        if ask {
            self.ask_beside_the_answer(prompt_id);
        }
        Ok(st.gate(hook).cloned().unwrap_or_default())
    }

    /// Posting waits for chat; Flagger's webhook timeout (10s by default)
    /// must not, so the prompt is posted in a task of its own. When it
    /// cannot be posted, the claim is dropped so the next call asks again.
    fn ask_beside_the_answer(&self, prompt_id: String) {
        let (state, name, p, canary, hook) = (
            self.state.clone(),
            self.svc.name().to_string(),
            self.payload.clone(),
            self.canary.clone(),
            self.hook,
        );
        tokio::spawn(async move {
            let Ok(svc) = state.engine.resolve(Some(&name)) else {
                return;
            };
            if let Err(e) = ask_people(&state, svc, hook, &p, &canary, &prompt_id).await {
                tracing::error!(service = %name, error = %e, "could not post the Flagger prompt");
                // Let the next call ask again.
                let _ = state
                    .gates
                    .book
                    .update(&name, |st| {
                        let g = st.gate_for(hook, &p.checksum);
                        if g.prompt.as_deref() == Some(prompt_id.as_str()) {
                            g.prompt = None;
                        }
                    })
                    .await;
            }
        });
    }

    /// The freeze that holds a confirm gate now, checked again at every
    /// call: an approval given before a freeze must not ship during it.
    async fn frozen(&self, now: DateTime<Utc>) -> anyhow::Result<Option<String>> {
        if !self.asks() {
            return Ok(None);
        }
        let engine = &self.state.engine;
        let block = engine
            .freezes
            .promotion_block(&self.svc.environment, self.svc.name(), now)
            .await?;
        Ok(block.map(|b| b.to_string()))
    }

    /// What Flagger is told: 200 when the gate is open and not frozen, else
    /// 403 with why and what a person can do.
    async fn answer(&self, gate: &Gate, frozen: &Option<String>) -> (StatusCode, Value) {
        let (svc, canary, p) = (self.svc, &self.canary, &self.payload);
        match (&gate.opened, frozen) {
            (Some(_), None) => (
                StatusCode::OK,
                json!({"open": true, "service": svc.name(), "canary": canary, "checksum": p.checksum}),
            ),
            (Some(o), Some(block)) => (
                StatusCode::FORBIDDEN,
                json!({
                    "open": false, "service": svc.name(), "canary": canary, "checksum": p.checksum,
                    "reason": format!("approved by {} but frozen: {block}. Flagger waits; the gate opens when the freeze ends", o.by),
                }),
            ),
            (None, _) => {
                let mut reason = closed_reason(self.state, svc, self.hook, &gate.prompt).await;
                if let Some(block) = frozen {
                    reason.push_str(&format!(" Also frozen: {block}."));
                }
                (
                    StatusCode::FORBIDDEN,
                    json!({
                        "open": false, "service": svc.name(), "canary": canary,
                        "checksum": p.checksum, "reason": reason, "prompt": gate.prompt,
                    }),
                )
            }
        }
    }

    /// Records what Flagger was told; audits and announces only the changes
    /// (passed, held by a freeze), not every analysis interval.
    async fn record(
        &self,
        gate: &Gate,
        frozen: Option<String>,
        now: DateTime<Utc>,
        code: StatusCode,
    ) -> anyhow::Result<()> {
        let (hook, p) = (self.hook, &self.payload);
        let open_now = code == StatusCode::OK;
        let held_now = gate.opened.as_ref().and(frozen.clone());
        let answer = code.as_u16();
        let (_, (first_pass, newly_held)) = self
            .state
            .gates
            .book
            .update(self.svc.name(), |st| {
                st.last = Some(LastCall {
                    hook,
                    phase: p.phase.clone(),
                    checksum: p.checksum.clone(),
                    at: now,
                    answer,
                });
                let g = st.gate_for(hook, &p.checksum);
                let first_pass = open_now && g.passed.is_none();
                if first_pass {
                    g.passed = Some(now);
                }
                let newly_held = held_now.is_some() && g.held != held_now;
                g.held = held_now.clone();
                (first_pass, newly_held)
            })
            .await?;
        if first_pass || newly_held {
            self.announce_change(gate, first_pass, frozen, now, answer)
                .await?;
        }
        Ok(())
    }

    /// Audits a gate Flagger passed for the first time, or one a freeze now
    /// holds, and says so in the deploy channel.
    async fn announce_change(
        &self,
        gate: &Gate,
        first_pass: bool,
        frozen: Option<String>,
        now: DateTime<Utc>,
        answer: u16,
    ) -> anyhow::Result<()> {
        let (engine, svc, hook, p, canary) = (
            &self.state.engine,
            self.svc,
            self.hook,
            &self.payload,
            &self.canary,
        );
        let by = gate
            .opened
            .as_ref()
            .map(|o| o.by.clone())
            .unwrap_or_default();
        let corr = gate
            .opened
            .as_ref()
            .map(|o| o.correlation_id.clone())
            .unwrap_or_else(new_id);
        let (outcome, detail) = if first_pass {
            (
                AuditOutcome::Noted,
                format!(
                    "Flagger passed the {} gate of {canary} (revision {}, phase {}), opened by {by}",
                    hook.name(),
                    short(&p.checksum),
                    p.phase
                ),
            )
        } else {
            (
                AuditOutcome::Refused,
                format!(
                    "the {} gate of {canary} stays closed: {}",
                    hook.name(),
                    frozen.unwrap_or_default()
                ),
            )
        };
        let mut params = BTreeMap::new();
        params.insert("hook".into(), json!(hook.name()));
        params.insert("canary".into(), json!(canary));
        params.insert("checksum".into(), json!(p.checksum));
        params.insert("phase".into(), json!(p.phase));
        params.insert("answer".into(), json!(answer));
        let rec = Record {
            time: now,
            actor: flagger_actor(),
            action: "gate".into(),
            service: Some(svc.name().into()),
            parameters: params,
            outcome,
            reason: String::new(),
            detail: detail.clone(),
            correlation_id: corr.clone(),
            idempotency_key: None,
        };
        engine.append(rec).await?;
        if let Some(ch) = &svc.deploy_channel {
            let (sev, title) = if first_pass {
                (
                    Severity::Success,
                    format!("Flagger passed the {} gate of {}", hook.name(), svc.name()),
                )
            } else {
                (
                    Severity::Warning,
                    format!("{} gate of {} held by a freeze", hook.name(), svc.name()),
                )
            };
            let m = Message::new(sev, title)
                .text(detail)
                .context(format!("correlation {corr}"));
            engine.notifier.post_detached(ch.as_ref().clone(), m);
        }
        Ok(())
    }
}

/// Why a gate is closed, and what a person can do about it.
async fn closed_reason(
    state: &AppState,
    svc: &ServiceConfig,
    hook: Hook,
    prompt: &Option<String>,
) -> String {
    let name = svc.name();
    if hook == Hook::Rollback {
        return format!(
            "nobody asked to roll back {name}; `/rollback {name}` in chat opens this gate"
        );
    }
    let command = if hook == Hook::ConfirmRollout {
        format!("/resume {name}")
    } else {
        format!("/promote {name}")
    };
    let stored = match prompt.as_deref() {
        Some(id) => state.engine.prompts.get(id).await.ok().flatten(),
        None => None,
    };
    match stored {
        Some(p) => match &p.state {
            PromptState::Answered { by, choice, .. } => format!(
                "{choice} by {} in chat; Flagger waits. `{command}` opens the gate, `/rollback {name}` rolls back",
                by.display_name
            ),
            PromptState::Open if p.expires <= state.engine.clock.now() => format!(
                "the prompt {} expired unanswered; `{command}` in chat opens the gate",
                p.id
            ),
            PromptState::Open => format!(
                "waiting for approval in chat (prompt {}); approve it or run `{command}`",
                p.id
            ),
        },
        None => format!("waiting for approval in chat; `{command}` opens the gate"),
    }
}

/// Posts the one prompt for this revision; approving it runs the action
/// that opens the gate.
async fn ask_people(
    state: &AppState,
    svc: &ServiceConfig,
    hook: Hook,
    p: &Payload,
    canary: &str,
    id: &str,
) -> anyhow::Result<()> {
    let engine = &state.engine;
    let (action, verb) = match hook {
        Hook::ConfirmRollout => (Action::Resume, "start its canary analysis"),
        _ => (
            Action::Promote {
                full: true,
                force: false,
            },
            "promote the canary",
        ),
    };
    let now = engine.clock.now();
    let prompt = Prompt {
        id: id.to_string(),
        service: svc.name().into(),
        title: format!("Flagger asks: {verb} of {}?", svc.name()),
        question: format!(
            "Flagger canary {canary} (revision {}, phase {}) waits for confirmation to {verb}. Approve opens the {} gate and Flagger goes on at its next check; Reject leaves it waiting (`/rollback {}` rolls it back).",
            short(&p.checksum),
            p.phase,
            hook.name(),
            svc.name()
        ),
        requested_by: flagger_actor(),
        reason: format!("Flagger {} webhook", hook.name()),
        approve: Choice {
            label: "Approve".into(),
            action: Some(action.clone()),
            style: ButtonStyle::Primary,
        },
        reject: Choice {
            label: "Reject".into(),
            action: None,
            style: ButtonStyle::Danger,
        },
        other: None,
        allowed_roles: Permission::AnswerPrompt.granted_by(),
        other_person_required: false,
        // Freezes apply to the answer: nothing new ships during a freeze.
        promotes: true,
        created: now,
        expires: now + chrono::Duration::from_std(engine.config.engine.prompt_ttl.0)?,
        channel: svc.deploy_channel.as_ref().map(|c| c.as_ref().clone()),
        thread: vec![],
        messages: vec![],
        correlation_id: new_id(),
        state: PromptState::Open,
        escalated: 0,
    };
    let req = Request::new(flagger_actor(), action)
        .service(svc.name())
        .reason(prompt.reason.clone());
    engine.post_prompt(prompt, &req).await?;
    Ok(())
}

#[derive(Deserialize)]
pub struct AnalysisQuery {
    service: Option<String>,
}

/// The verdict of the service's newest active rollout, for an Argo Rollouts
/// web metric. `no_data` is not `failing`: the README's AnalysisTemplate
/// counts it as inconclusive.
pub async fn argo_analysis(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<AnalysisQuery>,
) -> Answer {
    if let Err(refusal) = authenticate(&state, &headers) {
        return refusal;
    }
    let known = state.engine.config.service_names();
    let Some(name) = q.service.filter(|s| !s.is_empty()) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(
                json!({"error": "name the service: /gates/argo/analysis?service=NAME", "known": known}),
            ),
        );
    };
    let svc = match state.engine.resolve(Some(&name)) {
        Ok(s) => s,
        Err(_) => {
            return (
                StatusCode::NOT_FOUND,
                Json(json!({
                    "error": format!("rollbot knows no service `{name}`; known services: {}", known.join(", ")),
                    "known": known,
                })),
            )
        }
    };
    let no_data = |why: &str| {
        (
            StatusCode::OK,
            Json(
                json!({"verdict": "no_data", "score": null, "reasons": [why], "service": svc.name()}),
            ),
        )
    };
    let Some(controller) = &state.controller else {
        return no_data(
            "no metric source is configured ([metrics] source), so rollbot judges nothing",
        );
    };
    let rollouts = match controller.list().await {
        Ok(r) => r,
        Err(e) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"error": format!("rollbot's store failed: {e}")})),
            )
        }
    };
    let Some(r) = rollouts
        .into_iter()
        .filter(|r| r.service == svc.name() && r.active())
        .max_by_key(|r| r.start)
    else {
        return no_data(&format!(
            "no active rollout of {} is being watched; announce it (POST /api/v1/rollouts) or set watch = true",
            svc.name()
        ));
    };
    match &r.verdict {
        None => no_data("the rollout is watched but not judged yet; wait one controller interval"),
        Some(v) => (
            StatusCode::OK,
            Json(json!({
                "verdict": v, "score": r.score, "reasons": r.reasons,
                "service": svc.name(), "rollout": r.id,
                "from_revision": r.from_revision, "to_revision": r.to_revision,
            })),
        ),
    }
}
