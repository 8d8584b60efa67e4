//! A store that fails after the backend acted: the person is told both
//! what the backend did and that the audit entry is still being written.

use super::*;
use crate::store::{Committed, StateStore, StoreError, Tx, Write};

/// sled underneath, but every commit that ends an `inflight` record (the
/// result entry of an action) fails, as a full disk would.
struct ResultsFail(crate::store::sled_store::SledStore);

#[async_trait::async_trait]
impl StateStore for ResultsFail {
    fn get(&self, t: Table, k: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.0.get(t, k)
    }
    fn scan(
        &self,
        t: Table,
        p: &str,
        a: Option<&str>,
        l: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.0.scan(t, p, a, l)
    }
    async fn commit(&self, tx: Tx) -> Result<Committed, StoreError> {
        let ends_inflight = tx.writes.iter().any(|w| {
            matches!(
                w,
                Write::Remove {
                    table: Table::Inflight,
                    ..
                }
            )
        });
        if ends_inflight {
            return Err(StoreError::Failed("No space left on device".into()));
        }
        self.0.commit(tx).await
    }
    async fn flush(&self) -> Result<(), StoreError> {
        self.0.flush().await
    }
    fn audit(&self) -> Arc<dyn crate::audit::AuditStore> {
        self.0.audit()
    }
    fn writer_busy_for(&self) -> Option<Duration> {
        None
    }
    fn size_on_disk(&self) -> Option<u64> {
        None
    }
}

#[tokio::test]
async fn a_result_the_audit_log_cannot_record_keeps_the_backends_summary_beside_the_warning() {
    let dir = tempfile::tempdir().unwrap();
    let sled = crate::store::sled_store::SledStore::open(dir.path(), 1 << 20).unwrap();
    let store = Arc::new(Store::new(
        Arc::new(ResultsFail(sled)),
        Duration::from_secs(5),
    ));
    let h = harness_on(store, 0);
    h.sim.start_canary("payments", "v2");
    let o = h.engine.execute(rollback("responder", "payments")).await;
    assert_eq!(o.status, Status::Succeeded, "{}", o.message.plain());
    let text = &o.message.text;
    assert!(
        text.contains("canary traffic set to 0%") && text.contains("serves 100%"),
        "the backend's summary is kept: {text}"
    );
    assert!(
        text.contains("audit log could not record this result yet")
            && text.contains("No space left on device"),
        "the warning is added: {text}"
    );
}
