//! The domain words every stage shares: who acts (`Actor`), what they ask for
//! (`Action`), and the scope a freeze covers (`Scope`).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// Where an actor comes from. Together with the platform's immutable ID it
/// names a person or a system component; display names never authorize.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Platform {
    Slack,
    Discord,
    Console,
    /// rollbot's own components: the controller, the scheduler.
    System,
    /// A client of the HTTP API (CI, a gate), named in `[[api.clients]]`.
    Api,
}

impl Platform {
    pub fn prefix(self) -> &'static str {
        match self {
            Platform::Slack => "slack",
            Platform::Discord => "discord",
            Platform::Console => "console",
            Platform::System => "system",
            Platform::Api => "api",
        }
    }
}

/// Who asks for an action.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub platform: Platform,
    /// Immutable platform ID (Slack `U…`, Discord snowflake, `controller`).
    pub id: String,
    /// Shown in messages only; never used for a decision.
    pub display_name: String,
    /// Platform-qualified groups the actor belongs to, such as
    /// `slack-group:S0456` or `discord-role:9456…`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

impl Actor {
    pub fn new(platform: Platform, id: impl Into<String>, display_name: impl Into<String>) -> Self {
        Actor {
            platform,
            id: id.into(),
            display_name: display_name.into(),
            groups: Vec::new(),
        }
    }

    pub fn system(component: &str) -> Self {
        Actor::new(Platform::System, component, format!("rollbot {component}"))
    }

    pub fn with_groups(mut self, groups: Vec<String>) -> Self {
        self.groups = groups;
        self
    }

    /// `slack:U0123`: the form used in `[roles]` and in the audit indexes.
    pub fn qualified_id(&self) -> String {
        format!("{}:{}", self.platform.prefix(), self.id)
    }

    /// Every identity that can be granted a role: the actor and its groups.
    pub fn identities(&self) -> Vec<String> {
        let mut ids = vec![self.qualified_id()];
        ids.extend(self.groups.iter().cloned());
        ids
    }

    pub fn is_system(&self) -> bool {
        self.platform == Platform::System
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.display_name, self.qualified_id())
    }
}

/// A freeze scope: one service, a glob over `environment/name`, or everything.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    All,
    Service(String),
    Glob(String),
}

impl Scope {
    pub fn parse(text: &str) -> Scope {
        if text.eq_ignore_ascii_case("all") {
            Scope::All
        } else if text.contains(['*', '?', '[', '{']) {
            Scope::Glob(text.to_string())
        } else {
            Scope::Service(text.to_string())
        }
    }

    /// Does this scope cover the service `name` in `environment`?
    pub fn covers(&self, environment: &str, name: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Service(s) => s == name || *s == format!("{environment}/{name}"),
            Scope::Glob(g) => crate::glob_matches(g, environment, name),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::All => f.write_str("all"),
            Scope::Service(s) | Scope::Glob(s) => f.write_str(s),
        }
    }
}

/// What someone asks rollbot to do. Every variant runs through
/// [`crate::engine::Engine::execute`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Action {
    Rollback {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<String>,
        /// Past the migration guard (admins, with a reason and a second
        /// person's approval); absent in entries written before it existed.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        force: bool,
    },
    Promote {
        full: bool,
        force: bool,
    },
    /// Roll back every service of a release, dependents first, one
    /// verified step at a time (each step is a `Rollback`).
    RollbackRelease {
        release: String,
    },
    /// Roll back these services one verified step at a time, in this
    /// order (a service and the dependents that moved after it).
    RollbackInOrder {
        services: Vec<String>,
    },
    Pause,
    Resume,
    /// A service's fallback mechanism (`[[services.fallback]]`, by name or
    /// position): its backend's rollback, for a service stuck after a
    /// rollback that did not complete.
    Fallback {
        name: String,
        /// The stuck episode (the failed rollback's correlation id) a
        /// button or the automatic fallback belongs to; a typed command
        /// has none.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        episode: Option<String>,
    },
    Freeze {
        scope: Scope,
        #[serde(with = "humantime_serde_secs")]
        duration: Duration,
    },
    Unfreeze {
        scope: Scope,
    },
    /// Switch the controller's automatic actions on a service off (for
    /// `duration`) or back on.
    Automation {
        enabled: bool,
        #[serde(with = "humantime_serde_secs")]
        duration: Duration,
    },
    Approve {
        prompt: String,
    },
    Reject {
        prompt: String,
    },
    /// The third choice of a prompt that offers one.
    Choose {
        prompt: String,
    },
    /// A read-only view; audited only when refused.
    Query {
        view: View,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum View {
    Status,
    Audit,
}

impl Action {
    /// The word used in messages, metrics and the audit log.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Rollback { .. } => "rollback",
            Action::Promote { .. } => "promote",
            Action::RollbackRelease { .. } => "rollback_release",
            Action::RollbackInOrder { .. } => "rollback_in_order",
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Fallback { .. } => "fallback",
            Action::Freeze { .. } => "freeze",
            Action::Unfreeze { .. } => "unfreeze",
            Action::Automation { .. } => "automation",
            Action::Approve { .. } => "approve",
            Action::Reject { .. } => "reject",
            Action::Choose { .. } => "choose",
            Action::Query { view: View::Status } => "status",
            Action::Query { view: View::Audit } => "audit",
        }
    }

    /// Actions that change a service through its backend.
    pub fn touches_backend(&self) -> bool {
        matches!(
            self,
            Action::Rollback { .. }
                | Action::Promote { .. }
                | Action::Pause
                | Action::Resume
                | Action::Fallback { .. }
        )
    }
}

/// Durations in actions are stored as whole seconds so the audit encoding
/// stays canonical.
mod humantime_serde_secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_secs(u64::deserialize(d)?))
    }
}

/// "2h 30m" style text for messages.
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return "0s".into();
    }
    let (days, hours, mins, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    let mut parts = Vec::new();
    if days > 0 {
        parts.push(format!("{days}d"));
    }
    if hours > 0 {
        parts.push(format!("{hours}h"));
    }
    if mins > 0 {
        parts.push(format!("{mins}m"));
    }
    if s > 0 && days == 0 && hours == 0 {
        parts.push(format!("{s}s"));
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_parse_and_cover() {
        assert_eq!(Scope::parse("ALL"), Scope::All);
        assert_eq!(Scope::parse("prod/*"), Scope::Glob("prod/*".into()));
        assert!(Scope::parse("prod/*").covers("prod", "checkout"));
        assert!(!Scope::parse("prod/*").covers("staging", "checkout"));
        assert!(Scope::parse("checkout").covers("prod", "checkout"));
        assert!(Scope::parse("prod/checkout").covers("prod", "checkout"));
        assert!(!Scope::parse("checkout").covers("prod", "payments"));
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(human_duration(Duration::from_secs(7200)), "2h");
        assert_eq!(human_duration(Duration::from_secs(5400)), "1h 30m");
        assert_eq!(human_duration(Duration::from_secs(45)), "45s");
        assert_eq!(human_duration(Duration::from_secs(86_400 + 3600)), "1d 1h");
    }
}
