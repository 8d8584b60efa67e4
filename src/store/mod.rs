//! rollbot's state: the audit log and everything that must survive a restart
//! (freezes, prompts, idempotency records, actions in flight, rollouts, gate
//! states), behind one [`Store`].
//!
//! Three rules keep the store from ever holding the server hostage:
//!
//! - every write is a [`Tx`] (audit records plus key writes) that one writer
//!   applies in order and makes durable with a shared flush (group commit);
//!   nothing else writes, so a compare-and-swap is a read and a write;
//! - every call has a time limit (`[store] timeout`): a store that stops
//!   answering becomes a clear refusal and a failing `/readyz`, never a hung
//!   request;
//! - reads never queue behind the writer.
//!
//! [`StateStore`] is what an implementation provides; [`sled_store`] is the
//! embedded one.

mod busy;
pub mod copy;
mod health;
pub mod open;
pub mod postgres_store;
mod postgres_tls;
pub(crate) mod sled_store;

pub use health::{Health, StoreProblem};

use crate::audit::{AuditStore, Entry, Query, Record};
use async_trait::async_trait;
use serde::{de::DeserializeOwned, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// A namespace of JSON values keyed by strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Table {
    Freezes,
    Prompts,
    /// Outcomes of requests that carried an idempotency key.
    Idempotency,
    /// Actions between `requested` and their result.
    Inflight,
    /// Per-service switches, rollouts and other small state.
    Settings,
    /// Flagger gate states, per service.
    Gates,
}

impl Table {
    pub const ALL: [Table; 6] = [
        Table::Freezes,
        Table::Prompts,
        Table::Idempotency,
        Table::Inflight,
        Table::Settings,
        Table::Gates,
    ];

    /// The name on disk; existing stores keep theirs.
    pub fn name(self) -> &'static str {
        match self {
            Table::Freezes => "freezes",
            Table::Prompts => "prompts",
            Table::Idempotency => "idempotency",
            Table::Inflight => "inflight",
            Table::Settings => "settings",
            Table::Gates => "flagger_gates",
        }
    }

    pub(crate) fn index(self) -> usize {
        Table::ALL.iter().position(|t| *t == self).expect("listed")
    }
}

/// One key write of a [`Tx`].
#[derive(Clone, Debug)]
pub enum Write {
    Put {
        table: Table,
        key: String,
        value: Vec<u8>,
    },
    Remove {
        table: Table,
        key: String,
    },
    /// The whole transaction applies only if `key` holds exactly `value`
    /// (`None`: absent) when it is applied.
    Expect {
        table: Table,
        key: String,
        value: Option<Vec<u8>>,
    },
}

/// Audit records and key writes that land together, in this order, or not
/// at all.
#[derive(Clone, Debug, Default)]
pub struct Tx {
    pub records: Vec<Record>,
    pub writes: Vec<Write>,
    /// The writer's leadership epoch (see `crate::fence`), set by
    /// [`Store::commit`]: a store shared by replicas refuses a commit whose
    /// epoch is older than one it has already taken.
    pub epoch: Option<u64>,
}

impl Tx {
    pub fn new() -> Tx {
        Tx::default()
    }

    pub fn record(mut self, r: Record) -> Tx {
        self.records.push(r);
        self
    }

    pub fn put<T: Serialize>(mut self, table: Table, key: &str, value: &T) -> Tx {
        self.writes.push(Write::Put {
            table,
            key: key.to_string(),
            value: serde_json::to_vec(value).expect("stored values serialize"),
        });
        self
    }

    pub fn put_raw(mut self, table: Table, key: &str, value: Vec<u8>) -> Tx {
        self.writes.push(Write::Put {
            table,
            key: key.to_string(),
            value,
        });
        self
    }

    pub fn remove(mut self, table: Table, key: &str) -> Tx {
        self.writes.push(Write::Remove {
            table,
            key: key.to_string(),
        });
        self
    }

    pub fn expect(mut self, table: Table, key: &str, value: Option<Vec<u8>>) -> Tx {
        self.writes.push(Write::Expect {
            table,
            key: key.to_string(),
            value,
        });
        self
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty() && self.writes.is_empty()
    }
}

/// What a commit did.
#[derive(Debug)]
pub enum Committed {
    /// Applied and durable; the audit records as sealed entries.
    Done(Vec<Entry>),
    /// An `Expect` did not hold; nothing was applied.
    Conflict,
}

#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    #[error("rollbot's store did not answer within {} ({op}); `/readyz` says why (the disk under [store] path, or the PostgreSQL server)", crate::domain::human_duration(*after))]
    Stalled { op: &'static str, after: Duration },
    /// The write reached the store but may not be on disk.
    #[error("rollbot's store could not make a write durable: {0}")]
    NotDurable(String),
    #[error("rollbot's store failed: {0}")]
    Failed(String),
    #[error("a stored value cannot be read: {0}")]
    Corrupt(String),
    #[error("rollbot's store is closed")]
    Closed,
    /// This replica may not write: it is not the leader any more (see
    /// `crate::fence`). Nothing was written.
    #[error("not recorded: {0}")]
    Fenced(String),
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Failed(e.to_string())
    }
}

/// What a store implementation provides. Reads may block; [`Store`] runs
/// them where blocking is allowed and bounds every call in time.
#[async_trait]
pub trait StateStore: Send + Sync {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Keys starting with `prefix`, in key order, after `after` (when
    /// given), at most `limit`.
    fn scan(
        &self,
        table: Table,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    /// Applies `tx` atomically with respect to other commits and returns
    /// once it is durable.
    async fn commit(&self, tx: Tx) -> Result<Committed, StoreError>;
    /// Makes every earlier commit durable.
    async fn flush(&self) -> Result<(), StoreError>;
    /// The audit log's read side.
    fn audit(&self) -> Arc<dyn AuditStore>;
    /// How long the writer has been busy with its current group, if it is.
    fn writer_busy_for(&self) -> Option<Duration>;
    /// Bytes on disk, for `/readyz` and benchmarks.
    fn size_on_disk(&self) -> Option<u64>;
    /// How long, and why, a store on another machine has not answered its
    /// probe: `/readyz` says so even when no call failed yet.
    fn outage(&self) -> Option<(Duration, String)> {
        None
    }
}

/// Store settings from `[store]`.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Upper bound of sled's page cache.
    pub cache_bytes: u64,
    /// Longest a store call may take before it is refused.
    pub timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_bytes: 64 * 1024 * 1024,
            timeout: Duration::from_secs(5),
        }
    }
}

impl From<&crate::config_file::StoreConfig> for StoreOptions {
    fn from(c: &crate::config_file::StoreConfig) -> Self {
        StoreOptions {
            cache_bytes: c.cache_mb.max(1).saturating_mul(1024 * 1024),
            timeout: c.timeout.0,
        }
    }
}

/// The handle everything uses: typed, time-limited, health-tracking.
pub struct Store {
    inner: Arc<dyn StateStore>,
    audit: Arc<dyn AuditStore>,
    timeout: Duration,
    pub health: Arc<Health>,
    /// Asked before every commit once leader election runs.
    fence: std::sync::OnceLock<crate::fence::Fence>,
}

/// At most this many attempts of one read-modify-write; each attempt only
/// fails when another commit changed the same key in between.
const UPDATE_ATTEMPTS: usize = 64;

impl Store {
    pub fn new(inner: Arc<dyn StateStore>, timeout: Duration) -> Store {
        Store {
            audit: inner.audit(),
            inner,
            timeout,
            health: Arc::new(Health::default()),
            fence: std::sync::OnceLock::new(),
        }
    }

    /// From now on every commit first asks `fence`, so a replica whose
    /// leadership ran out appends nothing (set once, by the elector's
    /// owner).
    pub(crate) fn fence_with(&self, fence: crate::fence::Fence) {
        let _ = self.fence.set(fence);
    }

    /// Opens the sled store at `path`.
    pub fn open(path: &std::path::Path) -> anyhow::Result<Store> {
        Store::open_with(path, &StoreOptions::default())
    }

    pub fn open_with(path: &std::path::Path, opts: &StoreOptions) -> anyhow::Result<Store> {
        let s = sled_store::SledStore::open(path, opts.cache_bytes)?;
        Ok(Store::new(Arc::new(s), opts.timeout))
    }

    /// Opens the store `[store]` names: sled at `path` (which `serve`
    /// takes from `[store] path` and the demo from `--data`), or the
    /// PostgreSQL database at `[store] url`.
    pub fn open_config(
        c: &crate::config_file::StoreConfig,
        path: &std::path::Path,
    ) -> anyhow::Result<Store> {
        Store::open_config_as(c, path, false)
    }

    /// [`Store::open_config`] for `serve`: a PostgreSQL database that does
    /// not answer yet is reported and connected to when it does, instead
    /// of stopping the start (a database restarting with rollbot, a
    /// network not up yet).
    pub fn open_config_serving(
        c: &crate::config_file::StoreConfig,
        path: &std::path::Path,
    ) -> anyhow::Result<Store> {
        Store::open_config_as(c, path, true)
    }

    fn open_config_as(
        c: &crate::config_file::StoreConfig,
        path: &std::path::Path,
        wait: bool,
    ) -> anyhow::Result<Store> {
        match c.kind {
            crate::config_file::StoreKind::Sled => Store::open_with(path, &c.into()),
            crate::config_file::StoreKind::Postgres => {
                let url = c
                    .url_source()
                    .map_err(|e| anyhow::anyhow!("[store]: {e}"))?
                    .ok_or_else(|| {
                        anyhow::anyhow!("[store] kind = \"postgres\" needs url (or url_file)")
                    })?
                    .resolve()
                    .map_err(|e| anyhow::anyhow!("[store] url: {e}"))?;
                match wait {
                    true => postgres_store::open_store_or_wait(url.expose(), c.timeout.0),
                    false => postgres_store::open_store(url.expose(), c.timeout.0),
                }
            }
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs `f` with the time limit and records how it went.
    async fn bounded<T>(
        &self,
        op: &'static str,
        write: bool,
        f: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, f).await {
            Ok(Ok(v)) => {
                self.health.answered(write);
                Ok(v)
            }
            Ok(Err(e)) => {
                self.health.failed(write, &e);
                Err(e)
            }
            Err(_) => {
                let e = StoreError::Stalled {
                    op,
                    after: self.timeout,
                };
                self.health.failed(write, &e);
                tracing::error!(
                    op,
                    timeout_ms = self.timeout.as_millis() as u64,
                    "store call timed out"
                );
                Err(e)
            }
        }
    }

    /// A blocking read on the blocking pool, bounded in time.
    async fn read<T: Send + 'static>(
        &self,
        op: &'static str,
        f: impl FnOnce(&dyn StateStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = self.inner.clone();
        self.bounded(op, false, async move {
            tokio::task::spawn_blocking(move || f(inner.as_ref()))
                .await
                .map_err(|e| StoreError::Failed(format!("store read panicked: {e}")))?
        })
        .await
    }

    pub async fn get_raw(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = key.to_string();
        self.read("read", move |s| s.get(table, &key)).await
    }

    pub async fn get<T: DeserializeOwned>(
        &self,
        table: Table,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        match self.get_raw(table, key).await? {
            Some(v) => decode(table, key, &v).map(Some),
            None => Ok(None),
        }
    }

    pub async fn scan<T: DeserializeOwned>(
        &self,
        table: Table,
        prefix: &str,
    ) -> Result<Vec<(String, T)>, StoreError> {
        let p = prefix.to_string();
        let raw = self
            .read("scan", move |s| s.scan(table, &p, None, usize::MAX))
            .await?;
        raw.into_iter()
            .map(|(k, v)| decode(table, &k, &v).map(|t| (k, t)))
            .collect()
    }

    /// One page of a scan, for sweeps over tables that may be large.
    pub async fn scan_page(
        &self,
        table: Table,
        prefix: &str,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let p = prefix.to_string();
        self.read("scan", move |s| s.scan(table, &p, after.as_deref(), limit))
            .await
    }

    /// Removes every key of `table` for which `expired` says so, a page at
    /// a time so memory stays bounded; returns how many.
    pub async fn sweep(
        &self,
        table: Table,
        mut expired: impl FnMut(&[u8]) -> bool,
    ) -> Result<usize, StoreError> {
        let mut after = None;
        let mut removed = 0;
        loop {
            let page = self.scan_page(table, "", after.clone(), 500).await?;
            let Some((last, _)) = page.last() else {
                return Ok(removed);
            };
            after = Some(last.clone());
            let mut tx = Tx::new();
            for (k, v) in &page {
                if expired(v) {
                    // Only if unchanged since read: a fresh write wins.
                    tx = tx.expect(table, k, Some(v.clone())).remove(table, k);
                }
            }
            if !tx.is_empty() {
                let n = tx.writes.len() / 2;
                if let Committed::Done(_) = self.commit(tx).await? {
                    removed += n;
                }
            }
        }
    }

    /// Applies a transaction durably.
    pub async fn commit(&self, mut tx: Tx) -> Result<Committed, StoreError> {
        // Asked immediately before the write, and not counted against the
        // store's health: the store is fine, this replica may not write.
        if let Some(fence) = self.fence.get() {
            fence.before_append().map_err(|f| StoreError::Fenced(f.0))?;
            tx.epoch = fence.epoch();
        }
        let c = self.bounded("write", true, self.inner.commit(tx)).await?;
        if let Committed::Done(entries) = &c {
            entries.iter().for_each(log_entry);
        }
        Ok(c)
    }

    /// Commits a transaction that has no `Expect`.
    pub async fn apply(&self, tx: Tx) -> Result<Vec<Entry>, StoreError> {
        match self.commit(tx).await? {
            Committed::Done(e) => Ok(e),
            Committed::Conflict => Err(StoreError::Failed(
                "a write without a condition reported a conflict".into(),
            )),
        }
    }

    pub async fn put<T: Serialize>(
        &self,
        table: Table,
        key: &str,
        v: &T,
    ) -> Result<(), StoreError> {
        self.apply(Tx::new().put(table, key, v)).await.map(drop)
    }

    pub async fn remove(&self, table: Table, key: &str) -> Result<(), StoreError> {
        self.apply(Tx::new().remove(table, key)).await.map(drop)
    }

    /// Appends one audit entry durably.
    pub async fn append(&self, r: Record) -> Result<Entry, StoreError> {
        let mut v = self.apply(Tx::new().record(r)).await?;
        Ok(v.pop().expect("one record, one entry"))
    }

    /// Appends several entries with one flush.
    pub async fn append_batch(&self, records: Vec<Record>) -> Result<Vec<Entry>, StoreError> {
        self.apply(Tx {
            records,
            ..Tx::default()
        })
        .await
    }

    /// Read-modify-write of one key as a compare-and-swap: `f` sees the
    /// current value and returns the new one (`None` removes it), the
    /// records to append with it, and a result. `f` may run more than once.
    pub async fn update<T, R>(
        &self,
        table: Table,
        key: &str,
        mut f: impl FnMut(Option<T>) -> Change<T, R>,
    ) -> Result<(R, Vec<Entry>), StoreError>
    where
        T: Serialize + DeserializeOwned,
    {
        for _ in 0..UPDATE_ATTEMPTS {
            let old = self.get_raw(table, key).await?;
            let current = match &old {
                Some(v) => Some(decode::<T>(table, key, v)?),
                None => None,
            };
            let change = f(current);
            if matches!(change.value, Keep::Unchanged) && change.records.is_empty() {
                return Ok((change.result, vec![]));
            }
            let mut tx = Tx::new().expect(table, key, old);
            tx.records = change.records;
            tx = match change.value {
                Keep::Unchanged => tx,
                Keep::Set(v) => tx.put(table, key, &v),
                Keep::Remove => tx.remove(table, key),
            };
            if let Committed::Done(entries) = self.commit(tx).await? {
                return Ok((change.result, entries));
            }
        }
        Err(StoreError::Failed(format!(
            "{} `{key}` kept changing under {UPDATE_ATTEMPTS} attempts to update it",
            table.name()
        )))
    }

    pub async fn flush(&self) -> Result<(), StoreError> {
        self.bounded("flush", true, self.inner.flush()).await
    }

    /// The audit log's read side, for tools that may block (the CLI).
    pub fn audit(&self) -> &dyn AuditStore {
        self.audit.as_ref()
    }

    /// A shared handle on the audit log's read side, for blocking readers.
    pub fn audit_handle(&self) -> Arc<dyn AuditStore> {
        self.audit.clone()
    }

    /// Audit entries matching `q`, newest first, off the async workers.
    pub async fn audit_query(&self, q: Query) -> Result<Vec<Entry>, StoreError> {
        let audit = self.audit.clone();
        self.bounded("audit read", false, async move {
            tokio::task::spawn_blocking(move || {
                audit
                    .query(&q)
                    .map_err(|e| StoreError::Failed(e.to_string()))
            })
            .await
            .map_err(|e| StoreError::Failed(format!("audit read panicked: {e}")))?
        })
        .await
    }

    pub async fn audit_get(&self, seq: u64) -> Result<Option<Entry>, StoreError> {
        let audit = self.audit.clone();
        self.bounded("audit read", false, async move {
            tokio::task::spawn_blocking(move || {
                audit
                    .get(seq)
                    .map_err(|e| StoreError::Failed(e.to_string()))
            })
            .await
            .map_err(|e| StoreError::Failed(format!("audit read panicked: {e}")))?
        })
        .await
    }

    /// The last sequence number (kept in memory: never blocks).
    pub fn audit_len(&self) -> u64 {
        self.audit.len()
    }

    /// What is wrong with the store now, for `/readyz` and refusals.
    pub fn problems(&self) -> Vec<StoreProblem> {
        let mut out = self
            .health
            .problems(self.inner.writer_busy_for(), self.timeout);
        if let Some((down, why)) = self.inner.outage() {
            out.push(StoreProblem {
                blocks_actions: true,
                text: format!(
                    "store unreachable for {}: {why}; actions are refused until it answers",
                    crate::domain::human_duration(down)
                ),
            });
        }
        out
    }

    /// One word for `/readyz`: `ok`, `damaged` (acts on nothing until
    /// restored), `unreachable` (the database does not answer; retried) or
    /// `failing` (calls fail or hang).
    pub fn state(&self) -> &'static str {
        if self.health.damaged().is_some() {
            "damaged"
        } else if self.inner.outage().is_some() {
            "unreachable"
        } else if self.problems().is_empty() {
            "ok"
        } else {
            "failing"
        }
    }

    /// Whether the store's database does not answer (its probe failed).
    pub fn unreachable(&self) -> bool {
        self.inner.outage().is_some()
    }

    pub fn size_on_disk(&self) -> Option<u64> {
        self.inner.size_on_disk()
    }

    /// Checks the store before it is trusted: the audit log's head and
    /// chain (every entry when the log is small enough to read in a few
    /// seconds, else the last [`TAIL_CHECK`]), and that every stored value
    /// of every table decodes. A failure marks the store damaged, which
    /// `/readyz`, the log and the engine's refusals then say.
    pub async fn check_integrity(&self, path: &std::path::Path) -> Result<(), String> {
        let audit = self.audit.clone();
        let inner = self.inner.clone();
        let path = path.to_path_buf();
        let verdict = tokio::task::spawn_blocking(move || {
            open::no_panic(&path, || -> Result<(), String> {
                let report = if audit.len() <= FULL_CHECK {
                    audit.verify()
                } else {
                    audit.verify_tail(TAIL_CHECK)
                }
                .map_err(|e| e.to_string())?;
                if let Some((seq, what)) = report.first_bad {
                    return Err(format!("audit log entry #{seq}: {what}"));
                }
                for t in Table::ALL {
                    let mut after: Option<String> = None;
                    loop {
                        let page = inner
                            .scan(t, "", after.as_deref(), 1000)
                            .map_err(|e| format!("{}: {e}", t.name()))?;
                        let Some((last, _)) = page.last() else { break };
                        for (k, v) in &page {
                            if serde_json::from_slice::<serde::de::IgnoredAny>(v).is_err() {
                                return Err(format!("{} `{k}` is not readable", t.name()));
                            }
                        }
                        after = Some(last.clone());
                    }
                }
                Ok(())
            })
            .map_err(|e| e.to_string())
            .and_then(|r| r)
        })
        .await
        .map_err(|e| format!("the check stopped: {e}"))
        .and_then(|r| r);
        if let Err(what) = &verdict {
            tracing::error!(problem = %what, "the store failed its integrity check; rollbot refuses actions until it is restored");
            self.health.set_damaged(what.clone());
        }
        verdict
    }
}

/// Logs up to this many entries are verified whole at start-up (about a
/// second on a small machine).
pub const FULL_CHECK: u64 = 300_000;
/// Entries verified at start-up on a larger log.
pub const TAIL_CHECK: u64 = 10_000;

/// What [`Store::update`]'s function decides.
pub struct Change<T, R> {
    pub value: Keep<T>,
    pub records: Vec<Record>,
    pub result: R,
}

pub enum Keep<T> {
    Unchanged,
    Set(T),
    Remove,
}

impl<T, R> Change<T, R> {
    pub fn set(v: T, result: R) -> Self {
        Change {
            value: Keep::Set(v),
            records: vec![],
            result,
        }
    }
    pub fn unchanged(result: R) -> Self {
        Change {
            value: Keep::Unchanged,
            records: vec![],
            result,
        }
    }
    pub fn remove(result: R) -> Self {
        Change {
            value: Keep::Remove,
            records: vec![],
            result,
        }
    }
    pub fn with_records(mut self, records: Vec<Record>) -> Self {
        self.records = records;
        self
    }
}

/// A copy of every durable entry in the structured log, for log pipelines
/// that keep history beyond this volume. The key fields stand alone
/// (searchable); `entry` carries the whole entry with its hashes, so the
/// chain can be checked from the logs alone.
fn log_entry(e: &Entry) {
    tracing::info!(
        target: "rollbot::audit",
        seq = e.seq,
        action = %e.record.action,
        service = e.record.service.as_deref().unwrap_or(""),
        outcome = e.record.outcome.name(),
        actor = %e.record.actor.qualified_id(),
        correlation_id = %e.record.correlation_id,
        hash = %e.hash,
        entry = %serde_json::to_string(e).unwrap_or_default(),
        "audit entry"
    );
}

fn decode<T: DeserializeOwned>(table: Table, key: &str, v: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(v)
        .map_err(|e| StoreError::Corrupt(format!("{} `{key}`: {e}", table.name())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A store whose writes hang while `stuck` is set, as sled's did.
    struct Stuck {
        inner: sled_store::SledStore,
        stuck: AtomicBool,
    }

    #[async_trait]
    impl StateStore for Stuck {
        fn get(&self, t: Table, k: &str) -> Result<Option<Vec<u8>>, StoreError> {
            self.inner.get(t, k)
        }
        fn scan(
            &self,
            t: Table,
            p: &str,
            a: Option<&str>,
            l: usize,
        ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
            self.inner.scan(t, p, a, l)
        }
        async fn commit(&self, tx: Tx) -> Result<Committed, StoreError> {
            if self.stuck.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            self.inner.commit(tx).await
        }
        async fn flush(&self) -> Result<(), StoreError> {
            self.inner.flush().await
        }
        fn audit(&self) -> Arc<dyn AuditStore> {
            self.inner.audit()
        }
        fn writer_busy_for(&self) -> Option<Duration> {
            None
        }
        fn size_on_disk(&self) -> Option<u64> {
            None
        }
    }

    #[tokio::test]
    async fn a_stuck_write_is_refused_in_time_reported_and_forgotten_once_it_answers() {
        let dir = tempfile::tempdir().unwrap();
        let stuck = Arc::new(Stuck {
            inner: sled_store::SledStore::open(dir.path(), 1 << 20).unwrap(),
            stuck: AtomicBool::new(true),
        });
        let store = Store::new(stuck.clone(), Duration::from_millis(200));
        let t = std::time::Instant::now();
        let e = store.put(Table::Settings, "k", &1).await.unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(5));
        assert!(matches!(e, StoreError::Stalled { .. }), "{e}");
        assert!(e.to_string().contains("did not answer within"), "{e}");
        let problems = store.problems();
        assert!(
            problems
                .iter()
                .any(|p| p.text.starts_with("store writes failing")),
            "{problems:?}"
        );
        // Reads do not wait behind the stuck writer.
        assert_eq!(store.get::<i32>(Table::Settings, "k").await.unwrap(), None);
        stuck.stuck.store(false, Ordering::SeqCst);
        store.put(Table::Settings, "k", &2).await.unwrap();
        assert!(store.problems().is_empty());
        assert_eq!(
            store.get::<i32>(Table::Settings, "k").await.unwrap(),
            Some(2)
        );
    }

    #[tokio::test]
    async fn a_replica_that_is_not_the_leader_appends_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.put(Table::Settings, "before", &1).await.unwrap();
        store.fence_with(crate::fence::Fence::closed());
        let e = store.put(Table::Settings, "after", &2).await.unwrap_err();
        assert!(matches!(&e, StoreError::Fenced(_)), "{e:?}");
        assert!(e.to_string().starts_with("not recorded: "), "{e}");
        assert_eq!(
            store.get::<u32>(Table::Settings, "after").await.unwrap(),
            None
        );
        assert_eq!(store.audit_len(), 0);
        // The store itself is fine: `/readyz` must not blame it.
        assert!(!store.health.failing());
        assert!(store.problems().is_empty());
    }

    #[tokio::test]
    async fn a_compare_and_swap_lets_exactly_one_of_many_win() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let tries = (0..20).map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let tx = Tx::new()
                    .expect(Table::Prompts, "p1", None)
                    .put(Table::Prompts, "p1", &i);
                matches!(store.commit(tx).await.unwrap(), Committed::Done(_))
            })
        });
        let mut won = 0;
        for t in tries {
            won += usize::from(t.await.unwrap());
        }
        assert_eq!(won, 1);
    }

    /// The calls that once hung sled under concurrent writes are not made
    /// anywhere in rollbot (see sled_store.rs).
    #[test]
    fn no_sled_batches_transactions_or_async_flushes() {
        fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    walk(&p, out);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    out.push(p);
                }
            }
        }
        let mut files = Vec::new();
        walk(std::path::Path::new("src"), &mut files);
        for f in files {
            // PostgreSQL's transactions are the point of that store.
            if f.file_name().is_some_and(|n| n == "postgres_store.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&f).unwrap();
            for call in [
                ".apply_batch(",
                ".transaction(",
                ".flush_async(",
                ".checksum(",
            ] {
                let code: String = text
                    .lines()
                    .filter(|l| !l.trim_start().starts_with("//") && !l.contains("\"."))
                    .collect();
                assert!(!code.contains(call), "{} calls {call}", f.display());
            }
        }
    }
}
