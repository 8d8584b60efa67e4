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

pub mod controller;
pub mod error;
mod hold;
pub mod kinds;
pub mod kubectl;
mod objects;
pub mod patch;
mod rbac;
mod routes;
pub mod selectors;
pub mod store;
mod watch;

pub use controller::{
    deployment, seed_history, template_hash, DeploymentController, Pace, POD_TEMPLATE_HASH,
    REVISION,
};
pub use hold::Hold;
pub use kinds::{standard_kinds, Kind};
pub use kubectl::kubectl;
pub use patch::strategic_merge;
pub use selectors::parse_label_selector;
pub use store::{strip_nulls, Event, Reactor, Store, Verb};

use axum::Router;
use rbac::Deny;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use store::meta_str;
use watch::WatchSpec;

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
    /// Requests to hold until the test releases them.
    holds: Vec<Hold>,
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
            store: Store::new(kinds),
            log: vec![],
            deny: vec![],
            faults: vec![],
            reactors: vec![],
            user: "system:serviceaccount:rollbot:rollbot".into(),
            port,
            pending_watch: None,
            holds: vec![],
        }));
        let app = Router::new()
            .fallback(routes::handle)
            .with_state(inner.clone());
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

    /// Holds the `nth` request (from 1) with `method` to a path ending in
    /// `path_end` sent with `authorization` (`Bearer TOKEN`): it waits,
    /// unanswered, until the test calls [`Hold::release`].
    pub fn hold(&self, method: &str, path_end: &str, authorization: &str, nth: u32) -> Hold {
        let h = Hold::new(method, path_end, authorization, nth);
        self.inner.lock().unwrap().holds.push(h.clone());
        h
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
