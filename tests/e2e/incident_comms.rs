//! Incident communications end to end: a failing canary rolled back by
//! the controller updates the status page (fake Statuspage API v1) through
//! Identified → Monitoring → Resolved with its components, and the pager
//! (fake PagerDuty Events API v2) hears change events and pages only when
//! a rollback did not work; rate limits delay but lose nothing; wrong keys
//! are reported and never block the rollback.

use crate::support::api::Api;
use crate::support::fake_pagerduty::FakePagerDuty;
use crate::support::fake_statuspage::FakeStatuspage;
use crate::support::kube_bot::Chat;
use crate::support::Server;
use rollbot::chat::ChatSink;
use rollbot::clock::{Clock, ManualClock};
use rollbot::config_file::Config;
use rollbot::controller::{rollouts, Rollout, RolloutWatch, WatchState};
use rollbot::domain::{Action, Actor, Platform};
use rollbot::engine::{Request, Status};
use rollbot::judge::sim::{Scenario, Simulator};
use rollbot::judge::Verdict;
use rollbot::runtime::Runtime;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SP_KEY: &str = "sp-key-6f1c0a";
const PD_KEY: &str = "0123456789abcdef0123456789abcdef";
const TICK: Duration = Duration::from_secs(10);

fn config(dir: &Path, sp: &FakeStatuspage, pd: &FakePagerDuty, service: &str) -> String {
    std::fs::write(dir.join("sp.key"), format!("{SP_KEY}\n")).unwrap();
    std::fs::write(dir.join("pd.key"), format!("{PD_KEY}\n")).unwrap();
    format!(
        r##"
[channels.deploys]
console = "#deploys"
[channels.incidents]
console = "#incidents"
[backends.sim]
type = "simulated"
history = {{ checkout = ["v41", "v42"] }}
[[services]]
name = "checkout"
backend = "sim"
deploy_channel = "deploys"
incident_channel = "incidents"
resolve_after = "1m"
{service}
[[roles.responder]]
members = ["console:omar"]
[[roles.approver]]
members = ["console:omar"]
[[roles.deployer]]
members = ["console:dana"]
[status_page]
page_id = "pg1"
api_key_file = "{sp_key}"
base_url = "{sp_url}"
[status_page.components]
checkout = ["cmp-api", "cmp-web"]
[paging]
routing_key_file = "{pd_key}"
base_url = "{pd_url}"
"##,
        sp_key = dir.join("sp.key").display(),
        pd_key = dir.join("pd.key").display(),
        sp_url = sp.url,
        pd_url = pd.url,
    )
}

/// rollbot in-process on a manual clock, watching checkout v41 → v42
/// whose canary fails, with the status page and the pager at fakes.
struct Rig {
    rt: Runtime,
    chat: Arc<Chat>,
    clock: ManualClock,
    watch: RolloutWatch,
    sim: Simulator,
    sp: FakeStatuspage,
    pd: FakePagerDuty,
}

impl Rig {
    async fn start(dir: &Path, service: &str) -> Rig {
        let sp = FakeStatuspage::start("pg1", SP_KEY, &["cmp-api", "cmp-web"]).await;
        let pd = FakePagerDuty::start(&[PD_KEY]).await;
        Rig::start_at(dir, service, sp, pd).await
    }

    /// With fakes that outlive this rollbot (started on another runtime).
    async fn start_at(dir: &Path, service: &str, sp: FakeStatuspage, pd: FakePagerDuty) -> Rig {
        let text = config(dir, &sp, &pd, service);
        let config =
            Config::parse(&dir.join("rollbot.toml"), &text).unwrap_or_else(|e| panic!("{e}"));
        let clock = ManualClock::new(chrono::Utc::now());
        let chat = Arc::new(Chat::default());
        let rt = rollbot::runtime::start(
            config,
            &dir.join("data"),
            vec![chat.clone() as Arc<dyn ChatSink>],
            Arc::new(clock.clone()),
        )
        .await
        .unwrap();
        let svc = rt.engine.config.service("checkout").unwrap();
        let start = clock.now();
        let watch = RolloutWatch::new(svc, "v41", "v42").with_start(start);
        let stored = Rollout::watching(
            watch.id.clone(),
            "checkout",
            ("v41".into(), "v42".into()),
            start,
            "test",
        );
        rollouts::save(&rt.engine.store, &stored).await.unwrap();
        let sim = Simulator::new(
            &Scenario::new("bad", false).canary_share(0.05).errors(10.0),
            3,
        );
        Rig {
            rt,
            chat,
            clock,
            watch,
            sim,
            sp,
            pd,
        }
    }

    /// Ticks until `done` holds for the watch's state (at most `limit` ticks).
    async fn until(&mut self, limit: usize, done: impl Fn(&WatchState) -> bool) {
        self.until_watch(limit, |w| done(&w.state)).await
    }

    /// Ticks until `done` holds for the watch (at most `limit` ticks).
    async fn until_watch(&mut self, limit: usize, done: impl Fn(&RolloutWatch) -> bool) {
        for _ in 0..limit {
            if done(&self.watch) {
                return;
            }
            self.tick().await;
        }
        assert!(done(&self.watch), "state: {:?}", self.watch.state);
    }

    /// One tick of metrics, ten seconds later.
    async fn tick(&mut self) {
        self.clock.advance(TICK);
        let mut tick = self.sim.next_tick().expect("a tick");
        if matches!(self.watch.state, WatchState::Monitoring(_)) {
            // Rolled back: the canary gets no more traffic.
            tick.canary = None;
        }
        self.watch.tick(&self.rt.engine, &tick).await;
    }

    /// Waits until the status page and the pager were told everything.
    async fn settle(&self) {
        let comms = self.rt.engine.comms().expect("comms configured");
        assert!(
            comms.settle(Duration::from_secs(60)).await,
            "comms did not settle"
        );
    }

    fn chat_text(&self) -> String {
        self.chat.0.lock().unwrap().join("\n")
    }
}

fn monitoring(s: &WatchState) -> bool {
    matches!(s, WatchState::Monitoring(_))
}

fn done(s: &WatchState) -> bool {
    matches!(s, WatchState::Done(_))
}

/// The status page's requests as (method, status sent in the body).
fn statuses(sp: &FakeStatuspage) -> Vec<(String, String)> {
    sp.received()
        .iter()
        .filter(|r| r.status < 300)
        .map(|r| {
            (
                r.method.clone(),
                r.body["incident"]["status"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn an_automatic_rollback_updates_the_status_page_through_its_whole_life_and_pages_nobody() {
    let dir = tempfile::tempdir().unwrap();
    let mut rig = Rig::start(dir.path(), "").await;
    rig.until(120, monitoring).await;
    rig.settle().await;
    // Identified: one incident, the service's components degraded.
    let incidents = rig.sp.incidents();
    assert_eq!(incidents.len(), 1, "{incidents:?}");
    assert_eq!(incidents[0].status, "monitoring");
    assert_eq!(incidents[0].impact, "minor");
    assert_eq!(incidents[0].name, "checkout degraded after a change");
    let post = &rig.sp.received()[0];
    assert_eq!(post.authorization, format!("OAuth {SP_KEY}"));
    assert_eq!(post.body["incident"]["status"], "identified");
    assert_eq!(
        post.body["incident"]["component_ids"],
        serde_json::json!(["cmp-api", "cmp-web"])
    );
    assert_eq!(
        rig.sp.component("cmp-api").as_deref(),
        Some("degraded_performance")
    );
    assert_eq!(
        rig.sp.component("cmp-web").as_deref(),
        Some("degraded_performance")
    );

    rig.until(60, done).await;
    rig.settle().await;
    assert_eq!(
        statuses(&rig.sp),
        [
            ("POST", "identified"),
            ("PATCH", "monitoring"),
            ("PATCH", "resolved")
        ]
        .map(|(m, s)| (m.to_string(), s.to_string()))
    );
    let resolved = &rig.sp.incidents()[0];
    assert_eq!(resolved.status, "resolved");
    assert!(
        resolved.updates[2]
            .1
            .contains("within the baseline's range"),
        "{resolved:?}"
    );
    // Every component back to operational, said explicitly on resolve.
    let last = rig.sp.received().last().unwrap().body.clone();
    assert_eq!(
        last["incident"]["components"]["cmp-api"], "operational",
        "{last}"
    );
    assert_eq!(rig.sp.component("cmp-api").as_deref(), Some("operational"));
    assert_eq!(rig.sp.component("cmp-web").as_deref(), Some("operational"));
    // The pager saw the rollback on its timeline and paged nobody.
    assert!(rig.pd.events().is_empty(), "{:?}", rig.pd.events());
    let changes = rig.pd.changes();
    assert_eq!(changes.len(), 1, "{changes:?}");
    let summary = changes[0]["payload"]["summary"].as_str().unwrap();
    assert!(
        summary.starts_with("Rolled back checkout v42 → v41")
            && summary.contains("rollbot controller"),
        "{summary}"
    );
    assert!(
        !rig.chat_text().contains("not updated"),
        "{}",
        rig.chat_text()
    );
}

#[tokio::test]
async fn a_failed_rollback_pages_and_the_page_resolves_with_the_incident() {
    let dir = tempfile::tempdir().unwrap();
    let mut rig = Rig::start(dir.path(), "critical = true").await;
    let sim = rig.rt.simulated.get("sim").unwrap().clone();
    sim.inject_failure("checkout", "rollback", 1, "the registry no longer has v41");
    rig.until(120, |s| matches!(s, WatchState::RollbackFailed(_)))
        .await;
    rig.settle().await;
    let id = rig.watch.id.clone();
    let events = rig.pd.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["event_action"], "trigger");
    assert_eq!(events[0]["dedup_key"], id.as_str());
    assert_eq!(events[0]["payload"]["severity"], "critical");
    assert!(
        events[0]["payload"]["summary"]
            .as_str()
            .unwrap()
            .contains("Rollback of checkout failed"),
        "{events:?}"
    );
    assert_eq!(rig.pd.alert(&id).as_deref(), Some("triggered"));
    // A critical service: its components are in partial outage.
    assert_eq!(
        rig.sp.component("cmp-api").as_deref(),
        Some("partial_outage")
    );
    assert_eq!(rig.sp.incidents()[0].impact, "major");

    // The on-call rolls back by hand; the incident follows and resolves.
    let omar = Actor::new(Platform::Console, "omar", "omar");
    let o = rig
        .rt
        .engine
        .execute(
            Request::new(
                omar,
                Action::Rollback {
                    to: None,
                    force: false,
                },
            )
            .service("checkout")
            .reason("registry restored"),
        )
        .await;
    assert_eq!(o.status, Status::Succeeded, "{}", o.message.plain());
    rig.until(3, monitoring).await;
    rig.until(60, done).await;
    rig.settle().await;
    let events = rig.pd.events();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[1]["event_action"], "resolve");
    assert_eq!(events[1]["dedup_key"], id.as_str());
    assert_eq!(rig.pd.alert(&id).as_deref(), Some("resolved"));
    // One status page incident for the whole story.
    assert_eq!(rig.sp.incidents().len(), 1);
    assert_eq!(rig.sp.incidents()[0].status, "resolved");
    assert_eq!(rig.sp.component("cmp-api").as_deref(), Some("operational"));
    // Both rollbacks are on the paging timeline.
    let changes: Vec<String> = rig
        .pd
        .changes()
        .iter()
        .map(|c| c["payload"]["summary"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert!(
        changes[0].starts_with("Rollback of checkout failed"),
        "{changes:?}"
    );
    assert!(
        changes[1].starts_with("Rolled back checkout") && changes[1].contains("(by omar)"),
        "{changes:?}"
    );
}

#[tokio::test]
async fn a_failing_canary_with_automation_off_pages_again_when_its_prompt_escalates_and_resolves_after_the_answer(
) {
    let dir = tempfile::tempdir().unwrap();
    let extra = "automation = false\nescalate_after = \"5m\"\nescalation = [\"slack:U0ONCALL1\"]";
    let mut rig = Rig::start(dir.path(), extra).await;
    let failing = |w: &RolloutWatch| {
        w.last
            .as_ref()
            .is_some_and(|e| e.verdict == Verdict::Failing)
    };
    rig.until_watch(120, failing).await;
    // Failing for a while longer: still one page.
    for _ in 0..3 {
        rig.tick().await;
    }
    rig.settle().await;
    let id = rig.watch.id.clone();
    let events = rig.pd.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["event_action"], "trigger");
    assert_eq!(events[0]["dedup_key"], id.as_str());
    let summary = events[0]["payload"]["summary"].as_str().unwrap();
    assert!(
        summary.contains("is failing") && summary.contains("automation is off"),
        "{summary}"
    );
    // Nobody rolled anything back: no change event, nothing on the status page.
    assert!(rig.pd.changes().is_empty());
    assert!(rig.sp.received().is_empty());

    // Unanswered until its escalation: paged again, on the same alert.
    rig.clock.advance(Duration::from_secs(301));
    assert_eq!(
        rig.rt
            .engine
            .escalate_prompts(rig.clock.now())
            .await
            .unwrap(),
        1
    );
    rig.settle().await;
    let events = rig.pd.events();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[1]["dedup_key"], id.as_str());
    assert!(
        events[1]["payload"]["summary"]
            .as_str()
            .unwrap()
            .contains("unanswered for 5m"),
        "{events:?}"
    );

    // Roll back, in the (borderline) prompt asked before the canary
    // failed; the incident resolves, and so does the page.
    let WatchState::Asking { prompt } = rig.watch.state.clone() else {
        panic!("{:?}", rig.watch.state)
    };
    let omar = Actor::new(Platform::Console, "omar", "omar");
    let o = rig
        .rt
        .engine
        .execute(Request::new(omar, Action::Reject { prompt }))
        .await;
    assert_eq!(o.status, Status::Succeeded, "{}", o.message.plain());
    rig.until(3, monitoring).await;
    rig.until(60, done).await;
    rig.settle().await;
    assert_eq!(rig.pd.events().last().unwrap()["event_action"], "resolve");
    assert_eq!(rig.pd.alert(&id).as_deref(), Some("resolved"));
    assert_eq!(rig.sp.incidents()[0].status, "resolved");
}

#[tokio::test]
async fn rate_limit_answers_delay_updates_but_lose_none_and_keep_their_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut rig = Rig::start(dir.path(), "").await;
    rig.sp.throttle(2, 420);
    rig.pd.throttle(2);
    rig.until(120, monitoring).await;
    rig.sp.throttle(1, 429);
    rig.until(60, done).await;
    rig.settle().await;
    let received = rig.sp.received();
    let limited: Vec<u16> = received
        .iter()
        .map(|r| r.status)
        .filter(|s| *s == 420 || *s == 429)
        .collect();
    assert!(limited.len() >= 3, "{limited:?}");
    // Each update was sent again after the wait the answer asked for.
    for pair in received.windows(2) {
        if pair[0].status == 420 || pair[0].status == 429 {
            assert_eq!(pair[0].body, pair[1].body, "the same update is sent again");
            assert!(
                pair[1].at - pair[0].at >= Duration::from_millis(990),
                "retried after {:?}",
                pair[1].at - pair[0].at
            );
        }
    }
    assert_eq!(
        statuses(&rig.sp),
        [
            ("POST", "identified"),
            ("PATCH", "monitoring"),
            ("PATCH", "resolved")
        ]
        .map(|(m, s)| (m.to_string(), s.to_string()))
    );
    assert_eq!(rig.sp.component("cmp-web").as_deref(), Some("operational"));
    // The change event got through after PagerDuty's 429s.
    let pd = rig.pd.received();
    assert_eq!(pd.iter().filter(|r| r.status == 429).count(), 2);
    assert_eq!(rig.pd.changes().len(), 1);
    let readiness = rig.rt.engine.comms().unwrap().readiness();
    assert_eq!(readiness, ["status page: ok", "paging: ok"]);
}

/// `rollbot serve` on simulated metrics, the status page and the pager at
/// fakes that know other keys: the rollback happens, and the log, `/readyz`
/// and the incident thread say what is wrong.
#[tokio::test]
async fn wrong_keys_are_reported_in_the_log_readyz_and_the_incident_thread_and_never_block_the_rollback(
) {
    let dir = tempfile::tempdir().unwrap();
    let sp = FakeStatuspage::start("pg1", "another-key", &["cmp-api", "cmp-web"]).await;
    let pd = FakePagerDuty::start(&["ffffffffffffffffffffffffffffffff"]).await;
    let text = config(dir.path(), &sp, &pd, "")
        .replace("[channels.deploys]", "[server]\nlisten = \"127.0.0.1:{port}\"\n[store]\npath = \"{data}\"\n[metrics]\nsource = \"simulated\"\ninterval = \"10s\"\n[metrics.scenarios]\ncheckout = \"bad: errors 10× at 5%\"\n[[roles.deployer]]\nmembers = [\"api:ci\"]\n[[api.clients]]\nname = \"ci\"\ntoken = \"${ROLLBOT_TEST_TOKEN}\"\n[channels.deploys]");
    let s = Server::start_async(
        dir.path(),
        &text,
        &[("ROLLBOT_TEST_TOKEN", "ci-token-5e2a")],
    )
    .await;
    let start = chrono::Utc::now() - chrono::Duration::minutes(30);
    let start = chrono::DateTime::from_timestamp(start.timestamp() / 10 * 10, 0).unwrap();
    Api::new(&s, "ci-token-5e2a")
        .announce("checkout", "v41", "v42", start)
        .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, body) = s.get("/readyz").await;
        if body.contains("status page: FAILING") && body.contains("paging: FAILING") {
            assert_eq!(code, 200, "{body}");
            assert!(body.contains("refused rollbot's API key (401"), "{body}");
            assert!(
                body.contains("PagerDuty refused the routing key")
                    && body.contains("Invalid routing key"),
                "{body}"
            );
            assert!(
                !body.contains(SP_KEY) && !body.contains(PD_KEY),
                "no secret in /readyz: {body}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "readyz never reported the keys: {body}\n{}",
            s.log_text()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let rollouts = Api::new(&s, "ci-token-5e2a").rollouts().await;
    assert!(
        rollouts[0]["state"]
            .as_str()
            .unwrap()
            .starts_with("rolled back automatically"),
        "{rollouts:?}"
    );
    let log = s.log_text();
    assert!(log.contains("Rolled back checkout v42 → v41"), "{log}");
    assert!(
        log.contains("status page not updated")
            && log.contains("fix the key in the config's secret and restart rollbot"),
        "{log}"
    );
    // The incident thread says it too.
    assert!(
        log.contains("status page not updated for checkout"),
        "{log}"
    );
    assert!(
        !log.contains(SP_KEY) && !log.contains(PD_KEY),
        "no secret in the log"
    );
    assert!(
        sp.received().iter().all(|r| r.status == 401),
        "{:?}",
        sp.received()
    );
    assert!(sp.incidents().is_empty());
}

/// The chat messages the incident posted, with this title prefix.
fn posted(rig: &Rig, prefix: &str) -> Vec<String> {
    rig.chat
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|m| m.starts_with(prefix))
        .cloned()
        .collect()
}

#[tokio::test]
async fn default_templates_follow_the_runbook_in_the_incident_thread() {
    let dir = tempfile::tempdir().unwrap();
    let mut rig = Rig::start(dir.path(), "").await;
    rig.until(120, monitoring).await;
    rig.settle().await;
    let id = rig.watch.id.clone();
    // Initial incident: impact from the judge's excess failed requests,
    // preliminary root cause, next steps.
    let root = posted(&rig, "Incident: checkout v42");
    let first = &root[0];
    assert!(
        first.contains("Impact: about ")
            && first.contains("failed requests beyond the baseline's rate (canary "),
        "{first}"
    );
    assert!(
        first.contains("Preliminary root cause: checkout v42 (the canary) was judged failing: error rate canary"),
        "{first}"
    );
    assert!(
        first.contains("Next steps: roll checkout back to v41")
            && first.contains(&format!("Incident {id}, ")),
        "{first}"
    );
    // Rollback complete: what, verification, what next.
    let done = posted(&rig, "Monitoring: checkout v42");
    assert_eq!(done.len(), 1, "{done:?}");
    assert!(
        done[0].contains("Rolled back: checkout v42 → v41 by rollbot controller (automatic after")
            && done[0].contains("Verification: the backend confirmed that v41 serves again.")
            && done[0].contains("Next: monitoring until the error rate stays at or below"),
        "{}",
        done[0]
    );
    let post = &rig.sp.received()[0].body["incident"];
    assert_eq!(
        post["body"],
        "We identified the cause of degraded checkout: a change we are rolling back. Next update when the rollback is complete."
    );
}

#[tokio::test]
async fn templates_from_the_config_write_the_incident_thread_and_the_status_page() {
    let dir = tempfile::tempdir().unwrap();
    let templates = r#"
[templates]
status_page_title = "Checkout: elevated errors"
status_page_opened = "Investigating {service} {from_version}: {impact}"
status_page_resolved = "Fixed after {since_start}. {recovery}"
rollback_complete = "not used: checkout has its own"
[templates.services.checkout]
incident_opened = "INITIAL {incident_id}: {impact} / cause {evidence} / by {actor} ({verdict})"
rollback_complete = "DONE {from_version} -> {to_version} by {actor}: {reason}. Watching {watching}. Not a placeholder: {\"a\": 1}"
"#;
    let mut rig = Rig::start(dir.path(), templates).await;
    rig.until(120, monitoring).await;
    rig.until(60, done).await;
    rig.settle().await;
    let id = rig.watch.id.clone();
    let root = posted(&rig, "Incident: checkout v42");
    assert!(
        root[0].contains(&format!("INITIAL {id}: about "))
            && root[0].contains("/ cause error rate canary")
            && root[0].contains("/ by rollbot controller (failing)"),
        "{}",
        root[0]
    );
    let done = posted(&rig, "Monitoring: checkout v42");
    assert!(
        done[0].contains("DONE v42 -> v41 by rollbot controller: automatic after")
            && done[0].contains(". Watching the error rate stays at or below")
            && done[0].contains("Not a placeholder: {\"a\": 1}"),
        "{}",
        done[0]
    );
    let incident = &rig.sp.incidents()[0];
    assert_eq!(incident.name, "Checkout: elevated errors");
    assert!(
        incident.updates[0]
            .1
            .starts_with("Investigating checkout v42: about ")
            && incident.updates[0]
                .1
                .contains("failed requests beyond the baseline's rate"),
        "{incident:?}"
    );
    // Not replaced: the default.
    assert!(
        incident.updates[1].1.starts_with(
            "The change to checkout was rolled back. We are monitoring until the error rate"
        ),
        "{incident:?}"
    );
    assert!(
        incident.updates[2].1.starts_with("Fixed after ")
            && incident.updates[2]
                .1
                .contains("within the baseline's range"),
        "{incident:?}"
    );
}

/// Runs `life` as a whole rollbot process would run: on a runtime of its
/// own that is shut down at the end, so everything it held (the store
/// included) is gone before the next start. The fakes stay up on the
/// test's runtime.
async fn first_life<T: Send + 'static>(
    life: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = T>>> + Send + 'static,
) -> T {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let out = rt.block_on(life());
        rt.shutdown_timeout(Duration::from_secs(10));
        let _ = tx.send(out);
    });
    rx.await.expect("the first life ended")
}

/// rollbot started again on `dir`'s store, with the same config.
async fn restart(dir: &Path, sp: &FakeStatuspage, pd: &FakePagerDuty, service: &str) -> Runtime {
    let text = config(dir, sp, pd, service);
    let config = Config::parse(&dir.join("rollbot.toml"), &text).unwrap_or_else(|e| panic!("{e}"));
    rollbot::runtime::start(
        config,
        &dir.join("data"),
        vec![Arc::new(Chat::default()) as Arc<dyn ChatSink>],
        Arc::new(ManualClock::new(chrono::Utc::now())),
    )
    .await
    .unwrap()
}

async fn settle(rt: &Runtime) {
    assert!(
        rt.engine
            .comms()
            .unwrap()
            .settle(Duration::from_secs(60))
            .await,
        "comms did not settle"
    );
}

fn resolved_event(rollout: &str) -> rollbot::incident_comms::IncidentEvent {
    rollbot::incident_comms::IncidentEvent::Resolved {
        incident: rollbot::incident_comms::IncidentRef {
            rollout: rollout.to_string(),
            service: "checkout".into(),
            thread: Default::default(),
        },
        body: "checkout has recovered".into(),
    }
}

#[tokio::test]
async fn after_a_restart_resolved_still_closes_the_right_status_page_incident_and_page() {
    let dir = tempfile::tempdir().unwrap();
    let sp = FakeStatuspage::start("pg1", SP_KEY, &["cmp-api", "cmp-web"]).await;
    let pd = FakePagerDuty::start(&[PD_KEY]).await;
    let (path, sp1, pd1) = (dir.path().to_path_buf(), sp.clone(), pd.clone());
    // A failed automatic rollback: the status page incident is open with
    // its components in partial outage, and the on-call is paged.
    let id = first_life(move || {
        Box::pin(async move {
            let mut rig = Rig::start_at(&path, "critical = true", sp1, pd1).await;
            let sim = rig.rt.simulated.get("sim").unwrap().clone();
            sim.inject_failure("checkout", "rollback", 1, "the registry no longer has v41");
            rig.until(120, |s| matches!(s, WatchState::RollbackFailed(_)))
                .await;
            rig.settle().await;
            rig.watch.id.clone()
        })
    })
    .await;
    assert_eq!(sp.incidents().len(), 1);
    let page_incident = sp.incidents()[0].id.clone();
    assert_eq!(sp.component("cmp-api").as_deref(), Some("partial_outage"));
    assert_eq!(pd.alert(&id).as_deref(), Some("triggered"));

    let rt = restart(dir.path(), &sp, &pd, "critical = true").await;
    rt.engine.tell_comms(resolved_event(&id));
    settle(&rt).await;
    let last = sp.received().last().unwrap().clone();
    assert_eq!(last.method, "PATCH");
    assert!(
        last.path.ends_with(&format!("/incidents/{page_incident}")),
        "{}",
        last.path
    );
    assert_eq!(sp.incidents().len(), 1, "no second incident");
    assert_eq!(sp.incidents()[0].status, "resolved");
    assert_eq!(sp.component("cmp-api").as_deref(), Some("operational"));
    assert_eq!(sp.component("cmp-web").as_deref(), Some("operational"));
    assert_eq!(pd.alert(&id).as_deref(), Some("resolved"));
    assert_eq!(
        rt.engine.comms().unwrap().readiness(),
        ["status page: ok", "paging: ok"]
    );
}

fn omar() -> Actor {
    Actor::new(Platform::Console, "omar", "omar")
}

#[tokio::test]
async fn ask_posts_a_prompt_in_the_incident_thread_and_post_opens_the_incident_as_it_stands_even_after_a_restart(
) {
    let dir = tempfile::tempdir().unwrap();
    let sp = FakeStatuspage::start("pg1", SP_KEY, &["cmp-api", "cmp-web"]).await;
    let pd = FakePagerDuty::start(&[PD_KEY]).await;
    let (path, sp1, pd1) = (dir.path().to_path_buf(), sp.clone(), pd.clone());
    let (id, prompt, chat) = first_life(move || {
        Box::pin(async move {
            let mut rig = Rig::start_at(&path, "status_page = \"ask\"", sp1, pd1).await;
            rig.until(120, monitoring).await;
            rig.settle().await;
            let open = rig.rt.engine.prompts.open(rig.clock.now()).await.unwrap();
            assert_eq!(open.len(), 1, "{open:?}");
            (rig.watch.id.clone(), open[0].clone(), rig.chat_text())
        })
    })
    .await;
    // Nothing on the page until someone says so; the question is asked
    // in the incident's thread, of responders and approvers.
    assert!(sp.received().is_empty(), "{:?}", sp.received());
    assert_eq!(
        prompt.title,
        "Post the checkout incident to the status page?"
    );
    assert_eq!(prompt.channel.as_deref(), Some("incidents"));
    assert!(!prompt.thread.is_empty(), "in the incident's thread");
    assert_eq!(prompt.approve.label, "Post to status page");
    assert_eq!(prompt.reject.label, "Not customer-facing");
    assert!(
        chat.contains("Post the checkout incident to the status page?"),
        "{chat}"
    );

    // After a restart, Post opens it where the incident stands now:
    // monitoring, components degraded; Resolved then closes it.
    let rt = restart(dir.path(), &sp, &pd, "status_page = \"ask\"").await;
    let o = rt
        .engine
        .execute(Request::new(
            omar(),
            Action::Approve {
                prompt: prompt.id.clone(),
            },
        ))
        .await;
    assert_eq!(o.status, Status::Succeeded, "{}", o.message.plain());
    assert!(
        o.message.plain().contains("omar chose Post to status page"),
        "{}",
        o.message.plain()
    );
    settle(&rt).await;
    let incidents = sp.incidents();
    assert_eq!(incidents.len(), 1, "{incidents:?}");
    assert_eq!(incidents[0].status, "monitoring");
    assert_eq!(incidents[0].name, "checkout degraded after a change");
    assert!(
        incidents[0].updates[0]
            .1
            .starts_with("The change to checkout was rolled back."),
        "{incidents:?}"
    );
    assert_eq!(
        sp.component("cmp-api").as_deref(),
        Some("degraded_performance")
    );
    // A second press acts once.
    let again = rt
        .engine
        .execute(Request::new(
            omar(),
            Action::Approve {
                prompt: prompt.id.clone(),
            },
        ))
        .await;
    assert_eq!(again.status, Status::Refused);
    rt.engine.tell_comms(resolved_event(&id));
    settle(&rt).await;
    assert_eq!(sp.incidents().len(), 1);
    assert_eq!(sp.incidents()[0].status, "resolved");
    assert_eq!(sp.component("cmp-api").as_deref(), Some("operational"));
}

#[tokio::test]
async fn ask_answered_not_customer_facing_posts_nothing_and_is_audited() {
    let dir = tempfile::tempdir().unwrap();
    let mut rig = Rig::start(dir.path(), "status_page = \"ask\"").await;
    rig.until(120, monitoring).await;
    let open = rig.rt.engine.prompts.open(rig.clock.now()).await.unwrap();
    assert_eq!(open.len(), 1, "{open:?}");
    // A deployer (neither responder nor approver) may not answer it.
    let o = rig
        .rt
        .engine
        .execute(Request::new(
            Actor::new(Platform::Console, "dana", "dana"),
            Action::Reject {
                prompt: open[0].id.clone(),
            },
        ))
        .await;
    assert_eq!(o.status, Status::Refused, "{}", o.message.plain());
    let o = rig
        .rt
        .engine
        .execute(Request::new(
            omar(),
            Action::Reject {
                prompt: open[0].id.clone(),
            },
        ))
        .await;
    assert_eq!(o.status, Status::Succeeded, "{}", o.message.plain());
    assert!(
        o.message
            .plain()
            .contains("omar chose Not customer-facing: nothing about incident"),
        "{}",
        o.message.plain()
    );
    rig.until(60, done).await;
    rig.settle().await;
    assert!(rig.sp.received().is_empty(), "{:?}", rig.sp.received());
    let answers = rig
        .rt
        .engine
        .audit()
        .query(&rollbot::audit::Query {
            service: Some("checkout".into()),
            limit: 100,
            ..Default::default()
        })
        .unwrap();
    assert!(
        answers.iter().any(|e| e.record.actor.id == "omar"
            && e.record.parameters.get("choice")
                == Some(&serde_json::json!("Not customer-facing"))),
        "the answer is audited"
    );
    assert!(
        answers.iter().any(|e| e.record.action == "status_page"),
        "the question is audited"
    );
}

/// Monitoring across a restart: checkout's history in a real Prometheus,
/// from `start`: the rig's failing canary for seven minutes (so the
/// rollback falls inside it), then the baseline alone, its error rate ten
/// times the usual for the ticks in `relapse`, for fourteen minutes in all.
fn monitored_history(start: i64, relapse: std::ops::Range<usize>) -> String {
    let mut sim = Simulator::new(
        &Scenario::new("bad", false).canary_share(0.05).errors(10.0),
        3,
    );
    let ticks: Vec<rollbot::judge::Tick> = (0..84)
        .map(|k| {
            let mut t = sim.next_tick().expect("a tick");
            if k >= 42 {
                t.canary = None;
            }
            if relapse.contains(&k) {
                if let Some(b) = &mut t.baseline {
                    b.errors = (b.errors * 10).min(b.requests);
                }
            }
            t
        })
        .collect();
    crate::support::prometheus::openmetrics("checkout", start, &ticks)
}

/// The service keys plus a `[metrics]` table reading `prom`.
fn with_metrics(service: &str, prom: &str) -> String {
    format!("{service}\n[metrics]\nsource = \"prometheus\"\nurl = \"{prom}\"\ninterval = \"10s\"\n")
}

/// One life of rollbot with its controller, its clock at `at`.
async fn life(
    dir: &Path,
    (sp, pd): (&FakeStatuspage, &FakePagerDuty),
    service: &str,
    at: chrono::DateTime<chrono::Utc>,
) -> (Runtime, ManualClock, Arc<Chat>) {
    let text = config(dir, sp, pd, service);
    let config = Config::parse(&dir.join("rollbot.toml"), &text).unwrap_or_else(|e| panic!("{e}"));
    let clock = ManualClock::new(at);
    let chat = Arc::new(Chat::default());
    let rt = rollbot::runtime::start(
        config,
        &dir.join("data"),
        vec![chat.clone() as Arc<dyn ChatSink>],
        Arc::new(clock.clone()),
    )
    .await
    .unwrap();
    (rt, clock, chat)
}

/// Steps the controller tick by tick until checkout's listed state
/// contains `want` (at most `limit` ticks); returns that state.
async fn step_until(rt: &Runtime, clock: &ManualClock, want: &str, limit: usize) -> String {
    let c = rt.controller.as_ref().expect("a controller");
    for _ in 0..limit {
        let state = c.list().await.unwrap()[0].state.clone();
        if state.contains(want) {
            return state;
        }
        clock.advance(TICK);
        c.step(clock.now()).await;
    }
    let state = c.list().await.unwrap()[0].state.clone();
    assert!(state.contains(want), "never `{want}`: {state}");
    state
}

fn resolved_messages(chat: &Chat) -> usize {
    chat.0
        .lock()
        .unwrap()
        .iter()
        .filter(|m| m.starts_with("Resolved: checkout v42"))
        .count()
}

/// The history's start: a 10 s grid instant an hour ago.
fn an_hour_ago() -> chrono::DateTime<chrono::Utc> {
    let t = (chrono::Utc::now().timestamp() - 3600) / 10 * 10;
    chrono::DateTime::from_timestamp(t, 0).unwrap()
}

#[tokio::test]
async fn a_restart_during_monitoring_still_resolves_once_on_chat_the_status_page_and_the_pager() {
    let dir = tempfile::tempdir().unwrap();
    let start = an_hour_ago();
    let prom = crate::support::prometheus::Prometheus::with_history(
        &dir.path().join("prom"),
        &monitored_history(start.timestamp(), 0..0),
    );
    let service = with_metrics("critical = true", &prom.url());
    let sp = FakeStatuspage::start("pg1", SP_KEY, &["cmp-api", "cmp-web"]).await;
    let pd = FakePagerDuty::start(&[PD_KEY]).await;
    let (path, sp1, pd1, service1) = (
        dir.path().to_path_buf(),
        sp.clone(),
        pd.clone(),
        service.clone(),
    );
    // The automatic rollback fails (the on-call is paged), omar rolls back
    // by hand, and rollbot stops while it monitors the recovery.
    let (id, first_chat, rolled_back) = first_life(move || {
        Box::pin(async move {
            let (rt, clock, chat) = life(&path, (&sp1, &pd1), &service1, start).await;
            let r = Rollout::watching(
                "r-resume".into(),
                "checkout",
                ("v41".into(), "v42".into()),
                start,
                "test",
            );
            rt.controller.as_ref().unwrap().announce(r).await.unwrap();
            let sim = rt.simulated.get("sim").unwrap().clone();
            sim.inject_failure("checkout", "rollback", 1, "the registry no longer has v41");
            step_until(&rt, &clock, "automatic rollback did not complete", 40).await;
            let o = rt
                .engine
                .execute(
                    Request::new(
                        omar(),
                        Action::Rollback {
                            to: None,
                            force: false,
                        },
                    )
                    .service("checkout")
                    .reason("registry restored"),
                )
                .await;
            assert_eq!(o.status, Status::Succeeded, "{}", o.message.plain());
            let rolled_back = clock.now();
            step_until(&rt, &clock, "monitoring recovery", 3).await;
            for _ in 0..2 {
                clock.advance(TICK);
                rt.controller.as_ref().unwrap().step(clock.now()).await;
            }
            settle(&rt).await;
            let text = chat.0.lock().unwrap().join("\n");
            ("r-resume".to_string(), text, rolled_back)
        })
    })
    .await;
    assert!(
        first_chat.contains("Monitoring: checkout v42") && !first_chat.contains("Resolved:"),
        "{first_chat}"
    );
    assert!(
        rolled_back < start + chrono::Duration::minutes(7),
        "rolled back at {rolled_back}: after the canary's history ends"
    );
    assert_eq!(pd.alert(&id).as_deref(), Some("triggered"));

    // Back twelve minutes after the start: the service recovered while
    // rollbot was down, so the first step judges that and resolves.
    let at = start + chrono::Duration::minutes(12);
    let (rt, clock, chat) = life(dir.path(), (&sp, &pd), &service, at).await;
    let c = rt.controller.clone().unwrap();
    c.step(clock.now()).await;
    assert_eq!(resolved_messages(&chat), 1, "{:?}", chat.0.lock().unwrap());
    // Later steps resolve nothing again.
    for _ in 0..3 {
        clock.advance(TICK);
        c.step(clock.now()).await;
    }
    settle(&rt).await;
    assert_eq!(resolved_messages(&chat), 1);
    let text = chat.0.lock().unwrap().join("\n");
    assert!(
        text.contains("all after the rollback to v41")
            && text.contains("Incident: checkout v42 — Resolved"),
        "the thread and the root are updated: {text}"
    );
    let state = c.list().await.unwrap()[0].state.clone();
    assert!(state.ends_with("; resolved"), "{state}");
    // The status page: one incident, resolved once, components back.
    assert_eq!(sp.incidents().len(), 1, "{:?}", sp.incidents());
    let resolves = statuses(&sp)
        .iter()
        .filter(|(_, s)| s == "resolved")
        .count();
    assert_eq!(resolves, 1, "{:?}", statuses(&sp));
    assert_eq!(sp.component("cmp-api").as_deref(), Some("operational"));
    // The page: resolved once, with its dedup key.
    let resolved_pages: Vec<_> = pd
        .events()
        .into_iter()
        .filter(|e| e["event_action"] == "resolve")
        .collect();
    assert_eq!(resolved_pages.len(), 1, "{:?}", pd.events());
    assert_eq!(resolved_pages[0]["dedup_key"], id.as_str());
    assert_eq!(pd.alert(&id).as_deref(), Some("resolved"));
    // The audit log: one resolution of this incident.
    let resolved_entries = rt
        .engine
        .audit()
        .query(&rollbot::audit::Query {
            service: Some("checkout".into()),
            limit: 1000,
            ..Default::default()
        })
        .unwrap()
        .into_iter()
        .filter(|e| e.record.action == "incident" && e.record.reason == "incident resolved")
        .count();
    assert_eq!(resolved_entries, 1);
}

#[tokio::test]
async fn a_relapse_while_rollbot_was_down_keeps_the_incident_open_until_the_service_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let start = an_hour_ago();
    // Right after the canary's traffic ends (7m), the baseline's errors
    // jump tenfold until 10m: the service relapsed while rollbot was down.
    let prom = crate::support::prometheus::Prometheus::with_history(
        &dir.path().join("prom"),
        &monitored_history(start.timestamp(), 42..60),
    );
    let service = with_metrics("", &prom.url());
    let sp = FakeStatuspage::start("pg1", SP_KEY, &["cmp-api", "cmp-web"]).await;
    let pd = FakePagerDuty::start(&[PD_KEY]).await;
    let (path, sp1, pd1, service1) = (
        dir.path().to_path_buf(),
        sp.clone(),
        pd.clone(),
        service.clone(),
    );
    first_life(move || {
        Box::pin(async move {
            let (rt, clock, _chat) = life(&path, (&sp1, &pd1), &service1, start).await;
            let r = Rollout::watching(
                "r-relapse".into(),
                "checkout",
                ("v41".into(), "v42".into()),
                start,
                "test",
            );
            rt.controller.as_ref().unwrap().announce(r).await.unwrap();
            step_until(&rt, &clock, "monitoring recovery", 40).await;
            settle(&rt).await;
        })
    })
    .await;
    // Back at 10m30s: the watch period is long over, but the service was
    // failing for most of it, so nothing is resolved yet.
    let at = start + chrono::Duration::seconds(630);
    let (rt, clock, chat) = life(dir.path(), (&sp, &pd), &service, at).await;
    let c = rt.controller.clone().unwrap();
    c.step(clock.now()).await;
    settle(&rt).await;
    assert_eq!(resolved_messages(&chat), 0, "{:?}", chat.0.lock().unwrap());
    assert!(
        statuses(&sp).iter().all(|(_, s)| s != "resolved"),
        "{:?}",
        statuses(&sp)
    );
    let state = c.list().await.unwrap()[0].state.clone();
    assert!(state.ends_with("monitoring recovery"), "{state}");
    // A whole `resolve_after` of the recovered service after 10m resolves it,
    // once.
    let mut resolved_at = None;
    for _ in 0..12 {
        clock.advance(TICK);
        c.step(clock.now()).await;
        if resolved_at.is_none() && resolved_messages(&chat) > 0 {
            resolved_at = Some(clock.now());
        }
    }
    settle(&rt).await;
    let resolved_at = resolved_at.expect("resolved once the service recovered");
    assert!(
        resolved_at >= start + chrono::Duration::minutes(11),
        "resolved at {resolved_at}, before a minute of the recovered service"
    );
    assert_eq!(resolved_messages(&chat), 1);
    let resolves = statuses(&sp)
        .iter()
        .filter(|(_, s)| s == "resolved")
        .count();
    assert_eq!(resolves, 1, "{:?}", statuses(&sp));
    assert!(
        pd.events().is_empty(),
        "an automatic rollback that worked pages nobody"
    );
}
