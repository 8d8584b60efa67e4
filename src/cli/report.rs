//! `rollbot report [--since 30d] [--format text|json]`: the rollback KPIs
//! per service from the audit log, next to the runbook's targets, read
//! from a copy when the disk is full or `serve` holds the store.

use super::open_for_reading;
use rollbot::audit::{kpi, AuditStore, Query};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct ReportArgs {
    /// The window, back from now (30m, 24h, 7d).
    #[arg(long, default_value = "30d")]
    since: String,
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// The config whose store to open (its [store] path).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Or the store directory itself.
    #[arg(long)]
    data: Option<PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Text,
    Json,
}

pub fn run(args: ReportArgs) -> anyhow::Result<ExitCode> {
    // Bad input is said before the store is touched.
    let window =
        rollbot::config::parse_duration(&args.since).map_err(|e| anyhow::anyhow!("--since {e}"))?;
    let until = chrono::Utc::now();
    let since = until - chrono::Duration::from_std(window)?;
    let (db, _copy, dir) = open_for_reading(args.data, args.config)?;
    let report = rollbot::store::open::no_panic(&dir, || read(db.audit(), since, until))??;
    match args.format {
        Format::Text => out!("{}", kpi::render_text(&report)),
        Format::Json => outln!("{}", serde_json::to_string_pretty(&report)?),
    }
    Ok(ExitCode::SUCCESS)
}

fn read(
    store: &dyn AuditStore,
    since: chrono::DateTime<chrono::Utc>,
    until: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<kpi::Report> {
    let entries = store.query(&Query {
        since: Some(since),
        limit: 0,
        ..Default::default()
    })?;
    // Entries dated after now (a demo's simulated clock runs ahead) count.
    let newest = entries.first().map(|e| e.record.time);
    let until = newest.map_or(until, |n| n.max(until));
    Ok(kpi::compute(
        &entries,
        since,
        until,
        kpi::Targets::default(),
    ))
}
