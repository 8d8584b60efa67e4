//! `rollbot store copy`: moves state from one store to another.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
pub struct StoreArgs {
    #[command(subcommand)]
    command: StoreCmd,
}

#[derive(clap::Subcommand)]
enum StoreCmd {
    /// Copy a sled store into an empty PostgreSQL database: every table
    /// and the audit log with its hash chain, verified after the copy.
    /// Stop `rollbot serve` first, so nothing is written meanwhile.
    Copy {
        /// sled:PATH, the directory of [store] path.
        #[arg(long)]
        from: String,
        /// postgres:URL, or postgres:${VAR} to read the URL from the
        /// environment variable VAR (a URL on the command line shows in
        /// the process list).
        #[arg(long)]
        to: String,
        /// Longest one database call may take.
        #[arg(long, default_value = "30s")]
        timeout: String,
    },
}

pub async fn run(args: StoreArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        StoreCmd::Copy { from, to, timeout } => {
            let Some(path) = from.strip_prefix("sled:") else {
                anyhow::bail!("--from {from}: write sled:PATH, the directory of the sled store");
            };
            let url = target_url(&to)?;
            let timeout: Duration = rollbot::config::parse_duration(&timeout)
                .map_err(|e| anyhow::anyhow!("--timeout {e}"))?;
            let r =
                rollbot::store::copy::sled_to_postgres(&PathBuf::from(path), &url, timeout).await?;
            outln!(
                "copied {} audit entries (chain verified, last hash {}) and {} records from {path} to PostgreSQL",
                r.entries,
                r.head,
                r.records
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The URL of `--to postgres:URL` or `postgres:${VAR}`.
fn target_url(to: &str) -> anyhow::Result<String> {
    let Some(rest) = to.strip_prefix("postgres:") else {
        anyhow::bail!("--to: write postgres:URL (such as postgres:postgres://rollbot@db:5432/rollbot) or postgres:${{VAR}}");
    };
    match rest.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
        Some(var) => std::env::var(var)
            .ok()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| anyhow::anyhow!("--to: environment variable {var} is not set or empty")),
        None => Ok(rest.to_string()),
    }
}
