//! A stand-in for the Argo Rollouts controller on the fake API server: it
//! reacts to writes of `argoproj.io/v1alpha1` Rollouts the way the real
//! controller does for what rollbot's tests exercise.
//!
//! - a new `spec.template` gets a ReplicaSet (reused when a revision with
//!   the same template exists) with the next `rollout.argoproj.io/revision`,
//!   restarts the steps and clears an abort;
//! - steps run in order: `setWeight` moves the canary weight, `pause` stops
//!   with a `CanaryPauseStep` pause condition until promoted, `analysis`
//!   stays running (or paused on `InconclusiveAnalysisRun` when the test
//!   marked it inconclusive) until promoted; past the last step the canary
//!   becomes stable and the phase `Healthy`;
//! - `status.abort` gives phase `Degraded`, reason `RolloutAborted`, weight 0;
//! - `status.promoteFull` skips every remaining step;
//! - `spec.paused` gives phase `Paused`;
//! - old ReplicaSets (neither stable nor current) beyond
//!   `spec.revisionHistoryLimit` (default 10) are deleted, oldest first
//!   (the controller's `cleanupRollouts`).
//!
//! With a lag, the reaction comes only after that many GETs of the Rollout,
//! so verification has to wait for it.

use super::fake_kube::{template_hash, FakeKube, Store, Verb};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};

pub const REVISION: &str = "rollout.argoproj.io/revision";
pub const HASH_LABEL: &str = "rollouts-pod-template-hash";

/// The steps the seeded Rollouts run.
pub fn canary_steps() -> Value {
    json!([
        {"setWeight": 20},
        {"pause": {}},
        {"setWeight": 50},
        {"analysis": {"templates": [{"templateName": "success-rate"}]}},
        {"setWeight": 80},
        {"pause": {"duration": "10m"}},
    ])
}

/// The controller; reactions wait for `lag` GETs after a write.
#[derive(Clone)]
pub struct ArgoController {
    state: Arc<Mutex<(u32, Option<u32>)>>,
}

impl ArgoController {
    pub fn install(fake: &FakeKube, lag: u32) -> ArgoController {
        let c = ArgoController {
            state: Arc::new(Mutex::new((lag, None))),
        };
        let state = c.state.clone();
        fake.on(
            "rollouts",
            Arc::new(move |store, ev| {
                let mut st = state.lock().unwrap();
                match ev.verb {
                    Verb::Get => match st.1 {
                        Some(n) if n <= 1 => {
                            st.1 = None;
                            reconcile(store, &ev.namespace, &ev.name);
                        }
                        Some(n) => st.1 = Some(n - 1),
                        None => {}
                    },
                    Verb::Delete => {}
                    _ if st.0 == 0 => reconcile(store, &ev.namespace, &ev.name),
                    _ => st.1 = Some(st.0),
                }
            }),
        );
        c
    }

    pub fn set_lag(&self, lag: u32) {
        self.state.lock().unwrap().0 = lag;
    }
}

fn hash_of(template: &Value) -> String {
    let mut t = template.clone();
    if let Some(l) = t["metadata"]["labels"].as_object_mut() {
        l.remove(HASH_LABEL);
    }
    template_hash(&t)
}

fn revision(o: &Value) -> i64 {
    o["metadata"]["annotations"][REVISION]
        .as_str()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// The ReplicaSet of `hash` for Rollout `ro`, created or re-numbered as the
/// newest revision; returns its revision.
fn ensure_replica_set(store: &mut Store, ns: &str, ro: &Value, hash: &str) -> i64 {
    let uid = ro["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let name = ro["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let owned: Vec<Value> = store
        .list("replicasets", Some(ns))
        .into_iter()
        .filter(|rs| {
            rs["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|o| o.iter().any(|o| o["uid"] == uid.as_str()))
        })
        .collect();
    let newest = owned.iter().map(revision).max().unwrap_or(0);
    if let Some(rs) = owned
        .iter()
        .find(|rs| rs["metadata"]["labels"][HASH_LABEL] == hash)
    {
        let n = revision(rs);
        if n == newest {
            return n;
        }
        let rs_name = rs["metadata"]["name"].as_str().unwrap().to_string();
        store
            .modify("replicasets", ns, &rs_name, |rs| {
                rs["metadata"]["annotations"][REVISION] = json!((newest + 1).to_string())
            })
            .unwrap();
        return newest + 1;
    }
    let mut template = ro["spec"]["template"].clone();
    template["metadata"]["labels"][HASH_LABEL] = json!(hash);
    let mut selector = ro["spec"]["selector"].clone();
    selector["matchLabels"][HASH_LABEL] = json!(hash);
    store
        .create(
            "replicasets",
            ns,
            json!({
                "metadata": {
                    "name": format!("{name}-{hash}"),
                    "labels": template["metadata"]["labels"].clone(),
                    "annotations": {REVISION: (newest + 1).to_string()},
                    "ownerReferences": [{
                        "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
                        "name": name, "uid": uid, "controller": true, "blockOwnerDeletion": true,
                    }],
                },
                "spec": {"replicas": 1, "selector": selector, "template": template},
            }),
        )
        .unwrap();
    newest + 1
}

/// One pass of the controller over Rollout `ns/name`.
pub fn reconcile(store: &mut Store, ns: &str, name: &str) {
    let Some(mut ro) = store.get("rollouts", ns, name) else {
        return;
    };
    let before = ro.clone();
    let steps = ro["spec"]["strategy"]["canary"]["steps"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let hash = hash_of(&ro["spec"]["template"]);
    if !ro["status"].is_object() {
        ro["status"] = json!({});
    }
    if ro["status"]["currentPodHash"] != hash.as_str() {
        let rev = ensure_replica_set(store, ns, &ro, &hash);
        ro["metadata"]["annotations"][REVISION] = json!(rev.to_string());
        let st = ro["status"].as_object_mut().unwrap();
        st.insert("currentPodHash".into(), json!(hash));
        st.insert("currentStepIndex".into(), json!(0));
        for f in ["abort", "pauseConditions", "controllerPause", "promoteFull"] {
            st.remove(f);
        }
        if !st.contains_key("stableRS") {
            // The first revision is stable at once.
            st.insert("stableRS".into(), json!(hash));
        }
    }
    let generation = ro["metadata"]["generation"].as_i64().unwrap_or(1);
    ro["status"]["observedGeneration"] = json!(generation.to_string());
    let st = &mut ro["status"];
    let mut weight: i64 = 0;
    if st["abort"] == true {
        st["phase"] = json!("Degraded");
        let rev = before["metadata"]["annotations"][REVISION]
            .as_str()
            .unwrap_or("?")
            .to_string();
        let msg = format!("Rollout aborted update to revision {rev}");
        st["message"] = json!(format!("RolloutAborted: {msg}"));
        st["conditions"] = json!([{"type": "Progressing", "status": "False", "reason": "RolloutAborted", "message": msg}]);
        if let Some(m) = st.as_object_mut() {
            m.remove("pauseConditions");
            m.remove("controllerPause");
        }
    } else {
        st["conditions"] =
            json!([{"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"}]);
        if st["promoteFull"] == true {
            st["currentStepIndex"] = json!(steps.len());
        }
        let mut idx = st["currentStepIndex"].as_u64().unwrap_or(0) as usize;
        let stable = st["stableRS"] == st["currentPodHash"];
        if stable {
            idx = steps.len();
        }
        if let Some(w) = steps[..idx.min(steps.len())]
            .iter()
            .rev()
            .find_map(|s| s["setWeight"].as_i64())
        {
            weight = w;
        }
        let (phase, message) = loop {
            if ro_paused(&before) {
                break ("Paused", "manually paused".to_string());
            }
            let Some(step) = steps.get(idx) else {
                st["stableRS"] = st["currentPodHash"].clone();
                weight = 0;
                if let Some(m) = st.as_object_mut() {
                    m.remove("promoteFull");
                    m.remove("pauseConditions");
                    m.remove("controllerPause");
                }
                break ("Healthy", String::new());
            };
            let conditions_empty = st["pauseConditions"]
                .as_array()
                .is_none_or(|a| a.is_empty());
            let controller_pause = st["controllerPause"] == true;
            if let Some(w) = step["setWeight"].as_i64() {
                weight = w;
                idx += 1;
                continue;
            }
            let reason = if step.get("pause").is_some() {
                "CanaryPauseStep"
            } else if st["canary"]["currentStepAnalysisRunStatus"]["status"] == "Inconclusive" {
                "InconclusiveAnalysisRun"
            } else {
                // An analysis or experiment step runs until it is promoted past.
                break ("Progressing", "waiting for analysis to complete".into());
            };
            if controller_pause && conditions_empty {
                // Promoted: the step is complete.
                st["controllerPause"] = json!(false);
                idx += 1;
                continue;
            }
            if !controller_pause {
                st["controllerPause"] = json!(true);
                st["pauseConditions"] =
                    json!([{"reason": reason, "startTime": "2026-01-01T00:00:00Z"}]);
            }
            break ("Paused", reason.to_string());
        };
        st["currentStepIndex"] = json!(idx);
        st["phase"] = json!(phase);
        st["message"] = json!(message);
    }
    ro["status"]["canary"]["weights"] = json!({
        "canary": {"podTemplateHash": ro["status"]["currentPodHash"], "weight": weight},
        "stable": {"podTemplateHash": ro["status"]["stableRS"], "weight": 100 - weight},
    });
    clean_up(store, ns, &ro);
    if ro != before {
        store.update("rollouts", ns, ro).unwrap();
    }
}

/// Deletes the Rollout's old ReplicaSets beyond its revision history
/// limit, oldest revision first; the stable and current ones stay.
fn clean_up(store: &mut Store, ns: &str, ro: &Value) {
    let uid = ro["metadata"]["uid"].as_str().unwrap_or_default();
    let keep = [&ro["status"]["stableRS"], &ro["status"]["currentPodHash"]];
    let mut olds: Vec<Value> = store
        .list("replicasets", Some(ns))
        .into_iter()
        .filter(|rs| {
            rs["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|o| o.iter().any(|o| o["uid"] == uid))
                && !keep.contains(&&rs["metadata"]["labels"][HASH_LABEL])
        })
        .collect();
    olds.sort_by_key(revision);
    let limit = ro["spec"]["revisionHistoryLimit"].as_i64().unwrap_or(10);
    let extra = olds.len().saturating_sub(limit.max(0) as usize);
    for rs in &olds[..extra] {
        store.delete("replicasets", ns, rs["metadata"]["name"].as_str().unwrap());
    }
}

fn ro_paused(ro: &Value) -> bool {
    ro["spec"]["paused"] == true
}

/// A pod template running `image`.
pub fn template(name: &str, image: &str) -> Value {
    json!({
        "metadata": {"labels": {"app": name}},
        "spec": {"containers": [{
            "name": "app", "image": image,
            "ports": [{"containerPort": 8080, "protocol": "TCP"}],
            "resources": {},
        }]},
    })
}

/// Creates Rollout `name` in `ns` and rolls it through `images`: every
/// image but the last is promoted fully (stable); the last is a canary
/// paused at its first pause step (step 1 of 6, weight 20). Install the
/// controller first, without lag.
pub fn seed_rollout(fake: &FakeKube, ns: &str, name: &str, images: &[&str]) -> Value {
    fake.create(
        "rollouts",
        ns,
        json!({
            "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
            "metadata": {"name": name, "labels": {"app": name}},
            "spec": {
                "replicas": 3,
                "revisionHistoryLimit": 10,
                "selector": {"matchLabels": {"app": name}},
                "template": template(name, images[0]),
                "strategy": {"canary": {"steps": canary_steps()}},
            },
        }),
    );
    for (i, image) in images.iter().enumerate().skip(1) {
        fake.merge_patch(
            "rollouts",
            ns,
            name,
            json!({"spec": {"template": template(name, image)}}),
        );
        if i + 1 < images.len() {
            fake.merge_patch(
                "rollouts",
                ns,
                name,
                json!({"status": {"promoteFull": true}}),
            );
        }
    }
    fake.get("rollouts", ns, name).unwrap()
}
