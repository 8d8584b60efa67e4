//! The rollback target of a Deployment, checked ahead of time: the
//! ReplicaSet `kubectl rollout undo` would copy back must still exist, and
//! the images of its containers are handed on to the registry check.

use super::revisions::{pick_revision, revision_of, revisions};
use super::{deployment, KubernetesDeploymentBackend, Mechanism};
use crate::backend::capability::{pulled_images, Capability};
use crate::backend::{BackendError, Target};

impl KubernetesDeploymentBackend {
    pub(super) async fn rollback_capability(&self, t: &Target) -> Result<Capability, BackendError> {
        let s = &self.session(t).await?;
        let name = s.place.deployment.clone();
        let place = format!("Deployment {}/{name}", s.namespace);
        let d = deployment(s, &name).await?;
        if s.place.mechanism == Mechanism::ScaleCanary {
            // The rollback scales the canary away; the stable Deployment's
            // own pods must still be able to start (rescheduling pulls).
            let template = d.spec.clone().unwrap_or_default().template;
            return Ok(Capability::Target {
                revision: revision_of(&d.metadata)
                    .map(|r| r.to_string())
                    .unwrap_or_else(|| "stable".into()),
                place,
                images: pulled_images(&template),
            });
        }
        let limit = d.spec.as_ref().and_then(|s| s.revision_history_limit);
        let history = revisions(s, &d).await?;
        let live = revision_of(&d.metadata);
        let target = match pick_revision(&history, live, None, &format!("{}/{name}", s.namespace)) {
            Ok(r) => r,
            Err(BackendError::Refused(why)) => {
                let why = if limit == Some(0) {
                    format!("{place} keeps no old ReplicaSets (spec.revisionHistoryLimit is 0), so there is no revision to roll back to; set revisionHistoryLimit to 1 or more (Kubernetes' default is 10)")
                } else {
                    why
                };
                return Ok(Capability::Missing {
                    revision: live.map(|l| (l - 1).to_string()),
                    reason: why,
                });
            }
            Err(e) => return Err(e),
        };
        let template = target.template();
        let images = match (s.place.mechanism, s.place.container.as_deref()) {
            (Mechanism::SetImage, Some(c)) => super::revisions::image_of(&template, c)
                .into_iter()
                .collect(),
            _ => pulled_images(&template),
        };
        Ok(Capability::Target {
            revision: target.number.to_string(),
            place,
            images,
        })
    }
}
