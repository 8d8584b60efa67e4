//! rollbot's own metrics, served at `/metrics` in the Prometheus text format.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

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
        Telemetry {
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

    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("metrics encode to a String");
        out
    }
}
