//! `rollbot audit export`: the whole log as JSON Lines or CSV, in sequence
//! order, with hashes so a copy can be checked elsewhere.

use super::{AuditError, AuditStore, Entry};
use std::io::Write;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Jsonl,
    Csv,
}

pub const CSV_HEADER: [&str; 15] = [
    "seq",
    "time",
    "actor_platform",
    "actor_id",
    "actor_name",
    "action",
    "service",
    "parameters",
    "outcome",
    "reason",
    "detail",
    "correlation_id",
    "idempotency_key",
    "prev_hash",
    "hash",
];

fn csv_row(e: &Entry) -> [String; 15] {
    let r = &e.record;
    [
        e.seq.to_string(),
        r.time.to_rfc3339(),
        r.actor.platform.prefix().to_string(),
        r.actor.id.clone(),
        r.actor.display_name.clone(),
        r.action.clone(),
        r.service.clone().unwrap_or_default(),
        serde_json::to_string(&r.parameters).unwrap_or_default(),
        r.outcome.name().to_string(),
        r.reason.clone(),
        r.detail.clone(),
        r.correlation_id.clone(),
        r.idempotency_key.clone().unwrap_or_default(),
        e.prev_hash.clone(),
        e.hash.clone(),
    ]
}

/// Writes every entry; returns how many were written.
pub fn export(store: &dyn AuditStore, format: Format, out: &mut dyn Write) -> anyhow::Result<u64> {
    let mut n = 0u64;
    let mut io_err: Option<std::io::Error> = None;
    match format {
        Format::Jsonl => {
            store.for_each(&mut |e| {
                let line = serde_json::to_string(&e).expect("entries serialize");
                if let Err(err) = writeln!(out, "{line}") {
                    io_err = Some(err);
                    return false;
                }
                n += 1;
                true
            })?;
        }
        Format::Csv => {
            let mut w = csv::Writer::from_writer(&mut *out);
            w.write_record(CSV_HEADER).map_err(std::io::Error::from)?;
            let mut csv_err: Option<csv::Error> = None;
            store.for_each(&mut |e| match w.write_record(csv_row(&e)) {
                Ok(()) => {
                    n += 1;
                    true
                }
                Err(err) => {
                    csv_err = Some(err);
                    false
                }
            })?;
            // As an io::Error, so a closed pipe is recognised as one.
            if let Some(e) = csv_err {
                return Err(std::io::Error::from(e).into());
            }
            w.flush()?;
        }
    }
    if let Some(e) = io_err {
        return Err(e.into());
    }
    Ok(n)
}

impl From<AuditError> for std::io::Error {
    fn from(e: AuditError) -> Self {
        std::io::Error::other(e.to_string())
    }
}
