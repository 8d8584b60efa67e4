//! The engine's promises, tested through `execute` with a real sled store,
//! the simulated backend and a fixed clock.

use super::*;
use crate::backend::simulated::SimulatedBackend;
use crate::chat::{ChatError, ChatSink, MessageRef};
use crate::clock::{Clock, ManualClock};
use crate::domain::{Platform, View};
use chrono::{TimeZone, Utc};
use std::path::Path;
use std::sync::Mutex;

const CONFIG: &str = r##"
[engine]
lock_wait = "300ms"

[channels.deploys]
console = "#deploys"

[backends.sim]
type = "simulated"

[[services]]
name = "checkout"
environment = "prod"
backend = "sim"
deploy_channel = "deploys"
critical = true
escalate_after = "5m"
escalation = ["slack-group:S0ONCALL", "slack-group:S0LEADS", "slack:U0MANAGER"]

[[services]]
name = "payments"
environment = "prod"
backend = "sim"
deploy_channel = "deploys"
summary_schedule = "*/20 * * * *"

[[services]]
name = "search"
environment = "staging"
backend = "sim"

[[roles.viewer]]
members = ["console:viewer"]
[[roles.deployer]]
members = ["console:deployer", "console:deployer2"]
[[roles.approver]]
members = ["console:approver", "console:deployer2"]
[[roles.responder]]
members = ["console:responder"]
[[roles.release-manager]]
members = ["console:releaser"]
[[roles.admin]]
members = ["console:admin"]

[[freeze.windows]]
name = "friday-evening"
kind = "deny"
schedule = "0 18 * * 5"
duration = "6h"
services = ["staging/*"]
"##;

/// Remembers what was posted.
#[derive(Default)]
pub struct Recorder(pub Mutex<Vec<(String, Message)>>);

#[async_trait::async_trait]
impl ChatSink for Recorder {
    fn platform(&self) -> Platform {
        Platform::Console
    }
    async fn post(&self, channel: &str, msg: &Message) -> Result<MessageRef, ChatError> {
        let mut v = self.0.lock().unwrap();
        v.push((channel.to_string(), msg.clone()));
        Ok(MessageRef {
            platform: Platform::Console,
            channel: channel.into(),
            id: v.len().to_string(),
            thread: None,
        })
    }
    async fn reply(&self, t: &MessageRef, msg: &Message) -> Result<MessageRef, ChatError> {
        self.post(&t.channel, msg).await
    }
    async fn update(&self, at: &MessageRef, msg: &Message) -> Result<(), ChatError> {
        self.0
            .lock()
            .unwrap()
            .push((format!("update:{}", at.id), msg.clone()));
        Ok(())
    }
    async fn ephemeral(&self, channel: &str, _u: &Actor, msg: &Message) -> Result<(), ChatError> {
        self.post(channel, msg).await.map(|_| ())
    }
}

struct Harness {
    engine: Arc<Engine>,
    sim: Arc<SimulatedBackend>,
    clock: ManualClock,
    chat: Arc<Recorder>,
    _dir: Option<tempfile::TempDir>,
}

fn who(name: &str) -> Actor {
    Actor::new(Platform::Console, name, name)
}

fn harness_at(path: &Path, latency_ms: u64) -> Harness {
    let config = Config::parse(Path::new("test.toml"), CONFIG).unwrap();
    // A Wednesday, outside the Friday window.
    let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 12, 2, 12, 0, 0).unwrap());
    let store = Arc::new(Store::open(path).unwrap());
    let telemetry = Arc::new(Telemetry::new());
    let sim = Arc::new(SimulatedBackend::new(
        Duration::from_millis(latency_ms),
        BTreeMap::new(),
    ));
    let chat = Arc::new(Recorder::default());
    let mut notifier = Notifier::new(config.channels.clone(), 4, telemetry.clone());
    notifier.add_sink(chat.clone());
    let backends: HashMap<String, Arc<dyn RollbackBackend>> =
        [("sim".to_string(), sim.clone() as Arc<dyn RollbackBackend>)].into();
    let engine = Engine::new(EngineParts {
        config: Arc::new(config),
        store,
        backends,
        notifier,
        clock: Arc::new(clock.clone()),
        telemetry,
    });
    Harness {
        engine,
        sim,
        clock,
        chat,
        _dir: None,
    }
}

fn harness_with(latency_ms: u64) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness_at(dir.path(), latency_ms);
    h._dir = Some(dir);
    h
}

/// The newest `limit` audit entries of a service, newest first.
fn entries(h: &Harness, service: &str, limit: usize) -> Vec<crate::audit::Entry> {
    h.engine
        .audit()
        .query(&crate::audit::Query {
            service: Some(service.into()),
            limit,
            ..Default::default()
        })
        .unwrap()
}

fn harness() -> Harness {
    harness_with(0)
}

fn rollback(actor: &str, service: &str) -> Request {
    Request::new(who(actor), Action::Rollback { to: None })
        .service(service)
        .reason("test")
}

fn promote(actor: &str, service: &str, force: bool) -> Request {
    Request::new(who(actor), Action::Promote { full: false, force })
        .service(service)
        .reason("test")
}

#[tokio::test]
async fn every_role_and_action_pair() {
    type MakeRequest = Box<dyn Fn(&str) -> Request>;
    let actions: Vec<(&str, MakeRequest)> = vec![
        ("rollback", Box::new(|a| rollback(a, "payments"))),
        ("promote", Box::new(|a| promote(a, "payments", false))),
        (
            "pause",
            Box::new(|a| Request::new(who(a), Action::Pause).service("payments")),
        ),
        (
            "resume",
            Box::new(|a| Request::new(who(a), Action::Resume).service("payments")),
        ),
        (
            "freeze",
            Box::new(|a| {
                Request::new(
                    who(a),
                    Action::Freeze {
                        scope: Scope::Service("payments".into()),
                        duration: Duration::from_secs(60),
                    },
                )
            }),
        ),
        (
            "unfreeze",
            Box::new(|a| {
                Request::new(
                    who(a),
                    Action::Unfreeze {
                        scope: Scope::Service("payments".into()),
                    },
                )
            }),
        ),
        (
            "auto",
            Box::new(|a| {
                Request::new(
                    who(a),
                    Action::Automation {
                        enabled: false,
                        duration: Duration::from_secs(600),
                    },
                )
                .service("payments")
            }),
        ),
        (
            "status",
            Box::new(|a| {
                Request::new(who(a), Action::Query { view: View::Status }).service("payments")
            }),
        ),
        (
            "audit",
            Box::new(|a| {
                Request::new(who(a), Action::Query { view: View::Audit }).service("payments")
            }),
        ),
    ];
    // The expected matrix, written out rather than derived from Role::grants.
    let allowed: &[(&str, &[&str])] = &[
        ("viewer", &["status", "audit"]),
        ("deployer", &["promote", "resume", "status", "audit"]),
        ("approver", &["status", "audit"]),
        (
            "responder",
            &["rollback", "pause", "resume", "auto", "status", "audit"],
        ),
        ("releaser", &["freeze", "unfreeze", "status", "audit"]),
        (
            "admin",
            &[
                "rollback", "promote", "pause", "resume", "freeze", "unfreeze", "auto", "status",
                "audit",
            ],
        ),
        ("stranger", &[]),
    ];
    for (actor, ok) in allowed {
        for (name, make) in &actions {
            let h = harness();
            let before = h.engine.audit().len();
            let o = h.engine.execute(make(actor)).await;
            let refused_for_permission =
                o.status == Status::Refused && o.message.text.contains("permission");
            if ok.contains(name) {
                assert!(
                    !refused_for_permission,
                    "{actor} should be allowed to {name}: {}",
                    o.message.plain()
                );
            } else {
                assert!(
                    refused_for_permission,
                    "{actor} should be refused {name}: {}",
                    o.message.plain()
                );
                let last = h
                    .engine
                    .audit()
                    .get(before + 1)
                    .unwrap()
                    .expect("refusal audited");
                assert_eq!(last.record.outcome, AuditOutcome::Refused);
                assert_eq!(last.record.actor.id, *actor);
                assert!(
                    o.message.text.contains("comes with the role"),
                    "{}",
                    o.message.text
                );
            }
        }
    }
    // Answering prompts: approver yes, deployer no.
    let h = harness();
    let pending = h
        .engine
        .execute(promote("deployer", "checkout", false))
        .await;
    let id = pending.prompt.expect("a prompt");
    let o = h
        .engine
        .execute(Request::new(
            who("responder"),
            Action::Approve { prompt: id.clone() },
        ))
        .await;
    assert_eq!(o.status, Status::Refused);
    assert!(
        o.message.text.contains("needs the role approver or admin"),
        "{}",
        o.message.text
    );
    let o = h
        .engine
        .execute(Request::new(
            who("approver"),
            Action::Approve { prompt: id },
        ))
        .await;
    assert_eq!(o.status, Status::Succeeded, "{}", o.message.plain());
}

#[tokio::test]
async fn freeze_refuses_promote_but_never_rollback() {
    let h = harness();
    let f = h
        .engine
        .execute(
            Request::new(
                who("releaser"),
                Action::Freeze {
                    scope: Scope::Glob("prod/*".into()),
                    duration: Duration::from_secs(7200),
                },
            )
            .reason("launch"),
        )
        .await;
    assert_eq!(f.status, Status::Succeeded, "{}", f.message.plain());
    let p = h
        .engine
        .execute(promote("deployer", "payments", false))
        .await;
    assert_eq!(p.status, Status::Refused);
    assert!(
        p.message.text.contains("prod/* is frozen by releaser")
            && p.message.text.contains("launch"),
        "{}",
        p.message.text
    );
    assert_eq!(h.sim.count("payments", "promote"), 0);
    let r = h.engine.execute(rollback("responder", "payments")).await;
    assert_eq!(r.status, Status::Succeeded, "{}", r.message.plain());
    assert_eq!(h.sim.count("payments", "rollback"), 1);
    // The rollback holds automatic promotion for the service's cooldown.
    let until = h
        .engine
        .cooldown_until("payments")
        .await
        .expect("a cooldown");
    assert_eq!(until, h.clock.now() + chrono::Duration::minutes(30));
    assert!(h.engine.cooldown_until("checkout").await.is_none());
    h.sim.start_canary("payments", "v3");
    // force without admin: refused; admin without reason: refused; admin with reason: break-glass.
    let o = h
        .engine
        .execute(promote("deployer", "payments", true))
        .await;
    assert!(
        o.status == Status::Refused && o.message.text.contains("Only the admin role"),
        "{}",
        o.message.plain()
    );
    let o = h
        .engine
        .execute(
            Request::new(
                who("admin"),
                Action::Promote {
                    full: false,
                    force: true,
                },
            )
            .service("payments"),
        )
        .await;
    assert!(
        o.status == Status::Refused && o.message.title.contains("needs a reason"),
        "{}",
        o.message.plain()
    );
    let o = h.engine.execute(promote("admin", "payments", true)).await;
    assert_eq!(o.status, Status::Succeeded, "{}", o.message.plain());
    let entry = entries(&h, "payments", 1).remove(0);
    assert_eq!(
        entry.record.parameters.get("break_glass"),
        Some(&json!(true))
    );
    h.engine.notifier.settle().await;
    let announced = h
        .chat
        .0
        .lock()
        .unwrap()
        .iter()
        .any(|(_, m)| m.title.starts_with("Break-glass: admin promoted payments"));
    assert!(announced, "break-glass not announced");
    // Unfreeze lifts it.
    let u = h
        .engine
        .execute(Request::new(
            who("releaser"),
            Action::Unfreeze {
                scope: Scope::Glob("prod/*".into()),
            },
        ))
        .await;
    assert_eq!(u.status, Status::Succeeded);
    assert_eq!(
        h.engine
            .execute(promote("deployer", "payments", false))
            .await
            .status,
        Status::Succeeded
    );
}

#[tokio::test]
async fn scheduled_deny_window_refuses_at_the_right_times() {
    let h = harness();
    let at = |d, hh, mm| Utc.with_ymd_and_hms(2026, 12, d, hh, mm, 0).unwrap();
    // Friday 2026-12-04 18:00 to Saturday 00:00 UTC.
    for (t, blocked) in [
        (at(4, 17, 59), false),
        (at(4, 18, 0), true),
        (at(4, 23, 59), true),
        (at(5, 0, 0), false),
        (at(11, 19, 30), true),
        (at(2, 19, 0), false),
    ] {
        h.clock.set(t);
        let o = h.engine.execute(promote("deployer", "search", false)).await;
        if blocked {
            assert_eq!(
                o.refusal,
                Some(Refusal::Frozen),
                "{t}: {}",
                o.message.plain()
            );
            assert!(
                o.message.text.contains("friday-evening"),
                "{}",
                o.message.text
            );
        } else {
            // Not frozen (the simulated backend may have no canary to promote).
            assert_ne!(
                o.refusal,
                Some(Refusal::Frozen),
                "{t}: {}",
                o.message.plain()
            );
        }
        // Rollbacks pass inside the window too (until the simulated
        // backend runs out of older revisions, which is not the freeze).
        let o = h.engine.execute(rollback("admin", "search")).await;
        assert_ne!(
            o.refusal,
            Some(Refusal::Frozen),
            "{t}: {}",
            o.message.plain()
        );
        assert_ne!(o.refusal, Some(Refusal::NotAllowed));
    }
}

#[tokio::test]
async fn two_person_rule_for_critical_promotions() {
    let h = harness();
    let pending = h
        .engine
        .execute(promote("deployer2", "checkout", false))
        .await;
    assert_eq!(pending.status, Status::Pending);
    assert_eq!(h.sim.count("checkout", "promote"), 0);
    let id = pending.prompt.unwrap();
    // deployer2 is also an approver, but not for their own request.
    let own = h
        .engine
        .execute(Request::new(
            who("deployer2"),
            Action::Approve { prompt: id.clone() },
        ))
        .await;
    assert_eq!(own.status, Status::Refused);
    assert_eq!(own.refusal, Some(Refusal::TwoPerson));
    assert!(
        own.message.text.contains("a different person must approve"),
        "{}",
        own.message.text
    );
    assert_eq!(
        h.engine.prompts.get(&id).await.unwrap().unwrap().state,
        PromptState::Open
    );
    let ok = h
        .engine
        .execute(Request::new(
            who("approver"),
            Action::Approve { prompt: id.clone() },
        ))
        .await;
    assert_eq!(ok.status, Status::Succeeded, "{}", ok.message.plain());
    assert_eq!(h.sim.count("checkout", "promote"), 1);
    let metrics = h.engine.telemetry.render();
    assert!(
        metrics.contains("rollbot_actions_total{action=\"promote\",outcome=\"succeeded\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("rollbot_actions_total{action=\"approve\",outcome=\"succeeded\"} 1"),
        "{metrics}"
    );
    // A second press does nothing more.
    let again = h
        .engine
        .execute(Request::new(who("admin"), Action::Approve { prompt: id }))
        .await;
    assert!(again.message.title.contains("Already answered"));
    assert_eq!(h.sim.count("checkout", "promote"), 1);
}

#[tokio::test]
async fn concurrent_presses_act_once() {
    let h = harness_with(50);
    let id = h
        .engine
        .execute(promote("deployer", "checkout", false))
        .await
        .prompt
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let e = h.engine.clone();
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            e.execute(Request::new(
                who("approver"),
                Action::Approve { prompt: id },
            ))
            .await
        }));
    }
    let mut succeeded = 0;
    for t in tasks {
        if t.await.unwrap().status == Status::Succeeded {
            succeeded += 1;
        }
    }
    assert_eq!(succeeded, 1);
    assert_eq!(h.sim.count("checkout", "promote"), 1);
}

#[tokio::test]
async fn same_idempotency_key_acts_once_even_concurrently() {
    let h = harness_with(100);
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let e = h.engine.clone();
        tasks.push(tokio::spawn(async move {
            e.execute(rollback("responder", "payments").idempotency_key("slack:Tx:1531420618.1"))
                .await
        }));
    }
    let outcomes: Vec<Outcome> = futures_join(tasks).await;
    assert_eq!(h.sim.count("payments", "rollback"), 1);
    assert!(outcomes.iter().all(|o| o.status == Status::Succeeded));
    assert_eq!(outcomes.iter().filter(|o| !o.repeat).count(), 1);
    assert!(outcomes
        .iter()
        .all(|o| o.correlation_id == outcomes[0].correlation_id || o.repeat));
    // Later, too.
    let later = h
        .engine
        .execute(rollback("responder", "payments").idempotency_key("slack:Tx:1531420618.1"))
        .await;
    assert!(later.repeat);
    assert_eq!(h.sim.count("payments", "rollback"), 1);
}

async fn futures_join(tasks: Vec<tokio::task::JoinHandle<Outcome>>) -> Vec<Outcome> {
    let mut v = Vec::new();
    for t in tasks {
        v.push(t.await.unwrap());
    }
    v
}

#[tokio::test]
async fn actions_on_one_service_never_overlap() {
    // Each backend call takes 20 ms; without the lock, calls would overlap.
    let h = harness_with(20);
    let mut tasks = Vec::new();
    for i in 0..4 {
        let e = h.engine.clone();
        let req = if i % 2 == 0 {
            Request::new(who("responder"), Action::Pause).service("payments")
        } else {
            Request::new(who("responder"), Action::Resume).service("payments")
        };
        tasks.push(tokio::spawn(async move { e.execute(req).await }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().status, Status::Succeeded);
    }
    assert_eq!(h.sim.max_concurrency("payments"), 1);
}

#[tokio::test]
async fn a_busy_service_refuses_after_the_bounded_wait_naming_the_holder() {
    let h = harness();
    h.sim.inject_hang("payments", "rollback", 1);
    let e = h.engine.clone();
    let first = tokio::spawn(async move { e.execute(rollback("responder", "payments")).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = h
        .engine
        .execute(Request::new(who("admin"), Action::Pause).service("payments"))
        .await;
    assert_eq!(second.status, Status::Refused);
    assert_eq!(second.refusal, Some(Refusal::Busy));
    assert!(
        second.message.text.contains("rollback by responder since"),
        "{}",
        second.message.text
    );
    first.abort();
}

#[tokio::test]
async fn backend_failure_is_reported_and_audited() {
    let h = harness();
    h.sim.inject_failure(
        "payments",
        "rollback",
        1,
        "deployments.apps \"payments\" is forbidden",
    );
    let o = h.engine.execute(rollback("responder", "payments")).await;
    assert_eq!(o.status, Status::Failed);
    assert!(
        o.message.text.contains("forbidden") && o.message.text.contains("by hand"),
        "{}",
        o.message.text
    );
    let e = entries(&h, "payments", 2);
    assert_eq!(e[0].record.outcome, AuditOutcome::Failed);
    assert_eq!(e[1].record.outcome, AuditOutcome::Requested);
    assert_eq!(e[0].record.correlation_id, e[1].record.correlation_id);
}

#[tokio::test]
async fn an_interrupted_action_is_found_marked_and_announced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    // An action that never finishes, cut off as a crash would: its whole
    // runtime goes away, as the process would.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let h = harness_at(&path, 0);
            h.sim.inject_hang("payments", "rollback", 1);
            let e = h.engine.clone();
            tokio::spawn(async move {
                e.execute(rollback("responder", "payments").correlation_id("crash-1"))
                    .await
            });
            for _ in 0..200 {
                let inflight = h
                    .engine
                    .store
                    .get_raw(crate::store::Table::Inflight, "crash-1")
                    .await
                    .unwrap();
                if inflight.is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        rt.shutdown_timeout(Duration::from_secs(5));
    })
    .join()
    .unwrap();
    let h = harness_at(dir.path(), 0);
    let found = h.engine.recover().await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].correlation_id, "crash-1");
    let steps = h
        .engine
        .audit()
        .query(&crate::audit::Query {
            correlation_id: Some("crash-1".into()),
            limit: 5,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(steps[0].record.outcome, AuditOutcome::Interrupted);
    assert_eq!(steps[1].record.outcome, AuditOutcome::Requested);
    assert!(h
        .chat
        .0
        .lock()
        .unwrap()
        .iter()
        .any(|(_, m)| m.title == "Interrupted: rollback of payments"));
    // Reported once, not at every start.
    assert!(h.engine.recover().await.unwrap().is_empty());
}

#[tokio::test]
async fn unknown_service_suggests_and_is_audited() {
    let h = harness();
    let o = h.engine.execute(rollback("responder", "paymnts")).await;
    assert_eq!(o.status, Status::Refused);
    assert_eq!(o.refusal, Some(Refusal::UnknownService));
    assert_eq!(
        o.message.text,
        "There is no service `paymnts`; did you mean payments?"
    );
    assert_eq!(h.engine.audit().len(), 1);
}

#[tokio::test]
async fn status_lists_freezes_with_who_since_until_why() {
    let h = harness();
    h.engine
        .execute(
            Request::new(
                who("releaser"),
                Action::Freeze {
                    scope: Scope::Glob("prod/*".into()),
                    duration: Duration::from_secs(7200),
                },
            )
            .reason("code freeze for launch"),
        )
        .await;
    let o = h
        .engine
        .execute(Request::new(
            who("viewer"),
            Action::Query { view: View::Status },
        ))
        .await;
    let text = o.message.plain();
    assert!(text.contains("Freeze prod/*: by releaser since 2026-12-02 12:00 UTC until 2026-12-02 14:00 UTC (2h left): code freeze for launch"), "{text}");
    assert!(text.contains("checkout (prod, critical)"), "{text}");
    assert!(text.contains("backend:sim closed"), "{text}");
}

#[tokio::test]
async fn a_freeze_refuses_approving_a_promotion_and_the_prompt_stays_open() {
    let h = harness();
    let id = h
        .engine
        .execute(promote("deployer", "checkout", false))
        .await
        .prompt
        .unwrap();
    let f = h
        .engine
        .execute(
            Request::new(
                who("releaser"),
                Action::Freeze {
                    scope: Scope::All,
                    duration: Duration::from_secs(600),
                },
            )
            .reason("incident"),
        )
        .await;
    assert_eq!(f.status, Status::Succeeded);
    let o = h
        .engine
        .execute(Request::new(
            who("approver"),
            Action::Approve { prompt: id.clone() },
        ))
        .await;
    assert_eq!(o.status, Status::Refused);
    assert!(
        o.message.text.contains("all is frozen by releaser")
            && o.message.text.contains("prompt stays open"),
        "{}",
        o.message.text
    );
    assert_eq!(
        h.engine.prompts.get(&id).await.unwrap().unwrap().state,
        PromptState::Open
    );
    assert_eq!(h.sim.count("checkout", "promote"), 0);
    // Rejecting is not a promotion: allowed during the freeze.
    let r = h
        .engine
        .execute(Request::new(
            who("approver"),
            Action::Reject { prompt: id.clone() },
        ))
        .await;
    assert_eq!(r.status, Status::Succeeded, "{}", r.message.plain());
    // After the freeze expires, the prompt is answered already; nothing more happens.
    h.clock.advance(Duration::from_secs(601));
    let late = h
        .engine
        .execute(Request::new(
            who("approver"),
            Action::Approve { prompt: id },
        ))
        .await;
    assert!(late.message.title.contains("Already answered"));
    assert_eq!(h.sim.count("checkout", "promote"), 0);
}

#[tokio::test]
async fn an_expired_prompt_cannot_be_answered() {
    let h = harness();
    let id = h
        .engine
        .execute(promote("deployer", "checkout", false))
        .await
        .prompt
        .unwrap();
    h.clock.advance(Duration::from_secs(31 * 60));
    let o = h
        .engine
        .execute(Request::new(
            who("approver"),
            Action::Approve { prompt: id },
        ))
        .await;
    assert_eq!(o.status, Status::Refused);
    assert_eq!(o.refusal, Some(Refusal::Expired));
    assert!(
        o.message.text.contains("expired") && o.message.text.contains("/promote checkout"),
        "{}",
        o.message.text
    );
    assert_eq!(h.sim.count("checkout", "promote"), 0);
}

#[tokio::test]
async fn automation_off_is_authorized_audited_shown_and_expires() {
    let h = harness();
    let off = |actor: &str| {
        Request::new(
            who(actor),
            Action::Automation {
                enabled: false,
                duration: Duration::from_secs(7200),
            },
        )
        .service("payments")
        .reason("database maintenance")
    };
    // A deployer may not switch automation off (it is the pause permission).
    let o = h.engine.execute(off("deployer")).await;
    assert_eq!(o.status, Status::Refused);
    assert!(
        o.message.text.contains("responder, admin"),
        "{}",
        o.message.text
    );
    assert!(h.engine.automation_off("payments").await.is_none());

    let o = h.engine.execute(off("responder")).await;
    assert_eq!(o.status, Status::Succeeded, "{}", o.message.plain());
    let now = h.clock.now();
    let state = h.engine.automation_off("payments").await.expect("off");
    assert_eq!(state.by, "responder");
    assert_eq!(state.reason, "database maintenance");
    assert_eq!(state.until, Some(now + chrono::Duration::hours(2)));
    assert!(h.engine.automation_off("checkout").await.is_none());

    // Audited: requested then succeeded, with the duration and the end.
    let entries = entries(&h, "payments", 10);
    let autos: Vec<_> = entries
        .iter()
        .filter(|e| e.record.action == "automation")
        .collect();
    // The deployer's refusal, then the responder's request and result.
    assert_eq!(autos.len(), 3, "{autos:?}");
    assert!(autos
        .iter()
        .any(|e| e.record.outcome == AuditOutcome::Refused));
    assert!(autos
        .iter()
        .any(|e| e.record.outcome == AuditOutcome::Requested));
    let done = autos
        .iter()
        .find(|e| e.record.outcome == AuditOutcome::Succeeded)
        .expect("succeeded entry");
    assert_eq!(done.record.parameters["duration_secs"], json!(7200));
    assert_eq!(done.record.parameters["enabled"], json!(false));
    assert_eq!(
        done.record.parameters["until"],
        json!("2026-12-02T14:00:00+00:00")
    );
    assert_eq!(done.record.reason, "database maintenance");
    // Announced in the deploy channel.
    h.engine.notifier.settle().await;
    let posted = h.chat.0.lock().unwrap().clone();
    assert!(posted
        .iter()
        .any(|(_, m)| m.title == "Automation off: payments"));

    // /status shows who, until when and why.
    let o = h
        .engine
        .execute(
            Request::new(who("viewer"), Action::Query { view: View::Status }).service("payments"),
        )
        .await;
    let text = o.message.plain();
    assert!(
        text.contains(
            "automation off by responder until 2026-12-02 14:00 UTC: database maintenance"
        ),
        "{text}"
    );

    // It expires by itself.
    h.clock.advance(Duration::from_secs(7200 + 1));
    assert!(h.engine.automation_off("payments").await.is_none());

    // And can be switched back on early.
    h.engine.execute(off("admin")).await;
    assert!(h.engine.automation_off("payments").await.is_some());
    let o = h
        .engine
        .execute(
            Request::new(
                who("responder"),
                Action::Automation {
                    enabled: true,
                    duration: Duration::ZERO,
                },
            )
            .service("payments"),
        )
        .await;
    assert_eq!(o.status, Status::Succeeded, "{}", o.message.plain());
    assert!(
        o.message.text.contains("by itself again"),
        "{}",
        o.message.text
    );
    assert!(h.engine.automation_off("payments").await.is_none());
}

/// Feeds a failing canary to a rollout watch until it rolls back or asks
/// about a failing canary; a borderline prompt on the way is approved.
/// Returns the watch and the borderline prompts seen.
async fn watch_failing_canary(h: &Harness) -> (crate::controller::RolloutWatch, Vec<Prompt>) {
    use crate::controller::WatchState;
    use crate::judge::sim::{Scenario, Simulator};
    let svc = h.engine.config.service("payments").unwrap();
    let mut watch = crate::controller::RolloutWatch::new(svc, "v1", "v2");
    let mut sim = Simulator::new(&Scenario::new("bad", false).errors(10.0), 3);
    let mut borderline = Vec::new();
    for _ in 0..360 {
        let Some(tick) = sim.next_tick() else { break };
        watch.tick(&h.engine, &tick).await;
        match &watch.state {
            WatchState::Watching => {}
            WatchState::Asking { prompt } => {
                let p = h.engine.prompts.get(prompt).await.unwrap().unwrap();
                if p.approve.label != "Approve" || p.state != PromptState::Open {
                    break;
                }
                let o = h
                    .engine
                    .execute(Request::new(
                        who("approver"),
                        Action::Approve {
                            prompt: p.id.clone(),
                        },
                    ))
                    .await;
                assert_eq!(o.status, Status::Succeeded, "{}", o.message.plain());
                borderline.push(p);
            }
            _ => break,
        }
    }
    (watch, borderline)
}

#[tokio::test]
async fn with_automation_off_the_controller_asks_instead_of_rolling_back() {
    let h = harness();
    let o = h
        .engine
        .execute(
            Request::new(
                who("responder"),
                Action::Automation {
                    enabled: false,
                    duration: Duration::from_secs(3600),
                },
            )
            .service("payments")
            .reason("known upstream outage"),
        )
        .await;
    assert_eq!(o.status, Status::Succeeded, "{}", o.message.plain());
    let (watch, borderline) = watch_failing_canary(&h).await;
    for p in &borderline {
        // Not paused, so approving only means "stop asking".
        assert_eq!(p.approve.action, None);
        assert!(p.question.contains("Automation is off"), "{}", p.question);
    }
    let crate::controller::WatchState::Asking { prompt } = &watch.state else {
        panic!("expected a prompt, got {:?}", watch.state);
    };
    let p = h
        .engine
        .prompts
        .get(prompt)
        .await
        .unwrap()
        .expect("stored prompt");
    assert_eq!(p.approve.label, "Roll back");
    assert_eq!(p.reject.label, "Continue");
    assert!(
        p.question
            .contains("Automation is off for payments by responder until 2026-12-02 13:00 UTC: known upstream outage"),
        "{}",
        p.question
    );
    // Nothing was rolled back or paused: no backend action in the audit log
    // (prompts are recorded as pending requests, nothing more).
    let entries = entries(&h, "payments", 100);
    assert!(
        !entries.iter().any(|e| e.record.action == "rollback"
            || (e.record.action == "pause" && e.record.outcome != AuditOutcome::Pending)),
        "{entries:?}"
    );
    // The summary was still posted.
    let posted = h.chat.0.lock().unwrap().clone();
    assert!(posted.iter().any(|(_, m)| m.title.contains("payments")));

    // A person presses Roll back: the backend acts once, and the watch
    // follows the rollback into an incident instead of watching on.
    let mut watch = watch;
    let o = h
        .engine
        .execute(Request::new(
            who("approver"),
            Action::Approve {
                prompt: p.id.clone(),
            },
        ))
        .await;
    assert_eq!(o.status, Status::Succeeded, "{}", o.message.plain());
    assert_eq!(h.sim.count("payments", "rollback"), 1);
    let tick = crate::judge::Tick {
        t: 3600.0,
        baseline: None,
        canary: None,
    };
    watch.tick(&h.engine, &tick).await;
    assert!(
        matches!(&watch.state, crate::controller::WatchState::Monitoring(what) if what.contains("approver chose Roll back")),
        "{:?}",
        watch.state
    );
    let posted = h.chat.0.lock().unwrap().clone();
    assert!(
        posted
            .iter()
            .any(|(_, m)| m.title == "Incident: payments v2 — Monitoring"),
        "{posted:?}"
    );
}

#[tokio::test]
async fn with_automation_on_the_controller_rolls_back_by_itself() {
    let h = harness();
    let (watch, _) = watch_failing_canary(&h).await;
    assert!(
        matches!(
            watch.state,
            crate::controller::WatchState::Monitoring(_) | crate::controller::WatchState::Done(_)
        ),
        "{:?}",
        watch.state
    );
    let entries = entries(&h, "payments", 100);
    assert!(entries.iter().any(|e| e.record.action == "rollback"));
}

#[tokio::test]
async fn an_unanswered_prompt_escalates_one_step_per_period_and_never_acts() {
    let h = harness();
    let start = h.clock.now();
    let o = h
        .engine
        .execute(promote("deployer", "checkout", false))
        .await;
    assert_eq!(o.status, Status::Pending, "{}", o.message.plain());
    let id = o.prompt.expect("a prompt");
    let live_before = h.engine.backend_status("checkout").await.unwrap();
    let escalations = |h: &Harness| -> Vec<Message> {
        h.chat
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, m)| m.title.starts_with("Still waiting"))
            .map(|(_, m)| m.clone())
            .collect()
    };
    assert_eq!(h.engine.escalate_prompts(h.clock.now()).await.unwrap(), 0);
    h.clock.advance(Duration::from_secs(299));
    assert_eq!(h.engine.escalate_prompts(h.clock.now()).await.unwrap(), 0);
    // 5m: the first group; asking again at the same time posts nothing more.
    h.clock.advance(Duration::from_secs(1));
    assert_eq!(h.engine.escalate_prompts(h.clock.now()).await.unwrap(), 1);
    assert_eq!(h.engine.escalate_prompts(h.clock.now()).await.unwrap(), 0);
    let seen = escalations(&h);
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].mentions, vec!["slack-group:S0ONCALL".to_string()]);
    assert!(
        seen[0].text.contains("Nobody has answered for 5m"),
        "{}",
        seen[0].text
    );
    assert!(seen[0].text.contains("rollbot does nothing by itself"));
    assert!(seen[0].buttons.is_empty(), "the buttons stay on the prompt");
    // 10m and 15m: the next groups, one step per period; the controller's
    // loop checks open prompts at every step.
    h.clock.set(start + chrono::Duration::minutes(10));
    let controller = crate::controller::Controller::new(
        h.engine.clone(),
        Arc::new(crate::metrics::simulated::SimulatedSource::new(
            HashMap::new(),
        )),
    );
    controller.step(h.clock.now()).await;
    assert_eq!(escalations(&h).len(), 2);
    h.clock.set(start + chrono::Duration::minutes(15));
    assert_eq!(h.engine.escalate_prompts(h.clock.now()).await.unwrap(), 1);
    // The list is exhausted: nothing more, and nothing ever acted.
    h.clock.set(start + chrono::Duration::minutes(25));
    assert_eq!(h.engine.escalate_prompts(h.clock.now()).await.unwrap(), 0);
    let mentioned: Vec<String> = escalations(&h)
        .iter()
        .flat_map(|m| m.mentions.clone())
        .collect();
    assert_eq!(
        mentioned,
        [
            "slack-group:S0ONCALL",
            "slack-group:S0LEADS",
            "slack:U0MANAGER"
        ]
    );
    let p = h.engine.prompts.get(&id).await.unwrap().unwrap();
    assert_eq!(p.state, PromptState::Open);
    assert_eq!(p.escalated, 3);
    assert_eq!(
        h.engine.backend_status("checkout").await.unwrap(),
        live_before
    );
    let entries = entries(&h, "checkout", 50);
    assert_eq!(
        entries
            .iter()
            .filter(|e| e.record.action == "escalate")
            .count(),
        3
    );
    assert!(!entries
        .iter()
        .any(|e| e.record.action == "promote" && e.record.outcome == AuditOutcome::Succeeded));

    // An answered prompt does not escalate.
    h.clock.set(start + chrono::Duration::minutes(26));
    let o = h
        .engine
        .execute(promote("deployer", "checkout", false))
        .await;
    let id2 = o.prompt.expect("a prompt");
    h.engine
        .execute(Request::new(
            who("approver"),
            Action::Reject { prompt: id2 },
        ))
        .await;
    h.clock.advance(Duration::from_secs(600));
    assert_eq!(h.engine.escalate_prompts(h.clock.now()).await.unwrap(), 0);
}

#[tokio::test]
async fn the_summary_is_reposted_when_its_schedule_fires_between_two_ticks() {
    use crate::judge::sim::Scenario;
    let h = harness();
    let start = h.clock.now(); // 12:00:00
    let controller = crate::controller::Controller::new(
        h.engine.clone(),
        Arc::new(crate::metrics::simulated::SimulatedSource::new(
            [("payments".to_string(), Scenario::new("good", true))].into(),
        )),
    );
    let r = controller
        .announce(crate::controller::Rollout {
            id: "r1".into(),
            service: "payments".into(),
            from_revision: "v1".into(),
            to_revision: "v2".into(),
            strategy: "canary".into(),
            start,
            announced_by: "test".into(),
            state: "watching".into(),
            verdict: None,
            score: None,
            reasons: vec![],
        })
        .await
        .unwrap();
    assert_eq!(r.id, "r1");
    let summaries = |h: &Harness| {
        h.chat
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|(ch, m)| {
                !ch.starts_with("update:") && m.title.starts_with("Canary payments v2")
            })
            .count()
    };
    let interval = controller.interval();
    let until = |h: &Harness, t: chrono::DateTime<Utc>| {
        let mut now = h.clock.now();
        let mut instants = Vec::new();
        while now + chrono::Duration::from_std(interval).unwrap() <= t {
            now += chrono::Duration::from_std(interval).unwrap();
            instants.push(now);
        }
        instants
    };
    // Up to 12:19:xx: the summary posted once, then updated in place.
    for t in until(&h, start + chrono::Duration::seconds(20 * 60 - 1)) {
        h.clock.set(t);
        controller.step(t).await;
    }
    assert_eq!(summaries(&h), 1);
    // The schedule fires at 12:20 (between two ticks): a new message.
    for t in until(&h, start + chrono::Duration::minutes(20)) {
        h.clock.set(t);
        controller.step(t).await;
    }
    assert_eq!(summaries(&h), 2);
    // Not again until 12:40.
    for t in until(&h, start + chrono::Duration::minutes(39)) {
        h.clock.set(t);
        controller.step(t).await;
    }
    assert_eq!(summaries(&h), 2);
    for t in until(&h, start + chrono::Duration::minutes(40)) {
        h.clock.set(t);
        controller.step(t).await;
    }
    assert_eq!(summaries(&h), 3);
}

#[tokio::test]
async fn a_rollback_by_hand_of_a_watched_canary_opens_the_incident() {
    use crate::controller::{RolloutWatch, WatchState};
    use crate::judge::sim::{Scenario, Simulator};
    let h = harness();
    // An earlier rollback belongs to an earlier rollout: it is not this one's.
    h.engine.execute(rollback("responder", "payments")).await;
    h.sim.start_canary("payments", "v3");
    let svc = h.engine.config.service("payments").unwrap();
    let mut watch = RolloutWatch::new(svc, "v1", "v3");
    let mut sim = Simulator::new(&Scenario::new("good", true), 5);
    for _ in 0..3 {
        watch.tick(&h.engine, &sim.next_tick().unwrap()).await;
    }
    assert_eq!(watch.state, WatchState::Watching);
    h.clock.advance(Duration::from_secs(60));
    let o = h
        .engine
        .execute(rollback("responder", "payments").reason("bad config"))
        .await;
    assert_eq!(o.status, Status::Succeeded, "{}", o.message.plain());
    watch.tick(&h.engine, &sim.next_tick().unwrap()).await;
    assert_eq!(
        watch.state,
        WatchState::Monitoring("rolled back by responder".into())
    );
    h.engine.notifier.settle().await;
    let posted = h.chat.0.lock().unwrap().clone();
    let incident = posted
        .iter()
        .find(|(_, m)| m.title == "Incident: payments v3 — Monitoring")
        .expect("the incident is opened");
    let timeline = &incident
        .1
        .fields
        .iter()
        .find(|f| f.name == "Timeline")
        .unwrap()
        .value;
    assert!(
        timeline.contains(
            "Identified: responder rolled canary v3 of payments back by hand (bad config)"
        ),
        "{timeline}"
    );
}

#[tokio::test]
async fn a_preflight_refusal_is_a_refusal_not_a_failure() {
    let h = harness();
    let to_nowhere = Request::new(
        who("responder"),
        Action::Rollback {
            to: Some("v9".into()),
        },
    )
    .service("payments")
    .reason("test");
    let o = h.engine.execute(to_nowhere).await;
    assert_eq!(o.status, Status::Refused, "{}", o.message.plain());
    assert_eq!(o.refusal, Some(Refusal::Preflight));
    assert_eq!(o.message.title, "Rollback of payments refused");
    assert!(
        o.message.text.contains("revision v9 does not exist")
            && o.message.text.contains("Nothing was changed")
            && !o.message.text.contains("by hand"),
        "{}",
        o.message.text
    );
    assert_eq!(h.sim.count("payments", "rollback"), 0);
    let e = entries(&h, "payments", 2);
    assert_eq!(e[0].record.outcome, AuditOutcome::Refused);
    assert_eq!(e[0].record.parameters["refusal"], "preflight");
    assert_eq!(e[0].record.parameters["failed_at"], "preflight");
    assert_eq!(e[1].record.outcome, AuditOutcome::Requested);

    // A backend that fails at preflight (it cannot be reached) still fails.
    h.sim
        .inject_failure("payments", "preflight", 1, "connection refused");
    let o = h.engine.execute(rollback("responder", "payments")).await;
    assert_eq!(o.status, Status::Failed, "{}", o.message.plain());
    assert_eq!(o.refusal, None);
}

/// What a failing store can leave behind, closed at the next start: an
/// in-flight record whose `requested` entry never became durable never
/// started (dropped, not reported), and a `requested` entry with no record
/// and no result never acted (closed as `failed`, `not_acted`).
#[tokio::test]
async fn recovery_reports_only_what_may_have_acted_and_closes_what_never_did() {
    let dir = tempfile::tempdir().unwrap();
    {
        let h = harness_at(dir.path(), 0);
        let e = &h.engine;
        let orphan = Inflight {
            correlation_id: "never-recorded".into(),
            service: "payments".into(),
            action: "rollback".into(),
            actor: who("responder"),
            started: e.clock.now(),
            channel: Some("deploys".into()),
            idempotency_key: None,
            command: None,
        };
        e.store
            .put(crate::store::Table::Inflight, "never-recorded", &orphan)
            .await
            .unwrap();
        let req = rollback("responder", "payments");
        e.record(
            &req,
            "store-failed",
            Some("payments"),
            BTreeMap::new(),
            AuditOutcome::Requested,
            String::new(),
        )
        .await
        .unwrap();
    }
    let h = harness_at(dir.path(), 0);
    let found = h.engine.recover().await.unwrap();
    assert!(found.is_empty(), "nothing that may have acted: {found:?}");
    let all = h
        .engine
        .audit()
        .query(&crate::audit::Query::default())
        .unwrap();
    assert!(!all
        .iter()
        .any(|e| e.record.outcome == AuditOutcome::Interrupted));
    assert!(!all
        .iter()
        .any(|e| e.record.correlation_id == "never-recorded"));
    let closed = all
        .iter()
        .find(|e| {
            e.record.correlation_id == "store-failed" && e.record.outcome == AuditOutcome::Failed
        })
        .expect("the request without an end is closed");
    assert_eq!(
        closed.record.parameters["not_acted"],
        serde_json::json!(true)
    );
    assert!(
        closed.record.detail.contains("nothing was sent"),
        "{}",
        closed.record.detail
    );
    assert!(h
        .engine
        .store
        .get_raw(crate::store::Table::Inflight, "never-recorded")
        .await
        .unwrap()
        .is_none());
    // Closed once, not at every start.
    h.engine.recover().await.unwrap();
    let again = h
        .engine
        .audit()
        .query(&crate::audit::Query::default())
        .unwrap();
    assert_eq!(again.len(), all.len());
}
