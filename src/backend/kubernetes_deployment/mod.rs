//! Rolls back a plain Kubernetes Deployment the way `kubectl rollout undo`
//! does, and pauses, resumes and reports it like `kubectl rollout
//! pause/resume/history/status`.
//!
//! Mechanisms (`[services.target] mechanism`):
//! - `undo` (default): copy the target revision's ReplicaSet template back
//!   into the Deployment with the same JSON patch kubectl sends;
//! - `scale-canary`: scale a separate canary Deployment to zero through its
//!   `/scale` subresource, as `kubectl scale --replicas=0` does;
//! - `set-image`: pin one container to the target revision's image with the
//!   strategic merge patch `kubectl set image` sends.

mod rollback_target;
mod config;
mod revisions;
mod rollout;

pub use config::KubernetesDeploymentConfig;

use revisions::{
    annotations, image_of, images, pick_revision, revision_of, revisions, same_template,
    template_json, Revision,
};
use rollout::{rollout_state, Rollout};

use super::kube_common::{self, KubeConnection};
use super::*;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Patch;
use kube_common::DEFAULT_ROLLOUT_TIMEOUT;
#[cfg(test)]
use kube_common::{default_rollout_timeout, default_rollout_timeout_for};
use serde_json::{json, Value};

/// The annotation holding a ReplicaSet's (and its Deployment's) revision.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";
const POD_TEMPLATE_HASH: &str = "pod-template-hash";

/// Annotations an undo keeps from the Deployment instead of copying them
/// from the ReplicaSet (kubectl's `annotationsToSkip`).
const KEPT_FROM_DEPLOYMENT: [&str; 6] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    "deployment.kubernetes.io/revision-history",
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
    "deprecated.deployment.rollback.to",
];

/// How the backend is set up; built from `[backends.NAME]` with
/// `type = "kubernetes-deployment"`.
#[derive(Clone, Debug)]
pub struct KubernetesDeploymentSettings {
    pub connection: KubeConnection,
    /// How long verification waits for a rollout to complete.
    pub rollout_timeout: Duration,
    /// Pause between two reads of the Deployment while waiting.
    pub poll_interval: Duration,
}

impl Default for KubernetesDeploymentSettings {
    fn default() -> Self {
        KubernetesDeploymentSettings {
            connection: KubeConnection::default(),
            rollout_timeout: DEFAULT_ROLLOUT_TIMEOUT,
            poll_interval: Duration::from_secs(2),
        }
    }
}

/// How a rollback is done, per service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    Undo,
    ScaleCanary,
    SetImage,
}

pub const MECHANISMS: [&str; 3] = ["undo", "scale-canary", "set-image"];

impl Mechanism {
    pub fn parse(s: Option<&str>) -> Result<Mechanism, String> {
        match s.unwrap_or("undo") {
            "undo" => Ok(Mechanism::Undo),
            "scale-canary" => Ok(Mechanism::ScaleCanary),
            "set-image" => Ok(Mechanism::SetImage),
            other => Err(format!(
                "mechanism `{other}` is not one of {}",
                MECHANISMS.join(", ")
            )),
        }
    }
}

/// Checks a service's `[services.target]` for this backend; the config
/// loader reports the error at the service.
pub fn check_target(settings: &BTreeMap<String, String>) -> Result<(), String> {
    const KNOWN: [&str; 5] = [
        "namespace",
        "deployment",
        "mechanism",
        "canary_deployment",
        "container",
    ];
    if let Some(k) = settings.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(format!(
            "`{k}` is not a target setting of a kubernetes-deployment backend (known: {})",
            KNOWN.join(", ")
        ));
    }
    match Mechanism::parse(settings.get("mechanism").map(String::as_str))? {
        Mechanism::ScaleCanary if !settings.contains_key("canary_deployment") => Err(
            "mechanism `scale-canary` needs canary_deployment = \"NAME\" (the Deployment scaled to zero)"
                .into(),
        ),
        Mechanism::SetImage if !settings.contains_key("container") => Err(
            "mechanism `set-image` needs container = \"NAME\" (the container whose image is pinned)"
                .into(),
        ),
        _ => Ok(()),
    }
}

/// Which Deployment a service is, how it is rolled back, and the kubectl
/// command that does the current operation by hand.
#[derive(Clone, Debug)]
struct Place {
    deployment: String,
    mechanism: Mechanism,
    canary: Option<String>,
    container: Option<String>,
    by_hand: String,
}

pub struct KubernetesDeploymentBackend {
    s: KubernetesDeploymentSettings,
}

/// The calls of one action, with the record of every request.
type Session = kube_common::Session<Place>;

/// The kubectl command for `args` in the service's namespace.
fn kubectl(s: &Session, args: &str) -> String {
    format!("`kubectl -n {} {args}`", s.namespace)
}

/// A rollback is computed from the live revision ("undo" means "to the one
/// before"), so one that moved since preflight (another replica, a person
/// or a pipeline rolled it back meanwhile) would be undone by this one:
/// stop, send nothing, and say so.
fn as_preflight_found(
    s: &Session,
    name: &str,
    live: Option<i64>,
    found: Option<&str>,
) -> Result<(), BackendError> {
    let Some(found) = found else { return Ok(()) };
    let now = live.map(|l| l.to_string());
    if now.as_deref() == Some(found) {
        return Ok(());
    }
    Err(BackendError::Failed {
        message: format!(
            "Deployment {}/{name} changed since preflight: it runs revision {} now, not revision {found} as preflight found, so no rollback was sent (someone else changed it meanwhile: another rollbot replica, a person or a pipeline). Check {} and roll back again if it is still needed.",
            s.namespace,
            now.unwrap_or_else(|| "?".into()),
            kubectl(s, &format!("rollout history deployment/{name}"))
        ),
        requests: s.take_requests(),
    })
}

/// The Deployment `name`; a missing one is refused naming what to check.
async fn deployment(s: &Session, name: &str) -> Result<Deployment, BackendError> {
    let check = "namespace and deployment for this service";
    s.read(&s.api(), "Deployment", name, check, &s.place.by_hand)
        .await
}

impl KubernetesDeploymentBackend {
    pub fn new(s: KubernetesDeploymentSettings) -> KubernetesDeploymentBackend {
        KubernetesDeploymentBackend { s }
    }

    async fn session(&self, t: &Target) -> Result<Session, BackendError> {
        let mut s = Session::open(&self.s.connection, t, |t| {
            Ok(Place {
                deployment: t
                    .settings
                    .get("deployment")
                    .cloned()
                    .unwrap_or_else(|| t.service.clone()),
                mechanism: Mechanism::parse(t.settings.get("mechanism").map(String::as_str))?,
                canary: t.settings.get("canary_deployment").cloned(),
                container: t.settings.get("container").cloned(),
                by_hand: String::new(),
            })
        })
        .await?;
        s.place.by_hand = kubectl(
            &s,
            &format!("rollout status deployment/{}", s.place.deployment),
        );
        Ok(s)
    }

    /// A session for `op`: its errors name the kubectl command for `op`.
    async fn session_for(&self, t: &Target, op: &Operation) -> Result<Session, BackendError> {
        let mut s = self.session(t).await?;
        let (d, ns) = (s.place.deployment.clone(), s.namespace.clone());
        let cmd = match op {
            Operation::Rollback { .. } if s.place.mechanism == Mechanism::ScaleCanary => format!(
                "scale deployment/{} --replicas=0",
                s.place.canary.clone().unwrap_or_default()
            ),
            Operation::Rollback { .. } if s.place.mechanism == Mechanism::SetImage => format!(
                "rollout history deployment/{d}` for the image, then `kubectl -n {ns} set image deployment/{d} {}=IMAGE",
                s.place.container.clone().unwrap_or_default(),
            ),
            Operation::Rollback { to } => match to.as_deref().map(str::parse::<i64>) {
                Some(Ok(n)) => format!("rollout undo deployment/{d} --to-revision={n}"),
                _ => format!("rollout undo deployment/{d}"),
            },
            Operation::Pause => format!("rollout pause deployment/{d}"),
            Operation::Resume => format!("rollout resume deployment/{d}"),
            Operation::Promote { .. } => format!("rollout status deployment/{d}"),
        };
        s.place.by_hand = format!("`kubectl -n {ns} {cmd}`");
        Ok(s)
    }

    /// Checks a rollback can be done, without changing anything.
    async fn plan_rollback(
        &self,
        s: &Session,
        to: Option<&str>,
    ) -> Result<(Deployment, Vec<Revision>, Option<i64>, i64), BackendError> {
        let name = s.place.deployment.clone();
        let d = deployment(s, &name).await?;
        if d.spec.as_ref().and_then(|s| s.paused) == Some(true) {
            return Err(BackendError::Refused(format!(
                "Deployment {}/{name} is paused; a paused Deployment cannot be rolled back. Resume it first (`/resume`, or {}) and try again",
                s.namespace,
                kubectl(s, &format!("rollout resume deployment/{name}"))
            )));
        }
        let revisions = revisions(s, &d).await?;
        let live = revision_of(&d.metadata);
        let target =
            pick_revision(&revisions, live, to, &format!("{}/{name}", s.namespace))?.number;
        Ok((d, revisions, live, target))
    }

    async fn undo(
        &self,
        s: &Session,
        to: Option<&str>,
        found: Option<&str>,
    ) -> Result<ActionReport, BackendError> {
        let name = s.place.deployment.clone();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (d, revisions, live, target) = self.plan_rollback(s, to).await?;
            let rev = revisions.iter().find(|r| r.number == target).unwrap();
            let current = d.spec.clone().unwrap_or_default().template;
            let from = live.map(|l| l.to_string());
            if same_template(&rev.template(), &current) {
                return Ok(ActionReport {
                    summary: format!(
                        "nothing to do: Deployment {}/{name} already runs the template of revision {target} ({})",
                        s.namespace,
                        rev.images()
                    ),
                    // The title reads "to 3", not "3 → 3": nothing moved.
                    from_revision: None,
                    to_revision: Some(target.to_string()),
                    changed: false,
                    requests: s.take_requests(),
                });
            }
            as_preflight_found(s, &name, live, found)?;
            // kubectl keeps the Deployment's bookkeeping annotations and takes
            // every other annotation (change-cause…) from the ReplicaSet.
            let mut new_annotations = BTreeMap::new();
            let da = annotations(&d.metadata);
            for k in KEPT_FROM_DEPLOYMENT {
                if let Some(v) = da.get(k) {
                    new_annotations.insert(k.to_string(), v.clone());
                }
            }
            for (k, v) in annotations(&rev.rs.metadata) {
                if !KEPT_FROM_DEPLOYMENT.contains(&k.as_str()) {
                    new_annotations.insert(k, v);
                }
            }
            // `replace` needs the member to exist; kubectl would fail on a
            // Deployment without annotations, `add` sets it either way.
            let op = if d.metadata.annotations.is_some() {
                "replace"
            } else {
                "add"
            };
            let mut body = json!([
                {"op": "replace", "path": "/spec/template", "value": template_json(&rev.template())},
                {"op": op, "path": "/metadata/annotations", "value": new_annotations},
            ]);
            // kubectl's patch, made conditional on the Deployment read just
            // now: a write in between makes it a 409 Conflict, and the
            // loop reads it again (and stops if the revision moved).
            if let Some(rv) = &d.metadata.resource_version {
                body.as_array_mut().expect("a list").push(
                    json!({"op": "replace", "path": "/metadata/resourceVersion", "value": rv}),
                );
            }
            let patch: Patch<Value> =
                Patch::Json(serde_json::from_value(body).expect("a JSON patch"));
            match s.patch(&s.api::<Deployment>(), &name, None, &patch).await {
                Ok(_) => {
                    let live_images = images(&current);
                    return Ok(ActionReport {
                        summary: format!(
                            "Deployment {}/{name}: template of revision {target} ({}) {} over revision {} ({live_images})",
                            s.namespace,
                            rev.images(),
                            s.tense("restored", "would be restored"),
                            from.clone().unwrap_or_else(|| "?".into()),
                        ),
                        from_revision: from,
                        to_revision: Some(target.to_string()),
                        changed: true,
                        requests: s.take_requests(),
                    });
                }
                // Someone wrote in between: read it again and recompute.
                Err(e) if kube_common::again_after_conflict(&e, attempt).await => {}
                Err(e) => {
                    return Err(s.fail(
                        &format!("patching Deployment {}/{name}", s.namespace),
                        &e,
                        &kubectl(
                            s,
                            &format!("rollout undo deployment/{name} --to-revision={target}"),
                        ),
                    ))
                }
            }
        }
    }

    async fn set_image(
        &self,
        s: &Session,
        to: Option<&str>,
        found: Option<&str>,
    ) -> Result<ActionReport, BackendError> {
        let name = s.place.deployment.clone();
        let container = s.place.container.clone().unwrap_or_default();
        let (d, revisions, live, target) = self.plan_rollback(s, to).await?;
        let rev = revisions.iter().find(|r| r.number == target).unwrap();
        let want = image_of(&rev.template(), &container).ok_or_else(|| {
            BackendError::Refused(format!(
                "revision {target} of Deployment {}/{name} has no container `{container}`; check [services.target] container",
                s.namespace
            ))
        })?;
        let current = d.spec.clone().unwrap_or_default().template;
        let now = image_of(&current, &container);
        let from = live.map(|l| l.to_string());
        if now.as_deref() == Some(want.as_str()) {
            return Ok(ActionReport {
                summary: format!(
                    "nothing to do: container {container} of Deployment {}/{name} already runs {want}",
                    s.namespace
                ),
                from_revision: None,
                to_revision: Some(target.to_string()),
                changed: false,
                requests: s.take_requests(),
            });
        }
        as_preflight_found(s, &name, live, found)?;
        // The body `kubectl set image deployment/NAME CONTAINER=IMAGE` sends;
        // `$setElementOrder` keeps the containers in their order.
        let order: Vec<Value> = current
            .spec
            .as_ref()
            .map(|s| {
                s.containers
                    .iter()
                    .map(|c| json!({"name": c.name}))
                    .collect()
            })
            .unwrap_or_default();
        let patch = Patch::Strategic(json!({
            "spec": {"template": {"spec": {
                "$setElementOrder/containers": order,
                "containers": [{"name": container, "image": want}],
            }}}
        }));
        let sent = s
            .patch_retrying(&s.api::<Deployment>(), &name, None, &patch)
            .await;
        sent.map_err(|e| {
            s.fail(
                &format!("patching Deployment {}/{name}", s.namespace),
                &e,
                &kubectl(
                    s,
                    &format!("set image deployment/{name} {container}={want}"),
                ),
            )
        })?;
        Ok(ActionReport {
            summary: format!(
                "container {container} of Deployment {}/{name} {} to {want} (revision {target}) from {}",
                s.namespace,
                s.tense("set back", "would be set back"),
                now.unwrap_or_else(|| "?".into())
            ),
            from_revision: from,
            to_revision: Some(target.to_string()),
            changed: true,
            requests: s.take_requests(),
        })
    }

    async fn scale_canary(&self, s: &Session) -> Result<ActionReport, BackendError> {
        let canary = s.place.canary.clone().unwrap_or_default();
        let d = deployment(s, &canary).await?;
        let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        if replicas == 0 {
            return Ok(ActionReport {
                summary: format!(
                    "nothing to do: canary Deployment {}/{canary} is already scaled to zero",
                    s.namespace
                ),
                changed: false,
                requests: s.take_requests(),
                ..Default::default()
            });
        }
        // What `kubectl scale --replicas=0` sends, to the /scale subresource.
        let patch = Patch::Merge(json!({"spec": {"replicas": 0}}));
        let sent = s
            .patch_retrying(&s.api::<Deployment>(), &canary, Some("scale"), &patch)
            .await;
        sent.map_err(|e| {
            s.fail(
                &format!("scaling canary Deployment {}/{canary}", s.namespace),
                &e,
                &kubectl(s, &format!("scale deployment/{canary} --replicas=0")),
            )
        })?;
        Ok(ActionReport {
            summary: format!(
                "canary Deployment {}/{canary} {} from {replicas} to 0 replicas",
                s.namespace,
                s.tense("scaled", "would be scaled")
            ),
            from_revision: Some(format!("canary ×{replicas}")),
            to_revision: Some("canary ×0".into()),
            changed: true,
            requests: s.take_requests(),
        })
    }

    /// A rollback by the service's mechanism on session `s`; `found` is
    /// the live revision preflight found (none for a dry run).
    async fn roll_back(
        &self,
        s: &Session,
        to: Option<&str>,
        found: Option<&str>,
    ) -> Result<ActionReport, BackendError> {
        match s.place.mechanism {
            Mechanism::Undo => self.undo(s, to, found).await,
            Mechanism::SetImage => self.set_image(s, to, found).await,
            Mechanism::ScaleCanary => self.scale_canary(s).await,
        }
    }

    async fn set_paused(&self, t: &Target, paused: bool) -> Result<ActionReport, BackendError> {
        let op = if paused {
            Operation::Pause
        } else {
            Operation::Resume
        };
        let s = &self.session_for(t, &op).await?;
        self.paused_on(s, paused).await
    }

    async fn paused_on(&self, s: &Session, paused: bool) -> Result<ActionReport, BackendError> {
        let name = s.place.deployment.clone();
        let verb = if paused { "pause" } else { "resume" };
        let d = deployment(s, &name).await?;
        let is_paused = d.spec.as_ref().and_then(|s| s.paused) == Some(true);
        if is_paused == paused {
            return Ok(ActionReport {
                summary: format!(
                    "nothing to do: Deployment {}/{name} is already {}",
                    s.namespace,
                    if paused { "paused" } else { "not paused" }
                ),
                changed: false,
                requests: s.take_requests(),
                ..Default::default()
            });
        }
        let patch = Patch::Merge(json!({"spec": {"paused": paused}}));
        let sent = s
            .patch_retrying(&s.api::<Deployment>(), &name, None, &patch)
            .await;
        sent.map_err(|e| {
            s.fail(
                &format!("{verb} of Deployment {}/{name}", s.namespace),
                &e,
                &kubectl(s, &format!("rollout {verb} deployment/{name}")),
            )
        })?;
        Ok(ActionReport {
            summary: format!(
                "Deployment {}/{name} {}",
                s.namespace,
                if paused {
                    s.tense(
                        "paused: the controller makes no rollout progress until it is resumed",
                        "would be paused: the controller would make no rollout progress until it is resumed",
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
}

const NO_PROMOTE: &str = "a plain Kubernetes Deployment has no canary step to promote: roll the new version out with your pipeline (or `kubectl set image`), or use an argo-rollouts backend for step-wise promotion";

#[async_trait]
impl RollbackBackend for KubernetesDeploymentBackend {
    fn kind(&self) -> &'static str {
        "kubernetes-deployment"
    }

    async fn preflight(
        &self,
        t: &Target,
        op: &Operation,
        _ctx: &CallContext,
    ) -> Result<Preflight, BackendError> {
        let s = &self.session_for(t, op).await?;
        match op {
            Operation::Promote { .. } => Err(BackendError::Refused(NO_PROMOTE.into())),
            Operation::Rollback { to } if s.place.mechanism == Mechanism::ScaleCanary => {
                let canary = s.place.canary.clone().unwrap_or_default();
                let d = deployment(s, &canary).await?;
                Ok(Preflight {
                    notes: vec![format!(
                        "canary Deployment {}/{canary} has {} replicas{}",
                        s.namespace,
                        d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
                        if to.is_some() {
                            "; scale-canary ignores a target revision"
                        } else {
                            ""
                        }
                    )],
                    ..Default::default()
                })
            }
            Operation::Rollback { to } => {
                let (d, revisions, live, target) = self.plan_rollback(s, to.as_deref()).await?;
                let rev = revisions.iter().find(|r| r.number == target).unwrap();
                let current = d.spec.clone().unwrap_or_default().template;
                let mut notes = vec![format!(
                    "Deployment {}/{}: live revision {} ({}), target revision {target} ({})",
                    s.namespace,
                    s.place.deployment,
                    live.map(|l| l.to_string()).unwrap_or_else(|| "?".into()),
                    images(&current),
                    rev.images()
                )];
                match (s.place.mechanism, s.place.container.as_deref()) {
                    (Mechanism::SetImage, Some(c)) => notes.push(format!(
                        "container {c}: live image {}, target image {}",
                        image_of(&current, c).unwrap_or_else(|| "none".into()),
                        image_of(&rev.template(), c).unwrap_or_else(|| "none".into())
                    )),
                    _ if same_template(&rev.template(), &current) => {
                        notes.push("the template already matches the target revision".into())
                    }
                    _ => {}
                }
                Ok(Preflight {
                    from_revision: live.map(|l| l.to_string()),
                    to_revision: Some(target.to_string()),
                    notes,
                })
            }
            Operation::Pause | Operation::Resume => {
                let name = s.place.deployment.clone();
                let d = deployment(s, &name).await?;
                Ok(Preflight {
                    from_revision: revision_of(&d.metadata).map(|r| r.to_string()),
                    notes: vec![format!(
                        "Deployment {}/{name} is {}",
                        s.namespace,
                        if d.spec.as_ref().and_then(|s| s.paused) == Some(true) {
                            "paused"
                        } else {
                            "not paused"
                        }
                    )],
                    ..Default::default()
                })
            }
        }
    }

    async fn rollback(
        &self,
        t: &Target,
        to: Option<&str>,
        ctx: &CallContext,
    ) -> Result<ActionReport, BackendError> {
        let op = Operation::Rollback {
            to: to.map(str::to_string),
        };
        let s = &self.session_for(t, &op).await?;
        let found = ctx.preflight.as_ref().and_then(|p| p.from_revision.as_deref());
        self.roll_back(s, to, found).await
    }

    /// The rollback itself on a dry run's session: the patches are built
    /// by the code that sends them, and kept instead of sent.
    async fn plan(
        &self,
        t: &Target,
        op: &Operation,
        _ctx: &CallContext,
    ) -> Result<Plan, BackendError> {
        let s = &self.session_for(t, op).await?.plan_only();
        let report = match op {
            Operation::Rollback { to } => self.roll_back(s, to.as_deref(), None).await?,
            Operation::Promote { .. } => return Err(BackendError::Refused(NO_PROMOTE.into())),
            Operation::Pause => self.paused_on(s, true).await?,
            Operation::Resume => self.paused_on(s, false).await?,
        };
        let mut notes = vec![report.summary];
        if matches!(op, Operation::Rollback { .. }) && s.place.mechanism != Mechanism::ScaleCanary
        {
            notes.push(format!(
                "then it would wait for the rollout to complete ({})",
                s.place.by_hand
            ));
        }
        Ok(Plan {
            requests: s.take_planned(),
            notes,
        })
    }

    async fn promote(
        &self,
        _t: &Target,
        _full: bool,
        _ctx: &CallContext,
    ) -> Result<ActionReport, BackendError> {
        Err(BackendError::Refused(NO_PROMOTE.into()))
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
        match op {
            Operation::Rollback { .. } if s.place.mechanism == Mechanism::ScaleCanary => {
                self.wait_scaled_down(s, &ctx.progress).await
            }
            Operation::Rollback { .. } | Operation::Resume => {
                if !report.changed && matches!(op, Operation::Rollback { .. }) {
                    // Nothing was sent; still say whether the live rollout is healthy.
                    let name = s.place.deployment.clone();
                    let d = deployment(s, &name).await?;
                    let state = rollout_state(&d);
                    return Ok(Verification {
                        ok: true,
                        detail: match state {
                            Rollout::Done => format!("nothing was changed; deployment \"{name}\" is fully rolled out"),
                            Rollout::Waiting(w) | Rollout::Stuck(w) => format!("nothing was changed; deployment \"{name}\": {w}"),
                            Rollout::NotObserved => format!("nothing was changed; the controller has not observed {name}'s latest spec yet"),
                        },
                    });
                }
                self.wait_rollout(s, &ctx.progress).await
            }
            Operation::Pause => {
                let name = s.place.deployment.clone();
                let d = deployment(s, &name).await?;
                let paused = d.spec.as_ref().and_then(|s| s.paused) == Some(true);
                Ok(Verification {
                    ok: paused,
                    detail: if paused {
                        format!("Deployment {name} has spec.paused = true")
                    } else {
                        format!("Deployment {name} is not paused: someone resumed it in between")
                    },
                })
            }
            Operation::Promote { .. } => Err(BackendError::Refused(NO_PROMOTE.into())),
        }
    }

    async fn status(&self, t: &Target) -> Result<BackendStatus, BackendError> {
        let s = &self.session(t).await?;
        let name = s.place.deployment.clone();
        let d = deployment(s, &name).await?;
        let revisions = revisions(s, &d).await?;
        let live = revision_of(&d.metadata);
        let paused = d.spec.as_ref().and_then(|s| s.paused) == Some(true);
        let history = revisions
            .iter()
            .map(|r| RevisionInfo {
                revision: r.number.to_string(),
                detail: r.images(),
                change_cause: r.change_cause(),
                live: Some(r.number) == live,
            })
            .collect();
        let mut notes = vec![match rollout_state(&d) {
            Rollout::Done => format!("deployment \"{name}\" is fully rolled out"),
            Rollout::Waiting(w) => format!("rollout in progress: {w}"),
            Rollout::Stuck(w) => w,
            Rollout::NotObserved => "the controller has not observed the latest spec yet".into(),
        }];
        // The chat view of `/status` shows notes, not history details: the
        // newest revisions go there too, as `kubectl rollout history` lists them.
        if !revisions.is_empty() {
            let recent: Vec<String> = revisions
                .iter()
                .rev()
                .take(5)
                .rev()
                .map(|r| {
                    format!(
                        "{}{} {}{}",
                        r.number,
                        if Some(r.number) == live { "*" } else { "" },
                        r.images(),
                        r.change_cause()
                            .map(|c| format!(" ({c})"))
                            .unwrap_or_default()
                    )
                })
                .collect();
            notes.push(format!("history: {}", recent.join("; ")));
        }
        let mut canary_revision = None;
        if let (Mechanism::ScaleCanary, Some(c)) = (s.place.mechanism, s.place.canary.clone()) {
            match deployment(s, &c).await {
                Ok(cd) => {
                    let n = cd.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                    let img = images(&cd.spec.clone().unwrap_or_default().template);
                    canary_revision = Some(img.clone());
                    notes.push(format!("canary Deployment {c}: {img}, {n} replicas"));
                }
                Err(e) => notes.push(e.to_string()),
            }
        }
        Ok(BackendStatus {
            live_revision: live.map(|l| l.to_string()),
            canary_revision,
            paused,
            history,
            notes,
            ..Default::default()
        })
    }

    async fn capability(&self, t: &Target) -> Result<capability::Capability, BackendError> {
        self.rollback_capability(t).await
    }

    async fn rollout_complete(&self, t: &Target) -> Result<Verification, BackendError> {
        let s = &self.session(t).await?;
        self.rollout_complete_now(s).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_checked() {
        let t = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        assert!(check_target(&t(&[("namespace", "prod")])).is_ok());
        assert!(check_target(&t(&[("mechanism", "scale-canary")]))
            .unwrap_err()
            .contains("canary_deployment"));
        assert!(check_target(&t(&[("mechanism", "set-image")]))
            .unwrap_err()
            .contains("container"));
        assert!(check_target(&t(&[("mechanism", "rollback")]))
            .unwrap_err()
            .contains("undo, scale-canary, set-image"));
        assert!(check_target(&t(&[("deploy", "web")]))
            .unwrap_err()
            .contains("`deploy`"));
        assert_eq!(
            default_rollout_timeout(Duration::from_secs(120)),
            Duration::from_secs(105)
        );
        assert_eq!(
            default_rollout_timeout_for(Duration::from_secs(120), Duration::from_secs(30)),
            Duration::from_secs(85)
        );
        assert_eq!(
            default_rollout_timeout(Duration::from_secs(900)),
            Duration::from_secs(300)
        );
    }
}
