//! PagerDuty Events API v2: a page (`/v2/enqueue`, `trigger`) when people
//! must act, keyed by the rollout (`dedup_key`), resolved with the same key
//! when the incident resolves; a change event (`/v2/change/enqueue`) for
//! every promote, rollback, freeze and break-glass, so responders see
//! deploy activity on the service's timeline. An automatic rollback that
//! worked pages nobody: it never sends a trigger.
//!
//! Open pages are stored (`paging:ROLLOUT` in the settings table), so a
//! page triggered before a restart is still resolved with its incident.

use super::config::PagingSeverity;
use super::{retry_after, Delivery, IncidentEvent, IncidentSink, Undelivered};
use crate::config::SecretValue;
use crate::config_file::Config;
use crate::store::{Store, Table};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// Rate-limit answers waited out per event before giving up.
const RATE_LIMIT_RETRIES: u32 = 60;
/// Attempts on a connection error or a 5xx, with doubling waits.
const ATTEMPTS: u32 = 5;

pub struct PagerDuty {
    client: reqwest::Client,
    base: String,
    /// The `[paging]` key, for services without their own.
    default_key: Option<SecretValue>,
    keys: HashMap<String, SecretValue>,
    config: Arc<Config>,
    /// Rollouts paged for and not yet resolved (also in the store).
    triggered: HashSet<String>,
    store: Arc<Store>,
}

/// Where an open page is stored.
fn stored_key(rollout: &str) -> String {
    format!("paging:{rollout}")
}

impl PagerDuty {
    /// `None` without `[paging]`.
    pub fn from_config(
        config: &Arc<Config>,
        store: Arc<Store>,
    ) -> anyhow::Result<Option<PagerDuty>> {
        let Some(p) = &config.paging else {
            return Ok(None);
        };
        let read = |src: Result<Option<crate::config::SecretSource>, String>, what: &str| match src
            .map_err(anyhow::Error::msg)?
        {
            Some(s) => s
                .resolve()
                .map(Some)
                .map_err(|e| anyhow::anyhow!("{what} routing_key: {e}")),
            None => Ok(None),
        };
        let default_key = read(p.key_source(), "[paging]")?;
        let mut keys = HashMap::new();
        for (svc, ps) in &p.services {
            if let Some(k) = read(ps.key_source(), &format!("[paging.services.{svc}]"))? {
                keys.insert(svc.clone(), k);
            }
        }
        Ok(Some(PagerDuty {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
            base: p.base_url.trim_end_matches('/').to_string(),
            default_key,
            keys,
            config: config.clone(),
            triggered: HashSet::new(),
            store,
        }))
    }

    fn key(&self, service: &str) -> Option<&SecretValue> {
        self.keys.get(service).or(self.default_key.as_ref())
    }

    /// The service's severity: as configured, else `critical` for a
    /// critical service and `error` for others.
    fn severity(&self, service: &str) -> &'static str {
        let configured = self
            .config
            .paging
            .as_ref()
            .and_then(|p| p.services.get(service))
            .and_then(|s| s.severity);
        let critical = self.config.service(service).is_some_and(|s| s.critical);
        configured
            .unwrap_or(if critical {
                PagingSeverity::Critical
            } else {
                PagingSeverity::Error
            })
            .as_str()
    }

    async fn trigger(
        &mut self,
        rollout: &str,
        service: &str,
        summary: &str,
    ) -> Result<Delivery, Undelivered> {
        let Some(key) = self.key(service).cloned() else {
            return Ok(Delivery::Skipped);
        };
        let event = json!({
            "routing_key": key.expose(),
            "event_action": "trigger",
            "dedup_key": rollout,
            "payload": {
                "summary": truncate(summary, 1024),
                "source": format!("rollbot/{service}"),
                "severity": self.severity(service),
                "timestamp": chrono::Utc::now().to_rfc3339(),
                "component": service,
                "class": "rollout",
                "custom_details": {"service": service, "rollout": rollout},
            },
            "client": "rollbot",
        });
        self.send("/v2/enqueue", event).await?;
        if self.triggered.insert(rollout.to_string()) {
            if let Err(e) = self
                .store
                .put(Table::Settings, &stored_key(rollout), &true)
                .await
            {
                tracing::error!(rollout, error = %e, "could not store an open page; a restart would not resolve it");
            }
        }
        Ok(Delivery::Sent)
    }

    async fn resolve(&mut self, rollout: &str, service: &str) -> Result<Delivery, Undelivered> {
        if !self.triggered.contains(rollout) {
            // Paged before a restart?
            let stored = self
                .store
                .get::<bool>(Table::Settings, &stored_key(rollout))
                .await;
            if !matches!(stored, Ok(Some(true))) {
                return Ok(Delivery::Skipped);
            }
        }
        let Some(key) = self.key(service).cloned() else {
            return Ok(Delivery::Skipped);
        };
        let event = json!({
            "routing_key": key.expose(),
            "event_action": "resolve",
            "dedup_key": rollout,
        });
        self.send("/v2/enqueue", event).await?;
        self.triggered.remove(rollout);
        if let Err(e) = self
            .store
            .remove(Table::Settings, &stored_key(rollout))
            .await
        {
            tracing::warn!(rollout, error = %e, "could not forget a resolved page");
        }
        Ok(Delivery::Sent)
    }

    /// One change event per routing key among `services`.
    async fn change(
        &mut self,
        services: &[String],
        summary: &str,
        details: &BTreeMap<String, String>,
    ) -> Result<Delivery, Undelivered> {
        let mut by_key: BTreeMap<String, (SecretValue, Vec<&str>)> = BTreeMap::new();
        for s in services {
            if let Some(k) = self.key(s) {
                by_key
                    .entry(k.expose().to_string())
                    .or_insert_with(|| (k.clone(), Vec::new()))
                    .1
                    .push(s);
            }
        }
        let sent = match by_key.is_empty() {
            true => Delivery::Skipped,
            false => Delivery::Sent,
        };
        for (_, (key, names)) in by_key {
            let event = json!({
                "routing_key": key.expose(),
                "payload": {
                    "summary": truncate(summary, 1024),
                    "source": "rollbot",
                    "timestamp": chrono::Utc::now().to_rfc3339(),
                    "custom_details": json!({"services": names, "details": details}),
                },
            });
            self.send("/v2/change/enqueue", event).await?;
        }
        Ok(sent)
    }

    /// Sends one event, waiting out 429s and retrying outages.
    async fn send(&self, path: &str, body: Value) -> Result<(), Undelivered> {
        let url = format!("{}{path}", self.base);
        let (mut limited, mut failed) = (0, 0);
        loop {
            let sent = self.client.post(&url).json(&body).send().await;
            let (status, headers, text) = match sent {
                Ok(r) => {
                    let (s, h) = (r.status().as_u16(), r.headers().clone());
                    (s, h, r.text().await.unwrap_or_default())
                }
                Err(e) => {
                    failed += 1;
                    if failed >= ATTEMPTS {
                        return Err(Undelivered::Failed(format!("PagerDuty at {} did not answer POST {path} after {ATTEMPTS} attempts ({e})", self.base)));
                    }
                    tokio::time::sleep(Duration::from_secs(1 << failed)).await;
                    continue;
                }
            };
            let errors = error_text(&text);
            match status {
                200..=299 => return Ok(()),
                429 if limited < RATE_LIMIT_RETRIES => {
                    limited += 1;
                    let wait = retry_after(&headers, Duration::from_secs(1 << limited.min(5)));
                    tracing::info!(
                        wait_ms = wait.as_millis() as u64,
                        "PagerDuty rate limit; waiting, then sending the same event again"
                    );
                    tokio::time::sleep(wait).await;
                }
                401 | 403 => return Err(key_error(status, path, &errors)),
                400 if errors.to_lowercase().contains("routing") => {
                    return Err(key_error(status, path, &errors))
                }
                s if s >= 500 && failed + 1 < ATTEMPTS => {
                    failed += 1;
                    tokio::time::sleep(Duration::from_secs(1 << failed)).await;
                }
                _ => {
                    return Err(Undelivered::Failed(format!(
                        "PagerDuty answered {status} to POST {path}: {errors}"
                    )))
                }
            }
        }
    }
}

fn key_error(status: u16, path: &str, errors: &str) -> Undelivered {
    Undelivered::Key(format!(
        "PagerDuty refused the routing key ({status} on POST {path}: {errors}); check [paging] routing_key: it must be an Events API v2 integration key of the service, not a REST API key"
    ))
}

/// PagerDuty's `{"status", "message", "errors": [...]}`, else the text.
fn error_text(body: &str) -> String {
    match serde_json::from_str::<Value>(body) {
        Ok(v) => {
            let errors: Vec<&str> = v["errors"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            match (v["message"].as_str(), errors.is_empty()) {
                (Some(m), false) => format!("{m}: {}", errors.join("; ")),
                (Some(m), true) => m.to_string(),
                _ => body.chars().take(300).collect(),
            }
        }
        Err(_) => body.chars().take(300).collect(),
    }
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

#[async_trait::async_trait]
impl IncidentSink for PagerDuty {
    fn name(&self) -> &'static str {
        "paging"
    }

    async fn deliver(&mut self, event: &IncidentEvent) -> Result<Delivery, Undelivered> {
        match event {
            IncidentEvent::Page { incident, summary } => {
                self.trigger(&incident.rollout, &incident.service, summary)
                    .await
            }
            IncidentEvent::Resolved { incident, .. } => {
                self.resolve(&incident.rollout, &incident.service).await
            }
            IncidentEvent::Change {
                services,
                summary,
                details,
            } => self.change(services, summary, details).await,
            IncidentEvent::Identified { .. }
            | IncidentEvent::Monitoring { .. }
            | IncidentEvent::StatusPageAnswer { .. } => Ok(Delivery::Skipped),
        }
    }
}
