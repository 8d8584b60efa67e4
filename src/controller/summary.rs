//! The canary health summary: one message per rollout, updated in place.

use crate::chat::{Message, Severity};
use crate::judge::{Evaluation, MetricClass, Verdict};

fn pct(x: f64) -> String {
    format!("{:.2}%", x * 100.0)
}

/// The summary of a rollout at its latest evaluation.
pub fn summary_message(
    service: &str,
    from: &str,
    to: &str,
    rollout: &str,
    e: &Evaluation,
    state: &str,
) -> Message {
    let severity = match e.verdict {
        Verdict::Healthy => Severity::Success,
        Verdict::Borderline => Severity::Warning,
        Verdict::Failing => Severity::Critical,
        Verdict::NoData => Severity::Info,
    };
    let mut m = Message::new(severity, format!("Canary {service} {to}: {}", e.verdict))
        .text(e.reasons.join("\n"))
        .field("Rollout", format!("{from} → {to}, {state}"))
        .field("Score", format!("{:.0}/100 after {}", e.score, mins(e.t)));
    for ev in e
        .evidence
        .iter()
        .filter(|ev| ev.class != MetricClass::NoData)
        .take(4)
    {
        let (c, b) = if ev.metric.contains("error") {
            (pct(ev.canary), pct(ev.baseline))
        } else {
            (format!("{:.3}", ev.canary), format!("{:.3}", ev.baseline))
        };
        m = m.field(
            ev.metric.replace('_', " "),
            format!("canary {c} vs baseline {b} ({:?})", ev.class).to_lowercase(),
        );
    }
    m.context(format!("rollout {rollout}"))
}

fn mins(t: f64) -> String {
    let s = t.max(0.0) as u64;
    format!("{}m{:02}s", s / 60, s % 60)
}
