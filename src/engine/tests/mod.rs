//! The engine's promises, tested through `execute` with a real sled store,
//! the simulated backend and a fixed clock.

use super::*;
use crate::audit::Outcome as AuditOutcome;
use crate::backend::simulated::SimulatedBackend;
use crate::chat::{ChatError, ChatSink, MessageRef};
use crate::clock::{Clock, ManualClock};
use crate::domain::Scope;
use crate::domain::{Platform, View};
use chrono::{TimeZone, Utc};
use serde_json::json;
use std::path::Path;
use std::sync::Mutex;

mod automation;
mod cascade;
mod prompts;
mod recovery;
mod steps;
mod store_failure;

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
    harness_on(Arc::new(Store::open(path).unwrap()), latency_ms)
}

/// The engine on a given store (one that fails on purpose, say).
fn harness_on(store: Arc<Store>, latency_ms: u64) -> Harness {
    let config = Config::parse(Path::new("test.toml"), CONFIG).unwrap();
    // A Wednesday, outside the Friday window.
    let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 12, 2, 12, 0, 0).unwrap());
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
    Request::new(
        who(actor),
        Action::Rollback {
            to: None,
            force: false,
        },
    )
    .service(service)
    .reason("test")
}

fn promote(actor: &str, service: &str, force: bool) -> Request {
    Request::new(who(actor), Action::Promote { full: false, force })
        .service(service)
        .reason("test")
}
