//! Slack request signatures: unsigned, wrongly signed, stale and replayed
//! requests change nothing.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_wrongly_signed_stale_and_replayed_requests_get_401_and_change_nothing() {
    let r = rig("http").await;
    let body = fake_slack::slash_body(
        "/rollback",
        "checkout",
        RESPONDER,
        DEPLOYS,
        "trig-bad",
        &r.fake.response_url("x"),
    );
    let url = r.server.url("/slack/commands");
    let post = |sig: Option<String>, ts: i64, path: &str, body: &str| {
        let mut req = r.http.post(r.server.url(path)).body(body.to_string());
        if let Some(s) = sig {
            req = req
                .header("x-slack-signature", s)
                .header("x-slack-request-timestamp", ts.to_string());
        }
        req.send()
    };
    let now = fake_slack::now();
    // Unsigned, on every endpoint.
    for path in ["/slack/commands", "/slack/interactions", "/slack/events"] {
        assert_eq!(
            post(None, now, path, &body).await.unwrap().status(),
            401,
            "{path}"
        );
    }
    // Signed with another secret.
    let wrong = fake_slack::sign("not-the-signing-secret", now, &body);
    assert_eq!(
        post(Some(wrong), now, "/slack/commands", &body)
            .await
            .unwrap()
            .status(),
        401
    );
    // Correctly signed, 6 minutes old.
    let old = now - 360;
    let stale = fake_slack::sign(fake_slack::SIGNING_SECRET, old, &body);
    assert_eq!(
        post(Some(stale), old, "/slack/commands", &body)
            .await
            .unwrap()
            .status(),
        401
    );
    // Signed for another body.
    let other = fake_slack::sign(fake_slack::SIGNING_SECRET, now, "text=other");
    assert_eq!(
        post(Some(other), now, "/slack/commands", &body)
            .await
            .unwrap()
            .status(),
        401
    );
    // A good request, then the very same bytes again.
    let challenge = json!({"token": "x", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P", "type": "url_verification"}).to_string();
    let sig = fake_slack::sign(fake_slack::SIGNING_SECRET, now, &challenge);
    let first = post(Some(sig.clone()), now, "/slack/events", &challenge)
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    let v: Value = first.json().await.unwrap();
    assert_eq!(
        v["challenge"],
        "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    );
    assert_eq!(
        post(Some(sig), now, "/slack/events", &challenge)
            .await
            .unwrap()
            .status(),
        401
    );
    let _ = url;

    let metrics = r.server.get("/metrics").await.1;
    assert!(
        metrics.contains("rollbot_signature_failures_total{platform=\"slack\"} 7"),
        "{metrics}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let i = r.fake.inner.lock().unwrap();
    assert!(i.messages.is_empty() && i.ephemerals.is_empty() && i.responses.is_empty());
    assert!(i
        .calls
        .iter()
        .all(|c| c.method == "auth.test" || c.method == "conversations.info"));
    drop(i);
    let audit = r.audit();
    assert!(audit.is_empty(), "{audit:?}");
}

/// Hex is case-insensitive, so `v0=AB…` is the signature `v0=ab…` was: a
/// replay. A timestamp 2^63 seconds ago is stale, not (wrapped around)
/// fresh. A reason over the limit is refused with the limit, at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_in_other_hex_case_ancient_timestamps_and_oversized_reasons_are_refused() {
    let r = rig("http").await;
    let status = |sig: &str, ts: i64, body: &str| {
        r.http
            .post(r.server.url("/slack/events"))
            .header("x-slack-signature", sig.to_string())
            .header("x-slack-request-timestamp", ts.to_string())
            .body(body.to_string())
            .send()
    };
    let now = fake_slack::now();
    let challenge =
        json!({"token": "x", "challenge": "c-1", "type": "url_verification"}).to_string();
    let sig = fake_slack::sign(fake_slack::SIGNING_SECRET, now, &challenge);
    assert_eq!(status(&sig, now, &challenge).await.unwrap().status(), 200);
    let upper = format!("v0={}", sig[3..].to_uppercase());
    let mixed: String = sig
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if i % 2 == 0 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect::<String>()
        .replacen("V0=", "v0=", 1);
    assert_ne!(mixed, sig);
    for replay in [&upper, &mixed] {
        let code = status(replay, now, &challenge).await.map(|r| r.status());
        assert_eq!(
            code.ok(),
            Some(reqwest::StatusCode::UNAUTHORIZED),
            "{replay}"
        );
    }

    let ancient = now - (1_i64 << 62) - (1_i64 << 62);
    let other = json!({"token": "x", "challenge": "c-2", "type": "url_verification"}).to_string();
    let sig = fake_slack::sign(fake_slack::SIGNING_SECRET, ancient, &other);
    let code = status(&sig, ancient, &other).await.map(|r| r.status());
    assert_eq!(code.ok(), Some(reqwest::StatusCode::UNAUTHORIZED));

    let (code, ack, _) = r
        .slash(
            "/rollback",
            &format!("checkout {}", "x".repeat(2_001)),
            RESPONDER,
            "trig-long",
        )
        .await;
    assert_eq!(code, 200);
    let said = ack["text"].as_str().unwrap_or_default();
    assert!(
        said.contains("the reason is 2,001 characters long; rollbot accepts at most 2,000"),
        "{ack}"
    );
    let (_, ack, _) = r
        .slash(
            "/freeze",
            &format!("all {}", "w ".repeat(2_500)),
            DEPLOYER,
            "trig-longer",
        )
        .await;
    assert!(
        ack["text"]
            .as_str()
            .unwrap_or_default()
            .contains("rollbot accepts at most 4,000"),
        "{ack}"
    );

    let metrics = r.server.get("/metrics").await.1;
    assert!(
        metrics.contains("rollbot_signature_failures_total{platform=\"slack\"} 3"),
        "{metrics}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let audit = r.audit();
    assert!(audit.is_empty(), "{audit:?}");
}
