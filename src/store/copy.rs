//! `rollbot store copy`: moves a sled store into an empty PostgreSQL
//! database, every table and the audit log with its stored bytes (so every
//! hash stays what it was), then checks the copy against the source.

use super::postgres_store::{PgStore, RawEntry};
use super::{StateStore, Table};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// What was copied.
#[derive(Debug)]
pub struct CopyReport {
    pub entries: u64,
    pub records: u64,
    /// The hash of the last entry, the same in both stores.
    pub head: String,
}

/// Entries sent to the database per insert.
const CHUNK: usize = 5000;

pub async fn sled_to_postgres(
    from: &Path,
    url: &str,
    timeout: Duration,
) -> anyhow::Result<CopyReport> {
    if !from.exists() {
        anyhow::bail!(
            "no sled store at {}; name the directory of [store] path",
            from.display()
        );
    }
    let (src, _copy) = super::open::open_for_reading(from)?;
    let audit = src.audit_handle();
    let checked = tokio::task::spawn_blocking(move || audit.verify()).await??;
    if let Some((seq, what)) = &checked.first_bad {
        anyhow::bail!(
            "the audit log at {} does not verify (entry #{seq}: {what}); nothing was copied. Restore the store from a backup first",
            from.display()
        );
    }
    let dst = tokio::task::spawn_blocking({
        let url = url.to_string();
        move || PgStore::open(&url, timeout)
    })
    .await??;
    let dst = Arc::new(dst);
    let d = dst.clone();
    let (entries, records) = tokio::task::spawn_blocking(move || d.contents()).await??;
    if entries + records > 0 {
        anyhow::bail!(
            "the PostgreSQL database already holds rollbot state ({entries} audit entries, {records} records); `rollbot store copy` only fills an empty database, so nothing was copied. Point --to at a new database, or drop the tables rollbot_audit, rollbot_audit_head and rollbot_kv if that state is not needed"
        );
    }

    let mut kv = Vec::new();
    for t in Table::ALL {
        let mut after = None;
        loop {
            let page = src.scan_page(t, "", after.clone(), 1000).await?;
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            kv.extend(page.into_iter().map(|(k, v)| (t, k, v)));
        }
    }
    let records = kv.len() as u64;

    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<RawEntry>>(4);
    let audit = src.audit_handle();
    let reader = tokio::task::spawn_blocking(move || {
        let mut chunk = Vec::with_capacity(CHUNK);
        let mut sent = true;
        audit.for_each_raw(&mut |seq, hash, body| {
            chunk.push((seq, hash.to_vec(), body.to_vec()));
            if chunk.len() == CHUNK {
                sent = tx.blocking_send(std::mem::take(&mut chunk)).is_ok();
            }
            sent
        })?;
        if sent && !chunk.is_empty() {
            let _ = tx.blocking_send(chunk);
        }
        anyhow::Ok(())
    });
    let imported = dst.import(rx, kv).await;
    reader.await??;
    imported.map_err(|e| anyhow::anyhow!("the copy was not made (nothing was written): {e}"))?;

    // The copy must verify on its own and end where the source ends.
    let (src_audit, dst_audit) = (src.audit_handle(), dst.audit());
    let (copied, src_head, dst_head) = tokio::task::spawn_blocking(move || {
        let report = dst_audit.verify()?;
        let n = report.checked;
        let head = |a: &dyn crate::audit::AuditStore| -> anyhow::Result<String> {
            Ok(if n == 0 {
                crate::audit::GENESIS_HASH.to_string()
            } else {
                a.get(n)?.map(|e| e.hash).unwrap_or_default()
            })
        };
        anyhow::ensure!(
            report.first_bad.is_none(),
            "the copy in PostgreSQL does not verify: {report}"
        );
        Ok((n, head(src_audit.as_ref())?, head(dst_audit.as_ref())?))
    })
    .await??;
    anyhow::ensure!(
        copied == checked.checked && src_head == dst_head,
        "the copy ends at #{copied} ({dst_head}) but the source at #{} ({src_head})",
        checked.checked
    );
    let d = dst.clone();
    let (_, copied_records) = tokio::task::spawn_blocking(move || d.contents()).await??;
    anyhow::ensure!(
        copied_records == records,
        "the copy holds {copied_records} records but the source {records}"
    );
    Ok(CopyReport {
        entries: copied,
        records,
        head: dst_head,
    })
}
