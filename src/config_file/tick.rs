//! `[metrics] interval` against Prometheus' scrape interval: a tick shorter
//! than two scrapes often has no new sample in its window, so it judges
//! nothing new (and `increase()` over one sample answers nothing at all).

use super::Config;
use crate::config::{find_span, ConfigError};
use crate::domain::human_duration;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

/// The span of `interval = …` in `[metrics]`, else of the section header.
fn interval_span(source: &str) -> Option<Range<usize>> {
    let header = find_span(source, "metrics")?;
    let body = &source[header.end..];
    let end = body.find("\n[").map_or(source.len(), |i| header.end + i);
    let mut offset = header.end;
    for line in source[header.end..end].split_inclusive('\n') {
        let trimmed = line.trim_start();
        let key = trimmed.split(['=', ' ', '\t']).next().unwrap_or("");
        if key == "interval" {
            let start = offset + (line.len() - trimmed.len());
            return Some(start..start + key.len());
        }
        offset += line.len();
    }
    Some(header)
}

/// A warning at `interval` when it is shorter than two scrapes of
/// `scrape` (`whence` says where that figure came from).
pub fn short_interval(
    path: &Path,
    source: &str,
    interval: Duration,
    scrape: Duration,
    whence: &str,
) -> Option<ConfigError> {
    if interval >= scrape * 2 {
        return None;
    }
    Some(
        ConfigError::at(
            path,
            source,
            interval_span(source),
            format!(
                "[metrics] interval = \"{}\" is shorter than two scrapes ({whence} scrapes every {}): a tick's window often holds no new sample; the judge's evidence step is {} whatever the interval, so shorter ticks only query more",
                human_duration(interval),
                human_duration(scrape),
                human_duration(crate::judge::window::evidence_step(Some(scrape), interval))
            ),
        )
        .help(format!(
            "interval = \"{}\" (or longer)",
            human_duration(scrape * 2)
        )),
    )
}

impl Config {
    /// The check with `[metrics] scrape_interval`, when it is set (without
    /// it, `check-config` asks Prometheus).
    pub(super) fn tick_warnings(&self, path: &Path, source: &str) -> Vec<ConfigError> {
        let m = &self.metrics;
        m.scrape_interval
            .as_ref()
            .and_then(|s| {
                short_interval(
                    path,
                    source,
                    m.interval.0,
                    s.0,
                    "[metrics] scrape_interval says Prometheus",
                )
            })
            .into_iter()
            .collect()
    }
}
