//! rollbot's state in PostgreSQL, for replicas that share it
//! (`[store] kind = "postgres"`).
//!
//! The same rules as the embedded store, kept by the database:
//!
//! - **One writer per process, serialized by the database.** Commits go to
//!   one task that applies a group of them in one transaction (group
//!   commit). Each transaction first locks the audit log's head row, so
//!   every writing transaction of every replica runs one after the other:
//!   an `Expect` read after the lock sees every earlier commit, which makes
//!   a compare-and-swap hold across processes, and the entry it appends
//!   links to the head it locked. Entries, index columns, the head and the
//!   key writes land in that transaction or not at all.
//! - **Reads never queue behind the writer**: they use their own
//!   connection, and long reads (`verify`, `export`) a connection of their
//!   own each.
//! - **Bounded calls, and a database that goes away is said.** Every call
//!   has a time limit; a connection that broke is replaced on the next call
//!   (reconnect), and a probe every second reports the database down in
//!   `/readyz` until it answers again.
//!
//! All database I/O runs on a small runtime of its own, so the store's
//! blocking read calls (`StateStore::get`, `AuditStore::verify`) can wait
//! for it from any thread, including a single-threaded test runtime.

use super::busy::WriterBusy;
use super::{Committed, StateStore, StoreError, Table, Tx, Write};
use crate::audit::chain::seal;
use crate::audit::postgres_store::PgAuditStore;
use crate::audit::{AuditStore, Entry};
use async_trait::async_trait;
use std::future::Future;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::{Client, Statement};

mod owned_results;
mod scratch;
mod set_up;

use owned_results::closes_its_own;
pub use scratch::{open_scratch, Scratch};
use set_up::{set_up, set_up_later};

/// Commits applied in one transaction, at most.
const GROUP: usize = 512;

/// Tables, indexes and the head row, created when missing. Keys compare
/// as bytes (`COLLATE "C"`), as in sled; values and audit bodies are
/// stored as the exact bytes written, because `Expect` and the hash chain
/// compare bytes.
const SCHEMA: &str = r#"
BEGIN;
SELECT pg_advisory_xact_lock(72746917);
CREATE TABLE IF NOT EXISTS rollbot_kv (
    tbl text NOT NULL,
    key text COLLATE "C" NOT NULL,
    value bytea NOT NULL,
    PRIMARY KEY (tbl, key)
);
CREATE TABLE IF NOT EXISTS rollbot_audit (
    seq bigint PRIMARY KEY,
    hash bytea NOT NULL,
    body bytea NOT NULL,
    service text,
    actor text NOT NULL,
    correlation text NOT NULL
);
CREATE INDEX IF NOT EXISTS rollbot_audit_by_service ON rollbot_audit (service, seq);
CREATE INDEX IF NOT EXISTS rollbot_audit_by_actor ON rollbot_audit (actor, seq);
CREATE INDEX IF NOT EXISTS rollbot_audit_by_correlation ON rollbot_audit (correlation, seq);
CREATE TABLE IF NOT EXISTS rollbot_audit_head (
    id int PRIMARY KEY CHECK (id = 1),
    seq bigint NOT NULL,
    hash bytea NOT NULL
);
INSERT INTO rollbot_audit_head VALUES (1, 0, '\x0000000000000000000000000000000000000000000000000000000000000000')
    ON CONFLICT DO NOTHING;
-- The newest leadership epoch (the Lease's leaseTransitions) that wrote.
ALTER TABLE rollbot_audit_head ADD COLUMN IF NOT EXISTS epoch bigint NOT NULL DEFAULT 0;
COMMIT;
"#;

/// The runtime all database I/O runs on; shut down when the last store
/// handle using it is gone.
pub(crate) struct PgRuntime(Mutex<Option<tokio::runtime::Runtime>>);

impl Drop for PgRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.lock().unwrap().take() {
            // Never blocks, so it is safe from async code too.
            rt.shutdown_background();
        }
    }
}

/// How to reach the database, and where to run calls to it. Never holds
/// the runtime itself, so tasks on it can hold this.
#[derive(Clone)]
pub(crate) struct PgLink {
    handle: tokio::runtime::Handle,
    config: Arc<tokio_postgres::Config>,
    /// What `sslmode` and `sslrootcert` in the URL ask for.
    tls: super::postgres_tls::PgTls,
    /// `host:port/database`, for messages: never the password.
    pub target: Arc<str>,
    /// Longest one call may take.
    pub timeout: Duration,
}

impl PgLink {
    /// Parses the URL (its text is never repeated in a message).
    fn new(
        url: &str,
        timeout: Duration,
        handle: tokio::runtime::Handle,
        schema: Option<&str>,
    ) -> anyhow::Result<PgLink> {
        let (url, tls) = super::postgres_tls::PgTls::from_url(url).map_err(anyhow::Error::msg)?;
        let mut config = tokio_postgres::Config::from_str(&url).map_err(|_| {
            anyhow::anyhow!(
                "[store] url is not a PostgreSQL connection URL; write it as postgres://USER:PASSWORD@HOST:5432/DATABASE (key=value form works too)"
            )
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(timeout.min(Duration::from_secs(5)));
        }
        config.application_name("rollbot");
        config.ssl_mode(tls.ssl_mode());
        if let Some(s) = schema {
            config.options(format!("-c search_path={s}"));
        }
        let hosts: Vec<String> = config
            .get_hosts()
            .iter()
            .map(|h| match h {
                tokio_postgres::config::Host::Tcp(h) => h.clone(),
                tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
            })
            .collect();
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let target = format!(
            "{}:{port}/{}",
            if hosts.is_empty() {
                "localhost".to_string()
            } else {
                hosts.join(",")
            },
            config.get_dbname().unwrap_or("")
        );
        Ok(PgLink {
            handle,
            config: Arc::new(config),
            tls,
            target: target.into(),
            timeout,
        })
    }

    /// A new connection, driven on the store's runtime.
    pub(crate) async fn connect(&self) -> Result<Client, StoreError> {
        let (client, connection) = self
            .config
            .connect(self.tls.connector())
            .await
            .map_err(|e| self.refused(&e))?;
        let target = self.target.clone();
        self.handle.spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(target: "rollbot::store", database = %target, error = %e, "PostgreSQL connection ended");
            }
        });
        Ok(client)
    }

    /// The error for a connection that failed: what to fix when TLS was
    /// the problem.
    fn refused(&self, e: &tokio_postgres::Error) -> StoreError {
        self.tls
            .refused(&self.target, e)
            .unwrap_or_else(|| self.down(e))
    }

    /// The error for a call the database did not serve.
    pub(crate) fn down(&self, e: &tokio_postgres::Error) -> StoreError {
        let why = match e.as_db_error() {
            Some(db) => format!("{} ({})", db.message(), db.code().code()),
            None => e.to_string(),
        };
        StoreError::Failed(format!(
            "PostgreSQL at {} failed: {why}; rollbot reconnects by itself when it answers",
            self.target
        ))
    }

    fn stalled(&self, op: &'static str) -> StoreError {
        StoreError::Stalled {
            op,
            after: self.timeout,
        }
    }

    /// Runs `fut` on the store's runtime without waiting for it.
    pub(crate) fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        self.handle.spawn(fut);
    }

    /// Runs `fut` on the store's runtime and waits for it from a thread
    /// that may block.
    pub(crate) fn block<T: Send + 'static>(
        &self,
        wait: Option<Duration>,
        fut: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let _ = tx.send(fut.await);
        });
        match wait {
            Some(w) => match rx.recv_timeout(w + Duration::from_millis(500)) {
                Ok(r) => r,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(self.stalled("read")),
                Err(_) => Err(StoreError::Closed),
            },
            None => rx.recv().map_err(|_| StoreError::Closed)?,
        }
    }
}

/// One shared connection that is opened again when it broke or hung.
pub(crate) struct Conn {
    link: PgLink,
    slot: tokio::sync::Mutex<Option<Arc<Client>>>,
}

impl Conn {
    pub(crate) fn new(link: PgLink) -> Arc<Conn> {
        Arc::new(Conn {
            link,
            slot: tokio::sync::Mutex::new(None),
        })
    }

    async fn client(&self) -> Result<Arc<Client>, StoreError> {
        let mut slot = self.slot.lock().await;
        if let Some(c) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        *slot = None;
        let c = Arc::new(self.link.connect().await?);
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Runs one call within the time limit; a call that hangs gives up its
    /// connection, so the next call opens a fresh one.
    pub(crate) async fn call<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(Arc<Client>) -> Fut,
        Fut: Future<Output = Result<T, tokio_postgres::Error>>,
    {
        let work = async {
            let c = self.client().await?;
            f(c).await.map_err(|e| self.link.down(&e))
        };
        match tokio::time::timeout(self.link.timeout, work).await {
            Ok(r) => r,
            Err(_) => {
                self.slot.lock().await.take();
                Err(self.link.stalled(op))
            }
        }
    }
}

enum Job {
    Commit(Tx, oneshot::Sender<Result<Committed, StoreError>>),
    Flush(oneshot::Sender<Result<(), StoreError>>),
}

pub struct PgStore {
    link: PgLink,
    reader: Arc<Conn>,
    jobs: mpsc::UnboundedSender<Job>,
    audit: Arc<PgAuditStore>,
    busy: Arc<WriterBusy>,
    /// Since when, and why, the database has not answered the probe.
    outage: Arc<Mutex<Option<(Instant, String)>>>,
    _rt: Arc<PgRuntime>,
}

impl PgStore {
    /// Connects to the database at `url`, creating rollbot's tables when
    /// missing. A database that cannot be reached is an error that names
    /// it (never the URL's password).
    pub fn open(url: &str, timeout: Duration) -> anyhow::Result<PgStore> {
        PgStore::open_in(url, timeout, None)
    }

    /// [`PgStore::open`] in `schema` (made when missing) instead of the
    /// connection's default: the benchmark's scratch space.
    fn open_in(url: &str, timeout: Duration, schema: Option<&str>) -> anyhow::Result<PgStore> {
        PgStore::open_in_or_wait(url, timeout, schema, false)
    }

    /// [`PgStore::open`] for `serve`: a database that cannot be reached yet
    /// is not an error. The store opens as unreachable (`/readyz` and every
    /// write say so) and connects by itself when the database answers,
    /// trying again with a bounded exponential backoff.
    pub fn open_or_wait(url: &str, timeout: Duration) -> anyhow::Result<PgStore> {
        PgStore::open_in_or_wait(url, timeout, None, true)
    }

    fn open_in_or_wait(
        url: &str,
        timeout: Duration,
        schema: Option<&str>,
        wait: bool,
    ) -> anyhow::Result<PgStore> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("rollbot-postgres")
            .enable_all()
            .build()?;
        let handle = rt.handle().clone();
        // Owned before anything can fail: a bare runtime dropped on an
        // async thread (a bad URL at `serve`'s start) panics.
        let rt = Arc::new(PgRuntime(Mutex::new(Some(rt))));
        let link = PgLink::new(url, timeout, handle, schema)?;
        let create_schema = schema.map(|s| format!("CREATE SCHEMA IF NOT EXISTS \"{s}\""));
        let l = link.clone();
        let opened = link.block(
            Some(timeout),
            async move { set_up(&l, create_schema).await },
        );
        let (head, unreachable) = match opened {
            Ok(head) => (head, None),
            Err(e) if wait => (0, Some(e)),
            Err(e) => {
                return Err(anyhow::anyhow!(
                    "cannot open rollbot's store in PostgreSQL at {}: {e}. Check [store] url, that the database runs and accepts connections from here, and that its user may create tables",
                    link.target
                ))
            }
        };
        let len = Arc::new(AtomicU64::new(head));
        let reader = Conn::new(link.clone());
        let audit = Arc::new(PgAuditStore::new(
            link.clone(),
            reader.clone(),
            len.clone(),
            rt.clone(),
        ));
        let (jobs, rx) = mpsc::unbounded_channel();
        let busy = Arc::new(WriterBusy::new());
        link.handle
            .spawn(write_loop(link.clone(), rx, busy.clone(), len));
        let outage = Arc::new(Mutex::new(None));
        if let Some(e) = unreachable {
            tracing::error!(database = %link.target, error = %e, "PostgreSQL cannot be reached at start-up; rollbot serves, refuses actions, and connects when it answers");
            *outage.lock().unwrap() = Some((Instant::now(), e.to_string()));
            link.handle
                .spawn(set_up_later(link.clone(), Arc::downgrade(&audit)));
        }
        link.handle.spawn(probe_loop(
            link.clone(),
            reader.clone(),
            outage.clone(),
            Arc::downgrade(&audit),
        ));
        Ok(PgStore {
            link,
            reader,
            jobs,
            audit,
            busy,
            outage,
            _rt: rt,
        })
    }

    /// Whether the store's tables hold anything (a copy only fills an
    /// empty database).
    pub(crate) fn contents(&self) -> Result<(u64, u64), StoreError> {
        let conn = self.reader.clone();
        self.link.block(Some(self.link.timeout), async move {
            conn.call("read", |c| async move {
                let a = c
                    .query_one("SELECT count(*) FROM rollbot_audit", &[])
                    .await?;
                let k = c.query_one("SELECT count(*) FROM rollbot_kv", &[]).await?;
                Ok((a.get::<_, i64>(0) as u64, k.get::<_, i64>(0) as u64))
            })
            .await
        })
    }

    /// Writes stored audit entries (arriving in sequence order, a chunk at
    /// a time) and key values as they are, hashes and bytes unchanged, in
    /// one transaction: `rollbot store copy`. Refuses when the database is
    /// not empty.
    pub(crate) async fn import(
        &self,
        mut entries: mpsc::Receiver<Vec<RawEntry>>,
        kv: Vec<(Table, String, Vec<u8>)>,
    ) -> Result<(), StoreError> {
        let link = self.link.clone();
        let work = async move {
            let mut c = link.connect().await?;
            let down = |e: tokio_postgres::Error| link.down(&e);
            let tx = c.transaction().await.map_err(down)?;
            tx.query_one(
                "SELECT seq FROM rollbot_audit_head WHERE id = 1 FOR UPDATE",
                &[],
            )
            .await
            .map_err(down)?;
            let n: i64 = tx
                .query_one(
                    "SELECT (SELECT count(*) FROM rollbot_audit) + (SELECT count(*) FROM rollbot_kv)",
                    &[],
                )
                .await
                .map_err(down)?
                .get(0);
            if n > 0 {
                return Err(StoreError::Failed(format!(
                    "PostgreSQL at {} already holds rollbot state ({n} rows)",
                    link.target
                )));
            }
            let append = tx.prepare(APPEND).await.map_err(down)?;
            let mut head = None;
            while let Some(chunk) = entries.recv().await {
                let mut rows = AuditRows::default();
                for (seq, hash, body) in chunk {
                    let e = crate::audit::chain::decode_parts(seq, &hash, &body)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    head = Some((seq, hash.clone()));
                    rows.push(seq, hash, body, &e.record);
                }
                rows.check()?;
                tx.execute(&append, &rows.params()).await.map_err(down)?;
            }
            if let Some((seq, hash)) = &head {
                tx.execute(
                    "UPDATE rollbot_audit_head SET seq = $1, hash = $2 WHERE id = 1",
                    &[&(*seq as i64), hash],
                )
                .await
                .map_err(down)?;
            }
            for chunk in kv.chunks(5000) {
                let tbls: Vec<&str> = chunk.iter().map(|(t, _, _)| t.name()).collect();
                let keys: Vec<&str> = chunk.iter().map(|(_, k, _)| k.as_str()).collect();
                let values: Vec<&[u8]> = chunk.iter().map(|(_, _, v)| v.as_slice()).collect();
                if let Some(k) = keys.iter().find(|k| k.contains('\0')) {
                    return Err(nul(k));
                }
                tx.execute(
                    "INSERT INTO rollbot_kv (tbl, key, value) SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[])",
                    &[&tbls, &keys, &values],
                )
                .await
                .map_err(down)?;
            }
            tx.commit().await.map_err(down)?;
            Ok(head.map_or(0, |h| h.0))
        };
        let seq = self
            .link
            .handle
            .spawn(work)
            .await
            .map_err(|_| StoreError::Closed)??;
        self.audit.len_seen(seq);
        Ok(())
    }
}

/// One stored audit entry: sequence number, hash, body.
pub(crate) type RawEntry = (u64, Vec<u8>, Vec<u8>);

const APPEND: &str = "INSERT INTO rollbot_audit (seq, hash, body, service, actor, correlation) \
     SELECT * FROM unnest($1::int8[], $2::bytea[], $3::bytea[], $4::text[], $5::text[], $6::text[])";

/// Sealed entries as the columns of one multi-row insert.
#[derive(Default)]
struct AuditRows {
    seq: Vec<i64>,
    hash: Vec<Vec<u8>>,
    body: Vec<Vec<u8>>,
    service: Vec<Option<String>>,
    actor: Vec<String>,
    correlation: Vec<String>,
}

impl AuditRows {
    fn push(&mut self, seq: u64, hash: Vec<u8>, body: Vec<u8>, r: &crate::audit::Record) {
        self.seq.push(seq as i64);
        self.hash.push(hash);
        self.body.push(body);
        self.service.push(r.service.clone());
        self.actor.push(r.actor.qualified_id());
        self.correlation.push(r.correlation_id.clone());
    }

    /// PostgreSQL text cannot hold NUL; say so instead of failing the
    /// whole group's transaction.
    fn check(&self) -> Result<(), StoreError> {
        let texts = self
            .service
            .iter()
            .flatten()
            .chain(&self.actor)
            .chain(&self.correlation);
        for t in texts {
            if t.contains('\0') {
                return Err(nul(t));
            }
        }
        Ok(())
    }

    fn params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 6] {
        [
            &self.seq,
            &self.hash,
            &self.body,
            &self.service,
            &self.actor,
            &self.correlation,
        ]
    }
}

fn nul(what: &str) -> StoreError {
    StoreError::Failed(format!(
        "`{}` contains a NUL character, which PostgreSQL cannot store; nothing was written",
        what.replace('\0', "\\0")
    ))
}

#[async_trait]
impl StateStore for PgStore {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let (conn, key) = (self.reader.clone(), key.to_string());
        self.link.block(Some(self.link.timeout), async move {
            conn.call("read", |c| async move {
                let row = c
                    .query_opt(
                        "SELECT value FROM rollbot_kv WHERE tbl = $1 AND key = $2",
                        &[&table.name(), &key],
                    )
                    .await?;
                Ok(row.map(|r| r.get::<_, Vec<u8>>(0)))
            })
            .await
        })
    }

    fn scan(
        &self,
        table: Table,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let (conn, prefix) = (self.reader.clone(), prefix.to_string());
        let after = after.map(str::to_string);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.link.block(Some(self.link.timeout), async move {
            conn.call("scan", |c| async move {
                let rows = c
                    .query(
                        "SELECT key, value FROM rollbot_kv WHERE tbl = $1 AND key >= $2 \
                         AND ($3::text IS NULL OR key > $3) AND starts_with(key, $2) \
                         ORDER BY key LIMIT $4",
                        &[&table.name(), &prefix, &after, &limit],
                    )
                    .await?;
                Ok(rows
                    .into_iter()
                    .map(|r| (r.get::<_, String>(0), r.get::<_, Vec<u8>>(1)))
                    .collect())
            })
            .await
        })
    }

    async fn commit(&self, tx: Tx) -> Result<Committed, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job::Commit(tx, reply))
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn flush(&self) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job::Flush(reply))
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    fn audit(&self) -> Arc<dyn AuditStore> {
        self.audit.clone()
    }

    fn writer_busy_for(&self) -> Option<Duration> {
        self.busy.busy_for()
    }

    fn size_on_disk(&self) -> Option<u64> {
        let conn = self.reader.clone();
        self.link
            .block(Some(self.link.timeout), async move {
                conn.call("read", |c| async move {
                    let r = c
                        .query_one(
                            "SELECT pg_total_relation_size('rollbot_audit') + pg_total_relation_size('rollbot_kv')",
                            &[],
                        )
                        .await?;
                    Ok(r.get::<_, i64>(0) as u64)
                })
                .await
            })
            .ok()
    }

    fn outage(&self) -> Option<(Duration, String)> {
        self.outage
            .lock()
            .unwrap()
            .as_ref()
            .map(|(since, why)| (since.elapsed(), why.clone()))
    }
}

/// Asks the database every second whether it answers, so `/readyz` says
/// it is gone even when no request comes in, and says when it is back. It
/// reads the log's head, so a standby's count follows the leader's appends.
async fn probe_loop(
    link: PgLink,
    reader: Arc<Conn>,
    outage: Arc<Mutex<Option<(Instant, String)>>>,
    // Weak: the log holds the runtime this task runs on.
    audit: std::sync::Weak<PgAuditStore>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let r = reader
            .call("probe", |c| async move {
                c.query_one("SELECT seq FROM rollbot_audit_head WHERE id = 1", &[])
                    .await
            })
            .await;
        let Some(audit) = audit.upgrade() else {
            return;
        };
        if let Ok(row) = &r {
            audit.len_seen(row.get::<_, i64>(0) as u64);
        }
        drop(audit);
        let mut o = outage.lock().unwrap();
        match (r, o.is_some()) {
            (Ok(_), true) => {
                tracing::info!(database = %link.target, "PostgreSQL answers again");
                *o = None;
            }
            (Err(e), false) => {
                tracing::error!(database = %link.target, error = %e, "PostgreSQL does not answer; actions are refused until it does");
                *o = Some((Instant::now(), e.to_string()));
            }
            _ => {}
        }
    }
}

/// The writer's connection with its statements prepared once.
struct Writer {
    client: Client,
    lock: Statement,
    get: Statement,
    put: Statement,
    del: Statement,
    append: Statement,
    head: Statement,
}

impl Writer {
    async fn open(link: &PgLink) -> Result<Writer, StoreError> {
        let client = link.connect().await?;
        let p = |sql: &'static str| {
            let c = &client;
            async move { c.prepare(sql).await.map_err(|e| link.down(&e)) }
        };
        Ok(Writer {
            lock: p("SELECT seq, hash, epoch FROM rollbot_audit_head WHERE id = 1 FOR UPDATE")
                .await?,
            get: p("SELECT value FROM rollbot_kv WHERE tbl = $1 AND key = $2").await?,
            put: p(
                "INSERT INTO rollbot_kv (tbl, key, value) VALUES ($1, $2, $3) \
                    ON CONFLICT (tbl, key) DO UPDATE SET value = EXCLUDED.value",
            )
            .await?,
            del: p("DELETE FROM rollbot_kv WHERE tbl = $1 AND key = $2").await?,
            append: p(APPEND).await?,
            head: p("UPDATE rollbot_audit_head SET seq = $1, hash = $2, epoch = $3 WHERE id = 1")
                .await?,
            client,
        })
    }
}

async fn write_loop(
    link: PgLink,
    mut rx: mpsc::UnboundedReceiver<Job>,
    busy: Arc<WriterBusy>,
    len: Arc<AtomicU64>,
) {
    let mut writer: Option<Writer> = None;
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        while jobs.len() < GROUP {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        busy.start();
        let started = Instant::now();
        let mut txs = Vec::with_capacity(jobs.len());
        let mut replies = Vec::with_capacity(jobs.len());
        for j in jobs {
            match j {
                Job::Commit(tx, r) => {
                    txs.push(Some(tx));
                    replies.push(Reply::Commit(r));
                }
                Job::Flush(r) => {
                    txs.push(None);
                    replies.push(Reply::Flush(r));
                }
            }
        }
        let group = txs.len();
        let outcome =
            match tokio::time::timeout(link.timeout, write_group(&link, &mut writer, txs)).await {
                Ok(r) => r,
                Err(_) => Err(StoreError::NotDurable(format!(
                    "PostgreSQL at {} did not finish the commit within {}; it may or may not have been applied",
                    link.target,
                    crate::domain::human_duration(link.timeout)
                ))),
            };
        busy.idle();
        tracing::debug!(target: "rollbot::store", commits = group, took_ms = started.elapsed().as_millis() as u64, "group committed");
        let results = match outcome {
            Ok((results, head)) => {
                if let Some(seq) = head {
                    len.store(seq, Ordering::Release);
                }
                results
            }
            Err(e) => {
                // A broken or hung connection is not used again.
                writer = None;
                tracing::error!(database = %link.target, error = %e, "could not commit to PostgreSQL");
                (0..group).map(|_| Err(e.clone())).collect()
            }
        };
        for (reply, r) in replies.into_iter().zip(results) {
            match reply {
                Reply::Commit(s) => {
                    let _ = s.send(r);
                }
                Reply::Flush(s) => {
                    let _ = s.send(r.map(drop));
                }
            }
        }
    }
}

enum Reply {
    Commit(oneshot::Sender<Result<Committed, StoreError>>),
    Flush(oneshot::Sender<Result<(), StoreError>>),
}

type GroupResult = (Vec<Result<Committed, StoreError>>, Option<u64>);

/// Applies a group of commits in one transaction; a flush has nothing to
/// add (a commit is durable when it returns). The results, and the new
/// head when entries were appended.
async fn write_group(
    link: &PgLink,
    slot: &mut Option<Writer>,
    txs: Vec<Option<Tx>>,
) -> Result<GroupResult, StoreError> {
    if slot.as_ref().is_none_or(|w| w.client.is_closed()) {
        *slot = Some(Writer::open(link).await?);
    }
    let w = slot.as_mut().expect("opened above");
    let down = |e: tokio_postgres::Error| link.down(&e);
    let t = w.client.transaction().await.map_err(down)?;
    // Every writer of every replica queues here, one at a time.
    let row = t.query_one(&w.lock, &[]).await.map_err(down)?;
    let start = row.get::<_, i64>(0) as u64;
    let (mut seq, mut prev) = (start, hex::encode(row.get::<_, Vec<u8>>(1)));
    let first_epoch = row.get::<_, i64>(2) as u64;
    let mut epoch = first_epoch;
    let mut results = Vec::with_capacity(txs.len());
    for tx in txs {
        let Some(tx) = tx else {
            results.push(Ok(Committed::Done(vec![])));
            continue;
        };
        if let Err(e) = precheck(&tx) {
            results.push(Err(e));
            continue;
        }
        if let Err(e) = fenced(tx.epoch, &mut epoch) {
            if !closes_its_own(&t, &w.get, &tx).await.map_err(down)? {
                results.push(Err(e));
                continue;
            }
        }
        let mut conflict = false;
        for wr in &tx.writes {
            if let Write::Expect { table, key, value } = wr {
                let cur = t
                    .query_opt(&w.get, &[&table.name(), key])
                    .await
                    .map_err(down)?
                    .map(|r| r.get::<_, Vec<u8>>(0));
                if cur.as_deref() != value.as_deref() {
                    conflict = true;
                    break;
                }
            }
        }
        if conflict {
            results.push(Ok(Committed::Conflict));
            continue;
        }
        let mut entries = Vec::with_capacity(tx.records.len());
        if !tx.records.is_empty() {
            let mut rows = AuditRows::default();
            for record in tx.records {
                seq += 1;
                let (body, hash) = seal(seq, &prev, &record);
                let hash_hex = hex::encode(hash);
                rows.push(seq, hash.to_vec(), body, &record);
                entries.push(Entry {
                    seq,
                    record,
                    prev_hash: std::mem::replace(&mut prev, hash_hex.clone()),
                    hash: hash_hex,
                });
            }
            t.execute(&w.append, &rows.params()).await.map_err(down)?;
        }
        for wr in tx.writes {
            match wr {
                Write::Put { table, key, value } => {
                    t.execute(&w.put, &[&table.name(), &key, &value])
                        .await
                        .map_err(down)?;
                }
                Write::Remove { table, key } => {
                    t.execute(&w.del, &[&table.name(), &key])
                        .await
                        .map_err(down)?;
                }
                Write::Expect { .. } => {}
            }
        }
        results.push(Ok(Committed::Done(entries)));
    }
    let head = if seq != start || epoch != first_epoch {
        let hash = hex::decode(&prev).expect("hex of a hash");
        t.execute(&w.head, &[&(seq as i64), &hash, &(epoch as i64)])
            .await
            .map_err(down)?;
        (seq != start).then_some(seq)
    } else {
        None
    };
    // Past this point an error leaves it unknown whether the group landed.
    t.commit().await.map_err(|e| {
        StoreError::NotDurable(format!(
            "PostgreSQL at {} did not confirm the commit: {e}",
            link.target
        ))
    })?;
    Ok((results, head))
}

/// The leadership check inside the transaction, under the head row's lock:
/// a commit from an older leadership than one that already wrote is
/// refused (a replica that passed its own fence check, then paused, and
/// woke after another replica took the Lease). A newer epoch is taken.
fn fenced(tx_epoch: Option<u64>, newest: &mut u64) -> Result<(), StoreError> {
    match tx_epoch {
        Some(e) if e < *newest => Err(StoreError::Fenced(format!(
            "not recorded: a newer leader (Lease transition {newest}) has written to the shared store since this replica's leadership (transition {e}) began"
        ))),
        Some(e) => {
            *newest = e;
            Ok(())
        }
        None => Ok(()),
    }
}

/// What PostgreSQL would refuse inside the transaction, refused before it
/// so one bad commit does not fail its whole group.
fn precheck(tx: &Tx) -> Result<(), StoreError> {
    for w in &tx.writes {
        let (Write::Put { key, .. } | Write::Remove { key, .. } | Write::Expect { key, .. }) = w;
        if key.contains('\0') {
            return Err(nul(key));
        }
    }
    for r in &tx.records {
        for t in [
            r.service.as_deref().unwrap_or(""),
            &r.actor.qualified_id(),
            &r.correlation_id,
        ] {
            if t.contains('\0') {
                return Err(nul(t));
            }
        }
    }
    Ok(())
}

/// Opens the store as a [`super::Store`] with the time limit of `[store]`.
pub fn open_store(url: &str, timeout: Duration) -> anyhow::Result<super::Store> {
    Ok(super::Store::new(
        Arc::new(PgStore::open(url, timeout)?),
        timeout,
    ))
}

/// [`open_store`] for `serve`: starts while the database is unreachable
/// (see [`PgStore::open_or_wait`]).
pub fn open_store_or_wait(url: &str, timeout: Duration) -> anyhow::Result<super::Store> {
    Ok(super::Store::new(
        Arc::new(PgStore::open_or_wait(url, timeout)?),
        timeout,
    ))
}
