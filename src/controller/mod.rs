//! The controller: watches a rollout tick by tick, asks the judge, and acts
//! through the engine according to the service's policy.
//!
//! - `failing`: roll back (`auto_rollback`) or ask Roll back / Continue
//!   (`page_and_suggest`);
//! - `borderline`: pause the rollout and ask Approve / Roll back in the
//!   summary's thread;
//! - `healthy` with a promote recommendation: promote when `auto_promote`.
//!
//! It never acts on `no_data`. Every action goes through the engine as the
//! actor `system:controller`, so it is authorized, locked and audited like a
//! person's.

pub(crate) mod before_after;
pub mod bench;
pub(crate) mod capability;
pub(crate) mod chart;
mod checks;
pub mod history;
mod incident;
mod monitoring;
mod onset;
pub mod postmortem;
mod resolution;
pub mod rollouts;
mod run;
mod summary;
mod watch;

pub use before_after::Strategy;
pub use resolution::scrape_interval_of;
pub use rollouts::Rollout;
pub use run::{Controller, Health};
pub use summary::{short_reason, short_reason_of, summary_message, summary_message_of, Sides};
pub use watch::{RolloutWatch, WatchState};
