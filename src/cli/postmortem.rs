//! `rollbot postmortem ROLLOUT`: a Markdown draft from the stored rollout
//! and its audit entries.

use super::open_for_reading;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct PostmortemArgs {
    /// The rollout id (from GET /api/v1/rollouts or the summary message).
    rollout: String,
    /// The config whose store to read (its [store] path).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Or the store directory itself.
    #[arg(long)]
    data: Option<PathBuf>,
}

pub async fn run(args: PostmortemArgs) -> anyhow::Result<ExitCode> {
    // Like the audit tools, it reads a copy while serve holds the store.
    let (store, _copy, _) = open_for_reading(args.data, args.config)?;
    out!(
        "{}",
        rollbot::controller::postmortem::write(&store, &args.rollout).await?
    );
    Ok(ExitCode::SUCCESS)
}
