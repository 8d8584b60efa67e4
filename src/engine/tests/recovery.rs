//! Actions cut off by a crash or a failing store, closed at the next start.

use super::*;

#[tokio::test]
async fn an_interrupted_action_is_found_marked_and_announced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    // An action that never finishes, cut off as a crash would: its whole
    // runtime goes away, as the process would.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let h = harness_at(&path, 0);
            h.sim.inject_hang("payments", "rollback", 1);
            let e = h.engine.clone();
            tokio::spawn(async move {
                e.execute(rollback("responder", "payments").correlation_id("crash-1"))
                    .await
            });
            for _ in 0..200 {
                let inflight = h
                    .engine
                    .store
                    .get_raw(crate::store::Table::Inflight, "crash-1")
                    .await
                    .unwrap();
                if inflight.is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        rt.shutdown_timeout(Duration::from_secs(5));
    })
    .join()
    .unwrap();
    let h = harness_at(dir.path(), 0);
    let found = h.engine.recover().await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].correlation_id, "crash-1");
    let steps = h
        .engine
        .audit()
        .query(&crate::audit::Query {
            correlation_id: Some("crash-1".into()),
            limit: 5,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(steps[0].record.outcome, AuditOutcome::Interrupted);
    assert_eq!(steps[1].record.outcome, AuditOutcome::Requested);
    assert!(h
        .chat
        .0
        .lock()
        .unwrap()
        .iter()
        .any(|(_, m)| m.title == "Interrupted: rollback of payments"));
    // Reported once, not at every start.
    assert!(h.engine.recover().await.unwrap().is_empty());
}

/// What a failing store can leave behind, closed at the next start: an
/// in-flight record whose `requested` entry never became durable never
/// started (dropped, not reported), and a `requested` entry with no record
/// and no result never acted (closed as `failed`, `not_acted`).
#[tokio::test]
async fn recovery_reports_only_what_may_have_acted_and_closes_what_never_did() {
    let dir = tempfile::tempdir().unwrap();
    {
        let h = harness_at(dir.path(), 0);
        let e = &h.engine;
        let orphan = Inflight {
            correlation_id: "never-recorded".into(),
            service: "payments".into(),
            action: "rollback".into(),
            actor: who("responder"),
            started: e.clock.now(),
            channel: Some("deploys".into()),
            idempotency_key: None,
            command: None,
            owner: None,
        };
        e.store
            .put(crate::store::Table::Inflight, "never-recorded", &orphan)
            .await
            .unwrap();
        let req = rollback("responder", "payments");
        e.record(
            &req,
            "store-failed",
            Some("payments"),
            BTreeMap::new(),
            AuditOutcome::Requested,
            String::new(),
        )
        .await
        .unwrap();
    }
    let h = harness_at(dir.path(), 0);
    let found = h.engine.recover().await.unwrap();
    assert!(found.is_empty(), "nothing that may have acted: {found:?}");
    let all = h
        .engine
        .audit()
        .query(&crate::audit::Query::default())
        .unwrap();
    assert!(!all
        .iter()
        .any(|e| e.record.outcome == AuditOutcome::Interrupted));
    assert!(!all
        .iter()
        .any(|e| e.record.correlation_id == "never-recorded"));
    let closed = all
        .iter()
        .find(|e| {
            e.record.correlation_id == "store-failed" && e.record.outcome == AuditOutcome::Failed
        })
        .expect("the request without an end is closed");
    assert_eq!(
        closed.record.parameters["not_acted"],
        serde_json::json!(true)
    );
    assert!(
        closed.record.detail.contains("nothing was sent"),
        "{}",
        closed.record.detail
    );
    assert!(h
        .engine
        .store
        .get_raw(crate::store::Table::Inflight, "never-recorded")
        .await
        .unwrap()
        .is_none());
    // Closed once, not at every start.
    h.engine.recover().await.unwrap();
    let again = h
        .engine
        .audit()
        .query(&crate::audit::Query::default())
        .unwrap();
    assert_eq!(again.len(), all.len());
}
