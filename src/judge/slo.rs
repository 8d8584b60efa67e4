//! SLO burn rates: the multi-window, multi-burn-rate alerts of the Google
//! SRE workbook ("Alerting on SLOs"). Burn rate = error ratio / (1 −
//! objective). For a 30-day SLO the page fires at 14.4× over 1 h and 5 m
//! (2% of the budget in an hour) or 6× over 6 h and 30 m (5% in six
//! hours); the ticket at 1× over 3 d and 6 h (10% in three days). Other
//! SLO windows keep those budget shares, so their burn rates scale.

use super::checks::{fmt_value, metric_name, CheckOutcome, CheckState};
use super::{EffectKind, MetricClass, MetricEvidence, StatisticKind};
use crate::config_file::CheckSeverity;
use std::collections::BTreeMap;

const H: u64 = 3600;

/// One alert of the workbook: both windows must burn at the rate.
#[derive(Clone, Copy, Debug)]
pub struct BurnAlert {
    pub long: u64,
    pub short: u64,
    /// Share of the error budget the long window may spend.
    pub budget_share: f64,
}

pub const PAGE: [BurnAlert; 2] = [
    BurnAlert {
        long: H,
        short: 5 * 60,
        budget_share: 0.02,
    },
    BurnAlert {
        long: 6 * H,
        short: 30 * 60,
        budget_share: 0.05,
    },
];

pub const TICKET: [BurnAlert; 1] = [BurnAlert {
    long: 72 * H,
    short: 6 * H,
    budget_share: 0.10,
}];

/// Every window queried, in seconds.
pub fn windows() -> Vec<u64> {
    let mut w: Vec<u64> = PAGE
        .iter()
        .chain(&TICKET)
        .flat_map(|a| [a.long, a.short])
        .collect();
    w.sort_unstable();
    w.dedup();
    w
}

impl BurnAlert {
    /// The burn rate at which this alert fires for an SLO over `slo_window`.
    pub fn rate(&self, slo_window: f64) -> f64 {
        self.budget_share * slo_window / self.long as f64
    }
}

/// The error and request counts of each window, for the canary's own
/// traffic (`canary`) or the whole service's.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SloInput {
    /// Window (seconds) → (errors, requests); absent when it has no data.
    pub counts: BTreeMap<u64, (f64, f64)>,
    pub canary: bool,
    /// Why there is no data, when no window has any.
    pub missing: Option<String>,
}

fn words(secs: u64) -> String {
    if secs.is_multiple_of(24 * H) {
        format!("{}d", secs / (24 * H))
    } else if secs.is_multiple_of(H) {
        format!("{}h", secs / H)
    } else {
        format!("{}m", secs / 60)
    }
}

/// The page and ticket checks of an SLO at one tick.
pub fn assess(
    objective: f64,
    slo_window: f64,
    page: CheckSeverity,
    input: &SloInput,
) -> [CheckOutcome; 2] {
    let budget = 1.0 - objective;
    let burn = |w: u64| {
        input
            .counts
            .get(&w)
            .filter(|(_, n)| *n > 0.0)
            .map(|(e, n)| (e / n).clamp(0.0, 1.0) / budget)
    };
    let one = |name: &str, severity: CheckSeverity, alerts: &[BurnAlert]| {
        let mut parts = Vec::new();
        let mut fired = None;
        let mut any_data = false;
        let mut worst = f64::NAN;
        for a in alerts {
            let rate = a.rate(slo_window);
            let (l, s) = (burn(a.long), burn(a.short));
            let shown = |b: Option<f64>| {
                b.map(|b| format!("{}×", fmt_value(round2(b))))
                    .unwrap_or_else(|| "no data".into())
            };
            parts.push(format!(
                "{} over {} and {} over {} (fires at {}×)",
                shown(l),
                words(a.long),
                shown(s),
                words(a.short),
                fmt_value(round2(rate))
            ));
            if let (Some(l), Some(s)) = (l, s) {
                any_data = true;
                worst = if worst.is_nan() {
                    l.min(s)
                } else {
                    worst.max(l.min(s))
                };
                if l >= rate && s >= rate && fired.is_none() {
                    fired = Some((a, l, s, rate));
                }
            }
        }
        let state = match (fired.is_some(), any_data) {
            (true, _) => CheckState::Firing,
            (false, true) => CheckState::Ok,
            (false, false) => CheckState::NoData,
        };
        let scope = if input.canary {
            "canary"
        } else {
            "whole service"
        };
        let value = match (&input.missing, any_data) {
            (Some(why), false) => why.clone(),
            _ => format!("burn rate {} ({scope})", parts.join("; ")),
        };
        CheckOutcome {
            name: name.to_string(),
            severity,
            state,
            value,
            condition: format!(
                "SLO {}% over {}",
                fmt_value(objective * 100.0),
                words(slo_window as u64)
            ),
            reason: fired.map(|(a, l, s, rate)| {
                format!(
                    "{name}: the {scope} burns its error budget {}× over {} and {}× over {} (≥ {}×: {}% of a {} budget in {})",
                    fmt_value(round2(l)),
                    words(a.long),
                    fmt_value(round2(s)),
                    words(a.short),
                    fmt_value(round2(rate)),
                    fmt_value(a.budget_share * 100.0),
                    words(slo_window as u64),
                    words(a.long)
                )
            }),
            evidence: MetricEvidence {
                metric: metric_name(name),
                critical: severity != CheckSeverity::LogOnly,
                canary: worst,
                baseline: f64::NAN,
                effect: worst,
                effect_kind: EffectKind::Ratio,
                interval: (f64::NAN, f64::NAN),
                tolerance: alerts.first().map(|a| a.rate(slo_window)).unwrap_or(f64::NAN),
                statistic: worst,
                statistic_kind: StatisticKind::Rule,
                threshold: alerts.first().map(|a| a.rate(slo_window)).unwrap_or(f64::NAN),
                canary_n: 0,
                baseline_n: 0,
                class: match state {
                    CheckState::Firing => MetricClass::Failing,
                    CheckState::NoData => MetricClass::NoData,
                    _ => MetricClass::Pass,
                },
                baseline_degraded: false,
            },
        }
    };
    [
        one("SLO burn (page)", page, &PAGE),
        one("SLO burn (ticket)", CheckSeverity::LogOnly, &TICKET),
    ]
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAYS30: f64 = 30.0 * 24.0 * 3600.0;

    fn input(ratio_by_window: &[(u64, f64)]) -> SloInput {
        SloInput {
            counts: ratio_by_window
                .iter()
                .map(|&(w, r)| (w, (r * 100_000.0, 100_000.0)))
                .collect(),
            canary: true,
            missing: None,
        }
    }

    #[test]
    fn the_workbook_rates_for_a_30_day_slo() {
        assert!((PAGE[0].rate(DAYS30) - 14.4).abs() < 1e-9);
        assert!((PAGE[1].rate(DAYS30) - 6.0).abs() < 1e-9);
        assert!((TICKET[0].rate(DAYS30) - 1.0).abs() < 1e-9);
        assert_eq!(windows(), vec![300, 1800, 3600, 6 * H, 72 * H]);
    }

    #[test]
    fn a_page_needs_both_windows_and_a_ticket_is_log_only() {
        // 99.9%: 2% errors is a 20× burn.
        let fast = input(&[
            (3600, 0.02),
            (300, 0.02),
            (6 * H, 0.002),
            (1800, 0.002),
            (72 * H, 0.002),
        ]);
        let [page, ticket] = assess(0.999, DAYS30, CheckSeverity::PageAndSuggest, &fast);
        assert_eq!(page.state, CheckState::Firing, "{page:?}");
        assert!(page.reason.unwrap().contains("20× over 1h"));
        assert_eq!(ticket.state, CheckState::Firing);
        assert_eq!(ticket.severity, CheckSeverity::LogOnly);
        // The 1h window burns, but the last 5 minutes are clean: over.
        let recovered = input(&[
            (3600, 0.02),
            (300, 0.0005),
            (6 * H, 0.0005),
            (1800, 0.0005),
            (72 * H, 0.0005),
        ]);
        let [page, ticket] = assess(0.999, DAYS30, CheckSeverity::PageAndSuggest, &recovered);
        assert_eq!(page.state, CheckState::Ok, "{page:?}");
        assert_eq!(ticket.state, CheckState::Ok);
        let [page, _] = assess(
            0.999,
            DAYS30,
            CheckSeverity::AutoRollback,
            &SloInput::default(),
        );
        assert_eq!(page.state, CheckState::NoData);
    }
}
