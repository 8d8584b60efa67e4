//! rollbot in-process with one service `web` on a backend that talks to the
//! fake Kubernetes API server ([`super::fake_kube`]), and what the
//! end-to-end tests of those backends do with it: run an action as an
//! admin, find its audit entry, read what was posted in chat.

use super::api::Api;
use super::fake_kube::FakeKube;
use super::in_process;
use rollbot::audit::Entry;
use rollbot::chat::{ChatError, ChatSink, Message, MessageRef};
use rollbot::config_file::Config;
use rollbot::domain::{Action, Actor, Platform};
use rollbot::engine::{Outcome, Request};
use rollbot::runtime::Runtime;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Remembers what was posted in chat.
#[derive(Default)]
pub struct Chat(pub Mutex<Vec<String>>);

#[async_trait::async_trait]
impl ChatSink for Chat {
    fn platform(&self) -> Platform {
        Platform::Console
    }
    async fn post(&self, channel: &str, msg: &Message) -> Result<MessageRef, ChatError> {
        let mut v = self.0.lock().unwrap();
        v.push(msg.plain());
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
    async fn update(&self, _at: &MessageRef, msg: &Message) -> Result<(), ChatError> {
        self.0.lock().unwrap().push(msg.plain());
        Ok(())
    }
    async fn ephemeral(&self, channel: &str, _u: &Actor, msg: &Message) -> Result<(), ChatError> {
        self.post(channel, msg).await.map(|_| ())
    }
}

/// What differs between the backends: the `[backends.<table>]` name, its
/// `type`, and the bearer token written to its `token_file`.
pub struct Backend {
    pub table: &'static str,
    pub kind: &'static str,
    pub token: &'static str,
}

/// The backend keys of the backends that wait for a rollout: how long, and
/// how often they look.
pub fn rollout_keys(rollout_timeout: &str) -> String {
    format!("rollout_timeout = \"{rollout_timeout}\"\npoll_interval = \"20ms\"\n")
}

pub struct Bot {
    pub rt: Runtime,
    pub chat: Arc<Chat>,
}

impl Backend {
    /// rollbot with one service `web` on this backend pointing at `fake`
    /// in namespace `prod`; `keys` are further lines of the backend's
    /// table (each ending in a newline), `target` is the body of
    /// `[services.target]`.
    pub async fn start(&self, dir: &Path, fake: &FakeKube, keys: &str, target: &str) -> Bot {
        let token = dir.join("kube.token");
        std::fs::write(&token, format!("{}\n", self.token)).unwrap();
        let text = format!(
            r#"
[engine]
backend_timeout = "20s"

[channels.deploys]
console = "deploys"

[backends.{table}]
type = "{kind}"
api_server = "{url}"
token_file = "{token}"
namespace = "prod"
request_timeout = "2s"
{keys}
[[services]]
name = "web"
environment = "prod"
backend = "{table}"
deploy_channel = "deploys"
[services.target]
{target}

[[roles.admin]]
members = ["console:ana"]
"#,
            table = self.table,
            kind = self.kind,
            url = fake.url(),
            token = token.display(),
        );
        let chat = Arc::new(Chat::default());
        let rt = in_process::start(dir, &text, vec![chat.clone() as Arc<dyn ChatSink>]).await;
        Bot { rt, chat }
    }
}

impl Bot {
    /// `action` on `web`, asked by the admin Ana.
    pub async fn run(&self, action: Action) -> Outcome {
        self.rt
            .engine
            .execute(
                Request::new(Actor::new(Platform::Console, "ana", "Ana Admin"), action)
                    .service("web")
                    .reason("errors after deploy"),
            )
            .await
    }

    pub async fn rollback(&self, to: Option<&str>) -> Outcome {
        self.run(Action::Rollback {
            to: to.map(str::to_string),
            force: false,
        })
        .await
    }

    pub async fn promote(&self, full: bool) -> Outcome {
        self.run(Action::Promote { full, force: false }).await
    }

    /// The final audit entry of an action.
    pub fn result_entry(&self, corr: &str) -> Entry {
        in_process::result_entry(&self.rt, corr)
    }

    /// Chat lines so far, waiting a little for detached posts.
    pub async fn chat_lines(&self, containing: &str) -> Vec<String> {
        for _ in 0..100 {
            if self
                .chat
                .0
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains(containing))
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        self.chat.0.lock().unwrap().clone()
    }
}

/// The API client `ci`'s token in [`Backend::serve`].
pub const API_TOKEN: &str = "api-token-1";

impl Backend {
    /// `rollbot serve` with one service `web` on this backend pointing at
    /// `fake` in namespace `prod`, its token from the environment, and an
    /// API client `ci` with the responder role; `keys` are further lines of
    /// the backend's table.
    pub fn serve(&self, dir: &Path, fake: &FakeKube, keys: &str) -> super::Server {
        let config = format!(
            r#"
[server]
listen = "127.0.0.1:{{port}}"

[store]
path = "{{data}}"

[backends.{table}]
type = "{kind}"
api_server = "{url}"
token = "${{ROLLBOT_TEST_KUBE_TOKEN}}"
namespace = "prod"
{keys}
[[services]]
name = "web"
backend = "{table}"

[[roles.responder]]
members = ["api:ci"]

[[api.clients]]
name = "ci"
token = "${{ROLLBOT_TEST_API_TOKEN}}"
"#,
            table = self.table,
            kind = self.kind,
            url = fake.url(),
        );
        super::Server::start(
            dir,
            &config,
            &[
                ("ROLLBOT_TEST_KUBE_TOKEN", self.token),
                ("ROLLBOT_TEST_API_TOKEN", API_TOKEN),
            ],
        )
    }
}

/// `command` through `POST /api/v1/actions` as the API client `ci`:
/// the status code and the outcome.
pub async fn api_action(
    server: &super::Server,
    command: &str,
    key: &str,
) -> (u16, serde_json::Value) {
    Api::new(server, API_TOKEN).action(command, Some(key)).await
}

impl Backend {
    /// Stops `server` and returns the JSON text of the succeeded audit
    /// entry whose request lines name `content_type` (`json-patch`,
    /// `merge-patch`); the backend's token is neither in rollbot's log nor
    /// in the exported audit log.
    pub fn stop_and_export(&self, server: super::Server, dir: &Path, content_type: &str) -> String {
        let log = server.log_text();
        assert!(server.terminate().success());
        assert!(!log.contains(self.token), "the token is not logged");
        let entries = super::audit_export(&dir.join("data"));
        let export: String = entries.iter().map(|e| format!("{e}\n")).collect();
        assert!(!export.contains(self.token));
        entries
            .iter()
            .map(|e| e.to_string())
            .find(|e| e.contains("succeeded") && e.contains(content_type))
            .unwrap_or_else(|| panic!("no result entry with the patch in {export}"))
    }

    /// What `Config::parse` says of one service `web` on this backend with
    /// `keys` in its table and `target` as its `[services.target]`; `""`
    /// when it parses.
    pub fn config_problems(&self, keys: &str, target: &str) -> String {
        let text = format!(
            r#"
[engine]
backend_timeout = "60s"

[backends.{table}]
type = "{kind}"
{keys}

[[services]]
name = "web"
environment = "prod"
backend = "{table}"
[services.target]
{target}
"#,
            table = self.table,
            kind = self.kind,
        );
        match Config::parse(Path::new("rollbot.toml"), &text) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    /// The mistakes in the connection keys every Kubernetes backend shares
    /// are reported: a token written in the config, an API server that is
    /// not a URL.
    pub fn assert_connection_mistakes(&self) {
        let e = self.config_problems("token = \"eyJhbGciOi.secret\"", "");
        assert!(e.contains("never written in the config"), "{e}");
        let e = self.config_problems("api_server = \"10.0.0.1:6443\"", "");
        assert!(e.contains("not an http:// or https:// URL"), "{e}");
    }
}
