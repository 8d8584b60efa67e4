//! Freezes in the engine: the freeze check of a promotion with its
//! break-glass rules (step 2), the same check when a promotion's prompt is
//! approved, and `/freeze` / `/unfreeze`. Rollbacks are never frozen.

use super::refusal::RefusalEntry;
use super::{or_dash, Engine, Outcome, Refusal, Request, Status};
use crate::audit::{Entry, Outcome as AuditOutcome};
use crate::chat::{Message, Severity};
use crate::config_file::ServiceConfig;
use crate::domain::{human_duration, Action, Actor, Scope};
use crate::freeze::{AdHocFreeze, Block};
use crate::roles::Permission;
use chrono::{DateTime, Utc};
use serde_json::json;
use std::collections::BTreeMap;

/// What the freezes say about promoting a service now.
#[derive(Debug)]
pub enum FreezeGate {
    /// No freeze holds it.
    Open,
    /// A freeze holds it, and `force` with a reason by someone allowed to
    /// override passes it: audited with `break_glass = true` and announced.
    BreakGlass(Block),
    /// The promotion is refused, and why.
    Refused {
        why: Refusal,
        title: &'static str,
        text: String,
    },
}

impl Engine {
    /// The freeze check of a promotion of `svc` by `actor`, with the
    /// break-glass rules: `force` needs the override permission (admins) and
    /// a reason. Chat adapters ask it too, to know before deferring whether
    /// the engine will refuse.
    pub async fn freeze_gate(
        &self,
        actor: &Actor,
        svc: &ServiceConfig,
        force: bool,
        reason: &str,
    ) -> anyhow::Result<FreezeGate> {
        let Some(block) = self
            .freezes
            .promotion_block(&svc.environment, svc.name(), self.clock.now())
            .await?
        else {
            return Ok(FreezeGate::Open);
        };
        if !force {
            let hint = format!("Rollbacks are not affected. An admin can promote through it with `/promote {} force <reason>` (break-glass, audited and announced).", svc.name());
            return Ok(FreezeGate::Refused {
                why: Refusal::Frozen,
                title: "Promotion refused: frozen",
                text: format!("{block}.\n{hint}"),
            });
        }
        let may_override = self
            .roles
            .check(
                actor,
                Permission::OverrideFreeze,
                &svc.environment,
                svc.name(),
            )
            .is_ok();
        if !may_override {
            return Ok(FreezeGate::Refused {
                why: Refusal::NotAllowed,
                title: "Break-glass refused",
                text: format!(
                    "{block}.\nOnly the admin role may promote through a freeze with `force`."
                ),
            });
        }
        if reason.trim().is_empty() {
            return Ok(FreezeGate::Refused {
                why: Refusal::Invalid,
                title: "Break-glass needs a reason",
                text: format!(
                    "{block}.\nSay why: `/promote {} force <reason>`.",
                    svc.name()
                ),
            });
        }
        Ok(FreezeGate::BreakGlass(block))
    }

    /// Step 2 for a request: refuses a frozen promotion, or marks a
    /// break-glass one in `params` (its audit entries and announcement).
    pub(super) async fn check_freeze(
        &self,
        req: &Request,
        corr: &str,
        svc: &ServiceConfig,
        params: &mut BTreeMap<String, serde_json::Value>,
    ) -> anyhow::Result<Option<Outcome>> {
        let Action::Promote { force, .. } = &req.action else {
            return Ok(None);
        };
        match self
            .freeze_gate(&req.actor, svc, *force, &req.reason)
            .await?
        {
            FreezeGate::Open => Ok(None),
            FreezeGate::BreakGlass(block) => {
                params.insert("break_glass".into(), json!(true));
                params.insert("freeze".into(), json!(block.to_string()));
                Ok(None)
            }
            FreezeGate::Refused { why, title, text } => self
                .refuse(req, corr, Some(svc), why, title, text)
                .await
                .map(Some),
        }
    }

    /// Approving a promotion's prompt during a freeze is refused; the prompt
    /// stays open.
    pub(super) async fn check_freeze_on_approval(
        &self,
        req: &Request,
        corr: &str,
        svc: &ServiceConfig,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Option<Outcome>> {
        let Some(block) = self
            .freezes
            .promotion_block(&svc.environment, svc.name(), now)
            .await?
        else {
            return Ok(None);
        };
        self.refuse(req, corr, Some(svc), Refusal::Frozen, "Approval refused: frozen", format!("{block}.\nThe prompt stays open; approve it after the freeze, or an admin can `/promote {} force <reason>`.", svc.name()))
            .await
            .map(Some)
    }

    /// Tells the deploy and incident channels that a promotion went through
    /// a freeze (`params` holds `break_glass` and the freeze).
    pub(super) fn announce_break_glass(
        &self,
        req: &Request,
        corr: &str,
        svc: &ServiceConfig,
        params: &BTreeMap<String, serde_json::Value>,
    ) {
        let warn = Message::new(
            Severity::Critical,
            format!(
                "Break-glass: {} promoted {} through a freeze",
                req.actor.display_name,
                svc.name()
            ),
        )
        .text(
            params
                .get("freeze")
                .and_then(|v| v.as_str())
                .unwrap_or_default(),
        )
        .field("Reason", req.reason.clone())
        .context(format!("correlation {corr}"));
        self.tell_change(vec![svc.name().to_string()], req, corr, &warn.title);
        self.announce(svc, warn, true, &[]);
    }

    /// `/freeze` and `/unfreeze`: the scope must cover a service, and the
    /// actor needs the freeze permission on every service it covers.
    pub(super) async fn freeze_action(
        &self,
        req: &Request,
        corr: &str,
        scope: &Scope,
    ) -> anyhow::Result<Outcome> {
        let covered: Vec<&ServiceConfig> = self
            .config
            .services
            .iter()
            .filter(|s| scope.covers(&s.environment, s.name()))
            .collect();
        if covered.is_empty() {
            let names = self.config.service_names();
            let near = crate::config::closest(&scope.to_string(), names.iter().copied());
            let hint = match near.first() {
                Some(n) => format!("did you mean {n}?"),
                None => format!("known services: {}", names.join(", ")),
            };
            return self.refuse(req, corr, None, Refusal::UnknownService, "Scope matches no service", format!("`{scope}` covers no service; {hint} A scope is a service, a glob such as `prod/*`, or `all`.")).await;
        }
        for s in &covered {
            if let Err(r) =
                self.roles
                    .check(&req.actor, Permission::Freeze, &s.environment, s.name())
            {
                return self
                    .refuse(
                        req,
                        corr,
                        None,
                        Refusal::NotAllowed,
                        "Not allowed",
                        r.to_string(),
                    )
                    .await;
            }
        }
        self.once(req, corr, self.apply_freeze(req, corr, scope, &covered))
            .await
    }

    /// Records and applies an authorized freeze or unfreeze, then tells
    /// the deploy channels of the services it covers.
    async fn apply_freeze(
        &self,
        req: &Request,
        corr: &str,
        scope: &Scope,
        covered: &[&ServiceConfig],
    ) -> anyhow::Result<Outcome> {
        let now = self.clock.now();
        let names: Vec<&str> = covered.iter().map(|s| s.name()).collect();
        let change = FreezeChange {
            req,
            corr,
            scope,
            covered,
            service: if covered.len() == 1 {
                Some(covered[0].name())
            } else {
                None
            },
            params: BTreeMap::from([
                ("scope".to_string(), json!(scope.to_string())),
                ("services".to_string(), json!(names)),
            ]),
        };
        let (message, entry) = match &req.action {
            Action::Freeze { duration, .. } => {
                let freeze = AdHocFreeze {
                    scope: scope.clone(),
                    author: req.actor.clone(),
                    reason: req.reason.clone(),
                    start: now,
                    until: now + chrono::Duration::from_std(*duration)?,
                };
                self.add_freeze(change, freeze).await?
            }
            _ => match self.lift_freeze(change, now).await? {
                Ok(done) => done,
                Err(refused) => return Ok(refused),
            },
        };
        let message = message
            .context(format!("correlation {corr}"))
            .context(format!("audit #{}", entry.seq));
        let mut channels: Vec<String> = covered
            .iter()
            .filter_map(|s| s.deploy_channel.as_ref().map(|c| c.as_ref().clone()))
            .collect();
        channels.sort();
        channels.dedup();
        for ch in &channels {
            self.notifier.post_detached(ch.clone(), message.clone());
        }
        let services = names.iter().map(|n| n.to_string()).collect();
        self.tell_change(services, req, corr, &message.title);
        Ok(Outcome {
            announced: !channels.is_empty(),
            ..Outcome::new(Status::Succeeded, message, corr)
        })
    }

    /// Stores an ad hoc freeze: its `requested` entry first, then the freeze
    /// and its `succeeded` entry in one commit.
    async fn add_freeze(
        &self,
        mut change: FreezeChange<'_>,
        f: AdHocFreeze,
    ) -> anyhow::Result<(Message, Entry)> {
        let req = change.req;
        change
            .params
            .insert("until".into(), json!(f.until.to_rfc3339()));
        self.record_freeze_request(&change).await?;
        let m = Message::new(Severity::Warning, format!("Frozen: {}", change.scope))
            .text(format!(
                "Promotions of {} are refused until {} ({}). Rollbacks are not affected.",
                change.names().join(", "),
                f.until.format("%Y-%m-%d %H:%M UTC"),
                human_duration((f.until - f.start).to_std().unwrap_or_default())
            ))
            .field("By", req.actor.display_name.clone())
            .field("Reason", or_dash(&req.reason));
        let rec = self.record_of(
            req,
            change.corr,
            change.service,
            change.params,
            AuditOutcome::Succeeded,
            m.plain(),
        );
        let mut entries = self.freezes.add(&f, vec![rec]).await?;
        self.telemetry.audit_appends.inc();
        Ok((m, entries.remove(0)))
    }

    /// Lifts the ad hoc freeze on exactly `change.scope`: its `requested`
    /// entry first, then the removal and its `succeeded` entry in one
    /// commit. Without such a freeze the unfreeze is refused, naming the
    /// freezes that do cover the services.
    async fn lift_freeze(
        &self,
        change: FreezeChange<'_>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Result<(Message, Entry), Outcome>> {
        let (req, corr, scope) = (change.req, change.corr, change.scope);
        self.record_freeze_request(&change).await?;
        let names = change.names();
        let unfrozen = |f: &AdHocFreeze| {
            Message::new(Severity::Success, format!("Unfrozen: {scope}")).text(format!(
                "The freeze by {} ({}) is lifted; promotions of {} are allowed again.",
                f.author.display_name,
                or_dash(&f.reason),
                names.join(", ")
            ))
        };
        let removed = self
            .freezes
            .remove(scope, |f| {
                vec![self.record_of(
                    req,
                    corr,
                    change.service,
                    change.params.clone(),
                    AuditOutcome::Succeeded,
                    unfrozen(f).plain(),
                )]
            })
            .await?;
        if let Some((f, mut entries)) = removed {
            self.telemetry.audit_appends.inc();
            return Ok(Ok((unfrozen(&f), entries.remove(0))));
        }
        let others: Vec<String> = self
            .freezes
            .active_ad_hoc(now)
            .await?
            .iter()
            .filter(|f| {
                change
                    .covered
                    .iter()
                    .any(|s| f.scope.covers(&s.environment, s.name()))
            })
            .map(|f| format!("`{}` by {}", f.scope, f.author.display_name))
            .collect();
        let text = if others.is_empty() {
            format!("There is no freeze on `{scope}`.")
        } else {
            format!("There is no freeze on exactly `{scope}`; these cover it: {}. Lift one with `/unfreeze <that scope>`.", others.join(", "))
        };
        let entry = RefusalEntry {
            service: change.service,
            params: change.params,
            ..RefusalEntry::default()
        };
        let refused = self
            .refuse_recorded(
                req,
                corr,
                entry,
                Refusal::NotFrozen,
                "Nothing to unfreeze",
                text,
            )
            .await?;
        Ok(Err(refused))
    }

    /// The `requested` entry of a freeze or unfreeze.
    async fn record_freeze_request(&self, change: &FreezeChange<'_>) -> anyhow::Result<()> {
        self.record(
            change.req,
            change.corr,
            change.service,
            change.params.clone(),
            AuditOutcome::Requested,
            String::new(),
        )
        .await?;
        Ok(())
    }
}

/// A freeze or unfreeze on its way to the store.
struct FreezeChange<'a> {
    req: &'a Request,
    corr: &'a str,
    scope: &'a Scope,
    covered: &'a [&'a ServiceConfig],
    /// The service its audit entries name, when the scope covers one.
    service: Option<&'a str>,
    params: BTreeMap<String, serde_json::Value>,
}

impl FreezeChange<'_> {
    fn names(&self) -> Vec<&str> {
        self.covered.iter().map(|s| s.name()).collect()
    }
}
