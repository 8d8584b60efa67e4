//! The `kubernetes-deployment` backend through the engine, against the fake
//! API server with its Deployment controller, and compared with the real
//! `kubectl rollout undo`.

use crate::support::fake_kube::{
    deployment, kubectl, seed_history, strip_nulls, DeploymentController, FakeKube, Logged, Pace,
    REVISION,
};
use crate::support::kube_bot::{api_action, rollout_keys, Backend, Bot};
use rollbot::domain::{Action, Actor, Platform, View};
use rollbot::engine::{Refusal, Request, Status};
use serde_json::{json, Value};
use std::path::Path;

const TOKEN: &str = "kube-token-7f3a9c";

const BACKEND: Backend = Backend {
    table: "k8s",
    kind: "kubernetes-deployment",
    token: TOKEN,
};

/// rollbot with one service `web` on a kubernetes-deployment backend
/// pointing at `fake`; `target` is the body of `[services.target]`.
async fn start(dir: &Path, fake: &FakeKube, target: &str, rollout_timeout: &str) -> Bot {
    BACKEND
        .start(dir, fake, &rollout_keys(rollout_timeout), target)
        .await
}

/// A fake with the Deployment controller and `web` at revisions 1–3.
async fn cluster(pace: Pace) -> (FakeKube, DeploymentController) {
    let fake = FakeKube::standard().await;
    let ctl = DeploymentController::install(&fake, Pace::Immediate);
    seed_history(
        &fake,
        "prod",
        "web",
        3,
        &[
            ("registry.example.com/web:1.0", "deploy 1.0"),
            ("registry.example.com/web:1.1", "deploy 1.1"),
            ("registry.example.com/web:1.2", "deploy 1.2 (bad)"),
        ],
    );
    ctl.set_pace(pace);
    fake.clear_requests();
    (fake, ctl)
}

/// A canary Deployment `web-canary` beside `web`: two replicas of
/// registry.example.com/web:1.3, labelled `track: canary`.
fn canary() -> Value {
    let mut c = deployment("web-canary", "registry.example.com/web:1.3", 2);
    c["spec"]["selector"]["matchLabels"]["track"] = json!("canary");
    c["spec"]["template"]["metadata"]["labels"]["track"] = json!("canary");
    c
}

fn image(d: &Value) -> &str {
    d["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap()
}

fn patches(fake: &FakeKube) -> Vec<Logged> {
    fake.requests()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .collect()
}

/// An object without what differs between two API servers.
fn comparable(mut v: Value) -> Value {
    strip_nulls(&mut v);
    if let Some(m) = v["metadata"].as_object_mut() {
        for f in [
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "managedFields",
        ] {
            m.remove(f);
        }
    }
    v
}

#[tokio::test]
async fn undo_sends_what_kubectl_rollout_undo_sends() {
    let dir = tempfile::tempdir().unwrap();
    let (by_kubectl, _c1) = cluster(Pace::Immediate).await;
    let (by_rollbot, _c2) = cluster(Pace::Immediate).await;

    let (ok, out, err) = kubectl(
        &by_kubectl,
        dir.path(),
        "prod",
        &["rollout", "undo", "deployment/web"],
    )
    .await;
    assert!(ok, "kubectl rollout undo failed: {err}");
    assert!(out.contains("deployment.apps/web rolled back"), "{out}");

    let bot = start(dir.path(), &by_rollbot, "", "10s").await;
    let out = bot.rollback(None).await;
    assert_eq!(out.status, Status::Succeeded, "{}", out.message.plain());
    assert!(out.message.title.contains("3 → 2"), "{}", out.message.title);

    // The same single JSON patch.
    let (k, r) = (patches(&by_kubectl), patches(&by_rollbot));
    assert_eq!(k.len(), 1, "kubectl sends one patch");
    assert_eq!(r.len(), 1, "rollbot sends one patch: {r:?}");
    assert_eq!(k[0].content_type, "application/json-patch+json");
    assert_eq!(r[0].content_type, "application/json-patch+json");
    assert_eq!(r[0].path, k[0].path);
    let (mut kb, mut rb) = (k[0].json(), r[0].json());
    strip_nulls(&mut kb);
    strip_nulls(&mut rb);
    // kubectl's operations, then the precondition that makes rollbot's
    // write conditional on the Deployment it read (a 409 if it changed).
    let precondition = rb.as_array_mut().unwrap().pop().unwrap();
    assert_eq!(rb, kb, "rollbot's patch differs from kubectl's");
    assert_eq!(rb[0]["path"], "/spec/template");
    assert_eq!(rb[1]["path"], "/metadata/annotations");
    assert_eq!(precondition["op"], "replace", "{precondition}");
    assert_eq!(precondition["path"], "/metadata/resourceVersion");
    assert!(precondition["value"].is_string(), "{precondition}");

    // And both Deployments end in the same state.
    let dk = by_kubectl.get("deployments", "prod", "web").unwrap();
    let dr = by_rollbot.get("deployments", "prod", "web").unwrap();
    assert_eq!(image(&dr), "registry.example.com/web:1.1");
    assert_eq!(dr["metadata"]["annotations"][REVISION], "4");
    assert_eq!(
        dr["metadata"]["annotations"]["kubernetes.io/change-cause"],
        "deploy 1.1"
    );
    assert_eq!(comparable(dr), comparable(dk));

    // The token came from the file, and went nowhere else.
    let reqs = by_rollbot.requests();
    assert!(reqs
        .iter()
        .all(|r| r.authorization == format!("Bearer {TOKEN}")));
    let e = bot.result_entry(&out.correlation_id);
    let requests = e.record.parameters["report"]["requests"].to_string();
    assert!(
        requests.contains(
            "PATCH /apis/apps/v1/namespaces/prod/deployments/web (application/json-patch+json)"
        ) && requests.contains("registry.example.com/web:1.1")
            && requests.contains("→ 200"),
        "{requests}"
    );
    assert!(!serde_json::to_string(&e.record.parameters)
        .unwrap()
        .contains(TOKEN));
    let v = e.record.parameters["verification"]["detail"].to_string();
    assert!(v.contains("successfully rolled out as revision 4"), "{v}");
}

#[tokio::test]
async fn undo_to_a_missing_revision_changes_nothing_and_names_those_that_exist() {
    let dir = tempfile::tempdir().unwrap();
    let (fake, _c) = cluster(Pace::Immediate).await;
    // Revision 1 was garbage-collected (revisionHistoryLimit).
    let gone = fake
        .list("replicasets", "prod")
        .into_iter()
        .find(|rs| rs["metadata"]["annotations"][REVISION] == "1")
        .unwrap();
    fake.with_store(|s| {
        s.delete(
            "replicasets",
            "prod",
            gone["metadata"]["name"].as_str().unwrap(),
        )
    });
    let bot = start(dir.path(), &fake, "", "10s").await;
    let out = bot.rollback(Some("1")).await;
    assert_ne!(out.status, Status::Succeeded);
    let text = out.message.plain();
    assert!(
        text.contains("revision 1") && text.contains("revisions that exist: 2, 3"),
        "{text}"
    );
    assert!(fake.writes().is_empty(), "{:?}", fake.writes());
    assert_eq!(
        image(&fake.get("deployments", "prod", "web").unwrap()),
        "registry.example.com/web:1.2"
    );
}

#[tokio::test]
async fn a_paused_deployment_is_refused_with_only_reads_sent() {
    let dir = tempfile::tempdir().unwrap();
    let (fake, _c) = cluster(Pace::Immediate).await;
    fake.bump("deployments", "prod", "web", |d| {
        d["spec"]["paused"] = json!(true)
    });
    let bot = start(dir.path(), &fake, "", "10s").await;
    let out = bot.rollback(None).await;
    // Nothing was sent to change: a refusal, not a backend failure.
    assert_eq!(out.status, Status::Refused);
    assert_eq!(out.refusal, Some(Refusal::Preflight));
    let text = out.message.plain();
    assert!(text.contains("is paused"), "{text}");
    assert!(text.contains("Rollback of web refused"), "{text}");
    assert!(
        text.contains("kubectl -n prod rollout resume deployment/web"),
        "{text}"
    );
    let reqs = fake.resource_requests();
    assert!(!reqs.is_empty());
    assert!(reqs.iter().all(|r| r.method == "GET"), "{reqs:?}");
}

#[tokio::test]
async fn a_template_that_already_matches_is_nothing_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let (fake, _c) = cluster(Pace::Immediate).await;
    let bot = start(dir.path(), &fake, "", "10s").await;
    let out = bot.rollback(Some("3")).await;
    let text = out.message.plain();
    assert_eq!(out.status, Status::Succeeded, "{text}");
    assert!(text.contains("nothing to do"), "{text}");
    assert_eq!(out.message.title, "Rolled back web to 3");
    assert!(patches(&fake).is_empty());
    let e = bot.result_entry(&out.correlation_id);
    assert_eq!(e.record.parameters["report"]["changed"], false);
}

#[tokio::test]
async fn a_conflict_is_retried_against_a_fresh_read() {
    let dir = tempfile::tempdir().unwrap();
    let (fake, _c) = cluster(Pace::Immediate).await;
    fake.fail_next_writes("deployments", "web", 1);
    let bot = start(dir.path(), &fake, "", "10s").await;
    let out = bot.rollback(None).await;
    assert_eq!(out.status, Status::Succeeded, "{}", out.message.plain());
    let seq: Vec<(String, u16)> = fake
        .resource_requests()
        .iter()
        .map(|r| {
            let what = if r.path.ends_with("/replicasets") {
                "LIST"
            } else {
                r.method.as_str()
            };
            (what.to_string(), r.status)
        })
        .take(8)
        .collect();
    // Preflight reads, then the action: its patch conflicts, it reads again
    // and patches again.
    let want: Vec<(String, u16)> = [
        ("GET", 200),
        ("LIST", 200),
        ("GET", 200),
        ("LIST", 200),
        ("PATCH", 409),
        ("GET", 200),
        ("LIST", 200),
        ("PATCH", 200),
    ]
    .iter()
    .map(|(m, c)| (m.to_string(), *c))
    .collect();
    assert_eq!(seq, want);
    assert_eq!(
        image(&fake.get("deployments", "prod", "web").unwrap()),
        "registry.example.com/web:1.1"
    );
    let e = bot.result_entry(&out.correlation_id);
    let requests = e.record.parameters["report"]["requests"].to_string();
    assert!(requests.contains("HTTP 409 Conflict"), "{requests}");
}

#[tokio::test]
async fn rbac_forbidden_surfaces_the_status_message_and_the_command_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let (fake, _c) = cluster(Pace::Immediate).await;
    fake.deny("patch", "apps", "deployments");
    let bot = start(dir.path(), &fake, "", "10s").await;
    let out = bot.rollback(None).await;
    assert_eq!(out.status, Status::Failed);
    let text = out.message.plain();
    assert!(text.contains(
        "deployments.apps \"web\" is forbidden: User \"system:serviceaccount:rollbot:rollbot\" cannot patch resource \"deployments\" in API group \"apps\" in the namespace \"prod\""
    ), "{text}");
    assert!(
        text.contains("kubectl -n prod rollout undo deployment/web --to-revision=2"),
        "{text}"
    );
    assert_eq!(
        image(&fake.get("deployments", "prod", "web").unwrap()),
        "registry.example.com/web:1.2"
    );
    // The audit entry holds the patch that was refused.
    let e = bot.result_entry(&out.correlation_id);
    let err = e.record.parameters["error"].as_str().unwrap();
    assert!(
        err.contains("application/json-patch+json") && err.contains("→ HTTP 403 Forbidden"),
        "{err}"
    );
}

#[tokio::test]
async fn verification_waits_for_the_rollout_and_reports_progress_in_chat() {
    let dir = tempfile::tempdir().unwrap();
    let (fake, _c) = cluster(Pace::PerGets(3)).await;
    let bot = start(dir.path(), &fake, "", "10s").await;
    let out = bot.rollback(None).await;
    assert_eq!(out.status, Status::Succeeded, "{}", out.message.plain());
    let lines = bot.chat_lines("Rolled back").await;
    let progress: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("new replicas have been updated"))
        .collect();
    // One line per change of the numbers, in order, none repeated.
    let updated: Vec<u32> = progress
        .iter()
        .filter_map(|l| l.split(": ").last()?.split(' ').next()?.parse().ok())
        .collect();
    assert!(updated.len() >= 2, "{progress:#?}");
    assert!(updated.windows(2).all(|w| w[0] < w[1]), "{progress:#?}");
    assert!(updated.iter().all(|n| *n < 3), "{progress:#?}");
    // Reported when the numbers change, not on every read.
    let reads = fake
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.ends_with("/deployments/web"))
        .count();
    assert!(
        reads > progress.len() + 3,
        "{reads} reads, {} lines",
        progress.len()
    );
    let d = fake.get("deployments", "prod", "web").unwrap();
    assert_eq!(d["status"]["updatedReplicas"], 3);
    assert_eq!(d["status"]["replicas"], 3);
}

#[tokio::test]
async fn verification_times_out_cleanly_when_the_rollout_never_completes() {
    let dir = tempfile::tempdir().unwrap();
    let (fake, _c) = cluster(Pace::Stalled).await;
    let bot = start(dir.path(), &fake, "", "1s").await;
    let started = std::time::Instant::now();
    let out = bot.rollback(None).await;
    let took = started.elapsed();
    assert_eq!(out.status, Status::Failed);
    let text = out.message.plain();
    assert!(text.contains("NOT verified"), "{text}");
    assert!(
        text.contains("did not complete within 1s")
            && text.contains("kubectl -n prod rollout status deployment/web"),
        "{text}"
    );
    assert!(took < std::time::Duration::from_secs(5), "{took:?}");
}

#[tokio::test]
async fn scale_canary_and_set_image_send_the_expected_patches() {
    let dir = tempfile::tempdir().unwrap();
    let (fake, _c) = cluster(Pace::Immediate).await;
    fake.create("deployments", "prod", canary());
    fake.clear_requests();

    let bot = start(
        dir.path(),
        &fake,
        "mechanism = \"scale-canary\"\ncanary_deployment = \"web-canary\"",
        "10s",
    )
    .await;
    let out = bot.rollback(None).await;
    assert_eq!(out.status, Status::Succeeded, "{}", out.message.plain());
    let p = patches(&fake);
    assert_eq!(p.len(), 1);
    assert_eq!(
        p[0].path,
        "/apis/apps/v1/namespaces/prod/deployments/web-canary/scale"
    );
    assert_eq!(p[0].content_type, "application/merge-patch+json");
    assert_eq!(p[0].json(), json!({"spec": {"replicas": 0}}));
    assert_eq!(
        fake.get("deployments", "prod", "web-canary").unwrap()["spec"]["replicas"],
        0
    );
    // The stable Deployment was not touched.
    assert_eq!(
        image(&fake.get("deployments", "prod", "web").unwrap()),
        "registry.example.com/web:1.2"
    );
    drop(bot);

    let dir = tempfile::tempdir().unwrap();
    let (fake, _c) = cluster(Pace::Immediate).await;
    let bot = start(
        dir.path(),
        &fake,
        "mechanism = \"set-image\"\ncontainer = \"app\"",
        "10s",
    )
    .await;
    let out = bot.rollback(None).await;
    assert_eq!(out.status, Status::Succeeded, "{}", out.message.plain());
    let p = patches(&fake);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].content_type, "application/strategic-merge-patch+json");
    assert_eq!(
        p[0].json(),
        json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "app"}],
            "containers": [{"name": "app", "image": "registry.example.com/web:1.1"}],
        }}}})
    );
    let d = fake.get("deployments", "prod", "web").unwrap();
    assert_eq!(image(&d), "registry.example.com/web:1.1");
    // Only the image changed: the rest of the container is as it was.
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"],
        "IfNotPresent"
    );
}

#[tokio::test]
async fn pause_and_resume_patch_spec_paused() {
    let dir = tempfile::tempdir().unwrap();
    let (fake, _c) = cluster(Pace::Immediate).await;
    let bot = start(dir.path(), &fake, "", "10s").await;
    let out = bot.run(Action::Pause).await;
    assert_eq!(out.status, Status::Succeeded, "{}", out.message.plain());
    let out = bot.run(Action::Pause).await;
    assert!(
        out.message.plain().contains("already paused"),
        "{}",
        out.message.plain()
    );
    let out = bot.run(Action::Resume).await;
    assert_eq!(out.status, Status::Succeeded, "{}", out.message.plain());
    let bodies: Vec<(String, Value)> = patches(&fake)
        .iter()
        .map(|p| (p.content_type.clone(), p.json()))
        .collect();
    assert_eq!(
        bodies,
        [
            (
                "application/merge-patch+json".to_string(),
                json!({"spec": {"paused": true}})
            ),
            (
                "application/merge-patch+json".to_string(),
                json!({"spec": {"paused": false}})
            ),
        ]
    );
    let out = bot
        .run(Action::Promote {
            full: false,
            force: false,
        })
        .await;
    assert_ne!(out.status, Status::Succeeded);
    assert!(
        out.message.plain().contains("no canary step to promote"),
        "{}",
        out.message.plain()
    );
}

#[tokio::test]
async fn status_shows_the_history_with_change_causes_and_images() {
    let dir = tempfile::tempdir().unwrap();
    let (fake, _c) = cluster(Pace::Immediate).await;
    let bot = start(dir.path(), &fake, "deployment = \"web\"", "10s").await;
    let st = bot.rt.engine.backend_status("web").await.unwrap();
    assert_eq!(st.live_revision.as_deref(), Some("3"));
    assert!(!st.paused);
    let h: Vec<(String, String, Option<String>, bool)> = st
        .history
        .iter()
        .map(|r| {
            (
                r.revision.clone(),
                r.detail.clone(),
                r.change_cause.clone(),
                r.live,
            )
        })
        .collect();
    assert_eq!(
        h,
        [
            (
                "1".to_string(),
                "registry.example.com/web:1.0".to_string(),
                Some("deploy 1.0".to_string()),
                false
            ),
            (
                "2".to_string(),
                "registry.example.com/web:1.1".to_string(),
                Some("deploy 1.1".to_string()),
                false
            ),
            (
                "3".to_string(),
                "registry.example.com/web:1.2".to_string(),
                Some("deploy 1.2 (bad)".to_string()),
                true
            ),
        ]
    );
    assert!(
        st.notes.iter().any(|n| n.contains("fully rolled out")),
        "{:?}",
        st.notes
    );
    assert!(
        st.notes.iter().any(|n| n
            == "history: 1 registry.example.com/web:1.0 (deploy 1.0); 2 registry.example.com/web:1.1 (deploy 1.1); 3* registry.example.com/web:1.2 (deploy 1.2 (bad))"),
        "{:?}",
        st.notes
    );
    // The same history kubectl shows.
    let (ok, out, err) = kubectl(
        &fake,
        dir.path(),
        "prod",
        &["rollout", "history", "deployment/web"],
    )
    .await;
    assert!(ok, "{err}");
    let kubectl_history: Vec<(String, String)> = out
        .lines()
        .skip_while(|l| !l.starts_with("REVISION"))
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (rev, cause) = l.split_once(char::is_whitespace).unwrap();
            (rev.to_string(), cause.trim().to_string())
        })
        .collect();
    let ours: Vec<(String, String)> = st
        .history
        .iter()
        .map(|r| {
            (
                r.revision.clone(),
                r.change_cause.clone().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(ours, kubectl_history, "{out}");
    // And /status in chat shows it.
    let out = bot
        .rt
        .engine
        .status(
            &Request::new(
                Actor::new(Platform::Console, "ana", "Ana Admin"),
                Action::Query { view: View::Status },
            )
            .service("web"),
        )
        .await
        .unwrap();
    assert!(
        out.message
            .plain()
            .contains("3* registry.example.com/web:1.2 (deploy 1.2 (bad))"),
        "{}",
        out.message.plain()
    );

    // After an undo, revision 2's ReplicaSet is revision 4, as kubectl shows it.
    let out = bot.rollback(None).await;
    assert_eq!(out.status, Status::Succeeded, "{}", out.message.plain());
    let st = bot.rt.engine.backend_status("web").await.unwrap();
    let revs: Vec<&str> = st.history.iter().map(|r| r.revision.as_str()).collect();
    assert_eq!(revs, ["1", "3", "4"]);
    assert!(st.history.last().unwrap().live);
    assert_eq!(
        st.history.last().unwrap().detail,
        "registry.example.com/web:1.1"
    );
}

#[test]
fn config_mistakes_are_reported_with_what_to_write() {
    let config = |keys: &str, target: &str| BACKEND.config_problems(keys, target);
    assert_eq!(config("namespace = \"prod\"", "deployment = \"web\""), "");
    let e = config("", "mechanism = \"scale-canary\"");
    assert!(
        e.contains("canary_deployment") && e.contains("rollbot.toml:"),
        "{e}"
    );
    let e = config("", "mechanism = \"set-image\"");
    assert!(e.contains("container = \"NAME\""), "{e}");
    let e = config("", "mechanism = \"revert\"");
    assert!(e.contains("undo, scale-canary, set-image"), "{e}");
    let e = config("", "deploymnet = \"web\"");
    assert!(e.contains("`deploymnet` is not a target setting"), "{e}");
    let e = config("rollout_timeout = \"5m\"", "");
    assert!(
        e.contains("rollout_timeout (5m) plus one request (10s) is not shorter than [engine] backend_timeout (1m)"),
        "{e}"
    );
    let e = config("rollout_timeout = \"50s\"\nrequest_timeout = \"10s\"", "");
    assert!(e.contains("not shorter than"), "{e}");
    assert_eq!(config("rollout_timeout = \"45s\"", ""), "");
    BACKEND.assert_connection_mistakes();
}

#[tokio::test]
async fn rollbot_serve_rolls_back_through_the_api_and_exports_the_patch_in_the_audit_log() {
    let dir = tempfile::tempdir().unwrap();
    let (fake, _c) = cluster(Pace::Immediate).await;
    let server = BACKEND.serve(dir.path(), &fake, "poll_interval = \"20ms\"\n");
    // A revision that does not exist: refused at preflight, nothing sent,
    // and CI can tell that from a broken backend.
    let (code, body) = api_action(&server, "/rollback web to 9 typo", "k8s-0").await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["status"], "refused", "{body}");
    assert_eq!(body["refusal"], "preflight", "{body}");
    assert_eq!(
        body["message"]["title"], "Rollback of web refused",
        "{body}"
    );
    assert!(fake.requests().iter().all(|r| r.method == "GET"));
    let (code, body) = api_action(&server, "/rollback web to 1 bad 1.2 release", "k8s-1").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["message"]["title"], "Rolled back web 3 → 1", "{body}");
    assert_eq!(
        image(&fake.get("deployments", "prod", "web").unwrap()),
        "registry.example.com/web:1.0"
    );
    assert!(fake
        .requests()
        .iter()
        .all(|r| r.authorization == format!("Bearer {TOKEN}")));
    let text = BACKEND.stop_and_export(server, dir.path(), "json-patch");
    assert!(
        text.contains("/spec/template") && text.contains("registry.example.com/web:1.0"),
        "{text}"
    );
}

#[tokio::test]
async fn scale_canary_and_set_image_send_what_kubectl_scale_and_set_image_send() {
    let dir = tempfile::tempdir().unwrap();
    let (by_kubectl, _c1) = cluster(Pace::Immediate).await;
    let (by_rollbot, _c2) = cluster(Pace::Immediate).await;
    by_kubectl.create("deployments", "prod", canary());
    by_rollbot.create("deployments", "prod", canary());
    by_kubectl.clear_requests();
    by_rollbot.clear_requests();

    let (ok, _, err) = kubectl(
        &by_kubectl,
        dir.path(),
        "prod",
        &["scale", "deployment/web-canary", "--replicas=0"],
    )
    .await;
    assert!(ok, "kubectl scale failed: {err}");
    let bot = start(
        dir.path(),
        &by_rollbot,
        "mechanism = \"scale-canary\"\ncanary_deployment = \"web-canary\"",
        "10s",
    )
    .await;
    assert_eq!(bot.rollback(None).await.status, Status::Succeeded);
    drop(bot);
    let (k, r) = (patches(&by_kubectl), patches(&by_rollbot));
    assert_eq!(k.len(), 1, "{k:?}");
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(
        (&r[0].path, &r[0].content_type, r[0].json()),
        (&k[0].path, &k[0].content_type, k[0].json())
    );

    let dir = tempfile::tempdir().unwrap();
    let (by_kubectl, _c1) = cluster(Pace::Immediate).await;
    let (by_rollbot, _c2) = cluster(Pace::Immediate).await;
    let (ok, _, err) = kubectl(
        &by_kubectl,
        dir.path(),
        "prod",
        &[
            "set",
            "image",
            "deployment/web",
            "app=registry.example.com/web:1.1",
        ],
    )
    .await;
    assert!(ok, "kubectl set image failed: {err}");
    let bot = start(
        dir.path(),
        &by_rollbot,
        "mechanism = \"set-image\"\ncontainer = \"app\"",
        "10s",
    )
    .await;
    assert_eq!(bot.rollback(None).await.status, Status::Succeeded);
    let (k, r) = (patches(&by_kubectl), patches(&by_rollbot));
    assert_eq!(k.len(), 1, "{k:?}");
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(
        (&r[0].path, &r[0].content_type, r[0].json()),
        (&k[0].path, &k[0].content_type, k[0].json())
    );
    assert_eq!(
        comparable(by_rollbot.get("deployments", "prod", "web").unwrap()),
        comparable(by_kubectl.get("deployments", "prod", "web").unwrap())
    );
}

#[tokio::test]
async fn an_unreachable_api_server_fails_fast_and_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeKube::standard().await;
    let bot = start(dir.path(), &fake, "", "10s").await;
    drop(fake); // Nothing listens there any more.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let started = std::time::Instant::now();
    let out = bot.rollback(None).await;
    assert_eq!(out.status, Status::Failed);
    let text = out.message.plain();
    assert!(
        text.contains("reading Deployment prod/web failed")
            && text.contains("cannot reach the Kubernetes API server at http://127.0.0.1:")
            && text.contains("kubectl -n prod rollout undo deployment/web`"),
        "{text}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}
