//! The migration guard (step 2b, rollbacks only): a rollback that would
//! run old code on a schema it cannot read is refused with roll-forward
//! advice, whoever asks. What it crosses comes from the stored rollouts
//! (`controller::rollouts`), each with the migrations CI announced.
//!
//! `force` with a reason by an admin does not act at once: a second person
//! approves it through a prompt (the two-person rule's machinery), and the
//! rollback is audited and announced as break-glass. An automatic rollback
//! that the guard refuses alerts the incident channel and the service's
//! whole escalation chain instead of acting.

use super::refusal::RefusalEntry;
use super::{new_id, Engine, Outcome, Prompt, PromptState, Refusal, Request};
use crate::chat::{ButtonStyle, Message, Severity};
use crate::config_file::ServiceConfig;
use crate::domain::Action;
use crate::engine::prompt::Choice;
use crate::migration::{advice, Migration};
use crate::roles::{Permission, Role};
use serde_json::json;
use std::collections::BTreeMap;

/// The audit parameter (and so the backend's input) naming the
/// migrations a rollback crosses.
pub(super) const CROSSED: &str = "migrations_crossed";

/// The audit parameter of a forced dry run: what a real one would ask a
/// second person to let it cross.
pub(super) const SECOND_PERSON: &str = "needs_second_person";

impl Engine {
    /// The migrations a rollback of `service` to `to` (the previous
    /// revision when `None`) crosses, newest first (see [`crossed_by`]).
    pub async fn migrations_crossed(
        &self,
        service: &str,
        to: Option<&str>,
    ) -> anyhow::Result<Vec<Migration>> {
        let mut chain = crate::controller::rollouts::load_all(&self.store).await?;
        chain.retain(|r| r.service == service && !r.state.starts_with("rolled back"));
        Ok(crossed_by(&chain, to))
    }

    /// Step 2b for a request: records what a rollback crosses in `params`,
    /// and refuses it, or turns a forced one into a prompt for a second
    /// person, when it crosses an irreversible or contract migration.
    pub(super) async fn migration_guard(
        &self,
        req: &Request,
        corr: &str,
        svc: &ServiceConfig,
        params: &mut BTreeMap<String, serde_json::Value>,
    ) -> anyhow::Result<Option<Outcome>> {
        let Action::Rollback { to, force } = &req.action else {
            return Ok(None);
        };
        let crossed = self.migrations_crossed(svc.name(), to.as_deref()).await?;
        if crossed.is_empty() {
            return Ok(None);
        }
        params.insert(CROSSED.into(), json!(crossed));
        let blocking: Vec<&Migration> = crossed.iter().filter(|m| m.blocks_rollback()).collect();
        if blocking.is_empty() {
            return Ok(None);
        }
        if !force {
            return self
                .refuse_past_migration(req, corr, svc, &blocking, params)
                .await
                .map(Some);
        }
        let may = self.roles.check(
            &req.actor,
            Permission::OverrideMigrationGuard,
            &svc.environment,
            svc.name(),
        );
        if may.is_err() {
            let text = format!("{}\nOnly the admin role may roll back past a migration with `force`; ask an admin, or roll forward.", advice(svc.name(), &blocking));
            return self
                .refuse(
                    req,
                    corr,
                    Some(svc),
                    Refusal::NotAllowed,
                    "Break-glass refused",
                    text,
                )
                .await
                .map(Some);
        }
        if req.reason.trim().is_empty() {
            let text = format!("Say why the rollback must cross {}: `/rollback {} force <reason>`. The reason is shown to the approver and kept in the audit log.", ids(&blocking), svc.name());
            return self
                .refuse(
                    req,
                    corr,
                    Some(svc),
                    Refusal::Invalid,
                    "Break-glass needs a reason",
                    text,
                )
                .await
                .map(Some);
        }
        if req.dry_run {
            // No prompt for a dry run: its Approve would run the real
            // rollback. The plan says who would have to approve it.
            params.insert(SECOND_PERSON.into(), json!(ids(&blocking)));
            return Ok(None);
        }
        self.ask_second_person_past_migration(req, corr, svc, &blocking)
            .await
            .map(Some)
    }

    /// A prompt's answer that runs a rollback: the guard again, on what the
    /// rollback crosses now. A forced rollback comes only from the
    /// override prompt (a choice's action lives server-side), so it acts
    /// as break-glass; any other rollback past a blocking migration is
    /// refused like a typed one.
    pub(super) async fn guard_answered_rollback(
        &self,
        req: &Request,
        corr: &str,
        svc: &ServiceConfig,
        action: &Action,
        params: &mut BTreeMap<String, serde_json::Value>,
    ) -> anyhow::Result<Option<Outcome>> {
        let Action::Rollback { to, force } = action else {
            return Ok(None);
        };
        let crossed = self.migrations_crossed(svc.name(), to.as_deref()).await?;
        if crossed.is_empty() {
            return Ok(None);
        }
        params.insert(CROSSED.into(), json!(crossed));
        let blocking: Vec<&Migration> = crossed.iter().filter(|m| m.blocks_rollback()).collect();
        if blocking.is_empty() {
            return Ok(None);
        }
        if *force {
            params.insert("break_glass".into(), json!(true));
            params.insert("overrides".into(), json!("migration_guard"));
            return Ok(None);
        }
        let follow = Request {
            action: action.clone(),
            ..req.clone()
        };
        self.refuse_past_migration(&follow, corr, svc, &blocking, params)
            .await
            .map(Some)
    }

    /// The refusal, with the advice; an automatic rollback refused this
    /// way also alerts the incident channel and the escalation chain.
    async fn refuse_past_migration(
        &self,
        req: &Request,
        corr: &str,
        svc: &ServiceConfig,
        blocking: &[&Migration],
        params: &BTreeMap<String, serde_json::Value>,
    ) -> anyhow::Result<Outcome> {
        let text = advice(svc.name(), blocking);
        let mut entry_params = params.clone();
        entry_params.insert("blocking".into(), json!(ids_list(blocking)));
        if req.actor.is_system() && !req.dry_run {
            entry_params.insert("escalated".into(), json!(svc.escalation));
            self.alert_refused_automatic(req, corr, svc, blocking, &text);
        }
        let entry = RefusalEntry {
            service: Some(svc.name()),
            params: entry_params,
            ..RefusalEntry::default()
        };
        let title = format!("Refused past {}", ids(blocking));
        self.refuse_recorded(req, corr, entry, Refusal::MigrationGuard, &title, text)
            .await
    }

    /// rollbot wanted to roll back by itself and must not: people must
    /// decide now, so it says so loudly where incidents are handled.
    fn alert_refused_automatic(
        &self,
        req: &Request,
        corr: &str,
        svc: &ServiceConfig,
        blocking: &[&Migration],
        advice: &str,
    ) {
        let mut m = Message::new(
            Severity::Critical,
            format!(
                "Automatic rollback of {} refused: it would cross {}",
                svc.name(),
                ids(blocking)
            ),
        )
        .text(format!(
            "rollbot did not act: the canary is still failing and needs a person now.\n{advice}"
        ))
        .field("Why rollbot wanted to roll back", req.reason.clone())
        .context(format!("correlation {corr}"));
        for who in &svc.escalation {
            m = m.mention(who.clone());
        }
        self.announce(svc, m, true, &[]);
    }

    /// The two-person rule for a forced rollback past a migration.
    async fn ask_second_person_past_migration(
        &self,
        req: &Request,
        corr: &str,
        svc: &ServiceConfig,
        blocking: &[&Migration],
    ) -> anyhow::Result<Outcome> {
        let name = svc.name();
        let question = format!(
            "{} asks to roll back {name} past {} (break-glass). Old code may break on the schema these migrations left; the safe alternative is to roll forward, or to stop traffic, reverse the migration, deploy the old code and start traffic again. A second person with the approver role must approve.",
            req.actor.display_name,
            blocking.iter().map(|m| format!("{} ({})", m.id, m.why_blocking())).collect::<Vec<_>>().join(", "),
        );
        let now = self.clock.now();
        let prompt = Prompt {
            id: new_id(),
            service: name.into(),
            title: format!("Approve break-glass rollback of {name}?"),
            question,
            requested_by: req.actor.clone(),
            reason: req.reason.clone(),
            approve: Choice {
                label: "Approve rollback".into(),
                action: Some(req.action.clone()),
                style: ButtonStyle::Danger,
            },
            reject: Choice {
                label: "Reject".into(),
                action: None,
                style: ButtonStyle::Default,
            },
            other: None,
            allowed_roles: vec![Role::Approver, Role::Admin],
            other_person_required: true,
            promotes: false,
            created: now,
            expires: now + chrono::Duration::from_std(self.config.engine.prompt_ttl.0)?,
            channel: svc.deploy_channel.as_ref().map(|c| c.as_ref().clone()),
            thread: vec![],
            messages: vec![],
            correlation_id: corr.into(),
            state: PromptState::Open,
            escalated: 0,
        };
        self.post_prompt(prompt, req).await
    }

    /// Tells the deploy and incident channels that a rollback crossed the
    /// migration guard as break-glass.
    pub(super) fn announce_migration_override(
        &self,
        req: &Request,
        corr: &str,
        svc: &ServiceConfig,
        params: &BTreeMap<String, serde_json::Value>,
    ) {
        let crossed: Vec<Migration> = crossed_in(params);
        let list: Vec<String> = crossed.iter().map(|m| m.to_string()).collect();
        let warn = Message::new(
            Severity::Critical,
            format!(
                "Break-glass: {} rolled back {} past a migration guard",
                req.actor.display_name,
                svc.name()
            ),
        )
        .text(format!(
            "Migrations crossed: {}. Check the database against the old code now, and run the data fix-ups the deploy hooks report.",
            list.join(", ")
        ))
        .field("Reason", req.reason.clone())
        .context(format!("correlation {corr}"));
        self.announce(svc, warn, true, &[]);
    }
}

/// The migrations an action's parameters say it crosses (none when absent).
/// What going back to `to` undoes in `chain` (a service's rollouts still
/// in effect, oldest first), newest first. `None` means where the newest
/// rollout started from. Every rollout since `to` was left running counts:
/// from the first one that started from `to` after the last one that made
/// it, to the newest, so a canary replaced without a promotion or a
/// rollback (v7 → v9, then v7 → v10) still has its migrations crossed.
/// A `to` no rollout names crosses them all.
fn crossed_by(chain: &[crate::controller::Rollout], to: Option<&str>) -> Vec<Migration> {
    let Some(target) = to.or_else(|| chain.last().map(|r| r.from_revision.as_str())) else {
        return Vec::new();
    };
    let after = chain
        .iter()
        .rposition(|r| r.to_revision == target)
        .map_or(0, |i| i + 1);
    let begin = chain[after..]
        .iter()
        .position(|r| r.from_revision == target)
        .map_or(after, |i| after + i);
    // Undone in the reverse of the order they ran.
    chain[begin..]
        .iter()
        .rev()
        .flat_map(|r| r.migrations.iter().rev().cloned())
        .collect()
}

pub(super) fn crossed_in(params: &BTreeMap<String, serde_json::Value>) -> Vec<Migration> {
    params
        .get(CROSSED)
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default()
}

fn ids_list(ms: &[&Migration]) -> Vec<String> {
    ms.iter().map(|m| m.id.clone()).collect()
}

/// "migration 2026_12_drop_sku" or "migrations a, b".
fn ids(ms: &[&Migration]) -> String {
    let l = ids_list(ms);
    match l.len() {
        1 => format!("migration {}", l[0]),
        _ => format!("migrations {}", l.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::crossed_by;
    use crate::controller::Rollout;
    use crate::migration::{Migration, Phase};

    fn rollout(from: &str, to: &str, migration: &str) -> Rollout {
        Rollout {
            migrations: vec![Migration {
                id: migration.into(),
                reversible: false,
                phase: Phase::Expand,
            }],
            ..Rollout::watching(
                format!("r-{to}"),
                "payments",
                (from.into(), to.into()),
                chrono::Utc::now(),
                "api:ci",
            )
        }
    }

    fn ids(ms: Vec<Migration>) -> Vec<String> {
        ms.into_iter().map(|m| m.id).collect()
    }

    #[test]
    fn a_replaced_canarys_migration_is_crossed_too() {
        // v9's canary ran m9, then v10 replaced it, both from stable v7.
        let chain = [rollout("v7", "v9", "m9"), rollout("v7", "v10", "m10")];
        assert_eq!(ids(crossed_by(&chain, None)), ["m10", "m9"]);
        assert_eq!(ids(crossed_by(&chain, Some("v7"))), ["m10", "m9"]);
    }

    #[test]
    fn a_chain_is_crossed_back_to_the_revision_asked_for_and_no_further() {
        let chain = [
            rollout("v5", "v6", "m6"),
            rollout("v7", "v8", "m8"),
            rollout("v8", "v9", "m9"),
        ];
        assert_eq!(ids(crossed_by(&chain, None)), ["m9"]);
        assert_eq!(ids(crossed_by(&chain, Some("v8"))), ["m9"]);
        // v7 was never announced: from the first rollout that left it.
        assert_eq!(ids(crossed_by(&chain, Some("v7"))), ["m9", "m8"]);
        assert_eq!(ids(crossed_by(&chain, Some("v9"))), Vec::<String>::new());
        // A revision no rollout names: everything rollbot knows of.
        assert_eq!(ids(crossed_by(&chain, Some("v3"))), ["m9", "m8", "m6"]);
    }
}
