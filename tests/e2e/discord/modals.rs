//! Discord forms: a rollback typed without a reason is answered with a
//! form (response type 9); its submission (interaction type 5) acts once,
//! as the full command would, with the submitter's roles at that moment;
//! an expired form acts never; a destructive prompt button asks first.

use super::*;

fn rollback_without_reason(fake: &FakeDiscord, who: &Person) -> Value {
    fake.command(DEPLOYS, who, "rollback", &[("service", json!("checkout"))])
}

/// The text of `interaction`'s original answer once it has an embed.
async fn answered(fake: &FakeDiscord, interaction: &Value, what: &str) -> String {
    let t = token(interaction);
    fake.wait_for(what, |st| {
        let o = st.interactions.get(&t)?.original.clone()?;
        (!o["embeds"].as_array()?.is_empty()).then(|| embed_text(&o))
    })
    .await
}

#[tokio::test]
async fn a_rollback_without_a_reason_asks_in_a_form_whose_submission_acts_once() {
    let (fake, s, dir) = start().await;
    let url = s.url("/discord/interactions");
    let ask = rollback_without_reason(&fake, &omar());
    let (code, answer, took) = fake.send(&url, &ask).await;
    assert_eq!((code, answer["type"].as_u64()), (200, Some(9)), "{answer}");
    assert!(took < Duration::from_millis(1500), "form in {took:?}");
    let form = &answer["data"];
    assert_eq!(form["title"], "Roll back checkout");
    let id = form["custom_id"].as_str().unwrap();
    assert!(
        id.starts_with(&format!("form:{}:", ask["id"].as_str().unwrap())),
        "{id}"
    );
    assert_eq!(
        form["components"][0]["components"][0]["custom_id"],
        "reason"
    );
    assert_eq!(
        form["components"][1]["components"][0]["custom_id"],
        "revision"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!s.get("/metrics").await.1.contains("rollbot_actions_total{"));

    // Submitted twice (a double click on Submit): two interactions, one rollback.
    let first = fake.modal_submit(&ask, &omar(), &[("reason", "to v1: p99 doubled")]);
    let second = fake.modal_submit(&ask, &omar(), &[("reason", "to v1: p99 doubled")]);
    let (a, b) = tokio::join!(fake.send(&url, &first), fake.send(&url, &second));
    for (code, answer, _) in [&a, &b] {
        assert_eq!((*code, answer["type"].as_u64()), (200, Some(5)), "{answer}");
        assert_eq!(answer["data"]["flags"].as_u64().unwrap_or(0) & 64, 0);
    }
    let shown = answered(&fake, &first, "the rollback's result").await;
    assert!(shown.contains("Rolled back checkout v2 → v1"), "{shown}");
    answered(&fake, &second, "the second submission's answer").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let m = s.get("/metrics").await.1;
    assert!(
        m.contains("rollbot_actions_total{action=\"rollback\",outcome=\"succeeded\"} 1"),
        "{m}"
    );
    assert_eq!(fake.with(|st| st.messages_in(DEPLOYS).len()), 1);
    assert!(s.terminate().success());
    let export = text(&rollbot(&[
        "audit",
        "export",
        "--data",
        dir.path().join("data").to_str().unwrap(),
    ]));
    // The reason is the form's, whole, though it starts with "to".
    assert!(
        export.contains("\"reason\":\"to v1: p99 doubled\""),
        "{export}"
    );
    assert!(
        export.contains(&format!(
            "\"idempotency_key\":\"discord:form:{}\"",
            ask["id"].as_str().unwrap()
        )),
        "{export}"
    );
}

#[tokio::test]
async fn a_form_submitted_after_it_expired_acts_never() {
    let (fake, s, _dir) = start_with(|c| c + "\n[engine]\nprompt_ttl = \"2s\"\n", &[]).await;
    let url = s.url("/discord/interactions");
    let ask = rollback_without_reason(&fake, &omar());
    assert_eq!(fake.send(&url, &ask).await.1["type"], 9);
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let late = fake.modal_submit(&ask, &omar(), &[("reason", "canary on fire")]);
    let (code, answer, _) = fake.send(&url, &late).await;
    assert_eq!((code, answer["type"].as_u64()), (200, Some(4)), "{answer}");
    assert_eq!(answer["data"]["flags"], 64, "{answer}");
    let shown = embed_text(&answer["data"]);
    assert!(
        shown.contains("This form expired")
            && shown.contains("expired after 2s")
            && shown.contains("nothing was done"),
        "{shown}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let m = s.get("/metrics").await.1;
    assert!(!m.contains("rollbot_actions_total{"), "{m}");
    assert!(m.contains("rollbot_audit_appends_total 0"), "{m}");
}

#[tokio::test]
async fn a_form_is_submitted_with_the_submitters_roles() {
    let (fake, s, _dir) = start().await;
    let url = s.url("/discord/interactions");
    // Dana (viewer) gets the form; her submission is the command, refused
    // privately, naming the roles that may roll back.
    let ask = rollback_without_reason(&fake, &dana());
    assert_eq!(fake.send(&url, &ask).await.1["type"], 9);
    let sub = fake.modal_submit(&ask, &dana(), &[("reason", "looks broken")]);
    let (_, answer, _) = fake.send(&url, &sub).await;
    assert_eq!(
        (answer["type"].as_u64(), answer["data"]["flags"].as_u64()),
        (Some(5), Some(64))
    );
    let shown = seen_only_by_the_author(&fake, &token(&sub), "Not allowed").await;
    assert!(shown.contains("responder, admin"), "{shown}");

    // Omar opens a form as a responder and loses the role before submitting.
    let ask = rollback_without_reason(&fake, &omar());
    assert_eq!(fake.send(&url, &ask).await.1["type"], 9);
    let demoted = Person::new(&omar().id, "Omar", &[VIEWER_ROLE]);
    let sub = fake.modal_submit(&ask, &demoted, &[("reason", "p99 doubled")]);
    fake.send(&url, &sub).await;
    seen_only_by_the_author(&fake, &token(&sub), "Not allowed").await;
    let m = s.get("/metrics").await.1;
    assert!(
        m.contains("rollbot_refusals_total{action=\"rollback\",reason=\"permission\"} 2"),
        "{m}"
    );
    assert!(!m.contains("outcome=\"succeeded\""), "{m}");
    assert!(fake.with(|st| st.messages_in(DEPLOYS).is_empty()));
}

#[tokio::test]
async fn a_destructive_button_asks_to_confirm_and_a_safe_one_acts_at_once() {
    let (fake, s, _dir) = start_with(
        |c| c + &format!("\n[[roles.admin]]\nmembers = [\"discord:{}\"]\n", omar().id),
        &[],
    )
    .await;
    let url = s.url("/discord/interactions");
    // Omar (admin) forces a promotion of payments (critical): a second
    // person approves, and Approve is break-glass.
    let ask = fake.command(
        DEPLOYS,
        &omar(),
        "promote",
        &[
            ("service", json!("payments")),
            ("force", json!(true)),
            ("reason", json!("launch fix")),
        ],
    );
    assert_eq!(fake.send(&url, &ask).await.1["type"], 5);
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
    let press = fake.press(&priya(), &prompt, &approve);
    let (_, answer, _) = fake.send(&url, &press).await;
    assert_eq!(answer["type"], 9, "a confirmation step first: {answer}");
    assert_eq!(answer["data"]["title"], "Force promote payments?");
    assert_eq!(answer["data"]["custom_id"], format!("confirm:{approve}"));
    let input = &answer["data"]["components"][0]["components"][0];
    assert_eq!(input["required"], false);
    assert!(
        input["placeholder"]
            .as_str()
            .unwrap()
            .starts_with("payments is promoted one step"),
        "{input}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!s
        .get("/metrics")
        .await
        .1
        .contains("action=\"promote\",outcome=\"succeeded\""));

    // Confirmed twice: the prompt is answered once, with the reason given.
    let yes = fake.modal_submit(&press, &priya(), &[("reason", "fix verified on staging")]);
    let again = fake.modal_submit(&press, &priya(), &[]);
    let (_, answer, _) = fake.send(&url, &yes).await;
    assert_eq!(answer["type"], 6, "{answer}");
    fake.send(&url, &again).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let m = s.get("/metrics").await.1;
        if m.contains("rollbot_actions_total{action=\"promote\",outcome=\"succeeded\"} 1") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{m}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refused = first_followup(&fake, &again, "the second confirmation refused").await;
    assert!(refused.to_lowercase().contains("already"), "{refused}");

    // A plain promotion's Approve changes nothing past a safeguard: no form.
    let plain = fake.command(
        DEPLOYS,
        &sam(),
        "promote",
        &[
            ("service", json!("payments")),
            ("reason", json!("canary clean")),
        ],
    );
    fake.send(&url, &plain).await;
    let second = fake
        .wait_for("the second prompt", |st| {
            st.messages_in(DEPLOYS)
                .into_iter()
                .filter(|m| m["components"].as_array().is_some_and(|c| !c.is_empty()))
                .find(|m| m["id"] != prompt["id"])
        })
        .await;
    let reject = second["components"][0]["components"][1]["custom_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, answer, _) = fake
        .send(&url, &fake.press(&priya(), &second, &reject))
        .await;
    assert_eq!(answer["type"], 6, "{answer}");
}
