//! The dry run of an Istio action: the JSON patches a rollback (each of
//! its steps) or a promote would send to the VirtualService, built by the
//! same `shift_patch` the action uses, on a copy of the VirtualService
//! that each step's patch is applied to, so the next step's `test`
//! operations show the weights the real step would find. Nothing is sent
//! and nothing waits.

use super::{
    canary_now, get, shift_patch, splits, weights_line, where_, IstioBackend, NO_PAUSE,
};
use crate::backend::{BackendError, Operation, Plan, Target};
use kube::api::Patch;

impl IstioBackend {
    pub(super) async fn plan_weights(
        &self,
        t: &Target,
        op: &Operation,
    ) -> Result<Plan, BackendError> {
        if matches!(op, Operation::Pause | Operation::Resume) {
            return Err(BackendError::Refused(NO_PAUSE.into()));
        }
        let s = &self.session(t).await?.plan_only();
        let mut vs = get(s).await?;
        let before = splits(&vs, &s.place.plan, &where_(s))?;
        let now = canary_now(&before);
        let p = &s.place.plan;
        let weights: Vec<i64> = match op {
            Operation::Rollback { .. } if before.iter().all(|x| x.canary_weight == 0) => vec![],
            Operation::Rollback { .. } => {
                p.rollback_steps.iter().copied().filter(|w| *w < now).collect()
            }
            Operation::Promote { full: true } => vec![100],
            _ => p.promote_steps.iter().copied().find(|w| *w > now).into_iter().collect(),
        };
        let weights: Vec<i64> = weights
            .into_iter()
            .filter(|w| before.iter().any(|x| x.canary_weight != *w))
            .collect();
        let mut notes = Vec::new();
        if weights.is_empty() {
            notes.push(format!(
                "nothing would be sent: VirtualService {} already reads {}",
                where_(s),
                weights_line(&before)
            ));
        }
        let api = s.custom_api(&s.place.resource);
        let n = weights.len();
        for (i, w) in weights.iter().enumerate() {
            let now = splits(&vs, p, &where_(s))?;
            let ops = shift_patch(&vs, &now, *w);
            let patch = Patch::Json(serde_json::from_value(ops.clone()).expect("a JSON patch"));
            // Kept by the plan-only session, not sent.
            s.patch(&api, &p.virtual_service, None, &patch)
                .await
                .map_err(|e| BackendError::failed(e.to_string()))?;
            set_weights(&mut vs, &ops);
            let after = splits(&vs, p, &where_(s))?;
            let step = if n > 1 {
                format!("step {} of {n}: ", i + 1)
            } else {
                String::new()
            };
            notes.push(format!(
                "{step}VirtualService {} would read {}",
                where_(s),
                weights_line(&after)
            ));
            if i + 1 < n {
                notes.push(format!(
                    "then it would wait {} (step_interval)",
                    crate::domain::human_duration(p.step_interval)
                ));
            }
        }
        if let Some(last) = weights.last() {
            notes.push(format!(
                "then it would verify that every route sends canary {last}%"
            ));
        }
        Ok(Plan {
            requests: s.take_planned(),
            notes,
        })
    }
}

/// Applies a weight shift's `replace` and `add` operations to the copy
/// (they set a route's `weight`; its `test` operations hold on the copy
/// by construction).
fn set_weights(vs: &mut serde_json::Value, ops: &serde_json::Value) {
    for op in ops.as_array().into_iter().flatten() {
        if !matches!(op["op"].as_str(), Some("replace" | "add")) {
            continue;
        }
        let path = op["path"].as_str().unwrap_or_default();
        let Some((parent, key)) = path.rsplit_once('/') else {
            continue;
        };
        if let Some(serde_json::Value::Object(m)) = vs.pointer_mut(parent) {
            m.insert(key.to_string(), op["value"].clone());
        }
    }
}
