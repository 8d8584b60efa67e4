//! The canary health summary: one message per rollout, updated in place.

use crate::chat::{Message, Severity};
use crate::judge::{Evaluation, MetricClass, MetricEvidence, Verdict};

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
        // Checks have their own field (`checks::CheckWatch::summary_field`).
        .filter(|ev| !ev.metric.starts_with("check:"))
        .take(4)
    {
        m = m.field(
            metric_words(&ev.metric),
            format!("{} ({:?})", values(ev), ev.class).to_lowercase(),
        );
    }
    m.context(format!("rollout {rollout}"))
}

/// A metric's name for people: `latency_above_100ms` → "requests slower
/// than 100ms".
fn metric_words(metric: &str) -> String {
    match metric.strip_prefix("latency_above_") {
        Some(bound) => format!("requests slower than {bound}"),
        None => metric.replace('_', " "),
    }
}

/// "canary 0.13% vs baseline 0.10%": shares (errors, slow requests) in
/// percent, utilisations and counts as they are.
fn values(ev: &MetricEvidence) -> String {
    let share = ev.metric.contains("error") || ev.metric.starts_with("latency_above_");
    let (c, b) = if share {
        (pct(ev.canary), pct(ev.baseline))
    } else {
        (format!("{:.3}", ev.canary), format!("{:.3}", ev.baseline))
    };
    format!("canary {c} vs baseline {b}")
}

/// The evidence behind a verdict in one short line, for the places that
/// name the reason next to the summary (a prompt, a pause, a rollback, an
/// incident): the metrics the judge classed failing (else borderline), each
/// as canary vs baseline, without the verdict. The summary itself carries
/// the full reasons.
pub fn short_reason(e: &Evaluation) -> String {
    let worst = [MetricClass::Failing, MetricClass::Borderline]
        .into_iter()
        .find(|c| e.evidence.iter().any(|ev| ev.class == *c));
    let parts: Vec<String> = e
        .evidence
        .iter()
        .filter(|ev| Some(ev.class) == worst)
        .map(|ev| {
            super::checks::short(ev)
                .unwrap_or_else(|| format!("{} {}", metric_words(&ev.metric), values(ev)))
        })
        .collect();
    if parts.is_empty() {
        return e
            .reasons
            .first()
            .cloned()
            .unwrap_or_else(|| format!("the judge found the canary {}", e.verdict));
    }
    parts.join("; ")
}

fn mins(t: f64) -> String {
    let s = t.max(0.0) as u64;
    format!("{}m{:02}s", s / 60, s % 60)
}
