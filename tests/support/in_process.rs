//! rollbot started inside the test process from config text, the way
//! `rollbot serve` builds it, for tests that drive the engine directly and
//! read its audit log back.

use rollbot::audit::{Entry, Outcome};
use rollbot::chat::ChatSink;
use rollbot::clock::SystemClock;
use rollbot::config_file::Config;
use rollbot::runtime::Runtime;
use std::path::Path;
use std::sync::Arc;

/// Writes `text` to `dir/rollbot.toml`, parses it (a config error fails
/// the test with its message) and starts rollbot with its store in
/// `dir/data`, posting to `chat`.
pub async fn start(dir: &Path, text: &str, chat: Vec<Arc<dyn ChatSink>>) -> Runtime {
    let path = dir.join("rollbot.toml");
    std::fs::write(&path, text).unwrap();
    let config = Config::parse(&path, text).unwrap_or_else(|e| panic!("{e}"));
    rollbot::runtime::start(config, &dir.join("data"), chat, Arc::new(SystemClock))
        .await
        .unwrap()
}

/// The final audit entry of an action: the last of its correlation that
/// succeeded, failed or was refused.
pub fn result_entry(rt: &Runtime, corr: &str) -> Entry {
    let mut found = None;
    rt.engine
        .audit()
        .for_each(&mut |e| {
            if e.record.correlation_id == corr
                && matches!(
                    e.record.outcome,
                    Outcome::Succeeded | Outcome::Failed | Outcome::Refused
                )
            {
                found = Some(e);
            }
            true
        })
        .unwrap();
    found.expect("a result entry")
}
