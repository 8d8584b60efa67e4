//! Fallbacks of a stuck service: a Kubernetes rollback whose rollout never
//! completes (the fake API server's controller stalls) leaves `web` stuck;
//! its `[[services.fallback]]` entries move an Istio VirtualService's
//! traffic to stable or scale the canary Deployment to zero on the same
//! fake API server. Offered as buttons on the stuck message (pressed once,
//! by the roles that may), tried in order by `auto_fallback`, each at most
//! once per stuck episode.

use crate::support::fake_kube::{seed_history, DeploymentController, FakeKube, Pace};
use crate::support::in_process;
use rollbot::chat::console::ConsoleSink;
use rollbot::domain::{Action, Actor, Platform, View};
use rollbot::engine::{Outcome, Refusal, Request, Status};
use rollbot::runtime::Runtime;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// VirtualService `name` splitting `web` between stable and canary.
fn virtual_service(name: &str, canary: i64) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": name},
        "spec": {
            "hosts": [format!("{name}.prod.svc.cluster.local")],
            "http": [{"name": "primary", "route": [
                {"destination": {"host": "web", "subset": "stable"}, "weight": 100 - canary},
                {"destination": {"host": "web", "subset": "canary"}, "weight": canary}]}],
        },
    })
}

fn canary_weight(fake: &FakeKube, name: &str) -> i64 {
    fake.get("virtualservices", "prod", name).unwrap()["spec"]["http"][0]["route"][1]["weight"]
        .as_i64()
        .unwrap()
}

/// Writes sent to a path ending in `end`.
fn writes_to(fake: &FakeKube, end: &str) -> usize {
    fake.requests()
        .iter()
        .filter(|r| r.method == "PATCH" && r.path.ends_with(end))
        .count()
}

/// The console's output, shared with the test.
#[derive(Clone, Default)]
struct Screen(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Screen {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Screen {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Waits (bounded) until the console shows `what`, `times` times.
    async fn shows(&self, what: &str, times: usize) -> String {
        for _ in 0..250 {
            if self.text().matches(what).count() >= times {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let t = self.text();
        assert!(t.matches(what).count() >= times, "no {what:?}:\n{t}");
        t
    }
}

struct Rig {
    rt: Runtime,
    fake: FakeKube,
    ctl: DeploymentController,
    console: Arc<ConsoleSink>,
    screen: Screen,
    _dir: tempfile::TempDir,
}

/// `web` on a stalling Kubernetes Deployment (revisions 1 and 2), a canary
/// Deployment `web-canary`, VirtualService `web` at 20% canary, and the
/// fallbacks in `fallbacks` (TOML) under the service.
async fn rig(auto: bool, fallbacks: &str) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeKube::standard().await;
    let ctl = DeploymentController::install(&fake, Pace::Immediate);
    seed_history(
        &fake,
        "prod",
        "web",
        3,
        &[
            ("registry.example.com/web:1.0", "deploy 1.0"),
            ("registry.example.com/web:1.1", "deploy 1.1"),
        ],
    );
    let mut canary = crate::support::fake_kube::deployment("web-canary", "web:1.1", 1);
    canary["spec"]["selector"]["matchLabels"]["track"] = json!("canary");
    canary["spec"]["template"]["metadata"]["labels"]["track"] = json!("canary");
    fake.create("deployments", "prod", canary);
    fake.create("virtualservices", "prod", virtual_service("web", 20));
    // Pods of the rollback never start.
    ctl.set_pace(Pace::Stalled);
    fake.clear_requests();
    let token = dir.path().join("kube.token");
    std::fs::write(&token, "kube-token-fallback").unwrap();
    let text = format!(
        r#"
[channels.deploys]
console = "deploys"
[channels.incidents]
console = "incidents"

[backends.k8s]
type = "kubernetes-deployment"
api_server = "{url}"
token_file = "{token}"
namespace = "prod"
request_timeout = "2s"
rollout_timeout = "1s"
poll_interval = "20ms"

[backends.mesh]
type = "istio"
api_server = "{url}"
token_file = "{token}"
namespace = "prod"
request_timeout = "2s"

[[services]]
name = "web"
backend = "k8s"
deploy_channel = "deploys"
incident_channel = "incidents"
escalation = ["slack-group:S0ONCALL1"]
auto_fallback = {auto}
{fallbacks}

[[roles.admin]]
members = ["console:ana"]
[[roles.approver]]
members = ["console:april"]
[[roles.viewer]]
members = ["console:vic"]
"#,
        url = fake.url(),
        token = token.display(),
    );
    let screen = Screen::default();
    let console = Arc::new(ConsoleSink::new(Arc::new(std::sync::Mutex::new(
        screen.clone(),
    ))));
    let rt = in_process::start(dir.path(), &text, vec![console.clone()]).await;
    Rig {
        rt,
        fake,
        ctl,
        console,
        screen,
        _dir: dir,
    }
}

const TRAFFIC: &str = r#"
[[services.fallback]]
name = "traffic to stable"
backend = "mesh"
target = { virtual_service = "web" }
"#;
const EDGE: &str = r#"
[[services.fallback]]
name = "edge to stable"
backend = "mesh"
target = { virtual_service = "web-edge" }
"#;
const CANARY: &str = r#"
[[services.fallback]]
name = "canary to zero"
backend = "k8s"
target = { mechanism = "scale-canary", canary_deployment = "web-canary" }
"#;

fn person(id: &str, name: &str) -> Actor {
    Actor::new(Platform::Console, id, name)
}

impl Rig {
    /// Ana's rollback of `web`, which does not complete: web is stuck.
    async fn get_stuck(&self) {
        let rb = Request::new(
            person("ana", "Ana Admin"),
            Action::Rollback {
                to: None,
                force: false,
            },
        )
        .service("web")
        .reason("errors after deploy");
        let out = self.rt.engine.execute(rb).await;
        assert_eq!(out.status, Status::Failed, "{}", out.message.plain());
        self.screen.shows("web is stuck between versions", 2).await;
    }

    async fn status(&self) -> String {
        let q = Request::new(
            person("vic", "Vic Viewer"),
            Action::Query { view: View::Status },
        )
        .service("web");
        self.rt.engine.execute(q).await.message.plain()
    }

    /// Presses the latest button labelled `label` on the console.
    async fn press(&self, who: Actor, label: &str) -> Outcome {
        let text = self.screen.text();
        let line = text
            .lines()
            .rev()
            .find(|l| l.contains(&format!("] {label}")))
            .unwrap_or_else(|| panic!("no button {label}:\n{text}"));
        let at = line.rfind(&format!("] {label}")).unwrap();
        let n: usize = line[..at].rsplit('[').next().unwrap().parse().unwrap();
        let id = self.console.button(n).unwrap();
        // Each press comes with its platform's own key, as chat sends it.
        let key = format!("console:press:{}:{n}", who.id);
        rollbot::intake::press(&self.rt.engine, who, &id, Some(key)).await
    }

    /// The `fallback` audit entries' results, oldest first: (name, outcome).
    fn fallback_results(&self) -> Vec<(String, String)> {
        let mut v = Vec::new();
        self.rt
            .engine
            .audit()
            .for_each(&mut |e| {
                let r = &e.record;
                let acted = r.parameters.contains_key("backend");
                if r.action == "fallback"
                    && acted
                    && r.outcome != rollbot::audit::Outcome::Requested
                {
                    v.push((
                        r.parameters["fallback"].as_str().unwrap_or("?").to_string(),
                        format!("{:?}", r.outcome).to_lowercase(),
                    ));
                }
                true
            })
            .unwrap();
        v
    }
}

#[tokio::test]
async fn a_fallback_button_moves_traffic_to_stable_once_and_marks_the_stuck_service_mitigated() {
    let r = rig(false, &format!("{TRAFFIC}{CANARY}")).await;
    r.get_stuck().await;
    let said = r.screen.text();
    assert!(
        said.contains("Fallbacks: 1. traffic to stable (backend `mesh`), 2. canary to zero (backend `k8s`). Press one to try it")
            && said.contains("] Try fallback: traffic to stable")
            && said.contains("] Try fallback: canary to zero"),
        "{said}"
    );
    assert!(r.status().await.contains("STUCK between versions"));
    // Nothing is tried by itself.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(writes_to(&r.fake, "/virtualservices/web"), 0);

    // A viewer may not; nothing is sent.
    let out = r
        .press(
            person("vic", "Vic Viewer"),
            "Try fallback: traffic to stable",
        )
        .await;
    assert_eq!(
        out.refusal,
        Some(Refusal::NotAllowed),
        "{}",
        out.message.plain()
    );
    assert!(
        out.message.plain().contains("`try a fallback` permission"),
        "{}",
        out.message.plain()
    );
    assert_eq!(writes_to(&r.fake, "/virtualservices/web"), 0);

    // A dry run of the typed command shows the PATCH and sends nothing.
    let out = rollbot::intake::handle_line(
        &r.rt.engine,
        person("ana", "Ana Admin"),
        "/rollback web fallback \"Traffic to stable\" dry-run",
        None,
    )
    .await;
    let plan = out.message.plain();
    assert!(
        plan.contains("Dry run: fallback of web")
            && plan
                .contains("PATCH /apis/networking.istio.io/v1/namespaces/prod/virtualservices/web"),
        "{plan}"
    );
    assert_eq!(writes_to(&r.fake, "/virtualservices/web"), 0);

    // An approver may: the canary's weight goes to 0, verified.
    let out = r
        .press(
            person("april", "April Approver"),
            "Try fallback: traffic to stable",
        )
        .await;
    assert_eq!(out.status, Status::Succeeded, "{}", out.message.plain());
    assert!(
        out.message
            .plain()
            .contains("Fallback: traffic to stable (backend `mesh`)"),
        "{}",
        out.message.plain()
    );
    assert_eq!(canary_weight(&r.fake, "web"), 0);
    let said = r
        .screen
        .shows(
            "web: fallback `traffic to stable` worked; the rollback is still incomplete",
            2,
        )
        .await;
    assert!(
        said.contains("Still running on backend `k8s`: live 3; rollout in progress")
            && said.contains("/rollback web by Ana Admin did not complete"),
        "{said}"
    );
    let st = r.status().await;
    assert!(
        !st.contains("STUCK")
            && st.contains("MITIGATED by fallback `traffic to stable`")
            && st.contains("`traffic to stable` (verified by April Approver)"),
        "{st}"
    );

    // A second press, by someone else, acts no more.
    let again = r
        .press(
            person("ana", "Ana Admin"),
            "Try fallback: traffic to stable",
        )
        .await;
    assert!(
        again.repeat && again.status == Status::Succeeded,
        "{}",
        again.message.plain()
    );
    assert_eq!(writes_to(&r.fake, "/virtualservices/web"), 1);
    assert_eq!(
        r.fallback_results(),
        [("traffic to stable".to_string(), "succeeded".to_string())]
    );

    // The platform recovers: a verified rollback ends the state, and the
    // buttons of that episode do nothing any more.
    r.ctl.set_pace(Pace::Immediate);
    let rb = Request::new(
        person("ana", "Ana Admin"),
        Action::Rollback {
            to: None,
            force: false,
        },
    )
    .service("web");
    assert_eq!(r.rt.engine.execute(rb).await.status, Status::Succeeded);
    r.screen.shows("web is no longer stuck", 1).await;
    assert!(!r.status().await.contains("MITIGATED"));
    let stale = r
        .press(person("ana", "Ana Admin"), "Try fallback: canary to zero")
        .await;
    assert_eq!(
        stale.refusal,
        Some(Refusal::Expired),
        "{}",
        stale.message.plain()
    );
    assert_eq!(writes_to(&r.fake, "/deployments/web-canary/scale"), 0);
}

#[tokio::test]
async fn auto_fallback_tries_in_order_and_stops_at_the_first_that_verifies() {
    // The first fallback's VirtualService is gone; the second works; the
    // third is never needed.
    let r = rig(true, &format!("{EDGE}{TRAFFIC}{CANARY}")).await;
    r.get_stuck().await;
    let said = r
        .screen
        .shows("web: fallback `traffic to stable` worked", 2)
        .await;
    assert!(
        said.contains("rollbot tries them now, in order, once each (auto_fallback)"),
        "{said}"
    );
    let edge_failed = said
        .find("web: fallback `edge to stable` did not work; still stuck")
        .unwrap_or_else(|| panic!("{said}"));
    assert!(said[edge_failed..].contains("rollbot tries the next one now: `traffic to stable`."));
    assert!(
        edge_failed
            < said
                .find("web: fallback `traffic to stable` worked")
                .unwrap()
    );
    assert_eq!(canary_weight(&r.fake, "web"), 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(writes_to(&r.fake, "/deployments/web-canary/scale"), 0);
    let results = r.fallback_results();
    assert_eq!(results.len(), 2, "{results:?}");
    assert_eq!(results[0].0, "edge to stable");
    assert_ne!(results[0].1, "succeeded");
    assert_eq!(results[1], ("traffic to stable".into(), "succeeded".into()));
    let st = r.status().await;
    assert!(
        st.contains("MITIGATED by fallback `traffic to stable`")
            && st.contains("`edge to stable` (")
            && st.contains("by rollbot controller"),
        "{st}"
    );
}

#[tokio::test]
async fn when_every_fallback_fails_the_service_stays_stuck_with_each_tried_once() {
    let r = rig(true, &format!("{EDGE}{TRAFFIC}")).await;
    // Every write of VirtualService web conflicts.
    r.fake.fail_next_writes("virtualservices", "web", 1_000);
    r.get_stuck().await;
    let said = r
        .screen
        .shows(
            "Every fallback of web was tried; rollbot tries nothing more by itself",
            2,
        )
        .await;
    assert!(
        said.contains("web: fallback `edge to stable` did not work; still stuck")
            && said.contains("web: fallback `traffic to stable` did not work; still stuck"),
        "{said}"
    );
    // No loop: a while later, still one try each.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let results = r.fallback_results();
    assert_eq!(
        results.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["edge to stable", "traffic to stable"]
    );
    assert!(results.iter().all(|(_, o)| o != "succeeded"), "{results:?}");
    let writes = writes_to(&r.fake, "/virtualservices/web");
    // Pressing a tried fallback's button gets its first outcome.
    let again = r
        .press(
            person("ana", "Ana Admin"),
            "Try fallback: traffic to stable",
        )
        .await;
    assert!(again.repeat, "{}", again.message.plain());
    assert_eq!(writes_to(&r.fake, "/virtualservices/web"), writes);
    let st = r.status().await;
    assert!(
        st.contains("STUCK between versions")
            && st.contains("fallbacks tried: `edge to stable` (")
            && st.contains("`traffic to stable` (failed by rollbot controller)"),
        "{st}"
    );
}

#[tokio::test]
async fn check_config_locates_a_fallbacks_unknown_backend_and_missing_target_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rollbot.toml");
    std::fs::write(&path, CHECKED).unwrap();
    let o = crate::support::rollbot(&["check-config", path.to_str().unwrap()]);
    let t = crate::support::text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains("rollbot.toml:15:11: service `web` fallback `traffic to stable` names backend `mehs`, which is not defined")
            && t.contains("did you mean `mesh`?"),
        "{t}"
    );
    assert!(
        t.contains("rollbot.toml:19:11: service `web` fallback `canary to zero`: mechanism `scale-canary` needs canary_deployment"),
        "{t}"
    );
    assert!(t.contains("2 errors in the configuration"), "{t}");
}

const CHECKED: &str = r#"[backends.k8s]
type = "kubernetes-deployment"
namespace = "prod"

[backends.mesh]
type = "istio"
namespace = "prod"

[[services]]
name = "web"
backend = "k8s"

[[services.fallback]]
name = "traffic to stable"
backend = "mehs"
target = { virtual_service = "web" }
[[services.fallback]]
name = "canary to zero"
backend = "k8s"
target = { mechanism = "scale-canary" }
"#;
