//! Promotion: the patches `kubectl argo rollouts promote [--full]` sends,
//! chosen from the Rollout's state.

use super::rollout::{
    aborted, describe_rollout, is_canary, pause_reasons, spec_paused, step_index, steps, str_at,
};
use super::{body, patch, plugin, rollout, ArgoRolloutsBackend, Session};
use super::{CLEAR_PAUSE_CONDITIONS, PROMOTE_FULL, UNPAUSE, UNPAUSE_AND_CLEAR};
use crate::backend::kube_common;
use crate::backend::{ActionReport, BackendError, CallContext};
use serde_json::{json, Value};

/// The patches `kubectl argo rollouts promote [--full]` sends for this
/// Rollout (`getPatches`): spec patch, status patch, and the unified patch
/// sent to the object instead when `/status` is not served.
#[derive(Debug, PartialEq)]
pub(super) struct PromotePatches {
    pub(super) spec: Option<Value>,
    pub(super) status: Option<Value>,
    pub(super) unified: Option<Value>,
}

pub(super) fn promote_patches(ro: &Value, full: bool) -> PromotePatches {
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

impl ArgoRolloutsBackend {
    pub(super) async fn do_promote(
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
                    s.tense(
                        "fully promoted: remaining steps, pauses and analyses are skipped",
                        "would be fully promoted: remaining steps, pauses and analyses would be skipped",
                    )
                } else {
                    s.tense("promoted to its next step", "would be promoted to its next step")
                }
            ),
            changed: true,
            requests: s.take_requests(),
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::argo_rollouts::rollout::tests::ro;

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
}
