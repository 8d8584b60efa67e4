//! The embedded store: one sled database, one writer thread.
//!
//! sled 0.34 hangs when writes, batches and flushes run concurrently: its
//! first `apply_batch` (or transaction) switches every later operation onto
//! one global reader-writer lock, and a flush holds the read side while it
//! waits for I/O that needs it too. So rollbot never calls `apply_batch`,
//! transactions or `flush_async`, turns sled's own periodic flusher off, and
//! sends every write to one thread that applies them in order and then calls
//! the synchronous `flush()` once for the whole group (group commit). Reads
//! go straight to sled, which needs no lock for them.
//!
//! Without batches a commit is a sequence of single-key writes. They are
//! applied in a fixed order (audit entry, its indexes, the log's head, then
//! the commit's key writes), and sled recovers a prefix of its log, so a
//! crash leaves a prefix of that order: the log repairs its head and
//! indexes at open (`SledAuditStore::open`), and the engine's recovery reads
//! the rest (an `inflight` record is only written after its `requested`
//! entry).

use super::busy::WriterBusy;
use super::{Committed, StateStore, StoreError, Table, Tx, Write};
use crate::audit::sled_store::HeadFile;
use crate::audit::{AuditStore, SledAuditStore};
use async_trait::async_trait;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Commits applied before one shared flush, at most.
const GROUP: usize = 512;

enum Job {
    Commit(Tx, oneshot::Sender<Result<Committed, StoreError>>),
    Flush(oneshot::Sender<Result<(), StoreError>>),
}

pub struct SledStore {
    db: sled::Db,
    trees: Arc<Vec<sled::Tree>>,
    audit: Arc<SledAuditStore>,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    /// Signalled by the writer when it has flushed and ended.
    writer_done: Mutex<Option<mpsc::Receiver<()>>>,
    busy: Arc<WriterBusy>,
    path: PathBuf,
}

/// sled settings for rollbot's store, shared by `serve`, the CLI and the
/// benchmark so measured figures are the ones users get.
pub fn sled_config(path: &Path, cache_bytes: u64) -> sled::Config {
    sled::Config::new()
        .path(path)
        // An upper bound of sled's page cache, not an allocation.
        .cache_capacity(cache_bytes)
        .mode(sled::Mode::HighThroughput)
        // Only the writer flushes (see the module comment).
        .flush_every_ms(None)
}

impl SledStore {
    pub fn open(path: &Path, cache_bytes: u64) -> anyhow::Result<SledStore> {
        let db = super::open::open_sled(path, cache_bytes)?;
        let mut trees = Vec::with_capacity(Table::ALL.len());
        for t in Table::ALL {
            trees.push(db.open_tree(t.name()).map_err(|e| {
                anyhow::anyhow!(
                    "cannot open {} in the store at {}: {e}",
                    t.name(),
                    path.display()
                )
            })?);
        }
        let audit = Arc::new(
            super::open::no_panic(path, || SledAuditStore::open(&db))?
                .map_err(|e| anyhow::anyhow!("opening the audit log at {}: {e}", path.display()))?,
        );
        let head_file = HeadFile::at(path);
        audit.set_acknowledged(head_file.read());
        let trees = Arc::new(trees);
        let (tx, rx) = mpsc::channel();
        let busy = Arc::new(WriterBusy::new());
        let (done_tx, done_rx) = mpsc::channel();
        {
            let (db, trees, audit, busy) = (db.clone(), trees.clone(), audit.clone(), busy.clone());
            std::thread::Builder::new()
                .name("rollbot-store-writer".into())
                .spawn(move || {
                    write_loop(db, trees, audit, head_file, rx, busy);
                    let _ = done_tx.send(());
                })?;
        }
        Ok(SledStore {
            db,
            trees,
            audit,
            jobs: Mutex::new(Some(tx)),
            writer_done: Mutex::new(Some(done_rx)),
            busy,
            path: path.to_path_buf(),
        })
    }

    fn send(&self, job: Job) -> Result<(), StoreError> {
        match self.jobs.lock().unwrap().as_ref() {
            Some(s) => s.send(job).map_err(|_| StoreError::Closed),
            None => Err(StoreError::Closed),
        }
    }
}

impl Drop for SledStore {
    /// Lets the writer finish what is queued and flush, then waits for it,
    /// for a bounded time: a stuck disk must not hang the process's exit.
    fn drop(&mut self) {
        self.jobs.lock().unwrap().take();
        if let Some(done) = self.writer_done.lock().unwrap().take() {
            if done.recv_timeout(Duration::from_secs(10)).is_err() {
                tracing::error!(path = %self.path.display(), "the store's writer did not finish within 10 s; leaving it");
            }
        }
        tracing::debug!(path = %self.path.display(), "store closed");
    }
}

#[async_trait]
impl StateStore for SledStore {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.trees[table.index()]
            .get(key.as_bytes())?
            .map(|v| v.to_vec()))
    }

    fn scan(
        &self,
        table: Table,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let tree = &self.trees[table.index()];
        let iter = match after {
            Some(a) => {
                let start = std::ops::Bound::Excluded(a.as_bytes().to_vec());
                tree.range::<Vec<u8>, _>((start, std::ops::Bound::Unbounded))
            }
            None => tree.range::<Vec<u8>, _>(prefix.as_bytes().to_vec()..),
        };
        let mut out = Vec::new();
        for kv in iter {
            let (k, v) = kv?;
            if !k.starts_with(prefix.as_bytes()) || out.len() >= limit {
                break;
            }
            out.push((String::from_utf8_lossy(&k).into_owned(), v.to_vec()));
        }
        Ok(out)
    }

    async fn commit(&self, tx: Tx) -> Result<Committed, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(Job::Commit(tx, reply))?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn flush(&self) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(Job::Flush(reply))?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    fn audit(&self) -> Arc<dyn AuditStore> {
        self.audit.clone()
    }

    fn writer_busy_for(&self) -> Option<Duration> {
        self.busy.busy_for()
    }

    fn size_on_disk(&self) -> Option<u64> {
        self.db.size_on_disk().ok()
    }
}

fn write_loop(
    db: sled::Db,
    trees: Arc<Vec<sled::Tree>>,
    audit: Arc<SledAuditStore>,
    head_file: HeadFile,
    rx: mpsc::Receiver<Job>,
    busy: Arc<WriterBusy>,
) {
    let mut written_head = audit.head().0;
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < GROUP {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let group = jobs.len();
        busy.start();
        let mut results = Vec::with_capacity(jobs.len());
        let mut wrote = false;
        let mut replies = Vec::with_capacity(jobs.len());
        for job in jobs {
            match job {
                Job::Commit(tx, reply) => {
                    let r = apply(&trees, &audit, tx);
                    wrote |= matches!(r, Ok(Committed::Done(_)));
                    results.push(Some(r));
                    replies.push(Reply::Commit(reply));
                }
                Job::Flush(reply) => {
                    wrote = true;
                    results.push(None);
                    replies.push(Reply::Flush(reply));
                }
            }
        }
        let flushed = if wrote {
            db.flush().map(drop).map_err(|e| e.to_string())
        } else {
            Ok(())
        };
        busy.idle();
        tracing::debug!(target: "rollbot::store", commits = group, took_ms = started.elapsed().as_millis() as u64, "group committed");
        match &flushed {
            Err(e) => tracing::error!(error = %e, "the store could not flush to disk"),
            Ok(()) => {
                let (seq, hash) = audit.head();
                if seq != written_head {
                    match head_file.write(seq, &hash) {
                        Ok(()) => written_head = seq,
                        Err(e) => {
                            tracing::warn!(error = %e, "could not note the audit log's head beside the store")
                        }
                    }
                }
            }
        }
        for (reply, result) in replies.into_iter().zip(results) {
            match reply {
                Reply::Commit(tx) => {
                    let r = match (result.expect("a commit has a result"), &flushed) {
                        (Ok(Committed::Done(_)), Err(e)) => Err(StoreError::NotDurable(e.clone())),
                        (r, _) => r,
                    };
                    let _ = tx.send(r);
                }
                Reply::Flush(tx) => {
                    let _ = tx.send(flushed.clone().map_err(StoreError::NotDurable));
                }
            }
        }
    }
    // Every handle is gone: make what was written durable.
    let _ = db.flush();
}

enum Reply {
    Commit(oneshot::Sender<Result<Committed, StoreError>>),
    Flush(oneshot::Sender<Result<(), StoreError>>),
}

/// Applies one commit: conditions, audit entries, key writes, in this order.
fn apply(trees: &[sled::Tree], audit: &SledAuditStore, tx: Tx) -> Result<Committed, StoreError> {
    // One writer: nothing can change a key between this check and the writes.
    for w in &tx.writes {
        if let Write::Expect { table, key, value } = w {
            let current = trees[table.index()].get(key.as_bytes())?;
            if current.as_deref() != value.as_deref() {
                return Ok(Committed::Conflict);
            }
        }
    }
    let entries = if tx.records.is_empty() {
        vec![]
    } else {
        audit
            .write(tx.records)
            .map_err(|e| StoreError::Failed(e.to_string()))?
    };
    for w in tx.writes {
        match w {
            Write::Put { table, key, value } => {
                trees[table.index()].insert(key.as_bytes(), value)?;
            }
            Write::Remove { table, key } => {
                trees[table.index()].remove(key.as_bytes())?;
            }
            Write::Expect { .. } => {}
        }
    }
    Ok(Committed::Done(entries))
}
