//! The rollback target of a Rollout, checked ahead of time. An abort sends
//! every request back to the stable ReplicaSet (`status.stableRS`, a
//! pod-template hash), so that ReplicaSet must still exist, owned by the
//! Rollout, and its images must still be pullable: the stable pods are
//! rescheduled and scaled back up from them. An undo copies the revision
//! `kubectl argo rollouts undo` picks, which the controller deletes once
//! it is older than `spec.revisionHistoryLimit` allows.

use super::rollout::{by_hash, pick_revision, revisions, str_at, Revision};
use super::{plugin, rollout, ArgoRolloutsBackend, Mechanism, Session};
use crate::backend::capability::{pulled_images, Capability};
use crate::backend::{BackendError, Target};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde_json::Value;

/// What a rollback of this Rollout would restore, as its mechanism does.
pub(super) enum RollbackTarget<'a> {
    Found(&'a Revision),
    Missing {
        revision: Option<String>,
        reason: String,
    },
    /// Nothing can be said yet: reported, holds nothing.
    Unknown(String),
}

/// The stable ReplicaSet an abort returns to, or why there is none;
/// `rollout` is `namespace/name`.
pub(super) fn stable_target<'a>(
    rollout: &str,
    ro: &Value,
    revisions: &'a [Revision],
) -> RollbackTarget<'a> {
    let place = format!("Rollout {rollout}");
    let Some(hash) = str_at(ro, "/status/stableRS").filter(|h| !h.is_empty()) else {
        return RollbackTarget::Unknown(format!("{place} names no stable ReplicaSet (status.stableRS is empty), so what an abort returns to is unknown; check that the Argo Rollouts controller runs and has reconciled it"));
    };
    match by_hash(revisions, Some(hash)) {
        Some(r) => RollbackTarget::Found(r),
        None => RollbackTarget::Missing {
            revision: None,
            reason: format!(
                "the stable ReplicaSet of {place} (pod-template-hash {hash}) is gone, so an abort would send traffic to pods that cannot be brought back; revisions that exist: {}. Undo to one of them instead (`/rollback SERVICE REVISION`)",
                existing(revisions)
            ),
        },
    }
}

/// The revision an undo goes to, or why there is none.
pub(super) fn undo_target<'a>(
    rollout: &str,
    ro: &Value,
    revisions: &'a [Revision],
) -> RollbackTarget<'a> {
    match pick_revision(revisions, None, rollout) {
        Ok(r) => RollbackTarget::Found(r),
        Err(e) => {
            let limit = ro
                .pointer("/spec/revisionHistoryLimit")
                .and_then(Value::as_i64);
            let reason = match limit {
                Some(0) => format!("Rollout {rollout} keeps no old ReplicaSets (spec.revisionHistoryLimit is 0), so there is no revision to undo to; set revisionHistoryLimit to 1 or more (Argo Rollouts' default is 10)"),
                _ => e.to_string(),
            };
            let newest = revisions.last().map(|r| r.number);
            RollbackTarget::Missing {
                revision: newest.filter(|n| *n > 1).map(|n| (n - 1).to_string()),
                reason,
            }
        }
    }
}

fn existing(revisions: &[Revision]) -> String {
    if revisions.is_empty() {
        return "none".into();
    }
    let numbers: Vec<String> = revisions.iter().map(|r| r.number.to_string()).collect();
    numbers.join(", ")
}

/// Every image the revision's pods pull, init containers first.
fn images(r: &Revision) -> Vec<String> {
    serde_json::from_value::<PodTemplateSpec>(r.template.clone())
        .map(|t| pulled_images(&t))
        .unwrap_or_default()
}

impl ArgoRolloutsBackend {
    pub(super) async fn rollback_capability(&self, t: &Target) -> Result<Capability, BackendError> {
        let s: &Session = &self.session(t).await?;
        let by_hand = plugin(s, "get rollout");
        let ro = rollout(s, &by_hand).await?;
        let name = format!("{}/{}", s.namespace, s.place.name);
        let revisions = revisions(s, &ro, &by_hand).await?;
        let target = match s.place.mechanism {
            Mechanism::Abort => stable_target(&name, &ro, &revisions),
            Mechanism::Undo => undo_target(&name, &ro, &revisions),
        };
        Ok(match target {
            RollbackTarget::Found(r) => Capability::Target {
                revision: r.number.to_string(),
                place: format!("Rollout {name}"),
                images: images(r),
            },
            RollbackTarget::Missing { revision, reason } => {
                Capability::Missing { revision, reason }
            }
            RollbackTarget::Unknown(why) => return Err(BackendError::Refused(why)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rev(n: i64, image: &str) -> Revision {
        Revision {
            number: n,
            hash: format!("h{n}"),
            template: json!({"spec": {
                "initContainers": [{"name": "migrate", "image": "shop/migrate:1"}],
                "containers": [{"name": "app", "image": image}],
            }}),
        }
    }

    const PLACE: &str = "prod/web";

    #[test]
    fn an_abort_goes_back_to_the_stable_replica_set_with_every_image_it_pulls() {
        let revs = [rev(1, "web:1"), rev(2, "web:2"), rev(3, "web:3")];
        let ro = json!({"status": {"stableRS": "h2", "currentPodHash": "h3"}});
        let RollbackTarget::Found(r) = stable_target(PLACE, &ro, &revs) else {
            panic!("a target")
        };
        assert_eq!(r.number, 2);
        assert_eq!(images(r), ["shop/migrate:1", "web:2"]);
    }

    #[test]
    fn a_stable_replica_set_that_is_gone_or_unknown_is_missing_and_says_why() {
        let revs = [rev(3, "web:3")];
        let gone = json!({"status": {"stableRS": "h2", "currentPodHash": "h3"}});
        let RollbackTarget::Missing { reason, .. } = stable_target(PLACE, &gone, &revs) else {
            panic!("missing")
        };
        assert!(
            reason.contains("the stable ReplicaSet of Rollout prod/web (pod-template-hash h2) is gone")
                && reason.contains("revisions that exist: 3"),
            "{reason}"
        );
        let RollbackTarget::Unknown(why) = stable_target(PLACE, &json!({}), &revs) else {
            panic!("unknown")
        };
        assert!(why.contains("status.stableRS is empty"), "{why}");
    }

    #[test]
    fn an_undo_without_history_names_a_revision_history_limit_of_zero() {
        let revs = [rev(4, "web:4")];
        let ro = json!({"spec": {"revisionHistoryLimit": 0}});
        let RollbackTarget::Missing { revision, reason } = undo_target(PLACE, &ro, &revs) else {
            panic!("missing")
        };
        assert_eq!(revision.as_deref(), Some("3"));
        assert!(reason.contains("spec.revisionHistoryLimit is 0"), "{reason}");
        let ro = json!({"spec": {"revisionHistoryLimit": 2}});
        let RollbackTarget::Missing { reason, .. } = undo_target(PLACE, &ro, &revs) else {
            panic!("missing")
        };
        assert!(reason.contains("no earlier revision to undo to"), "{reason}");
        let two = [rev(4, "web:4"), rev(5, "web:5")];
        let RollbackTarget::Found(r) = undo_target(PLACE, &ro, &two) else {
            panic!("a target")
        };
        assert_eq!(r.number, 4);
    }
}
