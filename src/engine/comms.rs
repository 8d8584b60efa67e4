//! What the status page and the pager hear of the engine's results: a
//! change event for every promote and rollback that reached the backend,
//! and a page when a rollback failed, was not verified or was refused by
//! the platform (the canary it was meant to remove is still there).

use super::{Engine, Refusal, Request, Status};
use crate::chat::Message;
use crate::config_file::ServiceConfig;
use crate::domain::Action;
use crate::incident_comms::{IncidentEvent, IncidentRef, Thread};
use std::collections::BTreeMap;

impl Engine {
    /// Tells the status page and the pager how a backend action ended.
    pub(super) fn tell_result(
        &self,
        req: &Request,
        corr: &str,
        svc: &ServiceConfig,
        (status, refusal): (Status, Option<Refusal>),
        message: &Message,
    ) {
        if self.comms().is_none() {
            return;
        }
        let rollback = matches!(req.action, Action::Rollback { .. });
        let acted = matches!(status, Status::Succeeded | Status::Failed);
        if acted && matches!(req.action, Action::Promote { .. } | Action::Rollback { .. }) {
            self.tell_change(vec![svc.name().to_string()], req, corr, &message.title);
        }
        let not_rolled_back = status == Status::Failed || refusal == Some(Refusal::Preflight);
        if !(rollback && not_rolled_back) {
            return;
        }
        let summary = format!(
            "{}: the rollback asked by {} did not complete; act by hand",
            message.title, req.actor.display_name
        );
        let service = svc.name().to_string();
        let channel = svc
            .incident_channel
            .as_ref()
            .or(svc.deploy_channel.as_ref())
            .map(|c| c.as_ref().clone());
        let fallback = format!("{service}-rollback-{corr}");
        let Some(me) = self.me.upgrade() else { return };
        // The page is keyed by the service's rollout, found off the action's path.
        tokio::spawn(async move {
            let rollout = crate::controller::rollouts::load_all(&me.store)
                .await
                .unwrap_or_default()
                .into_iter()
                .rev()
                .find(|r| r.service == service && r.start <= me.clock.now())
                .map(|r| r.id)
                .unwrap_or(fallback);
            me.tell_comms(IncidentEvent::Page {
                incident: IncidentRef {
                    rollout,
                    service,
                    thread: Thread {
                        channel,
                        root: Vec::new(),
                    },
                },
                summary,
            });
        });
    }

    /// A change event for the paging timeline.
    pub(super) fn tell_change(&self, services: Vec<String>, req: &Request, corr: &str, what: &str) {
        let mut details = BTreeMap::new();
        details.insert("action".to_string(), req.action.name().to_string());
        details.insert("by".to_string(), req.actor.qualified_id());
        details.insert("reason".to_string(), req.reason.clone());
        details.insert("correlation".to_string(), corr.to_string());
        self.tell_comms(IncidentEvent::Change {
            services,
            summary: format!("{what} (by {})", req.actor.display_name),
            details,
        });
    }
}
