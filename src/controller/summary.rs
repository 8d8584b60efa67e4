//! The canary health summary: one message per rollout, updated in place.

use crate::chat::{Message, Severity};
use crate::judge::{Evaluation, MetricClass, MetricEvidence, Verdict};

fn pct(x: f64) -> String {
    format!("{:.2}%", x * 100.0)
}

/// What a rollout's evidence compares: a canary with its baseline, or the
/// service after the change with itself before it.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Sides {
    #[default]
    Canary,
    /// Judged after vs before: `reference` says which window ("30 min
    /// before start, corrected by last week") and `confidence` is the
    /// judge's word on how far the verdict can be trusted.
    BeforeAfter {
        reference: String,
        confidence: Option<String>,
    },
}

impl Sides {
    /// The reference window in words: "30 min before start[, corrected by
    /// last week]".
    pub fn reference(seconds: f64, corrected: bool) -> String {
        let s = seconds.max(0.0).round() as u64;
        let length = if s.is_multiple_of(3600) {
            format!("{} h", s / 3600)
        } else if s.is_multiple_of(60) {
            format!("{} min", s / 60)
        } else {
            crate::domain::human_duration(std::time::Duration::from_secs(s))
        };
        format!(
            "{length} before start{}",
            if corrected {
                ", corrected by last week"
            } else {
                ""
            }
        )
    }
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
    summary_message_of(service, (from, to), rollout, e, state, &Sides::Canary)
}

/// The summary, in the words of what the rollout compares.
pub fn summary_message_of(
    service: &str,
    (from, to): (&str, &str),
    rollout: &str,
    e: &Evaluation,
    state: &str,
    sides: &Sides,
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
            format!("{} ({:?})", values(ev, sides), ev.class).to_lowercase(),
        );
    }
    if let Sides::BeforeAfter {
        confidence: Some(c),
        ..
    } = sides
    {
        m = m.field("Confidence", c.clone());
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

/// "canary 0.13% vs baseline 0.10%", or for a rollout judged after vs
/// before "after 0.13% vs before 0.10% (reference: 30 min before start)":
/// shares (errors, slow requests) in percent, utilisations and counts as
/// they are.
fn values(ev: &MetricEvidence, sides: &Sides) -> String {
    let share = ev.metric.contains("error") || ev.metric.starts_with("latency_above_");
    let (c, b) = if share {
        (pct(ev.canary), pct(ev.baseline))
    } else {
        (format!("{:.3}", ev.canary), format!("{:.3}", ev.baseline))
    };
    match sides {
        Sides::Canary => format!("canary {c} vs baseline {b}"),
        Sides::BeforeAfter { reference, .. } => {
            format!("after {c} vs before {b} (reference: {reference})")
        }
    }
}

/// The evidence behind a verdict in one short line, for the places that
/// name the reason next to the summary (a prompt, a pause, a rollback, an
/// incident): the metrics the judge classed failing (else borderline), each
/// as canary vs baseline, without the verdict. The summary itself carries
/// the full reasons.
pub fn short_reason(e: &Evaluation) -> String {
    short_reason_of(e, &Sides::Canary)
}

/// The short reason, in the words of what the rollout compares.
pub fn short_reason_of(e: &Evaluation, sides: &Sides) -> String {
    let worst = [MetricClass::Failing, MetricClass::Borderline]
        .into_iter()
        .find(|c| e.evidence.iter().any(|ev| ev.class == *c));
    let parts: Vec<String> = e
        .evidence
        .iter()
        .filter(|ev| Some(ev.class) == worst)
        .map(|ev| {
            super::checks::short(ev)
                .unwrap_or_else(|| format!("{} {}", metric_words(&ev.metric), values(ev, sides)))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::{BeforeAfterJudge, JudgePolicy, TrackSample};

    fn sample(requests: u64, errors: u64) -> TrackSample {
        TrackSample {
            requests,
            errors,
            latency_buckets: vec![(0.25, requests - requests / 100), (f64::INFINITY, requests)],
            ..Default::default()
        }
    }

    /// A rolling update with five times the errors of its reference window.
    fn failing_after_vs_before() -> (Evaluation, Sides) {
        let reference: Vec<TrackSample> = (0..180).map(|i| sample(10_000, 10 + i % 3)).collect();
        let mut judge =
            BeforeAfterJudge::new(&JudgePolicy::default(), Default::default(), reference);
        let mut last = None;
        for k in 1..=60 {
            last = Some(judge.observe_after(k as f64 * 10.0, Some(&sample(10_000, 55)), None));
        }
        let sides = Sides::BeforeAfter {
            reference: Sides::reference(judge.policy().reference.secs(), judge.corrected()),
            confidence: judge.confidence().map(str::to_string),
        };
        (last.unwrap(), sides)
    }

    #[test]
    fn a_rollout_judged_after_vs_before_is_summarised_as_after_and_before_everywhere() {
        let (eval, sides) = failing_after_vs_before();
        assert_eq!(eval.verdict, Verdict::Failing, "{eval:?}");
        let m = summary_message_of("checkout", ("v41", "v42"), "r1", &eval, "watching", &sides);
        let errors = m.fields.iter().find(|f| f.name == "error rate").unwrap();
        assert!(
            errors
                .value
                .starts_with("after 0.55% vs before 0.11% (reference: 30 min before start)"),
            "{}",
            errors.value
        );
        let confidence = m.fields.iter().find(|f| f.name == "Confidence").unwrap();
        assert!(
            confidence
                .value
                .starts_with("confidence: before/after comparison against the 30m"),
            "{}",
            confidence.value
        );
        // Every platform shows the same words, never canary vs baseline.
        let slack = serde_json::to_string(&crate::chat::slack::blocks::content(&m)).unwrap();
        let discord = serde_json::to_string(&crate::chat::discord::render::embed(&m)).unwrap();
        let console = crate::chat::console::ConsoleSink::new(std::sync::Arc::new(
            std::sync::Mutex::new(Vec::<u8>::new()),
        ))
        .render("", &m, "");
        for shown in [&slack, &discord, &console] {
            assert!(shown.contains("after 0.55% vs before 0.11%"), "{shown}");
            assert!(shown.contains("reference: 30 min before start"), "{shown}");
            assert!(shown.contains("an outside change"), "{shown}");
            assert!(!shown.contains("vs baseline"), "{shown}");
        }
        let short = short_reason_of(&eval, &sides);
        assert!(
            short.starts_with("error rate after 0.55% vs before"),
            "{short}"
        );
        // A canary rollout keeps its words.
        let canary = summary_message("checkout", "v41", "v42", "r1", &eval, "watching");
        assert!(canary
            .fields
            .iter()
            .any(|f| f.value.starts_with("canary 0.55% vs baseline")));
    }

    #[test]
    fn the_reference_window_is_said_in_plain_words() {
        assert_eq!(Sides::reference(1800.0, false), "30 min before start");
        assert_eq!(
            Sides::reference(3600.0, true),
            "1 h before start, corrected by last week"
        );
        assert_eq!(Sides::reference(90.0, false), "1m 30s before start");
    }
}
