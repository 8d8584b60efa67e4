//! Automatic actions switched off per service: `/auto <service> off [for
//! <duration>] [reason…]` for a while (maintenance, a known external
//! problem), `/auto <service> on` to end it early, or `automation = false` in
//! the service's config as a standing switch.
//!
//! While automation is off the controller keeps judging and posting
//! summaries, but asks a person (a prompt) instead of rolling back, pausing or
//! promoting by itself.

use super::{or_dash, Engine, Outcome, Request, Status};
use crate::audit::Outcome as AuditOutcome;
use crate::chat::{Message, Severity};
use crate::config_file::ServiceConfig;
use crate::domain::{human_duration, Action};
use crate::store::{Table, Tx};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

/// How long `/auto <service> off` lasts when no duration is given.
pub const DEFAULT_AUTOMATION_OFF: Duration = Duration::from_secs(3600);
/// The longest `/auto … off for`; longer belongs in the config.
pub const MAX_AUTOMATION_OFF: Duration = Duration::from_secs(7 * 86_400);

/// Automation is off for a service: who switched it off, since and until
/// when, and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AutomationOff {
    /// The display name of whoever switched it off, or "the configuration".
    pub by: String,
    /// The platform-qualified id (`slack:U…`), or `config`.
    pub by_id: String,
    pub reason: String,
    pub since: Option<DateTime<Utc>>,
    /// `None` for the config's standing switch.
    pub until: Option<DateTime<Utc>>,
}

impl AutomationOff {
    /// "by Ana until 2026-12-02 13:00 UTC: database maintenance".
    pub fn describe(&self) -> String {
        let until = match self.until {
            Some(u) => format!("until {}", u.format("%Y-%m-%d %H:%M UTC")),
            None => "until the config changes".into(),
        };
        format!("by {} {until}: {}", self.by, or_dash(&self.reason))
    }
}

fn key(service: &str) -> String {
    format!("automation:{service}")
}

impl Engine {
    /// Whether automatic actions on `service` are switched off now, and by
    /// whom. A command's switch wins over the config's (it says who and why).
    pub async fn automation_off(&self, service: &str) -> Option<AutomationOff> {
        let stored: Option<AutomationOff> = self
            .store
            .get(Table::Settings, &key(service))
            .await
            .ok()
            .flatten();
        let now = self.clock.now();
        if let Some(off) = stored.filter(|o| o.until.is_none_or(|u| u > now)) {
            return Some(off);
        }
        let svc = self.config.service(service)?;
        (!svc.automation).then(|| AutomationOff {
            by: "the configuration".into(),
            by_id: "config".into(),
            reason: format!("`automation = false` on service {}", svc.name()),
            since: None,
            until: None,
        })
    }

    /// `/auto <service> off|on`, after authorization (the `pause` permission).
    pub(super) async fn automation_action(
        &self,
        req: &Request,
        corr: &str,
        svc: &ServiceConfig,
    ) -> anyhow::Result<Outcome> {
        let Action::Automation { enabled, duration } = &req.action else {
            anyhow::bail!("not an automation action");
        };
        let now = self.clock.now();
        let mut params = BTreeMap::new();
        params.insert("enabled".into(), json!(enabled));
        self.record(
            req,
            corr,
            Some(svc.name()),
            params.clone(),
            AuditOutcome::Requested,
            String::new(),
        )
        .await?;
        let change;
        let message = if *enabled {
            let was: Option<AutomationOff> =
                self.store.get(Table::Settings, &key(svc.name())).await?;
            change = Tx::new().remove(Table::Settings, &key(svc.name()));
            let was = was.filter(|o| o.until.is_none_or(|u| u > now));
            let mut text = match &was {
                Some(o) => format!(
                    "rollbot acts on {}'s verdicts by itself again (it was switched off {}).",
                    svc.name(),
                    o.describe()
                ),
                None => format!("Automation of {} was not switched off.", svc.name()),
            };
            if !svc.automation {
                text.push_str(&format!(" The config still says `automation = false` for {}, so rollbot keeps asking instead of acting until that line is removed.", svc.name()));
            }
            Message::new(Severity::Success, format!("Automation on: {}", svc.name()))
                .text(text)
                .field("By", req.actor.display_name.clone())
        } else {
            let until = now + chrono::Duration::from_std(*duration)?;
            let off = AutomationOff {
                by: req.actor.display_name.clone(),
                by_id: req.actor.qualified_id(),
                reason: req.reason.clone(),
                since: Some(now),
                until: Some(until),
            };
            change = Tx::new().put(Table::Settings, &key(svc.name()), &off);
            params.insert("until".into(), json!(until.to_rfc3339()));
            Message::new(Severity::Warning, format!("Automation off: {}", svc.name()))
                .text(format!(
                    "rollbot keeps judging {} and posting summaries, but will not roll back, pause or promote it by itself until {} ({}); it asks in the channel instead. Switch it back on with `/auto {} on`.",
                    svc.name(),
                    until.format("%Y-%m-%d %H:%M UTC"),
                    human_duration(*duration),
                    svc.name()
                ))
                .field("By", req.actor.display_name.clone())
                .field("Reason", or_dash(&req.reason))
        };
        let entry = self
            .record_with(
                req,
                corr,
                Some(svc.name()),
                params,
                AuditOutcome::Succeeded,
                message.plain(),
                change,
            )
            .await?;
        let message = message
            .context(format!("correlation {corr}"))
            .context(format!("audit #{}", entry.seq));
        let announced = self.announce(svc, message.clone(), false, &[]);
        Ok(Outcome {
            status: Status::Succeeded,
            message,
            correlation_id: corr.into(),
            prompt: None,
            announced,
            repeat: false,
            refusal: None,
        })
    }
}
