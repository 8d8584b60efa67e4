//! Shifts traffic between a stable and a canary destination in an Istio
//! `VirtualService`: a rollback sends every request back to stable (at once,
//! or through `rollback_steps` with `step_interval` between them); a promote
//! moves the canary to its next `promote_steps` weight, or to 100% when full.
//!
//! Only the `weight` of the two destinations changes, on the routes that
//! split between them; every other route, match, header rule, retry policy
//! and destination stays as it is, byte for byte.
//!
//! `[services.target]`: `namespace`, `virtual_service` (default: the
//! service's name), `route` (a route name or index; default: every http
//! route with a destination to the canary), `stable_subset` / `canary_subset`
//! (default `stable` / `canary`) or `stable_host` / `canary_host`,
//! `rollback_steps` (canary weights, e.g. "50, 0"; default "0"),
//! `step_interval` (e.g. "30s"), `promote_steps` (e.g. "10, 25, 50, 100";
//! default "100").

mod config;
mod plan;

pub use config::IstioConfig;

use super::kube_common::{self, KubeConnection};
use super::*;
use kube::api::{ApiResource, Patch};
use kube::core::GroupVersionKind;
use serde_json::{json, Value};
use std::sync::Mutex;

/// How the backend is set up; built from `[backends.NAME]` with
/// `type = "istio"`.
#[derive(Clone, Debug)]
pub struct IstioSettings {
    pub connection: KubeConnection,
    /// `v1` (Istio 1.22 and later) or `v1beta1`.
    pub api_version: String,
}

impl Default for IstioSettings {
    fn default() -> Self {
        IstioSettings {
            connection: KubeConnection::default(),
            api_version: "v1".into(),
        }
    }
}

pub const API_VERSIONS: [&str; 2] = ["v1", "v1beta1"];

const KNOWN: [&str; 10] = [
    "namespace",
    "virtual_service",
    "route",
    "stable_subset",
    "canary_subset",
    "stable_host",
    "canary_host",
    "rollback_steps",
    "step_interval",
    "promote_steps",
];

/// A list of weights: `"50, 0"`.
fn parse_weights(key: &str, s: &str) -> Result<Vec<i64>, String> {
    let out: Vec<i64> = s
        .split(',')
        .map(str::trim)
        .filter(|w| !w.is_empty())
        .map(|w| {
            w.trim_end_matches('%')
                .parse::<i64>()
                .ok()
                .filter(|n| (0..=100).contains(n))
                .ok_or_else(|| format!("{key}: `{w}` is not a weight from 0 to 100"))
        })
        .collect::<Result<_, _>>()?;
    if out.is_empty() {
        return Err(format!(
            "{key} is empty; write canary weights, for example \"50, 0\""
        ));
    }
    Ok(out)
}

/// Checks a service's `[services.target]` for this backend; a stepped
/// rollback (its sleeps) must end before the engine's `backend_timeout`.
pub fn check_target(
    settings: &BTreeMap<String, String>,
    backend_timeout: Duration,
) -> Result<(), String> {
    if let Some(k) = settings.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(format!(
            "`{k}` is not a target setting of an istio backend (known: {})",
            KNOWN.join(", ")
        ));
    }
    let p = Plan::from_settings("web", settings)?;
    if p.rollback_steps.windows(2).any(|w| w[1] >= w[0]) {
        return Err("rollback_steps must go down, for example \"50, 20, 0\"".into());
    }
    if p.promote_steps.windows(2).any(|w| w[1] <= w[0]) {
        return Err("promote_steps must go up, for example \"10, 25, 50, 100\"".into());
    }
    let sleeping = p.step_interval * (p.rollback_steps.len() as u32).saturating_sub(1);
    if !sleeping.is_zero() && sleeping >= backend_timeout {
        return Err(format!(
            "a stepped rollback waits {} between its {} steps, {} in all, which is not shorter than [engine] backend_timeout ({}); lower step_interval or raise backend_timeout",
            crate::domain::human_duration(p.step_interval),
            p.rollback_steps.len(),
            crate::domain::human_duration(sleeping),
            crate::domain::human_duration(backend_timeout)
        ));
    }
    Ok(())
}

/// Which destinations are stable and canary, and how weights move.
#[derive(Clone, Debug)]
struct Plan {
    virtual_service: String,
    route: Option<String>,
    stable_subset: Option<String>,
    canary_subset: Option<String>,
    stable_host: Option<String>,
    canary_host: Option<String>,
    rollback_steps: Vec<i64>,
    step_interval: Duration,
    promote_steps: Vec<i64>,
}

impl Plan {
    fn from_settings(service: &str, s: &BTreeMap<String, String>) -> Result<Plan, String> {
        let get = |k: &str| s.get(k).cloned();
        let by_host = s.contains_key("stable_host") || s.contains_key("canary_host");
        if by_host && !(s.contains_key("stable_host") && s.contains_key("canary_host")) {
            return Err(
                "set both stable_host and canary_host, or neither (to match subsets)".into(),
            );
        }
        let mut rollback_steps = match s.get("rollback_steps") {
            Some(v) => parse_weights("rollback_steps", v)?,
            None => vec![0],
        };
        // A rollback always ends with no traffic on the canary.
        if rollback_steps.last() != Some(&0) {
            rollback_steps.push(0);
        }
        let mut promote_steps = match s.get("promote_steps") {
            Some(v) => parse_weights("promote_steps", v)?,
            None => vec![100],
        };
        if promote_steps.last() != Some(&100) {
            promote_steps.push(100);
        }
        let step_interval = match s.get("step_interval") {
            Some(v) => humantime::parse_duration(v).map_err(|e| {
                format!("step_interval `{v}` is not a duration ({e}); write for example \"30s\"")
            })?,
            None => Duration::ZERO,
        };
        Ok(Plan {
            virtual_service: get("virtual_service").unwrap_or_else(|| service.to_string()),
            route: get("route"),
            stable_subset: get("stable_subset").or(if by_host {
                None
            } else {
                Some("stable".into())
            }),
            canary_subset: get("canary_subset").or(if by_host {
                None
            } else {
                Some("canary".into())
            }),
            stable_host: get("stable_host"),
            canary_host: get("canary_host"),
            rollback_steps,
            step_interval,
            promote_steps,
        })
    }

    fn is(&self, dest: &Value, host: &Option<String>, subset: &Option<String>) -> bool {
        host.as_deref()
            .is_none_or(|h| dest["host"].as_str() == Some(h))
            && subset
                .as_deref()
                .is_none_or(|s| dest["subset"].as_str() == Some(s))
    }

    fn is_canary(&self, dest: &Value) -> bool {
        self.is(dest, &self.canary_host, &self.canary_subset)
    }

    fn is_stable(&self, dest: &Value) -> bool {
        self.is(dest, &self.stable_host, &self.stable_subset)
    }

    /// `subset canary` or `host web-canary`, for messages.
    fn canary_name(&self) -> String {
        match (&self.canary_host, &self.canary_subset) {
            (Some(h), Some(s)) => format!("host {h} subset {s}"),
            (Some(h), None) => format!("host {h}"),
            (None, Some(s)) => format!("subset {s}"),
            (None, None) => "canary".into(),
        }
    }

    fn stable_name(&self) -> String {
        match (&self.stable_host, &self.stable_subset) {
            (Some(h), Some(s)) => format!("host {h} subset {s}"),
            (Some(h), None) => format!("host {h}"),
            (None, Some(s)) => format!("subset {s}"),
            (None, None) => "stable".into(),
        }
    }
}

/// One http route that splits traffic between stable and canary.
#[derive(Clone, Debug, PartialEq)]
struct Split {
    /// Index in `spec.http`.
    route: usize,
    label: String,
    stable: usize,
    canary: usize,
    stable_weight: i64,
    canary_weight: i64,
    /// Weight of the route's other destinations (mirrors of no concern here).
    others: i64,
}

fn weight(dest: &Value, n: usize) -> i64 {
    dest["weight"]
        .as_i64()
        .unwrap_or(if n == 1 { 100 } else { 0 })
}

fn route_label(route: &Value, i: usize) -> String {
    match route["name"].as_str() {
        Some(n) => format!("route {n}"),
        None => format!("route #{i}"),
    }
}

/// The routes a rollback or promote acts on, or why there are none.
fn splits(vs: &Value, plan: &Plan, where_: &str) -> Result<Vec<Split>, BackendError> {
    let http = vs["spec"]["http"].as_array().cloned().unwrap_or_default();
    let names: Vec<String> = http
        .iter()
        .enumerate()
        .map(|(i, r)| route_label(r, i))
        .collect();
    let chosen: Vec<usize> = match &plan.route {
        Some(r) => {
            let found = match r.parse::<usize>() {
                Ok(i) if i < http.len() => Some(i),
                _ => http.iter().position(|h| h["name"].as_str() == Some(r)),
            };
            match found {
                Some(i) => vec![i],
                None => {
                    return Err(BackendError::Refused(format!(
                        "VirtualService {where_} has no http route `{r}` (its routes: {}); check [services.target] route",
                        if names.is_empty() { "none".into() } else { names.join(", ") }
                    )))
                }
            }
        }
        None => (0..http.len())
            .filter(|&i| {
                http[i]["route"]
                    .as_array()
                    .is_some_and(|d| d.iter().any(|d| plan.is_canary(&d["destination"])))
            })
            .collect(),
    };
    if chosen.is_empty() {
        return Err(BackendError::Refused(format!(
            "VirtualService {where_} has no http route with a destination to the canary ({}); its routes: {}. Check [services.target] canary_subset / canary_host and route",
            plan.canary_name(),
            if names.is_empty() { "none".into() } else { names.join(", ") }
        )));
    }
    chosen
        .into_iter()
        .map(|i| {
            let dests = http[i]["route"].as_array().cloned().unwrap_or_default();
            let n = dests.len();
            let find = |f: &dyn Fn(&Value) -> bool| dests.iter().position(|d| f(&d["destination"]));
            let (Some(canary), Some(stable)) = (
                find(&|d| plan.is_canary(d)),
                find(&|d| plan.is_stable(d) && !plan.is_canary(d)),
            ) else {
                return Err(BackendError::Refused(format!(
                    "{} of VirtualService {where_} does not route to both the stable ({}) and the canary ({}); check [services.target]",
                    route_label(&http[i], i),
                    plan.stable_name(),
                    plan.canary_name()
                )));
            };
            let others = dests
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != canary && *j != stable)
                .map(|(_, d)| weight(d, n))
                .sum();
            Ok(Split {
                route: i,
                label: route_label(&http[i], i),
                stable,
                canary,
                stable_weight: weight(&dests[stable], n),
                canary_weight: weight(&dests[canary], n),
                others,
            })
        })
        .collect()
}

/// The JSON patch that gives the canary `canary` percent on each split (the
/// stable destination the rest, after any other destinations).
///
/// Why a JSON patch with `test` operations rather than a merge patch of
/// `spec.http`: a merge patch replaces the whole `http` list, so a route
/// someone added or changed since our read would be silently undone. Here
/// each write first tests the exact destination and weight it changes; if
/// anyone moved them in between, the API server refuses the whole patch
/// (422) and nothing is applied; we then read afresh and compute again.
/// Concurrent edits elsewhere in the object are neither blocked nor lost.
fn shift_patch(vs: &Value, splits: &[Split], canary: i64) -> Value {
    let mut ops = vec![];
    for s in splits {
        let stable = (100 - canary - s.others).max(0);
        if s.canary_weight == canary && s.stable_weight == stable {
            continue;
        }
        for (j, w) in [(s.canary, canary), (s.stable, stable)] {
            let base = format!("/spec/http/{}/route/{j}", s.route);
            let dest = &vs["spec"]["http"][s.route]["route"][j];
            ops.push(json!({"op": "test", "path": format!("{base}/destination"), "value": dest["destination"]}));
            match dest.get("weight") {
                Some(cur) => {
                    ops.push(json!({"op": "test", "path": format!("{base}/weight"), "value": cur}));
                    ops.push(
                        json!({"op": "replace", "path": format!("{base}/weight"), "value": w}),
                    );
                }
                None => {
                    ops.push(json!({"op": "add", "path": format!("{base}/weight"), "value": w}))
                }
            }
        }
    }
    Value::Array(ops)
}

fn weights_line(splits: &[Split]) -> String {
    splits
        .iter()
        .map(|s| {
            format!(
                "{}: stable {}%, canary {}%",
                s.label, s.stable_weight, s.canary_weight
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn canary_now(splits: &[Split]) -> i64 {
    splits.iter().map(|s| s.canary_weight).max().unwrap_or(0)
}

/// Which VirtualService a service is and how its weights move, with the
/// resource of the configured `networking.istio.io` version.
struct Place {
    plan: Plan,
    resource: ApiResource,
}

/// The calls of one action, with the record of every request.
type Session = kube_common::Session<Place>;

fn where_(s: &Session) -> String {
    format!("{}/{}", s.namespace, s.place.plan.virtual_service)
}

fn by_hand(s: &Session, patch: &Value) -> String {
    format!(
        "`kubectl -n {} patch virtualservice {} --type=json -p '{patch}'`",
        s.namespace, s.place.plan.virtual_service
    )
}

/// The VirtualService as JSON; a missing one is refused naming what to check.
async fn get(s: &Session) -> Result<Value, BackendError> {
    let vs = &s.place.plan.virtual_service;
    let check = format!(
        "namespace and virtual_service for this service (`kubectl -n {} get virtualservices`)",
        s.namespace
    );
    let by_hand = format!(
        "`kubectl -n {} get virtualservice {vs} -o yaml`",
        s.namespace
    );
    let api = s.custom_api(&s.place.resource);
    let o = s.read(&api, "VirtualService", vs, &check, &by_hand).await?;
    Ok(serde_json::to_value(o).unwrap_or_default())
}

/// Moves the canary to `canary` percent on every split, from a fresh read
/// each attempt (the first may use `read`, just made); returns the splits
/// as they now are.
async fn shift(
    s: &Session,
    canary: i64,
    mut read: Option<Value>,
) -> Result<Vec<Split>, BackendError> {
    let api = s.custom_api(&s.place.resource);
    let mut attempt = 1;
    loop {
        let vs = match read.take() {
            Some(v) => v,
            None => get(s).await?,
        };
        let splits = splits(&vs, &s.place.plan, &where_(s))?;
        let ops = shift_patch(&vs, &splits, canary);
        let after: Vec<Split> = splits
            .iter()
            .map(|x| Split {
                canary_weight: canary,
                stable_weight: (100 - canary - x.others).max(0),
                ..x.clone()
            })
            .collect();
        if ops.as_array().is_some_and(|o| o.is_empty()) {
            return Ok(after);
        }
        let patch: Patch<Value> =
            Patch::Json(serde_json::from_value(ops.clone()).expect("a JSON patch"));
        match s
            .patch(&api, &s.place.plan.virtual_service, None, &patch)
            .await
        {
            Ok(()) => return Ok(after),
            Err(e) => {
                // 409: someone wrote in between; 422: a `test` failed
                // because the weights moved. Either way nothing was applied.
                let moved =
                    kube_common::api_status(&e).is_some_and(|s| s.code == 409 || s.code == 422);
                if !kube_common::again_after(moved, attempt).await {
                    return Err(s.fail(
                        &format!("patching VirtualService {}", where_(s)),
                        &e,
                        &by_hand(s, &ops),
                    ));
                }
                attempt += 1;
            }
        }
    }
}

const NO_PAUSE: &str = "an Istio VirtualService has no pause: traffic stays where it is until the next /promote or /rollback";

pub struct IstioBackend {
    s: IstioSettings,
    /// The canary weight an action promised, by correlation ID, for verification.
    promised: Mutex<BTreeMap<String, i64>>,
}

impl IstioBackend {
    pub fn new(s: IstioSettings) -> IstioBackend {
        IstioBackend {
            s,
            promised: Mutex::new(BTreeMap::new()),
        }
    }

    async fn session(&self, t: &Target) -> Result<Session, BackendError> {
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("networking.istio.io", &self.s.api_version, "VirtualService"),
            "virtualservices",
        );
        Session::open(&self.s.connection, t, |t| {
            Ok(Place {
                plan: Plan::from_settings(&t.service, &t.settings)?,
                resource,
            })
        })
        .await
    }

    fn promise(&self, ctx: &CallContext, canary: i64) {
        self.promised
            .lock()
            .unwrap()
            .insert(ctx.correlation_id.clone(), canary);
    }
}

#[async_trait]
impl RollbackBackend for IstioBackend {
    fn kind(&self) -> &'static str {
        "istio"
    }

    async fn preflight(
        &self,
        t: &Target,
        op: &Operation,
        _ctx: &CallContext,
    ) -> Result<Preflight, BackendError> {
        if matches!(op, Operation::Pause | Operation::Resume) {
            return Err(BackendError::Refused(NO_PAUSE.into()));
        }
        let s = &self.session(t).await?;
        let vs = get(s).await?;
        let splits = splits(&vs, &s.place.plan, &where_(s))?;
        let mut notes = vec![format!(
            "VirtualService {}: {}",
            where_(s),
            weights_line(&splits)
        )];
        if let Operation::Rollback { to: Some(to) } = op {
            notes.push(format!(
                "an Istio rollback moves traffic back to the stable destination; `{to}` is not used"
            ));
        }
        Ok(Preflight {
            notes,
            ..Default::default()
        })
    }

    async fn rollback(
        &self,
        t: &Target,
        _to: Option<&str>,
        ctx: &CallContext,
    ) -> Result<ActionReport, BackendError> {
        let s = &self.session(t).await?;
        let vs = get(s).await?;
        let before = splits(&vs, &s.place.plan, &where_(s))?;
        let now = canary_now(&before);
        let from = format!("canary {now}%");
        if before.iter().all(|x| x.canary_weight == 0) {
            return Ok(ActionReport {
                summary: format!(
                    "nothing to do: VirtualService {} already sends no traffic to the canary ({})",
                    where_(s),
                    weights_line(&before)
                ),
                to_revision: Some("canary 0%".into()),
                changed: false,
                requests: s.take_requests(),
                ..Default::default()
            });
        }
        // Only the steps below where the canary is now.
        let steps: Vec<i64> = s
            .place
            .plan
            .rollback_steps
            .iter()
            .copied()
            .filter(|w| *w < now)
            .collect();
        let n = steps.len();
        let mut after = before.clone();
        for (i, w) in steps.iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(s.place.plan.step_interval).await;
            }
            let read = if i == 0 { Some(vs.clone()) } else { None };
            after = match shift(s, *w, read).await {
                Ok(a) => a,
                Err(e) if i > 0 => {
                    return Err(BackendError::Failed {
                        message: format!(
                            "{e}\nThe rollback stopped after step {i} of {n}: the canary still gets {}% of traffic",
                            steps[i - 1]
                        ),
                        requests: e.requests().to_vec(),
                    })
                }
                Err(e) => return Err(e),
            };
            if n > 1 {
                ctx.progress
                    .report(format!("step {} of {n}: {}", i + 1, weights_line(&after)));
            }
        }
        Ok(ActionReport {
            summary: format!(
                "VirtualService {}: all traffic back to the stable {} ({}){}",
                where_(s),
                s.place.plan.stable_name(),
                weights_line(&after),
                if n > 1 {
                    format!(", in {n} steps")
                } else {
                    String::new()
                }
            ),
            from_revision: Some(from),
            to_revision: Some("canary 0%".into()),
            changed: true,
            requests: s.take_requests(),
        })
    }

    async fn promote(
        &self,
        t: &Target,
        full: bool,
        ctx: &CallContext,
    ) -> Result<ActionReport, BackendError> {
        let s = &self.session(t).await?;
        let vs = get(s).await?;
        let before = splits(&vs, &s.place.plan, &where_(s))?;
        let now = canary_now(&before);
        let next = if full {
            Some(100)
        } else {
            s.place
                .plan
                .promote_steps
                .iter()
                .copied()
                .find(|w| *w > now)
        };
        let Some(next) = next.filter(|n| before.iter().any(|x| x.canary_weight != *n)) else {
            return Ok(ActionReport {
                summary: format!(
                    "nothing to do: the canary is already at its last promote step in VirtualService {} ({})",
                    where_(s),
                    weights_line(&before)
                ),
                changed: false,
                requests: s.take_requests(),
                ..Default::default()
            });
        };
        let after = shift(s, next, Some(vs)).await?;
        self.promise(ctx, next);
        Ok(ActionReport {
            summary: format!(
                "VirtualService {}: canary {} moved from {now}% to {next}% ({})",
                where_(s),
                s.place.plan.canary_name(),
                weights_line(&after)
            ),
            from_revision: Some(format!("canary {now}%")),
            to_revision: Some(format!("canary {next}%")),
            changed: true,
            requests: s.take_requests(),
        })
    }

    async fn pause(&self, _t: &Target, _ctx: &CallContext) -> Result<ActionReport, BackendError> {
        Err(BackendError::Refused(NO_PAUSE.into()))
    }

    async fn resume(&self, _t: &Target, _ctx: &CallContext) -> Result<ActionReport, BackendError> {
        Err(BackendError::Refused(NO_PAUSE.into()))
    }

    async fn verify(
        &self,
        t: &Target,
        op: &Operation,
        _report: &ActionReport,
        ctx: &CallContext,
    ) -> Result<Verification, BackendError> {
        let want = match op {
            Operation::Rollback { .. } => Some(0),
            _ => self.promised.lock().unwrap().remove(&ctx.correlation_id),
        };
        let s = &self.session(t).await?;
        let vs = get(s).await?;
        let now = splits(&vs, &s.place.plan, &where_(s))?;
        let ok = want.is_none_or(|w| now.iter().all(|x| x.canary_weight == w));
        Ok(Verification {
            ok,
            detail: match (ok, want) {
                (true, _) => format!("VirtualService {} reads {}", where_(s), weights_line(&now)),
                (false, Some(w)) => format!(
                    "VirtualService {} reads {}, not canary {w}%: someone changed it since; check `kubectl -n {} get virtualservice {} -o yaml`",
                    where_(s),
                    weights_line(&now),
                    s.namespace,
                    s.place.plan.virtual_service
                ),
                (false, None) => unreachable!(),
            },
        })
    }

    async fn plan(
        &self,
        t: &Target,
        op: &Operation,
        _ctx: &CallContext,
    ) -> Result<crate::backend::Plan, BackendError> {
        self.plan_weights(t, op).await
    }

    async fn status(&self, t: &Target) -> Result<BackendStatus, BackendError> {
        let s = &self.session(t).await?;
        let vs = get(s).await?;
        let now = splits(&vs, &s.place.plan, &where_(s))?;
        let canary = canary_now(&now);
        Ok(BackendStatus {
            live_revision: Some(s.place.plan.stable_name()),
            canary_revision: (canary > 0).then(|| s.place.plan.canary_name()),
            canary_weight: Some(canary.clamp(0, 100) as u8),
            notes: now
                .iter()
                .map(|x| {
                    format!(
                        "{}: stable {}%, canary {}%",
                        x.label, x.stable_weight, x.canary_weight
                    )
                })
                .collect(),
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vs() -> Value {
        json!({"spec": {"hosts": ["web"], "http": [
            {"name": "internal", "match": [{"headers": {"x-internal": {"exact": "1"}}}],
             "route": [{"destination": {"host": "web", "subset": "stable"}}]},
            {"name": "primary", "retries": {"attempts": 3},
             "route": [
                {"destination": {"host": "web", "subset": "stable"}, "weight": 80},
                {"destination": {"host": "web", "subset": "canary"}, "weight": 20}]},
        ]}})
    }

    fn plan(pairs: &[(&str, &str)]) -> Plan {
        let m = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Plan::from_settings("web", &m).unwrap()
    }

    #[test]
    fn only_routes_to_the_canary_are_chosen_and_patched_with_tests() {
        let v = vs();
        let p = plan(&[]);
        let sp = splits(&v, &p, "prod/web").unwrap();
        assert_eq!(sp.len(), 1);
        assert_eq!(
            (sp[0].route, sp[0].stable_weight, sp[0].canary_weight),
            (1, 80, 20)
        );
        let ops = shift_patch(&v, &sp, 0);
        assert_eq!(
            ops,
            json!([
                {"op": "test", "path": "/spec/http/1/route/1/destination", "value": {"host": "web", "subset": "canary"}},
                {"op": "test", "path": "/spec/http/1/route/1/weight", "value": 20},
                {"op": "replace", "path": "/spec/http/1/route/1/weight", "value": 0},
                {"op": "test", "path": "/spec/http/1/route/0/destination", "value": {"host": "web", "subset": "stable"}},
                {"op": "test", "path": "/spec/http/1/route/0/weight", "value": 80},
                {"op": "replace", "path": "/spec/http/1/route/0/weight", "value": 100},
            ])
        );
        let mut after = v.clone();
        json_patch::patch(
            &mut after,
            &serde_json::from_value::<json_patch::Patch>(ops.clone()).unwrap(),
        )
        .unwrap();
        assert_eq!(after["spec"]["http"][0], v["spec"]["http"][0]);
        assert_eq!(
            after["spec"]["http"][1]["retries"],
            v["spec"]["http"][1]["retries"]
        );
        // Someone moved the weights in between: the patch fails as a whole.
        let mut moved = v.clone();
        moved["spec"]["http"][1]["route"][1]["weight"] = json!(50);
        moved["spec"]["http"][1]["route"][0]["weight"] = json!(50);
        let before = moved.clone();
        assert!(json_patch::patch(
            &mut moved,
            &serde_json::from_value::<json_patch::Patch>(ops).unwrap()
        )
        .is_err());
        assert_eq!(moved, before);
    }

    #[test]
    fn missing_canary_or_route_is_refused_with_the_routes_named() {
        let v = vs();
        let e = splits(&v, &plan(&[("canary_subset", "next")]), "prod/web")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("subset next") && e.contains("route internal, route primary"),
            "{e}"
        );
        let e = splits(&v, &plan(&[("route", "edge")]), "prod/web")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no http route `edge`"), "{e}");
        let e = splits(&v, &plan(&[("route", "0")]), "prod/web")
            .unwrap_err()
            .to_string();
        assert!(e.contains("route internal") && e.contains("both"), "{e}");
        let sp = splits(
            &v,
            &plan(&[("stable_host", "web"), ("canary_host", "web")]),
            "prod/web",
        );
        assert!(
            sp.is_err(),
            "a host alone cannot tell stable from canary here"
        );
    }

    #[test]
    fn targets_are_checked() {
        let t = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        let limit = Duration::from_secs(60);
        assert!(check_target(
            &t(&[("rollback_steps", "50, 0"), ("step_interval", "10s")]),
            limit
        )
        .is_ok());
        assert!(check_target(&t(&[("rollback_steps", "0, 50")]), limit)
            .unwrap_err()
            .contains("must go down"));
        assert!(check_target(
            &t(&[("rollback_steps", "50, 20, 0"), ("step_interval", "30s")]),
            limit
        )
        .unwrap_err()
        .contains("backend_timeout"));
        assert!(check_target(&t(&[("promote_steps", "10, 150")]), limit)
            .unwrap_err()
            .contains("`150`"));
        assert!(check_target(&t(&[("canary_host", "web-canary")]), limit)
            .unwrap_err()
            .contains("both stable_host and canary_host"));
        assert!(check_target(&t(&[("subset", "canary")]), limit)
            .unwrap_err()
            .contains("`subset`"));
        assert_eq!(plan(&[("rollback_steps", "50")]).rollback_steps, [50, 0]);
        assert_eq!(
            plan(&[("promote_steps", "10, 50")]).promote_steps,
            [10, 50, 100]
        );
    }
}
