//! `rollbot serve` against the fake Slack ([`super::fake_slack`]): slash
//! commands and button presses signed the way Slack signs them, and the
//! audit log read back once the server has stopped.

use super::api::Api;
use super::audit::{self, Row};
use super::fake_slack::{self, FakeSlack, Posted};
use super::Server;
use serde_json::Value;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub struct SlackRig {
    pub fake: FakeSlack,
    pub server: Server,
    /// Calls rollbot with a 10 s timeout.
    pub http: reqwest::Client,
    /// The channel [`SlackRig::slash`] types commands in.
    pub channel: String,
    data: PathBuf,
    _dir: tempfile::TempDir,
}

/// The `[chat.slack]` table every rig appends to its config: the fake's
/// Web API, its tokens and signing secret from the environment, and short
/// intervals so tests need not wait.
const CHAT_SLACK: &str = r#"
[chat.slack]
mode = "{mode}"
api_url = "{api}"
signing_secret = "${SLACK_SIGNING_SECRET}"
bot_token = "${SLACK_BOT_TOKEN}"
app_token = "${SLACK_APP_TOKEN}"
channel_interval = "200ms"
usergroup_cache_ttl = "1m"
"#;

impl SlackRig {
    /// Starts `rollbot serve` with `config` (`{port}` and `{data}` as in
    /// [`Server::start`]) and the fake Slack in `mode` (`http` or
    /// `socket`); the fake's signing secret and tokens are in the
    /// environment, where `env` may replace them. Commands are typed in
    /// `channel`.
    pub async fn start(
        fake: FakeSlack,
        mode: &str,
        channel: &str,
        config: &str,
        env: &[(&str, &str)],
    ) -> SlackRig {
        let dir = tempfile::tempdir().unwrap();
        let config = config.to_string()
            + &CHAT_SLACK
                .replace("{mode}", mode)
                .replace("{api}", &fake.api_url());
        let mut all = vec![
            ("SLACK_SIGNING_SECRET", fake_slack::SIGNING_SECRET),
            ("SLACK_BOT_TOKEN", fake_slack::BOT_TOKEN),
            ("SLACK_APP_TOKEN", fake_slack::APP_TOKEN),
            ("ROLLBOT_LOG", "warn"),
        ];
        all.extend_from_slice(env);
        let server = Server::start_async(dir.path(), &config, &all).await;
        SlackRig {
            fake,
            server,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            channel: channel.to_string(),
            data: dir.path().join("data"),
            _dir: dir,
        }
    }

    /// POSTs a form body signed like Slack (`extra` headers added);
    /// returns the status, the body and how long the answer took.
    pub async fn signed(
        &self,
        path: &str,
        body: &str,
        extra: &[(&str, &str)],
    ) -> (u16, String, Duration) {
        // A retry is a new delivery: Slack signs it again, at a later time.
        let later = extra.iter().any(|(k, _)| *k == "x-slack-retry-num");
        let ts = fake_slack::now() + i64::from(later);
        let mut req = self
            .http
            .post(self.server.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-slack-request-timestamp", ts.to_string())
            .header(
                "x-slack-signature",
                fake_slack::sign(fake_slack::SIGNING_SECRET, ts, body),
            );
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        let t0 = Instant::now();
        let r = req.body(body.to_string()).send().await.unwrap();
        let code = r.status().as_u16();
        let text = r.text().await.unwrap();
        (code, text, t0.elapsed())
    }

    /// A slash command typed by `user` in the rig's channel: the status,
    /// the acknowledgement (`null` when it is not JSON) and how long it
    /// took.
    pub async fn slash(
        &self,
        command: &str,
        text: &str,
        user: &str,
        trigger: &str,
    ) -> (u16, Value, Duration) {
        self.slash_in(&self.channel, command, text, user, trigger)
            .await
    }

    /// A slash command typed in `channel` (a DM, a channel the bot is not in).
    pub async fn slash_in(
        &self,
        channel: &str,
        command: &str,
        text: &str,
        user: &str,
        trigger: &str,
    ) -> (u16, Value, Duration) {
        let body = fake_slack::slash_body(
            command,
            text,
            user,
            channel,
            trigger,
            &self.fake.response_url(trigger),
        );
        let (code, text, took) = self.signed("/slack/commands", &body, &[]).await;
        (
            code,
            serde_json::from_str(&text).unwrap_or(Value::Null),
            took,
        )
    }

    /// `user` presses the button `action_id` of `message`; `retry` is
    /// Slack's retry number when it delivers the press again. The status.
    pub async fn press(
        &self,
        user: &str,
        message: &Posted,
        action_id: &str,
        trigger: &str,
        retry: Option<&str>,
    ) -> u16 {
        let payload = fake_slack::press_payload(
            user,
            &message.channel,
            message,
            action_id,
            trigger,
            &self.fake.response_url(trigger),
        );
        let body = serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap();
        let extra: Vec<(&str, &str)> = retry
            .map(|n| {
                vec![
                    ("x-slack-retry-num", n),
                    ("x-slack-retry-reason", "http_timeout"),
                ]
            })
            .unwrap_or_default();
        self.signed("/slack/interactions", &body, &extra).await.0
    }

    /// Slack delivers a `view_submission` payload (see
    /// [`FakeSlack::view_submission`]); the status and the answer (`null`
    /// when empty: the view closes).
    pub async fn submit_view(&self, payload: &Value) -> (u16, Value) {
        let body = serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap();
        let (code, text, _) = self.signed("/slack/interactions", &body, &[]).await;
        (code, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// rollbot's HTTP API with `token`.
    pub fn api(&self, token: &str) -> Api {
        Api::new(&self.server, token)
    }

    /// Stops the server (it must exit cleanly) and reads the audit log's
    /// records, oldest first.
    pub fn audit_records(self) -> Vec<Value> {
        let st = self.server.terminate();
        assert!(st.success(), "rollbot serve exited with {st}");
        audit::records(&self.data)
    }

    /// Stops the server and reads the audit log as [`Row`]s.
    pub fn audit(self) -> Vec<Row> {
        self.audit_records().iter().map(Row::of).collect()
    }
}
