//! The objects and the API server's bookkeeping on them: resource
//! versions, uids, generations, and the validation behind a 422.

use super::error::ApiError;
use super::kinds::Kind;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

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
    pub(super) fn new(kinds: Vec<Kind>) -> Store {
        Store {
            kinds,
            objects: BTreeMap::new(),
            resource_version: 1000,
        }
    }

    pub(super) fn kinds(&self) -> &[Kind] {
        &self.kinds
    }

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
pub(super) fn validate(kind: &Kind, name: &str, obj: &Value) -> Result<(), ApiError> {
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

pub(super) fn meta_str(obj: &Value, field: &str) -> Option<String> {
    obj["metadata"][field].as_str().map(str::to_string)
}

pub(super) fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
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
