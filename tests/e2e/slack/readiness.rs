//! `/readyz` reports what is wrong with rollbot's Slack setup, and only that.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_errors_are_reported_at_start_up_and_in_readyz() {
    let extra =
        "[channels.missing]\nslack = \"C0MISSING\"\n\n[channels.outside]\nslack = \"C0OUTSIDE\"\n";
    let r = rig_with("http", extra, fake_slack::BOT_TOKEN, &["C0OUTSIDE"]).await;
    let (code, body) = r.server.get("/readyz").await;
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("C0MISSING") && body.contains("channel_not_found"),
        "{body}"
    );
    assert!(body.contains("[channels.missing]"), "{body}");
    assert!(
        body.contains("C0OUTSIDE") && body.contains("not_in_channel"),
        "{body}"
    );
    assert!(body.contains("/invite @rollbot"), "{body}");
    drop(r);

    // A wrong bot token.
    let r = rig_with("http", "", "xoxb-wrong", &[]).await;
    let (code, body) = r.server.get("/readyz").await;
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("invalid_auth") && body.contains("bot_token"),
        "{body}"
    );
    drop(r);

    // All good.
    let r = rig("http").await;
    let (code, body) = r.server.get("/readyz").await;
    assert_eq!(code, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_from_a_dm_is_answered_privately_and_rollbot_stays_ready() {
    let r = rig("http").await;
    assert_eq!(r.server.get("/readyz").await.0, 200);
    // A DM the bot is not part of: chat.postEphemeral answers
    // channel_not_found, so the answer goes through response_url.
    let dm = "D0RESPDM";
    let (code, _, _) = r
        .slash_in(dm, "/rollbot", "status checkout", RESPONDER, "trig-dm-1")
        .await;
    assert_eq!(code, 200);
    let answer = r
        .fake
        .wait_for(15, "the status through response_url", |f| {
            f.responses("trig-dm-1").into_iter().next()
        })
        .await;
    assert_eq!(answer["response_type"], "ephemeral", "{answer}");
    assert!(answer.to_string().contains("checkout"), "{answer}");
    assert!(
        r.fake
            .calls("chat.postEphemeral")
            .iter()
            .any(|c| c.error.as_deref() == Some("channel_not_found")),
        "the DM was tried first"
    );
    // One person's conversation is not rollbot's configuration: the pod
    // stays in its Service (deploy/statefulset.yaml probes /readyz).
    for _ in 0..10 {
        let (code, body) = r.server.get("/readyz").await;
        assert_eq!(code, 200, "{body}");
        assert!(!body.contains(dm), "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A refused action from the DM reaches the person too.
    r.slash_in(
        dm,
        "/rollback",
        "checkout looks broken",
        OUTSIDER,
        "trig-dm-2",
    )
    .await;
    let refusal = r
        .fake
        .wait_for(15, "the refusal through response_url", |f| {
            f.responses("trig-dm-2").into_iter().next()
        })
        .await;
    assert!(refusal.to_string().contains("responder"), "{refusal}");
    assert_eq!(r.server.get("/readyz").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_the_bot_was_removed_from_shows_in_readyz() {
    let r = rig("http").await;
    // Take the bot out of the incident channel: the rollback's incident post
    // fails with not_in_channel, and /readyz says so.
    r.fake.add_channel(INCIDENTS, false);
    r.slash(
        "/rollback",
        "checkout 5xx after deploy",
        RESPONDER,
        "trig-nic",
    )
    .await;
    r.fake
        .wait_for(20, "the deploy post", |f| {
            with_text(f.messages(DEPLOYS), "Rolled back")
                .into_iter()
                .next()
        })
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, body) = r.server.get("/readyz").await;
        if code == 503 && body.contains("not_in_channel") && body.contains(INCIDENTS) {
            assert!(body.contains("/invite @rollbot"), "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "{code} {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
