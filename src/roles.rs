//! Roles and permissions, deny by default.
//!
//! A role is granted to immutable platform IDs (a user or a group) on a set of
//! services. Every action needs one permission; a refusal names the
//! permission and the roles that grant it.

use crate::config::{every_service, ConfigError, GlobPattern};
use crate::domain::Actor;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::path::Path;
use toml::Spanned;

/// One grant of a role in `[[roles.ROLE]]`: who holds it, on which services.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleGrant {
    /// Platform-qualified immutable IDs: `slack:U…`, `slack-group:S…`,
    /// `discord:…`, `discord-role:…`, `console:NAME`, `api:NAME`, `system:controller`.
    pub members: Vec<Spanned<String>>,
    /// Service globs over `ENVIRONMENT/NAME` (or NAME); default: every service.
    #[serde(default = "every_service")]
    pub services: Vec<GlobPattern>,
}

/// Every member of every grant is a platform-qualified immutable ID.
pub fn check_grants(
    roles: &BTreeMap<Role, Vec<RoleGrant>>,
    path: &Path,
    source: &str,
) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    for grants in roles.values() {
        for g in grants {
            for m in &g.members {
                if let Err(e) = check_member(m.as_ref()) {
                    errors.push(ConfigError::at(path, source, Some(m.span()), e));
                }
            }
        }
    }
    errors
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Viewer,
    Deployer,
    Approver,
    Responder,
    ReleaseManager,
    Admin,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Role::Viewer,
        Role::Deployer,
        Role::Approver,
        Role::Responder,
        Role::ReleaseManager,
        Role::Admin,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Deployer => "deployer",
            Role::Approver => "approver",
            Role::Responder => "responder",
            Role::ReleaseManager => "release-manager",
            Role::Admin => "admin",
        }
    }

    /// What the role allows. Every role can read status and audit; admin can
    /// do everything.
    pub fn grants(self, p: Permission) -> bool {
        use Permission::*;
        match self {
            Role::Admin => true,
            Role::Viewer => p == View,
            Role::Deployer => matches!(p, View | Promote | Resume),
            Role::Approver => matches!(p, View | AnswerPrompt | Fallback),
            Role::Responder => matches!(p, View | Rollback | Pause | Resume | Fallback),
            Role::ReleaseManager => matches!(p, View | Freeze),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Permission {
    /// `/status`, `/audit`.
    View,
    Promote,
    Rollback,
    Pause,
    Resume,
    /// Approve or reject a prompt.
    AnswerPrompt,
    /// `/freeze` and `/unfreeze`.
    Freeze,
    /// Promote through a freeze with `force` (break-glass).
    OverrideFreeze,
    /// Roll back past an irreversible or contract migration with `force`
    /// (break-glass, and a second person approves).
    OverrideMigrationGuard,
    /// Try a service's fallback (traffic to stable, a flag off) when a
    /// rollback left it stuck: the people who may roll back or answer.
    Fallback,
}

impl Permission {
    pub fn name(self) -> &'static str {
        match self {
            Permission::View => "view",
            Permission::Promote => "promote",
            Permission::Rollback => "rollback",
            Permission::Pause => "pause",
            Permission::Resume => "resume",
            Permission::AnswerPrompt => "answer prompts",
            Permission::Freeze => "freeze",
            Permission::OverrideFreeze => "override a freeze",
            Permission::OverrideMigrationGuard => "roll back past a migration",
            Permission::Fallback => "try a fallback",
        }
    }

    /// The roles that carry this permission, for refusal messages.
    pub fn granted_by(self) -> Vec<Role> {
        Role::ALL.into_iter().filter(|r| r.grants(self)).collect()
    }
}

/// Why an actor may not do something, phrased for the person refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub permission: Permission,
    pub service: String,
    pub roles: Vec<Role>,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let roles: Vec<&str> = self.roles.iter().map(|r| r.name()).collect();
        write!(
            f,
            "you do not have the `{}` permission on {}; it comes with the role{} {} — ask someone who holds {} or a rollbot admin",
            self.permission.name(),
            self.service,
            if roles.len() == 1 { "" } else { "s" },
            roles.join(", "),
            if roles.len() == 1 { "it" } else { "one of them" },
        )
    }
}

struct Grant {
    role: Role,
    members: HashSet<String>,
    services: globset::GlobSet,
}

/// Who holds which role on which services.
pub struct RoleBook {
    grants: Vec<Grant>,
}

/// rollbot's own controller may roll back, pause and promote; whether it does
/// is the service policy's decision, not a role's.
const BUILT_IN: &[(&str, Role)] = &[
    ("system:controller", Role::Responder),
    ("system:controller", Role::Deployer),
];

impl RoleBook {
    /// The grants of `[roles]`, and the controller's own.
    pub fn new(roles: &BTreeMap<Role, Vec<RoleGrant>>) -> RoleBook {
        let mut grants = Vec::new();
        for (role, list) in roles {
            for g in list {
                grants.push(build_grant(*role, g));
            }
        }
        for (member, role) in BUILT_IN {
            grants.push(Grant {
                role: *role,
                members: [member.to_string()].into(),
                services: glob_set(&["*"]),
            });
        }
        RoleBook { grants }
    }

    /// Roles the actor holds on a service (`environment/name`).
    pub fn roles_on(&self, actor: &Actor, environment: &str, name: &str) -> BTreeSet<Role> {
        let ids = actor.identities();
        let key = format!("{environment}/{name}");
        self.grants
            .iter()
            .filter(|g| ids.iter().any(|id| g.members.contains(id)))
            .filter(|g| g.services.is_match(&key) || g.services.is_match(name))
            .map(|g| g.role)
            .collect()
    }

    pub fn check(
        &self,
        actor: &Actor,
        p: Permission,
        environment: &str,
        name: &str,
    ) -> Result<(), Refusal> {
        if self
            .roles_on(actor, environment, name)
            .iter()
            .any(|r| r.grants(p))
        {
            Ok(())
        } else {
            Err(Refusal {
                permission: p,
                service: name.to_string(),
                roles: p.granted_by(),
            })
        }
    }

    /// Every role an actor holds anywhere, for `/help` and `/status`.
    pub fn all_roles(&self, actor: &Actor) -> BTreeMap<Role, Vec<String>> {
        let ids = actor.identities();
        let mut out: BTreeMap<Role, Vec<String>> = BTreeMap::new();
        for g in &self.grants {
            if ids.iter().any(|id| g.members.contains(id)) {
                out.entry(g.role)
                    .or_default()
                    .push(format!("{} service pattern(s)", g.services.len()));
            }
        }
        out
    }
}

fn glob_set(patterns: &[&str]) -> globset::GlobSet {
    let mut b = globset::GlobSetBuilder::new();
    for p in patterns {
        // Patterns were checked when the config was read.
        if let Ok(g) = globset::GlobBuilder::new(p)
            .literal_separator(false)
            .build()
        {
            b.add(g);
        }
    }
    b.build().expect("checked globs build")
}

fn build_grant(role: Role, g: &RoleGrant) -> Grant {
    let patterns: Vec<&str> = g.services.iter().map(|p| p.0.as_str()).collect();
    Grant {
        role,
        members: g.members.iter().map(|m| m.as_ref().clone()).collect(),
        services: glob_set(&patterns),
    }
}

/// Checks a `[roles]` member: a platform-qualified immutable ID.
pub fn check_member(member: &str) -> Result<(), String> {
    let help =
        "members are immutable IDs: slack:U0123ABCD (user), slack-group:S0456EFGH (user group), \
                discord:812345678901234567 (user), discord-role:945678901234567890 (role), \
                console:NAME, api:NAME or system:controller — never display names";
    let Some((kind, id)) = member.split_once(':') else {
        return Err(format!("`{member}` has no platform prefix; {help}"));
    };
    let slack_id = |first: &[char]| {
        id.len() >= 3
            && id.starts_with(first)
            && id
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
    };
    let ok = match kind {
        "slack" => slack_id(&['U', 'W', 'B']),
        "slack-group" => slack_id(&['S']),
        "discord" | "discord-role" => {
            id.len() >= 15 && id.len() <= 21 && id.chars().all(|c| c.is_ascii_digit())
        }
        "console" | "api" | "system" => {
            !id.is_empty()
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        }
        _ => return Err(format!("`{member}`: unknown platform `{kind}`; {help}")),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("`{member}` is not a valid {kind} ID; {help}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_must_be_immutable_ids() {
        assert!(check_member("slack:U0123ABCD").is_ok());
        assert!(check_member("slack-group:S0456EFGH").is_ok());
        assert!(check_member("discord:812345678901234567").is_ok());
        assert!(check_member("discord-role:945678901234567890").is_ok());
        assert!(check_member("console:alice").is_ok());
        assert!(check_member("@alice")
            .unwrap_err()
            .contains("no platform prefix"));
        assert!(check_member("slack:alice")
            .unwrap_err()
            .contains("not a valid slack ID"));
        assert!(check_member("slack-group:U0123").is_err());
        assert!(check_member("discord:alice#1234").is_err());
        assert!(check_member("teams:123")
            .unwrap_err()
            .contains("unknown platform"));
    }

    #[test]
    fn refusal_names_permission_and_roles() {
        let r = Refusal {
            permission: Permission::Rollback,
            service: "checkout".into(),
            roles: Permission::Rollback.granted_by(),
        };
        let text = r.to_string();
        assert!(text.contains("`rollback` permission on checkout"), "{text}");
        assert!(text.contains("responder, admin"), "{text}");
    }
}
