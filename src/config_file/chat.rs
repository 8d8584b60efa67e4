//! `[chat.slack]` and `[chat.discord]`: the platforms rollbot talks on, and
//! the checks of their secrets and IDs.

use super::Config;
use crate::config::{find_span, ConfigError, EnvRef, HumanDuration, SecretSource};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ChatConfig {
    pub slack: Option<SlackConfig>,
    pub discord: Option<DiscordConfig>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum SlackMode {
    #[default]
    Http,
    Socket,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    #[serde(default)]
    pub mode: SlackMode,
    #[serde(default = "default_slack_api")]
    pub api_url: String,
    pub signing_secret: Option<EnvRef>,
    pub signing_secret_file: Option<PathBuf>,
    pub bot_token: Option<EnvRef>,
    pub bot_token_file: Option<PathBuf>,
    /// App-level `xapp-` token, for Socket Mode.
    pub app_token: Option<EnvRef>,
    pub app_token_file: Option<PathBuf>,
    /// How long a user group's member list (`usergroups.users.list`) is
    /// trusted before it is asked again. A member removed from a group keeps
    /// the group's roles at most this long.
    #[serde(default = "default_usergroup_ttl")]
    pub usergroup_cache_ttl: HumanDuration,
    /// The least time between two messages rollbot sends to one channel;
    /// Slack allows about one per second per channel. Messages wait in a
    /// per-channel queue, none is dropped.
    #[serde(default = "default_channel_interval")]
    pub channel_interval: HumanDuration,
    /// How many times a Web API call that failed with a 5xx or a dropped
    /// connection is retried, with exponential backoff from 500 ms. A 429 is
    /// always retried after its `Retry-After`.
    #[serde(default = "default_slack_retries")]
    pub retries: u32,
}

fn default_usergroup_ttl() -> HumanDuration {
    HumanDuration(Duration::from_secs(300))
}

fn default_channel_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}

fn default_slack_retries() -> u32 {
    4
}

impl SlackConfig {
    pub fn signing_secret_source(&self) -> Result<Option<SecretSource>, String> {
        SecretSource::from_pair(
            "signing_secret",
            self.signing_secret.as_ref(),
            self.signing_secret_file.as_ref(),
        )
    }
    pub fn bot_token_source(&self) -> Result<Option<SecretSource>, String> {
        SecretSource::from_pair(
            "bot_token",
            self.bot_token.as_ref(),
            self.bot_token_file.as_ref(),
        )
    }
    pub fn app_token_source(&self) -> Result<Option<SecretSource>, String> {
        SecretSource::from_pair(
            "app_token",
            self.app_token.as_ref(),
            self.app_token_file.as_ref(),
        )
    }
}

fn default_slack_api() -> String {
    "https://slack.com/api/".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscordConfig {
    pub application_id: String,
    /// The application's Ed25519 public key (hex); public, so written inline.
    pub public_key: String,
    pub bot_token: Option<EnvRef>,
    pub bot_token_file: Option<PathBuf>,
    #[serde(default = "default_discord_api")]
    pub api_url: String,
    /// Guilds where commands are accepted (empty: any). Also the guilds
    /// `rollbot commands discord-register` uses when given no `--guild`.
    #[serde(default)]
    pub guild_ids: Vec<String>,
    /// Channels (or threads) where commands are accepted (empty: any).
    /// Buttons on rollbot's own prompts are answered wherever they are.
    #[serde(default)]
    pub channel_ids: Vec<String>,
    /// Open the gateway for mention-style commands. Not built into this
    /// release: `true` is refused at load time.
    #[serde(default)]
    pub gateway: bool,
}

impl DiscordConfig {
    pub fn bot_token_source(&self) -> Result<SecretSource, String> {
        SecretSource::from_pair(
            "bot_token",
            self.bot_token.as_ref(),
            self.bot_token_file.as_ref(),
        )?
        .ok_or_else(|| "[chat.discord] needs bot_token or bot_token_file".to_string())
    }
}

fn is_snowflake(s: &str) -> bool {
    (1..=20).contains(&s.len()) && s.chars().all(|c| c.is_ascii_digit())
}

fn default_discord_api() -> String {
    "https://discord.com/api/v10".into()
}

impl Config {
    /// The secrets of each chat platform, and Discord's IDs and API URL.
    pub(super) fn check_chat(&self, path: &Path, source: &str) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let chat_secret = |key: &str,
                           env: Option<&EnvRef>,
                           file: Option<&PathBuf>,
                           required: bool,
                           section: &str|
         -> Option<ConfigError> {
            match SecretSource::from_pair(key, env, file) {
                Err(e) => Some(ConfigError::at(
                    path,
                    source,
                    find_span(source, section),
                    format!("[{section}]: {e}"),
                )),
                Ok(None) if required => Some(
                    ConfigError::at(
                        path,
                        source,
                        find_span(source, section),
                        format!("[{section}] needs {key}"),
                    )
                    .help(format!(
                        "write {key} = \"${{ENV_VAR}}\" or {key}_file = \"/path/to/secret\""
                    )),
                ),
                Ok(_) => None,
            }
        };
        if let Some(slack) = &self.chat.slack {
            errors.extend(chat_secret(
                "signing_secret",
                slack.signing_secret.as_ref(),
                slack.signing_secret_file.as_ref(),
                true,
                "chat.slack",
            ));
            errors.extend(chat_secret(
                "bot_token",
                slack.bot_token.as_ref(),
                slack.bot_token_file.as_ref(),
                true,
                "chat.slack",
            ));
            errors.extend(chat_secret(
                "app_token",
                slack.app_token.as_ref(),
                slack.app_token_file.as_ref(),
                slack.mode == SlackMode::Socket,
                "chat.slack",
            ));
        }
        if let Some(discord) = &self.chat.discord {
            errors.extend(chat_secret(
                "bot_token",
                discord.bot_token.as_ref(),
                discord.bot_token_file.as_ref(),
                true,
                "chat.discord",
            ));
            let key_ok = discord.public_key.len() == 64
                && discord.public_key.chars().all(|c| c.is_ascii_hexdigit());
            if !key_ok {
                errors.push(ConfigError::at(path, source, find_span(source, "chat.discord"), "[chat.discord] public_key must be the application's 64-hex-digit public key")
                    .help("copy PUBLIC KEY from the Discord developer portal, General Information"));
            }
            let section = find_span(source, "chat.discord");
            if !is_snowflake(&discord.application_id) {
                errors.push(ConfigError::at(path, source, section.clone(), format!("[chat.discord] application_id `{}` is not a Discord ID (a number)", discord.application_id))
                    .help("copy APPLICATION ID from the Discord developer portal, General Information"));
            }
            for (key, ids) in [
                ("guild_ids", &discord.guild_ids),
                ("channel_ids", &discord.channel_ids),
            ] {
                for id in ids.iter().filter(|i| !is_snowflake(i)) {
                    errors.push(ConfigError::at(path, source, section.clone(), format!("[chat.discord] {key}: `{id}` is not a Discord ID (a number)"))
                        .help("in Discord, turn on Developer Mode and use Copy ID; names change, IDs do not"));
                }
            }
            let api = discord.api_url.trim_end_matches('/');
            if !(api.starts_with("https://") || api.starts_with("http://"))
                || !api.ends_with("/api/v10")
            {
                errors.push(ConfigError::at(path, source, section.clone(), format!("[chat.discord] api_url `{}` must be an http(s) URL ending in /api/v10", discord.api_url))
                    .help("leave it out for https://discord.com/api/v10; a proxy or test server is written as http://HOST:PORT/api/v10"));
            }
            if discord.gateway {
                errors.push(ConfigError::at(path, source, section, "[chat.discord] gateway = true is not supported by this build of rollbot")
                    .help("remove it: commands and buttons arrive at POST /discord/interactions (set that URL as the application's Interactions Endpoint URL)"));
            }
        }
        errors
    }
}
