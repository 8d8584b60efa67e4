//! Atlassian Statuspage (API v1): an incident of a service with customer
//! impact opens an incident on the page with the service's components
//! degraded, follows it to Monitoring, and on Resolved sets every component
//! back to `operational` explicitly (Statuspage leaves them as they are
//! otherwise).
//!
//! `Authorization: OAuth <key>`; one request per second per key, and 420
//! or 429 answers are waited out (`Retry-After`) and the same request sent
//! again, so updates keep their order and none is lost.
//!
//! A service set to `status_page = "ask"` posts nothing until someone
//! answers the prompt in the incident thread (`engine/status_page_ask.rs`);
//! until then its steps are kept, so "Post" opens the incident as it
//! stands. Which page incident belongs to which rollout is stored
//! (`status_page:ROLLOUT` in the settings table), so a restart forgets
//! none: a Resolved after it still closes the right incident.

use super::config::{mode_of, StatusPageMode};
use super::{retry_after, Delivery, IncidentEvent, IncidentRef, IncidentSink, Undelivered};
use crate::config::SecretValue;
use crate::config_file::Config;
use crate::store::{Store, Table};
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
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

/// A rollout's incident as the status page knows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct PageIncident {
    /// The incident's id on the page; `None` while an `ask` waits for its
    /// answer.
    id: Option<String>,
    components: Vec<String>,
    /// What "Post" sends: the name, and the latest step with its body.
    title: String,
    status: String,
    body: String,
}

/// Where a rollout's [`PageIncident`] is stored.
fn stored_key(rollout: &str) -> String {
    format!("status_page:{rollout}")
}

pub struct StatusPage {
    client: reqwest::Client,
    base: String,
    page_id: String,
    key: SecretValue,
    config: Arc<Config>,
    /// Rollout → its incident, as stored (read once, written through).
    known: HashMap<String, PageIncident>,
    store: Arc<Store>,
    /// No request before this instant (the per-key pace).
    next: Instant,
}

impl StatusPage {
    /// `None` without `[status_page]`.
    pub fn from_config(
        config: &Arc<Config>,
        store: Arc<Store>,
    ) -> anyhow::Result<Option<StatusPage>> {
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
            known: HashMap::new(),
            store,
            next: Instant::now(),
        }))
    }

    /// The service's components, when its incidents go on the page (at
    /// once, or once someone says so).
    fn components(&self, service: &str) -> Option<Vec<String>> {
        if mode_of(&self.config, service) == StatusPageMode::Off {
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

    /// The rollout's incident: remembered, else stored, else none.
    async fn load(&mut self, rollout: &str) -> Option<PageIncident> {
        if let Some(known) = self.known.get(rollout) {
            return Some(known.clone());
        }
        match self
            .store
            .get::<PageIncident>(Table::Settings, &stored_key(rollout))
            .await
        {
            Ok(found) => {
                if let Some(f) = &found {
                    self.known.insert(rollout.to_string(), f.clone());
                }
                found
            }
            Err(e) => {
                tracing::error!(rollout, error = %e, "could not read which status page incident belongs to this rollout");
                None
            }
        }
    }

    /// Remembers (or forgets, with `None`) the rollout's incident, in the
    /// store too. A store that fails is logged; the page is updated all
    /// the same, and only a restart would forget the incident.
    async fn keep(&mut self, rollout: &str, incident: Option<PageIncident>) {
        let key = stored_key(rollout);
        let written = match incident {
            Some(i) => {
                self.known.insert(rollout.to_string(), i.clone());
                self.store.put(Table::Settings, &key, &i).await
            }
            None => {
                self.known.remove(rollout);
                self.store.remove(Table::Settings, &key).await
            }
        };
        if let Err(e) = written {
            tracing::error!(rollout, error = %e, "could not store which status page incident belongs to this rollout; a restart would forget it");
        }
    }

    async fn identified(
        &mut self,
        incident: &IncidentRef,
        title: &str,
        body: &str,
    ) -> Result<Delivery, Undelivered> {
        let Some(components) = self.components(&incident.service) else {
            return Ok(Delivery::Skipped);
        };
        if let Some(mut known) = self.load(&incident.rollout).await {
            // A second Identified for the same rollout (a rollback by hand
            // after a failed one) is an update of the same incident.
            return match known.id.clone() {
                Some(id) => {
                    let path = format!("/v1/pages/{}/incidents/{id}", self.page_id);
                    let update = json!({"incident": {"status": "identified", "body": body}});
                    self.call(Method::PATCH, &path, update)
                        .await
                        .map(|_| Delivery::Sent)
                }
                None => {
                    (known.status, known.body) = ("identified".into(), body.into());
                    self.keep(&incident.rollout, Some(known)).await;
                    Ok(Delivery::Skipped)
                }
            };
        }
        let asked = PageIncident {
            id: None,
            components,
            title: title.into(),
            status: "identified".into(),
            body: body.into(),
        };
        if mode_of(&self.config, &incident.service) == StatusPageMode::Ask {
            // Kept until someone answers the prompt in the thread.
            self.keep(&incident.rollout, Some(asked)).await;
            return Ok(Delivery::Skipped);
        }
        self.create(incident, asked).await
    }

    /// Opens the incident on the page with its latest step: components
    /// degraded, or operational when it is already resolved.
    async fn create(
        &mut self,
        incident: &IncidentRef,
        mut page: PageIncident,
    ) -> Result<Delivery, Undelivered> {
        let resolved = page.status == "resolved";
        let (degraded, impact) = self.impact(&incident.service);
        let status = if resolved { "operational" } else { degraded };
        let states: BTreeMap<&str, &str> = page
            .components
            .iter()
            .map(|c| (c.as_str(), status))
            .collect();
        let create = json!({"incident": {
            "name": page.title,
            "status": page.status,
            "body": page.body,
            "impact_override": impact,
            "component_ids": page.components,
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
        page.id = Some(id);
        self.keep(&incident.rollout, (!resolved).then_some(page))
            .await;
        Ok(Delivery::Sent)
    }

    async fn update(
        &mut self,
        incident: &IncidentRef,
        status: &str,
        body: &str,
    ) -> Result<Delivery, Undelivered> {
        let Some(mut page) = self.load(&incident.rollout).await else {
            // Never posted (not customer-facing, or the post failed and was
            // reported then).
            return Ok(Delivery::Skipped);
        };
        let Some(id) = page.id.clone() else {
            // Still waiting for an answer: "Post" will say where it stands.
            (page.status, page.body) = (status.into(), body.into());
            self.keep(&incident.rollout, Some(page)).await;
            return Ok(Delivery::Skipped);
        };
        let mut fields = json!({"status": status, "body": body});
        if status == "resolved" {
            // Statuspage does not restore components on resolve.
            let states: BTreeMap<&str, &str> = page
                .components
                .iter()
                .map(|c| (c.as_str(), "operational"))
                .collect();
            fields["component_ids"] = json!(page.components);
            fields["components"] = json!(states);
        }
        let path = format!("/v1/pages/{}/incidents/{id}", self.page_id);
        self.call(Method::PATCH, &path, json!({ "incident": fields }))
            .await?;
        if status == "resolved" {
            self.keep(&incident.rollout, None).await;
        }
        Ok(Delivery::Sent)
    }

    /// The answer to the `ask` prompt: post the incident as it stands, or
    /// forget it.
    async fn answered(
        &mut self,
        incident: &IncidentRef,
        post: bool,
    ) -> Result<Delivery, Undelivered> {
        let Some(page) = self.load(&incident.rollout).await else {
            return Ok(Delivery::Skipped);
        };
        if page.id.is_some() {
            return Ok(Delivery::Skipped);
        }
        if !post {
            self.keep(&incident.rollout, None).await;
            return Ok(Delivery::Skipped);
        }
        self.create(incident, page).await
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
            } => self.identified(incident, title, body).await,
            IncidentEvent::Monitoring { incident, body } => {
                self.update(incident, "monitoring", body).await
            }
            IncidentEvent::Resolved { incident, body } => {
                self.update(incident, "resolved", body).await
            }
            IncidentEvent::StatusPageAnswer { incident, post } => {
                self.answered(incident, *post).await
            }
            IncidentEvent::Page { .. } | IncidentEvent::Change { .. } => Ok(Delivery::Skipped),
        }
    }
}
