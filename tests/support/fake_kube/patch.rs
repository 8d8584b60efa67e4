//! The patch types the API server accepts: JSON patch, merge patch,
//! strategic merge patch and (approximated) server-side apply.

use super::error::ApiError;
use super::kinds::Kind;
use super::objects::parse_body;
use super::store::{strip_nulls, validate};
use serde_json::{json, Value};

/// `current` with the patch in `body` applied, as a patch of `content_type`;
/// the result is validated like a write.
pub(super) fn apply_patch(
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
