//! A metric source that plays the judge's scenario simulator, for the demo
//! and for running `rollbot serve` without Prometheus.

use super::*;
use crate::judge::sim::{Scenario, Simulator};
use std::sync::Mutex;

pub struct SimulatedSource {
    scenarios: HashMap<String, Scenario>,
    running: Mutex<HashMap<String, Simulator>>,
}

impl SimulatedSource {
    /// `scenarios`: service → the scenario its canary follows.
    pub fn new(scenarios: HashMap<String, Scenario>) -> SimulatedSource {
        SimulatedSource {
            scenarios,
            running: Mutex::new(HashMap::new()),
        }
    }
}

#[async_trait]
impl MetricSource for SimulatedSource {
    fn kind(&self) -> &'static str {
        "simulated"
    }

    async fn fetch(
        &self,
        services: &[Watched],
        _at: DateTime<Utc>,
        _window: Duration,
    ) -> Result<Fetched, MetricError> {
        let mut out = Fetched::default();
        let mut running = self.running.lock().unwrap();
        for w in services {
            let Some(sc) = self.scenarios.get(&w.service) else {
                out.missing.insert(
                    w.service.clone(),
                    "no simulated scenario for this service".into(),
                );
                continue;
            };
            let sim = running
                .entry(w.service.clone())
                .or_insert_with(|| Simulator::new(sc, 1));
            match sim.next_tick() {
                Some(mut tick) => {
                    tick.t = w.t;
                    if w.whole_service {
                        tick.canary = merged(tick.baseline.take(), tick.canary.take());
                    }
                    out.ticks.insert(w.service.clone(), tick);
                }
                None => {
                    out.missing
                        .insert(w.service.clone(), "the simulated scenario has ended".into());
                }
            }
        }
        Ok(out)
    }
}

/// Both tracks as one service: counts and histograms added.
fn merged(
    a: Option<crate::judge::TrackSample>,
    b: Option<crate::judge::TrackSample>,
) -> Option<crate::judge::TrackSample> {
    match (a, b) {
        (Some(mut a), Some(b)) => {
            a.requests += b.requests;
            a.errors += b.errors;
            if a.latency_buckets.len() == b.latency_buckets.len() {
                for (x, y) in a.latency_buckets.iter_mut().zip(&b.latency_buckets) {
                    x.1 += y.1;
                }
            }
            Some(a)
        }
        (a, b) => a.or(b),
    }
}
