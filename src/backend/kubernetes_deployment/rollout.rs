//! Waiting for a Deployment like `kubectl rollout status`, and for a
//! canary Deployment scaled to zero.

use super::{deployment, kubectl, revision_of, KubernetesDeploymentBackend, Session};
use crate::backend::poll::{poll_until, Look, Polled};
use crate::backend::{BackendError, Progress, Verification};
use k8s_openapi::api::apps::v1::Deployment;
use std::time::Duration;

/// Where rollout status stands, in `kubectl rollout status` terms.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Rollout {
    /// The controller has not seen the latest spec yet.
    NotObserved,
    Waiting(String),
    Done,
    /// The controller gave up (`ProgressDeadlineExceeded`).
    Stuck(String),
}

pub(super) fn rollout_state(d: &Deployment) -> Rollout {
    let name = d.metadata.name.clone().unwrap_or_default();
    let generation = d.metadata.generation.unwrap_or(0);
    let status = d.status.clone().unwrap_or_default();
    if status.observed_generation.unwrap_or(0) < generation {
        return Rollout::NotObserved;
    }
    if let Some(c) = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Progressing")
    {
        if c.reason.as_deref() == Some("ProgressDeadlineExceeded") {
            return Rollout::Stuck(format!(
                "deployment \"{name}\" exceeded its progress deadline: {}",
                c.message.clone().unwrap_or_default()
            ));
        }
    }
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let updated = status.updated_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    let ready = status.ready_replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    if updated < want {
        return Rollout::Waiting(format!(
            "{updated} out of {want} new replicas have been updated"
        ));
    }
    if total > updated {
        return Rollout::Waiting(format!(
            "{} old replicas are pending termination",
            total - updated
        ));
    }
    if available < updated || ready < updated {
        return Rollout::Waiting(format!(
            "{} of {updated} updated replicas are available",
            available.min(ready)
        ));
    }
    Rollout::Done
}

impl KubernetesDeploymentBackend {
    /// Waits like `kubectl rollout status`, reporting each change of the numbers.
    pub(super) async fn wait_rollout(
        &self,
        s: &Session,
        progress: &Progress,
    ) -> Result<Verification, BackendError> {
        let name = s.place.deployment.clone();
        let started = tokio::time::Instant::now();
        let waited = poll_until(
            self.s.rollout_timeout,
            self.s.poll_interval,
            |reads| async move {
                let d = deployment(s, &s.place.deployment).await?;
                Ok(match rollout_state(&d) {
                    Rollout::Done => Look::Done(Ok((d, reads))),
                    Rollout::Stuck(why) => Look::Done(Err(why)),
                    waiting => Look::Waiting(waiting),
                })
            },
            |state| match state {
                Rollout::Waiting(w) => progress.report(format!(
                    "waiting for Deployment {name} rollout to finish: {w}"
                )),
                Rollout::NotObserved => progress.report(format!(
                    "waiting for the Deployment controller to observe {name}'s new spec"
                )),
                _ => {}
            },
        )
        .await?;
        let by_hand = kubectl(s, &format!("rollout status deployment/{name}"));
        Ok(match waited {
            Polled::Done(Ok((d, reads))) => {
                let took = match started.elapsed() {
                    t if t < Duration::from_secs(1) => format!("{} ms", t.as_millis()),
                    t => crate::domain::human_duration(t),
                };
                let rev = revision_of(&d.metadata)
                    .map(|r| format!(" as revision {r}"))
                    .unwrap_or_default();
                Verification {
                    ok: true,
                    detail: format!(
                        "deployment \"{name}\" successfully rolled out{rev} ({} replicas updated and available, after {took}, {reads} {})",
                        d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
                        if reads == 1 { "read" } else { "reads" }
                    ),
                }
            }
            Polled::Done(Err(why)) => Verification {
                ok: false,
                detail: format!("{why}; see {by_hand}"),
            },
            Polled::TimedOut { last, .. } => {
                let at = match last {
                    Rollout::Waiting(w) => w,
                    _ => "the controller has not observed the new spec".into(),
                };
                Verification {
                    ok: false,
                    detail: format!(
                        "the rollout of Deployment {}/{name} did not complete within {} (last: {at}); check {by_hand} and the pods' events",
                        s.namespace,
                        crate::domain::human_duration(self.s.rollout_timeout),
                    ),
                }
            }
        })
    }

    /// One read of `kubectl rollout status`: complete, or where it stands.
    pub(super) async fn rollout_complete_now(
        &self,
        s: &Session,
    ) -> Result<Verification, BackendError> {
        let name = s.place.deployment.clone();
        let d = deployment(s, &name).await?;
        let (ok, detail) = match rollout_state(&d) {
            Rollout::Done => {
                let rev = revision_of(&d.metadata)
                    .map(|r| format!(" at revision {r}"))
                    .unwrap_or_default();
                let n = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                (true, format!("deployment \"{name}\" is fully rolled out{rev} ({n} replicas updated and available)"))
            }
            Rollout::Waiting(w) => (false, format!("deployment \"{name}\": {w}")),
            Rollout::Stuck(w) => (false, w),
            Rollout::NotObserved => (
                false,
                format!("the Deployment controller has not observed {name}'s latest spec"),
            ),
        };
        Ok(Verification { ok, detail })
    }

    /// Waits until the canary Deployment has no pods left.
    pub(super) async fn wait_scaled_down(
        &self,
        s: &Session,
        progress: &Progress,
    ) -> Result<Verification, BackendError> {
        let canary = s.place.canary.clone().unwrap_or_default();
        let waited = poll_until(
            self.s.rollout_timeout,
            self.s.poll_interval,
            |_| {
                let canary = &canary;
                async move {
                    let d = deployment(s, canary).await?;
                    Ok(
                        match d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0) {
                            0 => Look::Done(()),
                            left => Look::Waiting(left),
                        },
                    )
                }
            },
            |left| {
                progress.report(format!(
                    "waiting for canary {canary}: {left} pods still terminating"
                ))
            },
        )
        .await?;
        Ok(match waited {
            Polled::Done(()) => Verification {
                ok: true,
                detail: format!("canary Deployment {canary} has no pods left"),
            },
            Polled::TimedOut { last, .. } => Verification {
                ok: false,
                detail: format!(
                    "canary Deployment {}/{canary} still has {last} pods after {}; check {}",
                    s.namespace,
                    crate::domain::human_duration(self.s.rollout_timeout),
                    kubectl(s, &format!("get deployment {canary}"))
                ),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn rollout_state_follows_kubectl_rollout_status() {
        let d = |gen: i64, status: Value| -> Deployment {
            serde_json::from_value(json!({
                "metadata": {"name": "web", "generation": gen},
                "spec": {"replicas": 3, "selector": {}, "template": {}},
                "status": status,
            }))
            .unwrap()
        };
        assert_eq!(
            rollout_state(&d(2, json!({"observedGeneration": 1}))),
            Rollout::NotObserved
        );
        assert_eq!(
            rollout_state(&d(
                2,
                json!({"observedGeneration": 2, "updatedReplicas": 1, "replicas": 4})
            )),
            Rollout::Waiting("1 out of 3 new replicas have been updated".into())
        );
        assert_eq!(
            rollout_state(&d(
                2,
                json!({"observedGeneration": 2, "updatedReplicas": 3, "replicas": 4})
            )),
            Rollout::Waiting("1 old replicas are pending termination".into())
        );
        assert_eq!(
            rollout_state(&d(
                2,
                json!({"observedGeneration": 2, "updatedReplicas": 3, "replicas": 3, "readyReplicas": 3, "availableReplicas": 2})
            )),
            Rollout::Waiting("2 of 3 updated replicas are available".into())
        );
        assert_eq!(
            rollout_state(&d(
                2,
                json!({"observedGeneration": 2, "updatedReplicas": 3, "replicas": 3, "readyReplicas": 3, "availableReplicas": 3})
            )),
            Rollout::Done
        );
        let stuck = d(
            2,
            json!({"observedGeneration": 2, "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "ReplicaSet \"web-1\" has timed out progressing."}]}),
        );
        assert!(
            matches!(rollout_state(&stuck), Rollout::Stuck(m) if m.contains("exceeded its progress deadline"))
        );
    }
}
