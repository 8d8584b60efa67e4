//! Label and field selectors, as `list` and `watch` apply them.

use super::error::ApiError;
use serde_json::Value;
use std::collections::HashMap;

/// The `labelSelector` and `fieldSelector` of a list or watch request.
#[derive(Clone, Debug, Default)]
pub(super) struct Selector {
    labels: Vec<Requirement>,
    /// (field, equal?, value)
    fields: Vec<(String, bool, String)>,
}

impl Selector {
    /// Reads both selectors from the query; a bad one is a 400.
    pub(super) fn from_params(params: &HashMap<String, String>) -> Result<Selector, ApiError> {
        let labels = match params.get("labelSelector") {
            Some(s) => parse_label_selector(s)?,
            None => vec![],
        };
        let fields = match params.get("fieldSelector") {
            Some(s) => parse_field_selector(s)?,
            None => vec![],
        };
        Ok(Selector { labels, fields })
    }

    pub(super) fn matches(&self, obj: &Value) -> bool {
        self.labels
            .iter()
            .all(|r| r.matches(&obj["metadata"]["labels"]))
            && self.fields.iter().all(|(f, eq, v)| {
                let got = obj["metadata"][f.as_str()].as_str().unwrap_or("");
                (got == v) == *eq
            })
    }
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
