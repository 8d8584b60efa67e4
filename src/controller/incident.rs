//! Incident status updates for a rolled-back canary, in the service's
//! incident channel: Identified → Monitoring → Resolved, each with the
//! timeline so far.
//!
//! Resolved rests on what the service did after the rollback, on the
//! signals that opened the incident:
//!
//! - only ticks whose whole window lies after the rollback count, by their
//!   instant on the wall clock, not by their place in the rollout: a rollout
//!   caught up from history is not resolved on data from before the
//!   rollback took effect, and `resolve_after` is real time;
//! - the signals are those the judge found failing (else borderline), each
//!   held to the baseline's own level before the incident: an incident
//!   opened for latency is resolved when latency is back, not on the error
//!   rate alone. Without evidence (a rollback by hand before any verdict)
//!   the error rate is watched.

use crate::chat::{Message, MessageRef, Severity};
use crate::config_file::ServiceConfig;
use crate::engine::Engine;
use crate::incident_comms::templates::Template;
use crate::incident_comms::{IncidentEvent, IncidentRef, Thread};
use crate::judge::sequential::fmt_bound;
use crate::judge::stats::count_above;
use crate::judge::{Evaluation, MetricClass, Tick, TrackSample, Verdict};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// What a signal counts in each request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Measure {
    /// 5xx responses.
    Errors,
    /// Responses slower than the histogram bound, named as in the judge's
    /// evidence (`250ms`).
    SlowerThan(String),
}

/// One signal the incident waits on, with the baseline's level before it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct Signal {
    measure: Measure,
    /// The baseline's share before the incident; None when unknown.
    reference: Option<f64>,
}

impl Signal {
    fn from_evidence(metric: &str, baseline: f64) -> Option<Signal> {
        let measure = if metric == "error_rate" {
            Measure::Errors
        } else {
            Measure::SlowerThan(metric.strip_prefix("latency_above_")?.to_string())
        };
        Some(Signal {
            measure,
            reference: Some(baseline).filter(|r| r.is_finite()),
        })
    }

    /// The signals behind a verdict: the failing ones, else the borderline
    /// ones, else the error rate.
    fn behind(eval: &Evaluation) -> Vec<Signal> {
        for class in [MetricClass::Failing, MetricClass::Borderline] {
            let found: Vec<Signal> = eval
                .evidence
                .iter()
                .filter(|e| e.class == class)
                .filter_map(|e| Signal::from_evidence(&e.metric, e.baseline))
                .collect();
            if !found.is_empty() {
                return found;
            }
        }
        let errors = eval
            .evidence
            .iter()
            .find(|e| e.metric == "error_rate")
            .and_then(|e| Signal::from_evidence(&e.metric, e.baseline));
        vec![errors.unwrap_or(Signal {
            measure: Measure::Errors,
            reference: None,
        })]
    }

    fn name(&self) -> String {
        match &self.measure {
            Measure::Errors => "error rate".into(),
            Measure::SlowerThan(b) => format!("share of requests slower than {b}"),
        }
    }

    /// (events, requests) in one track's sample; None when the sample has
    /// traffic but cannot tell (no histogram bucket at this bound).
    fn count(&self, s: &TrackSample) -> Option<(u64, u64)> {
        if s.requests == 0 {
            return Some((0, 0));
        }
        match &self.measure {
            Measure::Errors => Some((s.errors.min(s.requests), s.requests)),
            Measure::SlowerThan(bound) => {
                let le = s
                    .latency_buckets
                    .iter()
                    .map(|b| b.0)
                    .find(|le| le.is_finite() && fmt_bound(*le) == *bound)?;
                count_above(&s.latency_buckets, le)
            }
        }
    }

    /// Both tracks of a tick pooled: the service as its users see it.
    fn pooled(&self, tick: &Tick) -> Option<(u64, u64)> {
        let mut total = (0, 0);
        for s in [&tick.baseline, &tick.canary].into_iter().flatten() {
            let (e, n) = self.count(s)?;
            total = (total.0 + e, total.1 + n);
        }
        (total.1 > 0).then_some(total)
    }

    /// Whether `events` of `n` is back within the reference, with margin:
    /// up to [`RANGE`] times it plus three standard errors of the count.
    fn recovered(&self, events: u64, n: u64) -> bool {
        let rate = events as f64 / n as f64;
        match self.reference {
            Some(r) => rate <= r * RANGE + 3.0 * (r.max(1.0 / n as f64) / n as f64).sqrt(),
            None => true,
        }
    }

    /// "its error rate stays at or below 0.13% (the baseline's 0.10% …)".
    fn target(&self) -> String {
        match self.reference {
            Some(r) => format!(
                "the {} stays at or below {} (the baseline's {} before the incident, with margin)",
                self.name(),
                pct(r * RANGE),
                pct(r)
            ),
            None => format!(
                "the {} keeps being measured (the baseline's earlier level is unknown)",
                self.name()
            ),
        }
    }
}

fn pct(x: f64) -> String {
    format!("{:.2}%", x * 100.0)
}

/// One counted tick after the rollback: its instant and, per signal,
/// (events, requests).
type Counted = (DateTime<Utc>, Vec<(u64, u64)>);

pub struct Incident {
    service: String,
    canary: String,
    stable: String,
    rollout: String,
    channel: Option<String>,
    root: Vec<MessageRef>,
    timeline: Vec<String>,
    status: &'static str,
    signals: Vec<Signal>,
    resolve_after: chrono::Duration,
    /// The metric interval: a tick's window is this long.
    interval: chrono::Duration,
    /// When the rollback was made; no data before it counts.
    rolled_back_at: Option<DateTime<Utc>>,
    /// Counted ticks since the rollback, within `resolve_after`.
    window: VecDeque<Counted>,
    /// The correlation id of its audit entries (opened, resolved), from
    /// which `rollbot report` reads the time to resolve.
    correlation: String,
    /// When the rollout started, for `{since_start}`.
    started: DateTime<Utc>,
    /// The templates' placeholder values known so far (see
    /// `incident_comms/templates.rs`).
    facts: Vec<(&'static str, String)>,
    /// The root message's text, written once from `incident_opened`.
    opening: String,
}

/// What the canary cost users: the requests it failed beyond the
/// baseline's rate, from the judge's error-rate evidence.
fn impact(eval: &Evaluation) -> String {
    let Some(e) = eval.evidence.iter().find(|e| {
        e.metric == "error_rate" && e.canary_n > 0 && e.canary.is_finite() && e.baseline.is_finite()
    }) else {
        return "not estimated (no error-rate evidence)".into();
    };
    let excess = (e.canary_n as f64 * (e.canary - e.baseline))
        .max(0.0)
        .round();
    if excess < 1.0 {
        return format!(
            "no failed requests beyond the baseline's rate ({} canary requests measured)",
            e.canary_n
        );
    }
    format!(
        "about {excess:.0} failed requests beyond the baseline's rate (canary {} vs baseline {} over {} canary requests)",
        pct(e.canary),
        pct(e.baseline),
        e.canary_n
    )
}

/// The error rate counts as back to normal up to this many times the
/// reference, plus three standard errors of the window's count. The whole
/// `resolve_after` window is pooled, so per-tick noise does not keep an
/// incident open forever.
const RANGE: f64 = 1.25;

/// "is failing", "is borderline": the judge's word for the canary.
fn verdict_words(v: Verdict) -> String {
    match v {
        Verdict::Failing | Verdict::Borderline => format!("is {v}"),
        other => format!("was judged {other}"),
    }
}

impl Incident {
    /// Opens the incident as Identified, with the judge's reasons.
    pub async fn open(
        engine: &Engine,
        svc: &ServiceConfig,
        rollout: &str,
        stable: &str,
        canary: &str,
        eval: &Evaluation,
        identified: Option<String>,
    ) -> Incident {
        let to_chrono = |d: std::time::Duration| chrono::Duration::from_std(d).unwrap_or_default();
        let mut i = Incident {
            service: svc.name().into(),
            canary: canary.into(),
            stable: stable.into(),
            rollout: rollout.into(),
            channel: svc
                .incident_channel
                .as_ref()
                .or(svc.deploy_channel.as_ref())
                .map(|c| c.as_ref().clone()),
            root: Vec::new(),
            timeline: Vec::new(),
            status: "Identified",
            signals: Signal::behind(eval),
            resolve_after: to_chrono(svc.resolve_after.0),
            interval: to_chrono(engine.config.metrics.interval.0),
            rolled_back_at: None,
            window: VecDeque::new(),
            correlation: crate::engine::new_id(),
            started: engine.clock.now()
                - chrono::Duration::milliseconds((eval.t.max(0.0) * 1000.0) as i64),
            facts: Vec::new(),
            opening: String::new(),
        };
        let why = super::short_reason(eval);
        // Opened after a rollback someone made: they are the actor.
        let (actor, reason) = match (&identified, engine.recent_rollback(&i.service).await) {
            (Some(_), Some(rb)) => (rb.by, rb.reason),
            _ => ("rollbot controller".to_string(), why.clone()),
        };
        i.facts = vec![
            ("service", i.service.clone()),
            ("from_version", i.canary.clone()),
            ("to_version", i.stable.clone()),
            ("verdict", eval.verdict.to_string()),
            ("evidence", why.clone()),
            ("impact", impact(eval)),
            ("actor", actor),
            ("reason", reason),
            ("incident_id", i.rollout.clone()),
        ];
        i.opening = i.render(engine, Template::IncidentOpened);
        let line = identified.unwrap_or_else(|| {
            format!(
                "Identified: canary {} of {} {} — {why}",
                i.canary,
                i.service,
                verdict_words(eval.verdict)
            )
        });
        i.note(engine, line.clone());
        i.record(engine, "identified", line.clone()).await;
        if let Some(ch) = &i.channel {
            i.root = engine
                .notifier
                .post(ch, &i.message(Severity::Critical))
                .await;
        }
        engine.tell_comms(IncidentEvent::Identified {
            incident: i.comms_ref(),
            title: i.render(engine, Template::StatusPageTitle),
            body: i.render(engine, Template::StatusPageOpened),
        });
        let asks = crate::incident_comms::config::mode_of(&engine.config, &i.service)
            == crate::incident_comms::config::StatusPageMode::Ask;
        if asks && engine.comms().is_some_and(|c| !c.is_empty()) {
            engine.ask_status_page(&i.comms_ref()).await;
        }
        i
    }

    /// The incident as stored while it is monitored; None before the
    /// rollback.
    pub(super) fn saved(&self) -> Option<super::monitoring::Saved> {
        Some(super::monitoring::Saved {
            service: self.service.clone(),
            canary: self.canary.clone(),
            stable: self.stable.clone(),
            rollout: self.rollout.clone(),
            channel: self.channel.clone(),
            root: self.root.clone(),
            timeline: self.timeline.clone(),
            signals: self.signals.clone(),
            rolled_back_at: self.rolled_back_at?,
            correlation: self.correlation.clone(),
            started: self.started,
            facts: self
                .facts
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            opening: self.opening.clone(),
        })
    }

    /// An incident stored in Monitoring, watched again from its rollback
    /// on, with the service's `resolve_after` as configured now.
    pub(super) fn restore(
        engine: &Engine,
        svc: &ServiceConfig,
        saved: super::monitoring::Saved,
    ) -> Incident {
        let to_chrono = |d: std::time::Duration| chrono::Duration::from_std(d).unwrap_or_default();
        // Template values are named by the templates' own placeholders; a
        // name no template knows any more is dropped.
        let known = |name: &str| {
            Template::ALL
                .iter()
                .flat_map(|t| t.placeholders())
                .find(|p| *p == name)
        };
        Incident {
            service: saved.service,
            canary: saved.canary,
            stable: saved.stable,
            rollout: saved.rollout,
            channel: saved.channel,
            root: saved.root,
            timeline: saved.timeline,
            status: "Monitoring",
            signals: saved.signals,
            resolve_after: to_chrono(svc.resolve_after.0),
            interval: to_chrono(engine.config.metrics.interval.0),
            rolled_back_at: Some(saved.rolled_back_at),
            window: VecDeque::new(),
            correlation: saved.correlation,
            started: saved.started,
            facts: saved
                .facts
                .into_iter()
                .filter_map(|(k, v)| Some((known(&k)?, v)))
                .collect(),
            opening: saved.opening,
        }
    }

    /// Sets a placeholder's value.
    fn set(&mut self, name: &'static str, value: String) {
        match self.facts.iter_mut().find(|f| f.0 == name) {
            Some(f) => f.1 = value,
            None => self.facts.push((name, value)),
        }
    }

    /// The service's template `t`, filled with what is known now.
    fn render(&self, engine: &Engine, t: Template) -> String {
        let mut values = self.facts.clone();
        let since = (engine.clock.now() - self.started)
            .to_std()
            .unwrap_or_default();
        values.push(("since_start", crate::domain::human_duration(since)));
        engine.config.templates.render(&self.service, t, &values)
    }

    /// This incident as the status page and the pager know it.
    fn comms_ref(&self) -> IncidentRef {
        IncidentRef {
            rollout: self.rollout.clone(),
            service: self.service.clone(),
            thread: Thread {
                channel: self.channel.clone(),
                root: self.root.clone(),
            },
        }
    }

    /// An audit entry for a change of the incident's status.
    async fn record(&self, engine: &Engine, status: &str, detail: String) {
        self.record_with(engine, status, detail, crate::store::Tx::new())
            .await;
    }

    /// [`Self::record`] in one commit with `tx`; false when this replica
    /// may no longer write (the leader carries on from the store).
    async fn record_with(
        &self,
        engine: &Engine,
        status: &str,
        detail: String,
        tx: crate::store::Tx,
    ) -> bool {
        let mut parameters = std::collections::BTreeMap::new();
        parameters.insert("rollout".to_string(), serde_json::json!(self.rollout));
        parameters.insert("status".to_string(), serde_json::json!(status));
        let record = crate::audit::Record {
            time: engine.clock.now(),
            actor: crate::domain::Actor::system("controller"),
            action: "incident".into(),
            service: Some(self.service.clone()),
            parameters,
            outcome: crate::audit::Outcome::Noted,
            reason: format!("incident {status}"),
            detail,
            correlation_id: self.correlation.clone(),
            idempotency_key: None,
        };
        match engine.store.apply(tx.record(record)).await {
            Ok(_) => {
                engine.telemetry.audit_appends.inc();
            }
            Err(e @ crate::store::StoreError::Fenced(_)) => {
                tracing::warn!(service = %self.service, error = %e, "incident status not recorded: this replica is no longer the leader");
                return false;
            }
            Err(e) => {
                tracing::error!(service = %self.service, error = %e, "could not record an incident's status")
            }
        }
        true
    }

    fn note(&mut self, engine: &Engine, line: String) {
        self.timeline.push(format!(
            "{} {line}",
            engine.clock.now().format("%H:%M:%S UTC")
        ));
    }

    fn message(&self, severity: Severity) -> Message {
        Message::new(
            severity,
            format!(
                "Incident: {} {} — {}",
                self.service, self.canary, self.status
            ),
        )
        .text(&self.opening)
        .field("Status", self.status)
        .field(
            "Service",
            format!(
                "{} (canary {}, stable {})",
                self.service, self.canary, self.stable
            ),
        )
        .field("Timeline", self.timeline.join("\n"))
        .context(format!("rollout {}", self.rollout))
    }

    /// Posts a status change in the incident's thread and updates its root.
    async fn publish(
        &mut self,
        engine: &Engine,
        status: &'static str,
        severity: Severity,
        (line, text): (String, String),
    ) {
        self.status = status;
        self.note(engine, format!("{status}: {line}"));
        let Some(ch) = self.channel.clone() else {
            return;
        };
        engine
            .notifier
            .update(&self.root, &self.message(severity))
            .await;
        let update = Message::new(
            severity,
            format!("{status}: {} {}", self.service, self.canary),
        )
        .text(text)
        .context(format!("rollout {}", self.rollout));
        engine
            .notifier
            .reply_or_post(&self.root, &ch, &update)
            .await;
    }

    /// The rollback was made at `at`: watch the service on what it does
    /// from then on until it is healthy again.
    pub async fn rolled_back(&mut self, engine: &Engine, by: &str, at: DateTime<Utc>) {
        self.rolled_back_at = Some(at);
        let targets: Vec<String> = self.signals.iter().map(Signal::target).collect();
        let watching = format!(
            "{} for {}, measured from the rollback on",
            targets.join(", and "),
            crate::domain::human_duration(self.resolve_after.to_std().unwrap_or_default())
        );
        let line = format!(
            "rolled back to {} by {by}; monitoring until {watching}",
            self.stable
        );
        let reason = match engine.recent_rollback(&self.service).await {
            Some(rb) if rb.by == by => rb.reason,
            _ => self
                .facts
                .iter()
                .find(|f| f.0 == "reason")
                .map(|f| f.1.clone())
                .unwrap_or_default(),
        };
        self.set("actor", by.to_string());
        self.set("reason", reason);
        self.set("watching", watching);
        let text = self.render(engine, Template::RollbackComplete);
        self.publish(engine, "Monitoring", Severity::Warning, (line, text))
            .await;
        // Stored once the thread has its update, so a process that resumes
        // it has the whole timeline.
        if let Some(saved) = self.saved() {
            super::monitoring::save(engine, &saved).await;
        }
        engine.tell_comms(IncidentEvent::Monitoring {
            incident: self.comms_ref(),
            body: self.render(engine, Template::StatusPageMonitoring),
        });
    }

    /// Checks one tick, whose window ends at `at`; true once resolved.
    pub async fn observe(&mut self, engine: &Engine, tick: &Tick, at: DateTime<Utc>) -> bool {
        let Some(since) = self.rolled_back_at else {
            return false;
        };
        if at - self.interval < since {
            // Its window began before the rollback (history being caught
            // up, or the tick the rollback happened in): it says nothing
            // about the service after it.
            return false;
        }
        let counts: Option<Vec<(u64, u64)>> = self.signals.iter().map(|s| s.pooled(tick)).collect();
        let Some(counts) = counts else {
            // No data is not good data: the window starts again when it returns.
            self.window.clear();
            return false;
        };
        self.window.push_back((at, counts));
        while self.window.len() > 1 && at - self.window[1].0 >= self.resolve_after {
            self.window.pop_front();
        }
        let first = self.window.front().map(|w| w.0).unwrap_or(at);
        // The first tick's own window counts too.
        let span = at - first + self.interval;
        if span < self.resolve_after {
            return false;
        }
        let mut measured = Vec::new();
        for (k, s) in self.signals.iter().enumerate() {
            let (e, n) = self
                .window
                .iter()
                .fold((0u64, 0u64), |a, w| (a.0 + w.1[k].0, a.1 + w.1[k].1));
            if !s.recovered(e, n) {
                return false;
            }
            measured.push(format!("{} {}", s.name(), pct(e as f64 / n as f64)));
        }
        let text = format!(
            "{} over the last {}, all after the rollback to {}, {} within the baseline's range",
            measured.join(" and "),
            crate::domain::human_duration(self.resolve_after.to_std().unwrap_or_default()),
            self.stable,
            if measured.len() == 1 { "is" } else { "are" }
        );
        // The stored monitoring goes with the entry: a process that starts
        // after it has nothing left to resolve.
        let done = super::monitoring::done(crate::store::Tx::new(), &self.rollout);
        if !self
            .record_with(engine, "resolved", text.clone(), done)
            .await
        {
            // The new leader resumes the watch and resolves it once.
            return false;
        }
        self.publish(
            engine,
            "Resolved",
            Severity::Success,
            (text.clone(), text.clone()),
        )
        .await;
        self.set("recovery", text);
        engine.tell_comms(IncidentEvent::Resolved {
            incident: self.comms_ref(),
            body: self.render(engine, Template::StatusPageResolved),
        });
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::{EffectKind, MetricEvidence, Recommendation, StatisticKind};

    fn evidence(metric: &str, baseline: f64, class: MetricClass) -> MetricEvidence {
        MetricEvidence {
            metric: metric.into(),
            critical: true,
            canary: baseline * 3.0,
            baseline,
            effect: 3.0,
            effect_kind: EffectKind::Ratio,
            interval: (2.0, 4.0),
            tolerance: 1.1,
            statistic: 1e4,
            statistic_kind: StatisticKind::EValue,
            threshold: 100.0,
            canary_n: 10_000,
            baseline_n: 100_000,
            class,
            baseline_degraded: false,
        }
    }

    fn eval(evidence: Vec<MetricEvidence>) -> Evaluation {
        Evaluation {
            t: 600.0,
            verdict: Verdict::Failing,
            score: 0.0,
            recommendation: Recommendation::Rollback,
            evidence,
            reasons: vec![],
        }
    }

    fn sample(requests: u64, errors: u64, slow: u64) -> TrackSample {
        TrackSample {
            requests,
            errors,
            latency_buckets: vec![(0.1, requests - slow), (f64::INFINITY, requests)],
            ..Default::default()
        }
    }

    #[test]
    fn an_incident_waits_on_the_signals_that_opened_it() {
        let e = eval(vec![
            evidence("error_rate", 0.001, MetricClass::Pass),
            evidence("latency_above_100ms", 0.1, MetricClass::Failing),
        ]);
        let signals = Signal::behind(&e);
        assert_eq!(
            signals,
            vec![Signal {
                measure: Measure::SlowerThan("100ms".into()),
                reference: Some(0.1)
            }]
        );
        // Few errors but half the requests still slow: not recovered.
        let slow = Tick {
            t: 0.0,
            baseline: Some(sample(1000, 1, 500)),
            canary: Some(sample(0, 0, 0)),
        };
        let (e, n) = signals[0].pooled(&slow).unwrap();
        assert!(!signals[0].recovered(e, n));
        let back = Tick {
            baseline: Some(sample(1000, 1, 95)),
            ..slow
        };
        let (e, n) = signals[0].pooled(&back).unwrap();
        assert!(signals[0].recovered(e, n));
        // A histogram without that bound cannot tell.
        let other = Tick {
            baseline: Some(TrackSample {
                latency_buckets: vec![(0.25, 900), (f64::INFINITY, 1000)],
                ..sample(1000, 1, 0)
            }),
            canary: None,
            t: 0.0,
        };
        assert_eq!(signals[0].pooled(&other), None);
    }

    #[test]
    fn without_failing_evidence_the_borderline_then_the_error_rate_is_watched() {
        let e = eval(vec![
            evidence("error_rate", 0.002, MetricClass::Borderline),
            evidence("latency_above_100ms", 0.1, MetricClass::Pass),
        ]);
        assert_eq!(Signal::behind(&e)[0].measure, Measure::Errors);
        assert_eq!(Signal::behind(&e)[0].reference, Some(0.002));
        let none = Signal::behind(&eval(vec![]));
        assert_eq!(none[0].measure, Measure::Errors);
        assert_eq!(none[0].reference, None);
    }
}
