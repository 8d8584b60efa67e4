//! Runs a configured program for each action: for deploy scripts and
//! pipelines rollbot has no dedicated backend for.
//!
//! The program gets the action in its arguments (placeholders) and in
//! `ROLLBOT_*` environment variables. Exit status 0 is success; anything else
//! is a failed action reported with the tail of its output. The program is
//! killed when it exceeds its time limit.
//!
//! The program does not inherit rollbot's environment, which holds the Slack
//! signing secret and the API and gate tokens: it starts with an empty one,
//! plus the variables named in the backend's `env` (default [`DEFAULT_ENV`])
//! and the `ROLLBOT_*` variables set here. Placeholders are filled once, from
//! the configured arguments only, and a revision must be a name (see
//! [`crate::limits::check_revision`]) so it never reaches the program as an
//! option.

mod config;

pub use config::ExecConfig;

use super::*;
use std::process::Stdio;
use tokio::process::Command;

/// Actions besides rollback that `supports` may list.
pub const SUPPORTABLE: &[&str] = &[
    "promote",
    "pause",
    "resume",
    "preflight",
    "verify",
    "status",
];

/// What the program gets from rollbot's environment when `env` is not set.
pub const DEFAULT_ENV: &[&str] = &["PATH", "HOME", "LANG", "LC_ALL", "TZ"];

/// The variables rollbot sets for every run; `env` cannot name them.
pub const SET_BY_ROLLBOT: &[&str] = &[
    "ROLLBOT_ACTION",
    "ROLLBOT_SERVICE",
    "ROLLBOT_ENVIRONMENT",
    "ROLLBOT_REVISION",
    "ROLLBOT_REASON",
    "ROLLBOT_ACTOR",
    "ROLLBOT_CORRELATION_ID",
    "ROLLBOT_PROMOTE",
    "ROLLBOT_ROLLBACK",
    "ROLLBOT_MIGRATIONS",
    "ROLLBOT_MIGRATIONS_JSON",
];

/// Prefix of the variables made from `[services.target]` keys.
pub const TARGET_PREFIX: &str = "ROLLBOT_TARGET_";

/// The placeholders `args` may use.
pub const PLACEHOLDERS: &[&str] = &[
    "action",
    "service",
    "environment",
    "revision",
    "reason",
    "actor",
    "correlation_id",
    "full",
];

pub struct ExecBackend {
    program: String,
    args: Vec<String>,
    timeout: Duration,
    supports: Vec<String>,
    /// Names of rollbot's environment variables the program may see.
    env: Vec<String>,
}

/// Per-run values filled into the argument placeholders.
#[derive(Default)]
pub struct RunContext<'a> {
    pub revision: Option<&'a str>,
    pub reason: &'a str,
    pub actor: &'a str,
    pub correlation_id: &'a str,
    /// For promote: all the way (`true`) or one step.
    pub full: bool,
    /// For a rollback (and its preflight): the migrations it crosses.
    pub migrations: &'a [crate::migration::Migration],
}

impl<'a> RunContext<'a> {
    fn from_call(ctx: &'a CallContext, revision: Option<&'a str>, full: bool) -> Self {
        RunContext {
            revision,
            reason: &ctx.reason,
            actor: &ctx.actor,
            correlation_id: &ctx.correlation_id,
            full,
            migrations: &ctx.migrations,
        }
    }
}

impl ExecBackend {
    pub fn new(
        program: String,
        args: Vec<String>,
        timeout: Duration,
        supports: Vec<String>,
    ) -> ExecBackend {
        ExecBackend {
            program,
            args,
            timeout,
            supports,
            env: DEFAULT_ENV.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// The variables passed on from rollbot's environment (the `env` key).
    pub fn with_env(mut self, env: Vec<String>) -> ExecBackend {
        self.env = env;
        self
    }

    /// Refuses a revision that is not a name before anything runs.
    fn check_revision(revision: Option<&str>) -> Result<(), BackendError> {
        match revision {
            Some(r) => crate::limits::check_revision(r)
                .map_err(|e| BackendError::Refused(format!("{e}; nothing was run"))),
            None => Ok(()),
        }
    }

    fn supports(&self, action: &str) -> bool {
        action == "rollback" || self.supports.iter().any(|s| s == action)
    }

    fn unsupported(&self, action: &str) -> BackendError {
        BackendError::Refused(format!(
            "this service's exec backend ({}) does not handle `{action}`; add \"{action}\" to its `supports` list if the program does",
            self.program
        ))
    }

    /// The arguments and the variables rollbot sets for one run; what a
    /// run starts and what a dry run shows are both made here.
    fn invocation(&self, action: &str, t: &Target, ctx: &RunContext<'_>) -> Invocation {
        let values = [
            ("action", action),
            ("service", &t.service),
            ("environment", &t.environment),
            ("revision", ctx.revision.unwrap_or("")),
            ("reason", ctx.reason),
            ("actor", ctx.actor),
            ("correlation_id", ctx.correlation_id),
            ("full", if ctx.full { "full" } else { "step" }),
        ];
        let mut env: Vec<(String, String)> = [
            ("ROLLBOT_ACTION", action),
            ("ROLLBOT_SERVICE", &t.service),
            ("ROLLBOT_ENVIRONMENT", &t.environment),
            ("ROLLBOT_REVISION", ctx.revision.unwrap_or("")),
            ("ROLLBOT_REASON", ctx.reason),
            ("ROLLBOT_ACTOR", ctx.actor),
            ("ROLLBOT_CORRELATION_ID", ctx.correlation_id),
            ("ROLLBOT_PROMOTE", if ctx.full { "full" } else { "step" }),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        // A deploy hook's data fix-ups key on these: the ids
        // comma-separated (ids hold no commas), and each in full.
        let ids: Vec<&str> = ctx.migrations.iter().map(|m| m.id.as_str()).collect();
        env.push(("ROLLBOT_ROLLBACK".into(), (action == "rollback").to_string()));
        env.push(("ROLLBOT_MIGRATIONS".into(), ids.join(",")));
        env.push((
            "ROLLBOT_MIGRATIONS_JSON".into(),
            serde_json::to_string(ctx.migrations).unwrap_or_else(|_| "[]".into()),
        ));
        for (k, v) in &t.settings {
            env.push((
                format!(
                    "{TARGET_PREFIX}{}",
                    k.to_uppercase().replace(['-', '.'], "_")
                ),
                v.clone(),
            ));
        }
        Invocation {
            args: self.args.iter().map(|a| super::fill(a, &values)).collect(),
            env,
        }
    }

    /// Runs the program; returns its combined output on success.
    async fn run(
        &self,
        action: &str,
        t: &Target,
        ctx: &RunContext<'_>,
    ) -> Result<String, BackendError> {
        Self::check_revision(ctx.revision)?;
        let inv = self.invocation(action, t, ctx);
        let mut cmd = Command::new(&self.program);
        cmd.args(&inv.args).env_clear();
        for name in &self.env {
            if let Some(v) = std::env::var_os(name) {
                cmd.env(name, v);
            }
        }
        cmd.envs(inv.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child = cmd.spawn().map_err(|e| {
            BackendError::failed(format!(
                "cannot start `{}`: {e}; check `program` in the backend's config",
                self.program
            ))
        })?;
        let out = match tokio::time::timeout(self.timeout, child.wait_with_output()).await {
            Err(_) => return Err(BackendError::Timeout(self.timeout)),
            Ok(Err(e)) => {
                return Err(BackendError::failed(format!(
                    "`{}` failed to run: {e}",
                    self.program
                )))
            }
            Ok(Ok(o)) => o,
        };
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        if out.status.success() {
            Ok(text.trim().to_string())
        } else {
            let code = out
                .status
                .code()
                .map(|c| c.to_string())
                .unwrap_or_else(|| "a signal".into());
            Err(BackendError::failed(format!(
                "`{}` exited with {code}; last output:\n{}",
                self.program,
                tail(&text, 15, 1500)
            )))
        }
    }

    async fn act(
        &self,
        action: &str,
        t: &Target,
        ctx: RunContext<'_>,
    ) -> Result<ActionReport, BackendError> {
        if !self.supports(action) {
            return Err(self.unsupported(action));
        }
        let revision = ctx.revision;
        crate::fence::check(&format!("`{}` ({action})", self.program))
            .map_err(|f| BackendError::failed(f.0))?;
        let out = self.run(action, t, &ctx).await?;
        Ok(ActionReport {
            summary: last_line(&out)
                .unwrap_or_else(|| format!("{} {action} finished", self.program)),
            to_revision: revision.map(str::to_string),
            changed: true,
            requests: vec![format!("{} {}", self.program, self.args.join(" "))],
            ..Default::default()
        })
    }
}

/// What one run of the program gets besides rollbot's passed-on
/// variables.
struct Invocation {
    args: Vec<String>,
    env: Vec<(String, String)>,
}

/// `word` as a POSIX shell would need it quoted, to show a command line.
fn shell_quote(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_./:=@%+,-".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// The last `lines` lines of `text`, at most `max` bytes.
pub fn tail(text: &str, lines: usize, max: usize) -> String {
    let all: Vec<&str> = text.trim_end().lines().collect();
    let mut t = all[all.len().saturating_sub(lines)..].join("\n");
    if t.len() > max {
        let mut cut = t.len() - max;
        while !t.is_char_boundary(cut) {
            cut += 1;
        }
        t = format!("…{}", &t[cut..]);
    }
    t
}

fn last_line(text: &str) -> Option<String> {
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_string())
}

#[async_trait]
impl RollbackBackend for ExecBackend {
    fn kind(&self) -> &'static str {
        "exec"
    }

    async fn preflight(
        &self,
        t: &Target,
        op: &Operation,
        ctx: &CallContext,
    ) -> Result<Preflight, BackendError> {
        if !self.supports(op.name()) {
            return Err(self.unsupported(op.name()));
        }
        let to = match op {
            Operation::Rollback { to } => to.clone(),
            _ => None,
        };
        Self::check_revision(to.as_deref())?;
        if self.supports("preflight") {
            let out = self
                .run(
                    "preflight",
                    t,
                    &RunContext::from_call(ctx, to.as_deref(), false),
                )
                .await
                .map_err(|e| match e {
                    BackendError::Failed { message: m, .. } => {
                        BackendError::Refused(format!("preflight refused: {m}"))
                    }
                    other => other,
                })?;
            return Ok(Preflight {
                to_revision: to,
                notes: last_line(&out).into_iter().collect(),
                ..Default::default()
            });
        }
        Ok(Preflight {
            to_revision: to,
            ..Default::default()
        })
    }

    async fn rollback(
        &self,
        t: &Target,
        to: Option<&str>,
        ctx: &CallContext,
    ) -> Result<ActionReport, BackendError> {
        self.act("rollback", t, RunContext::from_call(ctx, to, false))
            .await
    }

    async fn promote(
        &self,
        t: &Target,
        full: bool,
        ctx: &CallContext,
    ) -> Result<ActionReport, BackendError> {
        self.act("promote", t, RunContext::from_call(ctx, None, full))
            .await
    }

    async fn pause(&self, t: &Target, ctx: &CallContext) -> Result<ActionReport, BackendError> {
        self.act("pause", t, RunContext::from_call(ctx, None, false))
            .await
    }

    async fn resume(&self, t: &Target, ctx: &CallContext) -> Result<ActionReport, BackendError> {
        self.act("resume", t, RunContext::from_call(ctx, None, false))
            .await
    }

    /// The command line and the variables the program would get; nothing
    /// is run, not even the configured preflight.
    async fn plan(
        &self,
        t: &Target,
        op: &Operation,
        ctx: &CallContext,
    ) -> Result<Plan, BackendError> {
        if !self.supports(op.name()) {
            return Err(self.unsupported(op.name()));
        }
        let run = match op {
            Operation::Rollback { to } => RunContext::from_call(ctx, to.as_deref(), false),
            Operation::Promote { full } => RunContext::from_call(ctx, None, *full),
            Operation::Pause | Operation::Resume => RunContext::from_call(ctx, None, false),
        };
        Self::check_revision(run.revision)?;
        let inv = self.invocation(op.name(), t, &run);
        let line: Vec<String> = std::iter::once(self.program.as_str())
            .chain(inv.args.iter().map(String::as_str))
            .map(shell_quote)
            .collect();
        let env: Vec<String> = inv
            .env
            .iter()
            .map(|(k, v)| format!("{k}={}", shell_quote(v)))
            .collect();
        let mut notes = vec![format!(
            "the program would start with an empty environment plus {} from rollbot's, and stop after {}",
            self.env.join(", "),
            crate::domain::human_duration(self.timeout)
        )];
        if self.supports("verify") {
            notes.push("then it would run again with action `verify`".into());
        }
        Ok(Plan {
            requests: vec![PlannedRequest::new("exec", line.join(" ")).body(env.join("\n"))],
            notes,
        })
    }

    async fn verify(
        &self,
        t: &Target,
        _op: &Operation,
        report: &ActionReport,
        ctx: &CallContext,
    ) -> Result<Verification, BackendError> {
        if !self.supports("verify") {
            return Ok(Verification {
                ok: true,
                detail: "not verified: the exec backend has no verify step".into(),
            });
        }
        match self
            .run(
                "verify",
                t,
                &RunContext::from_call(ctx, report.to_revision.as_deref(), false),
            )
            .await
        {
            Ok(out) => Ok(Verification {
                ok: true,
                detail: last_line(&out).unwrap_or_else(|| "verified".into()),
            }),
            Err(BackendError::Failed { message: m, .. }) => Ok(Verification {
                ok: false,
                detail: m,
            }),
            Err(e) => Err(e),
        }
    }

    async fn status(&self, t: &Target) -> Result<BackendStatus, BackendError> {
        if !self.supports("status") {
            return Ok(BackendStatus {
                notes: vec!["the exec backend reports no status".into()],
                ..Default::default()
            });
        }
        let out = self.run("status", t, &RunContext::default()).await?;
        Ok(BackendStatus {
            notes: out.lines().map(str::to_string).collect(),
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            service: "checkout".into(),
            environment: "prod".into(),
            settings: BTreeMap::new(),
        }
    }

    fn sh(script: &str, timeout: Duration) -> ExecBackend {
        ExecBackend::new(
            "sh".into(),
            vec![
                "-c".into(),
                script.into(),
                "rollbot".into(),
                "{action}".into(),
                "{service}".into(),
                "{revision}".into(),
            ],
            timeout,
            vec![],
        )
    }

    #[tokio::test]
    async fn arguments_are_filled_and_output_becomes_the_summary() {
        let b = sh(
            "echo \"$1 $2 to $3 ($ROLLBOT_ENVIRONMENT)\"",
            Duration::from_secs(10),
        );
        let r = b
            .rollback(&target(), Some("v41"), &CallContext::default())
            .await
            .unwrap();
        assert_eq!(r.summary, "rollback checkout to v41 (prod)");
    }

    #[tokio::test]
    async fn non_zero_exit_is_a_failure_with_the_output_tail() {
        let b = sh(
            "for i in $(seq 1 30); do echo line$i; done; echo 'kubectl: forbidden' >&2; exit 3",
            Duration::from_secs(10),
        );
        let err = b
            .rollback(&target(), None, &CallContext::default())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("exited with 3"), "{err}");
        assert!(
            err.contains("kubectl: forbidden")
                && err.contains("line30")
                && !err.contains("line1\n"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_hung_program_times_out() {
        let b = sh("sleep 30", Duration::from_millis(300));
        let started = std::time::Instant::now();
        assert!(matches!(
            b.rollback(&target(), None, &CallContext::default()).await,
            Err(BackendError::Timeout(_))
        ));
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[tokio::test]
    async fn a_replica_that_is_not_the_leader_runs_no_action_but_still_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        let b = sh(
            &format!("echo \"$1\" >> '{}'", marker.display()),
            Duration::from_secs(10),
        );
        let fenced = crate::fence::scope(
            crate::fence::Fence::closed(),
            b.rollback(&target(), None, &CallContext::default()),
        )
        .await
        .unwrap_err();
        assert!(
            fenced.to_string().contains("was not sent") && fenced.to_string().contains("Lease"),
            "{fenced}"
        );
        assert!(!marker.exists(), "the program ran outside leadership");
        // Outside the engine's scope (tools, tests) nothing is fenced.
        b.rollback(&target(), None, &CallContext::default())
            .await
            .unwrap();
        assert_eq!(std::fs::read_to_string(&marker).unwrap(), "rollback\n");
    }

    #[tokio::test]
    async fn placeholders_inside_values_stay_as_written() {
        let b = ExecBackend::new(
            "sh".into(),
            vec![
                "-c".into(),
                "printf '%s|' \"$@\"".into(),
                "rollbot".into(),
                "{reason}".into(),
                "{actor}".into(),
            ],
            Duration::from_secs(10),
            vec![],
        );
        let ctx = CallContext {
            actor: "Ana (console:ana)".into(),
            reason: "{actor} asked, see {correlation_id}".into(),
            correlation_id: "c-1".into(),
            ..Default::default()
        };
        let r = b.rollback(&target(), None, &ctx).await.unwrap();
        assert_eq!(
            r.summary,
            "{actor} asked, see {correlation_id}|Ana (console:ana)|"
        );
    }

    #[tokio::test]
    async fn a_revision_like_an_option_is_refused_before_anything_runs() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        let b = sh(
            &format!("touch '{}'", marker.display()),
            Duration::from_secs(10),
        );
        let op = Operation::Rollback {
            to: Some("--force".into()),
        };
        let e = b
            .preflight(&target(), &op, &CallContext::default())
            .await
            .unwrap_err();
        assert!(
            matches!(&e, BackendError::Refused(m) if m.contains("starts with `-`")),
            "{e:?}"
        );
        let e = b
            .rollback(&target(), Some("--force"), &CallContext::default())
            .await
            .unwrap_err();
        assert!(matches!(e, BackendError::Refused(_)), "{e:?}");
        assert!(!marker.exists(), "the program ran");
    }

    #[tokio::test]
    async fn unsupported_actions_are_refused_before_running() {
        let b = sh("exit 0", Duration::from_secs(5));
        let err = b
            .preflight(
                &target(),
                &Operation::Promote { full: false },
                &CallContext::default(),
            )
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("does not handle `promote`") && err.contains("supports"),
            "{err}"
        );
    }
}
