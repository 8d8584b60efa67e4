//! The audit log in PostgreSQL: its read side.
//!
//! `rollbot_audit` holds one row per entry: `seq`, the 32-byte `hash` and
//! the canonical JSON `body` (the same bytes sled keeps), plus `service`,
//! `actor` and `correlation` columns with an index each (the sled log's
//! `s`, `a` and `c` keys). `rollbot_audit_head` holds the last sequence
//! number and hash; appends lock it, so they are serialized by the
//! database (see `store::postgres_store`, which writes).

use super::chain::{decode_parts, ChainCheck};
use super::sled_store::keep;
use super::{AuditError, AuditStore, Entry, Query, RawVisit, VerifyReport, GENESIS_HASH};
use crate::store::postgres_store::{Conn, PgLink, PgRuntime};
use crate::store::StoreError;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Entries read per round trip by `verify` and `export`.
const PAGE: i64 = 20_000;

pub struct PgAuditStore {
    link: PgLink,
    reader: Arc<Conn>,
    /// The head as last seen by this process.
    len: Arc<AtomicU64>,
    _rt: Arc<PgRuntime>,
}

type Row = (u64, Vec<u8>, Vec<u8>);

fn err(e: StoreError) -> AuditError {
    AuditError::Store(e.to_string())
}

impl PgAuditStore {
    pub(crate) fn new(
        link: PgLink,
        reader: Arc<Conn>,
        len: Arc<AtomicU64>,
        rt: Arc<PgRuntime>,
    ) -> PgAuditStore {
        PgAuditStore {
            link,
            reader,
            len,
            _rt: rt,
        }
    }

    fn rows(&self, sql: &'static str, params: Vec<Param>) -> Result<Vec<Row>, AuditError> {
        let conn = self.reader.clone();
        self.link
            .block(Some(self.link.timeout), async move {
                conn.call("audit read", |c| async move {
                    let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                        params.iter().map(Param::as_sql).collect();
                    let rows = c.query(sql, &refs).await?;
                    Ok(rows
                        .into_iter()
                        .map(|r| (r.get::<_, i64>(0) as u64, r.get(1), r.get(2)))
                        .collect())
                })
                .await
            })
            .map_err(err)
    }

    /// Notes a head written elsewhere in this process.
    pub(crate) fn len_seen(&self, seq: u64) {
        self.len.fetch_max(seq, Ordering::AcqRel);
    }

    /// The head row: last sequence number and its hash.
    fn head(&self) -> Result<(u64, String), AuditError> {
        let conn = self.reader.clone();
        let head = self
            .link
            .block(Some(self.link.timeout), async move {
                conn.call("audit read", |c| async move {
                    let r = c
                        .query_one("SELECT seq, hash FROM rollbot_audit_head WHERE id = 1", &[])
                        .await?;
                    Ok((
                        r.get::<_, i64>(0) as u64,
                        hex::encode(r.get::<_, Vec<u8>>(1)),
                    ))
                })
                .await
            })
            .map_err(err)?;
        self.len.fetch_max(head.0, Ordering::AcqRel);
        Ok(head)
    }

    /// Entries `from..=to` in order, a page at a time on a connection of
    /// their own, the next page read while the caller works on this one.
    fn stream(&self, from: u64, to: u64, f: &mut dyn FnMut(Row) -> bool) -> Result<(), AuditError> {
        // A page may take longer than one call's limit on a slow link, and
        // the log must be read whole.
        let mut link = self.link.clone();
        link.timeout = Duration::from_secs(600);
        let conn = Conn::new(link.clone());
        let fetch = |lo: u64| {
            let (conn, link) = (conn.clone(), link.clone());
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            let hi = (lo as i64).saturating_add(PAGE - 1).min(to as i64);
            link.spawn(async move {
                let r = conn
                    .call("audit read", |c| async move {
                        let rows = c
                            .query(
                                "SELECT seq, hash, body FROM rollbot_audit \
                                 WHERE seq BETWEEN $1 AND $2 ORDER BY seq",
                                &[&(lo as i64), &hi],
                            )
                            .await?;
                        Ok(rows
                            .into_iter()
                            .map(|r| (r.get::<_, i64>(0) as u64, r.get(1), r.get(2)))
                            .collect::<Vec<Row>>())
                    })
                    .await;
                let _ = tx.send(r);
            });
            (rx, hi as u64)
        };
        if from > to {
            return Ok(());
        }
        let (mut pending, mut hi) = fetch(from);
        loop {
            let page = pending
                .recv()
                .map_err(|_| AuditError::Store("rollbot's store is closed".into()))?
                .map_err(err)?;
            let done = hi >= to;
            if !done {
                (pending, hi) = fetch(hi + 1);
            }
            for row in page {
                if !f(row) {
                    return Ok(());
                }
            }
            if done {
                return Ok(());
            }
        }
    }

    fn verify_from(&self, start: u64, prev: String) -> Result<VerifyReport, AuditError> {
        let (head, head_hash) = self.head()?;
        let mut check = ChainCheck::new(start, prev);
        let mut bad = None;
        self.stream(
            start,
            head,
            &mut |(seq, hash, body)| match check.next(seq, &hash, &body) {
                Ok(()) => true,
                Err(b) => {
                    bad = Some(b);
                    false
                }
            },
        )?;
        let checked = check.checked();
        if bad.is_none() {
            let last = start + checked - 1;
            if last < head {
                bad = Some((last + 1, format!(
                    "missing: the log ends at #{last} but #{head} was written (entries deleted from the end)"
                )));
            } else if head > 0 && check.last_hash() != head_hash {
                bad = Some((
                    head,
                    "it differs from the entry the log's head names (the log was rewritten)".into(),
                ));
            }
        }
        Ok(VerifyReport {
            checked,
            first_bad: bad,
        })
    }
}

/// A query parameter that owns its value.
enum Param {
    Int(i64),
    Text(String),
}

impl Param {
    fn as_sql(&self) -> &(dyn tokio_postgres::types::ToSql + Sync) {
        match self {
            Param::Int(i) => i,
            Param::Text(t) => t,
        }
    }
}

impl AuditStore for PgAuditStore {
    fn get(&self, seq: u64) -> Result<Option<Entry>, AuditError> {
        let rows = self.rows(
            "SELECT seq, hash, body FROM rollbot_audit WHERE seq = $1",
            vec![Param::Int(seq as i64)],
        )?;
        rows.into_iter()
            .next()
            .map(|(seq, hash, body)| decode_parts(seq, &hash, &body))
            .transpose()
    }

    /// Newest first, with the filters of the sled log (`keep`): the
    /// equality filters are also given to the database, so it reads only
    /// matching rows through their index.
    fn query(&self, q: &Query) -> Result<Vec<Entry>, AuditError> {
        let mut out = Vec::new();
        let page: i64 = if q.limit > 0 && q.since.is_none() {
            q.limit as i64
        } else {
            500
        };
        let mut before = i64::MAX;
        loop {
            let params = vec![
                Param::Int(before),
                Param::Text(q.service.clone().unwrap_or_default()),
                Param::Text(q.actor.clone().unwrap_or_default()),
                Param::Text(q.correlation_id.clone().unwrap_or_default()),
                Param::Int(page),
            ];
            let sql = match (&q.service, &q.actor, &q.correlation_id) {
                (_, _, Some(_)) => "SELECT seq, hash, body FROM rollbot_audit WHERE seq < $1 AND correlation = $4 \
                     AND ($2 = '' OR service = $2) AND ($3 = '' OR actor = $3) ORDER BY seq DESC LIMIT $5",
                (Some(_), _, None) => "SELECT seq, hash, body FROM rollbot_audit WHERE seq < $1 AND service = $2 \
                     AND ($3 = '' OR actor = $3) AND $4 = '' ORDER BY seq DESC LIMIT $5",
                (None, Some(_), None) => "SELECT seq, hash, body FROM rollbot_audit WHERE seq < $1 AND actor = $3 \
                     AND $2 = '' AND $4 = '' ORDER BY seq DESC LIMIT $5",
                (None, None, None) => "SELECT seq, hash, body FROM rollbot_audit WHERE seq < $1 \
                     AND $2 = '' AND $3 = '' AND $4 = '' ORDER BY seq DESC LIMIT $5",
            };
            let rows = self.rows(sql, params)?;
            let n = rows.len() as i64;
            for (seq, hash, body) in rows {
                before = seq as i64;
                let e = decode_parts(seq, &hash, &body)?;
                if !keep(&e, q, &mut out)? {
                    return Ok(out);
                }
            }
            if n < page {
                return Ok(out);
            }
        }
    }

    fn for_each(&self, f: &mut dyn FnMut(Entry) -> bool) -> Result<(), AuditError> {
        let (head, _) = self.head()?;
        let mut failed = None;
        self.stream(
            1,
            head,
            &mut |(seq, hash, body)| match decode_parts(seq, &hash, &body) {
                Ok(e) => f(e),
                Err(e) => {
                    failed = Some(e);
                    false
                }
            },
        )?;
        failed.map_or(Ok(()), Err)
    }

    fn for_each_raw(&self, f: &mut RawVisit) -> Result<(), AuditError> {
        let (head, _) = self.head()?;
        self.stream(1, head, &mut |(seq, hash, body)| f(seq, &hash, &body))
    }

    fn verify(&self) -> Result<VerifyReport, AuditError> {
        self.verify_from(1, GENESIS_HASH.to_string())
    }

    fn verify_tail(&self, n: u64) -> Result<VerifyReport, AuditError> {
        let (head, _) = self.head()?;
        if head <= n {
            return self.verify();
        }
        let from = head - n + 1;
        // The first checked entry's link backwards is taken on trust.
        match self.get(from) {
            Ok(Some(e)) => self.verify_from(from, e.prev_hash),
            Ok(None) => Ok(VerifyReport {
                checked: 0,
                first_bad: Some((
                    from,
                    "missing: an entry before the head is gone (entries deleted)".into(),
                )),
            }),
            Err(AuditError::Corrupt(_, e)) => Ok(VerifyReport {
                checked: 0,
                first_bad: Some((from, format!("its contents are not a readable entry ({e})"))),
            }),
            Err(e) => Err(e),
        }
    }

    fn len(&self) -> u64 {
        self.len.load(Ordering::Acquire)
    }
}
