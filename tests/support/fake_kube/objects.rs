//! Requests to resources: get, list, create, update, patch, delete (and
//! watch, handed to [`super::watch`]), with the `/status` and `/scale`
//! subresources, `resourceVersion` conflicts and the faults tests inject.

use super::error::{not_served, ApiError};
use super::kinds::Kind;
use super::patch::apply_patch;
use super::rbac::authorize;
use super::routes::{header, Request, Target};
use super::selectors::Selector;
use super::store::{meta_mut, meta_str, Verb};
use super::{react, watch, Inner};
use axum::http::{HeaderMap, Method};
use serde_json::{json, Value};
use std::collections::HashMap;

/// One request to an object: its kind, its namespace (`""` when the kind
/// is cluster-scoped or the request lists all namespaces), its name (`""`
/// for a collection) and its subresource.
struct Call {
    kind: Kind,
    ns: String,
    name: String,
    sub: Option<String>,
}

pub(super) fn serve(
    inner: &mut Inner,
    req: &Request,
    target: Target,
) -> Result<(u16, Value), ApiError> {
    let path = req.path;
    let kind = inner
        .store
        .kinds()
        .iter()
        .find(|k| {
            k.group == target.group && k.version == target.version && k.plural == target.plural
        })
        .unwrap()
        .clone();
    let params: HashMap<String, String> =
        serde_urlencoded::from_str::<Vec<(String, String)>>(req.query)
            .unwrap_or_default()
            .into_iter()
            .collect();
    let verb = verb(req.method, path, target.name.is_some(), &params)?;
    let namespace = target.namespace.as_deref();
    authorize(
        inner,
        &kind,
        verb,
        namespace,
        target.name.as_deref(),
        target.sub.as_deref(),
    )?;
    if let Some(s) = &target.sub {
        let allowed =
            (s == "status" && kind.status_subresource) || (s == "scale" && kind.scale_subresource);
        if !allowed {
            return Err(not_served(path));
        }
    }
    if kind.namespaced && namespace.is_none() && verb != "list" {
        return Err(not_served(path));
    }
    if verb == "watch" || verb == "list" {
        let selector = Selector::from_params(&params)?;
        return if verb == "watch" {
            watch::open(inner, &kind, namespace, selector, &params)
        } else {
            list(inner, &kind, namespace, &selector)
        };
    }
    let call = Call {
        kind,
        ns: namespace.unwrap_or_default().to_string(),
        name: target.name.unwrap_or_default(),
        sub: target.sub,
    };
    match verb {
        "get" => get(inner, &call),
        "create" => create(inner, &call, req.body),
        "update" | "patch" => write(inner, &call, verb, req.headers, req.body),
        "delete" => delete(inner, &call),
        _ => unreachable!(),
    }
}

/// The RBAC verb of a request; a method the resource does not take is 405.
fn verb(
    method: &Method,
    path: &str,
    named: bool,
    params: &HashMap<String, String>,
) -> Result<&'static str, ApiError> {
    Ok(match (method.as_str(), named) {
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
                format!(
                "the server does not allow this method on the requested resource: {method} {path}"
            ),
            ))
        }
    })
}

fn get(inner: &mut Inner, c: &Call) -> Result<(u16, Value), ApiError> {
    let plural = c.kind.plural.as_str();
    react(inner, Verb::Get, plural, c.sub.as_deref(), &c.ns, &c.name);
    let obj = inner
        .store
        .get(plural, &c.ns, &c.name)
        .ok_or_else(|| ApiError::not_found(&c.kind, &c.name))?;
    Ok((200, view(&c.kind, obj, c.sub.as_deref())))
}

fn create(inner: &mut Inner, c: &Call, body: &[u8]) -> Result<(u16, Value), ApiError> {
    let (kind, plural, ns) = (&c.kind, c.kind.plural.as_str(), c.ns.as_str());
    let obj = parse_body(body)?;
    if let Some(body_ns) = obj["metadata"]["namespace"].as_str() {
        if kind.namespaced && body_ns != ns {
            return Err(ApiError::bad_request("the namespace of the provided object does not match the namespace sent on the request"));
        }
    }
    check_type(kind, &obj)?;
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
    let out = inner.store.create(plural, ns, obj)?;
    let created = meta_str(&out, "name").unwrap_or_default();
    react(inner, Verb::Create, plural, None, ns, &created);
    let out = inner.store.get(plural, ns, &created).unwrap_or(out);
    Ok((201, view(kind, out, None)))
}

/// A PUT (`verb` update) or a PATCH of an object or its subresource.
fn write(
    inner: &mut Inner,
    c: &Call,
    verb: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(u16, Value), ApiError> {
    let (kind, plural, ns, name) = (
        &c.kind,
        c.kind.plural.as_str(),
        c.ns.as_str(),
        c.name.as_str(),
    );
    let content_type = header(headers, "content-type");
    let apply = verb == "patch" && content_type.starts_with("application/apply-patch");
    let current = match inner.store.get(plural, ns, name) {
        Some(c) => c,
        None if apply && c.sub.is_none() => {
            // Server-side apply creates what is missing.
            let obj = parse_body(body)?;
            check_type(kind, &obj)?;
            let mut obj = obj;
            meta_mut(&mut obj).insert("name".into(), json!(name));
            let out = inner.store.create(plural, ns, obj)?;
            react(inner, Verb::Create, plural, None, ns, name);
            return Ok((201, view(kind, out, None)));
        }
        None => return Err(ApiError::not_found(kind, name)),
    };
    if let Some(f) = inner
        .faults
        .iter_mut()
        .find(|f| f.plural == plural && f.name == name && f.remaining > 0)
    {
        f.remaining -= 1;
        inner.store.touch(plural, ns, name);
        return Err(ApiError::conflict(kind, name));
    }
    let before = view(kind, current.clone(), c.sub.as_deref());
    let after = if verb == "update" {
        parse_body(body)?
    } else {
        apply_patch(kind, name, &before, &content_type, body)?
    };
    check_type(kind, &after)?;
    let rv_after = after["metadata"]["resourceVersion"].as_str();
    let rv_now = current["metadata"]["resourceVersion"].as_str();
    if rv_after.is_some_and(|rv| Some(rv) != rv_now) {
        return Err(ApiError::conflict(kind, name));
    }
    if after["metadata"]["name"].as_str() != Some(name) {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            after["metadata"]["name"]
        )));
    }
    let mut next = stored(c, &current, after)?;
    if let Some(m) = next["metadata"].as_object_mut() {
        m.insert("namespace".into(), current["metadata"]["namespace"].clone());
    }
    let out = inner.store.update(plural, ns, next)?;
    let verb = if verb == "update" {
        Verb::Update
    } else {
        Verb::Patch
    };
    react(inner, verb, plural, c.sub.as_deref(), ns, name);
    let out = inner.store.get(plural, ns, name).unwrap_or(out);
    Ok((200, view(kind, out, c.sub.as_deref())))
}

/// What a write of `after` stores over `current`: through `/status` only
/// the status, through `/scale` only `spec.replicas`; a write of the
/// object keeps the status (when that is a subresource) and the
/// server-managed metadata.
fn stored(c: &Call, current: &Value, after: Value) -> Result<Value, ApiError> {
    let mut next = current.clone();
    match c.sub.as_deref() {
        Some("status") => next["status"] = after["status"].clone(),
        Some("scale") => {
            let r = &after["spec"]["replicas"];
            if r.as_i64().is_none_or(|r| r < 0) {
                return Err(ApiError::invalid(
                    &c.kind,
                    &c.name,
                    "spec.replicas",
                    &format!("Invalid value: {r}: must be greater than or equal to 0"),
                ));
            }
            next["spec"]["replicas"] = r.clone();
        }
        _ => {
            next = after;
            if c.kind.status_subresource {
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
    Ok(next)
}

fn delete(inner: &mut Inner, c: &Call) -> Result<(u16, Value), ApiError> {
    let plural = c.kind.plural.as_str();
    let out = inner
        .store
        .delete(plural, &c.ns, &c.name)
        .ok_or_else(|| ApiError::not_found(&c.kind, &c.name))?;
    react(inner, Verb::Delete, plural, None, &c.ns, &c.name);
    Ok((200, view(&c.kind, out, None)))
}

fn list(
    inner: &mut Inner,
    kind: &Kind,
    namespace: Option<&str>,
    selector: &Selector,
) -> Result<(u16, Value), ApiError> {
    let items: Vec<Value> = inner
        .store
        .list(&kind.plural, namespace)
        .into_iter()
        .filter(|o| selector.matches(o))
        .map(|o| view(kind, o, None))
        .collect();
    Ok((
        200,
        json!({
            "kind": format!("{}List", kind.kind), "apiVersion": kind.api_version(),
            "metadata": {"resourceVersion": inner.store.resource_version().to_string()},
            "items": items,
        }),
    ))
}

/// The object as a client of `kind`'s version (and subresource) sees it.
pub(super) fn view(kind: &Kind, mut obj: Value, sub: Option<&str>) -> Value {
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

pub(super) fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
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
