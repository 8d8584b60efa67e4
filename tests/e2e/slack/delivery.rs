//! Messages reach Slack despite rate limits and errors, and a flood of
//! commands does not hold up the next action.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_delays_a_message_but_does_not_lose_it() {
    let r = rig("http").await;
    r.fake.rate_limit_next(2, 1);
    let (code, _, took) = r
        .slash(
            "/rollback",
            "checkout 5xx after deploy",
            RESPONDER,
            "trig-429",
        )
        .await;
    assert_eq!(code, 200);
    assert!(took < Duration::from_secs(1));
    let deploy = r
        .fake
        .wait_for(25, "the rollback despite 429s", |f| {
            with_text(f.messages(DEPLOYS), "Rolled back checkout")
                .into_iter()
                .next()
        })
        .await;
    r.fake
        .wait_for(10, "the incident channel too", |f| {
            with_text(f.messages(INCIDENTS), "Rolled back checkout")
                .into_iter()
                .next()
        })
        .await;
    let posts = r.fake.calls("chat.postMessage");
    let limited: Vec<_> = posts.iter().filter(|c| c.status == 429).collect();
    assert_eq!(limited.len(), 2, "{posts:?}");
    let waited = deploy.at.duration_since(limited[0].at);
    eprintln!(
        "slack 429 with Retry-After 1: delivered {} ms after the first 429",
        waited.as_millis()
    );
    assert!(waited >= Duration::from_millis(950), "{waited:?}");

    // Two 500s in a row: retried with backoff, the private answer still arrives.
    r.fake.inner.lock().unwrap().server_errors = 2;
    r.slash("/rollbot", "status checkout", RESPONDER, "trig-500")
        .await;
    let status = r
        .fake
        .ephemeral(15, "the status despite 500s", RESPONDER, "")
        .await;
    assert!(status.text.contains("checkout"), "{}", status.text);
    let failed = r
        .fake
        .inner
        .lock()
        .unwrap()
        .calls
        .iter()
        .filter(|c| c.status == 500)
        .count();
    assert_eq!(failed, 2);
    let audit = r.audit();
    assert_audit_counts(&audit, &[("rollback", "succeeded", "", 1)]);
}

/// The resident memory of a process, in KiB (Linux).
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Waits (bounded) until the deploy channel shows `needle`; how long it took.
async fn announced_within(r: &SlackRig, needle: &str, limit: Duration) -> Option<Duration> {
    let t = Instant::now();
    while t.elapsed() < limit {
        if !with_text(r.fake.messages(DEPLOYS), needle).is_empty() {
            return Some(t.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// A burst of 20,000 signed commands (a chat flood during an incident)
/// does not take rollbot out of service: every one is taken, and the
/// action that follows acts and is announced in the deploy channel about
/// as fast as one before the flood, not behind the flood's replies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_twenty_thousand_signed_commands_is_followed_by_a_prompt_action() {
    const BURST: usize = 20_000;
    let r = rig("http").await;
    let pid = r.server.child.id();
    // The same kind of action before the flood, for comparison.
    let (code, _, _) = r
        .slash(
            "/rollback",
            "checkout before the flood",
            RESPONDER,
            "before-flood",
        )
        .await;
    assert_eq!(code, 200);
    let quiet = announced_within(&r, "Rolled back checkout v42", Duration::from_secs(60))
        .await
        .expect("a rollback on a quiet server is announced");
    let before = rss_kib(pid);
    let t0 = Instant::now();
    let mut refused = 0;
    // 64 at a time; every call is bounded by the client's 10 s timeout.
    for chunk in (0..BURST).collect::<Vec<_>>().chunks(64) {
        let calls = chunk.iter().map(|i| {
            let trigger = format!("burst-{i}");
            let body = fake_slack::slash_body(
                "/rollbot",
                "status checkout",
                OUTSIDER,
                DEPLOYS,
                &trigger,
                &r.fake.response_url(&trigger),
            );
            let r = &r;
            async move { r.signed("/slack/commands", &body, &[]).await.0 }
        });
        refused += futures_util::future::join_all(calls)
            .await
            .into_iter()
            .filter(|code| *code != 200)
            .count();
    }
    let flood = t0.elapsed();
    let after_flood = rss_kib(pid);
    assert_eq!(refused, 0, "every signed command was taken");
    let (code, _, took) = r
        .slash(
            "/rollback",
            "checkout after the flood",
            RESPONDER,
            "after-flood",
        )
        .await;
    assert_eq!(code, 200);
    assert!(
        took < Duration::from_secs(3),
        "acknowledged within Slack's 3 s: {took:?}"
    );
    let after = announced_within(
        &r,
        "Rolled back checkout v41",
        quiet * 3 + Duration::from_secs(10),
    )
    .await;
    eprintln!(
        "slack burst: {BURST} signed commands in {:.1}s ({:.0}/s); rss {} MiB before, {} MiB after; a rollback announced in {:.1}s before the flood, {:?} after",
        flood.as_secs_f64(),
        BURST as f64 / flood.as_secs_f64(),
        before / 1024,
        after_flood / 1024,
        quiet.as_secs_f64(),
        after
    );
    assert!(
        after.is_some(),
        "the rollback after the flood was announced within 3 × {quiet:?} + 10 s"
    );
    let audit = r.audit();
    assert_audit_counts(&audit, &[("rollback", "succeeded", "", 2)]);
}
