//! Gates end to end: `rollbot serve` as Flagger's confirm and rollback
//! webhooks and as an Argo Rollouts web metric, with people answering in
//! the fake Slack (tests/support/fake_slack.rs).

use crate::support::audit::assert_audit_counts;
use crate::support::fake_slack::{FakeSlack, Posted};
use crate::support::slack_rig::SlackRig;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const DEPLOYS: &str = "C0DEPLOYS";
const APPROVER: &str = "U0APPR";
const DEPLOYER: &str = "U0DEPLOY";
const RESPONDER: &str = "U0RESP";
const RELEASE: &str = "U0RELEASE";
const GATES_TOKEN: &str = "gates-token-5b2e";

const CONFIG: &str = r##"
[server]
listen = "127.0.0.1:{port}"

[store]
path = "{data}"

[channels.deploys]
slack = "C0DEPLOYS"

[backends.flagger]
type = "flagger"
verify_wait = "3s"

[backends.sim]
type = "simulated"
history = { checkout = ["v41", "v42"] }

[[services]]
name = "podinfo"
backend = "flagger"
deploy_channel = "deploys"
target = { namespace = "test" }

[[services]]
name = "checkout"
backend = "sim"
deploy_channel = "deploys"
on_failing = "page_and_suggest"

[[roles.approver]]
members = ["slack-group:S0APPROVERS"]

[[roles.deployer]]
members = ["slack:U0DEPLOY", "api:ci"]

[[roles.responder]]
members = ["slack:U0RESP"]

[[roles.release-manager]]
members = ["slack:U0RELEASE"]

[[api.clients]]
name = "ci"
token = "${ROLLBOT_GATES_TOKEN}"

[gates]
token = "${ROLLBOT_GATES_TOKEN}"

[metrics]
source = "simulated"
interval = "1s"
scenarios = { checkout = "bad: errors 3× at 5%, 1% base" }
"##;

async fn rig() -> SlackRig {
    let fake = FakeSlack::start().await;
    fake.add_channel(DEPLOYS, true);
    fake.add_usergroup("S0APPROVERS", &[APPROVER]);
    SlackRig::start(
        fake,
        "http",
        DEPLOYS,
        CONFIG,
        &[("ROLLBOT_GATES_TOKEN", GATES_TOKEN)],
    )
    .await
}

/// Flagger's webhook body for canary podinfo.test, with no token.
fn payload(phase: &str, checksum: &str) -> Value {
    json!({"name": "podinfo", "namespace": "test", "phase": phase, "checksum": checksum,
        "metadata": {"cluster": "eu-1"}})
}

/// What Flagger sends: it cannot set headers, so the token travels in the
/// webhook's metadata, which Flagger copies into the body.
fn with_token(body: &Value, token: &str) -> Value {
    let mut b = body.clone();
    b["metadata"]["token"] = json!(token);
    b
}

impl SlackRig {
    /// Calls a Flagger gate the way Flagger does: POST JSON, the token in
    /// the metadata, no Authorization header.
    async fn gate(&self, hook: &str, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(self.server.url(&format!("/gates/flagger/{hook}")))
            .json(&with_token(body, GATES_TOKEN))
            .send()
            .await
            .unwrap();
        let code = r.status().as_u16();
        (code, r.json().await.unwrap_or(Value::Null))
    }

    /// Calls the gate every 200 ms (Flagger's analysis interval, shortened)
    /// until it answers `want`.
    async fn gate_until(&self, hook: &str, body: &Value, want: u16, secs: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let (code, answer) = self.gate(hook, body).await;
            if code == want {
                return answer;
            }
            assert!(
                Instant::now() < deadline,
                "{hook} never answered {want}; last {code} {answer}\nlog:\n{}",
                self.server.log_text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn prompts(&self) -> Vec<Posted> {
        self.fake
            .messages(DEPLOYS)
            .into_iter()
            .filter(|m| m.text.contains("Flagger asks"))
            .collect()
    }

    async fn prompt_number(&self, n: usize) -> Posted {
        self.fake
            .wait_for(10, "the Flagger prompt", |f| {
                f.messages(DEPLOYS)
                    .into_iter()
                    .filter(|m| m.text.contains("Flagger asks"))
                    .nth(n - 1)
            })
            .await
    }

    async fn said(&self, needle: &str) -> Posted {
        self.fake
            .wait_for(15, needle, |f| {
                f.messages(DEPLOYS)
                    .into_iter()
                    .find(|m| m.current_text().contains(needle))
            })
            .await
    }
}

fn reason(answer: &Value) -> String {
    answer["reason"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirm_promotion_asks_once_per_revision_and_opens_when_an_approver_approves() {
    let r = rig().await;
    let c1 = payload("WaitingPromotion", "8a3f1c9d0e2b");

    // Flagger calls every analysis interval: one prompt, 403 each time.
    for i in 0..4 {
        let t0 = Instant::now();
        let (code, answer) = r.gate("confirm-promotion", &c1).await;
        eprintln!(
            "flagger gate call {} answered {code} in {} ms",
            i + 1,
            t0.elapsed().as_millis()
        );
        assert_eq!(code, 403, "{answer}");
        assert_eq!(answer["open"], false);
        assert!(reason(&answer).contains("waiting for approval"), "{answer}");
    }
    let prompt = r.prompt_number(1).await;
    assert!(prompt.text.contains("podinfo.test"), "{}", prompt.text);
    assert!(prompt.text.contains("8a3f1c9d0e"), "{}", prompt.text);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(r.prompts().len(), 1, "repeated calls ask once");
    let approve = prompt.button(":approve");

    // A deployer may promote but not answer prompts: refused, gate closed.
    assert_eq!(
        r.press(DEPLOYER, &prompt, &approve, "trig-deployer", None)
            .await,
        200
    );
    let refusal = r
        .fake
        .ephemeral(10, "a private refusal", DEPLOYER, "")
        .await;
    assert!(refusal.text.contains("approver"), "{}", refusal.text);
    assert_eq!(r.gate("confirm-promotion", &c1).await.0, 403);

    // The approver approves: the engine promotes through the flagger
    // backend, which opens the gate; Flagger's next call passes.
    let pressed = Instant::now();
    assert_eq!(
        r.press(APPROVER, &prompt, &approve, "trig-approver", None)
            .await,
        200
    );
    let answer = r.gate_until("confirm-promotion", &c1, 200, 15).await;
    eprintln!(
        "flagger gate open {} ms after Approve (polling every 200 ms)",
        pressed.elapsed().as_millis()
    );
    assert_eq!(answer["open"], true);
    assert_eq!(answer["service"], "podinfo");
    let done = r.said("Promoted podinfo").await;
    assert!(
        done.current_text()
            .contains("Flagger passed the confirm-promotion gate"),
        "verified by Flagger's call: {}",
        done.current_text()
    );
    r.said("Flagger passed the confirm-promotion gate of podinfo")
        .await;
    // It stays open for that revision.
    assert_eq!(r.gate("confirm-promotion", &c1).await.0, 200);

    // A new checksum is a new revision: closed, and asked about once.
    let c2 = payload("WaitingPromotion", "f00dfeed4242");
    let (code, answer) = r.gate("confirm-promotion", &c2).await;
    assert_eq!(code, 403, "{answer}");
    r.prompt_number(2).await;
    assert_eq!(r.gate("confirm-promotion", &c2).await.0, 403);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(r.prompts().len(), 2);

    let audit = r.audit();
    assert_audit_counts(
        &audit,
        &[
            // One question per revision.
            ("promote", "pending", "flagger", 2),
            ("approve", "refused", DEPLOYER, 1),
            ("approve", "succeeded", APPROVER, 1),
            ("promote", "requested", APPROVER, 1),
            ("promote", "succeeded", APPROVER, 1),
            ("gate", "noted", "flagger", 1),
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_freeze_keeps_an_approved_gate_closed_and_says_why() {
    let r = rig().await;
    let c1 = payload("WaitingPromotion", "0badc0ffee11");
    assert_eq!(r.gate("confirm-promotion", &c1).await.0, 403);
    let prompt = r.prompt_number(1).await;
    let approve = prompt.button(":approve");
    assert_eq!(
        r.press(APPROVER, &prompt, &approve, "trig-a1", None).await,
        200
    );
    r.gate_until("confirm-promotion", &c1, 200, 15).await;

    // A release manager freezes podinfo: the approved gate closes again.
    assert_eq!(
        r.slash(
            "/freeze",
            "podinfo for 1h launch week",
            RELEASE,
            "trig-freeze"
        )
        .await
        .0,
        200
    );
    r.said("Frozen").await;
    let answer = r.gate_until("confirm-promotion", &c1, 403, 10).await;
    let why = reason(&answer);
    assert!(why.contains("frozen"), "{answer}");
    assert!(why.contains("launch week"), "names the freeze: {answer}");
    r.said("held by a freeze").await;
    // Repeated calls during the freeze are not audited again.
    for _ in 0..3 {
        assert_eq!(r.gate("confirm-promotion", &c1).await.0, 403);
    }

    // A new revision during the freeze: approving it is refused too.
    let c2 = payload("WaitingPromotion", "0badc0ffee22");
    let (code, answer) = r.gate("confirm-promotion", &c2).await;
    assert_eq!(code, 403);
    assert!(reason(&answer).contains("Also frozen"), "{answer}");
    let second = r.prompt_number(2).await;
    let approve2 = second.button(":approve");
    assert_eq!(
        r.press(APPROVER, &second, &approve2, "trig-a2", None).await,
        200
    );
    let refusal = r
        .fake
        .ephemeral(10, "the approval refused by the freeze", APPROVER, "frozen")
        .await;
    assert!(refusal.text.contains("launch week"), "{}", refusal.text);
    assert_eq!(r.gate("confirm-promotion", &c2).await.0, 403);

    // After the freeze the refused prompt is still open: approving it now
    // opens the new revision's gate.
    assert_eq!(
        r.slash("/unfreeze", "podinfo", RELEASE, "trig-unfreeze")
            .await
            .0,
        200
    );
    r.said("Unfrozen").await;
    assert_eq!(r.gate("confirm-promotion", &c2).await.0, 403);
    assert_eq!(
        r.press(APPROVER, &second, &approve2, "trig-a3", None).await,
        200
    );
    r.gate_until("confirm-promotion", &c2, 200, 15).await;

    let audit = r.audit();
    assert_audit_counts(
        &audit,
        &[
            // Held once, not once per call.
            ("gate", "refused", "flagger", 1),
            ("approve", "refused", APPROVER, 1),
            ("promote", "succeeded", APPROVER, 2),
            ("freeze", "succeeded", RELEASE, 1),
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rollback_gate_opens_only_after_a_rollback_in_chat() {
    let r = rig().await;
    let c1 = payload("Progressing", "5eed5eed5eed");
    let (code, answer) = r.gate("rollback", &c1).await;
    assert_eq!(code, 403, "{answer}");
    assert!(reason(&answer).contains("/rollback podinfo"), "{answer}");

    // Someone without the responder role is refused; the gate stays shut.
    assert_eq!(
        r.slash("/rollback", "podinfo looks broken", DEPLOYER, "trig-rb-no")
            .await
            .0,
        200
    );
    r.fake
        .ephemeral(10, "a private refusal", DEPLOYER, "responder")
        .await;
    assert_eq!(r.gate("rollback", &c1).await.0, 403);

    // The responder asks; Flagger's next call gets 200, and keeps getting
    // it for that revision until it has rolled back.
    assert_eq!(
        r.slash("/rollback", "podinfo 5xx in canary", RESPONDER, "trig-rb")
            .await
            .0,
        200
    );
    r.gate_until("rollback", &c1, 200, 15).await;
    let done = r.said("Rolled back podinfo").await;
    assert!(
        done.current_text()
            .contains("Flagger passed the rollback gate"),
        "{}",
        done.current_text()
    );
    for _ in 0..3 {
        assert_eq!(r.gate("rollback", &c1).await.0, 200);
    }
    // /status shows what Flagger last asked and each gate's state.
    assert_eq!(
        r.slash("/status", "podinfo", RESPONDER, "trig-status")
            .await
            .0,
        200
    );
    let status = r
        .fake
        .wait_for(10, "the status answer", |f| {
            let eph = f.ephemerals(RESPONDER).into_iter().map(|m| m.text);
            let resp = f
                .responses("trig-status")
                .into_iter()
                .map(|v| v.to_string());
            eph.chain(resp).find(|t| t.contains("Status of podinfo"))
        })
        .await;
    assert!(status.contains("last call rollback"), "{status}");
    assert!(
        status.contains("rollback gate, revision 5eed5eed5e: open"),
        "{status}"
    );
    assert!(status.contains("passed by Flagger"), "{status}");

    // The next revision starts with the gate shut.
    assert_eq!(
        r.gate("rollback", &payload("Progressing", "0ther")).await.0,
        403
    );

    let audit = r.audit();
    assert_audit_counts(
        &audit,
        &[
            ("rollback", "refused", DEPLOYER, 1),
            ("rollback", "succeeded", RESPONDER, 1),
        ],
    );
    assert!(
        audit.iter().any(|e| e.action == "gate"
            && e.outcome == "noted"
            && e.detail.contains("rollback gate")),
        "{audit:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gates_check_the_token_name_known_canaries_and_bind_prompts_to_their_revision() {
    let r = rig().await;
    let body = payload("WaitingPromotion", "abc");
    for hook in ["confirm-rollout", "confirm-promotion", "rollback"] {
        let url = r.server.url(&format!("/gates/flagger/{hook}"));
        let none = r.http.post(&url).json(&body).send().await.unwrap();
        assert_eq!(none.status(), 401, "{hook}");
        let err: Value = none.json().await.unwrap();
        assert!(err["error"].as_str().unwrap().contains("token"), "{err}");
        assert!(!err.to_string().contains(GATES_TOKEN));
        let wrong_header = r
            .http
            .post(&url)
            .bearer_auth("gates-token-5b2f")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(wrong_header.status(), 401, "{hook}");
        let wrong_metadata = r
            .http
            .post(&url)
            .json(&with_token(&body, "gates-token-5b2f"))
            .send()
            .await
            .unwrap();
        assert_eq!(wrong_metadata.status(), 401, "{hook}");
        // A wrong header is not rescued by a right metadata token.
        let both = r
            .http
            .post(&url)
            .bearer_auth("gates-token-5b2f")
            .json(&with_token(&body, GATES_TOKEN))
            .send()
            .await
            .unwrap();
        assert_eq!(both.status(), 401, "{hook}");
    }
    // The header alone is enough (any caller that can set one).
    let header = r
        .http
        .post(r.server.url("/gates/flagger/rollback"))
        .bearer_auth(GATES_TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        header.status(),
        403,
        "authenticated; nobody asked to roll back"
    );
    let argo = r.server.url("/gates/argo/analysis?service=checkout");
    assert_eq!(r.http.get(&argo).send().await.unwrap().status(), 401);
    let basic = r
        .http
        .get(&argo)
        .header("authorization", format!("Basic {GATES_TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 401);
    // Nothing was asked of anyone, and the token is nowhere in the log.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(r.prompts().is_empty());
    assert!(!r.server.log_text().contains(GATES_TOKEN));

    // A canary rollbot does not know: 404 naming the ones it knows.
    let other =
        json!({"name": "web", "namespace": "prod", "phase": "WaitingPromotion", "checksum": "x"});
    let (code, answer) = r.gate("confirm-promotion", &other).await;
    assert_eq!(code, 404, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("web.prod"),
        "{answer}"
    );
    assert_eq!(answer["known"], json!(["podinfo.test"]));
    // Not Flagger's payload: 400 saying what is expected.
    let (code, answer) = r
        .gate("confirm-promotion", &json!({"canary": "podinfo"}))
        .await;
    assert_eq!(code, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("namespace"),
        "{answer}"
    );

    // The confirm-rollout gate is a resume: a deployer may not answer it either.
    let (code, _) = r
        .gate("confirm-rollout", &payload("Progressing", "r1"))
        .await;
    assert_eq!(code, 403);
    let p = r.prompt_number(1).await;
    assert!(p.text.contains("start its canary analysis"), "{}", p.text);

    // Flagger moves on to a new revision before anyone answers: approving
    // the old prompt must not open the new revision's gate.
    let (code, _) = r
        .gate("confirm-rollout", &payload("Progressing", "r2"))
        .await;
    assert_eq!(code, 403);
    r.prompt_number(2).await;
    let approve = p.button(":approve");
    assert_eq!(
        r.press(APPROVER, &p, &approve, "trig-stale", None).await,
        200
    );
    let failed = r.said("answer the newer prompt").await;
    assert!(
        failed.current_text().contains("Nothing was changed"),
        "{}",
        failed.current_text()
    );
    assert_eq!(
        r.gate("confirm-rollout", &payload("Progressing", "r2"))
            .await
            .0,
        403
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_argo_web_metric_serves_the_judges_verdict() {
    let r = rig().await;
    let get = |service: &str| {
        r.http
            .get(
                r.server
                    .url(&format!("/gates/argo/analysis?service={service}")),
            )
            .bearer_auth(GATES_TOKEN)
            .send()
    };
    // Nothing watched yet: no_data, which an AnalysisTemplate treats as
    // inconclusive, not failing.
    let before = get("checkout").await.unwrap();
    assert_eq!(before.status(), 200);
    let before: Value = before.json().await.unwrap();
    assert_eq!(before["verdict"], "no_data", "{before}");
    assert!(before["reasons"][0]
        .as_str()
        .unwrap()
        .contains("no active rollout"));

    let unknown = get("chekout").await.unwrap();
    assert_eq!(unknown.status(), 404);
    let unknown: Value = unknown.json().await.unwrap();
    assert!(
        unknown["error"].as_str().unwrap().contains("chekout"),
        "{unknown}"
    );
    assert_eq!(unknown["known"], json!(["podinfo", "checkout"]));

    // CI announces a rollout; the simulated canary goes bad.
    let start = chrono::Utc::now() - chrono::Duration::minutes(20);
    let api = r.api(GATES_TOKEN);
    api.announce("checkout", "v41", "v42", start).await;
    let deadline = Instant::now() + Duration::from_secs(40);
    let failing = loop {
        let v: Value = get("checkout").await.unwrap().json().await.unwrap();
        if v["verdict"] == "failing" {
            break v;
        }
        assert!(Instant::now() < deadline, "never failing: {v}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    eprintln!("argo web metric answer: {failing}");
    assert!(failing["score"].is_number(), "{failing}");
    assert!(
        !failing["reasons"].as_array().unwrap().is_empty(),
        "{failing}"
    );
    assert_eq!(failing["to_revision"], "v42");
    // The same verdict the controller reports for the rollout.
    let list = api.rollouts().await;
    let rollout = &list[0];
    assert_eq!(rollout["id"], failing["rollout"]);
    assert_eq!(rollout["verdict"], "failing", "{rollout}");
}
