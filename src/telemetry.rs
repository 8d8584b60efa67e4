//! rollbot's own metrics, served at `/metrics` in the Prometheus text format.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// A gauge of seconds or ratios.
type FloatGauge = Gauge<f64, AtomicU64>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KpiLabels {
    pub service: String,
    /// `0.5` or `0.9`
    pub quantile: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    pub service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabels {
    pub service: String,
    /// rollback_time, success, detect, resolve
    pub kpi: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KpiName {
    pub kpi: String,
}

/// The rollback KPIs over the last [`KPI_WINDOW_DAYS`], read from the
/// audit log (`audit::kpi`), as gauges.
pub struct KpiGauges {
    pub rollback_seconds: Family<KpiLabels, FloatGauge>,
    pub success_ratio: Family<ServiceLabels, FloatGauge>,
    pub detect_seconds: Family<KpiLabels, FloatGauge>,
    pub resolve_seconds: Family<KpiLabels, FloatGauge>,
    pub target_met: Family<TargetLabels, Gauge>,
    pub target: Family<KpiName, FloatGauge>,
    /// When they were last read from the audit log.
    pub refreshed: std::sync::Mutex<Option<std::time::Instant>>,
}

/// The window `/metrics` reports KPIs over.
pub const KPI_WINDOW_DAYS: i64 = 30;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    pub action: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    pub action: String,
    /// permission, freeze, two_person, lock, invalid, breaker
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionKind {
    pub action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BreakerLabels {
    pub breaker: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BreakerTransition {
    pub breaker: String,
    pub to: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PlatformLabels {
    pub platform: String,
}

pub struct Telemetry {
    registry: Registry,
    pub actions: Family<ActionLabels, Counter>,
    pub refusals: Family<RefusalLabels, Counter>,
    pub audit_appends: Counter,
    pub action_seconds: Family<ActionKind, Histogram>,
    /// 0 closed, 1 half-open, 2 open.
    pub breaker_state: Family<BreakerLabels, Gauge>,
    pub breaker_transitions: Family<BreakerTransition, Counter>,
    /// Inbound requests refused for a bad signature, per chat platform.
    pub signature_failures: Family<PlatformLabels, Counter>,
    pub chat_errors: Family<PlatformLabels, Counter>,
    /// Outbound chat calls answered 429 and sent again after the wait.
    pub chat_rate_limited: Family<PlatformLabels, Counter>,
    /// Inbound chat interactions by platform and kind (command, button, …).
    pub chat_interactions: Family<InteractionLabels, Counter>,
    pub kpi: KpiGauges,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InteractionLabels {
    pub platform: String,
    pub kind: String,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    pub fn new() -> Telemetry {
        let mut registry = Registry::with_prefix("rollbot");
        let actions = Family::<ActionLabels, Counter>::default();
        registry.register("actions", "Actions by type and outcome", actions.clone());
        let refusals = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "refusals",
            "Refused requests by action and reason",
            refusals.clone(),
        );
        let audit_appends = Counter::default();
        registry.register(
            "audit_appends",
            "Entries appended to the audit log",
            audit_appends.clone(),
        );
        let action_seconds = Family::<ActionKind, Histogram>::new_with_constructor(|| {
            Histogram::new([0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0])
        });
        registry.register(
            "action_duration_seconds",
            "Time from request to result",
            action_seconds.clone(),
        );
        let breaker_state = Family::<BreakerLabels, Gauge>::default();
        registry.register(
            "breaker_state",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open",
            breaker_state.clone(),
        );
        let breaker_transitions = Family::<BreakerTransition, Counter>::default();
        registry.register(
            "breaker_transitions",
            "Circuit breaker state changes",
            breaker_transitions.clone(),
        );
        let signature_failures = Family::<PlatformLabels, Counter>::default();
        registry.register(
            "signature_failures",
            "Inbound requests refused for a bad or stale signature",
            signature_failures.clone(),
        );
        let chat_errors = Family::<PlatformLabels, Counter>::default();
        registry.register(
            "chat_errors",
            "Outbound chat messages that failed",
            chat_errors.clone(),
        );
        let chat_rate_limited = Family::<PlatformLabels, Counter>::default();
        registry.register(
            "chat_rate_limited",
            "Outbound chat calls answered 429 and sent again after the wait",
            chat_rate_limited.clone(),
        );
        let chat_interactions = Family::<InteractionLabels, Counter>::default();
        registry.register(
            "chat_interactions",
            "Inbound chat interactions by platform and kind",
            chat_interactions.clone(),
        );
        let kpi = KpiGauges::register(&mut registry);
        Telemetry {
            kpi,
            registry,
            actions,
            refusals,
            audit_appends,
            action_seconds,
            breaker_state,
            breaker_transitions,
            signature_failures,
            chat_errors,
            chat_rate_limited,
            chat_interactions,
        }
    }

    pub fn count_action(&self, action: &str, outcome: &str) {
        self.actions
            .get_or_create(&ActionLabels {
                action: action.into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    pub fn count_refusal(&self, action: &str, reason: &str) {
        self.refusals
            .get_or_create(&RefusalLabels {
                action: action.into(),
                reason: reason.into(),
            })
            .inc();
    }

    /// Shows `report`'s KPIs in place of the previous ones.
    pub fn set_kpis(&self, report: &crate::audit::kpi::Report) {
        let k = &self.kpi;
        k.rollback_seconds.clear();
        k.success_ratio.clear();
        k.detect_seconds.clear();
        k.resolve_seconds.clear();
        k.target_met.clear();
        let t = &report.targets;
        for (name, v) in [
            ("rollback_time_seconds", t.rollback_secs),
            ("success_ratio", t.success_ratio),
            ("detect_seconds", t.detect_secs),
            ("resolve_seconds", t.resolve_secs),
        ] {
            k.target.get_or_create(&KpiName { kpi: name.into() }).set(v);
        }
        for s in &report.services {
            let service = s.service.clone();
            let spread = |fam: &Family<KpiLabels, FloatGauge>,
                          sp: Option<crate::audit::kpi::Spread>| {
                if let Some(sp) = sp {
                    for (q, v) in [("0.5", sp.p50), ("0.9", sp.p90)] {
                        fam.get_or_create(&KpiLabels {
                            service: service.clone(),
                            quantile: q.into(),
                        })
                        .set(v);
                    }
                }
            };
            spread(&k.rollback_seconds, s.rollback_secs);
            spread(&k.detect_seconds, s.detect_secs);
            spread(&k.resolve_seconds, s.resolve_secs);
            if let Some(r) = s.success_ratio {
                k.success_ratio
                    .get_or_create(&ServiceLabels {
                        service: service.clone(),
                    })
                    .set(r);
            }
            let met = |kpi: &str, present: bool| {
                if present {
                    let ok = !s.misses(kpi);
                    k.target_met
                        .get_or_create(&TargetLabels {
                            service: service.clone(),
                            kpi: kpi.into(),
                        })
                        .set(ok as i64);
                }
            };
            met("rollback_time", s.rollback_secs.is_some());
            met("success", s.success_ratio.is_some());
            met("detect", s.detect_secs.is_some());
            met("resolve", s.resolve_secs.is_some() || s.incidents_open > 0);
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("metrics encode to a String");
        out
    }
}

impl KpiGauges {
    fn register(registry: &mut Registry) -> KpiGauges {
        let k = KpiGauges {
            rollback_seconds: Default::default(),
            success_ratio: Default::default(),
            detect_seconds: Default::default(),
            resolve_seconds: Default::default(),
            target_met: Default::default(),
            target: Default::default(),
            refreshed: Default::default(),
        };
        registry.register(
            "kpi_rollback_seconds",
            "Rollback time (requested to verified) over the last 30 days, by service and quantile",
            k.rollback_seconds.clone(),
        );
        registry.register(
            "kpi_rollback_success_ratio",
            "Share of rollbacks that succeeded over the last 30 days (refusals and dry runs left out)",
            k.success_ratio.clone(),
        );
        registry.register(
            "kpi_detect_seconds",
            "Time from the estimated onset to the decision of automatic rollbacks over the last 30 days",
            k.detect_seconds.clone(),
        );
        registry.register(
            "kpi_resolve_seconds",
            "Time from an incident identified to resolved over the last 30 days",
            k.resolve_seconds.clone(),
        );
        registry.register(
            "kpi_target_met",
            "1 when the service meets the runbook's target for the KPI, 0 when it misses it",
            k.target_met.clone(),
        );
        registry.register(
            "kpi_target",
            "The runbook's targets (seconds, or a ratio for success)",
            k.target.clone(),
        );
        k
    }
}
