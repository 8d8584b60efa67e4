//! Atlassian Statuspage (API v1): an incident of a service with customer
//! impact opens an incident on the page with the service's components
//! degraded, follows it to Monitoring, and on Resolved sets every component
//! back to `operational` explicitly (Statuspage leaves them as they are
//! otherwise).
//!
//! `Authorization: OAuth <key>`; one request per second per key, and 420
//! or 429 answers are waited out (`Retry-After`) and the same request sent
//! again, so updates keep their order and none is lost.

use super::config::{mode_of, StatusPageMode};
use super::{retry_after, Delivery, IncidentEvent, IncidentRef, IncidentSink, Undelivered};
use crate::config::SecretValue;
use crate::config_file::Config;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Statuspage's documented limit: one request per second per key.
const PACE: Duration = Duration::from_secs(1);
/// Rate-limit answers waited out per request before giving up.
const RATE_LIMIT_RETRIES: u32 = 60;
/// Attempts on a connection error or a 5xx, with doubling waits.
const ATTEMPTS: u32 = 5;

/// A status page incident opened for a rollout.
struct Open {
    id: String,
    components: Vec<String>,
}

pub struct StatusPage {
    client: reqwest::Client,
    base: String,
    page_id: String,
    key: SecretValue,
    config: Arc<Config>,
    /// Rollout → its incident on the page.
    open: HashMap<String, Open>,
    /// No request before this instant (the per-key pace).
    next: Instant,
}

impl StatusPage {
    /// `None` without `[status_page]`.
    pub fn from_config(config: &Arc<Config>) -> anyhow::Result<Option<StatusPage>> {
        let Some(sp) = &config.status_page else {
            return Ok(None);
        };
        let key = sp
            .key_source()
            .map_err(anyhow::Error::msg)?
            .ok_or_else(|| anyhow::anyhow!("[status_page] needs api_key"))?
            .resolve()
            .map_err(|e| anyhow::anyhow!("[status_page] api_key: {e}"))?;
        Ok(Some(StatusPage {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
            base: sp.base_url.trim_end_matches('/').to_string(),
            page_id: sp.page_id.clone(),
            key,
            config: config.clone(),
            open: HashMap::new(),
            next: Instant::now(),
        }))
    }

    /// The service's components, when its incidents go on the page.
    fn components(&self, service: &str) -> Option<Vec<String>> {
        if mode_of(&self.config, service) != StatusPageMode::Auto {
            return None;
        }
        let ids = self.config.status_page.as_ref()?.components.get(service)?;
        (!ids.is_empty()).then(|| ids.clone())
    }

    /// A critical service's components are in partial outage, others'
    /// performance is degraded; the incident's impact follows.
    fn impact(&self, service: &str) -> (&'static str, &'static str) {
        match self.config.service(service).is_some_and(|s| s.critical) {
            true => ("partial_outage", "major"),
            false => ("degraded_performance", "minor"),
        }
    }

    async fn open(
        &mut self,
        incident: &IncidentRef,
        title: &str,
        body: &str,
    ) -> Result<Delivery, Undelivered> {
        let Some(components) = self.components(&incident.service) else {
            return Ok(Delivery::Skipped);
        };
        if let Some(open) = self.open.get(&incident.rollout) {
            // A second Identified for the same rollout (a rollback by hand
            // after a failed one) is an update of the same incident.
            let path = format!("/v1/pages/{}/incidents/{}", self.page_id, open.id);
            let update = json!({"incident": {"status": "identified", "body": body}});
            return self
                .call(Method::PATCH, &path, update)
                .await
                .map(|_| Delivery::Sent);
        }
        let (status, impact) = self.impact(&incident.service);
        let states: BTreeMap<&str, &str> =
            components.iter().map(|c| (c.as_str(), status)).collect();
        let create = json!({"incident": {
            "name": title,
            "status": "identified",
            "body": body,
            "impact_override": impact,
            "component_ids": components,
            "components": states,
            "deliver_notifications": true,
        }});
        let path = format!("/v1/pages/{}/incidents", self.page_id);
        let answer = self.call(Method::POST, &path, create).await?;
        let id = answer["id"].as_str().unwrap_or_default().to_string();
        if id.is_empty() {
            return Err(Undelivered::Failed(format!(
                "the status page created an incident but its answer has no id: {answer}"
            )));
        }
        tracing::info!(rollout = %incident.rollout, incident = %id, "status page incident opened");
        self.open
            .insert(incident.rollout.clone(), Open { id, components });
        Ok(Delivery::Sent)
    }

    async fn update(
        &mut self,
        incident: &IncidentRef,
        status: &str,
        body: &str,
    ) -> Result<Delivery, Undelivered> {
        let Some(open) = self.open.get(&incident.rollout) else {
            // Never posted (not customer-facing, or the post failed and was
            // reported then).
            return Ok(Delivery::Skipped);
        };
        let mut fields = json!({"status": status, "body": body});
        if status == "resolved" {
            // Statuspage does not restore components on resolve.
            let states: BTreeMap<&str, &str> = open
                .components
                .iter()
                .map(|c| (c.as_str(), "operational"))
                .collect();
            fields["component_ids"] = json!(open.components);
            fields["components"] = json!(states);
        }
        let path = format!("/v1/pages/{}/incidents/{}", self.page_id, open.id);
        self.call(Method::PATCH, &path, json!({ "incident": fields }))
            .await?;
        if status == "resolved" {
            self.open.remove(&incident.rollout);
        }
        Ok(Delivery::Sent)
    }

    /// One request at the page's pace, waiting out rate limits and
    /// retrying outages; the answer's JSON.
    async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Value,
    ) -> Result<Value, Undelivered> {
        let url = format!("{}{path}", self.base);
        let (mut limited, mut failed) = (0, 0);
        loop {
            tokio::time::sleep_until(self.next).await;
            self.next = Instant::now() + PACE;
            let sent = self
                .client
                .request(method.clone(), &url)
                .header("Authorization", format!("OAuth {}", self.key.expose()))
                .json(&body)
                .send()
                .await;
            let (status, headers, text) = match sent {
                Ok(r) => {
                    let (s, h) = (r.status(), r.headers().clone());
                    (s, h, r.text().await.unwrap_or_default())
                }
                Err(e) => {
                    failed += 1;
                    if failed >= ATTEMPTS {
                        return Err(Undelivered::Failed(format!("the status page at {} did not answer {method} {path} after {ATTEMPTS} attempts ({e})", self.base)));
                    }
                    tokio::time::sleep(Duration::from_secs(1 << failed)).await;
                    continue;
                }
            };
            match status.as_u16() {
                200..=299 => return Ok(serde_json::from_str(&text).unwrap_or(Value::Null)),
                420 | 429 if limited < RATE_LIMIT_RETRIES => {
                    limited += 1;
                    let wait = retry_after(&headers, PACE);
                    tracing::info!(status = status.as_u16(), wait_ms = wait.as_millis() as u64, "status page rate limit; waiting, then sending the same update again");
                    self.next = Instant::now() + wait;
                }
                401 | 403 => {
                    return Err(Undelivered::Key(format!(
                        "the status page refused rollbot's API key ({status} on {method} {path}: {}); check [status_page] api_key and that the key may write page {}",
                        error_text(&text), self.page_id
                    )))
                }
                s if s >= 500 && failed + 1 < ATTEMPTS => {
                    failed += 1;
                    tokio::time::sleep(Duration::from_secs(1 << failed)).await;
                }
                _ => {
                    return Err(Undelivered::Failed(format!(
                        "the status page answered {} to {method} {path}: {}",
                        StatusCode::from_u16(status.as_u16()).map(|s| s.to_string()).unwrap_or_default(),
                        error_text(&text)
                    )))
                }
            }
        }
    }
}

/// Statuspage's `{"error": "…"}` or `{"error": ["…"]}`, else the text.
fn error_text(body: &str) -> String {
    match serde_json::from_str::<Value>(body) {
        Ok(v) => match &v["error"] {
            Value::String(s) => s.clone(),
            Value::Array(a) => a
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("; "),
            _ => body.chars().take(300).collect(),
        },
        Err(_) => body.chars().take(300).collect(),
    }
}

#[async_trait::async_trait]
impl IncidentSink for StatusPage {
    fn name(&self) -> &'static str {
        "status page"
    }

    async fn deliver(&mut self, event: &IncidentEvent) -> Result<Delivery, Undelivered> {
        match event {
            IncidentEvent::Identified {
                incident,
                title,
                body,
            } => self.open(incident, title, body).await,
            IncidentEvent::Monitoring { incident, body } => {
                self.update(incident, "monitoring", body).await
            }
            IncidentEvent::Resolved { incident, body } => {
                self.update(incident, "resolved", body).await
            }
            IncidentEvent::Page { .. } | IncidentEvent::Change { .. } => Ok(Delivery::Skipped),
        }
    }
}
