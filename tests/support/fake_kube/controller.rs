//! The Deployment controller's visible behaviour, and Deployments with a
//! history built the way the controller builds one.

use super::store::{meta_mut, strip_nulls, Event, Store, Verb};
use super::FakeKube;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";

/// Annotations the controller does not copy from a Deployment to its
/// ReplicaSets (deploymentutil's skip list).
const NOT_COPIED: [&str; 6] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];

/// How fast new pods become ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pace {
    /// The rollout completes as soon as the template changes.
    Immediate,
    /// One more replica is updated and ready every `n` GETs of the Deployment.
    PerGets(u32),
    /// One new pod is created and never becomes ready (a bad image).
    Stalled,
    /// One more replica is updated and ready per period since the template
    /// changed.
    Every(std::time::Duration),
}

/// The Deployment controller's visible behaviour: on a new pod template it
/// creates a ReplicaSet (named `DEPLOY-HASH`, labelled `pod-template-hash`,
/// owned by the Deployment's uid) with the next revision, or reuses the one
/// whose template matches (moving it to the next revision, as a rollback
/// does); then it moves replicas from old to new ReplicaSets at `pace` and
/// keeps the Deployment's status (observedGeneration, replicas, updated,
/// ready, available) up to date. A paused Deployment only gets its
/// observedGeneration updated.
#[derive(Clone)]
pub struct DeploymentController {
    pace: Arc<Mutex<Pace>>,
    gets: Arc<Mutex<HashMap<(String, String), u32>>>,
    /// When the last replica moved, per Deployment (for `Pace::Every`).
    moved: Arc<Mutex<HashMap<(String, String), std::time::Instant>>>,
}

impl DeploymentController {
    /// Starts the controller on `fake`.
    pub fn install(fake: &FakeKube, pace: Pace) -> DeploymentController {
        let c = DeploymentController {
            pace: Arc::new(Mutex::new(pace)),
            gets: Arc::default(),
            moved: Arc::default(),
        };
        let me = c.clone();
        fake.on(
            "deployments",
            Arc::new(move |store: &mut Store, ev: &Event| me.react(store, ev)),
        );
        // `Pace::Every` moves on with time, whether or not anyone reads.
        let inner = Arc::downgrade(&fake.inner);
        let me = c.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                let Some(inner) = inner.upgrade() else { return };
                let pace = *me.pace.lock().unwrap();
                if let Pace::Every(_) = pace {
                    me.tick(&mut inner.lock().unwrap().store, pace);
                }
            }
        });
        c
    }

    /// Moves every Deployment in progress on by the periods elapsed.
    fn tick(&self, store: &mut Store, pace: Pace) {
        let Pace::Every(period) = pace else { return };
        let mut moved = self.moved.lock().unwrap();
        for ((ns, name), since) in moved.iter_mut() {
            let due = (since.elapsed().as_nanos() / period.as_nanos().max(1)) as u32;
            if due > 0 {
                *since += period * due;
                reconcile(store, ns, name, due as i64, pace);
            }
        }
    }

    pub fn set_pace(&self, pace: Pace) {
        *self.pace.lock().unwrap() = pace;
    }

    fn react(&self, store: &mut Store, ev: &Event) {
        let pace = *self.pace.lock().unwrap();
        let key = (ev.namespace.clone(), ev.name.clone());
        match ev.verb {
            Verb::Delete => {}
            Verb::Get => {
                if let Pace::Every(_) = pace {
                    self.tick(store, pace);
                }
                if let Pace::PerGets(n) = pace {
                    let mut gets = self.gets.lock().unwrap();
                    let count = gets
                        .entry((ev.namespace.clone(), ev.name.clone()))
                        .or_default();
                    *count += 1;
                    if *count >= n.max(1) {
                        *count = 0;
                        drop(gets);
                        reconcile(store, &ev.namespace, &ev.name, 1, pace);
                    }
                }
            }
            _ if ev.subresource.as_deref() == Some("status") => {}
            _ => {
                // Counting starts again at each write.
                self.gets.lock().unwrap().remove(&key);
                self.moved
                    .lock()
                    .unwrap()
                    .insert(key, std::time::Instant::now());
                let step = if pace == Pace::Immediate { i64::MAX } else { 0 };
                reconcile(store, &ev.namespace, &ev.name, step, pace);
            }
        }
    }
}

fn revision_of(o: &Value) -> i64 {
    o["metadata"]["annotations"][REVISION]
        .as_str()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn without_hash(template: &Value) -> Value {
    let mut t = template.clone();
    if let Some(l) = t["metadata"]["labels"].as_object_mut() {
        l.remove(POD_TEMPLATE_HASH);
    }
    strip_nulls(&mut t);
    t
}

/// The controller's template hash: FNV-32a, then the API machinery's
/// "safe" encoding of its decimal form.
pub fn template_hash(template: &Value) -> String {
    let mut h: u32 = 0x811c9dc5;
    for b in without_hash(template).to_string().bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x01000193);
    }
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string()
        .bytes()
        .map(|b| ALPHANUMS[b as usize % ALPHANUMS.len()] as char)
        .collect()
}

fn owned_replica_sets(store: &Store, ns: &str, uid: &str) -> Vec<Value> {
    store
        .list("replicasets", Some(ns))
        .into_iter()
        .filter(|rs| {
            rs["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|o| o.iter().any(|r| r["uid"] == uid && r["controller"] == true))
        })
        .collect()
}

/// Brings `ns/name` one `step` (replicas) closer to its template.
fn reconcile(store: &mut Store, ns: &str, name: &str, step: i64, pace: Pace) {
    let Some(d) = store.get("deployments", ns, name) else {
        return;
    };
    let generation = d["metadata"]["generation"].clone();
    if d["spec"]["paused"] == true {
        let _ = store.modify("deployments", ns, name, |d| {
            d["status"]["observedGeneration"] = generation;
        });
        return;
    }
    let uid = d["metadata"]["uid"].as_str().unwrap_or("").to_string();
    let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1);
    let new_rs = new_replica_set(store, ns, &d);
    let new_name = new_rs["metadata"]["name"].as_str().unwrap().to_string();
    let revision = revision_of(&new_rs).to_string();

    // Move replicas from the old ReplicaSets to the new one.
    let was = new_rs["spec"]["replicas"].as_i64().unwrap_or(0);
    let (updated, ready_new) = match pace {
        Pace::Stalled => (1.min(replicas), 0),
        _ => {
            let u = was.saturating_add(step).min(replicas);
            (u, u)
        }
    };
    let old = scale_old_replica_sets(store, ns, &uid, &new_name, (replicas - ready_new).max(0));
    let _ = store.modify("replicasets", ns, &new_name, |rs| {
        rs["spec"]["replicas"] = json!(updated);
        rs["status"] = json!({"replicas": updated, "readyReplicas": ready_new, "availableReplicas": ready_new, "observedGeneration": rs["metadata"]["generation"]});
    });
    let progress = Progress {
        replicas,
        updated,
        ready_new,
        old,
    };
    let _ = store.modify("deployments", ns, name, |d| {
        meta_mut(d)
            .entry("annotations")
            .or_insert_with(|| json!({}))[REVISION] = json!(revision);
        d["status"] = progress.status(generation, &new_name);
    });
    if ready_new == replicas && old == 0 {
        let limit = d["spec"]["revisionHistoryLimit"].as_i64().unwrap_or(10);
        clean_up(store, ns, &uid, &new_name, limit);
    }
}

/// The controller's `cleanupDeployment` once a rollout is complete: old
/// ReplicaSets without replicas beyond `revisionHistoryLimit` are deleted,
/// oldest first.
fn clean_up(store: &mut Store, ns: &str, uid: &str, new_name: &str, limit: i64) {
    let mut olds: Vec<Value> = owned_replica_sets(store, ns, uid)
        .into_iter()
        .filter(|rs| rs["metadata"]["name"] != new_name && rs["spec"]["replicas"] == 0)
        .collect();
    olds.sort_by_key(revision_of);
    let extra = olds.len().saturating_sub(limit.max(0) as usize);
    for rs in &olds[..extra] {
        store.delete("replicasets", ns, rs["metadata"]["name"].as_str().unwrap());
    }
}

/// The ReplicaSet of the Deployment `d`'s template: the newest one as it
/// is, an older one with the same template moved to the next revision (a
/// rollback), or a new one with no replicas yet.
fn new_replica_set(store: &mut Store, ns: &str, d: &Value) -> Value {
    let name = d["metadata"]["name"].as_str().unwrap_or("");
    let uid = d["metadata"]["uid"].as_str().unwrap_or("");
    let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1);
    let template = d["spec"]["template"].clone();
    let rss = owned_replica_sets(store, ns, uid);
    let max_rev = rss.iter().map(revision_of).max().unwrap_or(0);
    let copied: Map<String, Value> = d["metadata"]["annotations"]
        .as_object()
        .map(|a| {
            a.iter()
                .filter(|(k, _)| !NOT_COPIED.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    let current = rss
        .iter()
        .find(|rs| without_hash(&rs["spec"]["template"]) == without_hash(&template))
        .cloned();
    match current {
        Some(rs) if revision_of(&rs) == max_rev => rs,
        Some(rs) => {
            // A rollback to an old template: that ReplicaSet becomes the newest revision.
            let old = revision_of(&rs).to_string();
            let rs_name = rs["metadata"]["name"].as_str().unwrap().to_string();
            store
                .modify("replicasets", ns, &rs_name, |rs| {
                    let a = meta_mut(rs)
                        .entry("annotations")
                        .or_insert_with(|| json!({}));
                    let history = match a[REVISION_HISTORY].as_str() {
                        Some(h) if !h.is_empty() => format!("{h},{old}"),
                        _ => old,
                    };
                    for (k, v) in &copied {
                        a[k] = v.clone();
                    }
                    a[REVISION] = json!((max_rev + 1).to_string());
                    a[REVISION_HISTORY] = json!(history);
                })
                .unwrap()
        }
        None => {
            let hash = template_hash(&template);
            let mut t = template.clone();
            t["metadata"]["labels"][POD_TEMPLATE_HASH] = json!(hash);
            let mut labels = template["metadata"]["labels"].clone();
            labels[POD_TEMPLATE_HASH] = json!(hash);
            let mut selector = d["spec"]["selector"].clone();
            selector["matchLabels"][POD_TEMPLATE_HASH] = json!(hash);
            let mut annotations = copied.clone();
            annotations.insert(REVISION.into(), json!((max_rev + 1).to_string()));
            annotations.insert(DESIRED_REPLICAS.into(), json!(replicas.to_string()));
            annotations.insert(MAX_REPLICAS.into(), json!((replicas + 1).to_string()));
            let rs = json!({
                "metadata": {
                    "name": format!("{name}-{hash}"),
                    "labels": labels,
                    "annotations": annotations,
                    "ownerReferences": [{
                        "apiVersion": "apps/v1", "kind": "Deployment", "name": name,
                        "uid": uid, "controller": true, "blockOwnerDeletion": true,
                    }],
                },
                "spec": {"replicas": 0, "selector": selector, "template": t},
                "status": {"replicas": 0, "observedGeneration": 1},
            });
            store.create("replicasets", ns, rs).unwrap()
        }
    }
}

/// Leaves `old_total` old pods with the newest old ReplicaSet that still
/// has some and none with the others; returns how many old pods run.
fn scale_old_replica_sets(
    store: &mut Store,
    ns: &str,
    uid: &str,
    new_name: &str,
    old_total: i64,
) -> i64 {
    let rss = owned_replica_sets(store, ns, uid);
    let mut olds: Vec<&Value> = rss
        .iter()
        .filter(|rs| rs["metadata"]["name"] != new_name)
        .collect();
    olds.sort_by_key(|rs| {
        (
            rs["spec"]["replicas"].as_i64().unwrap_or(0) > 0,
            revision_of(rs),
        )
    });
    let keeper = olds
        .last()
        .map(|rs| rs["metadata"]["name"].as_str().unwrap().to_string());
    for rs in &olds {
        let rs_name = rs["metadata"]["name"].as_str().unwrap();
        let n = if Some(rs_name.to_string()) == keeper {
            old_total
        } else {
            0
        };
        if rs["spec"]["replicas"].as_i64() != Some(n)
            || rs["status"]["replicas"].as_i64() != Some(n)
        {
            let _ = store.modify("replicasets", ns, rs_name, |rs| {
                rs["spec"]["replicas"] = json!(n);
                rs["status"] = json!({"replicas": n, "readyReplicas": n, "availableReplicas": n, "observedGeneration": rs["metadata"]["generation"]});
            });
        }
    }
    if keeper.is_some() {
        old_total
    } else {
        0
    }
}

/// Where a rollout stands: replicas wanted, updated, ready among the
/// updated, and old ones still running (and ready).
#[derive(Clone, Copy)]
struct Progress {
    replicas: i64,
    updated: i64,
    ready_new: i64,
    old: i64,
}

impl Progress {
    /// The Deployment's status, with the conditions `kubectl rollout
    /// status` reads.
    fn status(&self, generation: Value, new_name: &str) -> Value {
        let Progress {
            replicas,
            updated,
            ready_new,
            old,
        } = *self;
        let total = updated + old;
        let ready = ready_new + old;
        let complete = updated == replicas && old == 0 && ready == replicas;
        let mut status = json!({
            "observedGeneration": generation,
            "replicas": total,
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "conditions": [
                {"type": "Available", "status": if ready >= replicas - 1 { "True" } else { "False" },
                 "reason": if ready >= replicas - 1 { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" }},
                {"type": "Progressing", "status": "True",
                 "reason": if complete { "NewReplicaSetAvailable" } else { "ReplicaSetUpdated" },
                 "message": if complete {
                     format!("ReplicaSet \"{new_name}\" has successfully progressed.")
                 } else {
                     format!("ReplicaSet \"{new_name}\" is progressing.")
                 }},
            ],
        });
        if total > ready {
            status["unavailableReplicas"] = json!(total - ready);
        }
        status
    }
}

/// A Deployment as the API server would return it after defaulting, with
/// one container `app` running `image`.
pub fn deployment(name: &str, image: &str, replicas: i64) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 10,
            "progressDeadlineSeconds": 600,
            "selector": {"matchLabels": {"app": name}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [{
                        "name": "app",
                        "image": image,
                        "imagePullPolicy": "IfNotPresent",
                        "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                        "resources": {},
                        "terminationMessagePath": "/dev/termination-log",
                        "terminationMessagePolicy": "File",
                    }],
                    "dnsPolicy": "ClusterFirst",
                    "restartPolicy": "Always",
                    "schedulerName": "default-scheduler",
                    "securityContext": {},
                    "terminationGracePeriodSeconds": 30,
                },
            },
        },
    })
}

/// Creates Deployment `name` in `ns` and rolls it through `images` in order,
/// one revision each, with a `kubernetes.io/change-cause` per revision; the
/// controller (installed first) creates the ReplicaSets. Returns the Deployment.
pub fn seed_history(
    fake: &FakeKube,
    ns: &str,
    name: &str,
    replicas: i64,
    images: &[(&str, &str)],
) -> Value {
    let (image, cause) = images[0];
    let mut d = deployment(name, image, replicas);
    d["metadata"]["annotations"] = json!({"kubernetes.io/change-cause": cause});
    fake.create("deployments", ns, d);
    for (image, cause) in &images[1..] {
        fake.merge_patch(
            "deployments",
            ns,
            name,
            json!({
                "metadata": {"annotations": {"kubernetes.io/change-cause": cause}},
                "spec": {"template": {"spec": {"containers": [{"name": "app", "image": image,
                    "imagePullPolicy": "IfNotPresent", "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                    "resources": {}, "terminationMessagePath": "/dev/termination-log",
                    "terminationMessagePolicy": "File"}]}}},
            }),
        );
    }
    fake.get("deployments", ns, name).unwrap()
}
