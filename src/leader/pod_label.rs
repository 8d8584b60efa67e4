//! `[leader_election] label_pod = true`: the leader labels its own pod
//! `rollbot.dev/role=leader`, so a Service selecting that label sends
//! traffic to the leader while every healthy replica stays Ready (rolling
//! updates and drains then work with two replicas).
//!
//! Best effort: a PATCH that fails is logged and tried again every
//! `retry_period`, each bounded in time, and never changes who leads.

use crate::backend::kube_common::KubeConnection;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use kube::Api;
use std::time::Duration;

/// The label the leader puts on its own pod.
pub const ROLE_LABEL: &str = "rollbot.dev/role";
/// Its value on the leader's pod (a standby's pod has no such label).
pub const LEADER_ROLE: &str = "leader";

/// This replica's own pod, from the downward API.
#[derive(Clone, Debug, PartialEq)]
pub struct OwnPod {
    pub name: String,
    /// `POD_NAMESPACE`, else `[leader_election] namespace`, else the
    /// connection's default namespace.
    pub namespace: Option<String>,
}

impl OwnPod {
    /// The pod named by `POD_NAME` (and `POD_NAMESPACE`); an error saying
    /// how to set it when it is missing.
    pub fn from_env(namespace: Option<&String>) -> Result<OwnPod, String> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let name = var("POD_NAME").ok_or_else(|| {
            "[leader_election] label_pod = true needs the POD_NAME environment variable (the pod's own name): add to the container `env: [{name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}]`, or remove label_pod".to_string()
        })?;
        Ok(OwnPod {
            name,
            namespace: var("POD_NAMESPACE").or_else(|| namespace.cloned()),
        })
    }
}

/// Keeps the pod's label in step with leadership: `want` is sent by the
/// elector on every change; a failed PATCH is tried again.
pub(super) async fn keep_labelled(
    pod: OwnPod,
    connection: KubeConnection,
    retry: Duration,
    mut want: tokio::sync::watch::Receiver<bool>,
) {
    // A restarted container keeps its pod's labels: start from "not leader".
    let mut applied: Option<bool> = None;
    loop {
        let leader = *want.borrow_and_update();
        if applied != Some(leader) {
            match tokio::time::timeout(
                retry.max(Duration::from_secs(1)),
                set(&pod, &connection, leader),
            )
            .await
            {
                Ok(Ok(())) => {
                    tracing::info!(pod = %pod.name, leader, "{}", if leader { "labelled this pod rollbot.dev/role=leader" } else { "removed the leader label from this pod" });
                    applied = Some(leader);
                }
                Ok(Err(e)) => {
                    tracing::warn!(pod = %pod.name, leader, error = %e, "could not label this pod; the Service may route to the wrong replica until it is retried")
                }
                Err(_) => {
                    tracing::warn!(pod = %pod.name, leader, "labelling this pod timed out; retrying")
                }
            }
        }
        let pause = tokio::time::sleep(retry);
        tokio::select! {
            _ = pause, if applied != Some(*want.borrow()) => {}
            r = want.changed() => if r.is_err() { return },
        }
    }
}

/// One merge PATCH of the pod's labels (`null` removes the label).
pub(super) async fn set(
    pod: &OwnPod,
    connection: &KubeConnection,
    leader: bool,
) -> Result<(), String> {
    let c = connection.connect().await.map_err(|e| e.to_string())?;
    let ns = pod.namespace.clone().unwrap_or(c.default_namespace);
    let api: Api<Pod> = Api::namespaced(c.client, &ns);
    let value = if leader {
        serde_json::json!(LEADER_ROLE)
    } else {
        serde_json::Value::Null
    };
    let patch = serde_json::json!({"metadata": {"labels": {ROLE_LABEL: value}}});
    api.patch(&pod.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
        .map_err(|e| match e {
            kube::Error::Api(s) => format!(
                "pods/{} in {ns}: {} ({} {})",
                pod.name, s.message, s.code, s.reason
            ),
            other => other.to_string(),
        })
}
