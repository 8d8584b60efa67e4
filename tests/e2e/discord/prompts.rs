//! Prompts in Discord: only approvers answer, once and not their own;
//! expired prompts act on nothing; unanswered ones escalate.

use super::*;

/// Sam (a deployer) runs `/promote payments`: payments is critical, so the
/// answer is deferred and a prompt with buttons appears in the deploy
/// channel. Returns the interaction sent and the prompt message.
async fn sam_asks_to_promote_payments(
    fake: &FakeDiscord,
    url: &str,
    reason: &str,
) -> (Value, Value) {
    let ask = fake.command(
        DEPLOYS,
        &sam(),
        "promote",
        &[("service", json!("payments")), ("reason", json!(reason))],
    );
    let (_, answer, _) = fake.send(url, &ask).await;
    assert_eq!(answer["type"], 5);
    let prompt = fake
        .wait_for("the prompt in the deploy channel", |st| {
            st.messages_in(DEPLOYS)
                .into_iter()
                .find(|m| m["components"].as_array().is_some_and(|c| !c.is_empty()))
        })
        .await;
    (ask, prompt)
}

#[tokio::test]
async fn prompt_buttons_refuse_non_approvers_and_act_once_for_approvers() {
    let (fake, s, _dir) = start().await;
    let url = s.url("/discord/interactions");
    let (ask, prompt) = sam_asks_to_promote_payments(&fake, &url, "canary clean").await;
    let buttons = prompt["components"][0]["components"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(buttons.len(), 2);
    let approve = buttons[0]["custom_id"].as_str().unwrap().to_string();
    assert!(
        approve.starts_with("prompt:") && approve.ends_with(":approve"),
        "{approve}"
    );
    assert_eq!(buttons[0]["label"], "Approve");
    assert_eq!(buttons[1]["style"], 4, "reject is red");
    let t = token(&ask);
    let waiting = fake
        .wait_for("the pending answer", |st| {
            let o = st.interactions.get(&t)?.original.clone()?;
            (!o["embeds"].as_array()?.is_empty()).then(|| embed_text(&o))
        })
        .await;
    assert!(waiting.contains("Waiting for approval"), "{waiting}");

    // Dana (viewer) presses Approve: refused, ephemerally, naming the role.
    let press = fake.press(&dana(), &prompt, &approve);
    let (code, answer, took) = fake.send(&url, &press).await;
    assert_eq!(
        (code, answer.clone()),
        (200, json!({"type": 6})),
        "{answer}"
    );
    assert!(took < Duration::from_millis(1500));
    let pt = token(&press);
    let refusal = fake
        .wait_for("the refusal", |st| {
            st.interactions.get(&pt)?.followups.first().cloned()
        })
        .await;
    assert_eq!(refusal["flags"].as_u64().unwrap() & 64, 64);
    let shown = embed_text(&refusal);
    assert!(shown.contains("approver or admin"), "{shown}");
    assert!(shown.contains("stays open"), "{shown}");
    // Sam asked, so Sam cannot approve.
    let own = fake.press(&sam(), &prompt, &approve);
    fake.send(&url, &own).await;
    let shown = first_followup(&fake, &own, "the two-person refusal").await;
    assert!(shown.contains("different person"), "{shown}");
    // The prompt is untouched: buttons still live.
    let now = fake.with(|st| st.messages[prompt["id"].as_str().unwrap()].clone());
    assert_eq!(now["components"][0]["components"][0]["disabled"], false);
    assert!(now["edited_timestamp"].is_null());

    // Priya (approver) presses Approve twice, and Discord delivers the first press twice.
    let first = fake.press(&priya(), &prompt, &approve);
    let (_, answer, _) = fake.send(&url, &first).await;
    assert_eq!(answer["type"], 6);
    fake.send(&url, &first).await;
    let second = fake.press(&priya(), &prompt, &approve);
    fake.send(&url, &second).await;
    let edited = fake
        .wait_for("the answered prompt", |st| {
            let m = st.messages[prompt["id"].as_str().unwrap()].clone();
            (m["components"][0]["components"][0]["disabled"] == true).then_some(m)
        })
        .await;
    let shown = embed_text(&edited);
    assert!(shown.contains("Answer: Approve by Priya at"), "{shown}");
    let again = first_followup(&fake, &second, "the second press's answer").await;
    assert!(again.contains("Already answered"), "{again}");
    let promoted = fake
        .wait_for("the promotion's announcement in the prompt's thread", |s| {
            s.messages_under(DEPLOYS)
                .into_iter()
                .map(|m| embed_text(&m))
                .find(|t| t.contains("Promoted payments"))
        })
        .await;
    assert!(promoted.contains("By: Priya"), "{promoted}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let m = s.get("/metrics").await.1;
    // One approval acted; the repeats were refused as already answered.
    assert!(
        m.contains("rollbot_actions_total{action=\"approve\",outcome=\"succeeded\"} 1"),
        "{m}"
    );
    let promotions = fake.with(|s| {
        s.messages_under(DEPLOYS)
            .iter()
            .filter(|m| embed_text(m).contains("Promoted payments"))
            .count()
    });
    assert_eq!(promotions, 1, "the backend acted more than once");

    // A forged button does nothing.
    let forged = fake.press(&priya(), &prompt, "prompt:000000000000:approve");
    fake.send(&url, &forged).await;
    let shown = first_followup(&fake, &forged, "the forged button's answer").await;
    assert!(shown.contains("Unknown prompt"), "{shown}");
}

#[tokio::test]
async fn an_expired_prompt_says_so_and_cannot_act() {
    let (fake, s, _dir) = start_with(
        |c| c.replace("[store]", "[engine]\nprompt_ttl = \"1s\"\n\n[store]"),
        &[],
    )
    .await;
    let url = s.url("/discord/interactions");
    fake.send(
        &url,
        &fake.command(
            DEPLOYS,
            &sam(),
            "promote",
            &[("service", json!("payments"))],
        ),
    )
    .await;
    let prompt = fake
        .wait_for("the prompt", |st| {
            st.messages_in(DEPLOYS)
                .into_iter()
                .find(|m| m["components"].as_array().is_some_and(|c| !c.is_empty()))
        })
        .await;
    let approve = prompt["components"][0]["components"][0]["custom_id"]
        .as_str()
        .unwrap()
        .to_string();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let press = fake.press(&priya(), &prompt, &approve);
    fake.send(&url, &press).await;
    let shown = first_followup(&fake, &press, "the expiry refusal").await;
    assert!(shown.contains("Prompt expired"), "{shown}");
    let edited = fake
        .wait_for("the expired prompt", |st| {
            let m = st.messages[prompt["id"].as_str().unwrap()].clone();
            (m["components"][0]["components"][0]["disabled"] == true).then_some(m)
        })
        .await;
    assert!(
        embed_text(&edited).contains("Expired: no answer before"),
        "{}",
        embed_text(&edited)
    );
    let m = s.get("/metrics").await.1;
    assert!(
        !m.contains("action=\"approve\",outcome=\"succeeded\""),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_prompt_escalates_with_a_real_ping_of_the_next_group() {
    // No metric source: escalation still runs (there is no controller loop).
    let (fake, s, _dir) = start_with(|c| {
        c.replacen(
            "critical = true\n",
            &format!(
                "critical = true\nescalate_after = \"1s\"\nescalation = [\"discord-role:{APPROVER_ROLE}\", \"discord:{}\"]\n",
                omar().id
            ),
            1,
        )
    }, &[])
    .await;
    let url = s.url("/discord/interactions");
    let (_, prompt) = sam_asks_to_promote_payments(&fake, &url, "@everyone canary clean").await;
    // The prompt itself pings nobody, whatever its reason says.
    assert_eq!(prompt["mention_everyone"], false, "{prompt}");
    assert_eq!(prompt["mention_roles"], json!([]), "{prompt}");

    let first = fake
        .wait_for("the first escalation in the prompt's thread", |st| {
            st.messages_under(DEPLOYS)
                .into_iter()
                .find(|m| m["channel_id"] != DEPLOYS && embed_text(m).contains("Still waiting"))
        })
        .await;
    assert_eq!(first["content"], format!("<@&{APPROVER_ROLE}>"), "{first}");
    assert_eq!(first["mention_roles"], json!([APPROVER_ROLE]), "{first}");
    assert_eq!(first["mention_everyone"], false);
    assert!(
        embed_text(&first).contains("step 1 of 2"),
        "{}",
        embed_text(&first)
    );

    let second = fake
        .wait_for("the second escalation, to a person", |st| {
            st.messages_under(DEPLOYS)
                .into_iter()
                .find(|m| embed_text(m).contains("step 2 of 2"))
        })
        .await;
    assert_eq!(second["content"], format!("<@{}>", omar().id), "{second}");
    assert_eq!(second["mentions"][0]["id"], json!(omar().id), "{second}");
    assert_eq!(second["mention_roles"], json!([]));

    // Two steps in all, then it stays quiet; nothing was promoted.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let escalations = fake.with(|st| {
        st.messages_under(DEPLOYS)
            .into_iter()
            .filter(|m| embed_text(m).contains("Still waiting"))
            .count()
    });
    assert_eq!(escalations, 2);
    let promoted = fake.with(|st| {
        st.messages_under(DEPLOYS)
            .into_iter()
            .any(|m| embed_text(&m).contains("Promoted payments"))
    });
    assert!(!promoted, "escalation never acts");
}
