//! `rollbot demo`: the whole loop on embedded defaults.

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Read commands from this file instead of the terminal, then exit.
    #[arg(long)]
    script: Option<PathBuf>,
    /// Keep the state (audit log, freezes, prompts) in this directory,
    /// and continue from what a previous run left there.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Simulated seconds per real second in interactive mode.
    #[arg(long, default_value_t = 10.0)]
    speed: f64,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    rollbot::demo::run(rollbot::demo::DemoOptions {
        script: args.script,
        data: args.data,
        speed: args.speed,
    })
    .await?;
    Ok(ExitCode::SUCCESS)
}
