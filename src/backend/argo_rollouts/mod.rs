//! Rolls back, promotes, pauses and resumes an Argo Rollouts `Rollout` with
//! the same requests the `kubectl argo rollouts` plugin sends: merge patches
//! to the `/status` subresource first and to the object itself when the
//! subresource is not served (Argo Rollouts before v0.10), and the JSON patch
//! of `spec.template` for an undo.
//!
//! Mechanisms (`[services.target] mechanism`):
//! - `abort` (default): `status.abort = true`; the controller sends all
//!   traffic back to the stable ReplicaSet and scales the canary down;
//! - `undo`: copy the previous revision's ReplicaSet template into
//!   `spec.template` (`kubectl argo rollouts undo`).
//!
//! `/rollback SERVICE REVISION` always undoes to that revision.

mod config;
mod promote;
mod rollback_target;
mod rollout;

pub use config::ArgoRolloutsConfig;

use rollout::{
    aborted, aborted_by_controller, by_hash, canary_weight, comparable_template, describe_rollout,
    generation, images_of, observed_generation, pause_reasons, phase, pick_revision, revisions,
    spec_paused, step_index, steps, str_at, Revision,
};

use super::kube_common::{self, KubeConnection};
use super::poll::{poll_until, Look, Polled};
use super::*;
use kube::api::{Api, ApiResource, DynamicObject, Patch};
use kube::core::GroupVersionKind;
use serde_json::{json, Value};
use std::sync::Mutex;

/// The annotation holding a Rollout's (and its ReplicaSets') revision.
pub const REVISION: &str = "rollout.argoproj.io/revision";
/// The label the controller adds to a ReplicaSet's pod template.
pub const HASH_LABEL: &str = "rollouts-pod-template-hash";

/// The patches the plugin sends (`abort.go`, `retry.go`, `pause.go`, `promote.go`).
const ABORT: &str = r#"{"status":{"abort":true}}"#;
const RETRY: &str = r#"{"status":{"abort":false}}"#;
const PAUSE: &str = r#"{"spec":{"paused":true}}"#;
const UNPAUSE: &str = r#"{"spec":{"paused":false}}"#;
const CLEAR_PAUSE_CONDITIONS: &str = r#"{"status":{"pauseConditions":null}}"#;
const UNPAUSE_AND_CLEAR: &str = r#"{"spec":{"paused":false},"status":{"pauseConditions":null}}"#;
const PROMOTE_FULL: &str = r#"{"status":{"promoteFull":true}}"#;

fn body(s: &str) -> Value {
    serde_json::from_str(s).expect("a constant patch")
}

/// How the backend is set up; built from `[backends.NAME]` with
/// `type = "argo-rollouts"`.
#[derive(Clone, Debug)]
pub struct ArgoRolloutsSettings {
    pub connection: KubeConnection,
    /// How long verification waits for the controller.
    pub rollout_timeout: Duration,
    /// Pause between two reads of the Rollout while waiting.
    pub poll_interval: Duration,
}

impl Default for ArgoRolloutsSettings {
    fn default() -> Self {
        ArgoRolloutsSettings {
            connection: KubeConnection::default(),
            rollout_timeout: kube_common::DEFAULT_ROLLOUT_TIMEOUT,
            poll_interval: Duration::from_secs(2),
        }
    }
}

/// How a rollback is done, per service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    Abort,
    Undo,
}

pub const MECHANISMS: [&str; 2] = ["abort", "undo"];

impl Mechanism {
    pub fn parse(s: Option<&str>) -> Result<Mechanism, String> {
        match s.unwrap_or("abort") {
            "abort" => Ok(Mechanism::Abort),
            "undo" => Ok(Mechanism::Undo),
            other => Err(format!(
                "mechanism `{other}` is not one of {}",
                MECHANISMS.join(", ")
            )),
        }
    }
}

/// Checks a service's `[services.target]` for this backend.
pub fn check_target(settings: &BTreeMap<String, String>) -> Result<(), String> {
    const KNOWN: [&str; 3] = ["namespace", "rollout", "mechanism"];
    if let Some(k) = settings.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(format!(
            "`{k}` is not a target setting of an argo-rollouts backend (known: {})",
            KNOWN.join(", ")
        ));
    }
    Mechanism::parse(settings.get("mechanism").map(String::as_str)).map(|_| ())
}

fn rollout_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Rollout"),
        "rollouts",
    )
}

// --- One action's calls ----------------------------------------------------

/// Which Rollout a service is, and how it is rolled back.
struct Place {
    name: String,
    mechanism: Mechanism,
}

/// The calls of one action, with the record of every request.
type Session = kube_common::Session<Place>;

/// The plugin command that does `verb` by hand.
fn plugin(s: &Session, verb: &str) -> String {
    format!(
        "`kubectl argo rollouts {verb} {} -n {}`",
        s.place.name, s.namespace
    )
}

fn rollouts(s: &Session) -> Api<DynamicObject> {
    s.custom_api(&rollout_resource())
}

/// The Rollout as JSON; a missing one is refused naming what to check.
async fn rollout(s: &Session, by_hand: &str) -> Result<Value, BackendError> {
    let check = format!(
        "namespace and rollout for this service, and that Argo Rollouts is installed (`kubectl get rollouts -n {}`)",
        s.namespace
    );
    let ro = s
        .read(&rollouts(s), "Rollout", &s.place.name, &check, by_hand)
        .await?;
    Ok(serde_json::to_value(ro).unwrap_or_default())
}

/// A merge patch of the Rollout (or its `/status`), sent again when someone
/// else wrote in between: a merge patch does not depend on what they wrote.
async fn patch(s: &Session, sub: Option<&str>, body: Value) -> Result<(), kube::Error> {
    s.patch_retrying(&rollouts(s), &s.place.name, sub, &Patch::Merge(body))
        .await
}

/// The plugin's order: the `/status` subresource first; the object itself
/// when the subresource is not found (no status subresource).
async fn patch_status_first(s: &Session, b: Value) -> Result<(), kube::Error> {
    match patch(s, Some("status"), b.clone()).await {
        Err(e) if kube_common::is_not_found(&e) => patch(s, None, b).await,
        other => other,
    }
}

pub struct ArgoRolloutsBackend {
    s: ArgoRolloutsSettings,
    /// The step index a promotion started from, by correlation ID, so
    /// verification knows what "advanced" means.
    promoted_from: Mutex<BTreeMap<String, Option<i64>>>,
}

impl ArgoRolloutsBackend {
    pub fn new(s: ArgoRolloutsSettings) -> ArgoRolloutsBackend {
        ArgoRolloutsBackend {
            s,
            promoted_from: Mutex::new(BTreeMap::new()),
        }
    }

    async fn session(&self, t: &Target) -> Result<Session, BackendError> {
        Session::open(&self.s.connection, t, |t| {
            Ok(Place {
                name: t
                    .settings
                    .get("rollout")
                    .cloned()
                    .unwrap_or_else(|| t.service.clone()),
                mechanism: Mechanism::parse(t.settings.get("mechanism").map(String::as_str))?,
            })
        })
        .await
    }

    fn undoes(s: &Session, to: Option<&str>) -> bool {
        to.is_some() || s.place.mechanism == Mechanism::Undo
    }

    /// An undo is sent over the Rollout's live revision; one that moved
    /// since preflight (another replica, a person or a pipeline acted
    /// meanwhile) is left alone, and nothing is sent.
    fn as_preflight_found(
        &self,
        s: &Session,
        ro: &Value,
        found: Option<&str>,
    ) -> Result<(), BackendError> {
        let Some(found) = found else { return Ok(()) };
        let live = str_at(
            ro,
            &format!("/metadata/annotations/{}", REVISION.replace('/', "~1")),
        );
        if live == Some(found) {
            return Ok(());
        }
        Err(BackendError::Failed {
            message: format!(
                "Rollout {}/{} changed since preflight: it runs revision {} now, not revision {found} as preflight found, so no undo was sent (someone else changed it meanwhile: another rollbot replica, a person or a pipeline). Check {} and roll back again if it is still needed.",
                s.namespace,
                s.place.name,
                live.unwrap_or("?"),
                plugin(s, "get rollout")
            ),
            requests: s.take_requests(),
        })
    }

    fn undo_by_hand(s: &Session, to: Option<&str>) -> String {
        match to.and_then(|t| {
            t.trim()
                .trim_start_matches("revision")
                .trim()
                .parse::<i64>()
                .ok()
        }) {
            Some(n) => format!(
                "`kubectl argo rollouts undo {} -n {} --to-revision={n}`",
                s.place.name, s.namespace
            ),
            None => plugin(s, "undo"),
        }
    }

    async fn abort(&self, s: &Session) -> Result<ActionReport, BackendError> {
        let by_hand = plugin(s, "abort");
        let ro = rollout(s, &by_hand).await?;
        let revisions = revisions(s, &ro, &by_hand).await?;
        let stable = by_hash(&revisions, str_at(&ro, "/status/stableRS"));
        let canary = by_hash(&revisions, str_at(&ro, "/status/currentPodHash"));
        let rev = |r: Option<&Revision>| r.map(|r| r.number.to_string());
        if aborted(&ro) {
            return Ok(ActionReport {
                summary: format!(
                    "nothing to do: Rollout {}/{} is already aborted ({})",
                    s.namespace,
                    s.place.name,
                    describe_rollout(&ro)
                ),
                from_revision: None,
                to_revision: rev(stable),
                changed: false,
                requests: s.take_requests(),
            });
        }
        if stable.is_some() && stable.map(|r| &r.hash) == canary.map(|r| &r.hash) {
            return Ok(ActionReport {
                summary: format!(
                    "nothing to do: Rollout {}/{} has no canary in progress (stable and current revision {} are the same, {})",
                    s.namespace,
                    s.place.name,
                    rev(stable).unwrap_or_default(),
                    describe_rollout(&ro)
                ),
                from_revision: None,
                to_revision: rev(stable),
                changed: false,
                requests: s.take_requests(),
            });
        }
        patch_status_first(s, body(ABORT)).await.map_err(|e| {
            s.fail(
                &format!("aborting Rollout {}/{}", s.namespace, s.place.name),
                &e,
                &by_hand,
            )
        })?;
        let show = |r: Option<&Revision>| {
            r.map(|r| format!("revision {} ({})", r.number, r.images()))
                .unwrap_or_else(|| "?".into())
        };
        Ok(ActionReport {
            summary: format!(
                "Rollout {}/{} {}: traffic {} back to stable {} and canary {} {} scaled down; spec.template still names the canary, so an undo (`/rollback {} REVISION`) makes it final",
                s.namespace,
                s.place.name,
                s.tense("aborted", "would be aborted"),
                s.tense("goes", "would go"),
                show(stable),
                show(canary),
                s.tense("is", "would be"),
                s.place.name
            ),
            from_revision: rev(canary),
            to_revision: rev(stable),
            changed: true,
            requests: s.take_requests(),
        })
    }

    async fn undo(
        &self,
        s: &Session,
        to: Option<&str>,
        found: Option<&str>,
    ) -> Result<ActionReport, BackendError> {
        let by_hand = Self::undo_by_hand(s, to);
        let ro = rollout(s, &by_hand).await?;
        let revisions = revisions(s, &ro, &by_hand).await?;
        let target =
            pick_revision(&revisions, to, &format!("{}/{}", s.namespace, s.place.name))?.clone();
        let live = str_at(
            &ro,
            &format!("/metadata/annotations/{}", REVISION.replace('/', "~1")),
        )
        .map(str::to_string);
        let mut template = target.template.clone();
        if let Some(l) = template
            .pointer_mut("/metadata/labels")
            .and_then(Value::as_object_mut)
        {
            l.remove(HASH_LABEL);
        }
        // Each attempt reads the Rollout afresh: someone may have restored
        // the template in between, and then there is nothing to send.
        let mut current = ro;
        let mut attempt = 1;
        loop {
            if comparable_template(&current["spec"]["template"])
                == comparable_template(&target.template)
            {
                return Ok(ActionReport {
                    summary: format!(
                        "nothing to do: Rollout {}/{} already runs the template of revision {} ({})",
                        s.namespace,
                        s.place.name,
                        target.number,
                        target.images()
                    ),
                    from_revision: None,
                    to_revision: Some(target.number.to_string()),
                    changed: false,
                    requests: s.take_requests(),
                });
            }
            self.as_preflight_found(s, &current, found)?;
            // Conditional on the Rollout as just read: a write in between
            // is a 409 Conflict, and the loop reads it again.
            let mut patch = json!([{"op": "replace", "path": "/spec/template", "value": template}]);
            if let Some(rv) = str_at(&current, "/metadata/resourceVersion") {
                patch.as_array_mut().expect("a list").push(
                    json!({"op": "replace", "path": "/metadata/resourceVersion", "value": rv}),
                );
            }
            let patch: Patch<Value> =
                Patch::Json(serde_json::from_value(patch).expect("a JSON patch"));
            match s.patch(&rollouts(s), &s.place.name, None, &patch).await {
                Ok(_) => break,
                Err(e) if kube_common::again_after_conflict(&e, attempt).await => {
                    attempt += 1;
                    current = rollout(s, &by_hand).await?;
                }
                Err(e) => {
                    return Err(s.fail(
                        &format!("patching Rollout {}/{}", s.namespace, s.place.name),
                        &e,
                        &by_hand,
                    ))
                }
            }
        }
        Ok(ActionReport {
            summary: format!(
                "Rollout {}/{}: template of revision {} ({}) {} over revision {} ({})",
                s.namespace,
                s.place.name,
                target.number,
                target.images(),
                s.tense("restored", "would be restored"),
                live.clone().unwrap_or_else(|| "?".into()),
                images_of(&current["spec"]["template"])
            ),
            from_revision: live,
            to_revision: Some(target.number.to_string()),
            changed: true,
            requests: s.take_requests(),
        })
    }

    async fn set_paused(&self, t: &Target, pause: bool) -> Result<ActionReport, BackendError> {
        self.paused_on(&self.session(t).await?, pause).await
    }

    async fn paused_on(&self, s: &Session, pause: bool) -> Result<ActionReport, BackendError> {
        let by_hand = plugin(s, if pause { "pause" } else { "promote" });
        let ro = rollout(s, &by_hand).await?;
        if !pause && aborted(&ro) {
            // Resuming an aborted rollout is the plugin's `retry rollout`.
            let by_hand = plugin(s, "retry rollout");
            patch_status_first(s, body(RETRY)).await.map_err(|e| {
                s.fail(
                    &format!("retrying Rollout {}/{}", s.namespace, s.place.name),
                    &e,
                    &by_hand,
                )
            })?;
            return Ok(ActionReport {
                summary: format!(
                    "Rollout {}/{} {}",
                    s.namespace,
                    s.place.name,
                    s.tense(
                        "retried: the aborted update starts again from its first step",
                        "would be retried: the aborted update would start again from its first step"
                    )
                ),
                changed: true,
                requests: s.take_requests(),
                ..Default::default()
            });
        }
        if spec_paused(&ro) == pause {
            let why = if pause {
                "already paused".to_string()
            } else if !pause_reasons(&ro).is_empty() {
                format!(
                    "not paused by hand but by the controller ({}); `/promote` moves it on",
                    pause_reasons(&ro).join(", ")
                )
            } else {
                "neither paused nor aborted".to_string()
            };
            return Ok(ActionReport {
                summary: format!(
                    "nothing to do: Rollout {}/{} is {why} ({})",
                    s.namespace,
                    s.place.name,
                    describe_rollout(&ro)
                ),
                changed: false,
                requests: s.take_requests(),
                ..Default::default()
            });
        }
        let b = body(if pause { PAUSE } else { UNPAUSE });
        patch(s, None, b).await.map_err(|e| {
            s.fail(
                &format!(
                    "{} Rollout {}/{}",
                    if pause { "pausing" } else { "resuming" },
                    s.namespace,
                    s.place.name
                ),
                &e,
                &by_hand,
            )
        })?;
        Ok(ActionReport {
            summary: format!(
                "Rollout {}/{} {}",
                s.namespace,
                s.place.name,
                if pause {
                    s.tense(
                        "paused: the controller takes no further step until it is resumed",
                        "would be paused: the controller would take no further step until it is resumed",
                    )
                } else {
                    s.tense("resumed", "would be resumed")
                }
            ),
            changed: true,
            requests: s.take_requests(),
            ..Default::default()
        })
    }

    /// Reads the Rollout until `done` says it is there, reporting each
    /// change of its state; gives up after `rollout_timeout`.
    async fn wait(
        &self,
        s: &Session,
        progress: &Progress,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Result<Verification, BackendError> {
        let by_hand = plugin(s, "get rollout");
        let started = tokio::time::Instant::now();
        let done = &done;
        let by_hand_ref = &by_hand;
        let waited = poll_until(
            self.s.rollout_timeout,
            self.s.poll_interval,
            |reads| async move {
                let ro = rollout(s, by_hand_ref).await?;
                let now = describe_rollout(&ro);
                Ok(match done(&ro) {
                    true => Look::Done((now, reads)),
                    false => Look::Waiting(now),
                })
            },
            |now| {
                progress.report(format!(
                    "Rollout {}: {now}; waiting until {what}",
                    s.place.name
                ))
            },
        )
        .await?;
        Ok(match waited {
            Polled::Done((now, reads)) => Verification {
                ok: true,
                detail: format!(
                    "Rollout {}: {what}: {now} (after {} ms, {reads} {})",
                    s.place.name,
                    started.elapsed().as_millis(),
                    if reads == 1 { "read" } else { "reads" }
                ),
            },
            Polled::TimedOut { last, .. } => Verification {
                ok: false,
                detail: format!(
                    "Rollout {}/{} did not reach \"{what}\" within {} (last: {last}); check {by_hand}",
                    s.namespace,
                    s.place.name,
                    crate::domain::human_duration(self.s.rollout_timeout),
                ),
            },
        })
    }
}

#[async_trait]
impl RollbackBackend for ArgoRolloutsBackend {
    fn kind(&self) -> &'static str {
        "argo-rollouts"
    }

    async fn preflight(
        &self,
        t: &Target,
        op: &Operation,
        _ctx: &CallContext,
    ) -> Result<Preflight, BackendError> {
        let s = &self.session(t).await?;
        let by_hand = plugin(s, "get rollout");
        let ro = rollout(s, &by_hand).await?;
        let mut notes = vec![format!(
            "Rollout {}/{}: {}",
            s.namespace,
            s.place.name,
            describe_rollout(&ro)
        )];
        match op {
            Operation::Rollback { to } if Self::undoes(s, to.as_deref()) => {
                let revisions = revisions(s, &ro, &by_hand).await?;
                let target = pick_revision(
                    &revisions,
                    to.as_deref(),
                    &format!("{}/{}", s.namespace, s.place.name),
                )?;
                notes.push(format!(
                    "undo to revision {} ({})",
                    target.number,
                    target.images()
                ));
                Ok(Preflight {
                    from_revision: str_at(
                        &ro,
                        &format!("/metadata/annotations/{}", REVISION.replace('/', "~1")),
                    )
                    .map(str::to_string),
                    to_revision: Some(target.number.to_string()),
                    notes,
                })
            }
            Operation::Rollback { .. } => {
                if aborted(&ro) {
                    notes.push("already aborted: nothing to do".into());
                }
                Ok(Preflight {
                    notes,
                    ..Default::default()
                })
            }
            Operation::Promote { .. } if aborted(&ro) => Err(BackendError::Refused(format!(
                "Rollout {}/{} is aborted; resume it first (`/resume`, or {}) and promote again",
                s.namespace,
                s.place.name,
                plugin(s, "retry rollout")
            ))),
            _ => Ok(Preflight {
                notes,
                ..Default::default()
            }),
        }
    }

    async fn rollback(
        &self,
        t: &Target,
        to: Option<&str>,
        ctx: &CallContext,
    ) -> Result<ActionReport, BackendError> {
        let s = &self.session(t).await?;
        if Self::undoes(s, to) {
            let found = ctx.preflight.as_ref().and_then(|p| p.from_revision.as_deref());
            self.undo(s, to, found).await
        } else {
            self.abort(s).await
        }
    }

    async fn promote(
        &self,
        t: &Target,
        full: bool,
        ctx: &CallContext,
    ) -> Result<ActionReport, BackendError> {
        let s = &self.session(t).await?;
        self.do_promote(s, full, ctx).await
    }

    /// The action itself on a dry run's session: the patches are built by
    /// the code that sends them, and kept instead of sent.
    async fn plan(
        &self,
        t: &Target,
        op: &Operation,
        ctx: &CallContext,
    ) -> Result<Plan, BackendError> {
        let s = &self.session(t).await?.plan_only();
        let report = match op {
            Operation::Rollback { to } if Self::undoes(s, to.as_deref()) => {
                self.undo(s, to.as_deref(), None).await?
            }
            Operation::Rollback { .. } => self.abort(s).await?,
            Operation::Promote { full } => {
                let r = self.do_promote(s, *full, ctx).await?;
                // Nothing was sent, so there is nothing to verify.
                self.promoted_from
                    .lock()
                    .unwrap()
                    .remove(&ctx.correlation_id);
                r
            }
            Operation::Pause => self.paused_on(s, true).await?,
            Operation::Resume => self.paused_on(s, false).await?,
        };
        Ok(Plan {
            requests: s.take_planned(),
            notes: vec![report.summary],
        })
    }

    async fn pause(&self, t: &Target, _ctx: &CallContext) -> Result<ActionReport, BackendError> {
        self.set_paused(t, true).await
    }

    async fn resume(&self, t: &Target, _ctx: &CallContext) -> Result<ActionReport, BackendError> {
        self.set_paused(t, false).await
    }

    async fn verify(
        &self,
        t: &Target,
        op: &Operation,
        report: &ActionReport,
        ctx: &CallContext,
    ) -> Result<Verification, BackendError> {
        let s = &self.session(t).await?;
        let p = &ctx.progress;
        if !report.changed {
            let ro = rollout(s, &plugin(s, "get rollout")).await?;
            return Ok(Verification {
                ok: true,
                detail: format!(
                    "nothing was changed; Rollout {} is {}",
                    s.place.name,
                    describe_rollout(&ro)
                ),
            });
        }
        match op {
            Operation::Rollback { to } if Self::undoes(s, to.as_deref()) => {
                // The controller has seen the restored template and is
                // rolling it out (not stuck on an abort).
                self.wait(
                    s,
                    p,
                    "the controller rolls out the restored template",
                    |ro| {
                        observed_generation(ro).is_some_and(|g| g >= generation(ro))
                            && phase(ro) != "Degraded"
                    },
                )
                .await
            }
            Operation::Rollback { .. } => {
                self.wait(s, p, "aborted with the canary at weight 0", |ro| {
                    aborted(ro)
                        && phase(ro) == "Degraded"
                        && aborted_by_controller(ro)
                        && canary_weight(ro).unwrap_or(0) == 0
                })
                .await
            }
            Operation::Promote { full } => {
                let from = self
                    .promoted_from
                    .lock()
                    .unwrap()
                    .remove(&ctx.correlation_id)
                    .flatten();
                let full = *full;
                self.wait(
                    s,
                    p,
                    if full {
                        "fully promoted (Healthy)"
                    } else {
                        "the next step is reached"
                    },
                    move |ro| {
                        if full {
                            return phase(ro) == "Healthy";
                        }
                        phase(ro) == "Healthy"
                            || match (from, step_index(ro)) {
                                (Some(a), Some(b)) => b > a,
                                _ => pause_reasons(ro).is_empty() && !spec_paused(ro),
                            }
                    },
                )
                .await
            }
            Operation::Pause => self.wait(s, p, "paused", spec_paused).await,
            Operation::Resume => {
                self.wait(s, p, "running again", |ro| {
                    !spec_paused(ro) && !aborted(ro) && phase(ro) != "Degraded"
                })
                .await
            }
        }
    }

    async fn status(&self, t: &Target) -> Result<BackendStatus, BackendError> {
        let s = &self.session(t).await?;
        let by_hand = plugin(s, "get rollout");
        let ro = rollout(s, &by_hand).await?;
        let revisions = revisions(s, &ro, &by_hand).await?;
        let stable = by_hash(&revisions, str_at(&ro, "/status/stableRS"));
        let canary = by_hash(&revisions, str_at(&ro, "/status/currentPodHash"))
            .filter(|c| stable.is_none_or(|st| st.hash != c.hash));
        let history = revisions
            .iter()
            .map(|r| RevisionInfo {
                revision: r.number.to_string(),
                detail: r.images(),
                change_cause: None,
                live: stable.is_some_and(|st| st.hash == r.hash),
            })
            .collect();
        let mut notes = vec![format!("phase {}", describe_rollout(&ro))];
        let reasons = pause_reasons(&ro);
        // The controller's message, unless it only repeats the pause reason.
        if let Some(m) = str_at(&ro, "/status/message")
            .filter(|m| !m.is_empty() && !reasons.iter().any(|r| r == m))
        {
            notes.push(format!("message: {m}"));
        }
        if !reasons.is_empty() {
            notes.push(format!("paused: {}", reasons.join(", ")));
        }
        let show = |r: &Revision| format!("revision {} ({})", r.number, r.images());
        if let Some(st) = stable {
            notes.push(format!("stable: {}", show(st)));
        }
        if let Some(c) = canary {
            notes.push(format!("canary: {}", show(c)));
        }
        Ok(BackendStatus {
            live_revision: stable.map(|r| r.number.to_string()),
            canary_revision: canary.map(|r| r.number.to_string()),
            canary_weight: canary_weight(&ro).map(|w| w.clamp(0, 100) as u8),
            step: step_index(&ro).map(|i| format!("{i} of {}", steps(&ro).len())),
            paused: spec_paused(&ro) || !reasons.is_empty(),
            history,
            notes,
        })
    }

    async fn rollout_complete(&self, t: &Target) -> Result<Verification, BackendError> {
        let s = &self.session(t).await?;
        let ro = rollout(s, &plugin(s, "get rollout")).await?;
        Ok(rollout::rollout_complete(&s.place.name, &ro))
    }

    async fn capability(&self, t: &Target) -> Result<capability::Capability, BackendError> {
        self.rollback_capability(t).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_checked() {
        let t = |k: &str, v: &str| BTreeMap::from([(k.to_string(), v.to_string())]);
        assert!(check_target(&t("rollout", "web")).is_ok());
        assert!(check_target(&t("mechanism", "undo")).is_ok());
        assert!(check_target(&t("mechanism", "scale"))
            .unwrap_err()
            .contains("abort, undo"));
        assert!(check_target(&t("deployment", "web"))
            .unwrap_err()
            .contains("`deployment`"));
    }
}
