//! Rollback backends: the only code that changes a service.
//!
//! One trait, one file per implementation. The engine is the only caller, and
//! it always goes preflight → act → verify, through a circuit breaker and a
//! bounded pool per backend (see `crate::breaker`).

pub(crate) mod capability;
pub(crate) mod factory;
pub mod kube_common;
pub(crate) mod poll;

// Every backend, one line each: its module (a file or folder here), the
// `type` users write in `[backends.NAME]`, and its settings type.
factory::backend_types! {
    simulated: "simulated" => Simulated(SimulatedConfig),
    exec: "exec" => Exec(ExecConfig),
    webhook: "webhook" => Webhook(WebhookConfig),
    gitops: "gitops" => Gitops(GitopsConfig),
    unleash: "unleash" => Unleash(UnleashConfig),
    kubernetes_deployment: "kubernetes-deployment" => KubernetesDeployment(KubernetesDeploymentConfig),
    flagger: "flagger" => Flagger(FlaggerConfig),
    argo_rollouts: "argo-rollouts" => ArgoRollouts(ArgoRolloutsConfig),
    istio: "istio" => Istio(IstioConfig),
}

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// The service as a backend sees it.
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    pub service: String,
    pub environment: String,
    /// `[services.target]` from the config: namespace, object names, flags…
    pub settings: BTreeMap<String, String>,
}

/// Who asks and why, passed to every changing call so backends can record it
/// (a webhook body, a commit message, an annotation).
#[derive(Clone, Debug, Default, Serialize)]
pub struct CallContext {
    /// `Display Name (platform:id)`.
    pub actor: String,
    pub reason: String,
    pub correlation_id: String,
    /// Stable across retries of the same request.
    pub idempotency_key: String,
    /// Where a long step (waiting for a rollout to complete) reports how far
    /// it got; the engine posts each line in the action's thread.
    #[serde(skip)]
    pub progress: Progress,
    /// For a rollback: the database migrations it crosses, newest first
    /// (the engine's migration guard let it through), so a deploy hook can
    /// run data fix-ups. Empty for other actions.
    pub migrations: Vec<crate::migration::Migration>,
    /// For the act step: what this action's preflight found, so a backend
    /// can make its write conditional on the object being as preflight
    /// read it (the engine sets it between preflight and act).
    #[serde(skip)]
    pub preflight: Option<Preflight>,
}

/// A line-at-a-time progress report for the people watching an action.
/// Cheap to clone; reporting to nobody is the default.
#[derive(Clone, Default)]
pub struct Progress(Option<std::sync::Arc<dyn Fn(String) + Send + Sync>>);

impl Progress {
    pub fn new(f: impl Fn(String) + Send + Sync + 'static) -> Self {
        Progress(Some(std::sync::Arc::new(f)))
    }

    /// Reports one line, for example "2 of 3 replicas updated".
    pub fn report(&self, line: impl Into<String>) {
        if let Some(f) = &self.0 {
            f(line.into());
        }
    }
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Progress(on)"
        } else {
            "Progress(off)"
        })
    }
}

/// A change a backend can make.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "op")]
pub enum Operation {
    Rollback { to: Option<String> },
    Promote { full: bool },
    Pause,
    Resume,
}

impl Operation {
    pub fn name(&self) -> &'static str {
        match self {
            Operation::Rollback { .. } => "rollback",
            Operation::Promote { .. } => "promote",
            Operation::Pause => "pause",
            Operation::Resume => "resume",
        }
    }
}

/// What the backend found before acting: the revisions involved.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Preflight {
    pub from_revision: Option<String>,
    pub to_revision: Option<String>,
    pub notes: Vec<String>,
}

/// What an action did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ActionReport {
    /// One sentence for the chat message.
    pub summary: String,
    pub from_revision: Option<String>,
    pub to_revision: Option<String>,
    /// False when the service was already in the requested state.
    pub changed: bool,
    /// Every request sent to the platform, for the audit entry.
    pub requests: Vec<String>,
}

/// One request a backend would send, shown by a dry run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PlannedRequest {
    /// The HTTP method (`PATCH`, `POST`), `exec`, or the git step.
    pub method: String,
    /// The path or URL, or the command line.
    pub target: String,
    /// The body as it would be sent; secrets are never shown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

impl PlannedRequest {
    pub fn new(method: impl Into<String>, target: impl Into<String>) -> PlannedRequest {
        PlannedRequest {
            method: method.into(),
            target: target.into(),
            body: None,
        }
    }
    pub fn body(mut self, body: impl Into<String>) -> Self {
        self.body = Some(body.into());
        self
    }
}

impl std::fmt::Display for PlannedRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.target)?;
        if let Some(b) = &self.body {
            write!(f, "\n{b}")?;
        }
        Ok(())
    }
}

/// What an operation would send, for a dry run: built by the same code
/// that sends it, so the two cannot drift.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Plan {
    pub requests: Vec<PlannedRequest>,
    /// What the backend would also do that is not a request (wait for a
    /// rollout, check a gate).
    pub notes: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Verification {
    pub ok: bool,
    pub detail: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RevisionInfo {
    pub revision: String,
    /// Image or other identifying detail.
    pub detail: String,
    pub change_cause: Option<String>,
    pub live: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct BackendStatus {
    pub live_revision: Option<String>,
    pub canary_revision: Option<String>,
    pub canary_weight: Option<u8>,
    pub step: Option<String>,
    pub paused: bool,
    pub history: Vec<RevisionInfo>,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BackendError {
    /// The action cannot be done as asked; nothing was changed.
    #[error("{0}")]
    Refused(String),
    /// The platform answered with an error, or could not be reached.
    /// `requests` is every request sent before, for the audit entry: the
    /// message says what failed and what to do, not what was sent.
    #[error("{message}")]
    Failed {
        message: String,
        requests: Vec<String>,
    },
    #[error("no answer within {}", crate::domain::human_duration(*.0))]
    Timeout(Duration),
    /// The circuit breaker is open or the pool is full.
    #[error("{0}")]
    Unavailable(String),
}

impl BackendError {
    /// A failure before any request was sent.
    pub fn failed(message: impl Into<String>) -> BackendError {
        BackendError::Failed {
            message: message.into(),
            requests: Vec::new(),
        }
    }

    /// The requests sent before the failure, oldest first.
    pub fn requests(&self) -> &[String] {
        match self {
            BackendError::Failed { requests, .. } => requests,
            _ => &[],
        }
    }

    /// The message followed by the requests, as the audit entry's `error`
    /// records it.
    pub fn with_requests(&self) -> String {
        match self.requests() {
            [] => self.to_string(),
            r => format!("{self}\nRequests: {}", r.join("; ")),
        }
    }
}

#[async_trait]
pub trait RollbackBackend: Send + Sync {
    /// The `type` in `[backends.NAME]`.
    fn kind(&self) -> &'static str;
    /// Gives a backend that keeps state in rollbot's store (the Flagger
    /// gates) its store, once, before the first call.
    fn attach(&self, _store: &std::sync::Arc<crate::store::Store>) -> anyhow::Result<()> {
        Ok(())
    }
    /// Checks that the action can be done (the target revision exists, the
    /// object is not paused…) without changing anything.
    async fn preflight(
        &self,
        target: &Target,
        op: &Operation,
        ctx: &CallContext,
    ) -> Result<Preflight, BackendError>;
    /// Rolls back to `to`, or to the previous revision.
    async fn rollback(
        &self,
        target: &Target,
        to: Option<&str>,
        ctx: &CallContext,
    ) -> Result<ActionReport, BackendError>;
    /// Promotes one step, or fully.
    async fn promote(
        &self,
        target: &Target,
        full: bool,
        ctx: &CallContext,
    ) -> Result<ActionReport, BackendError>;
    async fn pause(&self, target: &Target, ctx: &CallContext)
        -> Result<ActionReport, BackendError>;
    async fn resume(
        &self,
        target: &Target,
        ctx: &CallContext,
    ) -> Result<ActionReport, BackendError>;
    /// Checks after acting that the service reached the promised state.
    async fn verify(
        &self,
        target: &Target,
        op: &Operation,
        report: &ActionReport,
        ctx: &CallContext,
    ) -> Result<Verification, BackendError>;
    /// Live and canary revisions, pause state, revision history.
    async fn status(&self, target: &Target) -> Result<BackendStatus, BackendError>;
    /// The revision a rollback would restore and its images, so the
    /// controller can check before it is needed that the rollback is
    /// possible. Backends that cannot tell say so.
    async fn capability(&self, _target: &Target) -> Result<capability::Capability, BackendError> {
        Ok(capability::Capability::NotChecked)
    }

    /// Whether the service's rollout is complete as the platform reports
    /// it (a Deployment's or Rollout's status), in one read, for the
    /// post-rollback `kubernetes` check. A backend that cannot tell says so.
    async fn rollout_complete(&self, _target: &Target) -> Result<Verification, BackendError> {
        Err(BackendError::Refused(format!(
            "the {} backend cannot tell whether a rollout is complete",
            self.kind()
        )))
    }

    /// What `op` would send, without sending anything that changes the
    /// service (reads are allowed). A backend that cannot tell says so.
    async fn plan(
        &self,
        _target: &Target,
        _op: &Operation,
        _ctx: &CallContext,
    ) -> Result<Plan, BackendError> {
        Err(BackendError::Refused(format!(
            "the {} backend cannot show what it would send; a dry run stops after its preflight",
            self.kind()
        )))
    }
}

/// Fills the `{name}` placeholders of a configured template in one pass.
/// Values go in as they are and are never read again, so a reason that
/// says `{actor}` stays `{actor}`; names not in `values` are left as
/// written.
pub fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let value = after.find('}').and_then(|close| {
            let name = &after[..close];
            values
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v, close))
        });
        match value {
            Some((v, close)) => {
                out.push_str(v);
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Runs an operation on a backend.
pub async fn perform(
    b: &dyn RollbackBackend,
    target: &Target,
    op: &Operation,
    ctx: &CallContext,
) -> Result<ActionReport, BackendError> {
    match op {
        Operation::Rollback { to } => b.rollback(target, to.as_deref(), ctx).await,
        Operation::Promote { full } => b.promote(target, *full, ctx).await,
        Operation::Pause => b.pause(target, ctx).await,
        Operation::Resume => b.resume(target, ctx).await,
    }
}

#[cfg(test)]
mod tests {
    use super::fill;

    #[test]
    fn placeholders_are_filled_once_from_the_template_only() {
        let v = [
            ("service", "checkout"),
            ("reason", "{actor} said {service}"),
            ("actor", "Ana"),
        ];
        assert_eq!(
            fill("{service}: {reason} ({actor})", &v),
            "checkout: {actor} said {service} (Ana)"
        );
        assert_eq!(
            fill("{{service}} {unknown} {", &v),
            "{checkout} {unknown} {"
        );
        assert_eq!(fill("no placeholders é", &v), "no placeholders é");
    }
}
