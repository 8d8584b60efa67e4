//! Opening the store in the database: at start, or later when the
//! database could not be reached then (`serve`).

use super::{PgLink, SCHEMA};
use crate::audit::postgres_store::PgAuditStore;
use crate::store::StoreError;
use std::time::Duration;

/// Connects, creates rollbot's tables when missing, and reads the log's
/// head: what opening the store needs from the database.
pub(super) async fn set_up(l: &PgLink, create_schema: Option<String>) -> Result<u64, StoreError> {
    let c = l.connect().await?;
    if let Some(sql) = create_schema {
        c.batch_execute(&sql).await.map_err(|e| l.down(&e))?;
    }
    c.batch_execute(SCHEMA).await.map_err(|e| l.down(&e))?;
    let row = c
        .query_one("SELECT seq FROM rollbot_audit_head WHERE id = 1", &[])
        .await
        .map_err(|e| l.down(&e))?;
    Ok(row.get::<_, i64>(0) as u64)
}

/// Longest pause between two attempts to reach a database that was not
/// there at start-up.
const SET_UP_BACKOFF_MAX: Duration = Duration::from_secs(15);

/// Sets the store up once the database answers, trying again after 0.5 s,
/// 1 s, 2 s, … at most [`SET_UP_BACKOFF_MAX`] apart. The probe clears the
/// outage when the log's head can be read.
pub(super) async fn set_up_later(link: PgLink, audit: std::sync::Weak<PgAuditStore>) {
    let mut pause = Duration::from_millis(500);
    loop {
        tokio::time::sleep(pause).await;
        let Some(log) = audit.upgrade() else { return };
        match tokio::time::timeout(link.timeout, set_up(&link, None)).await {
            Ok(Ok(head)) => {
                log.len_seen(head);
                tracing::info!(database = %link.target, "PostgreSQL answers; rollbot's store is set up");
                return;
            }
            Ok(Err(e)) => {
                tracing::warn!(database = %link.target, error = %e, retry_in_ms = pause.as_millis() as u64, "PostgreSQL still cannot be reached")
            }
            Err(_) => {
                tracing::warn!(database = %link.target, "setting up the store in PostgreSQL timed out")
            }
        }
        pause = (pause * 2).min(SET_UP_BACKOFF_MAX);
    }
}
