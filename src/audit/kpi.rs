//! Rollback KPIs read back from the audit log, per service, next to the
//! runbook's targets: `rollbot report` prints them and `/metrics` serves
//! them, both from [`compute`], so the two never disagree.
//!
//! - rollback time: a rollback's `requested` entry to its `succeeded`
//!   entry (which the engine writes only once the backend verified it),
//!   matched by correlation id;
//! - success rate: succeeded among the rollbacks that reached a backend
//!   and ended (succeeded, failed, interrupted). Refusals (permission,
//!   preflight, busy) and dry runs never tried, so they do not count;
//! - time to detect, automatic rollbacks only: the controller's verdict
//!   that decided the rollback carries its onset estimate
//!   (`time_to_detect_secs`, `onset`, `decided`) and shares the
//!   rollback's correlation id;
//! - time to resolve: an incident's `identified` entry to its `resolved`
//!   entry. An incident still open past the target counts as a miss.
//!
//! Durations are compared by their 90th percentile (nearest rank).

use super::{Entry, Outcome};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::time::Duration;

/// The runbook's targets.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Targets {
    /// Requested → verified, any mechanism.
    pub rollback_secs: f64,
    /// Share of rollbacks that succeed, at least.
    pub success_ratio: f64,
    /// Onset → decision, automatic rollbacks.
    pub detect_secs: f64,
    /// Incident identified → resolved.
    pub resolve_secs: f64,
}

impl Default for Targets {
    fn default() -> Self {
        Targets {
            rollback_secs: 15.0 * 60.0,
            success_ratio: 0.99,
            detect_secs: 5.0 * 60.0,
            resolve_secs: 30.0 * 60.0,
        }
    }
}

/// How a set of durations spreads, in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Spread {
    pub count: usize,
    pub p50: f64,
    pub p90: f64,
    pub max: f64,
}

impl Spread {
    /// None for no values.
    pub fn of(mut xs: Vec<f64>) -> Option<Spread> {
        if xs.is_empty() {
            return None;
        }
        xs.sort_by(f64::total_cmp);
        Some(Spread {
            count: xs.len(),
            p50: nearest_rank(&xs, 0.5),
            p90: nearest_rank(&xs, 0.9),
            max: xs[xs.len() - 1],
        })
    }
}

/// The smallest value with at least `q` of the values at or below it.
fn nearest_rank(sorted: &[f64], q: f64) -> f64 {
    let rank = (q * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

/// One service's KPIs over the window.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServiceKpis {
    pub service: String,
    pub rollbacks_succeeded: usize,
    pub rollbacks_failed: usize,
    /// Refused before acting (permission, freeze, preflight, busy).
    pub rollbacks_refused: usize,
    pub success_ratio: Option<f64>,
    pub rollback_secs: Option<Spread>,
    pub detect_secs: Option<Spread>,
    pub resolve_secs: Option<Spread>,
    /// Incidents opened and not resolved yet.
    pub incidents_open: usize,
    /// The targets it misses.
    pub misses: Vec<Miss>,
}

/// A target a service misses: which KPI (`rollback_time`, `success`,
/// `detect`, `resolve`) and by how much, in words.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Miss {
    pub kpi: &'static str,
    pub text: String,
}

impl ServiceKpis {
    /// Whether it misses the target of `kpi`.
    pub fn misses(&self, kpi: &str) -> bool {
        self.misses.iter().any(|m| m.kpi == kpi)
    }

    /// The misses in words.
    pub fn miss_texts(&self) -> Vec<&str> {
        self.misses.iter().map(|m| m.text.as_str()).collect()
    }
}

/// The KPIs of every service with a rollback or an incident in the window.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub targets: Targets,
    pub services: Vec<ServiceKpis>,
}

impl Report {
    /// Services that miss at least one target.
    pub fn missing(&self) -> impl Iterator<Item = &ServiceKpis> {
        self.services.iter().filter(|s| !s.misses.is_empty())
    }
}

/// What one correlation id tells about one service.
#[derive(Default)]
struct Trail {
    requested: Option<DateTime<Utc>>,
    end: Option<(Outcome, DateTime<Utc>)>,
    detect_secs: Option<f64>,
    incident_opened: Option<DateTime<Utc>>,
    incident_resolved: Option<DateTime<Utc>>,
}

fn is_dry_run(e: &Entry) -> bool {
    e.record.parameters.get("dry_run") == Some(&serde_json::Value::Bool(true))
}

/// The KPIs from the audit log entries of `since` to `until`.
pub async fn read(
    store: &crate::store::Store,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<Report, crate::store::StoreError> {
    let entries = store
        .audit_query(super::Query {
            since: Some(since),
            limit: 0,
            ..Default::default()
        })
        .await?;
    Ok(compute(&entries, since, until, Targets::default()))
}

/// The KPIs of `entries` (any order) from `since` to `until`.
pub fn compute(
    entries: &[Entry],
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    targets: Targets,
) -> Report {
    let mut trails: HashMap<(String, String), Trail> = HashMap::new();
    for e in entries {
        let r = &e.record;
        let (Some(service), true) = (&r.service, r.time >= since && r.time <= until) else {
            continue;
        };
        let t = trails
            .entry((service.clone(), r.correlation_id.clone()))
            .or_default();
        match (r.action.as_str(), r.outcome) {
            ("rollback", _) if is_dry_run(e) => {}
            ("rollback", Outcome::Requested) => t.requested = Some(r.time),
            ("rollback", o @ (Outcome::Succeeded | Outcome::Failed | Outcome::Interrupted)) => {
                t.end = Some((o, r.time))
            }
            ("rollback", Outcome::Refused) => t.end = Some((Outcome::Refused, r.time)),
            ("verdict", _) => {
                if let Some(s) = r.parameters.get("time_to_detect_secs") {
                    t.detect_secs = s.as_f64();
                }
            }
            ("incident", _) => match r.parameters.get("status").and_then(|s| s.as_str()) {
                Some("identified") => t.incident_opened = Some(r.time),
                Some("resolved") => t.incident_resolved = Some(r.time),
                _ => {}
            },
            _ => {}
        }
    }
    #[derive(Default)]
    struct Acc {
        ok: usize,
        failed: usize,
        refused: usize,
        times: Vec<f64>,
        detect: Vec<f64>,
        resolve: Vec<f64>,
        open: usize,
        open_too_long: usize,
    }
    let mut by_service: BTreeMap<String, Acc> = BTreeMap::new();
    for ((service, _), t) in trails {
        let secs = |a: DateTime<Utc>, b: DateTime<Utc>| (b - a).num_milliseconds() as f64 / 1000.0;
        let acc = by_service.entry(service).or_default();
        match t.end {
            Some((Outcome::Succeeded, at)) => {
                acc.ok += 1;
                acc.times.extend(t.requested.map(|r| secs(r, at)));
                // Detection counts for rollbacks that were made.
                acc.detect.extend(t.detect_secs);
            }
            Some((Outcome::Refused, _)) => {
                acc.refused += 1;
            }
            Some(_) => {
                acc.failed += 1;
                acc.detect.extend(t.detect_secs);
            }
            None => {}
        }
        match (t.incident_opened, t.incident_resolved) {
            (Some(o), Some(r)) => {
                acc.resolve.push(secs(o, r));
            }
            (Some(o), None) => {
                acc.open += 1;
                if secs(o, until) > targets.resolve_secs {
                    acc.open_too_long += 1;
                }
            }
            _ => {}
        }
    }
    let services = by_service
        .into_iter()
        .filter(|(_, a)| a.ok + a.failed + a.refused + a.resolve.len() + a.open > 0)
        .map(|(service, a)| {
            let tried = a.ok + a.failed;
            let mut k = ServiceKpis {
                service,
                rollbacks_succeeded: a.ok,
                rollbacks_failed: a.failed,
                rollbacks_refused: a.refused,
                success_ratio: (tried > 0).then(|| a.ok as f64 / tried as f64),
                rollback_secs: Spread::of(a.times),
                detect_secs: Spread::of(a.detect),
                resolve_secs: Spread::of(a.resolve),
                incidents_open: a.open,
                misses: Vec::new(),
            };
            k.misses = misses(&k, &targets, a.open_too_long);
            k
        })
        .collect();
    Report {
        since,
        until,
        targets,
        services,
    }
}

fn misses(k: &ServiceKpis, t: &Targets, open_too_long: usize) -> Vec<Miss> {
    let mut out = Vec::new();
    let mut miss = |kpi, text| out.push(Miss { kpi, text });
    if let Some(s) = k.rollback_secs.filter(|s| s.p90 > t.rollback_secs) {
        miss(
            "rollback_time",
            format!(
                "rollback time p90 {} (target under {})",
                secs_text(s.p90),
                secs_text(t.rollback_secs)
            ),
        );
    }
    if let Some(r) = k.success_ratio.filter(|r| *r < t.success_ratio) {
        miss(
            "success",
            format!(
                "rollback success {} (target at least {})",
                pct(r),
                pct(t.success_ratio)
            ),
        );
    }
    if let Some(s) = k.detect_secs.filter(|s| s.p90 > t.detect_secs) {
        miss(
            "detect",
            format!(
                "time to detect p90 {} (target under {})",
                secs_text(s.p90),
                secs_text(t.detect_secs)
            ),
        );
    }
    if let Some(s) = k.resolve_secs.filter(|s| s.p90 > t.resolve_secs) {
        miss(
            "resolve",
            format!(
                "time to resolve p90 {} (target under {})",
                secs_text(s.p90),
                secs_text(t.resolve_secs)
            ),
        );
    }
    if open_too_long > 0 {
        miss(
            "resolve",
            format!(
                "{open_too_long} incident(s) open longer than {}",
                secs_text(t.resolve_secs)
            ),
        );
    }
    out
}

fn pct(r: f64) -> String {
    let p = r * 100.0;
    if p.fract() == 0.0 {
        format!("{p:.0}%")
    } else {
        format!("{p:.1}%")
    }
}

/// "4m10s", "1h02m", "12s".
fn secs_text(s: f64) -> String {
    crate::domain::human_duration(Duration::from_secs_f64(s.max(0.0).round()))
}

fn spread_text(s: Option<Spread>) -> String {
    match s {
        Some(s) => format!("{} / {}", secs_text(s.p50), secs_text(s.p90)),
        None => "-".into(),
    }
}

/// The report as a table for people, then the services that miss targets.
pub fn render_text(r: &Report) -> String {
    let t = &r.targets;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Rollback KPIs from {} to {}",
        r.since.format("%Y-%m-%d %H:%M UTC"),
        r.until.format("%Y-%m-%d %H:%M UTC")
    );
    let _ = writeln!(
        out,
        "Targets: rollback p90 under {}, success at least {}, time to detect p90 under {}, time to resolve p90 under {}",
        secs_text(t.rollback_secs),
        pct(t.success_ratio),
        secs_text(t.detect_secs),
        secs_text(t.resolve_secs)
    );
    if r.services.is_empty() {
        let _ = writeln!(out, "\nNo rollbacks or incidents in this window.");
        return out;
    }
    let rows: Vec<[String; 6]> = r
        .services
        .iter()
        .map(|s| {
            [
                s.service.clone(),
                format!(
                    "{} ok, {} failed, {} refused",
                    s.rollbacks_succeeded, s.rollbacks_failed, s.rollbacks_refused
                ),
                s.success_ratio.map(pct).unwrap_or_else(|| "-".into()),
                spread_text(s.rollback_secs),
                spread_text(s.detect_secs),
                match s.incidents_open {
                    0 => spread_text(s.resolve_secs),
                    n => format!("{} ({n} open)", spread_text(s.resolve_secs)),
                },
            ]
        })
        .collect();
    let head = [
        "service",
        "rollbacks",
        "success",
        "rollback p50 / p90",
        "detect p50 / p90",
        "resolve p50 / p90",
    ];
    let mut width = head.map(|h| h.chars().count());
    for row in &rows {
        for (w, c) in width.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (c, w) in cells.iter().zip(width) {
            let _ = write!(l, "{c:<w$}  ");
        }
        l.trim_end().to_string()
    };
    let _ = writeln!(out, "\n{}", line(head.to_vec()));
    for row in &rows {
        let _ = writeln!(out, "{}", line(row.iter().map(String::as_str).collect()));
    }
    let missing: Vec<&ServiceKpis> = r.missing().collect();
    if missing.is_empty() {
        let _ = writeln!(out, "\nEvery service meets the targets.");
    } else {
        let _ = writeln!(out, "\nMissing targets:");
        for s in missing {
            let _ = writeln!(out, "  {}: {}", s.service, s.miss_texts().join("; "));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Record;
    use crate::domain::Actor;
    use chrono::TimeZone;
    use serde_json::json;

    fn at(min: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap() + chrono::Duration::minutes(min)
    }

    fn entry(
        service: &str,
        corr: &str,
        action: &str,
        outcome: Outcome,
        min: i64,
        params: serde_json::Value,
    ) -> Entry {
        Entry {
            seq: 0,
            record: Record {
                time: at(min),
                actor: Actor::system("controller"),
                action: action.into(),
                service: Some(service.into()),
                parameters: serde_json::from_value(params).unwrap(),
                outcome,
                reason: String::new(),
                detail: String::new(),
                correlation_id: corr.into(),
                idempotency_key: None,
            },
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    fn rollback(service: &str, corr: &str, start: i64, end: i64, o: Outcome) -> Vec<Entry> {
        vec![
            entry(
                service,
                corr,
                "rollback",
                Outcome::Requested,
                start,
                json!({}),
            ),
            entry(service, corr, "rollback", o, end, json!({})),
        ]
    }

    fn report(entries: &[Entry]) -> Report {
        compute(entries, at(-1000), at(1000), Targets::default())
    }

    #[test]
    fn rollback_time_is_requested_to_verified_by_correlation() {
        let mut es = Vec::new();
        for (i, mins) in [2, 4, 6, 8, 10, 12, 14, 16, 18, 20].iter().enumerate() {
            es.extend(rollback(
                "checkout",
                &format!("c{i}"),
                100 * i as i64,
                100 * i as i64 + mins,
                Outcome::Succeeded,
            ));
        }
        let r = report(&es);
        let s = r.services[0].rollback_secs.unwrap();
        assert_eq!((s.count, s.p50, s.p90), (10, 600.0, 1080.0));
        assert_eq!(r.services[0].success_ratio, Some(1.0));
        assert_eq!(
            r.services[0].miss_texts(),
            vec!["rollback time p90 18m (target under 15m)"]
        );
    }

    #[test]
    fn failures_lower_the_success_rate_and_refusals_do_not() {
        let mut es = rollback("cart", "a", 0, 3, Outcome::Succeeded);
        es.extend(rollback("cart", "b", 10, 12, Outcome::Failed));
        es.extend(rollback("cart", "c", 20, 20, Outcome::Refused));
        let mut dry = rollback("cart", "d", 30, 30, Outcome::Succeeded);
        for e in &mut dry {
            e.record.parameters.insert("dry_run".into(), json!(true));
        }
        es.extend(dry);
        let r = report(&es);
        let k = &r.services[0];
        assert_eq!(
            (
                k.rollbacks_succeeded,
                k.rollbacks_failed,
                k.rollbacks_refused
            ),
            (1, 1, 1)
        );
        assert_eq!(k.success_ratio, Some(0.5));
        assert_eq!(k.rollback_secs.unwrap().count, 1);
        assert!(k.misses("success"), "{:?}", k.misses);
        assert!(k.misses[0].text.contains("rollback success 50%"));
    }

    #[test]
    fn detection_comes_from_the_verdict_that_decided_an_automatic_rollback() {
        let mut es = rollback("search", "x", 10, 12, Outcome::Succeeded);
        es.push(entry(
            "search",
            "x",
            "verdict",
            Outcome::Noted,
            10,
            json!({"time_to_detect_secs": 420.0}),
        ));
        // A verdict that led to no rollback is no detection.
        es.push(entry(
            "search",
            "y",
            "verdict",
            Outcome::Noted,
            50,
            json!({"time_to_detect_secs": 5.0}),
        ));
        let r = report(&es);
        let d = r.services[0].detect_secs.unwrap();
        assert_eq!((d.count, d.p90), (1, 420.0));
        assert_eq!(
            r.services[0].miss_texts(),
            vec!["time to detect p90 7m (target under 5m)"]
        );
    }

    #[test]
    fn incidents_resolve_in_time_or_stay_open_as_misses() {
        let es = vec![
            entry(
                "pay",
                "i1",
                "incident",
                Outcome::Noted,
                0,
                json!({"status": "identified"}),
            ),
            entry(
                "pay",
                "i1",
                "incident",
                Outcome::Noted,
                20,
                json!({"status": "resolved"}),
            ),
            entry(
                "pay",
                "i2",
                "incident",
                Outcome::Noted,
                900,
                json!({"status": "identified"}),
            ),
        ];
        let r = report(&es);
        let k = &r.services[0];
        assert_eq!(k.resolve_secs.unwrap().p50, 1200.0);
        assert_eq!(k.incidents_open, 1);
        assert_eq!(k.success_ratio, None);
        assert_eq!(k.miss_texts(), vec!["1 incident(s) open longer than 30m"]);
        assert!(k.misses("resolve"));
    }

    #[test]
    fn entries_outside_the_window_are_left_out() {
        let es = rollback("old", "o", 0, 5, Outcome::Failed);
        let r = compute(&es, at(60), at(120), Targets::default());
        assert!(r.services.is_empty());
        assert!(render_text(&r).contains("No rollbacks or incidents"));
    }

    #[test]
    fn the_text_names_the_services_that_miss_targets() {
        let mut es = rollback("checkout", "a", 0, 2, Outcome::Succeeded);
        es.extend(rollback("cart", "b", 0, 40, Outcome::Succeeded));
        let text = render_text(&report(&es));
        assert!(text.contains("checkout"), "{text}");
        assert!(
            text.contains("Missing targets:\n  cart: rollback time p90 40m (target under 15m)"),
            "{text}"
        );
        assert!(!text.contains("  checkout:"), "{text}");
    }
}
