//! A client of `rollbot serve`'s HTTP API, as CI and dashboards call it:
//! actions, rollout announcements and the rollout list, with a bearer
//! token.

use super::Server;
use serde_json::{json, Value};
use std::time::Duration;

#[derive(Clone)]
pub struct Api {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Api {
    /// Calls `server` with `token`; each call gives up after 30 s, so a
    /// hung server fails the test instead of stalling it.
    pub fn new(server: &Server, token: &str) -> Api {
        Api {
            base: server.url(""),
            token: token.to_string(),
            http: client(Duration::from_secs(30)),
        }
    }

    /// Gives up on each call after `limit` (a client that goes away).
    pub fn timeout(mut self, limit: Duration) -> Api {
        self.http = client(limit);
        self
    }

    /// `POST /api/v1/actions` with `command` and, when given, an
    /// idempotency key: the status code and the answer (`null` when it is
    /// not JSON).
    pub async fn action(&self, command: &str, key: Option<&str>) -> (u16, Value) {
        self.try_action(command, key)
            .await
            .unwrap_or_else(|e| panic!("POST /api/v1/actions {command:?}: {e}"))
    }

    /// [`Api::action`], with a failed call (a timeout, a closed
    /// connection) as an error instead of a panic.
    pub async fn try_action(
        &self,
        command: &str,
        key: Option<&str>,
    ) -> Result<(u16, Value), String> {
        let mut body = json!({ "command": command });
        if let Some(key) = key {
            body["idempotency_key"] = json!(key);
        }
        let r = self
            .http
            .post(format!("{}/api/v1/actions", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let code = r.status().as_u16();
        Ok((code, r.json().await.unwrap_or_default()))
    }

    /// `POST /api/v1/rollouts`: CI announces that `service` moves from
    /// `from` to `to` since `start`. It must be taken (201); returns the
    /// rollout (`null` when the answer is not JSON).
    pub async fn announce(
        &self,
        service: &str,
        from: &str,
        to: &str,
        start: chrono::DateTime<chrono::Utc>,
    ) -> Value {
        let r = self
            .http
            .post(format!("{}/api/v1/rollouts", self.base))
            .bearer_auth(&self.token)
            .json(
                &json!({"service": service, "from_revision": from, "to_revision": to,
                "start_time": start.to_rfc3339()}),
            )
            .send()
            .await
            .unwrap();
        let code = r.status().as_u16();
        let text = r.text().await.unwrap();
        assert_eq!(code, 201, "{text}");
        serde_json::from_str(&text).unwrap_or_default()
    }

    /// `GET /api/v1/rollouts`: the rollouts rollbot watches.
    /// `POST /api/v1/rollouts` with any body: the status and the answer.
    pub async fn announce_json(&self, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}/api/v1/rollouts", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let code = r.status().as_u16();
        let text = r.text().await.unwrap();
        (code, serde_json::from_str(&text).unwrap_or_default())
    }

    pub async fn rollouts(&self) -> Vec<Value> {
        let r = self
            .http
            .get(format!("{}/api/v1/rollouts", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        r.json::<Value>().await.unwrap()["rollouts"]
            .as_array()
            .unwrap()
            .clone()
    }
}

fn client(limit: Duration) -> reqwest::Client {
    reqwest::Client::builder().timeout(limit).build().unwrap()
}
