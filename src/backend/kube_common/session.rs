//! One action's calls to the API server, shared by the Kubernetes backends:
//! every request is recorded in one line (method, path, content type, body,
//! answer) for the audit entry, and a failed call becomes a
//! `BackendError::Failed` carrying those lines.

use super::{describe, failed_at, is_conflict, is_not_found, request_line, retry_conflicts};
use super::{KubeConnection, CONFLICT_TRIES};
use crate::backend::{BackendError, Target};
use k8s_openapi::api::apps::v1::ReplicaSet;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::NamespaceResourceScope;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::fmt::Debug;
use std::sync::Mutex;
use std::time::Duration;

/// The calls of one action on one service. `P` is what the backend made of
/// the service's `[services.target]` (the object's name, how it rolls back).
pub struct Session<P> {
    client: kube::Client,
    /// Where the client points, for messages.
    pub server: String,
    /// The namespace of the service's objects: `target.namespace`, else the
    /// connection's.
    pub namespace: String,
    pub place: P,
    requests: Mutex<Vec<String>>,
    /// A dry run's session: writes are recorded here instead of sent.
    planned: Option<Mutex<Vec<crate::backend::PlannedRequest>>>,
}

impl<P> Session<P> {
    /// Connects for one action (a client per action is cheap next to the
    /// requests, and picks up rotated credentials), then reads the target
    /// with `place`; a target that does not suit the backend is refused.
    pub async fn open(
        connection: &KubeConnection,
        t: &Target,
        place: impl FnOnce(&Target) -> Result<P, String>,
    ) -> Result<Session<P>, BackendError> {
        let kc = connection.connect().await?;
        let place = place(t).map_err(BackendError::Refused)?;
        let namespace = t
            .settings
            .get("namespace")
            .cloned()
            .unwrap_or(kc.default_namespace);
        Ok(Session {
            client: kc.client,
            server: kc.server,
            namespace,
            place,
            requests: Mutex::new(Vec::new()),
            planned: None,
        })
    }

    /// Makes this a dry run's session: reads are sent, every write is
    /// built by the same code and kept for [`Session::take_planned`]
    /// instead of sent.
    pub fn plan_only(mut self) -> Self {
        self.planned = Some(Mutex::new(Vec::new()));
        self
    }

    /// `done` when this session acts, `would` when it only plans: what a
    /// dry run reports is said in the conditional.
    pub fn tense<'a>(&self, done: &'a str, would: &'a str) -> &'a str {
        match self.planned {
            Some(_) => would,
            None => done,
        }
    }

    /// The writes a dry run's session would have sent, oldest first.
    pub fn take_planned(&self) -> Vec<crate::backend::PlannedRequest> {
        self.planned
            .as_ref()
            .map(|p| std::mem::take(&mut *p.lock().unwrap()))
            .unwrap_or_default()
    }

    /// A typed API for the service's namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The API of a custom resource in the service's namespace.
    pub fn custom_api(&self, resource: &ApiResource) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &self.namespace, resource)
    }

    fn record(&self, line: String) {
        self.requests.lock().unwrap().push(line);
    }

    /// The requests so far, for an `ActionReport`; the record starts anew.
    pub fn take_requests(&self) -> Vec<String> {
        std::mem::take(&mut *self.requests.lock().unwrap())
    }

    /// A call that failed: what was being done, the API server's answer (or
    /// that it could not be reached), what to do by hand, and every request
    /// of the action so far.
    pub fn fail(&self, what: &str, e: &kube::Error, by_hand: &str) -> BackendError {
        BackendError::Failed {
            message: failed_at(what, e, &self.server, by_hand),
            requests: self.requests.lock().unwrap().clone(),
        }
    }

    /// `GET` of one object, recorded.
    pub async fn get<K>(&self, api: &Api<K>, name: &str) -> Result<K, kube::Error>
    where
        K: kube::Resource + Clone + DeserializeOwned + Debug,
    {
        let got = api.get(name).await;
        self.record(request_line(
            "GET",
            &format!("{}/{name}", api.resource_url()),
            None,
            None,
            &got.as_ref().map(|_| ()).map_err(describe),
        ));
        got
    }

    /// Reads `kind` `name`. A missing object is refused naming what to
    /// `check` in the service's target; any other error fails, with what to
    /// do `by_hand`.
    pub async fn read<K>(
        &self,
        api: &Api<K>,
        kind: &str,
        name: &str,
        check: &str,
        by_hand: &str,
    ) -> Result<K, BackendError>
    where
        K: kube::Resource + Clone + DeserializeOwned + Debug,
    {
        match self.get(api, name).await {
            Ok(o) => Ok(o),
            Err(e) if is_not_found(&e) => Err(BackendError::Refused(format!(
                "{kind} {}/{name} does not exist on {} ({}); check [services.target] {check}",
                self.namespace,
                self.server,
                describe(&e)
            ))),
            Err(e) => Err(self.fail(
                &format!("reading {kind} {}/{name}", self.namespace),
                &e,
                by_hand,
            )),
        }
    }

    /// The objects a label selector matches, recorded with the query.
    pub async fn list<K>(&self, api: &Api<K>, selector: &str) -> Result<Vec<K>, kube::Error>
    where
        K: kube::Resource + Clone + DeserializeOwned + Debug,
    {
        let got = api.list(&ListParams::default().labels(selector)).await;
        self.record(request_line(
            "GET",
            &format!(
                "{}?{}",
                api.resource_url(),
                serde_urlencoded::to_string([("labelSelector", selector)]).unwrap_or_default()
            ),
            None,
            None,
            &got.as_ref().map(|_| ()).map_err(describe),
        ));
        got.map(|l| l.items)
    }

    /// The ReplicaSets `selector` matches that `owner` (a Deployment's or a
    /// Rollout's uid) controls, as kubectl's `GetAllReplicaSets` finds an
    /// object's revisions; `kind` names the owner in a failure.
    pub async fn replica_sets(
        &self,
        selector: &str,
        owner: &str,
        kind: &str,
        by_hand: &str,
    ) -> Result<Vec<ReplicaSet>, BackendError> {
        let list = self
            .list(&self.api::<ReplicaSet>(), selector)
            .await
            .map_err(|e| self.fail(&format!("listing the {kind}'s ReplicaSets"), &e, by_hand))?;
        Ok(list
            .into_iter()
            .filter(|rs| {
                rs.metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|o| o.uid == owner && o.controller == Some(true))
            })
            .collect())
    }

    /// Sends one patch of `name` (or of its `status` or `scale`
    /// subresource), recorded with its content type and body.
    pub async fn patch<K>(
        &self,
        api: &Api<K>,
        name: &str,
        subresource: Option<&str>,
        patch: &Patch<Value>,
    ) -> Result<(), kube::Error>
    where
        K: kube::Resource + Clone + DeserializeOwned + Debug,
    {
        let (content_type, body) = match patch {
            Patch::Json(p) => (
                "application/json-patch+json",
                serde_json::to_value(p).unwrap_or_default(),
            ),
            Patch::Merge(v) => ("application/merge-patch+json", v.clone()),
            Patch::Strategic(v) => ("application/strategic-merge-patch+json", v.clone()),
            Patch::Apply(v) => ("application/apply-patch+yaml", v.clone()),
            _ => ("application/json", Value::Null),
        };
        let mut path = format!("{}/{name}", api.resource_url());
        if let Some(s) = subresource {
            path = format!("{path}/{s}");
        }
        if let Some(planned) = &self.planned {
            let body = serde_json::to_string_pretty(&body).unwrap_or_default();
            planned.lock().unwrap().push(
                crate::backend::PlannedRequest::new("PATCH", format!("{path} ({content_type})"))
                    .body(body),
            );
            return Ok(());
        }
        if let Err(f) = crate::fence::check(&format!("PATCH {path}")) {
            self.record(format!("PATCH {path} ({content_type}) → not sent"));
            return Err(kube::Error::Service(Box::new(f)));
        }
        let pp = PatchParams::default();
        let got = match subresource {
            Some("scale") => api.patch_scale(name, &pp, patch).await.map(|_| ()),
            Some("status") => api.patch_status(name, &pp, patch).await.map(|_| ()),
            _ => api.patch(name, &pp, patch).await.map(|_| ()),
        };
        self.record(request_line(
            "PATCH",
            &path,
            Some(content_type),
            Some(&body),
            &got.as_ref().map(|_| ()).map_err(describe),
        ));
        got
    }

    /// [`Session::patch`], sent again when someone else wrote in between: a
    /// patch that does not depend on what they wrote.
    pub async fn patch_retrying<K>(
        &self,
        api: &Api<K>,
        name: &str,
        subresource: Option<&str>,
        patch: &Patch<Value>,
    ) -> Result<(), kube::Error>
    where
        K: kube::Resource + Clone + DeserializeOwned + Debug,
    {
        retry_conflicts(|_| self.patch(api, name, subresource, patch)).await
    }
}

/// After the `attempt`-th write met someone else's: whether to read afresh
/// and try again (waiting a short, growing pause first so the other writer
/// finishes), or to report it.
pub async fn again_after_conflict(e: &kube::Error, attempt: u32) -> bool {
    again_after(is_conflict(e), attempt).await
}

/// [`again_after_conflict`] for any error `retryable` says was caused by
/// another writer.
pub async fn again_after(retryable: bool, attempt: u32) -> bool {
    if retryable && attempt < CONFLICT_TRIES {
        tokio::time::sleep(Duration::from_millis(50 * attempt as u64)).await;
        true
    } else {
        false
    }
}
