//! The `rollbot` command line: one [`Args`], and one function per
//! subcommand in a file per group. `main.rs` sets the process up, parses
//! and calls [`run`].

/// `print!` that returns an error instead of panicking when standard
/// output is closed (`rollbot audit export | head`); `main` then ends quietly.
macro_rules! out {
    ($($arg:tt)*) => {
        std::io::Write::write_fmt(&mut std::io::stdout().lock(), format_args!($($arg)*))?
    };
}

/// `println!` the same way.
macro_rules! outln {
    ($($arg:tt)*) => {{
        out!($($arg)*);
        out!("\n");
    }};
}

mod audit;
mod bench;
mod check_config;
mod commands;
mod demo;
mod postmortem;
mod replay;
mod report;
mod serve;
mod store;

use clap::{Parser, Subcommand};
use rollbot::config_file::Config;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "rollbot",
    version,
    about = "ChatOps for progressive delivery: judges canaries, asks humans when in doubt, rolls back when sure, audits everything."
)]
pub struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the server: HTTP endpoints, chat adapters, controller.
    Serve(serve::ServeArgs),
    /// Check a configuration file and report every problem with its line.
    CheckConfig(check_config::CheckConfigArgs),
    /// Run the whole loop on embedded defaults: console chat, simulated
    /// backend and metrics. Each run starts from a fresh state in a
    /// temporary directory unless --data is given.
    Demo(demo::DemoArgs),
    /// Read, export and verify the audit log.
    Audit(audit::AuditArgs),
    /// Rollback KPIs per service (rollback time, success, time to detect
    /// and to resolve) next to the runbook's targets, from the audit log.
    Report(report::ReportArgs),
    /// A Markdown postmortem draft for a rollout, from the audit log.
    Postmortem(postmortem::PostmortemArgs),
    /// Judge a recorded rollout tick by tick (JSON Lines), to backtest a policy.
    Replay(replay::ReplayArgs),
    /// Print chat-platform registrations generated from the command definitions.
    Commands(commands::CommandsArgs),
    /// Benchmarks that print a table.
    Bench(bench::BenchArgs),
    /// Move state between stores (sled to PostgreSQL).
    Store(store::StoreArgs),
}

impl Args {
    /// Whether this run is the server (it logs every audit entry).
    pub fn serves(&self) -> bool {
        matches!(self.command, Cmd::Serve(_))
    }
}

/// Runs the subcommand. An error ends the process with status 2 (a
/// closed standard output ends it quietly).
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Cmd::Serve(a) => serve::run(a).await,
        Cmd::CheckConfig(a) => check_config::run(a).await,
        Cmd::Demo(a) => demo::run(a).await,
        Cmd::Audit(a) => audit::run(a),
        Cmd::Report(a) => report::run(a),
        Cmd::Postmortem(a) => postmortem::run(a).await,
        Cmd::Replay(a) => replay::run(a).await,
        Cmd::Commands(a) => commands::run(a).await,
        Cmd::Bench(a) => bench::run(a).await,
        Cmd::Store(a) => store::run(a).await,
    }
}

/// The configuration a command needs, or why rollbot did not start.
fn load(path: &Path) -> anyhow::Result<Config> {
    Config::load(path).map_err(|e| {
        anyhow::anyhow!("{e}\nrollbot did not start; fix the configuration and try again")
    })
}

/// The store a reading tool opens, and where it is (for messages): `--data
/// DIR` (sled), else the config's `[store]`: PostgreSQL, or sled at its
/// path, read through a copy while `serve` holds it or the disk is full.
fn open_for_reading(
    data: Option<PathBuf>,
    config: Option<PathBuf>,
) -> anyhow::Result<(rollbot::store::Store, Option<tempfile::TempDir>, PathBuf)> {
    if let (None, Some(c)) = (&data, &config) {
        let cfg = load(c)?;
        if cfg.store.kind == rollbot::config_file::StoreKind::Postgres {
            let store = rollbot::store::Store::open_config(&cfg.store, &cfg.store.path)?;
            return Ok((store, None, c.clone()));
        }
    }
    let dir = store_dir(data, config)?;
    let (store, copy) = rollbot::store::open::open_for_reading(&dir)?;
    Ok((store, copy, dir))
}

/// The store directory from --data, or a config's [store] path.
fn store_dir(data: Option<PathBuf>, config: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let dir = match (data, config) {
        (Some(d), _) => d,
        (None, Some(c)) => load(&c)?.store.path,
        (None, None) => PathBuf::from("./rollbot-data"),
    };
    if !dir.exists() {
        anyhow::bail!(
            "no store at {}; pass --data DIR or --config FILE",
            dir.display()
        );
    }
    Ok(dir)
}
