//! An in-process Kubernetes API server on 127.0.0.1 with the real semantics
//! for the endpoints rollbot and kubectl use: legacy discovery, GET/LIST with
//! label and field selectors, create, replace with `resourceVersion`
//! conflicts, JSON patch / merge patch / (a subset of) strategic merge patch,
//! delete, watch (by polling the store), the `/status` and `/scale`
//! subresources, and `Status` error bodies.
//!
//! Tests drive it from the outside (seed objects, deny verbs like RBAC would,
//! make the next writes conflict, change objects behind a client's back) and
//! read the exact requests it received. Reactors stand in for controllers:
//! [`DeploymentController`] creates ReplicaSets and moves a rollout along
//! the way the real Deployment controller does.
//!
//! ```ignore
//! let fake = FakeKube::standard().await;            // Deployments, Rollouts, VirtualServices, Leases…
//! DeploymentController::install(&fake, Pace::Immediate);
//! seed_history(&fake, "prod", "web", 3, &[("web:1", "first"), ("web:2", "second")]);
//! fake.deny("patch", "apps", "deployments");         // 403 like RBAC
//! fake.fail_next_writes("deployments", "web", 1);    // 409 once
//! fake.on("rollouts", Arc::new(|store, ev| { /* a controller */ }));
//! // rollbot: api_server = fake.url(); kubectl: kubectl(&fake, dir, "prod", &["get", "deploy"])
//! let sent = fake.writes();                           // method, path, content type, body, status
//! ```

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// One served resource type.
#[derive(Clone, Debug)]
pub struct Kind {
    /// `""` for the core group.
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub namespaced: bool,
    /// Writes to the object ignore `status`; writes to `/status` change only `status`.
    pub status_subresource: bool,
    /// An `autoscaling/v1` `Scale` at `/scale` backed by `spec.replicas`.
    pub scale_subresource: bool,
    pub short_names: Vec<String>,
}

impl Kind {
    pub fn new(group: &str, version: &str, kind: &str, plural: &str, namespaced: bool) -> Kind {
        Kind {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
            plural: plural.into(),
            namespaced,
            status_subresource: false,
            scale_subresource: false,
            short_names: vec![],
        }
    }

    pub fn with_status(mut self) -> Kind {
        self.status_subresource = true;
        self
    }

    pub fn with_scale(mut self) -> Kind {
        self.scale_subresource = true;
        self
    }

    pub fn short(mut self, names: &[&str]) -> Kind {
        self.short_names = names.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `deployments.apps`, `pods`: how the API server names a resource in messages.
    pub fn resource_name(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }
}

/// The kinds rollbot's Kubernetes backends and leader election use.
pub fn standard_kinds() -> Vec<Kind> {
    vec![
        Kind::new("", "v1", "Namespace", "namespaces", false).short(&["ns"]),
        Kind::new("", "v1", "Pod", "pods", true)
            .with_status()
            .short(&["po"]),
        Kind::new("apps", "v1", "Deployment", "deployments", true)
            .with_status()
            .with_scale()
            .short(&["deploy"]),
        Kind::new("apps", "v1", "ReplicaSet", "replicasets", true)
            .with_status()
            .with_scale()
            .short(&["rs"]),
        Kind::new("argoproj.io", "v1alpha1", "Rollout", "rollouts", true)
            .with_status()
            .with_scale()
            .short(&["ro"]),
        Kind::new(
            "networking.istio.io",
            "v1",
            "VirtualService",
            "virtualservices",
            true,
        )
        .short(&["vs"]),
        Kind::new(
            "networking.istio.io",
            "v1beta1",
            "VirtualService",
            "virtualservices",
            true,
        )
        .short(&["vs"]),
        Kind::new("coordination.k8s.io", "v1", "Lease", "leases", true),
    ]
}

/// An API error, answered as a `Status` body.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub reason: String,
    pub message: String,
    pub details: Value,
}

impl ApiError {
    pub fn new(code: u16, reason: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason: reason.into(),
            message: message.into(),
            details: Value::Null,
        }
    }

    fn details(mut self, kind: &Kind, name: &str) -> ApiError {
        let mut d = json!({"group": kind.group, "kind": kind.plural});
        if !name.is_empty() {
            d["name"] = json!(name);
        }
        self.details = d;
        self
    }

    pub fn not_found(kind: &Kind, name: &str) -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", kind.resource_name()),
        )
        .details(kind, name)
    }

    pub fn already_exists(kind: &Kind, name: &str) -> ApiError {
        ApiError::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", kind.resource_name()),
        )
        .details(kind, name)
    }

    pub fn conflict(kind: &Kind, name: &str) -> ApiError {
        ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                kind.resource_name()
            ),
        )
        .details(kind, name)
    }

    pub fn invalid(kind: &Kind, name: &str, field: &str, detail: &str) -> ApiError {
        let mut e = ApiError::new(
            422,
            "Invalid",
            format!(
                "{} \"{name}\" is invalid: {field}: {detail}",
                kind.qualified_kind()
            ),
        );
        e.details = json!({
            "name": name, "group": kind.group, "kind": kind.kind,
            "causes": [{"reason": "FieldValueInvalid", "message": detail, "field": field}],
        });
        e
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }

    pub fn body(&self) -> Value {
        let mut v = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": self.message,
            "reason": self.reason, "code": self.code,
        });
        if !self.details.is_null() {
            v["details"] = self.details.clone();
        }
        v
    }
}

/// What happened to an object, passed to reactors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verb {
    Get,
    Create,
    Update,
    Patch,
    Delete,
}

#[derive(Clone, Debug)]
pub struct Event {
    pub verb: Verb,
    pub plural: String,
    /// `status` or `scale` when the request went to a subresource.
    pub subresource: Option<String>,
    pub namespace: String,
    pub name: String,
}

/// A controller stand-in: runs after each successful write of its resource
/// (and before each GET of one object, so a rollout can move along as a
/// client polls), with the whole store in hand.
pub type Reactor = Arc<dyn Fn(&mut Store, &Event) + Send + Sync>;

type Key = (String, String, String, String); // group, plural, namespace, name

/// The objects, with the API server's bookkeeping: a global
/// `resourceVersion` counter, uids, creation timestamps and generations.
/// Writes made here are server-side (controllers, tests): no status
/// subresource rules, no RBAC, not logged, no reactors.
pub struct Store {
    kinds: Vec<Kind>,
    objects: BTreeMap<Key, Value>,
    resource_version: u64,
}

impl Store {
    pub fn kind(&self, plural: &str) -> Option<&Kind> {
        self.kinds.iter().find(|k| k.plural == plural)
    }

    fn kind_or_panic(&self, plural: &str) -> Kind {
        self.kind(plural)
            .unwrap_or_else(|| panic!("the fake API server does not serve {plural}"))
            .clone()
    }

    fn key(&self, plural: &str, ns: &str, name: &str) -> Key {
        let k = self.kind_or_panic(plural);
        let ns = if k.namespaced { ns } else { "" };
        (k.group, k.plural, ns.to_string(), name.to_string())
    }

    pub fn get(&self, plural: &str, ns: &str, name: &str) -> Option<Value> {
        self.objects.get(&self.key(plural, ns, name)).cloned()
    }

    /// Objects of a resource in a namespace (`None`: all namespaces), by name.
    pub fn list(&self, plural: &str, ns: Option<&str>) -> Vec<Value> {
        let k = self.kind_or_panic(plural);
        self.objects
            .iter()
            .filter(|((g, p, n, _), _)| {
                *g == k.group && *p == k.plural && ns.is_none_or(|ns| !k.namespaced || n == ns)
            })
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn next_resource_version(&mut self) -> String {
        self.resource_version += 1;
        self.resource_version.to_string()
    }

    pub fn resource_version(&self) -> u64 {
        self.resource_version
    }

    /// Creates an object as given (status included), filling in the server's
    /// metadata.
    pub fn create(&mut self, plural: &str, ns: &str, mut obj: Value) -> Result<Value, ApiError> {
        let kind = self.kind_or_panic(plural);
        let name = meta_str(&obj, "name").unwrap_or_default();
        let name = if name.is_empty() {
            match meta_str(&obj, "generateName") {
                Some(prefix) if !prefix.is_empty() => {
                    let suffix: String = uuid::Uuid::new_v4()
                        .simple()
                        .to_string()
                        .chars()
                        .filter(|c| c.is_ascii_lowercase())
                        .take(5)
                        .collect();
                    format!("{prefix}{suffix}")
                }
                _ => {
                    return Err(ApiError::invalid(
                        &kind,
                        "",
                        "metadata.name",
                        "Required value: name or generateName is required",
                    ))
                }
            }
        } else {
            name
        };
        let key = self.key(plural, ns, &name);
        if self.objects.contains_key(&key) {
            return Err(ApiError::already_exists(&kind, &name));
        }
        validate(&kind, &name, &obj)?;
        obj["apiVersion"] = json!(kind.api_version());
        obj["kind"] = json!(kind.kind);
        let rv = self.next_resource_version();
        let m = meta_mut(&mut obj);
        m.insert("name".into(), json!(name));
        if kind.namespaced {
            m.insert("namespace".into(), json!(ns));
        } else {
            m.remove("namespace");
        }
        m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        m.insert("resourceVersion".into(), json!(rv));
        m.insert("creationTimestamp".into(), json!(now()));
        m.insert("generation".into(), json!(1));
        strip_nulls(&mut obj);
        self.objects.insert(key, obj.clone());
        Ok(obj)
    }

    /// Replaces an object unconditionally (the server's own write): keeps
    /// uid and creation time, bumps `resourceVersion`, and `generation` when
    /// anything but metadata and status changed.
    pub fn update(&mut self, plural: &str, ns: &str, mut obj: Value) -> Result<Value, ApiError> {
        let kind = self.kind_or_panic(plural);
        let name = meta_str(&obj, "name").unwrap_or_default();
        let key = self.key(plural, ns, &name);
        let Some(old) = self.objects.get(&key).cloned() else {
            return Err(ApiError::not_found(&kind, &name));
        };
        validate(&kind, &name, &obj)?;
        strip_nulls(&mut obj);
        obj["apiVersion"] = json!(kind.api_version());
        obj["kind"] = json!(kind.kind);
        let mut generation = old["metadata"]["generation"].as_i64().unwrap_or(1);
        if generation_relevant(&kind, &old) != generation_relevant(&kind, &obj) {
            generation += 1;
        }
        let m = meta_mut(&mut obj);
        for f in ["uid", "creationTimestamp", "namespace", "name"] {
            match old["metadata"].get(f) {
                Some(v) => m.insert(f.into(), v.clone()),
                None => m.remove(f),
            };
        }
        m.insert("generation".into(), json!(generation));
        m.insert(
            "resourceVersion".into(),
            old["metadata"]["resourceVersion"].clone(),
        );
        // A write that changes nothing keeps the resourceVersion, as the API server does.
        if obj == old {
            return Ok(obj);
        }
        let rv = self.next_resource_version();
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(rv));
        self.objects.insert(key, obj.clone());
        Ok(obj)
    }

    /// Changes an object in place through `f` and stores it as [`Store::update`] does.
    pub fn modify(
        &mut self,
        plural: &str,
        ns: &str,
        name: &str,
        f: impl FnOnce(&mut Value),
    ) -> Result<Value, ApiError> {
        let kind = self.kind_or_panic(plural);
        let mut obj = self
            .get(plural, ns, name)
            .ok_or_else(|| ApiError::not_found(&kind, name))?;
        f(&mut obj);
        self.update(plural, ns, obj)
    }

    /// A write by someone else that leaves the content as it was: only the
    /// `resourceVersion` moves on.
    pub fn touch(&mut self, plural: &str, ns: &str, name: &str) -> Option<Value> {
        let key = self.key(plural, ns, name);
        let rv = self.next_resource_version();
        let obj = self.objects.get_mut(&key)?;
        obj["metadata"]["resourceVersion"] = json!(rv);
        Some(obj.clone())
    }

    pub fn delete(&mut self, plural: &str, ns: &str, name: &str) -> Option<Value> {
        let key = self.key(plural, ns, name);
        self.objects.remove(&key)
    }
}

/// The parts of an object whose change bumps `metadata.generation`.
fn generation_relevant(kind: &Kind, obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        if kind.status_subresource {
            m.remove("status");
        }
    }
    v
}

/// Validation the real API server would do for the fields the tests touch:
/// enough to answer 422 for an object a patch broke.
fn validate(kind: &Kind, name: &str, obj: &Value) -> Result<(), ApiError> {
    let bad = |field: &str, detail: String| Err(ApiError::invalid(kind, name, field, &detail));
    if !obj.is_object() {
        return bad("", "the object must be a JSON object".into());
    }
    if !obj["metadata"].is_object() {
        return bad("metadata", "Required value".into());
    }
    for f in ["labels", "annotations"] {
        match &obj["metadata"][f] {
            Value::Null => {}
            Value::Object(m) => {
                if let Some((k, v)) = m.iter().find(|(_, v)| !v.is_string()) {
                    return bad(
                        &format!("metadata.{f}"),
                        format!("Invalid value: {v}: {k} must be a string"),
                    );
                }
            }
            other => {
                return bad(
                    &format!("metadata.{f}"),
                    format!("Invalid value: {other}: must be a map of strings"),
                )
            }
        }
    }
    for f in ["spec", "status"] {
        if let Some(v) = obj.get(f) {
            if !v.is_object() && !v.is_null() {
                return bad(
                    f,
                    format!("Invalid value: {v}: {f} in body must be of type object"),
                );
            }
        }
    }
    if kind.kind == "Deployment" || kind.kind == "ReplicaSet" {
        let spec = &obj["spec"];
        if let Some(r) = spec.get("replicas") {
            if r.as_i64().is_none_or(|r| r < 0) {
                return bad(
                    "spec.replicas",
                    format!("Invalid value: {r}: must be greater than or equal to 0"),
                );
            }
        }
        let containers = &spec["template"]["spec"]["containers"];
        let ok = containers.as_array().is_some_and(|c| {
            !c.is_empty()
                && c.iter()
                    .all(|c| c["name"].is_string() && c["image"].is_string())
        });
        if !ok {
            return bad(
                "spec.template.spec.containers",
                "Required value: at least one container with a name and an image".into(),
            );
        }
        let labels = &spec["template"]["metadata"]["labels"];
        if let Some(sel) = spec["selector"]["matchLabels"].as_object() {
            if sel.iter().any(|(k, v)| &labels[k] != v) {
                return bad(
                    "spec.template.metadata.labels",
                    format!("Invalid value: {labels}: `selector` does not match template `labels`"),
                );
            }
        }
    }
    Ok(())
}

fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn meta_str(obj: &Value, field: &str) -> Option<String> {
    obj["metadata"][field].as_str().map(str::to_string)
}

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    obj["metadata"].as_object_mut().unwrap()
}

/// The API server decodes `null` and an absent field alike, and omits empty
/// optional fields when it answers; dropping nulls keeps objects comparable.
pub fn strip_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, v| !v.is_null());
            m.values_mut().for_each(strip_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// One request as received.
#[derive(Clone, Debug)]
pub struct Logged {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: String,
    pub accept: String,
    pub authorization: String,
    pub body: String,
    /// The status code answered.
    pub status: u16,
}

impl Logged {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    pub fn is_write(&self) -> bool {
        !matches!(self.method.as_str(), "GET" | "HEAD")
    }

    /// A query parameter, decoded.
    pub fn param(&self, name: &str) -> Option<String> {
        serde_urlencoded::from_str::<Vec<(String, String)>>(&self.query)
            .ok()?
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }
}

struct Deny {
    verb: String,
    group: String,
    /// `deployments` or `deployments/scale`.
    resource: String,
}

struct Fault {
    plural: String,
    name: String,
    remaining: u32,
}

struct Inner {
    store: Store,
    log: Vec<Logged>,
    deny: Vec<Deny>,
    faults: Vec<Fault>,
    reactors: Vec<(String, Reactor)>,
    user: String,
    port: u16,
    /// Set by `serve` for a watch request; `handle` streams it.
    pending_watch: Option<WatchSpec>,
}

/// An open watch: what it selects and where it starts.
#[derive(Clone)]
struct WatchSpec {
    kind: Kind,
    namespace: Option<String>,
    labels: Vec<Requirement>,
    fields: Vec<(String, bool, String)>,
    /// `None`: send every current object as ADDED first.
    since: Option<u64>,
    timeout: std::time::Duration,
}

/// The fake API server, stopped on drop.
pub struct FakeKube {
    pub port: u16,
    inner: Arc<Mutex<Inner>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeKube {
    /// Serves `kinds` on a free port of 127.0.0.1.
    pub async fn start(kinds: Vec<Kind>) -> FakeKube {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let inner = Arc::new(Mutex::new(Inner {
            store: Store {
                kinds,
                objects: BTreeMap::new(),
                resource_version: 1000,
            },
            log: vec![],
            deny: vec![],
            faults: vec![],
            reactors: vec![],
            user: "system:serviceaccount:rollbot:rollbot".into(),
            port,
            pending_watch: None,
        }));
        let app = Router::new().fallback(handle).with_state(inner.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeKube { port, inner, task }
    }

    /// Serves [`standard_kinds`].
    pub async fn standard() -> FakeKube {
        FakeKube::start(standard_kinds()).await
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Writes a kubeconfig for kubectl and kube-rs pointing at this server,
    /// with namespace `namespace` and a bearer token.
    pub fn kubeconfig(&self, dir: &Path, namespace: &str) -> PathBuf {
        let path = dir.join(format!("kubeconfig-{}", self.port));
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {url}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: tester\n    namespace: {namespace}\ncurrent-context: fake\nusers:\n- name: tester\n  user:\n    token: fake-token\n",
            url = self.url()
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    /// The user named in RBAC denials.
    pub fn set_user(&self, user: &str) {
        self.inner.lock().unwrap().user = user.into();
    }

    /// Answers 403 Forbidden, like RBAC would, to `verb` (get, list, create,
    /// update, patch, delete) on `resource` (`deployments`,
    /// `deployments/scale`) in API group `group`.
    pub fn deny(&self, verb: &str, group: &str, resource: &str) {
        self.inner.lock().unwrap().deny.push(Deny {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
        });
    }

    /// The next `n` writes to `plural`/`name` fail with 409 Conflict, as if
    /// someone else had written in between; each also bumps the object's
    /// `resourceVersion` so the client's copy is really stale.
    pub fn fail_next_writes(&self, plural: &str, name: &str, n: u32) {
        self.inner.lock().unwrap().faults.push(Fault {
            plural: plural.into(),
            name: name.into(),
            remaining: n,
        });
    }

    /// Registers a reactor for writes to (and GETs of) `plural`.
    pub fn on(&self, plural: &str, reactor: Reactor) {
        self.inner
            .lock()
            .unwrap()
            .reactors
            .push((plural.into(), reactor));
    }

    /// Runs `f` with the store: server-side reads and writes, no reactors.
    pub fn with_store<T>(&self, f: impl FnOnce(&mut Store) -> T) -> T {
        f(&mut self.inner.lock().unwrap().store)
    }

    pub fn get(&self, plural: &str, ns: &str, name: &str) -> Option<Value> {
        self.with_store(|s| s.get(plural, ns, name))
    }

    pub fn list(&self, plural: &str, ns: &str) -> Vec<Value> {
        self.with_store(|s| s.list(plural, Some(ns)))
    }

    /// Creates an object the way a client would (reactors run), except that
    /// status is kept: for seeding.
    pub fn create(&self, plural: &str, ns: &str, obj: Value) -> Value {
        let mut inner = self.inner.lock().unwrap();
        let out = inner.store.create(plural, ns, obj).unwrap();
        let name = meta_str(&out, "name").unwrap();
        react(&mut inner, Verb::Create, plural, None, ns, &name);
        out
    }

    /// Merge-patches an object the way a client would (reactors run), e.g.
    /// to roll out a new image when building history.
    pub fn merge_patch(&self, plural: &str, ns: &str, name: &str, patch: Value) -> Value {
        let mut inner = self.inner.lock().unwrap();
        inner
            .store
            .modify(plural, ns, name, |o| json_patch::merge(o, &patch))
            .unwrap();
        react(&mut inner, Verb::Patch, plural, None, ns, name);
        inner.store.get(plural, ns, name).unwrap()
    }

    /// Changes an object behind every client's back (a new
    /// `resourceVersion`, no reactors).
    pub fn bump(&self, plural: &str, ns: &str, name: &str, f: impl FnOnce(&mut Value)) -> Value {
        self.with_store(|s| {
            let before = s.get(plural, ns, name).expect("bump an existing object");
            let after = s.modify(plural, ns, name, f).unwrap();
            if after == before {
                s.touch(plural, ns, name).unwrap()
            } else {
                after
            }
        })
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<Logged> {
        self.inner.lock().unwrap().log.clone()
    }

    /// Requests to resources (not discovery), oldest first.
    pub fn resource_requests(&self) -> Vec<Logged> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.contains("/namespaces/") || is_resource_path(&r.path))
            .collect()
    }

    /// Requests that were not GETs.
    pub fn writes(&self) -> Vec<Logged> {
        self.requests()
            .into_iter()
            .filter(Logged::is_write)
            .collect()
    }

    pub fn clear_requests(&self) {
        self.inner.lock().unwrap().log.clear();
    }
}

fn is_resource_path(path: &str) -> bool {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segs.first() {
        Some(&"api") => segs.len() > 2,
        Some(&"apis") => segs.len() > 3,
        _ => false,
    }
}

fn react(inner: &mut Inner, verb: Verb, plural: &str, sub: Option<&str>, ns: &str, name: &str) {
    let reactors: Vec<Reactor> = inner
        .reactors
        .iter()
        .filter(|(p, _)| p == plural)
        .map(|(_, r)| r.clone())
        .collect();
    let ev = Event {
        verb,
        plural: plural.into(),
        subresource: sub.map(str::to_string),
        namespace: ns.into(),
        name: name.into(),
    };
    for r in reactors {
        r(&mut inner.store, &ev);
    }
}

/// Where a request goes.
#[derive(Debug)]
enum Route {
    Version,
    CoreVersions,
    Groups,
    Resources {
        group: String,
        version: String,
    },
    Object {
        group: String,
        version: String,
        namespace: Option<String>,
        plural: String,
        name: Option<String>,
        sub: Option<String>,
    },
    Unknown,
}

fn route(store: &Store, path: &str) -> Route {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let (group, version, rest) = match segs.as_slice() {
        ["version"] => return Route::Version,
        ["api"] => return Route::CoreVersions,
        ["apis"] => return Route::Groups,
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Route::Unknown,
    };
    let served = |plural: &str, namespaced: bool| {
        store.kinds.iter().any(|k| {
            k.group == group
                && k.version == version
                && k.plural == plural
                && k.namespaced == namespaced
        })
    };
    if !store
        .kinds
        .iter()
        .any(|k| k.group == group && k.version == version)
    {
        return Route::Unknown;
    }
    let s = |i: usize| rest.get(i).map(|s| s.to_string());
    match rest {
        [] => Route::Resources {
            group: group.into(),
            version: version.into(),
        },
        ["namespaces", ns, plural, ..] if rest.len() <= 5 && served(plural, true) => {
            Route::Object {
                group: group.into(),
                version: version.into(),
                namespace: Some(ns.to_string()),
                plural: plural.to_string(),
                name: s(3),
                sub: s(4),
            }
        }
        [plural, ..]
            if rest.len() <= 3
                && (served(plural, false) || (served(plural, true) && rest.len() == 1)) =>
        {
            Route::Object {
                group: group.into(),
                version: version.into(),
                namespace: None,
                plural: plural.to_string(),
                name: s(1),
                sub: s(2),
            }
        }
        _ => Route::Unknown,
    }
}

fn json_response(code: u16, body: Value) -> Response {
    (
        StatusCode::from_u16(code).unwrap(),
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

async fn handle(
    State(shared): State<Arc<Mutex<Inner>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut inner = shared.lock().unwrap();
    let query = uri.query().unwrap_or("").to_string();
    let (code, answer) = match serve(&mut inner, &method, uri.path(), &query, &headers, &body) {
        Ok((code, v)) => (code, v),
        Err(e) => (e.code, e.body()),
    };
    inner.log.push(Logged {
        method: method.to_string(),
        path: uri.path().to_string(),
        query,
        content_type: header(&headers, "content-type"),
        accept: header(&headers, "accept"),
        authorization: header(&headers, "authorization"),
        body: String::from_utf8_lossy(&body).into_owned(),
        status: code,
    });
    if let Some(spec) = inner.pending_watch.take() {
        drop(inner);
        return watch_response(shared.clone(), spec);
    }
    json_response(code, answer)
}

/// Streams watch events (`{"type": "ADDED"|"MODIFIED"|"DELETED", "object": …}`,
/// one JSON document per line) by comparing the store every 50 ms, until
/// `timeoutSeconds`. Bookmarks are not sent.
fn watch_response(shared: Arc<Mutex<Inner>>, spec: WatchSpec) -> Response {
    let select = |inner: &Inner, spec: &WatchSpec| -> BTreeMap<(String, String), Value> {
        inner
            .store
            .list(&spec.kind.plural, spec.namespace.as_deref())
            .into_iter()
            .filter(|o| {
                spec.labels
                    .iter()
                    .all(|r| r.matches(&o["metadata"]["labels"]))
            })
            .filter(|o| {
                spec.fields.iter().all(|(f, eq, v)| {
                    (o["metadata"][f.as_str()].as_str().unwrap_or("") == v) == *eq
                })
            })
            .map(|o| {
                let key = (
                    meta_str(&o, "namespace").unwrap_or_default(),
                    meta_str(&o, "name").unwrap_or_default(),
                );
                (key, o)
            })
            .collect()
    };
    let rv = |o: &Value| -> u64 {
        o["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|r| r.parse().ok())
            .unwrap_or(0)
    };
    let seen: BTreeMap<(String, String), u64> = match spec.since {
        None => BTreeMap::new(),
        Some(since) => {
            let inner = shared.lock().unwrap();
            select(&inner, &spec)
                .into_iter()
                .filter(|(_, o)| rv(o) <= since)
                .map(|(k, o)| (k, rv(&o)))
                .collect()
        }
    };
    let deadline = tokio::time::Instant::now() + spec.timeout;
    let stream = futures_util::stream::unfold(
        (shared, spec, seen),
        move |(shared, spec, mut seen)| async move {
            loop {
                if tokio::time::Instant::now() >= deadline {
                    return None;
                }
                let mut out = String::new();
                {
                    let inner = shared.lock().unwrap();
                    let now = select(&inner, &spec);
                    for (k, o) in &now {
                        let kind = match seen.get(k) {
                            None => "ADDED",
                            Some(r) if *r != rv(o) => "MODIFIED",
                            Some(_) => continue,
                        };
                        seen.insert(k.clone(), rv(o));
                        let ev = json!({"type": kind, "object": view(&spec.kind, o.clone(), None)});
                        out.push_str(&format!("{ev}\n"));
                    }
                    let gone: Vec<(String, String)> = seen
                        .keys()
                        .filter(|k| !now.contains_key(*k))
                        .cloned()
                        .collect();
                    for k in gone {
                        seen.remove(&k);
                        let obj = json!({
                            "apiVersion": spec.kind.api_version(), "kind": spec.kind.kind,
                            "metadata": {"namespace": k.0, "name": k.1,
                                         "resourceVersion": inner.store.resource_version.to_string()},
                        });
                        out.push_str(&format!("{}\n", json!({"type": "DELETED", "object": obj})));
                    }
                }
                if !out.is_empty() {
                    return Some((
                        Ok::<_, std::convert::Infallible>(Bytes::from(out)),
                        (shared, spec, seen),
                    ));
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        },
    );
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        axum::body::Body::from_stream(stream),
    )
        .into_response()
}

fn not_served(path: &str) -> ApiError {
    let mut e = ApiError::new(
        404,
        "NotFound",
        "the server could not find the requested resource",
    );
    e.details = json!({"causes": [{"reason": "UnexpectedServerResponse", "message": format!("404 page not found: {path}")}]});
    e
}

fn serve(
    inner: &mut Inner,
    method: &Method,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(u16, Value), ApiError> {
    match route(&inner.store, path) {
        Route::Version => Ok((
            200,
            json!({
                "major": "1", "minor": "32", "gitVersion": "v1.32.0",
                "gitCommit": "fake", "gitTreeState": "clean",
                "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.23.0",
                "compiler": "gc", "platform": "linux/amd64",
            }),
        )),
        // Legacy discovery only: kubectl asks for the aggregated form first
        // and falls back when the answer's content type is plain JSON.
        Route::CoreVersions => Ok((
            200,
            json!({
                "kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": format!("127.0.0.1:{}", inner.port)}],
            }),
        )),
        Route::Groups => {
            let mut groups: Vec<(String, Vec<String>)> = vec![];
            for k in inner.store.kinds.iter().filter(|k| !k.group.is_empty()) {
                match groups.iter_mut().find(|(g, _)| *g == k.group) {
                    Some((_, vs)) => {
                        if !vs.contains(&k.version) {
                            vs.push(k.version.clone())
                        }
                    }
                    None => groups.push((k.group.clone(), vec![k.version.clone()])),
                }
            }
            let groups: Vec<Value> = groups
                .into_iter()
                .map(|(g, vs)| {
                    let gv = |v: &String| json!({"groupVersion": format!("{g}/{v}"), "version": v});
                    json!({
                        "name": g,
                        "versions": vs.iter().map(gv).collect::<Vec<_>>(),
                        "preferredVersion": gv(&vs[0]),
                    })
                })
                .collect();
            Ok((
                200,
                json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
            ))
        }
        Route::Resources { group, version } => {
            let mut resources = vec![];
            for k in inner
                .store
                .kinds
                .iter()
                .filter(|k| k.group == group && k.version == version)
            {
                resources.push(json!({
                    "name": k.plural, "singularName": k.kind.to_lowercase(),
                    "namespaced": k.namespaced, "kind": k.kind,
                    "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
                    "shortNames": k.short_names,
                }));
                if k.status_subresource {
                    resources.push(json!({
                        "name": format!("{}/status", k.plural), "singularName": "",
                        "namespaced": k.namespaced, "kind": k.kind,
                        "verbs": ["get", "patch", "update"],
                    }));
                }
                if k.scale_subresource {
                    resources.push(json!({
                        "name": format!("{}/scale", k.plural), "singularName": "",
                        "namespaced": k.namespaced, "group": "autoscaling", "version": "v1",
                        "kind": "Scale", "verbs": ["get", "patch", "update"],
                    }));
                }
            }
            let gv = if group.is_empty() {
                version
            } else {
                format!("{group}/{version}")
            };
            Ok((
                200,
                json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
            ))
        }
        Route::Unknown => Err(not_served(path)),
        Route::Object {
            group,
            version,
            namespace,
            plural,
            name,
            sub,
        } => {
            let kind = inner
                .store
                .kinds
                .iter()
                .find(|k| k.group == group && k.version == version && k.plural == plural)
                .unwrap()
                .clone();
            let params: HashMap<String, String> =
                serde_urlencoded::from_str::<Vec<(String, String)>>(query)
                    .unwrap_or_default()
                    .into_iter()
                    .collect();
            let verb = match (method.as_str(), name.is_some()) {
                ("GET", true) => "get",
                ("GET", false) if params.get("watch").is_some_and(|w| w == "true" || w == "1") => "watch",
                ("GET", false) => "list",
                ("POST", false) => "create",
                ("PUT", true) => "update",
                ("PATCH", true) => "patch",
                ("DELETE", true) => "delete",
                _ => {
                    return Err(ApiError::new(
                        405,
                        "MethodNotAllowed",
                        format!("the server does not allow this method on the requested resource: {method} {path}"),
                    ))
                }
            };
            authorize(
                inner,
                &kind,
                verb,
                namespace.as_deref(),
                name.as_deref(),
                sub.as_deref(),
            )?;
            if let Some(s) = &sub {
                let allowed = (s == "status" && kind.status_subresource)
                    || (s == "scale" && kind.scale_subresource);
                if !allowed {
                    return Err(not_served(path));
                }
            }
            let ns = namespace.clone().unwrap_or_default();
            if kind.namespaced && namespace.is_none() && verb != "list" {
                return Err(not_served(path));
            }
            let name = name.unwrap_or_default();
            match verb {
                "watch" => {
                    let labels = match params.get("labelSelector") {
                        Some(s) => parse_label_selector(s)?,
                        None => vec![],
                    };
                    let fields = match params.get("fieldSelector") {
                        Some(s) => parse_field_selector(s)?,
                        None => vec![],
                    };
                    let since = params
                        .get("resourceVersion")
                        .filter(|rv| !rv.is_empty() && *rv != "0")
                        .map(|rv| {
                            rv.parse::<u64>().map_err(|_| {
                                ApiError::bad_request(format!("invalid resourceVersion {rv:?}"))
                            })
                        })
                        .transpose()?;
                    let timeout = params
                        .get("timeoutSeconds")
                        .and_then(|t| t.parse::<u64>().ok())
                        .unwrap_or(300)
                        .min(1800);
                    inner.pending_watch = Some(WatchSpec {
                        kind: kind.clone(),
                        namespace: namespace.clone(),
                        labels,
                        fields,
                        since,
                        timeout: std::time::Duration::from_secs(timeout),
                    });
                    Ok((200, Value::Null))
                }
                "list" => list(inner, &kind, namespace.as_deref(), &params),
                "get" => {
                    react(inner, Verb::Get, &plural, sub.as_deref(), &ns, &name);
                    let obj = inner
                        .store
                        .get(&plural, &ns, &name)
                        .ok_or_else(|| ApiError::not_found(&kind, &name))?;
                    Ok((200, view(&kind, obj, sub.as_deref())))
                }
                "create" => {
                    let obj = parse_body(body)?;
                    if let Some(body_ns) = obj["metadata"]["namespace"].as_str() {
                        if kind.namespaced && body_ns != ns {
                            return Err(ApiError::bad_request("the namespace of the provided object does not match the namespace sent on the request"));
                        }
                    }
                    check_type(&kind, &obj)?;
                    let mut obj = obj;
                    if kind.status_subresource {
                        // The API server resets status on create when status is a subresource.
                        if let Some(m) = obj.as_object_mut() {
                            m.remove("status");
                        }
                    }
                    if let Some(m) = obj["metadata"].as_object_mut() {
                        for f in ["uid", "resourceVersion", "creationTimestamp", "generation"] {
                            m.remove(f);
                        }
                    }
                    let out = inner.store.create(&plural, &ns, obj)?;
                    let created = meta_str(&out, "name").unwrap_or_default();
                    react(inner, Verb::Create, &plural, None, &ns, &created);
                    let out = inner.store.get(&plural, &ns, &created).unwrap_or(out);
                    Ok((201, view(&kind, out, None)))
                }
                "update" | "patch" => {
                    let apply = verb == "patch"
                        && header(headers, "content-type").starts_with("application/apply-patch");
                    let current = match inner.store.get(&plural, &ns, &name) {
                        Some(c) => c,
                        None if apply && sub.is_none() => {
                            // Server-side apply creates what is missing.
                            let obj = parse_body(body)?;
                            check_type(&kind, &obj)?;
                            let mut obj = obj;
                            meta_mut(&mut obj).insert("name".into(), json!(name));
                            let out = inner.store.create(&plural, &ns, obj)?;
                            react(inner, Verb::Create, &plural, None, &ns, &name);
                            return Ok((201, view(&kind, out, None)));
                        }
                        None => return Err(ApiError::not_found(&kind, &name)),
                    };
                    if let Some(f) = inner
                        .faults
                        .iter_mut()
                        .find(|f| f.plural == plural && f.name == name && f.remaining > 0)
                    {
                        f.remaining -= 1;
                        inner.store.touch(&plural, &ns, &name);
                        return Err(ApiError::conflict(&kind, &name));
                    }
                    let before = view(&kind, current.clone(), sub.as_deref());
                    let after = if verb == "update" {
                        parse_body(body)?
                    } else {
                        apply_patch(
                            &kind,
                            &name,
                            &before,
                            &header(headers, "content-type"),
                            body,
                        )?
                    };
                    check_type(&kind, &after)?;
                    let rv_after = after["metadata"]["resourceVersion"].as_str();
                    let rv_now = current["metadata"]["resourceVersion"].as_str();
                    if rv_after.is_some_and(|rv| Some(rv) != rv_now) {
                        return Err(ApiError::conflict(&kind, &name));
                    }
                    if after["metadata"]["name"].as_str() != Some(name.as_str()) {
                        return Err(ApiError::bad_request(format!(
                            "the name of the object ({}) does not match the name on the URL ({name})",
                            after["metadata"]["name"]
                        )));
                    }
                    let mut next = current.clone();
                    match sub.as_deref() {
                        Some("status") => next["status"] = after["status"].clone(),
                        Some("scale") => {
                            let r = &after["spec"]["replicas"];
                            if r.as_i64().is_none_or(|r| r < 0) {
                                return Err(ApiError::invalid(
                                    &kind,
                                    &name,
                                    "spec.replicas",
                                    &format!(
                                        "Invalid value: {r}: must be greater than or equal to 0"
                                    ),
                                ));
                            }
                            next["spec"]["replicas"] = r.clone();
                        }
                        _ => {
                            next = after;
                            if kind.status_subresource {
                                match current.get("status") {
                                    Some(s) => next["status"] = s.clone(),
                                    None => {
                                        if let Some(m) = next.as_object_mut() {
                                            m.remove("status");
                                        }
                                    }
                                }
                            }
                            // Server-managed fields stay as they were.
                            let m = meta_mut(&mut next);
                            for f in ["uid", "creationTimestamp", "generation", "resourceVersion"] {
                                match current["metadata"].get(f) {
                                    Some(v) => m.insert(f.into(), v.clone()),
                                    None => m.remove(f),
                                };
                            }
                        }
                    }
                    if let Some(m) = next["metadata"].as_object_mut() {
                        m.insert("namespace".into(), current["metadata"]["namespace"].clone());
                    }
                    let out = inner.store.update(&plural, &ns, next)?;
                    let verb = if verb == "update" {
                        Verb::Update
                    } else {
                        Verb::Patch
                    };
                    react(inner, verb, &plural, sub.as_deref(), &ns, &name);
                    let out = inner.store.get(&plural, &ns, &name).unwrap_or(out);
                    Ok((200, view(&kind, out, sub.as_deref())))
                }
                "delete" => {
                    let out = inner
                        .store
                        .delete(&plural, &ns, &name)
                        .ok_or_else(|| ApiError::not_found(&kind, &name))?;
                    react(inner, Verb::Delete, &plural, None, &ns, &name);
                    Ok((200, view(&kind, out, None)))
                }
                _ => unreachable!(),
            }
        }
    }
}

/// The object as a client of `kind`'s version (and subresource) sees it.
fn view(kind: &Kind, mut obj: Value, sub: Option<&str>) -> Value {
    obj["apiVersion"] = json!(kind.api_version());
    if sub == Some("scale") {
        let m = &obj["metadata"];
        let selector = obj["spec"]["selector"]["matchLabels"]
            .as_object()
            .map(|l| {
                l.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        return json!({
            "kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {
                "name": m["name"], "namespace": m["namespace"], "uid": m["uid"],
                "resourceVersion": m["resourceVersion"], "creationTimestamp": m["creationTimestamp"],
            },
            "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(1)},
            "status": {"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector},
        });
    }
    obj
}

fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))
}

fn check_type(kind: &Kind, obj: &Value) -> Result<(), ApiError> {
    let av = obj["apiVersion"].as_str().unwrap_or("");
    let k = obj["kind"].as_str().unwrap_or("");
    let ok_version = av.is_empty()
        || av == kind.api_version()
        || (kind.scale_subresource && av == "autoscaling/v1");
    let ok_kind = k.is_empty() || k == kind.kind || k == "Scale";
    if ok_version && ok_kind {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "the API version in the data ({av}) does not match the expected API version ({})",
            kind.api_version()
        )))
    }
}

fn apply_patch(
    kind: &Kind,
    name: &str,
    current: &Value,
    content_type: &str,
    body: &[u8],
) -> Result<Value, ApiError> {
    let ct = content_type.split(';').next().unwrap_or("").trim();
    let mut doc = current.clone();
    match ct {
        "application/json-patch+json" => {
            let patch: json_patch::Patch = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
            json_patch::patch(&mut doc, &patch).map_err(|e| {
                // The API server answers a patch that cannot be applied with 422.
                // The API server's generic 422: its message, the cause in details.
                let mut err = ApiError::new(
                    422,
                    "Invalid",
                    "the server rejected our request due to an error in our request",
                );
                err.details = json!({"causes": [{"reason": "UnexpectedServerResponse", "message": e.to_string()}]});
                err
            })?;
        }
        "application/merge-patch+json" => {
            let patch = parse_body(body)?;
            if !patch.is_object() {
                return Err(ApiError::bad_request("a merge patch must be a JSON object"));
            }
            json_patch::merge(&mut doc, &patch);
        }
        "application/strategic-merge-patch+json" => {
            let patch = parse_body(body)?;
            if !patch.is_object() {
                return Err(ApiError::bad_request("a strategic merge patch must be a JSON object"));
            }
            strategic_merge(&mut doc, &patch);
        }
        "application/apply-patch+yaml" => {
            // Server-side apply, approximated: the fields sent are set, nothing
            // else is removed; field ownership and conflicts are not modelled.
            let patch = parse_body(body)?;
            let mut patch = patch;
            strip_nulls(&mut patch);
            json_patch::merge(&mut doc, &patch);
        }
        other => {
            return Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {other:?})"),
            ))
        }
    }
    if !doc.is_object() {
        return Err(ApiError::invalid(
            kind,
            name,
            "",
            "the patched object is not a JSON object",
        ));
    }
    // A Scale is checked when its replicas are copied to the object.
    if doc["kind"] == "Scale" {
        return Ok(doc);
    }
    if let Err(mut e) = validate(kind, name, &doc) {
        e.code = 422;
        return Err(e);
    }
    Ok(doc)
}

/// Strategic merge patch, the part kubectl and kube-rs clients send: maps
/// merge recursively (`null` deletes), lists of objects that all carry a
/// `name` (containers, env, volumes, ports) merge by that name, other lists
/// are replaced. Directives: `$patch: replace` (a map) and `$patch: delete`
/// (a named list element) are applied; `$setElementOrder/…` is accepted and
/// the existing order kept (new elements go last); `$retainKeys` and merge
/// keys other than `name` are not modelled.
pub fn strategic_merge(doc: &mut Value, patch: &Value) {
    let Some(p) = patch.as_object() else {
        *doc = patch.clone();
        return;
    };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut rest = patch.clone();
        rest.as_object_mut().unwrap().remove("$patch");
        *doc = rest;
        return;
    }
    if !doc.is_object() {
        *doc = json!({});
    }
    let d = doc.as_object_mut().unwrap();
    for (k, v) in p {
        if k.starts_with('$') {
            continue;
        }
        if v.is_null() {
            d.remove(k);
            continue;
        }
        match (d.get_mut(k), v) {
            (Some(existing @ Value::Object(_)), Value::Object(_)) => strategic_merge(existing, v),
            (Some(Value::Array(existing)), Value::Array(items))
                if named(existing) && named(items) =>
            {
                for item in items {
                    if item["$patch"] == "delete" {
                        existing.retain(|e| e["name"] != item["name"]);
                        continue;
                    }
                    match existing.iter_mut().find(|e| e["name"] == item["name"]) {
                        Some(e) => strategic_merge(e, item),
                        None => {
                            // Merged into nothing: directives dropped.
                            let mut fresh = json!({});
                            strategic_merge(&mut fresh, item);
                            existing.push(fresh)
                        }
                    }
                }
            }
            _ => {
                d.insert(k.clone(), v.clone());
            }
        }
    }
}

fn named(items: &[Value]) -> bool {
    !items.is_empty() && items.iter().all(|i| i["name"].is_string())
}

fn authorize(
    inner: &Inner,
    kind: &Kind,
    verb: &str,
    namespace: Option<&str>,
    name: Option<&str>,
    sub: Option<&str>,
) -> Result<(), ApiError> {
    let resource = match sub {
        Some(s) => format!("{}/{s}", kind.plural),
        None => kind.plural.clone(),
    };
    let denied = inner
        .deny
        .iter()
        .any(|d| d.verb == verb && d.group == kind.group && d.resource == resource);
    if !denied {
        return Ok(());
    }
    let what = match name {
        Some(n) => format!("{} \"{n}\"", kind.resource_name()),
        None => kind.resource_name(),
    };
    let scope = match namespace {
        Some(ns) => format!("in the namespace \"{ns}\""),
        None => "at the cluster scope".to_string(),
    };
    let mut e = ApiError::new(
        403,
        "Forbidden",
        format!(
            "{what} is forbidden: User \"{}\" cannot {verb} resource \"{resource}\" in API group \"{}\" {scope}",
            inner.user, kind.group
        ),
    );
    e.details = json!({"group": kind.group, "kind": kind.plural});
    if let Some(n) = name {
        e.details["name"] = json!(n);
    }
    Err(e)
}

fn list(
    inner: &mut Inner,
    kind: &Kind,
    namespace: Option<&str>,
    params: &HashMap<String, String>,
) -> Result<(u16, Value), ApiError> {
    let labels = match params.get("labelSelector") {
        Some(s) => parse_label_selector(s)?,
        None => vec![],
    };
    let fields = match params.get("fieldSelector") {
        Some(s) => parse_field_selector(s)?,
        None => vec![],
    };
    let items: Vec<Value> = inner
        .store
        .list(&kind.plural, namespace)
        .into_iter()
        .filter(|o| labels.iter().all(|r| r.matches(&o["metadata"]["labels"])))
        .filter(|o| {
            fields.iter().all(|(f, eq, v)| {
                let got = o["metadata"][f.as_str()].as_str().unwrap_or("");
                (got == v) == *eq
            })
        })
        .map(|o| view(kind, o, None))
        .collect();
    Ok((
        200,
        json!({
            "kind": format!("{}List", kind.kind), "apiVersion": kind.api_version(),
            "metadata": {"resourceVersion": inner.store.resource_version.to_string()},
            "items": items,
        }),
    ))
}

/// One requirement of a label selector.
#[derive(Clone, Debug, PartialEq)]
pub enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

impl Requirement {
    pub fn matches(&self, labels: &Value) -> bool {
        let get = |k: &str| labels[k].as_str();
        match self {
            Requirement::Equals(k, v) => get(k) == Some(v),
            Requirement::NotEquals(k, v) => get(k) != Some(v),
            Requirement::In(k, vs) => get(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Requirement::NotIn(k, vs) => !get(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::DoesNotExist(k) => get(k).is_none(),
        }
    }
}

/// Parses `a=b,c!=d,e in (f,g),h notin (i),j,!k`.
pub fn parse_label_selector(s: &str) -> Result<Vec<Requirement>, ApiError> {
    let bad = |part: &str| {
        ApiError::bad_request(format!(
            "unable to parse requirement: found '{part}' in label selector {s:?}"
        ))
    };
    // Split on commas outside parentheses.
    let mut parts = vec![];
    let (mut depth, mut start) = (0, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    let mut out = vec![];
    for part in parts.into_iter().map(str::trim).filter(|p| !p.is_empty()) {
        let set = |rest: &str| -> Result<Vec<String>, ApiError> {
            let rest = rest.trim();
            let inner = rest
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .ok_or_else(|| bad(part))?;
            Ok(inner
                .split(',')
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .collect())
        };
        let req = if let Some(k) = part.strip_prefix('!') {
            Requirement::DoesNotExist(k.trim().to_string())
        } else if let Some((k, v)) = part.split_once("!=") {
            Requirement::NotEquals(k.trim().into(), v.trim().into())
        } else if let Some((k, v)) = part.split_once("==") {
            Requirement::Equals(k.trim().into(), v.trim().into())
        } else if let Some((k, v)) = part.split_once('=') {
            Requirement::Equals(k.trim().into(), v.trim().into())
        } else if let Some((k, rest)) = part.split_once(" notin ") {
            Requirement::NotIn(k.trim().into(), set(rest)?)
        } else if let Some((k, rest)) = part.split_once(" in ") {
            Requirement::In(k.trim().into(), set(rest)?)
        } else if part
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
        {
            Requirement::Exists(part.to_string())
        } else {
            return Err(bad(part));
        };
        out.push(req);
    }
    Ok(out)
}

/// `metadata.name=web`, `metadata.namespace!=kube-system`: the field
/// selectors every resource supports. Returns (field, equal?, value).
fn parse_field_selector(s: &str) -> Result<Vec<(String, bool, String)>, ApiError> {
    let mut out = vec![];
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (f, eq, v) = if let Some((f, v)) = part.split_once("!=") {
            (f, false, v)
        } else if let Some((f, v)) = part.split_once("==") {
            (f, true, v)
        } else if let Some((f, v)) = part.split_once('=') {
            (f, true, v)
        } else {
            return Err(ApiError::bad_request(format!(
                "invalid selector: '{s}'; can't understand '{part}'"
            )));
        };
        let field = match f.trim() {
            "metadata.name" => "name",
            "metadata.namespace" => "namespace",
            other => {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {other}"
                )))
            }
        };
        out.push((field.to_string(), eq, v.trim().to_string()));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// The Deployment controller.

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
    let template = d["spec"]["template"].clone();
    let rss = owned_replica_sets(store, ns, &uid);
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
    let new_rs = match current {
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
    };
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
    let old_total = (replicas - ready_new).max(0);
    let rss = owned_replica_sets(store, ns, &uid);
    // Old pods stay with the newest old ReplicaSet that still has some.
    let mut olds: Vec<&Value> = rss
        .iter()
        .filter(|rs| rs["metadata"]["name"] != new_name.as_str())
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
    let old_total = if keeper.is_some() { old_total } else { 0 };
    let _ = store.modify("replicasets", ns, &new_name, |rs| {
        rs["spec"]["replicas"] = json!(updated);
        rs["status"] = json!({"replicas": updated, "readyReplicas": ready_new, "availableReplicas": ready_new, "observedGeneration": rs["metadata"]["generation"]});
    });
    let total = updated + old_total;
    let ready = ready_new + old_total;
    let complete = updated == replicas && old_total == 0 && ready == replicas;
    let _ = store.modify("deployments", ns, name, |d| {
        meta_mut(d)
            .entry("annotations")
            .or_insert_with(|| json!({}))[REVISION] = json!(revision);
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
        d["status"] = status;
    });
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

// ---------------------------------------------------------------------------
// The real kubectl, as the reference client.

/// kubectl on PATH; a test that needs it fails here, with what to install,
/// when it is missing.
pub fn kubectl_path() -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("kubectl"))
        .find(|p| p.is_file())
        .expect(
            "kubectl is not on PATH: this test uses the real kubectl as the reference client; \
             install kubectl 1.27 or later (e.g. apt-get install kubectl) and run it again",
        )
}

/// Runs kubectl against `fake` with a kubeconfig in `dir` (default namespace
/// `ns`) and its discovery cache in `dir`; returns (success, stdout, stderr).
pub async fn kubectl(
    fake: &FakeKube,
    dir: &Path,
    ns: &str,
    args: &[&str],
) -> (bool, String, String) {
    let kubeconfig = fake.kubeconfig(dir, ns);
    let out = tokio::process::Command::new(kubectl_path())
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--cache-dir")
        .arg(dir.join(format!("kube-cache-{}", fake.port)))
        .args(args)
        .env("HOME", dir)
        .env_remove("KUBECONFIG")
        .output()
        .await
        .expect("run kubectl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
