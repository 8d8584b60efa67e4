//! The audit log in sled.
//!
//! One tree holds entries and their indexes, so an entry and its index keys
//! land in one atomic batch:
//!   `e` + seq (u64 big-endian)            → 32-byte hash + canonical JSON body
//!   `s` + service + 0 + seq               → (empty)   newest-first by service
//!   `a` + actor id + 0 + seq              → (empty)   newest-first by actor
//!   `c` + correlation id + 0 + seq        → (empty)   one action's steps
//!   `h`                                   → last seq + its hash, so entries
//!                                           deleted from the end are noticed
//! Entries are written by the store's one writer (`store::sled_store`), which
//! flushes once per group of commits.

use super::*;
use std::sync::Mutex;

pub struct SledAuditStore {
    tree: sled::Tree,
    /// Sequence number and hash of the last entry; the lock also orders appends.
    head: Mutex<(u64, String)>,
    /// The last entry known to have been durable, kept outside the
    /// database (see [`HeadFile`]): a database that lost its tail cannot
    /// hide it in its own head record.
    acknowledged: Mutex<Option<(u64, String)>>,
}

const HEAD_KEY: &[u8] = b"h";

fn entry_key(seq: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = b'e';
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn index_key(kind: u8, value: &str, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(value.len() + 10);
    k.push(kind);
    k.extend_from_slice(value.as_bytes());
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn index_keys(record: &Record, seq: u64) -> Vec<Vec<u8>> {
    let mut keys = Vec::with_capacity(3);
    if let Some(s) = &record.service {
        keys.push(index_key(b's', s, seq));
    }
    keys.push(index_key(b'a', &record.actor.qualified_id(), seq));
    keys.push(index_key(b'c', &record.correlation_id, seq));
    keys
}

fn index_prefix(kind: u8, value: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(value.len() + 2);
    k.push(kind);
    k.extend_from_slice(value.as_bytes());
    k.push(0);
    k
}

fn seq_of_index_key(k: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&k[k.len() - 8..]);
    u64::from_be_bytes(b)
}

fn decode(seq: u64, value: &[u8]) -> Result<Entry, AuditError> {
    if value.len() < 32 {
        return Err(AuditError::Corrupt(seq, "value shorter than a hash".into()));
    }
    let body: OwnedBody = serde_json::from_slice(&value[32..])
        .map_err(|e| AuditError::Corrupt(seq, e.to_string()))?;
    Ok(Entry {
        seq: body.seq,
        record: body.record,
        prev_hash: body.prev_hash,
        hash: hex::encode(&value[..32]),
    })
}

impl SledAuditStore {
    /// Opens the log and repairs what a crash in the middle of an append
    /// can leave: entries written after the last head record get their
    /// index keys and the head moved to them, so no entry is ever written
    /// twice under one sequence number.
    pub fn open(db: &sled::Db) -> Result<SledAuditStore, AuditError> {
        let tree = db.open_tree("audit")?;
        let recorded = tree.get(HEAD_KEY)?.filter(|v| v.len() == 40).map(|v| {
            (
                u64::from_be_bytes(v[..8].try_into().expect("8 bytes")),
                hex::encode(&v[8..]),
            )
        });
        let last = match tree.scan_prefix([b'e']).next_back() {
            Some(kv) => {
                let (k, v) = kv?;
                let seq = u64::from_be_bytes(k[1..9].try_into().expect("9-byte entry key"));
                Some((seq, hex::encode(&v[..32.min(v.len())])))
            }
            None => None,
        };
        let store = SledAuditStore {
            tree,
            head: Mutex::new((0, GENESIS_HASH.to_string())),
            acknowledged: Mutex::new(None),
        };
        let head = match (recorded, last) {
            (Some(h), Some(l)) if l.0 > h.0 => {
                tracing::warn!(
                    from = h.0 + 1,
                    to = l.0,
                    "audit log: completing entries written when rollbot stopped"
                );
                store.repair(h.0 + 1, l.0)?;
                l
            }
            (Some(h), _) => h,
            (None, Some(l)) => l,
            (None, None) => (0, GENESIS_HASH.to_string()),
        };
        *store.head.lock().expect("audit head lock") = head;
        Ok(store)
    }

    /// The last sequence number and hash.
    pub(crate) fn head(&self) -> (u64, String) {
        self.head.lock().expect("audit head lock").clone()
    }

    /// Remembers what the head file says was durable.
    pub(crate) fn set_acknowledged(&self, head: Option<(u64, String)>) {
        *self.acknowledged.lock().expect("audit head lock") = head;
    }

    /// Writes the index keys of entries `from..=to` and the head record.
    fn repair(&self, from: u64, to: u64) -> Result<(), AuditError> {
        let mut last_hash = None;
        for seq in from..=to {
            let Some(v) = self.tree.get(entry_key(seq))? else {
                continue;
            };
            let e = decode(seq, &v)?;
            for k in index_keys(&e.record, seq) {
                self.tree.insert(k, &[])?;
            }
            last_hash = Some(v[..32].to_vec());
        }
        if let Some(h) = last_hash {
            let mut head = Vec::with_capacity(40);
            head.extend_from_slice(&to.to_be_bytes());
            head.extend_from_slice(&h);
            self.tree.insert(HEAD_KEY, head)?;
        }
        Ok(())
    }

    /// Seals records into the chain and writes them: each entry, then its
    /// index keys, then the head. Called only by the store's one writer.
    pub(crate) fn write(&self, records: Vec<Record>) -> Result<Vec<Entry>, AuditError> {
        let mut head = self.head.lock().expect("audit head lock");
        let (mut seq, mut prev) = head.clone();
        let mut out = Vec::with_capacity(records.len());
        let mut last_hash = [0u8; 32];
        for record in records {
            seq += 1;
            let body = serde_json::to_vec(&Body {
                seq,
                prev_hash: &prev,
                record: &record,
            })
            .expect("audit records serialize");
            let hash = chain_hash(&prev, &body);
            let mut value = Vec::with_capacity(32 + body.len());
            value.extend_from_slice(&hash);
            value.extend_from_slice(&body);
            self.tree.insert(entry_key(seq), value)?;
            for k in index_keys(&record, seq) {
                self.tree.insert(k, &[])?;
            }
            let hash_hex = hex::encode(hash);
            last_hash = hash;
            out.push(Entry {
                seq,
                record,
                prev_hash: std::mem::replace(&mut prev, hash_hex.clone()),
                hash: hash_hex,
            });
        }
        if !out.is_empty() {
            let mut h = Vec::with_capacity(40);
            h.extend_from_slice(&seq.to_be_bytes());
            h.extend_from_slice(&last_hash);
            self.tree.insert(HEAD_KEY, h)?;
            *head = (seq, prev);
        }
        Ok(out)
    }

    /// Checks entries from `start` on, the first linking to `prev`.
    fn verify_from(&self, start: u64, prev: String) -> Result<VerifyReport, AuditError> {
        let bad = |seq: u64, what: String, checked: u64| {
            Ok(VerifyReport {
                checked,
                first_bad: Some((seq, what)),
            })
        };
        let mut check = super::chain::ChainCheck::new(start, prev);
        for kv in self.tree.range(entry_key(start)..=entry_key(u64::MAX)) {
            let (k, v) = kv?;
            let key_seq = u64::from_be_bytes(k[1..9].try_into().expect("entry key"));
            let (stored, body) = v.split_at(32.min(v.len()));
            if let Err((seq, what)) = check.next(key_seq, stored, body) {
                return bad(seq, what, check.checked());
            }
        }
        let checked = check.checked();
        let head = self.head.lock().expect("audit head lock").0;
        let last = start + checked - 1;
        if last < head {
            return bad(last + 1, format!(
                "missing: the log ends at #{last} but #{head} was written (entries deleted from the end)"
            ), checked);
        }
        let acknowledged = self.acknowledged.lock().expect("audit head lock").clone();
        if let Some((seq, hash)) = acknowledged {
            if last < seq {
                return bad(last + 1, format!(
                    "missing: the log ends at #{last} but #{seq} was durably written before (the store lost its last {} entries)",
                    seq - last
                ), checked);
            }
            if seq >= start {
                match self.get(seq)? {
                    Some(e) if e.hash == hash => {}
                    _ => {
                        return bad(
                            seq,
                            "it differs from the entry durably written under that number (the log was rewritten)".into(),
                            checked,
                        )
                    }
                }
            }
        }
        Ok(VerifyReport {
            checked,
            first_bad: None,
        })
    }

    fn entries_from_index(
        &self,
        prefix: Vec<u8>,
        q: &Query,
        out: &mut Vec<Entry>,
    ) -> Result<(), AuditError> {
        for kv in self.tree.scan_prefix(prefix).rev() {
            let (k, _) = kv?;
            let seq = seq_of_index_key(&k);
            let Some(e) = self.get(seq)? else { continue };
            if !keep(&e, q, out)? {
                break;
            }
        }
        Ok(())
    }

    /// The raw tree, for tools that inspect or repair the log by hand.
    pub fn tree(&self) -> &sled::Tree {
        &self.tree
    }
}

/// Applies the filters; returns false once the scan can stop.
pub(crate) fn keep(e: &Entry, q: &Query, out: &mut Vec<Entry>) -> Result<bool, AuditError> {
    if let Some(since) = q.since {
        if e.record.time < since {
            return Ok(false);
        }
    }
    let matches = q
        .service
        .as_ref()
        .is_none_or(|s| e.record.service.as_deref() == Some(s))
        && q.actor
            .as_ref()
            .is_none_or(|a| e.record.actor.qualified_id() == *a)
        && q.correlation_id
            .as_ref()
            .is_none_or(|c| e.record.correlation_id == *c);
    if matches {
        out.push(e.clone());
    }
    Ok(q.limit == 0 || out.len() < q.limit)
}

/// Decimal digits of `n`, without allocating.
pub(crate) fn itoa_u64(mut n: u64, buf: &mut [u8; 20]) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[i..]).expect("ascii digits")
}

impl AuditStore for SledAuditStore {
    fn get(&self, seq: u64) -> Result<Option<Entry>, AuditError> {
        match self.tree.get(entry_key(seq))? {
            Some(v) => decode(seq, &v).map(Some),
            None => Ok(None),
        }
    }

    fn query(&self, q: &Query) -> Result<Vec<Entry>, AuditError> {
        let mut out = Vec::new();
        if let Some(c) = &q.correlation_id {
            self.entries_from_index(index_prefix(b'c', c), q, &mut out)?;
        } else if let Some(s) = &q.service {
            self.entries_from_index(index_prefix(b's', s), q, &mut out)?;
        } else if let Some(a) = &q.actor {
            self.entries_from_index(index_prefix(b'a', a), q, &mut out)?;
        } else {
            for kv in self.tree.scan_prefix([b'e']).rev() {
                let (k, v) = kv?;
                let e = decode(
                    u64::from_be_bytes(k[1..9].try_into().expect("entry key")),
                    &v,
                )?;
                if !keep(&e, q, &mut out)? {
                    break;
                }
            }
        }
        Ok(out)
    }

    fn for_each(&self, f: &mut dyn FnMut(Entry) -> bool) -> Result<(), AuditError> {
        for kv in self.tree.scan_prefix([b'e']) {
            let (k, v) = kv?;
            if !f(decode(
                u64::from_be_bytes(k[1..9].try_into().expect("entry key")),
                &v,
            )?) {
                break;
            }
        }
        Ok(())
    }

    fn for_each_raw(&self, f: &mut RawVisit) -> Result<(), AuditError> {
        for kv in self.tree.scan_prefix([b'e']) {
            let (k, v) = kv?;
            let seq = u64::from_be_bytes(k[1..9].try_into().expect("entry key"));
            let (hash, body) = v.split_at(32.min(v.len()));
            if !f(seq, hash, body) {
                break;
            }
        }
        Ok(())
    }

    fn verify(&self) -> Result<VerifyReport, AuditError> {
        self.verify_from(1, GENESIS_HASH.to_string())
    }

    fn verify_tail(&self, n: u64) -> Result<VerifyReport, AuditError> {
        let head = self.len();
        if head <= n {
            return self.verify();
        }
        let from = head - n + 1;
        // The first checked entry's link backwards is taken on trust; every
        // link after it, and the head record, are checked.
        match self.tree.get(entry_key(from))? {
            Some(v) => match decode(from, &v) {
                Ok(e) => self.verify_from(from, e.prev_hash),
                Err(e) => Ok(VerifyReport {
                    checked: 0,
                    first_bad: Some((from, format!("its contents are not a readable entry ({e})"))),
                }),
            },
            None => Ok(VerifyReport {
                checked: 0,
                first_bad: Some((
                    from,
                    "missing: an entry before the head is gone (entries deleted)".into(),
                )),
            }),
        }
    }

    fn len(&self) -> u64 {
        self.head.lock().expect("audit head lock").0
    }
}

/// A small file beside the database that holds the last durable entry's
/// sequence number and hash, rewritten after each flush that appended.
/// Written only after the database's own flush, it is never ahead of what
/// the database made durable, so a database holding less lost data.
pub struct HeadFile(std::path::PathBuf);

impl HeadFile {
    pub fn at(dir: &std::path::Path) -> HeadFile {
        HeadFile(dir.join("rollbot-audit-head"))
    }

    fn line(seq: u64, hash: &str) -> String {
        let check = hex::encode(&Sha256::digest(format!("{seq} {hash}").as_bytes())[..8]);
        format!("{seq} {hash} {check}\n")
    }

    pub fn write(&self, seq: u64, hash: &str) -> std::io::Result<()> {
        use std::io::Write;
        // One small write at offset 0 of a fixed-length line: the
        // content is either the old or the new line, and a torn one fails
        // its check and is ignored.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.0)?;
        f.write_all(Self::line(seq, hash).as_bytes())
    }

    pub fn read(&self) -> Option<(u64, String)> {
        let text = std::fs::read_to_string(&self.0).ok()?;
        let mut parts = text.split_whitespace();
        let seq: u64 = parts.next()?.parse().ok()?;
        let hash = parts.next()?.to_string();
        let line = Self::line(seq, &hash);
        (text.starts_with(line.trim_end())).then_some((seq, hash))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Actor, Platform};

    pub(crate) fn record(service: &str, action: &str, outcome: Outcome) -> Record {
        Record {
            time: Utc::now(),
            actor: Actor::new(Platform::Slack, "U0123ABCD", "Ada"),
            action: action.into(),
            service: Some(service.into()),
            parameters: BTreeMap::new(),
            outcome,
            reason: "test".into(),
            detail: String::new(),
            correlation_id: format!("c-{action}"),
            idempotency_key: None,
        }
    }

    async fn store_with(n: u64) -> (tempfile::TempDir, sled::Db, SledAuditStore) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let s = SledAuditStore::open(&db).unwrap();
        for i in 0..n {
            let svc = if i % 2 == 0 { "checkout" } else { "payments" };
            s.write(vec![record(svc, "rollback", Outcome::Succeeded)])
                .unwrap();
        }
        (dir, db, s)
    }

    #[tokio::test]
    async fn chain_links_and_queries_by_service() {
        let (_d, _db, s) = store_with(10).await;
        assert_eq!(s.len(), 10);
        let e2 = s.get(2).unwrap().unwrap();
        let e1 = s.get(1).unwrap().unwrap();
        assert_eq!(e2.prev_hash, e1.hash);
        assert_eq!(e1.prev_hash, GENESIS_HASH);
        let last = s
            .query(&Query {
                service: Some("checkout".into()),
                limit: 3,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            last.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![9, 7, 5]
        );
        assert_eq!(s.verify().unwrap().first_bad, None);
    }

    #[tokio::test]
    async fn verify_names_an_edited_entry() {
        let (_d, _db, s) = store_with(5).await;
        let k = entry_key(3);
        let mut v = s.tree.get(k).unwrap().unwrap().to_vec();
        let i = v.len() - 5;
        v[i] ^= 0x01; // flip one bit inside the JSON body
        s.tree.insert(k, v).unwrap();
        let r = s.verify().unwrap();
        assert_eq!(r.first_bad.as_ref().map(|b| b.0), Some(3), "{r}");
    }

    /// A crash between an entry and its head record: the next open moves
    /// the head to the entry and writes its index keys, so no sequence
    /// number is ever used twice.
    #[tokio::test]
    async fn an_entry_written_after_the_last_head_is_completed_at_open() {
        let (_d, db, s) = store_with(3).await;
        let mut head = Vec::new();
        head.extend_from_slice(&2u64.to_be_bytes());
        head.extend_from_slice(&hex::decode(s.get(2).unwrap().unwrap().hash).unwrap());
        s.tree.insert(HEAD_KEY, head).unwrap();
        for k in index_keys(&s.get(3).unwrap().unwrap().record, 3) {
            s.tree.remove(k).unwrap();
        }
        drop(s);
        let again = SledAuditStore::open(&db).unwrap();
        assert_eq!(again.len(), 3);
        let by_service = again
            .query(&Query {
                service: Some("checkout".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(by_service.first().map(|e| e.seq), Some(3));
        assert_eq!(again.verify().unwrap().first_bad, None);
        let next = again
            .write(vec![record("checkout", "rollback", Outcome::Succeeded)])
            .unwrap();
        assert_eq!(next[0].seq, 4);
    }

    /// A database that lost its tail together with its own head record is
    /// caught by the head written beside it.
    #[tokio::test]
    async fn a_store_that_lost_its_tail_is_caught_by_the_head_file() {
        let (dir, _db, s) = store_with(5).await;
        let file = HeadFile::at(dir.path());
        let last = s.get(5).unwrap().unwrap();
        file.write(5, &last.hash).unwrap();
        s.set_acknowledged(file.read());
        for seq in [4u64, 5] {
            s.tree.remove(entry_key(seq)).unwrap();
        }
        let mut head = Vec::new();
        head.extend_from_slice(&3u64.to_be_bytes());
        head.extend_from_slice(&hex::decode(s.get(3).unwrap().unwrap().hash).unwrap());
        s.tree.insert(HEAD_KEY, head).unwrap();
        *s.head.lock().unwrap() = (3, s.get(3).unwrap().unwrap().hash);
        let r = s.verify().unwrap();
        let (seq, what) = r.first_bad.expect("the loss is found");
        assert_eq!(seq, 4);
        assert!(what.contains("lost its last 2 entries"), "{what}");
        // A torn head file (bad check) is ignored rather than believed.
        std::fs::write(dir.path().join("rollbot-audit-head"), "9 abc 0000\n").unwrap();
        assert_eq!(file.read(), None);
    }
}
