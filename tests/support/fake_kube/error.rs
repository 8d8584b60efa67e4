//! API errors, answered as `Status` bodies the way the API server words them.

use super::kinds::Kind;
use serde_json::{json, Value};

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

pub(super) fn not_served(path: &str) -> ApiError {
    let mut e = ApiError::new(
        404,
        "NotFound",
        "the server could not find the requested resource",
    );
    e.details = json!({"causes": [{"reason": "UnexpectedServerResponse", "message": format!("404 page not found: {path}")}]});
    e
}
