//! `rollbot serve`: the chat adapters, the engine and controller, and the
//! HTTP server, until SIGTERM.

use super::load;
use rollbot::chat::discord::Discord;
use rollbot::chat::slack::Slack;
use rollbot::chat::ChatSink;
use rollbot::server::Adapters;
use rollbot::telemetry::Telemetry;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(clap::Args)]
pub struct ServeArgs {
    #[arg(long, short, default_value = "rollbot.toml")]
    config: PathBuf,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let c = load(&args.config)?;
    for w in c.warnings() {
        tracing::warn!("{w}");
    }
    let listen = c.server.listen.clone();
    let store = c.store.path.clone();
    let telemetry = Arc::new(Telemetry::new());
    // Both adapters read their secrets before the store opens, so a bad
    // one stops rollbot at once.
    let slack = Slack::from_config(&c)?;
    let discord = Discord::from_config(&c, telemetry.clone())?;
    // Every message is also logged (target rollbot::chat).
    let mut sinks: Vec<Arc<dyn ChatSink>> = vec![Arc::new(rollbot::chat::log::LogSink::default())];
    sinks.extend(slack.iter().map(|s| s.sink()));
    sinks.extend(discord.iter().map(|d| d.sink()));
    let rt = rollbot::runtime::start_with(
        c,
        &store,
        sinks,
        Arc::new(rollbot::clock::SystemClock),
        telemetry,
    )
    .await?;
    let mut adapters = Adapters::default();
    if let Some(s) = slack {
        s.start(rt.engine.clone(), &mut adapters).await?;
    }
    match discord {
        Some(d) => d.start(rt.engine.clone(), &mut adapters),
        None => adapters
            .routes
            .push(rollbot::chat::discord::interactions::not_configured()),
    }
    rollbot::server::serve(rt.engine, rt.controller, &listen, adapters).await?;
    Ok(ExitCode::SUCCESS)
}
