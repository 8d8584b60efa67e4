//! Builds a running rollbot from a config: store, backends, chat, engine.
//! `serve` and `demo` both start here, so they cannot drift apart.

use crate::backend::factory::BuiltBackends;
use crate::backend::simulated::SimulatedBackend;
use crate::chat::{ChatSink, Notifier};
use crate::clock::SharedClock;
use crate::config::SecretSource;
use crate::config_file::{Config, MetricSourceKind};
use crate::controller::Controller;
use crate::engine::{Engine, EngineParts};
use crate::metrics::{prometheus, simulated::SimulatedSource, MetricSource};
use crate::store::Store;
use crate::telemetry::Telemetry;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

pub struct Runtime {
    pub engine: Arc<Engine>,
    /// Watches rollouts when a metric source is configured.
    pub controller: Option<Arc<Controller>>,
    pub telemetry: Arc<Telemetry>,
    /// Simulated backends by name, so the demo and tests can steer them.
    pub simulated: HashMap<String, Arc<SimulatedBackend>>,
}

/// One backend per `[backends.NAME]` (see `backend::factory`), and the
/// simulated ones by name.
pub fn build_backends(config: &Config) -> BuiltBackends {
    crate::backend::factory::build_all(
        config.backends.iter().map(|(name, b)| (name, b.as_ref())),
        config.engine.backend_timeout.0,
    )
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
    let store = Arc::new(Store::open_config_serving(&config.store, store_dir)?);
    // A database that does not answer yet is checked, recovered from and
    // loaded once it does (`when_reachable`); until then actions are refused.
    let reachable = !store.unreachable();
    // A damaged store is reported (log, /readyz, deploy channels) and acts
    // on nothing; it is not a reason to stay down and silent.
    let damaged = match reachable {
        true => store.check_integrity(store_dir).await.err(),
        false => None,
    };
    let BuiltBackends {
        all: backends,
        simulated,
    } = build_backends(&config);
    for b in backends.values() {
        b.attach(&store)?;
    }
    let mut notifier = Notifier::new(
        config.channels.clone(),
        config.engine.chat_pool,
        telemetry.clone(),
    );
    for s in sinks {
        notifier.add_sink(s);
    }
    let config = Arc::new(config);
    // Before the engine: a status page or paging key that cannot be read
    // stops the start with a clear message.
    let comms = crate::incident_comms::Comms::start(&config, notifier.clone(), store.clone())?;
    let engine = Engine::new(EngineParts {
        config,
        store,
        backends,
        notifier,
        clock,
        telemetry: telemetry.clone(),
    });
    engine.attach_comms(comms);
    if let Some(what) = damaged {
        engine.announce_damaged_store(&what).await;
        return Ok(Runtime {
            engine,
            controller: None,
            telemetry,
            simulated,
        });
    }
    if !reachable {
        let controller = metric_source(&engine.config)?
            .map(|source| Arc::new(Controller::new(engine.clone(), source)));
        engine.recover_before_acting();
        tokio::spawn(when_reachable(
            engine.clone(),
            controller.clone(),
            store_dir.to_path_buf(),
        ));
        return Ok(Runtime {
            engine,
            controller,
            telemetry,
            simulated,
        });
    }
    // With an election, the replica that takes the Lease recovers (see
    // `engine/takeover.rs`): a standby must not close the leader's actions.
    if engine.config.leader_election.is_none() {
        let interrupted = engine.recover().await?;
        if !interrupted.is_empty() {
            tracing::warn!(
                count = interrupted.len(),
                "marked interrupted actions from the previous run"
            );
        }
    }
    let controller = match metric_source(&engine.config)? {
        Some(source) => {
            let c = Arc::new(Controller::new(engine.clone(), source));
            c.load().await?;
            Some(c)
        }
        None => None,
    };
    Ok(Runtime {
        engine,
        controller,
        telemetry,
        simulated,
    })
}

/// The rest of the start for a store that could not be reached at first:
/// once it answers, the same integrity check, recovery and loading of
/// watched rollouts as at a start with the store there.
async fn when_reachable(
    engine: Arc<Engine>,
    controller: Option<Arc<Controller>>,
    store_dir: std::path::PathBuf,
) {
    while engine.store.unreachable() {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    if let Err(what) = engine.store.check_integrity(&store_dir).await {
        engine.announce_damaged_store(&what).await;
        return;
    }
    // Without an election, before any action (a request may come first).
    engine.recover_if_due().await;
    if let Some(c) = controller {
        if let Err(e) = c.load().await {
            tracing::error!(error = %e, "could not load the watched rollouts");
        }
    }
}

/// The `[metrics]` source, with its secrets read now so a missing one stops
/// the start with a clear message.
pub fn metric_source(config: &Config) -> anyhow::Result<Option<Arc<dyn MetricSource>>> {
    let m = &config.metrics;
    Ok(match m.source {
        MetricSourceKind::None => None,
        MetricSourceKind::Prometheus => {
            let bearer = SecretSource::from_pair(
                "bearer_token",
                m.bearer_token.as_ref(),
                m.bearer_token_file.as_ref(),
            )
            .map_err(anyhow::Error::msg)?;
            let basic = SecretSource::from_pair(
                "basic_password",
                m.basic_password.as_ref(),
                m.basic_password_file.as_ref(),
            )
            .map_err(anyhow::Error::msg)?;
            let auth = match (bearer, basic, &m.basic_user) {
                (Some(b), _, _) => prometheus::Auth::Bearer(
                    b.resolve()
                        .map_err(|e| anyhow::anyhow!("[metrics] bearer_token: {e}"))?,
                ),
                (None, Some(p), Some(user)) => prometheus::Auth::Basic {
                    user: user.clone(),
                    password: p
                        .resolve()
                        .map_err(|e| anyhow::anyhow!("[metrics] basic_password: {e}"))?,
                },
                _ => prometheus::Auth::None,
            };
            let url = m.url.clone().unwrap_or_default();
            Some(Arc::new(prometheus::PrometheusSource::new(
                &url,
                auth,
                m.timeout.0,
                m.queries.clone(),
            )))
        }
        MetricSourceKind::Simulated => {
            let all = crate::judge::sim::standard_scenarios();
            let scenarios = m
                .scenarios
                .iter()
                .filter_map(|(svc, name)| {
                    all.iter()
                        .find(|s| &s.name == name)
                        .map(|s| (svc.clone(), s.clone().horizon(24.0 * 3600.0)))
                })
                .collect();
            Some(Arc::new(SimulatedSource::new(scenarios)))
        }
    })
}
