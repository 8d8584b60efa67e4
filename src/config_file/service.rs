//! `[[services]]`: what rollbot knows of each service, and the checks that
//! tie a service to the rest of the file.

use super::sections::MetricQueries;
use super::Config;
use crate::config::{closest, ConfigError, CronSchedule, HumanDuration, LineIndex};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use toml::Spanned;

/// What the controller does with a `failing` verdict.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnFailing {
    /// Roll back at once (the evidence is already statistically sound).
    #[default]
    AutoRollback,
    /// Post a prompt with Roll back / Continue and wait for a person.
    PageAndSuggest,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    pub name: Spanned<String>,
    #[serde(default = "default_environment")]
    pub environment: String,
    /// Name of a `[backends.NAME]` table.
    pub backend: Spanned<String>,
    /// Channel (from `[channels]`) for summaries, prompts and results.
    pub deploy_channel: Option<Spanned<String>>,
    /// Channel for incident status updates.
    pub incident_channel: Option<Spanned<String>>,
    /// A promote needs a second person's approval.
    #[serde(default)]
    pub critical: bool,
    #[serde(default)]
    pub on_failing: OnFailing,
    /// Promote a healthy canary at the end of each step.
    #[serde(default)]
    pub auto_promote: bool,
    /// Watch this service's canary whenever rollbot runs (otherwise only
    /// rollouts announced through `POST /api/v1/rollouts` are watched).
    #[serde(default)]
    pub watch: bool,
    /// Kubernetes namespace (or other grouping) for `$namespace` in queries.
    #[serde(default)]
    pub namespace: Option<String>,
    /// After a rollback, automatic promotion of this service is held this
    /// long (people can still promote), so automation does not push a fix
    /// out before anyone has looked.
    #[serde(default = "default_cooldown")]
    pub cooldown: HumanDuration,
    /// After a rollback, how long the error rate must stay within the
    /// baseline's range before the incident is marked Resolved.
    #[serde(default = "default_resolve_after")]
    pub resolve_after: HumanDuration,
    /// How long a canary stays at each step before `auto_promote` moves it on.
    #[serde(default = "default_step")]
    pub step_interval: HumanDuration,
    /// Settings the backend needs for this service (namespace, object name…).
    #[serde(default)]
    pub target: BTreeMap<String, String>,
    /// PromQL templates; defaults follow the `http_requests_total` conventions.
    #[serde(default)]
    pub metrics: MetricQueries,
    /// The canary judge's policy for this service.
    #[serde(default)]
    pub judge: crate::judge::JudgePolicy,
    /// How this service's rollouts reach users when an announcement does
    /// not say: `canary` (judged against a baseline track), `rolling`,
    /// `blue-green` or `flag` (judged after vs before).
    #[serde(default)]
    pub strategy: crate::controller::Strategy,
    /// How rollouts without a baseline track are judged after vs before.
    #[serde(default)]
    pub before_after: crate::judge::BeforeAfterPolicy,
    /// `false` switches the controller's automatic actions off for good:
    /// it still judges and posts summaries, but asks instead of rolling
    /// back, pausing or promoting. `/auto <service> off` does the same for
    /// a while.
    #[serde(default = "default_true")]
    pub automation: bool,
    /// A prompt nobody answers escalates after this long, one step of
    /// `escalation` per period.
    #[serde(default = "default_escalate_after")]
    pub escalate_after: HumanDuration,
    /// Who is mentioned when a prompt escalates, in order (on-call, then
    /// team lead, then manager): `slack-group:S…`, `slack:U…`,
    /// `discord-role:…`, `discord:…`.
    #[serde(default)]
    pub escalation: Vec<String>,
    /// Re-post the rollout's summary as a new message on this crontab
    /// schedule (5 fields, UTC), for long rollouts.
    #[serde(default)]
    pub summary_schedule: Option<CronSchedule>,
    /// How often an active rollout's rollback target is checked again
    /// (default: `[controller] capability_check_interval`, 10 minutes).
    #[serde(default)]
    pub capability_check_interval: Option<HumanDuration>,
    /// Whether this service's incidents go on the status page: `auto`,
    /// `ask` or `off` (default: `auto` when `[status_page.components]`
    /// lists it).
    #[serde(default)]
    pub status_page: Option<Spanned<crate::incident_comms::config::StatusPageMode>>,
    /// The services this one needs (it calls their APIs): a release is
    /// rolled back dependents first, and rolling one of these back asks
    /// first when this service moved on after it.
    #[serde(default)]
    pub depends_on: Vec<Spanned<String>>,
    /// After a successful rollback, promotions of this service are frozen
    /// this long (an ad hoc freeze, liftable with `/unfreeze`), so nobody
    /// pushes the bad version out again before the cause is understood.
    #[serde(default)]
    pub freeze_after_rollback: Option<HumanDuration>,
    /// Custom metric checks (`[[services.checks]]`, see `checks.rs`).
    #[serde(default)]
    pub checks: Vec<super::checks::CheckConfig>,
    /// SLO burn-rate checks: `slo = { objective = 0.999, window = "30d" }`.
    #[serde(default)]
    pub slo: Option<Spanned<super::checks::SloConfig>>,
    /// Checks after a rollback the backend verified (`http`, `prometheus`,
    /// `kubernetes`); one that fails marks the rollback not verified.
    #[serde(default)]
    pub verify: Vec<Spanned<super::VerifyCheck>>,
    /// What may be tried, in order, when a rollback leaves the service
    /// stuck (`[[services.fallback]]`, see `fallback.rs`).
    #[serde(default)]
    pub fallback: Vec<super::fallback::FallbackConfig>,
    /// Try the fallbacks by itself, in order, once each, right after the
    /// service got stuck (opt-in).
    #[serde(default)]
    pub auto_fallback: bool,
}

fn default_true() -> bool {
    true
}

fn default_escalate_after() -> HumanDuration {
    HumanDuration(Duration::from_secs(600))
}

fn default_cooldown() -> HumanDuration {
    HumanDuration(Duration::from_secs(30 * 60))
}

fn default_resolve_after() -> HumanDuration {
    HumanDuration(Duration::from_secs(300))
}

fn default_step() -> HumanDuration {
    HumanDuration(Duration::from_secs(300))
}

fn default_environment() -> String {
    "prod".into()
}

impl ServiceConfig {
    pub fn key(&self) -> String {
        format!("{}/{}", self.environment, self.name.as_ref())
    }
    pub fn name(&self) -> &str {
        self.name.as_ref()
    }
}

impl Config {
    /// Each service's name, the backend and channels it names, its judge
    /// policy and escalation list.
    pub(super) fn check_services(&self, path: &Path, source: &str) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let lines = LineIndex::new(source);
        let at = |span: std::ops::Range<usize>, msg: String| {
            ConfigError::at(path, source, Some(span), msg)
        };
        let mut seen = BTreeMap::new();
        for s in &self.services {
            let name = s.name.as_ref();
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                errors.push(
                    at(
                        s.name.span(),
                        format!("service name `{name}` must be letters, digits, `-`, `_` or `.`"),
                    )
                    .help(
                        "write a name such as \"checkout\"; put the environment in `environment`",
                    ),
                );
            }
            if let Some(first) = seen.insert(name.to_string(), s.name.span()) {
                let (l, _) = lines.line_col(first.start);
                errors.push(
                    at(
                        s.name.span(),
                        format!("service `{name}` is defined twice (first at line {l})"),
                    )
                    .help("give each service a unique name"),
                );
            }
            errors.extend(self.check_references(s, path, source));
            if let Err(e) = s.judge.validate() {
                errors.push(at(
                    s.name.span(),
                    format!("service `{name}`: judge policy: {e}"),
                ));
            }
            if let Err(e) = s.before_after.validate() {
                errors.push(at(
                    s.name.span(),
                    format!("service `{name}`: before_after: {e}"),
                ));
            }
            for who in &s.escalation {
                if let Err(e) = crate::roles::check_member(who) {
                    errors.push(at(
                        s.name.span(),
                        format!("service `{name}`: escalation: {e}"),
                    ));
                }
            }
            if s.escalate_after.0.is_zero() {
                errors.push(at(
                    s.name.span(),
                    format!("service `{name}`: escalate_after must be longer than 0s"),
                ));
            }
        }
        errors
    }

    /// The backend and channels a service names must be defined.
    fn check_references(&self, s: &ServiceConfig, path: &Path, source: &str) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let at = |span: std::ops::Range<usize>, msg: String| {
            ConfigError::at(path, source, Some(span), msg)
        };
        let name = s.name();
        if !self.backends.contains_key(s.backend.as_ref()) {
            let backend_names: Vec<&str> = self.backends.keys().map(String::as_str).collect();
            errors.push(unknown_ref(
                at(
                    s.backend.span(),
                    format!(
                        "service `{name}` names backend `{}`, which is not defined",
                        s.backend.as_ref()
                    ),
                ),
                s.backend.as_ref(),
                &backend_names,
                "backends",
            ));
        }
        for ch in [&s.deploy_channel, &s.incident_channel]
            .into_iter()
            .flatten()
        {
            if !self.channels.contains_key(ch.as_ref()) {
                let channel_names: Vec<&str> = self.channels.keys().map(String::as_str).collect();
                errors.push(unknown_ref(
                    at(
                        ch.span(),
                        format!(
                            "service `{name}` names channel `{}`, which is not defined",
                            ch.as_ref()
                        ),
                    ),
                    ch.as_ref(),
                    &channel_names,
                    "channels",
                ));
            }
        }
        errors
    }
}

/// `err` with what the user may have meant, or where to define the name.
pub(super) fn unknown_ref(
    err: ConfigError,
    name: &str,
    known: &[&str],
    section: &str,
) -> ConfigError {
    let near = closest(name, known.iter().copied());
    if let Some(best) = near.first() {
        err.help(format!(
            "did you mean `{best}`? defined {section}: {}",
            known.join(", ")
        ))
    } else if known.is_empty() {
        err.help(format!("define it in a [{section}.{name}] table"))
    } else {
        err.help(format!(
            "define [{section}.{name}] or use one of: {}",
            known.join(", ")
        ))
    }
}
