//! The `argo-rollouts` backend through the engine, against the fake API
//! server with a stand-in for the Argo Rollouts controller. The requests
//! are compared with what `kubectl argo rollouts` sends (its `abort.go`,
//! `retry.go`, `pause.go`, `promote.go` and `undo.go`): same subresource,
//! same content type, same JSON.

use crate::support::fake_argo::{seed_rollout, template, ArgoController, HASH_LABEL, REVISION};
use crate::support::fake_kube::{standard_kinds, FakeKube, Kind, Logged};
use crate::support::kube_bot::{api_action, rollout_keys, Backend, Bot};
use rollbot::domain::{Action, Actor, Platform};
use rollbot::engine::{Request, Status};
use serde_json::{json, Value};
use std::path::Path;

const TOKEN: &str = "argo-token-51c0de";
const BASE: &str = "/apis/argoproj.io/v1alpha1/namespaces/prod/rollouts/web";
const MERGE: &str = "application/merge-patch+json";

const BACKEND: Backend = Backend {
    table: "argo",
    kind: "argo-rollouts",
    token: TOKEN,
};

async fn start(dir: &Path, fake: &FakeKube, target: &str, rollout_timeout: &str) -> Bot {
    BACKEND
        .start(dir, fake, &rollout_keys(rollout_timeout), target)
        .await
}

/// Rollout `web` in `prod`: revisions 1 and 2 promoted, revision 3 a canary
/// paused at step 1 of 6 (weight 20).
async fn cluster_with(kinds: Vec<Kind>) -> (FakeKube, ArgoController) {
    let fake = FakeKube::start(kinds).await;
    let ctl = ArgoController::install(&fake, 0);
    seed_rollout(
        &fake,
        "prod",
        "web",
        &[
            "registry.example.com/web:1.0",
            "registry.example.com/web:1.1",
            "registry.example.com/web:1.2",
        ],
    );
    fake.clear_requests();
    (fake, ctl)
}

async fn cluster() -> (FakeKube, ArgoController) {
    cluster_with(standard_kinds()).await
}

/// (method, path, content type, body, status) of every write.
fn writes(fake: &FakeKube) -> Vec<(String, String, String, Value, u16)> {
    fake.writes()
        .iter()
        .map(|r: &Logged| {
            (
                r.method.clone(),
                r.path.clone(),
                r.content_type.clone(),
                r.json(),
                r.status,
            )
        })
        .collect()
}

fn patch(path: &str, ct: &str, body: Value, status: u16) -> (String, String, String, Value, u16) {
    ("PATCH".into(), path.into(), ct.into(), body, status)
}

fn rollout(fake: &FakeKube) -> Value {
    fake.get("rollouts", "prod", "web").unwrap()
}

#[tokio::test]
async fn abort_patches_the_status_subresource_and_verification_waits_for_the_controller() {
    let dir = tempfile::tempdir().unwrap();
    let (fake, ctl) = cluster().await;
    ctl.set_lag(3);
    let bot = start(dir.path(), &fake, "", "10s").await;
    let out = bot.rollback(None).await;
    let text = out.message.plain();
    assert_eq!(out.status, Status::Succeeded, "{text}");
    assert!(out.message.title.contains("3 → 2"), "{}", out.message.title);
    // Exactly the plugin's abort: one merge patch to /status.
    assert_eq!(
        writes(&fake),
        [patch(
            &format!("{BASE}/status"),
            MERGE,
            json!({"status": {"abort": true}}),
            200
        )]
    );
    let ro = rollout(&fake);
    assert_eq!(ro["status"]["phase"], "Degraded");
    assert_eq!(ro["status"]["canary"]["weights"]["canary"]["weight"], 0);
    // The template still names the canary: abort does not undo.
    assert_eq!(
        ro["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.example.com/web:1.2"
    );
    // Verification read until the controller had reacted, and said so in chat.
    let lines = bot.chat_lines("Degraded (RolloutAborted)").await;
    assert!(
        lines.iter().any(|l| l
            .contains("Paused (CanaryPauseStep), step 1 of 6, canary weight 20%")
            && l.contains("waiting until aborted")),
        "{lines:#?}"
    );
    let e = bot.result_entry(&out.correlation_id);
    let v = e.record.parameters["verification"]["detail"].to_string();
    assert!(
        v.contains("Degraded (RolloutAborted), step 1 of 6, canary weight 0%"),
        "{v}"
    );
    let requests = e.record.parameters["report"]["requests"].to_string();
    assert!(
        requests.contains(&format!(
            "PATCH {BASE}/status (application/merge-patch+json) {{\\\"status\\\":{{\\\"abort\\\":true}}}} → 200"
        )),
        "{requests}"
    );
    assert!(fake
        .requests()
        .iter()
        .all(|r| r.authorization == format!("Bearer {TOKEN}")));

    // A second abort has nothing to do and sends nothing.
    fake.clear_requests();
    let out = bot.rollback(None).await;
    let text = out.message.plain();
    assert_eq!(out.status, Status::Succeeded, "{text}");
    assert!(
        text.contains("nothing to do") && text.contains("already aborted"),
        "{text}"
    );
    assert!(fake.writes().is_empty());
    let e = bot.result_entry(&out.correlation_id);
    assert_eq!(e.record.parameters["report"]["changed"], false);
}

#[tokio::test]
async fn without_a_status_subresource_abort_and_promote_fall_back_to_the_object() {
    let dir = tempfile::tempdir().unwrap();
    // Argo Rollouts before v0.10: the CRD has no status subresource.
    let kinds = standard_kinds()
        .into_iter()
        .map(|mut k| {
            if k.plural == "rollouts" {
                k.status_subresource = false;
            }
            k
        })
        .collect();
    let (fake, _ctl) = cluster_with(kinds).await;
    let bot = start(dir.path(), &fake, "", "10s").await;

    // Promote at the pause step: the status patch, then the unified patch.
    let out = bot.promote(false).await;
    assert_eq!(out.status, Status::Succeeded, "{}", out.message.plain());
    assert_eq!(
        writes(&fake),
        [
            patch(
                &format!("{BASE}/status"),
                MERGE,
                json!({"status": {"pauseConditions": null}}),
                404
            ),
            patch(
                BASE,
                MERGE,
                json!({"spec": {"paused": false}, "status": {"pauseConditions": null}}),
                200
            ),
        ]
    );
    assert_eq!(rollout(&fake)["status"]["currentStepIndex"], 3);

    fake.clear_requests();
    let out = bot.rollback(None).await;
    assert_eq!(out.status, Status::Succeeded, "{}", out.message.plain());
    let abort = json!({"status": {"abort": true}});
    assert_eq!(
        writes(&fake),
        [
            patch(&format!("{BASE}/status"), MERGE, abort.clone(), 404),
            patch(BASE, MERGE, abort, 200),
        ]
    );
    assert_eq!(rollout(&fake)["status"]["abort"], true);
    assert_eq!(rollout(&fake)["status"]["phase"], "Degraded");
}

#[tokio::test]
async fn undo_restores_the_revisions_template_without_the_hash_label() {
    let dir = tempfile::tempdir().unwrap();
    let (fake, _ctl) = cluster().await;
    let bot = start(dir.path(), &fake, "", "10s").await;
    let out = bot.rollback(Some("1")).await;
    assert_eq!(out.status, Status::Succeeded, "{}", out.message.plain());
    assert!(out.message.title.contains("3 → 1"), "{}", out.message.title);
    // The plugin's undo: one JSON patch replacing /spec/template with the
    // ReplicaSet's template, the hash label removed.
    let rs1 = fake
        .list("replicasets", "prod")
        .into_iter()
        .find(|rs| rs["metadata"]["annotations"][REVISION] == "4")
        .expect("revision 1's ReplicaSet, renumbered 4");
    assert!(rs1["spec"]["template"]["metadata"]["labels"][HASH_LABEL].is_string());
    let mut w = writes(&fake);
    // Then the precondition: the Rollout as rollbot read it, or a 409.
    let precondition = w[0].3.as_array_mut().unwrap().pop().unwrap();
    assert_eq!(precondition["op"], "replace", "{precondition}");
    assert_eq!(precondition["path"], "/metadata/resourceVersion");
    assert_eq!(
        w,
        [patch(
            BASE,
            "application/json-patch+json",
            json!([{"op": "replace", "path": "/spec/template", "value": template("web", "registry.example.com/web:1.0")}]),
            200
        )]
    );
    let ro = rollout(&fake);
    assert_eq!(ro["metadata"]["annotations"][REVISION], "4");
    assert_eq!(ro["status"]["phase"], "Paused");
    let e = bot.result_entry(&out.correlation_id);
    let v = e.record.parameters["verification"]["detail"].to_string();
    assert!(v.contains("rolls out the restored template"), "{v}");
}

#[tokio::test]
async fn undo_to_the_stable_revision_restores_it_at_once_without_walking_the_canary_steps() {
    // Revision 2 is stable, 3 a canary at step 1 of 6. Undoing to 2 sends
    // the stable ReplicaSet's template, so the controller sees the stable
    // hash and goes straight to Healthy: no setWeight, pause or analysis
    // step runs again (argo-rollouts #2168).
    let dir = tempfile::tempdir().unwrap();
    let (fake, _ctl) = cluster().await;
    let stable = rollout(&fake)["status"]["stableRS"].clone();
    let bot = start(dir.path(), &fake, "", "10s").await;
    let out = bot.rollback(Some("2")).await;
    assert_eq!(out.status, Status::Succeeded, "{}", out.message.plain());
    assert!(out.message.title.contains("3 → 2"), "{}", out.message.title);
    let ro = rollout(&fake);
    assert_eq!(ro["status"]["currentPodHash"], stable, "{ro}");
    assert_eq!(ro["status"]["phase"], "Healthy", "{ro}");
    assert_eq!(ro["status"]["currentStepIndex"], 6, "{ro}");
    assert_eq!(ro["status"]["canary"]["weights"]["canary"]["weight"], 0);
    assert!(ro["status"]["pauseConditions"].is_null(), "{ro}");
    // One write: the template. No promote, no step-by-step weights.
    assert_eq!(fake.writes().len(), 1, "{:?}", fake.writes());
}

#[tokio::test]
async fn undo_to_a_missing_revision_changes_nothing_and_names_those_that_exist() {
    let dir = tempfile::tempdir().unwrap();
    let (fake, _ctl) = cluster().await;
    let bot = start(dir.path(), &fake, "mechanism = \"undo\"", "10s").await;
    let out = bot.rollback(Some("7")).await;
    assert_ne!(out.status, Status::Succeeded);
    let text = out.message.plain();
    assert!(
        text.contains("revision 7 of Rollout prod/web does not exist")
            && text.contains("revisions that exist: 1, 2, 3"),
        "{text}"
    );
    assert!(fake.writes().is_empty(), "{:?}", fake.writes());

    // mechanism = "undo" without a revision goes to the previous one.
    let out = bot.rollback(None).await;
    assert_eq!(out.status, Status::Succeeded, "{}", out.message.plain());
    assert!(out.message.title.contains("3 → 2"), "{}", out.message.title);
    assert_eq!(
        rollout(&fake)["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.example.com/web:1.1"
    );
}

#[tokio::test]
async fn promote_sends_the_plugins_patches_step_by_step_and_full() {
    let dir = tempfile::tempdir().unwrap();
    let (fake, _ctl) = cluster().await;
    let bot = start(dir.path(), &fake, "", "10s").await;

    // Paused on a pause step (controller's pause): clear the conditions.
    let out = bot.promote(false).await;
    assert_eq!(out.status, Status::Succeeded, "{}", out.message.plain());
    assert_eq!(
        writes(&fake),
        [patch(
            &format!("{BASE}/status"),
            MERGE,
            json!({"status": {"pauseConditions": null}}),
            200
        )]
    );
    let ro = rollout(&fake);
    assert_eq!(ro["status"]["currentStepIndex"], 3);
    assert_eq!(ro["status"]["phase"], "Progressing");
    let e = bot.result_entry(&out.correlation_id);
    let v = e.record.parameters["verification"]["detail"].to_string();
    assert!(v.contains("step 3 of 6, canary weight 50%"), "{v}");

    // In the analysis step: skip it by advancing the index.
    fake.clear_requests();
    let out = bot.promote(false).await;
    assert_eq!(out.status, Status::Succeeded, "{}", out.message.plain());
    assert_eq!(
        writes(&fake),
        [patch(
            &format!("{BASE}/status"),
            MERGE,
            json!({"status": {"pauseConditions": null, "currentStepIndex": 4}}),
            200
        )]
    );
    assert_eq!(rollout(&fake)["status"]["currentStepIndex"], 5);

    // Paused by hand as well: status patch, then the spec patch.
    fake.bump("rollouts", "prod", "web", |r| {
        r["spec"]["paused"] = json!(true)
    });
    fake.clear_requests();
    let out = bot.promote(false).await;
    assert_eq!(out.status, Status::Succeeded, "{}", out.message.plain());
    assert_eq!(
        writes(&fake),
        [
            patch(
                &format!("{BASE}/status"),
                MERGE,
                json!({"status": {"pauseConditions": null}}),
                200
            ),
            patch(BASE, MERGE, json!({"spec": {"paused": false}}), 200),
        ]
    );
    assert_eq!(rollout(&fake)["status"]["phase"], "Healthy");

    // A new canary, promoted fully.
    fake.merge_patch(
        "rollouts",
        "prod",
        "web",
        json!({"spec": {"template": template("web", "registry.example.com/web:1.3")}}),
    );
    fake.clear_requests();
    let out = bot.promote(true).await;
    assert_eq!(out.status, Status::Succeeded, "{}", out.message.plain());
    assert_eq!(
        writes(&fake),
        [patch(
            &format!("{BASE}/status"),
            MERGE,
            json!({"status": {"promoteFull": true}}),
            200
        )]
    );
    let ro = rollout(&fake);
    assert_eq!(ro["status"]["phase"], "Healthy");
    assert_eq!(ro["status"]["stableRS"], ro["status"]["currentPodHash"]);
}

#[tokio::test]
async fn an_inconclusive_analysis_is_promoted_past_like_the_plugin_does() {
    let dir = tempfile::tempdir().unwrap();
    let (fake, _ctl) = cluster().await;
    let bot = start(dir.path(), &fake, "", "10s").await;
    assert_eq!(bot.promote(false).await.status, Status::Succeeded);
    // The analysis at step 3 comes back inconclusive: the controller pauses.
    fake.merge_patch(
        "rollouts",
        "prod",
        "web",
        json!({"status": {"canary": {"currentStepAnalysisRunStatus": {"name": "web-3-3", "status": "Inconclusive"}}}}),
    );
    let st = bot.rt.engine.backend_status("web").await.unwrap();
    assert!(
        st.notes
            .iter()
            .any(|n| n == "paused: InconclusiveAnalysisRun"),
        "{:?}",
        st.notes
    );
    fake.clear_requests();
    let out = bot.promote(false).await;
    assert_eq!(out.status, Status::Succeeded, "{}", out.message.plain());
    assert_eq!(
        writes(&fake),
        [patch(
            &format!("{BASE}/status"),
            MERGE,
            json!({"status": {"pauseConditions": null, "controllerPause": false, "currentStepIndex": 4}}),
            200
        )]
    );
}

#[tokio::test]
async fn pause_resume_and_retry_after_an_abort() {
    let dir = tempfile::tempdir().unwrap();
    let (fake, _ctl) = cluster().await;
    let bot = start(dir.path(), &fake, "", "10s").await;
    let out = bot.run(Action::Pause).await;
    assert_eq!(out.status, Status::Succeeded, "{}", out.message.plain());
    assert_eq!(
        writes(&fake),
        [patch(BASE, MERGE, json!({"spec": {"paused": true}}), 200)]
    );
    fake.clear_requests();
    let out = bot.run(Action::Resume).await;
    assert_eq!(out.status, Status::Succeeded, "{}", out.message.plain());
    assert_eq!(
        writes(&fake),
        [patch(BASE, MERGE, json!({"spec": {"paused": false}}), 200)]
    );

    // Resume of an aborted rollout is the plugin's `retry rollout`.
    assert_eq!(bot.rollback(None).await.status, Status::Succeeded);
    fake.clear_requests();
    let out = bot.run(Action::Resume).await;
    assert_eq!(out.status, Status::Succeeded, "{}", out.message.plain());
    assert_eq!(
        writes(&fake),
        [patch(
            &format!("{BASE}/status"),
            MERGE,
            json!({"status": {"abort": false}}),
            200
        )]
    );
    assert_ne!(rollout(&fake)["status"]["phase"], "Degraded");
}

#[tokio::test]
async fn a_conflict_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let (fake, _ctl) = cluster().await;
    fake.fail_next_writes("rollouts", "web", 1);
    let bot = start(dir.path(), &fake, "", "10s").await;
    let out = bot.rollback(None).await;
    assert_eq!(out.status, Status::Succeeded, "{}", out.message.plain());
    let abort = json!({"status": {"abort": true}});
    assert_eq!(
        writes(&fake),
        [
            patch(&format!("{BASE}/status"), MERGE, abort.clone(), 409),
            patch(&format!("{BASE}/status"), MERGE, abort, 200),
        ]
    );
    let e = bot.result_entry(&out.correlation_id);
    let requests = e.record.parameters["report"]["requests"].to_string();
    assert!(requests.contains("HTTP 409 Conflict"), "{requests}");
}

#[tokio::test]
async fn rbac_forbidden_surfaces_the_status_message_and_the_plugin_command() {
    let dir = tempfile::tempdir().unwrap();
    let (fake, _ctl) = cluster().await;
    fake.deny("patch", "argoproj.io", "rollouts/status");
    let bot = start(dir.path(), &fake, "", "10s").await;
    let out = bot.rollback(None).await;
    assert_eq!(out.status, Status::Failed);
    let text = out.message.plain();
    assert!(text.contains(
        "rollouts.argoproj.io \"web\" is forbidden: User \"system:serviceaccount:rollbot:rollbot\" cannot patch resource \"rollouts/status\" in API group \"argoproj.io\" in the namespace \"prod\""
    ), "{text}");
    assert!(
        text.contains("kubectl argo rollouts abort web -n prod"),
        "{text}"
    );
    // A 403 is not a missing subresource: no fallback to the object.
    assert_eq!(fake.writes().len(), 1);
    assert!(rollout(&fake)["status"]["abort"].is_null());
    let e = bot.result_entry(&out.correlation_id);
    let err = e.record.parameters["error"].as_str().unwrap();
    assert!(
        err.contains("/status (application/merge-patch+json)")
            && err.contains("→ HTTP 403 Forbidden"),
        "{err}"
    );
}

#[tokio::test]
async fn a_missing_rollout_is_refused_naming_what_to_check() {
    let dir = tempfile::tempdir().unwrap();
    let (fake, _ctl) = cluster().await;
    let bot = start(dir.path(), &fake, "rollout = \"api\"", "10s").await;
    let out = bot.rollback(None).await;
    assert_ne!(out.status, Status::Succeeded);
    let text = out.message.plain();
    assert!(
        text.contains("Rollout prod/api does not exist") && text.contains("namespace and rollout"),
        "{text}"
    );
    assert!(fake.writes().is_empty());
}

#[tokio::test]
async fn verification_times_out_when_the_controller_never_reacts() {
    let dir = tempfile::tempdir().unwrap();
    let (fake, ctl) = cluster().await;
    ctl.set_lag(u32::MAX);
    let bot = start(dir.path(), &fake, "", "1s").await;
    let started = std::time::Instant::now();
    let out = bot.rollback(None).await;
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(out.status, Status::Failed, "{}", out.message.plain());
    let text = out.message.plain();
    assert!(
        text.contains("did not reach \"aborted with the canary at weight 0\" within 1s")
            && text.contains("kubectl argo rollouts get rollout web -n prod"),
        "{text}"
    );
}

#[tokio::test]
async fn status_shows_phase_step_weight_pause_reason_and_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let (fake, _ctl) = cluster().await;
    let bot = start(dir.path(), &fake, "", "10s").await;
    let st = bot.rt.engine.backend_status("web").await.unwrap();
    assert_eq!(st.live_revision.as_deref(), Some("2"));
    assert_eq!(st.canary_revision.as_deref(), Some("3"));
    assert_eq!(st.canary_weight, Some(20));
    assert_eq!(st.step.as_deref(), Some("1 of 6"));
    assert!(st.paused);
    assert_eq!(
        st.notes,
        [
            "phase Paused (CanaryPauseStep), step 1 of 6, canary weight 20%",
            "paused: CanaryPauseStep",
            "stable: revision 2 (registry.example.com/web:1.1)",
            "canary: revision 3 (registry.example.com/web:1.2)",
        ]
    );
    let revs: Vec<(&str, &str, bool)> = st
        .history
        .iter()
        .map(|r| (r.revision.as_str(), r.detail.as_str(), r.live))
        .collect();
    assert_eq!(
        revs,
        [
            ("1", "registry.example.com/web:1.0", false),
            ("2", "registry.example.com/web:1.1", true),
            ("3", "registry.example.com/web:1.2", false),
        ]
    );
    // And /status in chat.
    let out = bot
        .rt
        .engine
        .status(
            &Request::new(
                Actor::new(Platform::Console, "ana", "Ana Admin"),
                Action::Query {
                    view: rollbot::domain::View::Status,
                },
            )
            .service("web"),
        )
        .await
        .unwrap();
    let text = out.message.plain();
    assert!(
        text.contains("live 2, canary 3 at 20% (step 1 of 6), paused; revisions 1 2* 3")
            && text.contains("paused: CanaryPauseStep"),
        "{text}"
    );

    // After an abort, the controller's message shows.
    assert_eq!(bot.rollback(None).await.status, Status::Succeeded);
    let st = bot.rt.engine.backend_status("web").await.unwrap();
    assert_eq!(st.canary_weight, Some(0));
    assert!(
        st.notes
            .iter()
            .any(|n| n == "message: RolloutAborted: Rollout aborted update to revision 3"),
        "{:?}",
        st.notes
    );
}

#[tokio::test]
async fn rollbot_serve_aborts_through_the_api_and_exports_the_patch_in_the_audit_log() {
    let dir = tempfile::tempdir().unwrap();
    let (fake, _ctl) = cluster().await;
    let server = BACKEND.serve(dir.path(), &fake, "poll_interval = \"20ms\"\n");
    let (code, body) = api_action(&server, "/rollback web bad canary", "argo-1").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["message"]["title"], "Rolled back web 3 → 2", "{body}");
    assert_eq!(rollout(&fake)["status"]["phase"], "Degraded");
    let text = BACKEND.stop_and_export(server, dir.path(), "merge-patch");
    assert!(
        text.contains("/rollouts/web/status (application/merge-patch+json)")
            && text.contains("abort"),
        "{text}"
    );
}

#[test]
fn config_mistakes_are_reported_with_what_to_write() {
    let config = |keys: &str, target: &str| BACKEND.config_problems(keys, target);
    assert_eq!(config("namespace = \"prod\"", "rollout = \"web\""), "");
    let e = config("", "mechanism = \"rollback\"");
    assert!(
        e.contains("abort, undo") && e.contains("rollbot.toml:"),
        "{e}"
    );
    let e = config("", "deployment = \"web\"");
    assert!(
        e.contains("`deployment` is not a target setting of an argo-rollouts backend"),
        "{e}"
    );
    let e = config("rollout_timeout = \"5m\"", "");
    assert!(
        e.contains("not shorter than [engine] backend_timeout (1m)"),
        "{e}"
    );
    BACKEND.assert_connection_mistakes();
}
