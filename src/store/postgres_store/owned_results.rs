//! What a leadership that moved on may still commit to the shared store.

use super::super::{Table, Tx, Write};
use tokio_postgres::Statement;

/// The one write an older leadership may still make: the result of an
/// action it started. A replica that handed the Lease over as it stopped
/// keeps verifying the actions it had already sent; their results must
/// land, while that leadership must not start anything. So a commit from
/// an older epoch passes only when it ends in-flight records that are
/// still there and name that epoch as their owner, its entries belong to
/// those actions, and it starts nothing (no `requested` entry, no new
/// in-flight record). Once the successor has closed a record (reported it
/// interrupted after waiting), the record is gone and a late result is
/// refused, so an action never gets two results. Sends to backends stay
/// fenced on the replica itself (`Leadership::may_write`).
pub(super) async fn closes_its_own(
    t: &tokio_postgres::Transaction<'_>,
    get: &Statement,
    tx: &Tx,
) -> Result<bool, tokio_postgres::Error> {
    #[derive(serde::Deserialize)]
    struct Owned {
        owner: Option<crate::fence::Owner>,
    }
    let Some(epoch) = tx.epoch else {
        return Ok(false);
    };
    let mut ends = Vec::new();
    for wr in &tx.writes {
        match wr {
            Write::Remove {
                table: Table::Inflight,
                key,
            } => ends.push(key.as_str()),
            Write::Put {
                table: Table::Inflight,
                ..
            } => return Ok(false),
            _ => {}
        }
    }
    let starts = tx
        .records
        .iter()
        .any(|r| r.outcome == crate::audit::Outcome::Requested);
    let foreign = tx
        .records
        .iter()
        .any(|r| !ends.contains(&r.correlation_id.as_str()));
    if ends.is_empty() || starts || foreign {
        return Ok(false);
    }
    for key in ends {
        let row = t.query_opt(get, &[&Table::Inflight.name(), &key]).await?;
        let owner = row
            .and_then(|r| serde_json::from_slice::<Owned>(&r.get::<_, Vec<u8>>(0)).ok())
            .and_then(|o| o.owner);
        if owner.is_none_or(|o| o.epoch != epoch) {
            return Ok(false);
        }
    }
    Ok(true)
}
