//! Secrets are named in the config, never written in it: `${ENV_VAR}` or a
//! `*_file` path. The value is read when needed and never printed.

use serde::{Deserialize, Deserializer};
use std::fmt;
use std::path::PathBuf;

/// Where a secret comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretSource {
    Env(String),
    File(PathBuf),
}

/// A `${ENV_VAR}` reference as written in the config. Anything else is
/// refused at load time, so a token pasted into the file never gets used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvRef(pub String);

impl<'de> Deserialize<'de> for EnvRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_env_ref(&text)
            .map(EnvRef)
            .map_err(serde::de::Error::custom)
    }
}

fn parse_env_ref(text: &str) -> Result<String, String> {
    let name = text
        .strip_prefix("${")
        .and_then(|rest| rest.strip_suffix('}'))
        .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    match name {
        Some(n) => Ok(n.to_string()),
        None => Err(
            "secrets are never written in the config itself: write \"${ENV_VAR}\" \
             (for example \"${SLACK_BOT_TOKEN}\") and set that variable, or use the matching \
             *_file key with a path to a file holding the secret"
                .to_string(),
        ),
    }
}

/// The secret's value. Debug and Display never show it.
#[derive(Clone)]
pub struct SecretValue(String);

impl SecretValue {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue(<redacted>)")
    }
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Env(n) => write!(f, "env ${{{n}}}"),
            SecretSource::File(p) => write!(f, "file {}", p.display()),
        }
    }
}

impl SecretSource {
    /// Picks the one source named by a `key = "${VAR}"` / `key_file = "path"` pair.
    pub fn from_pair(
        key: &str,
        env: Option<&EnvRef>,
        file: Option<&PathBuf>,
    ) -> Result<Option<SecretSource>, String> {
        match (env, file) {
            (Some(_), Some(_)) => Err(format!(
                "both {key} and {key}_file are set; keep one of them"
            )),
            (Some(e), None) => Ok(Some(SecretSource::Env(e.0.clone()))),
            (None, Some(p)) => Ok(Some(SecretSource::File(p.clone()))),
            (None, None) => Ok(None),
        }
    }

    /// Reads the secret now. The error names the variable or file, never a value.
    pub fn resolve(&self) -> Result<SecretValue, String> {
        match self {
            SecretSource::Env(name) => match std::env::var(name) {
                Ok(v) if !v.is_empty() => Ok(SecretValue(v)),
                _ => Err(format!(
                    "environment variable {name} is not set or empty; export it before starting rollbot"
                )),
            },
            SecretSource::File(path) => std::fs::read_to_string(path)
                .map(|s| SecretValue(s.trim_end_matches(['\n', '\r']).to_string()))
                .map_err(|e| format!("cannot read secret file {}: {e}", path.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_refs_only() {
        assert_eq!(
            parse_env_ref("${SLACK_BOT_TOKEN}").unwrap(),
            "SLACK_BOT_TOKEN"
        );
        assert!(parse_env_ref("xoxb-123-456")
            .unwrap_err()
            .contains("never written"));
        assert!(parse_env_ref("${}").is_err());
        assert!(parse_env_ref("${A B}").is_err());
    }

    #[test]
    fn values_are_redacted() {
        let v = SecretValue("xoxb-very-secret".into());
        assert!(!format!("{v:?}").contains("secret-"));
    }

    #[test]
    fn resolves_from_file_without_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tok");
        std::fs::write(&p, "abc\n").unwrap();
        let v = SecretSource::File(p).resolve().unwrap();
        assert_eq!(v.expose(), "abc");
        let err = SecretSource::Env("ROLLBOT_TEST_SURELY_UNSET".into())
            .resolve()
            .unwrap_err();
        assert!(err.contains("ROLLBOT_TEST_SURELY_UNSET"));
    }
}
