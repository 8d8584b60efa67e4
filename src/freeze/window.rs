//! Scheduled windows: a cron line gives each window's start, `duration` its
//! length, evaluated in the window's time zone.

use crate::config::{every_service, CronSchedule, GlobPattern, HumanDuration, TimeZone};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// `[freeze]`: how long a `/freeze` lasts, and the scheduled windows.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FreezeConfig {
    /// Length of a `/freeze` without `for DURATION`.
    #[serde(default = "default_freeze")]
    pub default_duration: HumanDuration,
    #[serde(default)]
    pub windows: Vec<WindowConfig>,
}

fn default_freeze() -> HumanDuration {
    HumanDuration(Duration::from_secs(4 * 3600))
}

impl Default for FreezeConfig {
    fn default() -> Self {
        FreezeConfig {
            default_duration: default_freeze(),
            windows: Vec::new(),
        }
    }
}

/// A scheduled window with Argo CD sync-window semantics.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct WindowConfig {
    pub name: String,
    pub kind: WindowKind,
    /// Crontab line (5 fields) for the window's start.
    pub schedule: CronSchedule,
    pub duration: HumanDuration,
    #[serde(default)]
    pub timezone: TimeZone,
    #[serde(default = "every_service")]
    pub services: Vec<GlobPattern>,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowKind {
    /// Promotions are refused while the window is open.
    Deny,
    /// Promotions are allowed only while one such window is open.
    Allow,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ActiveWindow {
    pub name: String,
    pub kind: WindowKind,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub reason: Option<String>,
}

/// The window's current occurrence, if `now` falls inside one: the latest
/// start `s` with `s <= now < s + duration`.
pub fn active(w: &WindowConfig, now: DateTime<Utc>) -> Option<ActiveWindow> {
    let dur = chrono::Duration::from_std(w.duration.0).ok()?;
    let from = (now - dur).with_timezone(&w.timezone.0);
    let start = w.schedule.schedule.after(&from).next()?.with_timezone(&Utc);
    (start <= now).then(|| ActiveWindow {
        name: w.name.clone(),
        kind: w.kind,
        start,
        end: start + dur,
        reason: w.reason.clone(),
    })
}

pub fn next_start(w: &WindowConfig, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    w.schedule
        .schedule
        .after(&now.with_timezone(&w.timezone.0))
        .next()
        .map(|t| t.with_timezone(&Utc))
}
