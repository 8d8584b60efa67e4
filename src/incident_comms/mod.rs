//! Incident communications outside chat: the public status page and the
//! on-call's pager. The controller's incidents and the engine's results
//! become [`IncidentEvent`]s; each provider ([`IncidentSink`]) takes them
//! from its own bounded queue in its own task, in order, so a status page
//! that is down or rate-limits never delays a rollback, a chat message or
//! the other provider, and one incident's updates arrive in the order they
//! happened.
//!
//! - `statuspage.rs`: Atlassian Statuspage API v1 (`[status_page]`);
//! - `pagerduty.rs`: PagerDuty Events API v2 (`[paging]`);
//! - `config.rs`: both sections and their checks;
//! - `templates.rs`: `[templates]`, the words of an incident's messages.
//!
//! A provider that cannot deliver (a wrong key, an outage past its
//! retries) says so in the log, in `/readyz` (without making rollbot
//! unready: people must still be able to roll back) and in the incident's
//! thread.

pub mod config;
pub(crate) mod pagerduty;
pub(crate) mod statuspage;
pub mod templates;

use crate::chat::{Message, MessageRef, Notifier, Severity};
use crate::config_file::Config;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// How many events may wait for one provider; beyond, new ones are
/// dropped with an error (the provider has been failing for a long time).
const QUEUE: usize = 1000;

/// Where an incident is discussed in chat, to tell people when a provider
/// could not be updated.
#[derive(Clone, Debug, Default)]
pub struct Thread {
    /// The named channel (`[channels.NAME]`).
    pub channel: Option<String>,
    /// The incident's root message(s), one per platform.
    pub root: Vec<MessageRef>,
}

/// One incident (one rollout) as the providers see it.
#[derive(Clone, Debug)]
pub struct IncidentRef {
    /// The rollout's ID: the status page incident's key and the page's
    /// `dedup_key`.
    pub rollout: String,
    pub service: String,
    pub thread: Thread,
}

/// What happened, for the providers.
#[derive(Clone, Debug)]
pub enum IncidentEvent {
    /// An incident was identified (`title`, the first update's `body`).
    Identified {
        incident: IncidentRef,
        title: String,
        body: String,
    },
    /// The rollback was made; the service is being watched.
    Monitoring { incident: IncidentRef, body: String },
    /// The service is back to normal.
    Resolved { incident: IncidentRef, body: String },
    /// Someone must look now: a rollback failed or was not verified, or a
    /// canary is failing while automation is off.
    Page {
        incident: IncidentRef,
        summary: String,
    },
    /// Someone answered the status page prompt of a service set to
    /// `status_page = "ask"`: post the incident (as it stands now) or not.
    StatusPageAnswer { incident: IncidentRef, post: bool },
    /// Deploy activity for the paging timeline: a promote, rollback,
    /// freeze or break-glass.
    Change {
        services: Vec<String>,
        summary: String,
        details: BTreeMap<String, String>,
    },
}

impl IncidentEvent {
    fn incident(&self) -> Option<&IncidentRef> {
        match self {
            IncidentEvent::Identified { incident, .. }
            | IncidentEvent::Monitoring { incident, .. }
            | IncidentEvent::Resolved { incident, .. }
            | IncidentEvent::Page { incident, .. }
            | IncidentEvent::StatusPageAnswer { incident, .. } => Some(incident),
            IncidentEvent::Change { .. } => None,
        }
    }
}

/// Why an event could not be delivered.
#[derive(Debug, Clone, PartialEq)]
pub enum Undelivered {
    /// The provider refused the key (401/403, an unknown routing key):
    /// nothing will get through until the config is fixed.
    Key(String),
    /// The provider refused this event, or did not answer within the
    /// retries.
    Failed(String),
}

impl std::fmt::Display for Undelivered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Undelivered::Key(m) | Undelivered::Failed(m) => f.write_str(m),
        }
    }
}

/// One provider of incident communications. It owns its state (which
/// status page incident belongs to which rollout, which pages are open);
/// its task hands it one event at a time.
#[async_trait::async_trait]
pub trait IncidentSink: Send {
    /// "status page", "paging": how people call it.
    fn name(&self) -> &'static str;
    /// Delivers one event, waiting out rate limits.
    async fn deliver(&mut self, event: &IncidentEvent) -> Result<Delivery, Undelivered>;
}

/// What a provider did with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Accepted by the provider: whatever failed before works again.
    Sent,
    /// Nothing to send (not customer-facing, no page open): says nothing
    /// about the provider.
    Skipped,
}

/// The providers' queues and what each last failed with.
#[derive(Clone, Default)]
pub struct Comms {
    queues: Vec<(&'static str, mpsc::Sender<IncidentEvent>)>,
    problems: Arc<Mutex<BTreeMap<&'static str, String>>>,
    /// Events queued or being delivered, so tests and shutdown can wait.
    pending: Arc<tokio::sync::watch::Sender<usize>>,
}

impl Comms {
    /// The providers `config` configures, each started in its own task.
    /// A secret that cannot be read stops the start with a clear message.
    /// The status page keeps which of its incidents belongs to which
    /// rollout in `store`, so a restart loses none.
    pub fn start(
        config: &Arc<Config>,
        notifier: Notifier,
        store: Arc<crate::store::Store>,
    ) -> anyhow::Result<Comms> {
        let mut comms = Comms {
            pending: Arc::new(tokio::sync::watch::channel(0).0),
            ..Comms::default()
        };
        if let Some(sink) = statuspage::StatusPage::from_config(config, store.clone())? {
            comms.spawn(Box::new(sink), notifier.clone());
        }
        if let Some(sink) = pagerduty::PagerDuty::from_config(config, store)? {
            comms.spawn(Box::new(sink), notifier);
        }
        Ok(comms)
    }

    fn spawn(&mut self, mut sink: Box<dyn IncidentSink>, notifier: Notifier) {
        let name = sink.name();
        let (tx, mut rx) = mpsc::channel::<IncidentEvent>(QUEUE);
        let problems = self.problems.clone();
        let pending = self.pending.clone();
        tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                match sink.deliver(&event).await {
                    Ok(Delivery::Sent) => {
                        problems.lock().unwrap().remove(name);
                    }
                    Ok(Delivery::Skipped) => {}
                    Err(why) => report(name, &why, &event, &problems, &notifier),
                }
                pending.send_modify(|n| *n = n.saturating_sub(1));
            }
        });
        self.queues.push((name, tx));
    }

    /// Counts an event still being put together (off the caller's path),
    /// so [`Comms::settle`] waits for it too.
    pub fn hold(&self) -> Hold {
        self.pending.send_modify(|n| *n += 1);
        Hold(self.pending.clone())
    }

    /// No provider is configured.
    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }

    /// Queues `event` for every provider without waiting.
    pub fn send(&self, event: IncidentEvent) {
        for (name, tx) in &self.queues {
            self.pending.send_modify(|n| *n += 1);
            if let Err(e) = tx.try_send(event.clone()) {
                self.pending.send_modify(|n| *n = n.saturating_sub(1));
                let text =
                    format!("{QUEUE} updates are waiting to be sent; this one was dropped ({e})");
                tracing::error!(provider = name, "{text}");
                self.problems.lock().unwrap().insert(name, text);
            }
        }
    }

    /// What `/readyz` shows: one line per configured provider.
    pub fn readiness(&self) -> Vec<String> {
        let problems = self.problems.lock().unwrap();
        self.queues
            .iter()
            .map(|(name, _)| match problems.get(name) {
                Some(p) => format!("{name}: FAILING: {p}"),
                None => format!("{name}: ok"),
            })
            .collect()
    }

    /// Waits until every queued event was delivered or given up on, at
    /// most `limit`; true when all were.
    pub async fn settle(&self, limit: std::time::Duration) -> bool {
        let mut rx = self.pending.subscribe();
        let settled = tokio::time::timeout(limit, rx.wait_for(|n| *n == 0)).await;
        settled.is_ok()
    }
}

/// An event on its way to [`Comms::send`]; dropped once it was sent.
pub struct Hold(Arc<tokio::sync::watch::Sender<usize>>);

impl Drop for Hold {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// A provider could not deliver: the log, `/readyz` and the incident's
/// thread say so and what to do.
fn report(
    name: &'static str,
    why: &Undelivered,
    event: &IncidentEvent,
    problems: &Mutex<BTreeMap<&'static str, String>>,
    notifier: &Notifier,
) {
    let todo = match why {
        Undelivered::Key(_) => "fix the key in the config's secret and restart rollbot",
        Undelivered::Failed(_) => "update it by hand",
    };
    tracing::error!(provider = name, error = %why, "{name} not updated; {todo}");
    problems.lock().unwrap().insert(name, why.to_string());
    let Some(incident) = event.incident() else {
        return;
    };
    let Some(channel) = incident.thread.channel.clone() else {
        return;
    };
    let msg = Message::new(
        Severity::Warning,
        format!("{name} not updated for {}", incident.service),
    )
    .text(format!("{why}.\nThe rollback is not affected; {todo}."))
    .context(format!("rollout {}", incident.rollout));
    notifier.reply_or_post_detached(incident.thread.root.clone(), channel, msg);
}

/// Waits before the next attempt: what `Retry-After` says (seconds), else
/// `fallback`, at most a minute.
pub(crate) fn retry_after(
    headers: &reqwest::header::HeaderMap,
    fallback: std::time::Duration,
) -> std::time::Duration {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(std::time::Duration::from_secs_f64)
        .unwrap_or(fallback)
        .min(std::time::Duration::from_secs(60))
}
