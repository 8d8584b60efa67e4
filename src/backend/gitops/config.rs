//! `[backends.NAME]` with `type = "gitops"`: its keys, their checks and the
//! constructor.

use super::{GitopsBackend, GitopsSettings};
use crate::backend::factory::{BackendSettings, BuildContext, Built, CheckContext};
use crate::config::{ConfigError, EnvRef, HumanDuration, SecretSource};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GitopsMode {
    /// Set the value at `key` in `file` back to the previous revision.
    #[default]
    SetTag,
    /// Revert the newest commit that changed `file`.
    Revert,
}

/// Rolls back by committing to a GitOps repository (Argo CD, Flux).
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct GitopsConfig {
    /// Clone URL (`https://…`, `ssh://…`, `git@host:…`) or a local path.
    repository: String,
    /// Branch Argo CD / Flux deploys from (default `main`).
    #[serde(default)]
    branch: Option<String>,
    /// File holding the service's revision, relative to the repository
    /// root; `{service}` and `{environment}` are filled in. A service's
    /// `target.file` overrides it.
    file: String,
    /// Dotted YAML key path of the revision in `file` (default
    /// `image.tag`); a service's `target.key` overrides it.
    #[serde(default)]
    key: Option<String>,
    /// `set-tag` (default): set `key` back to its previous value;
    /// `revert`: revert the newest commit that changed `file`.
    #[serde(default)]
    mode: GitopsMode,
    /// Where the clone is kept (default: a directory under the system's
    /// temporary directory named after the backend).
    #[serde(default)]
    workdir: Option<PathBuf>,
    /// Private SSH key for `ssh://` and `git@` URLs.
    #[serde(default)]
    ssh_key_file: Option<PathBuf>,
    /// HTTPS token: `"${ENV_VAR}"`, or `token_file`. Sent as an HTTP
    /// header through git's environment, never in the URL or arguments.
    #[serde(default)]
    token: Option<EnvRef>,
    #[serde(default)]
    token_file: Option<PathBuf>,
    /// User name sent with the token (default `x-access-token`).
    #[serde(default)]
    token_user: Option<String>,
    /// Commit author (default `rollbot` <rollbot@localhost>).
    #[serde(default)]
    author_name: Option<String>,
    #[serde(default)]
    author_email: Option<String>,
    /// Time limit of one git command (default 60s).
    #[serde(default)]
    timeout: Option<HumanDuration>,
}

impl BackendSettings for GitopsConfig {
    fn check(&self, cx: &CheckContext) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        if self.repository.trim().is_empty() {
            errors.push(
                cx.error("repository is empty")
                    .help("write the clone URL, for example \"git@github.com:acme/deploy.git\""),
            );
        }
        let file = &self.file;
        if file.is_empty() || file.starts_with('/') || file.split('/').any(|p| p == "..") {
            errors.push(
                cx.error(format!("file `{file}` must be a path inside the repository"))
                    .help("write it relative to the repository root, for example \"apps/{service}/values-{environment}.yaml\""),
            );
        }
        if let Some(k) = &self.key {
            if k.is_empty() || k.split('.').any(str::is_empty) {
                errors.push(
                    cx.error(format!("key `{k}` is not a dotted key path"))
                        .help("write for example \"image.tag\""),
                );
            }
        }
        if let Err(e) =
            SecretSource::from_pair("token", self.token.as_ref(), self.token_file.as_ref())
        {
            errors.push(cx.error(e));
        }
        if self.ssh_key_file.is_some() && (self.token.is_some() || self.token_file.is_some()) {
            errors.push(
                cx.error("both ssh_key_file and a token are set")
                    .help("use ssh_key_file for ssh URLs, a token for https URLs"),
            );
        }
        errors
    }

    fn build(&self, cx: &BuildContext) -> Built {
        let s = GitopsSettings {
            repository: self.repository.clone(),
            branch: self.branch.clone().unwrap_or_else(|| "main".into()),
            file: self.file.clone(),
            key: self.key.clone().unwrap_or_else(|| "image.tag".into()),
            mode: self.mode,
            workdir: self.workdir.clone().unwrap_or_else(|| {
                std::env::temp_dir().join(format!("rollbot-gitops-{}", cx.name))
            }),
            ssh_key_file: self.ssh_key_file.clone(),
            // Checked when the config was loaded.
            token: SecretSource::from_pair("token", self.token.as_ref(), self.token_file.as_ref())
                .ok()
                .flatten(),
            token_user: self
                .token_user
                .clone()
                .unwrap_or_else(|| "x-access-token".into()),
            author_name: self.author_name.clone().unwrap_or_else(|| "rollbot".into()),
            author_email: self
                .author_email
                .clone()
                .unwrap_or_else(|| "rollbot@localhost".into()),
            timeout: self.timeout.map(|t| t.0).unwrap_or(Duration::from_secs(60)),
        };
        GitopsBackend::new(s).into()
    }
}
