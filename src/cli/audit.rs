//! `rollbot audit list|export|verify`: reads the audit log, from a copy
//! when the disk is full or `serve` holds the store.

use super::open_for_reading;
use rollbot::audit::{export, AuditStore, Query};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    command: AuditCmd,
    /// The config whose store to open (its [store] path).
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// Or the store directory itself.
    #[arg(long, global = true)]
    data: Option<PathBuf>,
}

#[derive(clap::Subcommand)]
enum AuditCmd {
    /// Entries, newest first.
    List {
        #[arg(long)]
        service: Option<String>,
        /// Platform-qualified actor ID, such as slack:U0123ABCD.
        #[arg(long)]
        actor: Option<String>,
        /// Only entries newer than this (30m, 24h, 7d).
        #[arg(long)]
        since: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Every entry, oldest first, to standard output.
    Export {
        #[arg(long, value_enum, default_value = "jsonl")]
        format: export::Format,
    },
    /// Check the hash chain; exit status 1 names the first bad entry.
    Verify,
}

pub fn run(args: AuditArgs) -> anyhow::Result<ExitCode> {
    // Reading tools work on a full disk too: they read a copy.
    let (db, _copy, dir) = open_for_reading(args.data, args.config)?;
    rollbot::store::open::no_panic(&dir, || read(args.command, db.audit()))?
}

fn read(cmd: AuditCmd, store: &dyn AuditStore) -> anyhow::Result<ExitCode> {
    match cmd {
        AuditCmd::List {
            service,
            actor,
            since,
            limit,
        } => {
            let since = match since {
                Some(s) => {
                    let d = rollbot::config::parse_duration(&s).map_err(anyhow::Error::msg)?;
                    Some(chrono::Utc::now() - chrono::Duration::from_std(d)?)
                }
                None => None,
            };
            let entries = store.query(&Query {
                service,
                actor,
                since,
                correlation_id: None,
                limit,
            })?;
            for e in &entries {
                outln!("{}", rollbot::engine::audit_line(e));
            }
            if entries.is_empty() {
                eprintln!("no matching entries");
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCmd::Export { format } => {
            let mut out = std::io::stdout().lock();
            let n = export::export(store, format, &mut out)?;
            eprintln!("exported {n} entries");
            Ok(ExitCode::SUCCESS)
        }
        AuditCmd::Verify => {
            let report = store.verify()?;
            outln!("{report}");
            Ok(if report.first_bad.is_none() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}
