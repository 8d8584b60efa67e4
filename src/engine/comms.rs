//! What the status page and the pager hear of the engine's results: a
//! change event for every promote and rollback that reached the backend,
//! and a page when a rollback failed or was not verified, or when the
//! platform refused the controller's rollback (the canary it was meant to
//! remove is still there).

use super::{Engine, Refusal, Request, Status};
use crate::chat::Message;
use crate::config_file::ServiceConfig;
use crate::domain::Action;
use crate::incident_comms::{IncidentEvent, IncidentRef, Thread};
use std::collections::BTreeMap;

/// How the controller lists a rollout whose automatic rollback failed (it
/// still waits for a rollback by hand).
const STUCK: &str = "automatic rollback did not complete";

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
        if self.comms().is_none_or(|c| c.is_empty()) {
            return;
        }
        let rollback = matches!(req.action, Action::Rollback { .. });
        let acted = matches!(status, Status::Succeeded | Status::Failed);
        if acted && matches!(req.action, Action::Promote { .. } | Action::Rollback { .. }) {
            self.tell_change(vec![svc.name().to_string()], req, corr, &message.title);
        }
        // A person sees a refusal at once (and may have mistyped a
        // revision); the controller's refused rollback leaves a failing
        // canary nobody else was told about.
        let not_rolled_back = status == Status::Failed
            || (refusal == Some(Refusal::Preflight) && req.actor.is_system());
        if !(rollback && not_rolled_back) {
            return;
        }
        let summary = format!(
            "{}: the rollback asked by {} did not complete; act by hand",
            message.title, req.actor.display_name
        );
        let channel = svc
            .incident_channel
            .as_ref()
            .or(svc.deploy_channel.as_ref())
            .map(|c| c.as_ref().clone());
        let fallback = format!("{}-rollback-{corr}", svc.name());
        self.page(
            svc.name(),
            Thread {
                channel,
                root: Vec::new(),
            },
            summary,
            fallback,
        );
    }

    /// Pages the on-call about `service`, keyed by its rollout (found off
    /// the caller's path), else by `fallback`.
    pub(super) fn page(&self, service: &str, thread: Thread, summary: String, fallback: String) {
        let Some(me) = self.me.upgrade() else { return };
        let Some(hold) = self.comms().map(|c| c.hold()) else {
            return;
        };
        let service = service.to_string();
        tokio::spawn(async move {
            let rollout = crate::controller::rollouts::load_all(&me.store)
                .await
                .unwrap_or_default()
                .into_iter()
                .rev()
                .find(|r| r.service == service && (r.active() || r.state.starts_with(STUCK)))
                .map(|r| r.id)
                .unwrap_or(fallback);
            me.tell_comms(IncidentEvent::Page {
                incident: IncidentRef {
                    rollout,
                    service,
                    thread,
                },
                summary,
            });
            drop(hold);
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
