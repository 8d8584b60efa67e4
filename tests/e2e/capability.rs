//! Rollback capability checked before it is needed: a rollout of a
//! Kubernetes Deployment or an Argo Rollout (the fake API server) whose
//! rollback target's image lives in a real registry (Debian's
//! docker-registry), driven by the controller on a manual clock.

use crate::support::fake_argo::{seed_rollout, ArgoController, HASH_LABEL};
use crate::support::fake_kube::{seed_history, DeploymentController, FakeKube, Pace};
use crate::support::registry::{url_param, Registry};
use rollbot::audit::Outcome;
use rollbot::chat::{ChatError, ChatSink, Message, MessageRef};
use rollbot::clock::ManualClock;
use rollbot::config_file::Config;
use rollbot::controller::Rollout;
use rollbot::domain::{Action, Actor, Platform, View};
use rollbot::engine::{Request, Status};
use rollbot::registry::{ImageState, RegistryClient, RegistryConfig, RegistryCredential};
use rollbot::runtime::Runtime;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One chat line: the message it replies to (`None` for a new message),
/// its own id and its text.
#[derive(Clone, Debug)]
struct Line {
    parent: Option<String>,
    id: String,
    text: String,
}

#[derive(Default)]
struct Chat(Mutex<Vec<Line>>);

impl Chat {
    fn push(&self, parent: Option<String>, msg: &Message) -> MessageRef {
        let mut v = self.0.lock().unwrap();
        let id = (v.len() + 1).to_string();
        v.push(Line {
            parent,
            id: id.clone(),
            text: msg.plain(),
        });
        MessageRef {
            platform: Platform::Console,
            channel: "deploys".into(),
            id,
            thread: None,
        }
    }
}

#[async_trait::async_trait]
impl ChatSink for Chat {
    fn platform(&self) -> Platform {
        Platform::Console
    }
    async fn post(&self, _channel: &str, msg: &Message) -> Result<MessageRef, ChatError> {
        Ok(self.push(None, msg))
    }
    async fn reply(&self, t: &MessageRef, msg: &Message) -> Result<MessageRef, ChatError> {
        Ok(self.push(Some(t.id.clone()), msg))
    }
    async fn update(&self, _at: &MessageRef, _msg: &Message) -> Result<(), ChatError> {
        Ok(())
    }
    async fn ephemeral(&self, _c: &str, _u: &Actor, msg: &Message) -> Result<(), ChatError> {
        self.push(None, msg);
        Ok(())
    }
}

const TOKEN: &str = "kube-token-cap";

/// The Deployment `web` at revisions 1–3 running `shop/web:v1..v3` from
/// `registry`; a rollback goes to revision 2 (`v2`).
async fn cluster(host: &str) -> FakeKube {
    let fake = FakeKube::standard().await;
    let _ctl = DeploymentController::install(&fake, Pace::Immediate);
    let images: Vec<(String, String)> = (1..=3)
        .map(|v| (format!("{host}/shop/web:v{v}"), format!("deploy v{v}")))
        .collect();
    let refs: Vec<(&str, &str)> = images
        .iter()
        .map(|(i, c)| (i.as_str(), c.as_str()))
        .collect();
    seed_history(&fake, "prod", "web", 2, &refs);
    fake
}

struct Bot {
    rt: Runtime,
    chat: Arc<Chat>,
    clock: ManualClock,
    at: chrono::DateTime<chrono::Utc>,
}

/// rollbot watching a healthy canary of `web` (simulated metrics,
/// `auto_promote`), with `registry` as the body of `[registry]`.
async fn start(dir: &Path, fake: &FakeKube, registry: &str) -> Bot {
    start_with(dir, fake, registry, "").await
}

/// What the service `web` runs on: the `type` of its backend, further
/// keys of the backend's table, and the body of `[services.target]`.
struct On {
    kind: &'static str,
    keys: &'static str,
    target: &'static str,
}

const DEPLOYMENT: On = On {
    kind: "kubernetes-deployment",
    keys: "",
    target: "deployment = \"web\"",
};

/// The Rollout `web`, rolled back by an abort (to its stable ReplicaSet).
const ROLLOUT: On = On {
    kind: "argo-rollouts",
    keys: "rollout_timeout = \"10s\"\npoll_interval = \"20ms\"",
    target: "rollout = \"web\"",
};

/// The Rollout `web`, rolled back by an undo (to the previous revision).
const ROLLOUT_UNDO: On = On {
    target: "rollout = \"web\"\nmechanism = \"undo\"",
    ..ROLLOUT
};

/// [`start`] with `engine` as the body of `[engine]`.
async fn start_with(dir: &Path, fake: &FakeKube, registry: &str, engine: &str) -> Bot {
    start_on(dir, fake, registry, engine, &DEPLOYMENT).await
}

/// [`start_with`] for `web` running on `on`.
async fn start_on(dir: &Path, fake: &FakeKube, registry: &str, engine: &str, on: &On) -> Bot {
    let token = dir.join("kube.token");
    std::fs::write(&token, TOKEN).unwrap();
    let text = format!(
        r#"
[metrics]
source = "simulated"
interval = "10s"
scenarios = {{ web = "good: identical, 1% errors" }}

[controller]
capability_check_interval = "5m"

[engine]
{engine}

[registry]
{registry}

[channels.deploys]
console = "deploys"

[backends.k8s]
type = "{kind}"
api_server = "{url}"
token_file = "{token}"
namespace = "prod"
request_timeout = "2s"
{keys}

[[services]]
name = "web"
backend = "k8s"
deploy_channel = "deploys"
auto_promote = true
step_interval = "1m"
[services.target]
{target}

[[roles.admin]]
members = ["console:ana"]
"#,
        url = fake.url(),
        token = token.display(),
        kind = on.kind,
        keys = on.keys,
        target = on.target,
    );
    let path = dir.join("rollbot.toml");
    std::fs::write(&path, &text).unwrap();
    let config = Config::parse(&path, &text).unwrap_or_else(|e| panic!("{e}"));
    let begin = chrono::Utc::now() - chrono::Duration::hours(1);
    let clock = ManualClock::new(begin);
    let chat = Arc::new(Chat::default());
    let rt = rollbot::runtime::start(
        config,
        &dir.join("data"),
        vec![chat.clone() as Arc<dyn ChatSink>],
        Arc::new(clock.clone()),
    )
    .await
    .unwrap();
    rt.controller
        .as_ref()
        .unwrap()
        .announce(Rollout::watching(
            "r-web".into(),
            "web",
            ("v2".into(), "v3".into()),
            begin,
            "api:ci",
        ))
        .await
        .unwrap();
    Bot {
        rt,
        chat,
        clock,
        at: begin,
    }
}

fn ana() -> Actor {
    Actor::new(Platform::Console, "ana", "Ana Admin")
}

impl Bot {
    /// Moves the clock `ticks` intervals on, one controller step each,
    /// giving the checks running in the background time to answer.
    async fn run(&mut self, ticks: usize) {
        let c = self.rt.controller.clone().unwrap();
        for _ in 0..ticks {
            self.at += chrono::Duration::seconds(10);
            self.clock.set(self.at);
            c.step(self.at).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Runs ticks until a chat line contains `what` (at most `limit`),
    /// looking once more after the last tick.
    async fn run_until(&mut self, what: &str, limit: usize) -> Line {
        for _ in 0..limit {
            if let Some(l) = self.line(what) {
                return l;
            }
            self.run(1).await;
        }
        if let Some(l) = self.line(what) {
            return l;
        }
        panic!("no chat line with {what:?} in:\n{:#?}", self.lines());
    }

    fn lines(&self) -> Vec<Line> {
        self.chat.0.lock().unwrap().clone()
    }

    fn line(&self, what: &str) -> Option<Line> {
        self.lines().into_iter().find(|l| l.text.contains(what))
    }

    /// The summary of the rollout: the first message of the thread.
    fn summary_id(&self) -> String {
        self.line("Canary web v3").expect("a summary").id
    }

    async fn status(&self) -> String {
        let o = self
            .rt
            .engine
            .execute(Request::new(ana(), Action::Query { view: View::Status }).service("web"))
            .await;
        assert_eq!(o.status, Status::Succeeded, "{}", o.message.plain());
        o.message.plain()
    }

    /// Runs ticks until the controller asks for a promotion (the judge
    /// recommends one after warm-up and `promote_after`, about 15 minutes).
    async fn run_until_promoted(&mut self, limit: usize) {
        for _ in 0..limit {
            if self.controller_promotions() > 0 {
                return;
            }
            self.run(1).await;
        }
        panic!("never promoted:\n{:#?}", self.lines());
    }

    /// The latest stored finding of the rollback capability check of
    /// `web`, as `/status` reads it (`null` before the first).
    async fn finding(&self) -> serde_json::Value {
        self.rt
            .engine
            .store
            .get::<serde_json::Value>(rollbot::store::Table::Settings, "capability:web")
            .await
            .unwrap()
            .map(|r| r["finding"].clone())
            .unwrap_or_default()
    }

    /// Promotions the controller asked for.
    fn controller_promotions(&self) -> usize {
        let mut n = 0;
        self.rt
            .engine
            .audit()
            .for_each(&mut |e| {
                if e.record.action == "promote"
                    && e.record.actor.qualified_id() == "system:controller"
                    && e.record.outcome != Outcome::Noted
                {
                    n += 1;
                }
                true
            })
            .unwrap();
        n
    }
}

#[tokio::test]
async fn an_image_still_in_its_registry_gives_no_warning_and_promotion_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    // Credentials from a docker config file's `auths`, as `docker login` writes them.
    let registry = Registry::with_htpasswd(dir.path(), "puller", "s3cret-pull");
    for v in 1..=3 {
        registry.push("shop/web", &format!("v{v}")).await;
    }
    let auths = dir.path().join("docker-config.json");
    let auth = base64_of("puller:s3cret-pull");
    std::fs::write(
        &auths,
        format!(
            r#"{{"auths": {{"{}": {{"auth": "{auth}"}}}}}}"#,
            registry.host()
        ),
    )
    .unwrap();
    let fake = cluster(&registry.host()).await;
    let mut bot = start(
        dir.path(),
        &fake,
        &format!("docker_config = \"{}\"", auths.display()),
    )
    .await;
    // Healthy and nothing missing: promoted.
    bot.run_until_promoted(200).await;
    for l in bot.lines() {
        assert!(
            !l.text.contains("Rollback of web") && !l.text.contains("held"),
            "no warning: {l:?}"
        );
    }
    assert!(!bot.status().await.contains("rollback"));
}

fn base64_of(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test]
async fn an_image_gone_from_the_registry_is_said_in_the_thread_and_status_and_holds_promotion_until_acknowledged(
) {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(dir.path());
    let mut digests = Vec::new();
    for v in 1..=3 {
        digests.push(registry.push("shop/web", &format!("v{v}")).await);
    }
    // Garbage collection took revision 2's image.
    registry.delete("shop/web", &digests[1]).await;
    assert_eq!(registry.head("shop/web", "v2").await, 404);
    let fake = cluster(&registry.host()).await;
    let mut bot = start(dir.path(), &fake, "").await;

    let gone = format!(
        "rollback to revision 2 is not possible: image {} is gone from the registry",
        registry.image("shop/web", "v2")
    );
    let warning = bot.run_until(&gone, 5).await;
    assert_eq!(
        warning.parent.as_deref(),
        Some(bot.summary_id().as_str()),
        "in the summary's thread: {warning:?}"
    );
    let prompt = bot.run_until("Acknowledge", 2).await;
    assert_eq!(prompt.parent.as_deref(), Some(bot.summary_id().as_str()));
    let status = bot.status().await;
    assert!(status.contains(&gone), "{status}");
    assert!(status.contains("automatic promotion held"), "{status}");

    // Healthy for many steps: never promoted while nobody acknowledged.
    bot.run_until("Automatic promotion of web is held", 200)
        .await;
    bot.run(20).await;
    assert_eq!(bot.controller_promotions(), 0, "{:#?}", bot.lines());

    let open = bot.rt.engine.prompts.open(bot.at).await.unwrap();
    let ack = open
        .iter()
        .find(|p| p.title.contains("cannot be rolled back"))
        .expect("the acknowledge prompt");
    let o = bot
        .rt
        .engine
        .execute(
            Request::new(
                ana(),
                Action::Approve {
                    prompt: ack.id.clone(),
                },
            )
            .service("web"),
        )
        .await;
    assert_eq!(o.status, Status::Succeeded, "{}", o.message.plain());
    bot.run_until("Ana Admin acknowledged that web cannot be rolled back", 3)
        .await;
    let status = bot.status().await;
    assert!(status.contains("acknowledged by Ana Admin"), "{status}");
    assert!(!status.contains("automatic promotion held"), "{status}");
    // Acknowledged: promotion goes on.
    bot.run_until_promoted(60).await;
}

#[tokio::test]
async fn an_acknowledge_prompt_that_expired_unanswered_is_asked_again_at_the_next_check() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(dir.path());
    // v2, the rollback target, was never pushed.
    registry.push("shop/web", "v1").await;
    registry.push("shop/web", "v3").await;
    let fake = cluster(&registry.host()).await;
    let mut bot = start_with(dir.path(), &fake, "", "prompt_ttl = \"2m\"").await;
    bot.run_until("Acknowledge: web cannot be rolled back", 5)
        .await;
    let asked = |bot: &Bot| {
        bot.lines()
            .iter()
            .filter(|l| l.text.starts_with("Acknowledge: web cannot be rolled back"))
            .count()
    };
    // The prompt expires after 2 minutes; nothing new until the next
    // check, 5 minutes after the first, asks again.
    bot.run(20).await;
    assert_eq!(asked(&bot), 1, "{:#?}", bot.lines());
    for _ in 0..15 {
        if asked(&bot) == 2 {
            break;
        }
        bot.run(1).await;
    }
    assert_eq!(asked(&bot), 2, "{:#?}", bot.lines());
    let open = bot.rt.engine.prompts.open(bot.at).await.unwrap();
    assert_eq!(open.len(), 1, "one open prompt to answer");
}

#[tokio::test]
async fn a_deployment_without_revision_history_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(dir.path());
    for v in 1..=3 {
        registry.push("shop/web", &format!("v{v}")).await;
    }
    let fake = cluster(&registry.host()).await;
    // The Deployment controller deletes every old ReplicaSet.
    fake.merge_patch(
        "deployments",
        "prod",
        "web",
        serde_json::json!({"spec": {"revisionHistoryLimit": 0}}),
    );
    assert_eq!(fake.list("replicasets", "prod").len(), 1);
    let mut bot = start(dir.path(), &fake, "").await;
    let warning = bot
        .run_until(
            "keeps no old ReplicaSets (spec.revisionHistoryLimit is 0)",
            5,
        )
        .await;
    assert!(
        warning.text.contains("Rollback of web is not possible"),
        "{warning:?}"
    );
    assert!(bot.status().await.contains("revisionHistoryLimit is 0"));
}

#[tokio::test]
async fn an_unreachable_registry_or_wrong_credentials_are_said_clearly_and_block_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on this port.
    let nowhere = format!("127.0.0.1:{}", crate::support::free_port());
    let fake = cluster(&nowhere).await;
    let mut bot = start(dir.path(), &fake, "").await;
    let line = bot
        .run_until(&format!("registry {nowhere} could not be reached"), 5)
        .await;
    assert!(
        line.text.contains("The rollout goes on; nothing is held"),
        "{line:?}"
    );
    bot.run_until_promoted(200).await;
    assert!(bot.line("Acknowledge").is_none());
    drop(bot);

    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::with_htpasswd(dir.path(), "puller", "right-password");
    for v in 1..=3 {
        registry.push("shop/web", &format!("v{v}")).await;
    }
    let secret = dir.path().join("registry.password");
    std::fs::write(&secret, "wrong-password\n").unwrap();
    let fake = cluster(&registry.host()).await;
    let keys = format!(
        "[registry.credentials.\"{}\"]\nusername = \"puller\"\npassword_file = \"{}\"",
        registry.host(),
        secret.display()
    );
    let mut bot = start(dir.path(), &fake, &keys).await;
    // bcrypt makes the registry slow to answer on a busy machine; the
    // next check is 30 ticks away, so this is still the first one.
    let line = bot.run_until("refused the credentials", 20).await;
    assert!(line.text.contains("(user puller) (401)"), "{line:?}");
    assert!(!line.text.contains("wrong-password"), "{line:?}");
    assert!(bot.status().await.contains("refused the credentials"));
    bot.run_until_promoted(200).await;
}

#[test]
fn check_config_names_the_line_of_a_bad_interval_and_a_password_in_the_file() {
    let e = Config::parse(
        Path::new("rollbot.toml"),
        "[controller]\ncapability_check_interval = \"often\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("rollbot.toml:2:"), "{e}");
    assert!(e.contains("not a duration"), "{e}");
    let e = Config::parse(
        Path::new("rollbot.toml"),
        "[registry.credentials.\"r.example.com\"]\nusername = \"u\"\npassword = \"hunter2\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("rollbot.toml:3:"), "{e}");
    assert!(e.contains("never written in the config"), "{e}");
    let e = Config::parse(
        Path::new("rollbot.toml"),
        "[backends.sim]\ntype = \"simulated\"\n[[services]]\nname = \"web\"\nbackend = \"sim\"\ncapability_check_interval = \"0s\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("rollbot.toml:6:"), "{e}");
}

/// rollbot's registry client with `password` (from a file) for `puller`
/// on `registry`, or no credentials.
fn client(dir: &Path, registry: &Registry, password: Option<&str>) -> RegistryClient {
    let mut config = RegistryConfig::default();
    if let Some(p) = password {
        let file = dir.join(format!("password-{p}"));
        std::fs::write(&file, p).unwrap();
        config.credentials.insert(
            registry.host(),
            RegistryCredential {
                username: "puller".into(),
                password: None,
                password_file: Some(file),
            },
        );
    }
    RegistryClient::new(&config)
}

#[tokio::test]
async fn the_registry_token_flow_is_followed_and_its_refusals_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::with_token_auth(dir.path(), "puller", "token-pass").await;
    let v1 = registry.push("shop/web", "v1").await;
    registry.push("shop/web", "v2").await;
    registry.delete("shop/web", &v1).await;
    let (v1, v2) = (
        registry.image("shop/web", "v1"),
        registry.image("shop/web", "v2"),
    );

    let right = client(dir.path(), &registry, Some("token-pass"));
    assert_eq!(right.check(&v2).await, ImageState::Present);
    match right.check(&v1).await {
        ImageState::Gone(why) => assert!(why.contains("answered 404"), "{why}"),
        other => panic!("{other:?}"),
    }
    let tokens = registry.tokens.as_ref().unwrap();
    let asked = tokens.asked.lock().unwrap().clone();
    let (query, granted) = &asked[0];
    assert!(granted, "{asked:?}");
    assert_eq!(
        url_param(query, "scope").as_deref(),
        Some("repository:shop/web:pull")
    );
    assert_eq!(
        url_param(query, "service").as_deref(),
        Some("rollbot-test-registry")
    );

    let wrong = client(dir.path(), &registry, Some("guess"));
    match wrong.check(&v2).await {
        ImageState::Unknown(why) => {
            assert!(
                why.contains(&format!(
                    "the token service {} refused the credentials",
                    tokens.realm()
                )) && why.contains("(user puller) (401)"),
                "{why}"
            );
            assert!(!why.contains("guess"), "{why}");
        }
        other => panic!("{other:?}"),
    }
    match client(dir.path(), &registry, None).check(&v2).await {
        ImageState::Unknown(why) => assert!(
            why.contains("needs credentials (401) and none are configured"),
            "{why}"
        ),
        other => panic!("{other:?}"),
    }
}

/// The Rollout `web` at revisions 1–3 running `shop/web:v1..v3` from
/// `registry`: v1 and v2 promoted, v3 a canary paused at its first step;
/// an abort goes back to the stable revision 2 (`v2`).
async fn argo_cluster(host: &str) -> FakeKube {
    let fake = FakeKube::standard().await;
    let _ctl = ArgoController::install(&fake, 0);
    let images: Vec<String> = (1..=3).map(|v| format!("{host}/shop/web:v{v}")).collect();
    let refs: Vec<&str> = images.iter().map(String::as_str).collect();
    let ro = seed_rollout(&fake, "prod", "web", &refs);
    assert_ne!(ro["status"]["stableRS"], ro["status"]["currentPodHash"]);
    fake
}

#[tokio::test]
async fn a_rollouts_stable_image_still_in_its_registry_gives_no_warning_and_promotion_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(dir.path());
    for v in 1..=3 {
        registry.push("shop/web", &format!("v{v}")).await;
    }
    let fake = argo_cluster(&registry.host()).await;
    let mut bot = start_on(dir.path(), &fake, "", "", &ROLLOUT).await;
    // The check found the stable revision and its image in the registry.
    let mut finding = serde_json::Value::Null;
    for _ in 0..5 {
        bot.run(1).await;
        finding = bot.finding().await;
        if !finding.is_null() {
            break;
        }
    }
    assert_eq!(
        finding,
        serde_json::json!({"kind": "possible", "revision": "2", "images": [registry.image("shop/web", "v2")]})
    );
    bot.run_until_promoted(200).await;
    for l in bot.lines() {
        assert!(
            !l.text.contains("not possible")
                && !l.text.contains("held")
                && !l.text.contains("not checked"),
            "no warning: {l:?}"
        );
    }
    assert!(!bot.status().await.contains("rollback"));
}

#[tokio::test]
async fn a_rollouts_stable_image_gone_from_the_registry_is_said_in_the_thread_and_status_and_holds_promotion_until_acknowledged(
) {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(dir.path());
    let mut digests = Vec::new();
    for v in 1..=3 {
        digests.push(registry.push("shop/web", &format!("v{v}")).await);
    }
    // Garbage collection took the stable revision's image.
    registry.delete("shop/web", &digests[1]).await;
    let fake = argo_cluster(&registry.host()).await;
    let mut bot = start_on(dir.path(), &fake, "", "", &ROLLOUT).await;

    let gone = format!(
        "rollback to revision 2 is not possible: image {} is gone from the registry",
        registry.image("shop/web", "v2")
    );
    let warning = bot.run_until(&gone, 5).await;
    assert_eq!(
        warning.parent.as_deref(),
        Some(bot.summary_id().as_str()),
        "in the summary's thread: {warning:?}"
    );
    let status = bot.status().await;
    assert!(status.contains(&gone), "{status}");
    assert!(status.contains("automatic promotion held"), "{status}");
    bot.run_until("Automatic promotion of web is held", 200)
        .await;
    bot.run(20).await;
    assert_eq!(bot.controller_promotions(), 0, "{:#?}", bot.lines());
    assert_eq!(
        fake.get("rollouts", "prod", "web").unwrap()["status"]["currentStepIndex"],
        1,
        "the canary stays at its first step"
    );

    let open = bot.rt.engine.prompts.open(bot.at).await.unwrap();
    let ack = open
        .iter()
        .find(|p| p.title.contains("cannot be rolled back"))
        .expect("the acknowledge prompt");
    let o = bot
        .rt
        .engine
        .execute(
            Request::new(
                ana(),
                Action::Approve {
                    prompt: ack.id.clone(),
                },
            )
            .service("web"),
        )
        .await;
    assert_eq!(o.status, Status::Succeeded, "{}", o.message.plain());
    bot.run_until_promoted(60).await;
}

#[tokio::test]
async fn a_rollout_whose_stable_replica_set_is_gone_or_that_keeps_no_history_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(dir.path());
    for v in 1..=3 {
        registry.push("shop/web", &format!("v{v}")).await;
    }
    // Someone deleted the stable ReplicaSet by hand.
    let fake = argo_cluster(&registry.host()).await;
    let ro = fake.get("rollouts", "prod", "web").unwrap();
    let stable = ro["status"]["stableRS"].as_str().unwrap().to_string();
    let rs = fake
        .list("replicasets", "prod")
        .into_iter()
        .find(|rs| rs["metadata"]["labels"][HASH_LABEL] == stable.as_str())
        .unwrap();
    fake.with_store(|s| {
        s.delete(
            "replicasets",
            "prod",
            rs["metadata"]["name"].as_str().unwrap(),
        )
    });
    let mut bot = start_on(dir.path(), &fake, "", "", &ROLLOUT).await;
    let warning = bot
        .run_until(
            &format!(
                "the stable ReplicaSet of Rollout prod/web (pod-template-hash {stable}) is gone"
            ),
            5,
        )
        .await;
    assert!(
        warning.text.contains("Rollback of web is not possible")
            && warning.text.contains("revisions that exist: 1, 3"),
        "{warning:?}"
    );
    assert!(bot.status().await.contains("is gone"));
    drop(bot);

    // Undone rather than aborted, fully promoted, and no history kept:
    // the controller deleted every older ReplicaSet.
    let dir = tempfile::tempdir().unwrap();
    let fake = argo_cluster(&registry.host()).await;
    fake.merge_patch(
        "rollouts",
        "prod",
        "web",
        serde_json::json!({"spec": {"revisionHistoryLimit": 0}, "status": {"promoteFull": true}}),
    );
    assert_eq!(fake.list("replicasets", "prod").len(), 1);
    let mut bot = start_on(dir.path(), &fake, "", "", &ROLLOUT_UNDO).await;
    let warning = bot
        .run_until(
            "Rollout prod/web keeps no old ReplicaSets (spec.revisionHistoryLimit is 0)",
            5,
        )
        .await;
    assert!(
        warning.text.contains("Rollback of web is not possible"),
        "{warning:?}"
    );
    assert!(bot.status().await.contains("revisionHistoryLimit is 0"));
}
