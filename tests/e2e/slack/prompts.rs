//! Prompts in Slack: only approvers answer, once, and an expired prompt
//! acts on nothing.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_refuses_a_non_approver_and_acts_once_for_an_approver() {
    let r = rig("http").await;
    let (code, ack, _) = r
        .slash(
            "/promote",
            "payments metrics look fine",
            DEPLOYER,
            "trig-pr-1",
        )
        .await;
    assert_eq!(code, 200);
    assert!(ack["text"].as_str().unwrap().contains("Promoting payments"));
    let prompt = r.fake.wait_for(10, "the prompt", prompt_of).await;
    let approve = prompt.button(":approve");
    assert!(approve.starts_with("prompt:"));

    // A deployer (not an approver) presses Approve: refused privately, the prompt stays open.
    assert_eq!(
        r.press(OUTSIDER, &prompt, &approve, "trig-press-0", None)
            .await,
        200
    );
    let refusal = r.fake.ephemeral(10, "the refusal", OUTSIDER, "").await;
    assert!(refusal.text.contains("approver"), "{}", refusal.text);
    let still = prompt_of(&r.fake).unwrap();
    assert!(still.updates.is_empty() && still.buttons().len() == 2);

    // A forged button acts on nothing.
    assert_eq!(
        r.press(
            APPROVER,
            &prompt,
            "prompt:ffffffffffff:approve",
            "trig-forged",
            None
        )
        .await,
        200
    );
    r.fake
        .ephemeral(10, "the forged press refused", APPROVER, "Unknown prompt")
        .await;

    // The approver (through the S0APPROVERS user group) presses twice, and Slack retries the first press.
    let (a, b, c) = tokio::join!(
        r.press(APPROVER, &prompt, &approve, "trig-press-1", None),
        r.press(APPROVER, &prompt, &approve, "trig-press-2", None),
        r.press(APPROVER, &prompt, &approve, "trig-press-1", Some("1")),
    );
    assert_eq!((a, b, c), (200, 200, 200));
    let answered = r
        .fake
        .wait_for(15, "the prompt answered", |f| {
            f.messages(DEPLOYS)
                .into_iter()
                .find(|m| m.ts == prompt.ts && !m.updates.is_empty())
        })
        .await;
    assert!(answered.buttons().is_empty(), "buttons removed");
    // People are shown as mentions, which Slack renders as their current
    // display name, never as the payload's deprecated user_name.
    let shown = answered.current_blocks().to_string();
    assert!(
        shown.contains("Approve by <@U0APPR> at") && shown.contains("<@U0DEPLOY>"),
        "{shown}"
    );
    assert!(
        answered.current_text().contains("Approve by <@U0APPR>"),
        "{}",
        answered.current_text()
    );
    let result = r
        .fake
        .wait_for(20, "the promotion in the prompt's thread", |f| {
            with_text(f.messages(DEPLOYS), "Promoted payments")
                .into_iter()
                .next()
        })
        .await;
    assert_eq!(result.thread_ts.as_deref(), Some(prompt.ts.as_str()));
    let shown = result.current_blocks().to_string();
    assert!(shown.contains("*By*\\n<@U0APPR>"), "{shown}");
    for m in r.fake.messages(DEPLOYS) {
        let all = format!("{} {}", m.current_text(), m.current_blocks());
        assert!(
            !all.contains("u0appr") && !all.contains("u0deploy"),
            "a username in {all}"
        );
    }
    r.fake
        .ephemeral(10, "already answered", APPROVER, "Already answered")
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let now = r
        .fake
        .messages(DEPLOYS)
        .into_iter()
        .find(|m| m.ts == prompt.ts)
        .unwrap();
    assert_eq!(now.updates.len(), 1, "the prompt is updated once");
    assert_eq!(
        with_text(r.fake.messages(DEPLOYS), "Promoted payments").len(),
        1
    );
    // One refusal for the second press; the retry is dropped.
    assert_eq!(
        r.fake
            .ephemerals(APPROVER)
            .iter()
            .filter(|e| e.text.contains("Already answered"))
            .count(),
        1
    );
    let records = r.audit_records();
    let promoted = records
        .iter()
        .find(|r| r["action"] == "promote" && r["outcome"] == "succeeded")
        .expect("the promotion is audited");
    assert_eq!(promoted["actor"]["id"], APPROVER);
    assert_eq!(promoted["actor"]["display_name"], "<@U0APPR>", "{promoted}");
    let asked = records
        .iter()
        .filter(|r| r["action"] == "promote" && r["outcome"] == "pending")
        .collect::<Vec<_>>();
    assert_eq!(asked.len(), 1, "{records:?}");
    assert_eq!(asked[0]["actor"]["display_name"], "<@U0DEPLOY>");
    assert_eq!(
        records
            .iter()
            .filter(|r| r["action"] == "promote" && r["outcome"] == "succeeded")
            .count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_press_on_an_expired_prompt_says_so_and_acts_on_nothing() {
    let r = rig_with(
        "http",
        "[engine]\nprompt_ttl = \"3s\"\n",
        fake_slack::BOT_TOKEN,
        &[],
    )
    .await;
    r.slash("/promote", "payments", DEPLOYER, "trig-exp-1")
        .await;
    let prompt = r.fake.wait_for(10, "the prompt", prompt_of).await;
    let approve = prompt.button(":approve");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        r.press(APPROVER, &prompt, &approve, "trig-exp-2", None)
            .await,
        200
    );
    let refusal = r
        .fake
        .ephemeral(10, "the expiry refusal", APPROVER, "")
        .await;
    assert!(refusal.text.contains("expired"), "{}", refusal.text);
    let updated = r
        .fake
        .wait_for(10, "the prompt marked expired", |f| {
            f.messages(DEPLOYS)
                .into_iter()
                .find(|m| m.ts == prompt.ts && !m.updates.is_empty())
        })
        .await;
    assert!(updated.buttons().is_empty());
    assert!(
        updated.current_text().contains("Expired"),
        "{}",
        updated.current_text()
    );
    let audit = r.audit();
    assert_audit_counts(
        &audit,
        &[
            ("promote", "succeeded", "", 0),
            ("approve", "refused", "", 1),
        ],
    );
}
