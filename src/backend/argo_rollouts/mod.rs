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

pub use config::ArgoRolloutsConfig;

use super::kube_common::{self, KubeConnection};
use super::poll::{poll_until, Look, Polled};
use super::*;
use k8s_openapi::api::apps::v1::ReplicaSet;
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

// --- Reading a Rollout (as JSON: the CRD has no typed model here) ---------

fn str_at<'a>(v: &'a Value, ptr: &str) -> Option<&'a str> {
    v.pointer(ptr).and_then(Value::as_str)
}

fn steps(ro: &Value) -> Vec<Value> {
    ro.pointer("/spec/strategy/canary/steps")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn is_canary(ro: &Value) -> bool {
    ro.pointer("/spec/strategy/canary")
        .is_some_and(|c| !c.is_null())
}

/// `status.currentStepIndex` as the plugin reads it: `None` without steps,
/// 0 when unset (`GetCurrentCanaryStep`).
fn step_index(ro: &Value) -> Option<i64> {
    if !is_canary(ro) || steps(ro).is_empty() {
        return None;
    }
    Some(
        ro.pointer("/status/currentStepIndex")
            .and_then(Value::as_i64)
            .unwrap_or(0),
    )
}

fn aborted(ro: &Value) -> bool {
    ro.pointer("/status/abort").and_then(Value::as_bool) == Some(true)
}

fn spec_paused(ro: &Value) -> bool {
    ro.pointer("/spec/paused").and_then(Value::as_bool) == Some(true)
}

fn phase(ro: &Value) -> String {
    str_at(ro, "/status/phase").unwrap_or("Unknown").to_string()
}

fn pause_reasons(ro: &Value) -> Vec<String> {
    ro.pointer("/status/pauseConditions")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|c| c["reason"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether the controller says the rollout was aborted: the `Progressing`
/// condition or the status message carries `RolloutAborted`.
fn aborted_by_controller(ro: &Value) -> bool {
    let in_conditions = ro
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| cs.iter().any(|c| c["reason"] == "RolloutAborted"));
    in_conditions || str_at(ro, "/status/message").is_some_and(|m| m.starts_with("RolloutAborted"))
}

/// The canary's share of traffic: what the traffic router was told
/// (`status.canary.weights`), else the controller's `GetCurrentSetWeight`:
/// 0 when aborted, the last setWeight at or before the current step, 100
/// past the last step.
fn canary_weight(ro: &Value) -> Option<i64> {
    if let Some(w) = ro
        .pointer("/status/canary/weights/canary/weight")
        .and_then(Value::as_i64)
    {
        return Some(w);
    }
    if aborted(ro) {
        return Some(0);
    }
    let idx = step_index(ro)?;
    let steps = steps(ro);
    if idx as usize >= steps.len() {
        return Some(100);
    }
    Some(
        steps[..=idx as usize]
            .iter()
            .rev()
            .find_map(|s| s["setWeight"].as_i64())
            .unwrap_or(0),
    )
}

/// `status.observedGeneration` is a string in Argo Rollouts; accept a number too.
fn observed_generation(ro: &Value) -> Option<i64> {
    match ro.pointer("/status/observedGeneration")? {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

fn generation(ro: &Value) -> i64 {
    ro.pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

fn images_of(template: &Value) -> String {
    template
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c["image"].as_str())
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

/// A template without the hash label, nulls, empty lists and maps: what
/// `equalIgnoreHash` compares.
fn comparable_template(t: &Value) -> Value {
    let mut t = t.clone();
    if let Some(labels) = t
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove(HASH_LABEL);
    }
    normalized(&t)
}

fn normalized(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), normalized(v)))
                .filter(|(_, v)| match v {
                    Value::Null => false,
                    Value::Array(a) => !a.is_empty(),
                    Value::Object(m) => !m.is_empty(),
                    _ => true,
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(normalized).collect()),
        other => other.clone(),
    }
}

/// A label selector in the query form (`app=web,tier in (a,b)`).
fn selector_string(sel: &Value) -> String {
    let mut parts: Vec<String> = sel["matchLabels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    for e in sel["matchExpressions"].as_array().into_iter().flatten() {
        let key = e["key"].as_str().unwrap_or_default();
        let values = e["values"]
            .as_array()
            .map(|v| {
                v.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        parts.push(match e["operator"].as_str().unwrap_or_default() {
            "In" => format!("{key} in ({values})"),
            "NotIn" => format!("{key} notin ({values})"),
            "Exists" => key.to_string(),
            _ => format!("!{key}"),
        });
    }
    parts.join(",")
}

/// One revision of a Rollout: its ReplicaSet.
#[derive(Clone, Debug)]
struct Revision {
    number: i64,
    hash: String,
    template: Value,
}

impl Revision {
    fn images(&self) -> String {
        images_of(&self.template)
    }
}

/// The patches `kubectl argo rollouts promote [--full]` sends for this
/// Rollout (`getPatches`): spec patch, status patch, and the unified patch
/// sent to the object instead when `/status` is not served.
#[derive(Debug, PartialEq)]
struct PromotePatches {
    spec: Option<Value>,
    status: Option<Value>,
    unified: Option<Value>,
}

fn promote_patches(ro: &Value, full: bool) -> PromotePatches {
    let mut p = PromotePatches {
        spec: None,
        status: None,
        unified: None,
    };
    if full {
        if str_at(ro, "/status/currentPodHash") != str_at(ro, "/status/stableRS") {
            p.status = Some(body(PROMOTE_FULL));
        }
        return p;
    }
    p.unified = Some(body(UNPAUSE_AND_CLEAR));
    if spec_paused(ro) {
        p.spec = Some(body(UNPAUSE));
    }
    let next = |idx: i64| {
        if (idx as usize) < steps(ro).len() {
            idx + 1
        } else {
            idx
        }
    };
    let has_conditions = !pause_reasons(ro).is_empty()
        || ro
            .pointer("/status/pauseConditions")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty());
    let inconclusive = is_canary(ro)
        && str_at(ro, "/status/canary/currentStepAnalysisRunStatus/status") == Some("Inconclusive");
    let controller_pause = ro
        .pointer("/status/controllerPause")
        .and_then(Value::as_bool)
        == Some(true);
    if inconclusive && has_conditions && controller_pause {
        // Paused on an inconclusive analysis: clear the controller's pause
        // and move past the step, or it stays stuck before a pause step.
        if let Some(idx) = step_index(ro) {
            p.status = Some(
                json!({"status": {"pauseConditions": null, "controllerPause": false, "currentStepIndex": next(idx)}}),
            );
        }
    } else if has_conditions {
        p.status = Some(body(CLEAR_PAUSE_CONDITIONS));
    } else if is_canary(ro) {
        // In the middle of an analysis or experiment step: skip it.
        if let Some(idx) = step_index(ro) {
            p.status =
                Some(json!({"status": {"pauseConditions": null, "currentStepIndex": next(idx)}}));
            p.unified = Some(
                json!({"spec": {"paused": false}, "status": {"pauseConditions": null, "currentStepIndex": next(idx)}}),
            );
        }
    }
    p
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

/// The Rollout's ReplicaSets by revision, oldest first: those its selector
/// matches and that it controls.
async fn revisions(s: &Session, ro: &Value, by_hand: &str) -> Result<Vec<Revision>, BackendError> {
    let selector = selector_string(&ro["spec"]["selector"]);
    let list = s
        .list(&s.api::<ReplicaSet>(), &selector)
        .await
        .map_err(|e| s.fail("listing the Rollout's ReplicaSets", &e, by_hand))?;
    let uid = str_at(ro, "/metadata/uid").unwrap_or_default().to_string();
    let mut out: Vec<Revision> = list
        .into_iter()
        .filter(|rs| {
            rs.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.uid == uid && o.controller == Some(true))
        })
        .filter_map(|rs| {
            let number = rs
                .metadata
                .annotations
                .as_ref()?
                .get(REVISION)?
                .parse()
                .ok()?;
            let hash = rs
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(HASH_LABEL).cloned())
                .unwrap_or_default();
            let template = serde_json::to_value(rs.spec.as_ref()?.template.as_ref()?).ok()?;
            Some(Revision {
                number,
                hash,
                template,
            })
        })
        .collect();
    out.sort_by_key(|r| r.number);
    Ok(out)
}

fn by_hash<'a>(revisions: &'a [Revision], hash: Option<&str>) -> Option<&'a Revision> {
    let hash = hash?;
    revisions.iter().find(|r| r.hash == hash)
}

/// The revision an undo goes to: `to` (a number, or an image or tag), or the
/// second newest, as `kubectl argo rollouts undo` picks it.
fn pick_revision<'a>(
    revisions: &'a [Revision],
    to: Option<&str>,
    rollout: &str,
) -> Result<&'a Revision, BackendError> {
    let existing = if revisions.is_empty() {
        "none".to_string()
    } else {
        revisions
            .iter()
            .map(|r| r.number.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match to {
        Some(t) => {
            let t = t.trim();
            let Ok(n) = t.trim_start_matches("revision").trim().parse::<i64>() else {
                let runs = |r: &&Revision| {
                    r.images().split(", ").any(|i| {
                        i == t || i.ends_with(&format!(":{t}")) || i.ends_with(&format!("/{t}"))
                    })
                };
                return revisions.iter().rev().find(runs).ok_or_else(|| {
                    BackendError::Refused(format!(
                        "`{t}` is neither a revision number nor an image or tag of Rollout {rollout}; revisions that exist: {existing} (see `/status` for their images)"
                    ))
                });
            };
            revisions.iter().find(|r| r.number == n).ok_or_else(|| {
                BackendError::Refused(format!(
                    "revision {n} of Rollout {rollout} does not exist (its ReplicaSet is gone, e.g. beyond revisionHistoryLimit); revisions that exist: {existing}"
                ))
            })
        }
        None if revisions.len() >= 2 => Ok(&revisions[revisions.len() - 2]),
        None => Err(BackendError::Refused(format!(
            "Rollout {rollout} has no earlier revision to undo to; revisions that exist: {existing}"
        ))),
    }
}

/// `Degraded (RolloutAborted), step 1 of 4, canary weight 0%`.
fn describe_rollout(ro: &Value) -> String {
    let mut s = phase(ro);
    let reasons = pause_reasons(ro);
    if aborted_by_controller(ro) {
        s.push_str(" (RolloutAborted)");
    } else if !reasons.is_empty() {
        s.push_str(&format!(" ({})", reasons.join(", ")));
    }
    if let Some(i) = step_index(ro) {
        s.push_str(&format!(", step {i} of {}", steps(ro).len()));
    }
    if let Some(w) = canary_weight(ro) {
        s.push_str(&format!(", canary weight {w}%"));
    }
    s
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
                "Rollout {}/{} aborted: traffic goes back to stable {} and canary {} is scaled down; spec.template still names the canary, so an undo (`/rollback {} REVISION`) makes it final",
                s.namespace,
                s.place.name,
                show(stable),
                show(canary),
                s.place.name
            ),
            from_revision: rev(canary),
            to_revision: rev(stable),
            changed: true,
            requests: s.take_requests(),
        })
    }

    async fn undo(&self, s: &Session, to: Option<&str>) -> Result<ActionReport, BackendError> {
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
        let patch = json!([{"op": "replace", "path": "/spec/template", "value": template}]);
        let patch: Patch<Value> = Patch::Json(serde_json::from_value(patch).expect("a JSON patch"));
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
                "Rollout {}/{}: template of revision {} ({}) restored over revision {} ({})",
                s.namespace,
                s.place.name,
                target.number,
                target.images(),
                live.clone().unwrap_or_else(|| "?".into()),
                images_of(&current["spec"]["template"])
            ),
            from_revision: live,
            to_revision: Some(target.number.to_string()),
            changed: true,
            requests: s.take_requests(),
        })
    }

    async fn do_promote(
        &self,
        s: &Session,
        full: bool,
        ctx: &CallContext,
    ) -> Result<ActionReport, BackendError> {
        let verb = if full { "promote --full" } else { "promote" };
        let by_hand = format!(
            "`kubectl argo rollouts {verb} {} -n {}`",
            s.place.name, s.namespace
        );
        let ro = rollout(s, &by_hand).await?;
        if aborted(&ro) {
            return Err(BackendError::Refused(format!(
                "Rollout {}/{} is aborted; resume it first (`/resume`, or {}) and promote again",
                s.namespace,
                s.place.name,
                plugin(s, "retry rollout")
            )));
        }
        let before = describe_rollout(&ro);
        let p = promote_patches(&ro, full);
        if p.spec.is_none() && p.status.is_none() {
            return Ok(ActionReport {
                summary: format!(
                    "nothing to do: Rollout {}/{} is {} and {}",
                    s.namespace,
                    s.place.name,
                    before,
                    if full {
                        "fully promoted already (current revision is stable)"
                    } else {
                        "not paused"
                    }
                ),
                changed: false,
                requests: s.take_requests(),
                ..Default::default()
            });
        }
        let fail = |e: &kube::Error| {
            s.fail(
                &format!("promoting Rollout {}/{}", s.namespace, s.place.name),
                e,
                &by_hand,
            )
        };
        let mut spec = p.spec;
        if let Some(status) = p.status {
            match patch(s, Some("status"), status).await {
                Ok(_) => {}
                // No status subresource: the unified patch goes to the object.
                Err(e) if kube_common::is_not_found(&e) => spec = p.unified,
                Err(e) => return Err(fail(&e)),
            }
        }
        if let Some(spec) = spec {
            patch(s, None, spec).await.map_err(|e| fail(&e))?;
        }
        // Kept for verification only once something was sent.
        self.promoted_from
            .lock()
            .unwrap()
            .insert(ctx.correlation_id.clone(), step_index(&ro));
        Ok(ActionReport {
            summary: format!(
                "Rollout {}/{} {} (was {before})",
                s.namespace,
                s.place.name,
                if full {
                    "fully promoted: remaining steps, pauses and analyses are skipped"
                } else {
                    "promoted to its next step"
                }
            ),
            changed: true,
            requests: s.take_requests(),
            ..Default::default()
        })
    }

    async fn set_paused(&self, t: &Target, pause: bool) -> Result<ActionReport, BackendError> {
        let s = &self.session(t).await?;
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
                    "Rollout {}/{} retried: the aborted update starts again from its first step",
                    s.namespace, s.place.name
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
                    "paused: the controller takes no further step until it is resumed"
                } else {
                    "resumed"
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
        _ctx: &CallContext,
    ) -> Result<ActionReport, BackendError> {
        let s = &self.session(t).await?;
        if Self::undoes(s, to) {
            self.undo(s, to).await
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
                    &s,
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
                    &s,
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ro(status: Value, paused: bool) -> Value {
        json!({
            "metadata": {"name": "web", "generation": 3},
            "spec": {"paused": paused, "strategy": {"canary": {"steps": [
                {"setWeight": 20}, {"pause": {}}, {"analysis": {"templates": []}}, {"setWeight": 60}, {"pause": {"duration": "1m"}},
            ]}}},
            "status": status,
        })
    }

    #[test]
    fn promote_sends_the_plugins_patches() {
        // Paused on a pause step: clear the conditions only.
        let p = promote_patches(
            &ro(
                json!({"currentStepIndex": 1, "pauseConditions": [{"reason": "CanaryPauseStep"}], "controllerPause": true}),
                false,
            ),
            false,
        );
        assert_eq!(p.status, Some(json!({"status": {"pauseConditions": null}})));
        assert_eq!(p.spec, None);
        assert_eq!(
            p.unified,
            Some(json!({"spec": {"paused": false}, "status": {"pauseConditions": null}}))
        );
        // Paused by hand as well: the spec patch too.
        let p = promote_patches(
            &ro(
                json!({"currentStepIndex": 1, "pauseConditions": [{"reason": "CanaryPauseStep"}]}),
                true,
            ),
            false,
        );
        assert_eq!(p.spec, Some(json!({"spec": {"paused": false}})));
        // In an analysis step: skip to the next.
        let p = promote_patches(&ro(json!({"currentStepIndex": 2}), false), false);
        assert_eq!(
            p.status,
            Some(json!({"status": {"pauseConditions": null, "currentStepIndex": 3}}))
        );
        assert_eq!(
            p.unified,
            Some(
                json!({"spec": {"paused": false}, "status": {"pauseConditions": null, "currentStepIndex": 3}})
            )
        );
        // Past the last step the index stays.
        let p = promote_patches(&ro(json!({"currentStepIndex": 5}), false), false);
        assert_eq!(
            p.status,
            Some(json!({"status": {"pauseConditions": null, "currentStepIndex": 5}}))
        );
        // Inconclusive analysis with the controller's pause.
        let p = promote_patches(
            &ro(
                json!({"currentStepIndex": 2, "controllerPause": true,
                "pauseConditions": [{"reason": "InconclusiveAnalysisRun"}],
                "canary": {"currentStepAnalysisRunStatus": {"status": "Inconclusive"}}}),
                false,
            ),
            false,
        );
        assert_eq!(
            p.status,
            Some(
                json!({"status": {"pauseConditions": null, "controllerPause": false, "currentStepIndex": 3}})
            )
        );
        // Full: only when the current revision is not yet stable.
        let p = promote_patches(
            &ro(json!({"currentPodHash": "a", "stableRS": "b"}), false),
            true,
        );
        assert_eq!(p.status, Some(json!({"status": {"promoteFull": true}})));
        let p = promote_patches(
            &ro(json!({"currentPodHash": "a", "stableRS": "a"}), false),
            true,
        );
        assert_eq!(
            p,
            PromotePatches {
                spec: None,
                status: None,
                unified: None
            }
        );
    }

    #[test]
    fn the_canary_weight_follows_the_controller() {
        assert_eq!(
            canary_weight(&ro(json!({"currentStepIndex": 0}), false)),
            Some(20)
        );
        assert_eq!(
            canary_weight(&ro(json!({"currentStepIndex": 2}), false)),
            Some(20)
        );
        assert_eq!(
            canary_weight(&ro(json!({"currentStepIndex": 4}), false)),
            Some(60)
        );
        assert_eq!(
            canary_weight(&ro(json!({"currentStepIndex": 5}), false)),
            Some(100)
        );
        assert_eq!(
            canary_weight(&ro(json!({"currentStepIndex": 3, "abort": true}), false)),
            Some(0)
        );
        assert_eq!(
            canary_weight(&ro(
                json!({"currentStepIndex": 3, "canary": {"weights": {"canary": {"weight": 35}}}}),
                false
            )),
            Some(35)
        );
        assert_eq!(
            describe_rollout(&ro(
                json!({"phase": "Paused", "currentStepIndex": 1, "pauseConditions": [{"reason": "CanaryPauseStep"}]}),
                false
            )),
            "Paused (CanaryPauseStep), step 1 of 5, canary weight 20%"
        );
    }

    #[test]
    fn undo_picks_the_second_newest_or_names_what_exists() {
        let r = |n| Revision {
            number: n,
            hash: format!("h{n}"),
            template: json!({"spec": {"containers": [{"name": "app", "image": format!("web:1.{n}")}]}}),
        };
        let revs = [r(2), r(4), r(5)];
        assert_eq!(pick_revision(&revs, None, "p/web").unwrap().number, 4);
        assert_eq!(pick_revision(&revs, Some("2"), "p/web").unwrap().number, 2);
        assert_eq!(
            pick_revision(&revs, Some("1.4"), "p/web").unwrap().number,
            4
        );
        let e = pick_revision(&revs, Some("3"), "p/web")
            .unwrap_err()
            .to_string();
        assert!(e.contains("revision 3") && e.contains("2, 4, 5"), "{e}");
        assert!(pick_revision(&revs[..1], None, "p/web").is_err());
    }

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
