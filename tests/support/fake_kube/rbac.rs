//! RBAC as the tests set it: denied verbs answer 403 Forbidden.

use super::error::ApiError;
use super::kinds::Kind;
use super::Inner;
use serde_json::json;

/// A verb denied on a resource, like a missing RBAC rule.
pub(super) struct Deny {
    pub(super) verb: String,
    pub(super) group: String,
    /// `deployments` or `deployments/scale`.
    pub(super) resource: String,
}

/// 403 Forbidden, worded as RBAC words it, when a test denied `verb` on
/// the resource (or its subresource).
pub(super) fn authorize(
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
