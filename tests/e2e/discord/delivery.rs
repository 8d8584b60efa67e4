//! Messages reach Discord despite rate limits and errors, in order, and
//! summaries are edited in place with their chart.

use super::*;

#[tokio::test]
async fn a_429_delays_but_does_not_lose_a_message_and_errors_are_reported() {
    let (fake, s, _dir) = start().await;
    let url = s.url("/discord/interactions");
    fake.rate_limit(INCIDENTS, 2, 0.4);
    fake.fail(DEPLOYS, 1);
    let payload = rollback_by(&fake, &omar(), "checkout");
    fake.send(&url, &payload).await;
    let msg = fake
        .wait_for("the incident message after the 429s", |st| {
            st.messages_in(INCIDENTS).first().cloned()
        })
        .await;
    assert!(embed_text(&msg).contains("Rolled back checkout"));
    let calls: Vec<_> = fake.with(|st| {
        st.log
            .iter()
            .filter(|l| l.path == format!("/channels/{INCIDENTS}/messages"))
            .cloned()
            .collect()
    });
    let codes: Vec<u16> = calls.iter().map(|c| c.status).collect();
    // Exactly the two 429s it was given: no call came before retry_after was up.
    assert_eq!(codes, vec![429, 429, 200], "{codes:?}");
    let waited = calls[2].at - calls[0].at;
    assert!(
        waited >= Duration::from_millis(780),
        "waited only {waited:?}"
    );
    eprintln!("discord: 2 × 429 (retry_after 0.4 s) delayed the message by {waited:?}");
    assert_eq!(fake.with(|st| st.messages_in(INCIDENTS).len()), 1);
    // The 502 on the deploy channel was retried.
    fake.wait_for("the deploy channel message after a 502", |st| {
        st.messages_in(DEPLOYS).first().cloned()
    })
    .await;

    // A channel the bot cannot see answers 50001 Missing Access: the action
    // still succeeds and the failure is counted.
    let search = rollback_by(&fake, &omar(), "search");
    fake.send(&url, &search).await;
    let t = token(&search);
    let shown = fake
        .wait_for("the search rollback", |st| {
            let o = st.interactions.get(&t)?.original.clone()?;
            (!o["embeds"].as_array()?.is_empty()).then(|| embed_text(&o))
        })
        .await;
    assert!(shown.contains("Rolled back search"), "{shown}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let m = s.get("/metrics").await.1;
        if m.contains("rollbot_chat_errors_total{platform=\"discord\"} 1") {
            assert!(
                m.contains("rollbot_chat_rate_limited_total{platform=\"discord\"} 2"),
                "{m}"
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{m}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let locked = fake.with(|st| {
        st.log
            .iter()
            .find(|l| l.path == format!("/channels/{LOCKED}/messages"))
            .map(|l| l.status)
    });
    assert_eq!(locked, Some(403));
}

fn sink(fake: &FakeDiscord, token: &str) -> rollbot::chat::discord::DiscordSink {
    let rest = rollbot::chat::discord::rest::Rest::new(
        &fake.api,
        token,
        APP_ID.parse().unwrap(),
        rollbot::chat::discord::rest::RetryPolicy::default(),
        std::sync::Arc::new(rollbot::telemetry::Telemetry::new()),
    )
    .unwrap();
    rollbot::chat::discord::DiscordSink::new(rest)
}

#[tokio::test]
async fn summaries_are_edited_in_place_and_replies_go_in_one_thread() {
    use rollbot::chat::{ButtonStyle, ChatSink, Message, Severity};
    let fake = FakeDiscord::start(TOKEN, &[DEPLOYS]).await;
    let discord = sink(&fake, TOKEN);
    let summary = Message::new(Severity::Success, "Canary checkout v2: healthy")
        .field("Score", "98/100")
        .context("rollout r-1");
    let at = discord.post(DEPLOYS, &summary).await.unwrap();
    let prompt = Message::new(Severity::Warning, "Approve promotion of checkout?")
        .button("Approve", "prompt:abc:approve", ButtonStyle::Primary)
        .button("Roll back", "prompt:abc:reject", ButtonStyle::Danger);
    let p = discord.reply(&at, &prompt).await.unwrap();
    assert_eq!(
        p.thread.as_deref(),
        Some(at.id.as_str()),
        "the thread is the summary's"
    );
    let again = discord
        .reply(&at, &Message::new(Severity::Info, "follow-up"))
        .await
        .unwrap();
    assert_eq!(again.channel, at.id);
    let borderline = Message::new(Severity::Warning, "Canary checkout v2: borderline");
    discord.update(&at, &borderline).await.unwrap();

    fake.with(|s| {
        assert_eq!(s.messages_in(DEPLOYS).len(), 1, "one summary per rollout");
        let m = &s.messages[&at.id];
        assert_eq!(m["embeds"][0]["color"], 0xF59E0B);
        assert!(m["embeds"][0]["title"]
            .as_str()
            .unwrap()
            .contains("borderline"));
        let thread = s.messages_in(&at.id);
        assert_eq!(thread.len(), 2);
        assert_eq!(
            thread[0]["components"][0]["components"][1]["custom_id"],
            "prompt:abc:reject"
        );
        let starts = s
            .log
            .iter()
            .filter(|l| l.path.ends_with("/threads"))
            .count();
        assert_eq!(starts, 1, "the thread is started once");
    });

    // After a restart the thread already exists: Discord says 160004 and the
    // reply still lands in it.
    let restarted = sink(&fake, TOKEN);
    let r = restarted
        .reply(&at, &Message::new(Severity::Info, "after restart"))
        .await
        .unwrap();
    assert_eq!(r.channel, at.id);
    fake.with(|s| {
        assert_eq!(s.messages_in(&at.id).len(), 3);
        assert!(s
            .log
            .iter()
            .any(|l| l.status == 400 && l.path.ends_with("/threads")));
    });

    // Discord's errors come back as configuration errors that say what to fix.
    let wrong = sink(&fake, "not-the-token");
    let e = wrong.post(DEPLOYS, &summary).await.unwrap_err().to_string();
    assert!(e.contains("401") && e.contains("bot_token"), "{e}");
    fake.add_channel(LOCKED, true);
    let e = discord
        .post(LOCKED, &summary)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("50001") && e.contains("Missing Access") && e.contains(LOCKED),
        "{e}"
    );
    let e = discord
        .post("2999999999999999999", &summary)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("10003"), "{e}");
}

#[tokio::test]
async fn one_channels_rate_limit_does_not_hold_up_another_and_order_is_kept() {
    use rollbot::chat::{ChatSink, Message, Severity};
    let fake = FakeDiscord::start(TOKEN, &[DEPLOYS, INCIDENTS]).await;
    let discord = std::sync::Arc::new(sink(&fake, TOKEN));
    fake.rate_limit(DEPLOYS, 1, 1.0);
    let started = std::time::Instant::now();
    let mut posts = Vec::new();
    for i in 0..5 {
        let d = discord.clone();
        posts.push(tokio::spawn(async move {
            d.post(
                DEPLOYS,
                &Message::new(Severity::Info, format!("deploy {i}")),
            )
            .await
        }));
        // Let each post queue up before the next.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    discord
        .post(INCIDENTS, &Message::new(Severity::Info, "incident"))
        .await
        .unwrap();
    let other = started.elapsed();
    assert!(
        other < Duration::from_millis(800),
        "the incident channel waited {other:?}"
    );
    for p in posts {
        p.await.unwrap().unwrap();
    }
    let limited = started.elapsed();
    assert!(limited >= Duration::from_millis(950), "{limited:?}");
    let titles: Vec<String> = fake.with(|s| {
        s.messages_in(DEPLOYS)
            .iter()
            .map(|m| m["embeds"][0]["title"].as_str().unwrap().to_string())
            .collect()
    });
    let expected: Vec<String> = (0..5).map(|i| format!("ℹ️ deploy {i}")).collect();
    assert_eq!(titles, expected, "posted in order, none lost");
    eprintln!(
        "discord: other channel served in {other:?} while one waited out a 1 s 429 ({limited:?})"
    );

    // An empty bucket (X-RateLimit-Remaining: 0) is waited out before the
    // next call, so Discord never has to answer 429.
    fake.exhaust_bucket(INCIDENTS, 0.5);
    let t0 = std::time::Instant::now();
    discord
        .post(INCIDENTS, &Message::new(Severity::Info, "a"))
        .await
        .unwrap();
    discord
        .post(INCIDENTS, &Message::new(Severity::Info, "b"))
        .await
        .unwrap();
    assert!(
        t0.elapsed() >= Duration::from_millis(480),
        "{:?}",
        t0.elapsed()
    );
    let statuses: Vec<u16> = fake.with(|s| {
        s.log
            .iter()
            .filter(|l| l.path == format!("/channels/{INCIDENTS}/messages"))
            .map(|l| l.status)
            .collect()
    });
    assert!(!statuses.contains(&429), "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_summary_arrives_with_its_chart_attached() {
    let extra = r#"
[metrics]
source = "simulated"
interval = "1s"
scenarios = { checkout = "bad: errors 3× at 5%, 1% base" }

[[roles.deployer]]
members = ["api:ci"]

[[api.clients]]
name = "ci"
token = "${ROLLBOT_TEST_API_TOKEN}"
"#;
    let api_token = "ci-token-0123456789abcdef0123456789";
    let (fake, server, _dir) =
        start_with(|c| c + extra, &[("ROLLBOT_TEST_API_TOKEN", api_token)]).await;
    let start = chrono::Utc::now() - chrono::Duration::minutes(20);
    Api::new(&server, api_token)
        .announce("checkout", "v1", "v2", start)
        .await;
    let (summary, png) = fake
        .wait_for("the summary with its chart", |s| {
            s.messages_in(DEPLOYS).into_iter().find_map(|m| {
                let a = m["attachments"].get(0)?.clone();
                let bytes = s.attachment_bytes(&a)?;
                Some((m, bytes))
            })
        })
        .await;
    let title = summary["embeds"][0]["title"].as_str().unwrap_or_default();
    assert!(title.contains("Canary checkout v2"), "{title}");
    let a = &summary["attachments"][0];
    assert_eq!(a["content_type"], "image/png");
    assert!(a["filename"].as_str().unwrap().starts_with("canary-"));
    assert!(a["description"].as_str().unwrap().contains("red = canary"));
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(&png[12..16], b"IHDR");
    assert_eq!(u32::from_be_bytes(png[16..20].try_into().unwrap()), 800);
    assert_eq!(u32::from_be_bytes(png[20..24].try_into().unwrap()), 400);
    // Later edits keep one chart on the one summary; uploads are few.
    tokio::time::sleep(Duration::from_secs(3)).await;
    fake.with(|s| {
        let summaries: Vec<Value> = s
            .messages_in(DEPLOYS)
            .into_iter()
            .filter(|m| {
                m["embeds"][0]["title"]
                    .as_str()
                    .is_some_and(|t| t.contains("Canary checkout"))
            })
            .collect();
        assert_eq!(summaries.len(), 1, "one summary per rollout");
        assert_eq!(summaries[0]["attachments"].as_array().unwrap().len(), 1);
        let edits = s
            .log
            .iter()
            .filter(|l| l.method == "PATCH" && l.path.contains(DEPLOYS))
            .count();
        assert!(
            s.files.len() <= edits,
            "{} uploads for {edits} edits",
            s.files.len()
        );
        eprintln!(
            "discord chart: {} bytes, {} upload(s), {edits} edit(s)",
            png.len(),
            s.files.len()
        );
    });
    drop(server);
}
