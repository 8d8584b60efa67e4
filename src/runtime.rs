//! Builds a running rollbot from a config: store, backends, chat, engine.
//! `serve` and `demo` both start here, so they cannot drift apart.

use crate::backend::exec::ExecBackend;
use crate::backend::simulated::SimulatedBackend;
use crate::backend::RollbackBackend;
use crate::chat::{ChatSink, Notifier};
use crate::clock::SharedClock;
use crate::config::{BackendConfig, Config};
use crate::engine::{Engine, EngineParts};
use crate::store::Store;
use crate::telemetry::Telemetry;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub struct Runtime {
    pub engine: Arc<Engine>,
    pub telemetry: Arc<Telemetry>,
    /// Simulated backends by name, so the demo and tests can steer them.
    pub simulated: HashMap<String, Arc<SimulatedBackend>>,
}

type Backends = HashMap<String, Arc<dyn RollbackBackend>>;

/// One backend per `[backends.NAME]`.
pub fn build_backends(config: &Config) -> (Backends, HashMap<String, Arc<SimulatedBackend>>) {
    let mut all: Backends = HashMap::new();
    let mut simulated = HashMap::new();
    for (name, b) in &config.backends {
        match b.as_ref() {
            BackendConfig::Simulated { latency, history } => {
                let sim = Arc::new(SimulatedBackend::new(
                    latency.map(|l| l.0).unwrap_or_default(),
                    history.clone(),
                ));
                simulated.insert(name.clone(), sim.clone());
                all.insert(name.clone(), sim);
            }
            BackendConfig::Exec {
                program,
                args,
                timeout,
                supports,
            } => {
                let t = timeout.map(|t| t.0).unwrap_or(Duration::from_secs(300));
                all.insert(
                    name.clone(),
                    Arc::new(ExecBackend::new(
                        program.clone(),
                        args.clone(),
                        t,
                        supports.clone(),
                    )),
                );
            }
        }
    }
    (all, simulated)
}

/// Opens the store, builds the engine and recovers interrupted actions.
pub async fn start(
    config: Config,
    store_dir: &Path,
    sinks: Vec<Arc<dyn ChatSink>>,
    clock: SharedClock,
) -> anyhow::Result<Runtime> {
    start_with(config, store_dir, sinks, clock, Arc::new(Telemetry::new())).await
}

/// [`start`] with telemetry made earlier, so chat adapters built before the
/// engine count into the same metrics.
pub async fn start_with(
    config: Config,
    store_dir: &Path,
    sinks: Vec<Arc<dyn ChatSink>>,
    clock: SharedClock,
    telemetry: Arc<Telemetry>,
) -> anyhow::Result<Runtime> {
    let store = Arc::new(Store::open(store_dir)?);
    let (backends, simulated) = build_backends(&config);
    let mut notifier = Notifier::new(
        config.channels.clone(),
        config.engine.chat_pool,
        telemetry.clone(),
    );
    for s in sinks {
        notifier.add_sink(s);
    }
    let engine = Arc::new(Engine::new(EngineParts {
        config: Arc::new(config),
        store,
        backends,
        notifier,
        clock,
        telemetry: telemetry.clone(),
    }));
    let interrupted = engine.recover().await?;
    if !interrupted.is_empty() {
        tracing::warn!(
            count = interrupted.len(),
            "marked interrupted actions from the previous run"
        );
    }
    Ok(Runtime {
        engine,
        telemetry,
        simulated,
    })
}
