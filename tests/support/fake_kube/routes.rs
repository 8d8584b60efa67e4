//! Where a request goes: discovery (`/version`, `/api`, `/apis`, a group
//! version's resources) or a resource, and the handler that logs every
//! request with the answer it got.

use super::error::{not_served, ApiError};
use super::kinds::Kind;
use super::store::Store;
use super::watch::watch_response;
use super::{objects, Inner, Logged};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};

/// Where a request goes.
#[derive(Debug)]
enum Route {
    Version,
    CoreVersions,
    Groups,
    Resources { group: String, version: String },
    Object(Target),
    Unknown,
}

/// A resource path: a collection (`name` is `None`), an object, or an
/// object's subresource.
#[derive(Debug)]
pub(super) struct Target {
    pub(super) group: String,
    pub(super) version: String,
    pub(super) namespace: Option<String>,
    pub(super) plural: String,
    pub(super) name: Option<String>,
    pub(super) sub: Option<String>,
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
        store.kinds().iter().any(|k| {
            k.group == group
                && k.version == version
                && k.plural == plural
                && k.namespaced == namespaced
        })
    };
    if !store
        .kinds()
        .iter()
        .any(|k| k.group == group && k.version == version)
    {
        return Route::Unknown;
    }
    let s = |i: usize| rest.get(i).map(|s| s.to_string());
    let target = |namespace: Option<&str>, plural: &str, name: Option<String>, sub| {
        Route::Object(Target {
            group: group.into(),
            version: version.into(),
            namespace: namespace.map(str::to_string),
            plural: plural.to_string(),
            name,
            sub,
        })
    };
    match rest {
        [] => Route::Resources {
            group: group.into(),
            version: version.into(),
        },
        ["namespaces", ns, plural, ..] if rest.len() <= 5 && served(plural, true) => {
            target(Some(ns), plural, s(3), s(4))
        }
        [plural, ..]
            if rest.len() <= 3
                && (served(plural, false) || (served(plural, true) && rest.len() == 1)) =>
        {
            target(None, plural, s(1), s(2))
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

pub(super) fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

pub(super) async fn handle(
    State(shared): State<Arc<Mutex<Inner>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let held = {
        let inner = shared.lock().unwrap();
        let auth = header(&headers, "authorization");
        let method = method.as_str();
        inner
            .holds
            .iter()
            .find(|h| h.takes(method, uri.path(), &auth))
            .cloned()
    };
    if let Some(h) = held {
        h.wait().await;
    }
    let mut inner = shared.lock().unwrap();
    let query = uri.query().unwrap_or("").to_string();
    let req = Request {
        method: &method,
        path: uri.path(),
        query: &query,
        headers: &headers,
        body: &body,
    };
    let (code, answer) = match serve(&mut inner, &req) {
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

/// A request as received.
pub(super) struct Request<'a> {
    pub(super) method: &'a Method,
    pub(super) path: &'a str,
    pub(super) query: &'a str,
    pub(super) headers: &'a HeaderMap,
    pub(super) body: &'a [u8],
}

fn serve(inner: &mut Inner, req: &Request) -> Result<(u16, Value), ApiError> {
    let path = req.path;
    match route(&inner.store, path) {
        Route::Version => Ok((200, version())),
        // Legacy discovery only: kubectl asks for the aggregated form first
        // and falls back when the answer's content type is plain JSON.
        Route::CoreVersions => Ok((
            200,
            json!({
                "kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": format!("127.0.0.1:{}", inner.port)}],
            }),
        )),
        Route::Groups => Ok((200, groups(inner.store.kinds()))),
        Route::Resources { group, version } => {
            Ok((200, resources(inner.store.kinds(), &group, &version)))
        }
        Route::Unknown => Err(not_served(path)),
        Route::Object(target) => objects::serve(inner, req, target),
    }
}

fn version() -> Value {
    json!({
        "major": "1", "minor": "32", "gitVersion": "v1.32.0",
        "gitCommit": "fake", "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.23.0",
        "compiler": "gc", "platform": "linux/amd64",
    })
}

/// `/apis`: every named group with its versions, the first one preferred.
fn groups(kinds: &[Kind]) -> Value {
    let mut groups: Vec<(String, Vec<String>)> = vec![];
    for k in kinds.iter().filter(|k| !k.group.is_empty()) {
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
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// A group version's resources, with their `/status` and `/scale`.
fn resources(kinds: &[Kind], group: &str, version: &str) -> Value {
    let mut resources = vec![];
    for k in kinds
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
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources})
}
