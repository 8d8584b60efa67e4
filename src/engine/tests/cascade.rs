//! A cascade cut off by a crash: the step in flight is marked interrupted
//! and the cascade's own request is closed saying its steps may have acted
//! (never "nothing was sent").

use super::*;

#[tokio::test]
async fn a_crash_during_a_cascade_says_which_steps_may_have_acted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let h = harness_at(&path, 0);
            let start = h.clock.now() - chrono::Duration::minutes(1);
            for (i, svc) in ["checkout", "payments"].into_iter().enumerate() {
                let r = crate::controller::Rollout {
                    release: Some("r-1".into()),
                    ..crate::controller::Rollout::watching(
                        format!("r{i}"),
                        svc,
                        ("v1".into(), "v2".into()),
                        start,
                        "api:ci",
                    )
                };
                crate::controller::rollouts::save(&h.engine.store, &r)
                    .await
                    .unwrap();
            }
            // The second step hangs, then the process goes away.
            h.sim.inject_hang("payments", "rollback", 1);
            let e = h.engine.clone();
            tokio::spawn(async move {
                e.execute(
                    Request::new(
                        who("responder"),
                        Action::RollbackRelease {
                            release: "r-1".into(),
                        },
                    )
                    .correlation_id("casc"),
                )
                .await
            });
            for _ in 0..200 {
                let inflight = h
                    .engine
                    .store
                    .get_raw(crate::store::Table::Inflight, "casc-2")
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
    assert_eq!(found[0].correlation_id, "casc-2");
    let of = |corr: &str| {
        h.engine
            .audit()
            .query(&crate::audit::Query {
                correlation_id: Some(corr.into()),
                limit: 5,
                ..Default::default()
            })
            .unwrap()
    };
    assert_eq!(of("casc-1")[0].record.outcome, AuditOutcome::Succeeded);
    assert_eq!(of("casc-2")[0].record.outcome, AuditOutcome::Interrupted);
    let closed = &of("casc")[0];
    assert_eq!(closed.record.action, "rollback_release");
    assert_eq!(closed.record.outcome, AuditOutcome::Failed);
    assert_eq!(
        closed.record.parameters["interrupted"],
        serde_json::json!(true)
    );
    assert!(
        closed.record.detail.contains("casc-1, -2")
            && !closed.record.detail.contains("nothing was sent"),
        "{}",
        closed.record.detail
    );
}
