//! `rollbot commands …`: the chat platforms' registrations, generated from
//! the command grammar, and their registration with Discord.

use super::load;
use rollbot::chat::discord::rest::{Call, Rest};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(clap::Args)]
pub struct CommandsArgs {
    #[command(subcommand)]
    command: CommandsCmd,
}

#[derive(clap::Subcommand)]
enum CommandsCmd {
    /// The command reference in Markdown (commands/reference.md).
    Reference,
    /// Discord application commands as JSON (commands/discord-commands.json).
    DiscordJson,
    /// Register the application commands with Discord (bulk overwrite):
    /// in one server with --guild (at once), else globally (may take up to
    /// an hour to appear everywhere).
    DiscordRegister {
        #[arg(long, short, default_value = "rollbot.toml")]
        config: PathBuf,
        /// A server (guild) ID; repeat for several.
        #[arg(long)]
        guild: Vec<String>,
    },
    /// The Slack app manifest (commands/slack-manifest.yaml).
    SlackManifest {
        /// The public HTTPS address Slack sends commands, buttons and events to.
        #[arg(long, default_value = "https://rollbot.example.com")]
        url: String,
        /// Socket Mode: Slack needs no public URL; rollbot opens the socket.
        #[arg(long)]
        socket: bool,
    },
}

pub async fn run(args: CommandsArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        CommandsCmd::Reference => out!("{}", rollbot::command::reference_markdown()),
        CommandsCmd::DiscordJson => {
            out!("{}", rollbot::command::discord::application_commands_json())
        }
        CommandsCmd::DiscordRegister { config, guild } => discord_register(config, guild).await?,
        CommandsCmd::SlackManifest { url, socket } => {
            out!("{}", rollbot::chat::slack::manifest::manifest(&url, socket))
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Overwrites the application's commands in each `--guild`, else globally.
async fn discord_register(config: PathBuf, guild: Vec<String>) -> anyhow::Result<()> {
    let c = load(&config)?;
    let Some(d) = &c.chat.discord else {
        anyhow::bail!(
            "{} has no [chat.discord] section; add application_id, public_key and bot_token",
            config.display()
        );
    };
    let rest = Rest::from_config(d, Arc::new(rollbot::telemetry::Telemetry::new()))?;
    let commands = rollbot::command::discord::application_commands();
    let guilds: Vec<Option<u64>> = if guild.is_empty() {
        vec![None]
    } else {
        guild
            .iter()
            .map(|g| {
                g.parse::<u64>()
                    .map(Some)
                    .map_err(|_| anyhow::anyhow!("--guild `{g}` is not a Discord ID"))
            })
            .collect::<anyhow::Result<_>>()?
    };
    for g in guilds {
        let answer = rest
            .call(
                "commands",
                Call::OverwriteCommands { guild: g },
                Some(&commands),
            )
            .await
            .map_err(|e| anyhow::anyhow!("Discord refused the commands: {e}"))?;
        let n = answer.as_array().map(|a| a.len()).unwrap_or(0);
        match g {
            Some(g) => outln!("registered {n} commands in server {g}"),
            None => {
                outln!("registered {n} global commands (they may take up to an hour to appear)")
            }
        }
    }
    Ok(())
}
