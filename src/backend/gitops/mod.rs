//! GitOps (Argo CD, Flux): the desired state lives in git, and a rollback is
//! a commit.
//!
//! The backend keeps a clone of the configured repository and branch and
//! runs the real `git` binary on it. A rollback sets the scalar at a YAML key
//! path (default `image.tag`) in the service's file back to the previous
//! value, editing that one line and nothing else so comments and formatting
//! survive; or, with `mode = "revert"`, reverts the newest commit that
//! touched the file. The commit names the service, revisions, actor, reason
//! and correlation id. A push rejected because someone else pushed is
//! fetched and applied once more on the new head; a conflict is reported and
//! nothing is pushed.

mod config;
mod yaml;

pub use config::{GitopsConfig, GitopsMode};
pub use yaml::{check_revision, find_scalar, set_scalar, Scalar};

use super::*;
use crate::config::SecretSource;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::process::Command;

#[derive(Clone, Debug)]
pub struct GitopsSettings {
    /// Clone URL or local path.
    pub repository: String,
    pub branch: String,
    /// Path in the repository; `{service}` and `{environment}` are filled
    /// in. A service's `target.file` overrides it.
    pub file: String,
    /// Dotted YAML key path; a service's `target.key` overrides it.
    pub key: String,
    pub mode: GitopsMode,
    /// Where the clone is kept.
    pub workdir: PathBuf,
    pub ssh_key_file: Option<PathBuf>,
    pub token: Option<SecretSource>,
    /// User name sent with the token (HTTP basic auth).
    pub token_user: String,
    pub author_name: String,
    pub author_email: String,
    /// Time limit of one git command.
    pub timeout: Duration,
}

pub struct GitopsBackend {
    s: GitopsSettings,
    /// One operation at a time on the clone.
    lock: tokio::sync::Mutex<()>,
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A URL without user information, for messages.
fn shown(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((_, host)) if !rest.split('/').next().unwrap_or("").is_empty() => {
                format!("{scheme}://{host}")
            }
            _ => url.to_string(),
        },
        None => url.to_string(),
    }
}

// ---------------------------------------------------------------- git

struct GitFailure {
    args: String,
    output: String,
}

/// What a rollback will do, decided on one head of the branch.
#[derive(Clone, Debug)]
enum Plan {
    /// Change the value at the key from `from` to `to`.
    Set { from: String, to: String },
    /// Revert `commit`, the newest commit touching the file.
    Revert { commit: String, subject: String },
}

struct Where {
    file: String,
    key: String,
}

impl GitopsBackend {
    pub fn new(s: GitopsSettings) -> GitopsBackend {
        GitopsBackend {
            s,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    fn place(&self, t: &Target) -> Where {
        let fill = |v: &str| {
            super::fill(
                v,
                &[("service", &t.service), ("environment", &t.environment)],
            )
        };
        Where {
            file: fill(t.settings.get("file").unwrap_or(&self.s.file)),
            key: t.settings.get("key").unwrap_or(&self.s.key).clone(),
        }
    }

    /// Runs git in the clone (or, for the clone itself, in its parent).
    async fn git(&self, args: &[&str]) -> Result<String, GitFailure> {
        let mut cmd = Command::new("git");
        let dir = if args.first() == Some(&"clone") {
            self.s
                .workdir
                .parent()
                .unwrap_or(Path::new("."))
                .to_path_buf()
        } else {
            self.s.workdir.clone()
        };
        cmd.current_dir(dir)
            .args(args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_NAME", &self.s.author_name)
            .env("GIT_AUTHOR_EMAIL", &self.s.author_email)
            .env("GIT_COMMITTER_NAME", &self.s.author_name)
            .env("GIT_COMMITTER_EMAIL", &self.s.author_email)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(key) = &self.s.ssh_key_file {
            cmd.env(
                "GIT_SSH_COMMAND",
                format!(
                    "ssh -i '{}' -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=accept-new",
                    key.display()
                ),
            );
        }
        let mut secret = None;
        if let Some(src) = &self.s.token {
            let token = src.resolve().map_err(|e| GitFailure {
                args: "(credentials)".into(),
                output: format!("the gitops token: {e}"),
            })?;
            // In the child's environment only: never in its arguments.
            cmd.env("GIT_CONFIG_COUNT", "1")
                .env("GIT_CONFIG_KEY_0", "http.extraHeader")
                .env(
                    "GIT_CONFIG_VALUE_0",
                    format!(
                        "Authorization: Basic {}",
                        base64(format!("{}:{}", self.s.token_user, token.expose()).as_bytes())
                    ),
                );
            secret = Some(token);
        }
        let shown_args = args
            .iter()
            .map(|a| {
                if *a == self.s.repository {
                    shown(a)
                } else {
                    a.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join(" ");
        let fail = |output: String| {
            let output = match &secret {
                Some(s) => output.replace(s.expose(), "<token>"),
                None => output,
            };
            GitFailure {
                args: shown_args.clone(),
                output,
            }
        };
        let child = cmd
            .spawn()
            .map_err(|e| fail(format!("cannot run git: {e}; is git installed?")))?;
        let out = match tokio::time::timeout(self.s.timeout, child.wait_with_output()).await {
            Err(_) => {
                return Err(fail(format!(
                    "no answer within {}",
                    crate::domain::human_duration(self.s.timeout)
                )))
            }
            Ok(Err(e)) => return Err(fail(e.to_string())),
            Ok(Ok(o)) => o,
        };
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
            text.push_str(&String::from_utf8_lossy(&out.stdout));
            Err(fail(super::exec::tail(text.trim(), 8, 800)))
        }
    }

    fn failed(e: GitFailure) -> BackendError {
        BackendError::failed(format!("`git {}` failed: {}", e.args, e.output))
    }

    fn origin(&self) -> String {
        format!("refs/remotes/origin/{}", self.s.branch)
    }

    /// Brings the clone to the remote branch's head, discarding anything local.
    async fn sync(&self, log: &mut Vec<String>) -> Result<String, BackendError> {
        if !self.s.workdir.join(".git").exists() {
            if let Some(p) = self.s.workdir.parent() {
                std::fs::create_dir_all(p).map_err(|e| {
                    BackendError::failed(format!("cannot create {}: {e}", p.display()))
                })?;
            }
            let dir = self.s.workdir.display().to_string();
            self.git(&[
                "clone",
                "-q",
                "--branch",
                &self.s.branch,
                "--single-branch",
                "--",
                &self.s.repository,
                &dir,
            ])
            .await
            .map_err(Self::failed)?;
            log.push(format!(
                "git clone {} (branch {})",
                shown(&self.s.repository),
                self.s.branch
            ));
        } else {
            let spec = format!("+refs/heads/{0}:refs/remotes/origin/{0}", self.s.branch);
            self.git(&["fetch", "-q", "origin", &spec])
                .await
                .map_err(Self::failed)?;
        }
        let origin = self.origin();
        self.git(&["checkout", "-q", "-f", "-B", &self.s.branch, &origin])
            .await
            .map_err(Self::failed)?;
        self.git(&["clean", "-q", "-fd"])
            .await
            .map_err(Self::failed)?;
        let head = self.head().await?;
        log.push(format!(
            "git fetch origin {} → {}",
            self.s.branch,
            short(&head)
        ));
        Ok(head)
    }

    async fn head(&self) -> Result<String, BackendError> {
        Ok(self
            .git(&["rev-parse", "HEAD"])
            .await
            .map_err(Self::failed)?
            .trim()
            .to_string())
    }

    fn read(&self, w: &Where) -> Result<String, BackendError> {
        std::fs::read_to_string(self.s.workdir.join(&w.file)).map_err(|e| {
            BackendError::Refused(format!(
                "cannot read {} on branch {}: {e}; check `file` for this service",
                w.file, self.s.branch
            ))
        })
    }

    fn current(&self, w: &Where) -> Result<Scalar, BackendError> {
        find_scalar(&self.read(w)?, &w.key)
            .map_err(|e| BackendError::Refused(format!("{}: {e}", w.file)))
    }

    /// The values the key had, newest first, one per change, with the commit
    /// that set it.
    async fn history(
        &self,
        w: &Where,
        limit: usize,
    ) -> Result<Vec<(String, String)>, BackendError> {
        let log = self
            .git(&[
                "log",
                "--format=%H%x09%h %ad %an: %s",
                "--date=short",
                "-n",
                "200",
                "--",
                &w.file,
            ])
            .await
            .map_err(Self::failed)?;
        let mut values: Vec<(String, String)> = Vec::new();
        for line in log.lines() {
            let Some((commit, desc)) = line.split_once('\t') else {
                continue;
            };
            let Ok(text) = self.git(&["show", &format!("{commit}:{}", w.file)]).await else {
                continue;
            };
            let Ok(s) = find_scalar(&text, &w.key) else {
                continue;
            };
            match values.last_mut() {
                // Same value as the newer commit: the change was made earlier.
                Some(last) if last.0 == s.value => last.1 = desc.to_string(),
                _ => {
                    if values.len() == limit {
                        break;
                    }
                    values.push((s.value, desc.to_string()));
                }
            }
        }
        Ok(values)
    }

    /// Decides what to change, on the clone's current head.
    async fn plan(&self, w: &Where, to: Option<&str>) -> Result<Plan, BackendError> {
        if self.s.mode == GitopsMode::Revert {
            let line = self
                .git(&["log", "-1", "--format=%H%x09%s", "--", &w.file])
                .await
                .map_err(Self::failed)?;
            let (commit, subject) = line.trim().split_once('\t').ok_or_else(|| {
                BackendError::Refused(format!(
                    "no commit on {} touches {}; nothing to revert",
                    self.s.branch, w.file
                ))
            })?;
            return Ok(Plan::Revert {
                commit: commit.into(),
                subject: subject.into(),
            });
        }
        let cur = self.current(w)?.value;
        let history = self.history(w, 50).await?;
        let to = match to {
            Some(t) => {
                check_revision(t).map_err(BackendError::Refused)?;
                if t != cur && !history.iter().any(|(v, _)| v == t) {
                    return Err(BackendError::Refused(format!(
                        "revision {t} was never the value of `{}` in {} on {} (recent values: {}); nothing was changed",
                        w.key,
                        w.file,
                        self.s.branch,
                        history.iter().map(|(v, _)| v.as_str()).collect::<Vec<_>>().join(", ")
                    )));
                }
                t.to_string()
            }
            None => history
                .iter()
                .map(|(v, _)| v)
                .find(|v| **v != cur)
                .cloned()
                .ok_or_else(|| {
                    BackendError::Refused(format!(
                        "`{}` in {} has had no other value than {cur} on {}; there is no previous revision to go back to",
                        w.key, w.file, self.s.branch
                    ))
                })?,
        };
        check_revision(&to).map_err(BackendError::Refused)?;
        Ok(Plan::Set { from: cur, to })
    }

    fn message(&self, t: &Target, w: &Where, plan: &Plan, ctx: &CallContext) -> String {
        let (title, revs) = match plan {
            Plan::Set { from, to } => (
                format!(
                    "rollback {} ({}): {} {from} → {to}",
                    t.service, t.environment, w.key
                ),
                format!("From: {from}\nTo: {to}\n"),
            ),
            Plan::Revert { commit, subject } => (
                format!(
                    "rollback {} ({}): revert {}",
                    t.service,
                    t.environment,
                    short(commit)
                ),
                format!("Reverts: {commit} ({subject})\n"),
            ),
        };
        format!(
            "{title}\n\nService: {}\nEnvironment: {}\nFile: {}\n{revs}Actor: {}\nReason: {}\nCorrelation-Id: {}\nIdempotency-Key: {}\n",
            t.service,
            t.environment,
            w.file,
            ctx.actor,
            if ctx.reason.is_empty() { "-" } else { &ctx.reason },
            ctx.correlation_id,
            ctx.idempotency_key
        )
    }

    /// Applies the plan on the current head and commits. `Err` is a conflict
    /// (nothing committed), with the reason.
    async fn apply(
        &self,
        t: &Target,
        w: &Where,
        plan: &Plan,
        ctx: &CallContext,
    ) -> Result<(), String> {
        match plan {
            Plan::Set { from, to } => {
                let text = self.read(w).map_err(|e| e.to_string())?;
                let (new, old) = set_scalar(&text, &w.key, to)?;
                if old.value != *from {
                    let who = self
                        .git(&["log", "-1", "--format=%h by %an: %s", "--", &w.file])
                        .await
                        .map(|s| s.trim().to_string())
                        .unwrap_or_default();
                    return Err(format!(
                        "someone else changed `{}` in {} from {from} to {} meanwhile ({who})",
                        w.key, w.file, old.value
                    ));
                }
                std::fs::write(self.s.workdir.join(&w.file), new).map_err(|e| e.to_string())?;
            }
            Plan::Revert { commit, .. } => {
                let newest = self
                    .git(&["log", "-1", "--format=%H", "--", &w.file])
                    .await
                    .map_err(|e| e.output)?;
                if newest.trim() != commit {
                    return Err(format!(
                        "someone else changed {} meanwhile (its newest commit is now {}, not {})",
                        w.file,
                        short(newest.trim()),
                        short(commit)
                    ));
                }
                if let Err(e) = self.git(&["revert", "--no-commit", commit]).await {
                    let _ = self.git(&["revert", "--abort"]).await;
                    return Err(format!(
                        "`git revert {}` does not apply: {}",
                        short(commit),
                        e.output
                    ));
                }
            }
        }
        let msg = self.message(t, w, plan, ctx);
        self.git(&["add", "--", &w.file])
            .await
            .map_err(|e| e.output)?;
        self.git(&["commit", "-q", "-m", &msg])
            .await
            .map_err(|e| e.output)?;
        Ok(())
    }

    /// The refspec a rollback pushes (a dry run shows it).
    fn push_spec(&self) -> String {
        format!("HEAD:refs/heads/{}", self.s.branch)
    }

    async fn push(&self) -> Result<(), GitFailure> {
        if let Err(f) = crate::fence::check(&format!("`git push origin {}`", self.push_spec())) {
            return Err(GitFailure {
                args: "push".into(),
                output: f.0,
            });
        }
        self.git(&["push", "-q", "--porcelain", "origin", &self.push_spec()])
            .await
            .map(|_| ())
    }

    /// The edit, commit and push a rollback would make, decided and built
    /// by the code a real rollback uses; the clone is synced (a read) but
    /// nothing is written to it or pushed.
    async fn dry_run(
        &self,
        t: &Target,
        to: Option<&str>,
        ctx: &CallContext,
    ) -> Result<super::Plan, BackendError> {
        let _one = self.lock.lock().await;
        let w = self.place(t);
        let mut notes = Vec::new();
        let head = self.sync(&mut notes).await?;
        let plan = self.plan(&w, to).await?;
        let edit = match &plan {
            Plan::Set { from, to } if from == to => {
                notes.push(format!(
                    "{} already has `{}` = {from}; nothing would be committed",
                    w.file, w.key
                ));
                return Ok(super::Plan {
                    requests: Vec::new(),
                    notes,
                });
            }
            Plan::Set { from, to } => {
                let text = self.read(&w)?;
                let (new, _) = set_scalar(&text, &w.key, to)
                    .map_err(|e| BackendError::Refused(format!("{}: {e}", w.file)))?;
                let lines: Vec<String> = text
                    .lines()
                    .zip(new.lines())
                    .filter(|(a, b)| a != b)
                    .flat_map(|(a, b)| [format!("-{a}"), format!("+{b}")])
                    .collect();
                PlannedRequest::new("edit", format!("{} (`{}`: {from} → {to})", w.file, w.key))
                    .body(lines.join("\n"))
            }
            Plan::Revert { commit, subject } => {
                PlannedRequest::new("git revert", format!("{} -- {}", short(commit), w.file))
                    .body(subject.clone())
            }
        };
        Ok(super::Plan {
            requests: vec![
                edit,
                PlannedRequest::new(
                    "git commit",
                    format!("on {} (head {})", self.s.branch, short(&head)),
                )
                .body(self.message(t, &w, &plan, ctx)),
                PlannedRequest::new(
                    "git push",
                    format!("{} {}", shown(&self.s.repository), self.push_spec()),
                ),
            ],
            notes,
        })
    }

    async fn do_rollback(
        &self,
        t: &Target,
        to: Option<&str>,
        ctx: &CallContext,
    ) -> Result<ActionReport, BackendError> {
        let _one = self.lock.lock().await;
        let w = self.place(t);
        let mut log = Vec::new();
        self.sync(&mut log).await?;
        let plan = self.plan(&w, to).await?;
        let (from, to) = self.revisions(&w, &plan).await;
        if let Plan::Set { from: f, to: t2 } = &plan {
            if f == t2 {
                return Ok(ActionReport {
                    summary: format!(
                        "{} already has `{}` = {f}; nothing to commit",
                        w.file, w.key
                    ),
                    from_revision: Some(f.clone()),
                    to_revision: Some(t2.clone()),
                    changed: false,
                    requests: log,
                });
            }
        }
        let manual = |why: &str| {
            format!(
                "{why}\nrollbot pushed nothing; the remote branch {} is as the others left it. To roll back by hand: edit {} (set `{}` to {}) or revert the change, commit and push.",
                self.s.branch,
                w.file,
                w.key,
                to.as_deref().unwrap_or("the previous value")
            )
        };
        self.apply(t, &w, &plan, ctx)
            .await
            .map_err(|e| BackendError::failed(manual(&format!("conflict: {e}"))))?;
        let mut commit = self.head().await?;
        log.push(format!(
            "git commit {} on {}",
            short(&commit),
            self.s.branch
        ));
        if let Err(first) = self.push().await {
            log.push(format!(
                "git push origin {} → {}",
                self.s.branch,
                push_refusal(&first.output)
            ));
            let before = self
                .git(&["rev-parse", &self.origin()])
                .await
                .map_err(Self::failed)?;
            self.sync(&mut log).await?;
            let after = self
                .git(&["rev-parse", &self.origin()])
                .await
                .map_err(Self::failed)?;
            if before == after {
                return Err(BackendError::Failed {
                    message: manual(&format!(
                        "`git push` failed and the remote did not move: {}",
                        first.output
                    )),
                    requests: log,
                });
            }
            // Someone else pushed: apply once more on their head.
            if let Err(e) = self.apply(t, &w, &plan, ctx).await {
                self.sync(&mut Vec::new()).await.ok();
                return Err(BackendError::Failed {
                    message: manual(&format!("conflict: {e}")),
                    requests: log,
                });
            }
            commit = self.head().await?;
            log.push(format!(
                "git commit {} on {} (re-applied)",
                short(&commit),
                short(&after)
            ));
            if let Err(second) = self.push().await {
                self.sync(&mut Vec::new()).await.ok();
                return Err(BackendError::Failed {
                    message: manual(&format!("`git push` was rejected twice: {}", second.output)),
                    requests: log,
                });
            }
        }
        log.push(format!(
            "git push origin {} → {}",
            self.s.branch,
            short(&commit)
        ));
        Ok(ActionReport {
            summary: match &plan {
                Plan::Set { .. } => format!(
                    "committed {} to {}: `{}` in {} set to {}",
                    short(&commit),
                    self.s.branch,
                    w.key,
                    w.file,
                    to.as_deref().unwrap_or("?")
                ),
                Plan::Revert { commit: c, .. } => format!(
                    "committed {} to {}: reverted {} in {}",
                    short(&commit),
                    self.s.branch,
                    short(c),
                    w.file
                ),
            },
            from_revision: from,
            to_revision: to,
            changed: true,
            requests: log,
        })
    }

    /// The key's value before and after a plan (for a revert: after, read
    /// from the file at the reverted commit's parent).
    async fn revisions(&self, w: &Where, plan: &Plan) -> (Option<String>, Option<String>) {
        match plan {
            Plan::Set { from, to } => (Some(from.clone()), Some(to.clone())),
            Plan::Revert { commit, .. } => {
                let from = self.current(w).ok().map(|s| s.value);
                let to = match self.git(&["show", &format!("{commit}^:{}", w.file)]).await {
                    Ok(text) => find_scalar(&text, &w.key).ok().map(|s| s.value),
                    Err(_) => None,
                };
                (
                    from,
                    to.or_else(|| Some(format!("revert of {}", short(commit)))),
                )
            }
        }
    }

    fn unsupported(&self, action: &str) -> BackendError {
        BackendError::Refused(format!(
            "the gitops backend does not {action}: progressive steps belong to Argo CD / Flux (or Argo Rollouts) watching {}; {action} there, or commit the change to {} by hand",
            shown(&self.s.repository),
            self.s.branch
        ))
    }
}

/// Why a push failed, from `git push --porcelain`: the status of the
/// refused ref (`! HEAD:refs/heads/main [rejected] (fetch first)` gives
/// "rejected (fetch first)"), else git's first error line. The output's
/// last line is only "Done".
fn push_refusal(output: &str) -> String {
    let refused = output.lines().find_map(|l| {
        let status = l.strip_prefix('!')?.split('\t').nth(2)?;
        Some(status.replace(['[', ']'], "").trim().to_string())
    });
    refused
        .or_else(|| {
            output
                .lines()
                .find(|l| l.starts_with("error:") || l.starts_with("fatal:"))
                .map(str::to_string)
        })
        .unwrap_or_else(|| format!("failed: {}", output.trim()))
}

fn short(commit: &str) -> String {
    commit.chars().take(8).collect()
}

#[async_trait]
impl RollbackBackend for GitopsBackend {
    fn kind(&self) -> &'static str {
        "gitops"
    }

    async fn preflight(
        &self,
        t: &Target,
        op: &Operation,
        _ctx: &CallContext,
    ) -> Result<Preflight, BackendError> {
        let Operation::Rollback { to } = op else {
            return Err(self.unsupported(op.name()));
        };
        let _one = self.lock.lock().await;
        let w = self.place(t);
        let mut log = Vec::new();
        self.sync(&mut log).await?;
        let plan = self.plan(&w, to.as_deref()).await?;
        let (from, to) = self.revisions(&w, &plan).await;
        Ok(Preflight {
            from_revision: from,
            to_revision: to,
            notes: log,
        })
    }

    async fn rollback(
        &self,
        t: &Target,
        to: Option<&str>,
        ctx: &CallContext,
    ) -> Result<ActionReport, BackendError> {
        self.do_rollback(t, to, ctx).await
    }

    async fn plan(
        &self,
        t: &Target,
        op: &Operation,
        ctx: &CallContext,
    ) -> Result<super::Plan, BackendError> {
        let Operation::Rollback { to } = op else {
            return Err(self.unsupported(op.name()));
        };
        self.dry_run(t, to.as_deref(), ctx).await
    }

    async fn promote(
        &self,
        _t: &Target,
        _full: bool,
        _ctx: &CallContext,
    ) -> Result<ActionReport, BackendError> {
        Err(self.unsupported("promote"))
    }

    async fn pause(&self, _t: &Target, _ctx: &CallContext) -> Result<ActionReport, BackendError> {
        Err(self.unsupported("pause"))
    }

    async fn resume(&self, _t: &Target, _ctx: &CallContext) -> Result<ActionReport, BackendError> {
        Err(self.unsupported("resume"))
    }

    async fn verify(
        &self,
        t: &Target,
        _op: &Operation,
        report: &ActionReport,
        ctx: &CallContext,
    ) -> Result<Verification, BackendError> {
        let _one = self.lock.lock().await;
        let w = self.place(t);
        self.sync(&mut Vec::new()).await?;
        if self.s.mode == GitopsMode::SetTag {
            let now = self.current(&w)?.value;
            let ok = Some(&now) == report.to_revision.as_ref();
            return Ok(Verification {
                ok,
                detail: format!(
                    "{} on the remote branch {} has `{}` = {now}{}",
                    w.file,
                    self.s.branch,
                    w.key,
                    if ok { "" } else { " (not the promised value)" }
                ),
            });
        }
        let found = self
            .git(&[
                "log",
                "-1",
                "--format=%h",
                "--fixed-strings",
                &format!("--grep=Correlation-Id: {}", ctx.correlation_id),
            ])
            .await
            .map_err(Self::failed)?;
        Ok(Verification {
            ok: !found.trim().is_empty(),
            detail: if found.trim().is_empty() {
                format!(
                    "no commit for this action on the remote branch {}",
                    self.s.branch
                )
            } else {
                format!(
                    "the revert {} is on the remote branch {}",
                    found.trim(),
                    self.s.branch
                )
            },
        })
    }

    async fn status(&self, t: &Target) -> Result<BackendStatus, BackendError> {
        let _one = self.lock.lock().await;
        let w = self.place(t);
        self.sync(&mut Vec::new()).await?;
        let live = self.current(&w).ok().map(|s| s.value);
        let history = self.history(&w, 10).await?;
        let log = self
            .git(&[
                "log",
                "-5",
                "--format=%h %ad %an: %s",
                "--date=short",
                "--",
                &w.file,
            ])
            .await
            .map_err(Self::failed)?;
        Ok(BackendStatus {
            live_revision: live.clone(),
            history: history
                .into_iter()
                .map(|(v, desc)| RevisionInfo {
                    live: Some(&v) == live.as_ref(),
                    revision: v,
                    detail: desc,
                    change_cause: None,
                })
                .collect(),
            notes: std::iter::once(format!(
                "{} on {} of {}; last commits:",
                w.file,
                self.s.branch,
                shown(&self.s.repository)
            ))
            .chain(log.lines().map(str::to_string))
            .collect(),
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_push_names_gits_reason_not_its_last_line() {
        // stderr, then stdout, as `git` collects them.
        let fetch_first = "error: failed to push some refs to '/srv/deploy.git'\nhint: Updates were rejected because the remote contains work that you do not\nTo /srv/deploy.git\n!\tHEAD:refs/heads/main\t[rejected] (fetch first)\nDone";
        assert_eq!(push_refusal(fetch_first), "rejected (fetch first)");
        let hook = "To /srv/deploy.git\n!\tHEAD:refs/heads/main\t[remote rejected] (pre-receive hook declined)\nDone";
        assert_eq!(
            push_refusal(hook),
            "remote rejected (pre-receive hook declined)"
        );
        let auth = "fatal: Authentication failed for 'https://git.example.com/deploy.git/'";
        assert_eq!(push_refusal(auth), auth);
    }

    #[test]
    fn base64_and_urls() {
        assert_eq!(base64(b"x-access-token:abc"), "eC1hY2Nlc3MtdG9rZW46YWJj");
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(
            shown("https://user:tok@git.example.com/org/repo.git"),
            "https://git.example.com/org/repo.git"
        );
        assert_eq!(shown("/srv/git/repo.git"), "/srv/git/repo.git");
    }
}
