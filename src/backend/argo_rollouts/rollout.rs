//! Reading a Rollout, as JSON (the CRD has no typed model here): its
//! phase, step, pause reasons and canary weight as the plugin shows them,
//! and its revisions (ReplicaSets), including the one an undo goes to.

use super::{Session, HASH_LABEL, REVISION};
use crate::backend::BackendError;
use serde_json::Value;

pub(super) fn str_at<'a>(v: &'a Value, ptr: &str) -> Option<&'a str> {
    v.pointer(ptr).and_then(Value::as_str)
}

pub(super) fn steps(ro: &Value) -> Vec<Value> {
    ro.pointer("/spec/strategy/canary/steps")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

pub(super) fn is_canary(ro: &Value) -> bool {
    ro.pointer("/spec/strategy/canary")
        .is_some_and(|c| !c.is_null())
}

/// `status.currentStepIndex` as the plugin reads it: `None` without steps,
/// 0 when unset (`GetCurrentCanaryStep`).
pub(super) fn step_index(ro: &Value) -> Option<i64> {
    if !is_canary(ro) || steps(ro).is_empty() {
        return None;
    }
    Some(
        ro.pointer("/status/currentStepIndex")
            .and_then(Value::as_i64)
            .unwrap_or(0),
    )
}

pub(super) fn aborted(ro: &Value) -> bool {
    ro.pointer("/status/abort").and_then(Value::as_bool) == Some(true)
}

pub(super) fn spec_paused(ro: &Value) -> bool {
    ro.pointer("/spec/paused").and_then(Value::as_bool) == Some(true)
}

pub(super) fn phase(ro: &Value) -> String {
    str_at(ro, "/status/phase").unwrap_or("Unknown").to_string()
}

pub(super) fn pause_reasons(ro: &Value) -> Vec<String> {
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
pub(super) fn aborted_by_controller(ro: &Value) -> bool {
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
pub(super) fn canary_weight(ro: &Value) -> Option<i64> {
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
pub(super) fn observed_generation(ro: &Value) -> Option<i64> {
    match ro.pointer("/status/observedGeneration")? {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

pub(super) fn generation(ro: &Value) -> i64 {
    ro.pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

pub(super) fn images_of(template: &Value) -> String {
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
pub(super) fn comparable_template(t: &Value) -> Value {
    let mut t = t.clone();
    if let Some(labels) = t
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove(HASH_LABEL);
    }
    normalized(&t)
}

pub(super) fn normalized(v: &Value) -> Value {
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
pub(super) fn selector_string(sel: &Value) -> String {
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
pub(super) struct Revision {
    pub(super) number: i64,
    pub(super) hash: String,
    pub(super) template: Value,
}

impl Revision {
    pub(super) fn images(&self) -> String {
        images_of(&self.template)
    }
}

/// The Rollout's ReplicaSets by revision, oldest first: those its selector
/// matches and that it controls.
pub(super) async fn revisions(
    s: &Session,
    ro: &Value,
    by_hand: &str,
) -> Result<Vec<Revision>, BackendError> {
    let selector = selector_string(&ro["spec"]["selector"]);
    let uid = str_at(ro, "/metadata/uid").unwrap_or_default().to_string();
    let mut out: Vec<Revision> = s
        .replica_sets(&selector, &uid, "Rollout", by_hand)
        .await?
        .into_iter()
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

pub(super) fn by_hash<'a>(revisions: &'a [Revision], hash: Option<&str>) -> Option<&'a Revision> {
    let hash = hash?;
    revisions.iter().find(|r| r.hash == hash)
}

/// The revision an undo goes to: `to` (a number, or an image or tag), or the
/// second newest, as `kubectl argo rollouts undo` picks it.
pub(super) fn pick_revision<'a>(
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

/// Whether a Rollout's rollout is complete after a rollback: the
/// controller saw the latest spec and the Rollout is `Healthy`, or it was
/// aborted with the canary at weight 0 (the stable ReplicaSet serves
/// everything); in both cases with every replica available.
pub(super) fn rollout_complete(name: &str, ro: &Value) -> crate::backend::Verification {
    let want = ro
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let available = ro
        .pointer("/status/availableReplicas")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let observed = observed_generation(ro).is_some_and(|g| g >= generation(ro));
    let settled = phase(ro) == "Healthy"
        || (aborted(ro) && aborted_by_controller(ro) && canary_weight(ro).unwrap_or(0) == 0);
    let ok = observed && settled && available >= want;
    let detail = format!(
        "Rollout {name} is {}, {available} of {want} replicas available{}",
        describe_rollout(ro),
        if observed { "" } else { ", its latest spec not yet observed by the controller" }
    );
    crate::backend::Verification { ok, detail }
}

/// `Degraded (RolloutAborted), step 1 of 4, canary weight 0%`.
pub(super) fn describe_rollout(ro: &Value) -> String {
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

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use serde_json::json;

    /// A canary Rollout with five steps.
    pub(in crate::backend::argo_rollouts) fn ro(status: Value, paused: bool) -> Value {
        json!({
            "metadata": {"name": "web", "generation": 3},
            "spec": {"paused": paused, "strategy": {"canary": {"steps": [
                {"setWeight": 20}, {"pause": {}}, {"analysis": {"templates": []}}, {"setWeight": 60}, {"pause": {"duration": "1m"}},
            ]}}},
            "status": status,
        })
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
    fn a_rollout_is_complete_when_healthy_or_aborted_at_weight_zero_with_every_replica() {
        let st = |extra: Value| {
            let mut v = json!({"observedGeneration": "3", "availableReplicas": 1});
            v.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            v
        };
        let done = |status: Value| rollout_complete("web", &ro(status, false));
        assert!(done(st(json!({"phase": "Healthy"}))).ok);
        let aborted = done(st(json!({"phase": "Degraded", "abort": true,
            "conditions": [{"type": "Progressing", "reason": "RolloutAborted"}]})));
        assert!(aborted.ok, "{aborted:?}");
        assert!(aborted.detail.contains("Degraded (RolloutAborted)"), "{aborted:?}");
        let moving = done(st(json!({"phase": "Progressing", "currentStepIndex": 3})));
        assert!(!moving.ok && moving.detail.contains("Progressing"), "{moving:?}");
        let unseen = done(json!({"phase": "Healthy", "observedGeneration": "2", "availableReplicas": 1}));
        assert!(!unseen.ok && unseen.detail.contains("not yet observed"), "{unseen:?}");
        let short = done(st(json!({"phase": "Healthy", "availableReplicas": 0})));
        assert!(!short.ok && short.detail.contains("0 of 1 replicas available"), "{short:?}");
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
}
