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

mod config;

pub use config::KubernetesDeploymentConfig;

use super::kube_common::{self, KubeConnection};
use super::poll::{poll_until, Look, Polled};
use super::*;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
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

/// One revision of a Deployment: its ReplicaSet.
#[derive(Clone, Debug)]
struct Revision {
    number: i64,
    rs: ReplicaSet,
}

impl Revision {
    fn template(&self) -> PodTemplateSpec {
        self.rs
            .spec
            .as_ref()
            .and_then(|s| s.template.clone())
            .unwrap_or_default()
    }

    fn images(&self) -> String {
        images(&self.template())
    }

    fn change_cause(&self) -> Option<String> {
        annotations(&self.rs.metadata).get(CHANGE_CAUSE).cloned()
    }
}

fn annotations(m: &kube::api::ObjectMeta) -> BTreeMap<String, String> {
    m.annotations.clone().unwrap_or_default()
}

fn revision_of(m: &kube::api::ObjectMeta) -> Option<i64> {
    annotations(m).get(REVISION).and_then(|r| r.parse().ok())
}

fn images(t: &PodTemplateSpec) -> String {
    t.spec
        .as_ref()
        .map(|s| {
            s.containers
                .iter()
                .map(|c| c.image.clone().unwrap_or_default())
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

fn image_of(t: &PodTemplateSpec, container: &str) -> Option<String> {
    t.spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == container)
        .and_then(|c| c.image.clone())
}

/// A pod template as JSON, without the `pod-template-hash` label.
fn template_json(t: &PodTemplateSpec) -> Value {
    let mut v = serde_json::to_value(t).unwrap_or_default();
    if let Some(labels) = v
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove(POD_TEMPLATE_HASH);
    }
    v
}

/// Drops nulls, empty lists and empty maps: the API machinery's semantic
/// equality treats an empty list or map like a missing one.
fn normalized(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), normalized(v)))
                .filter(|(_, v)| !is_empty(v))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(normalized).collect()),
        other => other.clone(),
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
        _ => false,
    }
}

/// `kubectl`'s `equalIgnoreHash`.
fn same_template(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    normalized(&template_json(a)) == normalized(&template_json(b))
}

/// A label selector in the query form (`app=web,tier in (a,b)`).
fn selector_string(sel: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector) -> String {
    let mut parts: Vec<String> = sel
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for e in sel.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default().join(",");
        parts.push(match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "Exists" => e.key.clone(),
            _ => format!("!{}", e.key),
        });
    }
    parts.join(",")
}

/// Where rollout status stands, in `kubectl rollout status` terms.
#[derive(Clone, Debug, PartialEq)]
enum Rollout {
    /// The controller has not seen the latest spec yet.
    NotObserved,
    Waiting(String),
    Done,
    /// The controller gave up (`ProgressDeadlineExceeded`).
    Stuck(String),
}

fn rollout_state(d: &Deployment) -> Rollout {
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

/// The calls of one action, with the record of every request.
type Session = kube_common::Session<Place>;

/// The kubectl command for `args` in the service's namespace.
fn kubectl(s: &Session, args: &str) -> String {
    format!("`kubectl -n {} {args}`", s.namespace)
}

/// The Deployment `name`; a missing one is refused naming what to check.
async fn deployment(s: &Session, name: &str) -> Result<Deployment, BackendError> {
    let check = "namespace and deployment for this service";
    s.read(&s.api(), "Deployment", name, check, &s.place.by_hand)
        .await
}

/// The Deployment's ReplicaSets by revision, oldest first: those its
/// selector matches and that it controls (kubectl's `GetAllReplicaSets`).
async fn revisions(s: &Session, d: &Deployment) -> Result<Vec<Revision>, BackendError> {
    let selector = d
        .spec
        .as_ref()
        .map(|s| selector_string(&s.selector))
        .unwrap_or_default();
    let list = s
        .list(&s.api::<ReplicaSet>(), &selector)
        .await
        .map_err(|e| s.fail("listing the Deployment's ReplicaSets", &e, &s.place.by_hand))?;
    let uid = d.metadata.uid.clone().unwrap_or_default();
    let mut out: Vec<Revision> = list
        .into_iter()
        .filter(|rs| {
            rs.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.uid == uid && o.controller == Some(true))
        })
        .filter_map(|rs| revision_of(&rs.metadata).map(|number| Revision { number, rs }))
        .collect();
    out.sort_by_key(|r| r.number);
    Ok(out)
}

/// The revision a rollback goes to: `to`, or the highest below the live one.
fn pick_revision<'a>(
    revisions: &'a [Revision],
    live: Option<i64>,
    to: Option<&str>,
    deployment: &str,
) -> Result<&'a Revision, BackendError> {
    let existing = revisions
        .iter()
        .map(|r| r.number.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let existing = if existing.is_empty() {
        "none".to_string()
    } else {
        existing
    };
    match to {
        Some(t) => {
            let t = t.trim();
            let Ok(n) = t.trim_start_matches("revision").trim().parse::<i64>() else {
                // An image or tag names the newest revision that ran it.
                let runs = |r: &&Revision| {
                    let images = r.images();
                    images.split(", ").any(|i| {
                        i == t || i.ends_with(&format!(":{t}")) || i.ends_with(&format!("/{t}"))
                    })
                };
                return revisions.iter().rev().find(runs).ok_or_else(|| {
                    BackendError::Refused(format!(
                        "`{t}` is neither a revision number nor an image or tag of Deployment {deployment}; revisions that exist: {existing} (see `/status` for their images)"
                    ))
                });
            };
            revisions.iter().find(|r| r.number == n).ok_or_else(|| {
                BackendError::Refused(format!(
                    "revision {n} of Deployment {deployment} does not exist (its ReplicaSet is gone, e.g. beyond revisionHistoryLimit); revisions that exist: {existing}"
                ))
            })
        }
        None => {
            let live = live.or_else(|| revisions.last().map(|r| r.number));
            revisions
                .iter()
                .rev()
                .find(|r| live.is_some_and(|l| r.number < l))
                .ok_or_else(|| {
                    BackendError::Refused(format!(
                        "Deployment {deployment} has no revision before the live one to roll back to; revisions that exist: {existing}"
                    ))
                })
        }
    }
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

    async fn undo(&self, s: &Session, to: Option<&str>) -> Result<ActionReport, BackendError> {
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
            let body = json!([
                {"op": "replace", "path": "/spec/template", "value": template_json(&rev.template())},
                {"op": op, "path": "/metadata/annotations", "value": new_annotations},
            ]);
            let patch: Patch<Value> =
                Patch::Json(serde_json::from_value(body).expect("a JSON patch"));
            match s.patch(&s.api::<Deployment>(), &name, None, &patch).await {
                Ok(_) => {
                    let live_images = images(&current);
                    return Ok(ActionReport {
                        summary: format!(
                            "Deployment {}/{name}: template of revision {target} ({}) restored over revision {} ({live_images})",
                            s.namespace,
                            rev.images(),
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

    async fn set_image(&self, s: &Session, to: Option<&str>) -> Result<ActionReport, BackendError> {
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
                "container {container} of Deployment {}/{name} set back to {want} (revision {target}) from {}",
                s.namespace,
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
                "canary Deployment {}/{canary} scaled from {replicas} to 0 replicas",
                s.namespace
            ),
            from_revision: Some(format!("canary ×{replicas}")),
            to_revision: Some("canary ×0".into()),
            changed: true,
            requests: s.take_requests(),
        })
    }

    async fn set_paused(&self, t: &Target, paused: bool) -> Result<ActionReport, BackendError> {
        let op = if paused {
            Operation::Pause
        } else {
            Operation::Resume
        };
        let s = &self.session_for(t, &op).await?;
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
                    "paused: the controller makes no rollout progress until it is resumed"
                } else {
                    "resumed"
                }
            ),
            changed: true,
            requests: s.take_requests(),
            ..Default::default()
        })
    }

    /// Waits like `kubectl rollout status`, reporting each change of the numbers.
    async fn wait_rollout(
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

    /// Waits until the canary Deployment has no pods left.
    async fn wait_scaled_down(
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
        _ctx: &CallContext,
    ) -> Result<ActionReport, BackendError> {
        let op = Operation::Rollback {
            to: to.map(str::to_string),
        };
        let s = &self.session_for(t, &op).await?;
        match s.place.mechanism {
            Mechanism::Undo => self.undo(s, to).await,
            Mechanism::SetImage => self.set_image(s, to).await,
            Mechanism::ScaleCanary => self.scale_canary(s).await,
        }
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(n: i64) -> Revision {
        let rs: ReplicaSet = serde_json::from_value(json!({
            "metadata": {"name": format!("web-{n}"), "annotations": {REVISION: n.to_string()}},
            "spec": {"selector": {}, "template": {"spec": {"containers": [
                {"name": "app", "image": format!("registry.example.com/web:1.{}", n % 3)},
            ]}}},
        }))
        .unwrap();
        Revision { number: n, rs }
    }

    #[test]
    fn an_image_or_tag_names_the_newest_revision_that_ran_it() {
        // Revisions 2 and 5 both ran web:1.2.
        let revs = [rev(2), rev(4), rev(5)];
        assert_eq!(
            pick_revision(&revs, Some(5), Some("1.2"), "p/web")
                .unwrap()
                .number,
            5
        );
        assert_eq!(
            pick_revision(&revs, Some(5), Some("1.1"), "p/web")
                .unwrap()
                .number,
            4
        );
        assert_eq!(
            pick_revision(
                &revs,
                Some(5),
                Some("registry.example.com/web:1.1"),
                "p/web"
            )
            .unwrap()
            .number,
            4
        );
        assert_eq!(
            pick_revision(&revs, Some(5), Some("web:1.1"), "p/web")
                .unwrap()
                .number,
            4
        );
        assert!(pick_revision(&revs, Some(5), Some("eb:1.1"), "p/web").is_err());
        assert!(pick_revision(&revs, Some(5), Some("1.7"), "p/web").is_err());
    }

    #[test]
    fn the_previous_revision_is_the_highest_below_the_live_one() {
        let revs = [rev(2), rev(4), rev(5)];
        assert_eq!(
            pick_revision(&revs, Some(5), None, "p/web").unwrap().number,
            4
        );
        // After a rollback to 2 the live revision is 6 (the reused ReplicaSet).
        assert_eq!(
            pick_revision(&revs, Some(4), None, "p/web").unwrap().number,
            2
        );
        assert_eq!(
            pick_revision(&revs, Some(5), Some("2"), "p/web")
                .unwrap()
                .number,
            2
        );
        let err = pick_revision(&revs, Some(5), Some("1"), "p/web")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("revision 1") && err.contains("2, 4, 5"),
            "{err}"
        );
        let err = pick_revision(&revs[..1], Some(2), None, "p/web")
            .unwrap_err()
            .to_string();
        assert!(err.contains("no revision before"), "{err}");
        let err = pick_revision(&revs, Some(5), Some("v1.2"), "p/web")
            .unwrap_err()
            .to_string();
        assert!(err.contains("neither a revision number"), "{err}");
    }

    #[test]
    fn templates_compare_without_the_hash_label_and_empty_fields() {
        let a: PodTemplateSpec = serde_json::from_value(json!({
            "metadata": {"labels": {"app": "web", POD_TEMPLATE_HASH: "abc"}},
            "spec": {"containers": [{"name": "app", "image": "web:1", "env": []}]},
        }))
        .unwrap();
        let b: PodTemplateSpec = serde_json::from_value(json!({
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "app", "image": "web:1"}]},
        }))
        .unwrap();
        assert!(same_template(&a, &b));
        let mut c = b.clone();
        c.spec.as_mut().unwrap().containers[0].image = Some("web:2".into());
        assert!(!same_template(&a, &c));
        assert!(template_json(&a)["metadata"]["labels"]
            .get(POD_TEMPLATE_HASH)
            .is_none());
    }

    #[test]
    fn selectors_render_as_query_strings() {
        let sel = serde_json::from_value(json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["a", "b"]},
                {"key": "legacy", "operator": "DoesNotExist"},
            ],
        }))
        .unwrap();
        assert_eq!(selector_string(&sel), "app=web,tier in (a,b),!legacy");
    }

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
