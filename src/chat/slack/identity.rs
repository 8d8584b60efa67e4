//! Who is asking: the Slack user ID, and the user groups (`S…`) named in
//! `[roles]` that the user belongs to, from `usergroups.users.list`, cached
//! for `usergroup_cache_ttl`.
//!
//! The display name is the mention `<@U…>`: Slack renders it as the
//! person's current display name wherever it appears, whereas the
//! payloads' `user_name` is deprecated and often an old handle. The audit
//! log keeps the same mention, next to the immutable ID.

use super::api::SlackApi;
use crate::config_file::Config;
use crate::domain::{Actor, Platform};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Identities {
    api: Arc<SlackApi>,
    /// The user groups that hold a role; only these are looked up.
    groups: Vec<String>,
    ttl: Duration,
    cache: Mutex<HashMap<String, (Instant, HashSet<String>)>>,
    /// One lookup at a time: a burst of commands waits for one answer
    /// instead of asking Slack once each.
    refresh: tokio::sync::Mutex<()>,
}

impl Identities {
    pub fn new(api: Arc<SlackApi>, config: &Config, ttl: Duration) -> Identities {
        let mut groups: Vec<String> = config
            .roles
            .values()
            .flatten()
            .flat_map(|g| g.members.iter())
            .filter_map(|m| m.as_ref().strip_prefix("slack-group:").map(str::to_string))
            .collect();
        groups.sort();
        groups.dedup();
        Identities {
            api,
            groups,
            ttl,
            cache: Mutex::new(HashMap::new()),
            refresh: tokio::sync::Mutex::new(()),
        }
    }

    fn cached(&self, group: &str) -> Option<HashSet<String>> {
        match self.cache.lock().unwrap().get(group) {
            Some((at, m)) if at.elapsed() < self.ttl => Some(m.clone()),
            _ => None,
        }
    }

    async fn members(&self, group: &str) -> Option<HashSet<String>> {
        if let Some(m) = self.cached(group) {
            return Some(m);
        }
        let _turn = self.refresh.lock().await;
        // Someone else may have looked it up while this one waited.
        if let Some(m) = self.cached(group) {
            return Some(m);
        }
        match self.api.usergroup_members(group).await {
            Ok(users) => {
                let set: HashSet<String> = users.into_iter().collect();
                self.cache
                    .lock()
                    .unwrap()
                    .insert(group.to_string(), (Instant::now(), set.clone()));
                Some(set)
            }
            Err(e) => {
                // Deny by default: a group that cannot be read grants nothing.
                tracing::warn!(group, error = %e, "cannot read Slack user group; its roles are not granted");
                None
            }
        }
    }

    /// The actor for a Slack user, with the role-holding groups it is in.
    pub async fn actor(&self, user_id: &str) -> Actor {
        let mut groups = Vec::new();
        for g in &self.groups {
            if self.members(g).await.is_some_and(|m| m.contains(user_id)) {
                groups.push(format!("slack-group:{g}"));
            }
        }
        Actor::new(Platform::Slack, user_id, mention(user_id)).with_groups(groups)
    }
}

/// How Slack shows a person: `<@U…>`, rendered as their current name.
pub fn mention(user_id: &str) -> String {
    format!("<@{user_id}>")
}
