//! A Deployment's revisions: its ReplicaSets, as `kubectl rollout
//! history` lists them, and the one a rollback goes to.

use super::{Session, CHANGE_CAUSE, POD_TEMPLATE_HASH, REVISION};
use crate::backend::BackendError;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde_json::Value;
use std::collections::BTreeMap;

/// One revision of a Deployment: its ReplicaSet.
#[derive(Clone, Debug)]
pub(super) struct Revision {
    pub(super) number: i64,
    pub(super) rs: ReplicaSet,
}

impl Revision {
    pub(super) fn template(&self) -> PodTemplateSpec {
        self.rs
            .spec
            .as_ref()
            .and_then(|s| s.template.clone())
            .unwrap_or_default()
    }

    pub(super) fn images(&self) -> String {
        images(&self.template())
    }

    pub(super) fn change_cause(&self) -> Option<String> {
        annotations(&self.rs.metadata).get(CHANGE_CAUSE).cloned()
    }
}

pub(super) fn annotations(m: &kube::api::ObjectMeta) -> BTreeMap<String, String> {
    m.annotations.clone().unwrap_or_default()
}

pub(super) fn revision_of(m: &kube::api::ObjectMeta) -> Option<i64> {
    annotations(m).get(REVISION).and_then(|r| r.parse().ok())
}

pub(super) fn images(t: &PodTemplateSpec) -> String {
    t.spec
        .as_ref()
        .map(|s| {
            s.containers
                .iter()
                .map(|c| c.image.clone().unwrap_or_default())
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

pub(super) fn image_of(t: &PodTemplateSpec, container: &str) -> Option<String> {
    t.spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == container)
        .and_then(|c| c.image.clone())
}

/// A pod template as JSON, without the `pod-template-hash` label.
pub(super) fn template_json(t: &PodTemplateSpec) -> Value {
    let mut v = serde_json::to_value(t).unwrap_or_default();
    if let Some(labels) = v
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove(POD_TEMPLATE_HASH);
    }
    v
}

/// Drops nulls, empty lists and empty maps: the API machinery's semantic
/// equality treats an empty list or map like a missing one.
pub(super) fn normalized(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), normalized(v)))
                .filter(|(_, v)| !is_empty(v))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(normalized).collect()),
        other => other.clone(),
    }
}

pub(super) fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
        _ => false,
    }
}

/// `kubectl`'s `equalIgnoreHash`.
pub(super) fn same_template(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    normalized(&template_json(a)) == normalized(&template_json(b))
}

/// A label selector in the query form (`app=web,tier in (a,b)`).
pub(super) fn selector_string(
    sel: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
) -> String {
    let mut parts: Vec<String> = sel
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for e in sel.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default().join(",");
        parts.push(match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "Exists" => e.key.clone(),
            _ => format!("!{}", e.key),
        });
    }
    parts.join(",")
}

/// The Deployment's ReplicaSets by revision, oldest first: those its
/// selector matches and that it controls (kubectl's `GetAllReplicaSets`).
pub(super) async fn revisions(s: &Session, d: &Deployment) -> Result<Vec<Revision>, BackendError> {
    let selector = d
        .spec
        .as_ref()
        .map(|s| selector_string(&s.selector))
        .unwrap_or_default();
    let uid = d.metadata.uid.clone().unwrap_or_default();
    let mut out: Vec<Revision> = s
        .replica_sets(&selector, &uid, "Deployment", &s.place.by_hand)
        .await?
        .into_iter()
        .filter_map(|rs| revision_of(&rs.metadata).map(|number| Revision { number, rs }))
        .collect();
    out.sort_by_key(|r| r.number);
    Ok(out)
}

/// The revision a rollback goes to: `to`, or the highest below the live one.
pub(super) fn pick_revision<'a>(
    revisions: &'a [Revision],
    live: Option<i64>,
    to: Option<&str>,
    deployment: &str,
) -> Result<&'a Revision, BackendError> {
    let existing = revisions
        .iter()
        .map(|r| r.number.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let existing = if existing.is_empty() {
        "none".to_string()
    } else {
        existing
    };
    match to {
        Some(t) => {
            let t = t.trim();
            let Ok(n) = t.trim_start_matches("revision").trim().parse::<i64>() else {
                // An image or tag names the newest revision that ran it.
                let runs = |r: &&Revision| {
                    let images = r.images();
                    images.split(", ").any(|i| {
                        i == t || i.ends_with(&format!(":{t}")) || i.ends_with(&format!("/{t}"))
                    })
                };
                return revisions.iter().rev().find(runs).ok_or_else(|| {
                    BackendError::Refused(format!(
                        "`{t}` is neither a revision number nor an image or tag of Deployment {deployment}; revisions that exist: {existing} (see `/status` for their images)"
                    ))
                });
            };
            revisions.iter().find(|r| r.number == n).ok_or_else(|| {
                BackendError::Refused(format!(
                    "revision {n} of Deployment {deployment} does not exist (its ReplicaSet is gone, e.g. beyond revisionHistoryLimit); revisions that exist: {existing}"
                ))
            })
        }
        None => {
            let live = live.or_else(|| revisions.last().map(|r| r.number));
            revisions
                .iter()
                .rev()
                .find(|r| live.is_some_and(|l| r.number < l))
                .ok_or_else(|| {
                    BackendError::Refused(format!(
                        "Deployment {deployment} has no revision before the live one to roll back to; revisions that exist: {existing}"
                    ))
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rev(n: i64) -> Revision {
        let rs: ReplicaSet = serde_json::from_value(json!({
            "metadata": {"name": format!("web-{n}"), "annotations": {REVISION: n.to_string()}},
            "spec": {"selector": {}, "template": {"spec": {"containers": [
                {"name": "app", "image": format!("registry.example.com/web:1.{}", n % 3)},
            ]}}},
        }))
        .unwrap();
        Revision { number: n, rs }
    }

    #[test]
    fn an_image_or_tag_names_the_newest_revision_that_ran_it() {
        // Revisions 2 and 5 both ran web:1.2.
        let revs = [rev(2), rev(4), rev(5)];
        assert_eq!(
            pick_revision(&revs, Some(5), Some("1.2"), "p/web")
                .unwrap()
                .number,
            5
        );
        assert_eq!(
            pick_revision(&revs, Some(5), Some("1.1"), "p/web")
                .unwrap()
                .number,
            4
        );
        assert_eq!(
            pick_revision(
                &revs,
                Some(5),
                Some("registry.example.com/web:1.1"),
                "p/web"
            )
            .unwrap()
            .number,
            4
        );
        assert_eq!(
            pick_revision(&revs, Some(5), Some("web:1.1"), "p/web")
                .unwrap()
                .number,
            4
        );
        assert!(pick_revision(&revs, Some(5), Some("eb:1.1"), "p/web").is_err());
        assert!(pick_revision(&revs, Some(5), Some("1.7"), "p/web").is_err());
    }

    #[test]
    fn the_previous_revision_is_the_highest_below_the_live_one() {
        let revs = [rev(2), rev(4), rev(5)];
        assert_eq!(
            pick_revision(&revs, Some(5), None, "p/web").unwrap().number,
            4
        );
        // After a rollback to 2 the live revision is 6 (the reused ReplicaSet).
        assert_eq!(
            pick_revision(&revs, Some(4), None, "p/web").unwrap().number,
            2
        );
        assert_eq!(
            pick_revision(&revs, Some(5), Some("2"), "p/web")
                .unwrap()
                .number,
            2
        );
        let err = pick_revision(&revs, Some(5), Some("1"), "p/web")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("revision 1") && err.contains("2, 4, 5"),
            "{err}"
        );
        let err = pick_revision(&revs[..1], Some(2), None, "p/web")
            .unwrap_err()
            .to_string();
        assert!(err.contains("no revision before"), "{err}");
        let err = pick_revision(&revs, Some(5), Some("v1.2"), "p/web")
            .unwrap_err()
            .to_string();
        assert!(err.contains("neither a revision number"), "{err}");
    }

    #[test]
    fn templates_compare_without_the_hash_label_and_empty_fields() {
        let a: PodTemplateSpec = serde_json::from_value(json!({
            "metadata": {"labels": {"app": "web", POD_TEMPLATE_HASH: "abc"}},
            "spec": {"containers": [{"name": "app", "image": "web:1", "env": []}]},
        }))
        .unwrap();
        let b: PodTemplateSpec = serde_json::from_value(json!({
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "app", "image": "web:1"}]},
        }))
        .unwrap();
        assert!(same_template(&a, &b));
        let mut c = b.clone();
        c.spec.as_mut().unwrap().containers[0].image = Some("web:2".into());
        assert!(!same_template(&a, &c));
        assert!(template_json(&a)["metadata"]["labels"]
            .get(POD_TEMPLATE_HASH)
            .is_none());
    }

    #[test]
    fn selectors_render_as_query_strings() {
        let sel = serde_json::from_value(json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["a", "b"]},
                {"key": "legacy", "operator": "DoesNotExist"},
            ],
        }))
        .unwrap();
        assert_eq!(selector_string(&sel), "app=web,tier in (a,b),!legacy");
    }
}
