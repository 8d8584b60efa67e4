//! The judge's evidence step: what each judged window spans, whatever the
//! controller's tick length (`[metrics] interval`).
//!
//! Every tick fetches the steps since the last one, each window one
//! evidence step long, and the judge takes each as its own observation
//! (`judge::window`), so a 60 s tick sees what six 10 s ticks see. The step
//! is the scrape interval (`[metrics] scrape_interval`, else asked of the
//! metric source once at start) or 10 s, whichever is longer (a shorter
//! window would often hold no new sample); a tick shorter than 10 s keeps
//! its own length as the floor.

use super::Controller;
use crate::domain::human_duration;
use crate::judge::window::evidence_step;
use std::time::Duration;

/// What the controller knows of the scrape interval.
#[derive(Clone, Debug, Default)]
pub(super) struct Resolution {
    pub scrape: Option<Duration>,
    /// Where `scrape` came from, for messages.
    pub whence: &'static str,
}

impl Resolution {
    pub fn from_config(scrape: Option<Duration>) -> Resolution {
        Resolution {
            scrape,
            whence: "[metrics] scrape_interval says Prometheus",
        }
    }
}

impl Controller {
    /// How long each judged window is.
    pub fn evidence_step(&self) -> Duration {
        evidence_step(self.resolution.lock().unwrap().scrape, self.interval())
    }

    /// Asks the metric source how often it scrapes, unless the config says.
    /// A source that cannot tell (or is down) leaves the step at its floor.
    pub async fn learn_scrape_interval(&self) {
        if self.resolution.lock().unwrap().scrape.is_some() {
            return;
        }
        match self.source.scrape_interval().await {
            Ok(Some(s)) => {
                tracing::info!(scrape_interval = %human_duration(s), "read the scrape interval from the metric source");
                *self.resolution.lock().unwrap() = Resolution {
                    scrape: Some(s),
                    whence: "Prometheus",
                };
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "could not read the scrape interval; judging 10 s windows (set [metrics] scrape_interval to say it)");
            }
        }
    }

    /// A `/readyz` line when `interval` is shorter than two scrapes.
    pub fn tick_warning(&self) -> Option<String> {
        let r = self.resolution.lock().unwrap().clone();
        let scrape = r.scrape?;
        (self.interval() < scrape * 2).then(|| {
            format!(
                "metrics: warning: [metrics] interval {} is shorter than two scrapes ({} scrapes every {}); rollbot judges {} windows, so ticks between scrapes judge nothing new: set interval to at least {}",
                human_duration(self.interval()),
                r.whence,
                human_duration(scrape),
                human_duration(self.evidence_step()),
                human_duration(scrape * 2)
            )
        })
    }
}

/// The scrape interval as the configured metric source tells it, for
/// `check-config` (which runs no controller).
pub async fn scrape_interval_of(
    config: &crate::config_file::Config,
) -> Result<Option<Duration>, String> {
    let Some(source) = crate::runtime::metric_source(config).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    source.scrape_interval().await.map_err(|e| e.to_string())
}
