//! Slack forms and confirmations: a rollback typed without a reason opens
//! a modal (`views.open` with the command's `trigger_id`); its submission
//! acts once, as the full command would, with the submitter's roles; an
//! expired form acts never; destructive buttons carry a danger `confirm`.

use super::*;
use crate::support::fake_slack::OpenedView;

const ADMIN: &str = "U0ADMIN";

async fn rig_extra(extra: &str) -> SlackRig {
    rig_with("http", extra, fake_slack::BOT_TOKEN, &[]).await
}

/// `user` types `command text` with a trigger Slack just issued; the
/// acknowledgement's text.
async fn typed(r: &SlackRig, command: &str, text: &str, user: &str) -> String {
    let trigger = r.fake.trigger(user);
    let (code, ack, took) = r.slash(command, text, user, &trigger).await;
    assert_eq!(code, 200);
    assert!(took < Duration::from_secs(1), "acknowledged in {took:?}");
    ack["text"].as_str().unwrap_or_default().to_string()
}

async fn form_for(r: &SlackRig, user: &str) -> OpenedView {
    r.fake
        .wait_for(5, "views.open", |f| {
            f.views().into_iter().rev().find(|v| v.user == user)
        })
        .await
}

fn rollbacks_announced(r: &SlackRig) -> usize {
    with_text(r.fake.messages(DEPLOYS), "Rolled back checkout").len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_without_a_reason_opens_a_form_whose_submission_acts_once() {
    let r = rig("http").await;
    let ack = typed(&r, "/rollback", "checkout to v41", RESPONDER).await;
    assert!(ack.contains("asks for the reason"), "{ack}");
    let form = form_for(&r, RESPONDER).await;
    // Opened with the command's own trigger, well within Slack's 3 s.
    let open = r.fake.calls("views.open");
    assert_eq!(open.len(), 1);
    assert_eq!((open[0].status, open[0].error.clone()), (200, None));
    eprintln!(
        "slack form opened {} ms after the trigger was issued",
        form.at
            .duration_since(r.fake.inner.lock().unwrap().triggers[&form.trigger].issued)
            .as_millis()
    );
    assert_eq!(form.view["callback_id"], "rollbot-form");
    let meta = form.metadata();
    assert_eq!(meta["command"], "rollback checkout");
    assert_eq!(
        (meta["channel"].as_str(), meta["user"].as_str()),
        (Some(DEPLOYS), Some(RESPONDER))
    );
    let inputs = form.inputs();
    assert_eq!(inputs[0]["block_id"], "reason");
    assert_eq!(inputs[1]["block_id"], "revision");
    assert_eq!(inputs[1]["optional"], true);
    assert_eq!(inputs[1]["element"]["initial_value"], "v41");
    // A trigger is exchanged once: Slack refuses it a second time.
    let again = reqwest::Client::new()
        .post(format!("{}views.open", r.fake.api_url()))
        .bearer_auth(fake_slack::BOT_TOKEN)
        .json(&json!({"trigger_id": form.trigger, "view": form.view}))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(again["error"], "exchanged_trigger_id", "{again}");

    // Nothing acts before the submission.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rollbacks_announced(&r), 0);

    // A revision that is an option: the form stays open, naming the input.
    let bad = r.fake.view_submission(
        &form,
        &[("reason", "5xx after deploy"), ("revision", "--force")],
    );
    let (code, answer) = r.submit_view(&bad).await;
    assert_eq!(code, 200);
    assert_eq!(answer["response_action"], "errors", "{answer}");
    assert!(
        answer["errors"]["revision"]
            .as_str()
            .unwrap()
            .contains("starts with `-`"),
        "{answer}"
    );

    // Submitted, then delivered again: the form closes (empty answer) and
    // the rollback runs once.
    // Each delivery is its own request (its own trigger and signature).
    let values = [("reason", "to v40 errors doubled"), ("revision", "v40")];
    let good = r.fake.view_submission(&form, &values);
    let twice = r.fake.view_submission(&form, &values);
    let (first, second) = tokio::join!(r.submit_view(&good), r.submit_view(&twice));
    assert_eq!(first, (200, Value::Null));
    assert_eq!(second, (200, Value::Null));
    r.fake
        .wait_for(20, "the rollback in the deploy channel", |f| {
            with_text(f.messages(DEPLOYS), "Rolled back checkout")
                .into_iter()
                .next()
        })
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(rollbacks_announced(&r), 1);
    let records = r.audit_records();
    let done: Vec<&Value> = records
        .iter()
        .filter(|e| e["action"] == "rollback" && e["outcome"] == "succeeded")
        .collect();
    assert_eq!(done.len(), 1, "{records:#?}");
    assert_eq!(done[0]["actor"]["id"], RESPONDER);
    // The reason is the form's, whole, even though it starts with "to".
    assert_eq!(done[0]["reason"], "to v40 errors doubled", "{:#}", done[0]);
    assert!(
        done[0].to_string().contains("v40"),
        "the form's revision: {:#}",
        done[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_submitted_after_it_expired_acts_never() {
    let r = rig_extra("[engine]\nprompt_ttl = \"2s\"\n").await;
    typed(&r, "/rollback", "checkout", RESPONDER).await;
    let form = form_for(&r, RESPONDER).await;
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let late = r
        .fake
        .view_submission(&form, &[("reason", "canary on fire")]);
    let (code, answer) = r.submit_view(&late).await;
    assert_eq!(code, 200);
    assert_eq!(answer["response_action"], "errors", "{answer}");
    let why = answer["errors"]["reason"].as_str().unwrap();
    assert!(
        why.contains("expired after 2s") && why.contains("nothing was done"),
        "{why}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(rollbacks_announced(&r), 0);
    let audit = r.audit();
    assert!(
        audit.iter().all(|e| e.action != "rollback"),
        "an expired form reached the engine: {audit:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_slack_cannot_open_in_time_says_how_to_type_the_reason() {
    let r = rig("http").await;
    // Slack's trigger is 3 s old by the time the command arrives.
    let trigger = r.fake.trigger(RESPONDER);
    tokio::time::sleep(Duration::from_millis(3200)).await;
    r.slash("/rollback", "checkout", RESPONDER, &trigger).await;
    let told = r
        .fake
        .ephemeral(10, "the private answer", RESPONDER, "did not open")
        .await;
    assert!(
        told.text.contains("expired_trigger_id")
            && told.text.contains("/rollback checkout <reason>"),
        "{}",
        told.text
    );
    assert_eq!(
        r.fake.calls("views.open")[0].error.as_deref(),
        Some("expired_trigger_id")
    );
    assert!(r.fake.views().is_empty());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(rollbacks_announced(&r), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submission_is_refused_without_the_role_and_reasons_typed_inline_still_act() {
    let r = rig("http").await;
    // A deployer (no rollback permission) gets the form; submitting it is
    // the command, and the engine refuses it, privately, naming the role.
    typed(&r, "/rollback", "checkout", OUTSIDER).await;
    let form = form_for(&r, OUTSIDER).await;
    let sub = r
        .fake
        .view_submission(&form, &[("reason", "I think it is broken")]);
    assert_eq!(r.submit_view(&sub).await, (200, Value::Null));
    let refusal = r
        .fake
        .ephemeral(10, "the refusal", OUTSIDER, "responder")
        .await;
    assert_eq!(refusal.channel, DEPLOYS);
    // The reason typed inline acts at once, with no form.
    let ack = typed(&r, "/rollback", "checkout 5xx after deploy", RESPONDER).await;
    assert!(ack.contains("Rolling back checkout"), "{ack}");
    r.fake
        .wait_for(20, "the rollback", |f| {
            with_text(f.messages(DEPLOYS), "Rolled back checkout")
                .into_iter()
                .next()
        })
        .await;
    assert_eq!(r.fake.views().len(), 1, "a typed reason opened a form");
    // A dry run changes nothing and asks nothing.
    let trigger = r.fake.trigger(RESPONDER);
    r.slash("/rollback", "checkout dry-run", RESPONDER, &trigger)
        .await;
    r.fake
        .wait_for(10, "the dry run's answer", |f| {
            f.responses(&trigger)
                .into_iter()
                .find(|v| v.to_string().contains("Dry run"))
        })
        .await;
    assert_eq!(r.fake.views().len(), 1);
    assert_audit_counts(
        &r.audit(),
        &[
            ("rollback", "refused", OUTSIDER, 1),
            // The rollback and the dry run.
            ("rollback", "succeeded", RESPONDER, 2),
        ],
    );
}

/// The `confirm` object of the button `ending` of `m`, if any.
fn confirm_of(m: &Posted, ending: &str) -> Option<Value> {
    m.current_blocks()
        .as_array()?
        .iter()
        .filter(|b| b["type"] == "actions")
        .flat_map(|b| b["elements"].as_array().cloned().unwrap_or_default())
        .find(|e| e["action_id"].as_str().is_some_and(|a| a.ends_with(ending)))?
        .get("confirm")
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destructive_buttons_carry_a_danger_confirmation_and_safe_ones_none() {
    let r = rig_extra("[[roles.admin]]\nmembers = [\"slack:U0ADMIN\"]\n").await;
    // A critical service's promotion asks a second person: Approve and
    // Reject change nothing past a safeguard, so they ask nothing more.
    typed(&r, "/promote", "payments metrics look fine", DEPLOYER).await;
    let plain = r.fake.wait_for(10, "the prompt", prompt_of).await;
    assert_eq!(confirm_of(&plain, ":approve"), None);
    assert_eq!(confirm_of(&plain, ":reject"), None);
    // A forced promotion is break-glass: its Approve asks first.
    typed(&r, "/promote", "payments force launch fix", ADMIN).await;
    let forced = r
        .fake
        .wait_for(10, "the forced promotion's prompt", |f| {
            f.messages(DEPLOYS)
                .into_iter()
                .find(|m| m.ts != plain.ts && !m.buttons().is_empty())
        })
        .await;
    let c = confirm_of(&forced, ":approve").expect("a confirm object on Force promote");
    assert_eq!(c["style"], "danger");
    assert_eq!(c["title"]["text"], "Force promote payments?");
    assert!(
        c["text"]["text"]
            .as_str()
            .unwrap()
            .contains("forced through any freeze (break-glass)"),
        "{c}"
    );
    assert_eq!(c["confirm"]["text"], "Force promote");
    assert_eq!(c["deny"]["text"], "Cancel");
    assert_eq!(confirm_of(&forced, ":reject"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_socket_mode_a_form_is_answered_in_the_envelopes_acknowledgement() {
    let r = rig("socket").await;
    let f = r.fake.clone();
    f.wait_for(10, "the socket", |f| (f.connections() == 1).then_some(()))
        .await;
    let trigger = f.trigger(RESPONDER);
    let form = fake_slack::slash_envelope(
        "env-form",
        "/rollback",
        "checkout",
        RESPONDER,
        DEPLOYS,
        &trigger,
        &f.response_url(&trigger),
    );
    f.socket_send(&form);
    let (ack, _) = f.ack("env-form").await;
    assert!(
        ack["payload"]["text"]
            .as_str()
            .unwrap()
            .contains("asks for the reason"),
        "{ack}"
    );
    let view = form_for(&r, RESPONDER).await;
    let interactive = |id: &str, payload: Value| {
        json!({"envelope_id": id, "type": "interactive", "payload": payload,
            "accepts_response_payload": true, "retry_attempt": 0, "retry_reason": ""})
    };
    // A refused input is answered in the acknowledgement; the form stays open.
    f.socket_send(&interactive(
        "env-bad",
        f.view_submission(&view, &[("reason", "bad"), ("revision", "v4;reboot")]),
    ));
    let (ack, _) = f.ack("env-bad").await;
    assert_eq!(ack["payload"]["response_action"], "errors", "{ack}");
    assert!(ack["payload"]["errors"]["revision"].is_string(), "{ack}");
    // A good one is acknowledged plainly and acts.
    f.socket_send(&interactive(
        "env-good",
        f.view_submission(&view, &[("reason", "5xx after deploy")]),
    ));
    let (ack, _) = f.ack("env-good").await;
    assert!(ack.get("payload").is_none(), "{ack}");
    f.wait_for(20, "the rollback", |f| {
        with_text(f.messages(DEPLOYS), "Rolled back checkout")
            .into_iter()
            .next()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_api_takes_the_reason_inline_and_never_asks_for_one() {
    let extra = r#"[[roles.responder]]
members = ["api:ci"]

[[api.clients]]
name = "ci"
token = "${SLACK_SIGNING_SECRET}"
"#;
    let r = rig_extra(extra).await;
    let api = r.api(fake_slack::SIGNING_SECRET);
    let (code, answer) = api
        .action("/rollback checkout to v41 5xx after deploy", None)
        .await;
    assert_eq!(code, 200, "{answer}");
    assert!(
        answer.to_string().contains("Rolled back checkout"),
        "{answer}"
    );
    // Without a reason it acts as before: only chat asks in a form.
    let (code, answer) = api.action("/rollback payments", None).await;
    assert_eq!(code, 200, "{answer}");
    assert!(
        answer.to_string().contains("Rolled back payments"),
        "{answer}"
    );
    assert!(r.fake.calls("views.open").is_empty());
    let records = r.audit_records();
    let reasons: Vec<&str> = records
        .iter()
        .filter(|e| e["action"] == "rollback" && e["outcome"] == "succeeded")
        .map(|e| e["reason"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(reasons, ["5xx after deploy", ""], "{records:#?}");
}
