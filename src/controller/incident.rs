//! Incident status updates for a rolled-back canary, in the service's
//! incident channel: Identified → Monitoring → Resolved, each with the
//! timeline so far. Resolved is decided by post-rollback verification: the
//! service's error rate back within the baseline's pre-incident range for
//! `resolve_after`.

use crate::chat::{Message, MessageRef, Severity};
use crate::config::ServiceConfig;
use crate::engine::Engine;
use crate::judge::{Evaluation, Tick};

pub struct Incident {
    service: String,
    canary: String,
    stable: String,
    rollout: String,
    channel: Option<String>,
    root: Vec<MessageRef>,
    timeline: Vec<String>,
    status: &'static str,
    /// The baseline's error rate before the incident; None when unknown.
    reference: Option<f64>,
    resolve_after: f64,
    /// Recent ticks since the rollback: (t, requests, errors).
    window: std::collections::VecDeque<(f64, u64, u64)>,
}

/// The error rate counts as back to normal up to this many times the
/// reference, plus three standard errors of the window's count. The whole
/// `resolve_after` window is pooled, so per-tick noise does not keep an
/// incident open forever.
const RANGE: f64 = 1.25;

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
        let reference = eval
            .evidence
            .iter()
            .find(|m| m.metric == "error_rate")
            .map(|m| m.baseline)
            .filter(|r| r.is_finite());
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
            reference,
            resolve_after: svc.resolve_after.0.as_secs_f64(),
            window: std::collections::VecDeque::new(),
        };
        let why = eval
            .reasons
            .first()
            .cloned()
            .unwrap_or_else(|| "the judge found the canary failing".into());
        let line = identified.unwrap_or_else(|| {
            format!(
                "Identified: canary {} of {} is failing — {why}",
                i.canary, i.service
            )
        });
        i.note(engine, line);
        if let Some(ch) = &i.channel {
            i.root = engine
                .notifier
                .post(ch, &i.message(Severity::Critical))
                .await;
        }
        i
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
        text: String,
    ) {
        self.status = status;
        self.note(engine, format!("{status}: {text}"));
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

    /// The rollback is done: watch the service until it is healthy again.
    pub async fn rolled_back(&mut self, engine: &Engine, by: &str) {
        let range = match self.reference {
            Some(r) => format!("its error rate stays at or below {:.2}% (the baseline's {:.2}% before the incident, with margin)", r * RANGE * 100.0, r * 100.0),
            None => "metrics keep arriving (the baseline's earlier error rate is unknown)".into(),
        };
        let text = format!(
            "rolled back to {} by {by}; monitoring until {range} for {}",
            self.stable,
            crate::domain::human_duration(std::time::Duration::from_secs_f64(self.resolve_after))
        );
        self.publish(engine, "Monitoring", Severity::Warning, text)
            .await;
    }

    /// Checks one tick after the rollback; true once resolved.
    pub async fn observe(&mut self, engine: &Engine, tick: &Tick) -> bool {
        let (req, err) = [&tick.baseline, &tick.canary]
            .iter()
            .filter_map(|s| s.as_ref())
            .fold((0u64, 0u64), |a, s| (a.0 + s.requests, a.1 + s.errors));
        if req == 0 {
            // No data is not good data: the window starts again when it returns.
            self.window.clear();
            return false;
        }
        self.window.push_back((tick.t, req, err));
        let newest = tick.t;
        while self.window.len() > 1 && newest - self.window[1].0 >= self.resolve_after {
            self.window.pop_front();
        }
        let span = newest - self.window.front().map(|w| w.0).unwrap_or(newest);
        if span < self.resolve_after {
            return false;
        }
        let (n, e) = self
            .window
            .iter()
            .fold((0u64, 0u64), |a, w| (a.0 + w.1, a.1 + w.2));
        let rate = e as f64 / n as f64;
        let ok = match self.reference {
            Some(r) => rate <= r * RANGE + 3.0 * (r.max(1.0 / n as f64) / n as f64).sqrt(),
            None => true,
        };
        if !ok {
            return false;
        }
        let text = format!(
            "error rate {:.2}% over the last {} is within the baseline's range after the rollback to {}",
            rate * 100.0,
            crate::domain::human_duration(std::time::Duration::from_secs_f64(span)),
            self.stable
        );
        self.publish(engine, "Resolved", Severity::Success, text)
            .await;
        true
    }
}
