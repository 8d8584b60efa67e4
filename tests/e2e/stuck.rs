//! Rollback during rollback: a rollback of a Kubernetes Deployment (the
//! fake API server) whose rollout never completes leaves the service
//! `stuck`, said in the deploy and incident channels with the escalation
//! chain mentioned, shown in `/status` and the audit log, never retried;
//! a later verified rollback ends it.

use crate::support::chat_record::ChatRecord;
use crate::support::fake_kube::{seed_history, DeploymentController, FakeKube, Pace};
use crate::support::in_process;
use rollbot::chat::ChatSink;
use rollbot::domain::{Action, Actor, Platform, View};
use rollbot::engine::{Request, Status};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test]
async fn a_rollback_that_is_not_verified_leaves_the_service_stuck_until_a_verified_one() {
    let dir = tempfile::tempdir().unwrap();
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
        ],
    );
    // The Deployment controller stops making progress: pods never start.
    ctl.set_pace(Pace::Stalled);
    let token = dir.path().join("kube.token");
    std::fs::write(&token, "kube-token-stuck").unwrap();
    let text = format!(
        r#"
[channels.deploys]
console = "deploys"
[channels.incidents]
console = "incidents"

[backends.k8s]
type = "kubernetes-deployment"
api_server = "{url}"
token_file = "{token}"
namespace = "prod"
request_timeout = "2s"
rollout_timeout = "1s"
poll_interval = "20ms"

[[services]]
name = "web"
backend = "k8s"
deploy_channel = "deploys"
incident_channel = "incidents"
escalation = ["slack-group:S0ONCALL1", "slack:U0LEAD001"]

[[roles.admin]]
members = ["console:ana"]
"#,
        url = fake.url(),
        token = token.display(),
    );
    let chat = Arc::new(ChatRecord::default());
    let rt = in_process::start(dir.path(), &text, vec![chat.clone() as Arc<dyn ChatSink>]).await;
    let ana = Actor::new(Platform::Console, "ana", "Ana Admin");
    let rollback = || {
        Request::new(
            ana.clone(),
            Action::Rollback {
                to: None,
                force: false,
            },
        )
        .service("web")
        .reason("errors after deploy")
    };
    let status = || async {
        rt.engine
            .execute(Request::new(ana.clone(), Action::Query { view: View::Status }).service("web"))
            .await
            .message
            .plain()
    };
    assert!(!status().await.contains("STUCK"));

    let out = rt.engine.execute(rollback()).await;
    assert_eq!(out.status, Status::Failed, "{}", out.message.plain());
    let mut channels = chat.channels_with("web is stuck between versions").await;
    channels.sort();
    assert_eq!(channels, ["deploys", "incidents"]);
    let said = chat.text_with("web is stuck between versions");
    assert!(
        said.contains("What failed: Rolled back web 2 → 1: NOT verified"),
        "{said}"
    );
    assert!(said.contains("did not complete within 1s"), "{said}");
    // The undo made revision 3 (revision 1's template), stuck part-way.
    assert!(
        said.contains("Running now: live 3; rollout in progress: 1 out of 3 new replicas"),
        "{said}"
    );
    assert!(said.contains("does not retry it by itself"), "{said}");
    assert!(
        said.contains("Mentions: slack-group:S0ONCALL1, slack:U0LEAD001"),
        "escalated at once to the whole chain: {said}"
    );
    let st = status().await;
    assert!(
        st.contains("STUCK between versions since") && st.contains("/rollback web by Ana Admin"),
        "{st}"
    );
    let mut stuck_entries = 0;
    rt.engine
        .audit()
        .for_each(&mut |e| {
            stuck_entries += (e.record.action == "stuck") as usize;
            true
        })
        .unwrap();
    assert_eq!(stuck_entries, 1);

    // Nothing retries it: a while later, still one rollback sent.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let patches = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .count();
    assert_eq!(patches, 1);

    // A rollback that finds nothing to do proves nothing: still stuck.
    let to_live = Request::new(
        ana.clone(),
        Action::Rollback {
            to: Some("3".into()),
            force: false,
        },
    )
    .service("web")
    .reason("is it done?");
    let out = rt.engine.execute(to_live).await;
    assert_eq!(out.status, Status::Succeeded, "{}", out.message.plain());
    assert!(out.message.plain().contains("nothing to do"));
    assert!(status().await.contains("STUCK"));

    // The platform recovers; the next rollback is verified and ends it.
    ctl.set_pace(Pace::Immediate);
    let out = rt.engine.execute(rollback()).await;
    assert_eq!(out.status, Status::Succeeded, "{}", out.message.plain());
    let channels = chat.channels_with("web is no longer stuck").await;
    assert!(channels.contains(&"incidents".to_string()), "{channels:?}");
    assert!(!status().await.contains("STUCK"));
}
