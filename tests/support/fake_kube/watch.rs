//! Watches: a request with `watch=true` opens one, and the response
//! streams the store's changes.

use super::error::ApiError;
use super::kinds::Kind;
use super::objects::view;
use super::selectors::Selector;
use super::store::meta_str;
use super::Inner;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// An open watch: what it selects and where it starts.
#[derive(Clone)]
pub(super) struct WatchSpec {
    kind: Kind,
    namespace: Option<String>,
    selector: Selector,
    /// `None`: send every current object as ADDED first.
    since: Option<u64>,
    timeout: std::time::Duration,
}

/// Opens a watch of what `selector` picks of `kind` in `namespace`
/// (`None`: all), from the request's `resourceVersion` and
/// `timeoutSeconds`; the handler streams it once the request is logged.
pub(super) fn open(
    inner: &mut Inner,
    kind: &Kind,
    namespace: Option<&str>,
    selector: Selector,
    params: &HashMap<String, String>,
) -> Result<(u16, Value), ApiError> {
    let since = params
        .get("resourceVersion")
        .filter(|rv| !rv.is_empty() && *rv != "0")
        .map(|rv| {
            rv.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))
        })
        .transpose()?;
    let timeout = params
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(300)
        .min(1800);
    inner.pending_watch = Some(WatchSpec {
        kind: kind.clone(),
        namespace: namespace.map(str::to_string),
        selector,
        since,
        timeout: std::time::Duration::from_secs(timeout),
    });
    Ok((200, Value::Null))
}

/// Streams watch events (`{"type": "ADDED"|"MODIFIED"|"DELETED", "object": …}`,
/// one JSON document per line) by comparing the store every 50 ms, until
/// `timeoutSeconds`. Bookmarks are not sent.
pub(super) fn watch_response(shared: Arc<Mutex<Inner>>, spec: WatchSpec) -> Response {
    let select = |inner: &Inner, spec: &WatchSpec| -> BTreeMap<(String, String), Value> {
        inner
            .store
            .list(&spec.kind.plural, spec.namespace.as_deref())
            .into_iter()
            .filter(|o| spec.selector.matches(o))
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
                                         "resourceVersion": inner.store.resource_version().to_string()},
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
