//! Builds a running rollbot from a config: store, backends, chat, engine.
//! `serve` and `demo` both start here, so they cannot drift apart.

use crate::backend::exec::ExecBackend;
use crate::backend::gitops::{GitopsBackend, GitopsSettings};
use crate::backend::simulated::SimulatedBackend;
use crate::backend::unleash::{UnleashBackend, UnleashSettings};
use crate::backend::webhook::{WebhookBackend, WebhookSettings};
use crate::backend::RollbackBackend;
use crate::chat::{ChatSink, Notifier};
use crate::clock::SharedClock;
use crate::config::{BackendConfig, Config, MetricSourceKind, SecretSource};
use crate::controller::Controller;
use crate::engine::{Engine, EngineParts};
use crate::metrics::{prometheus, simulated::SimulatedSource, MetricSource};
use crate::store::Store;
use crate::telemetry::Telemetry;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub struct Runtime {
    pub engine: Arc<Engine>,
    /// Watches rollouts when a metric source is configured.
    pub controller: Option<Arc<Controller>>,
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
                env,
            } => {
                let t = timeout.map(|t| t.0).unwrap_or(Duration::from_secs(300));
                let mut exec = ExecBackend::new(program.clone(), args.clone(), t, supports.clone());
                if let Some(env) = env {
                    exec = exec.with_env(env.clone());
                }
                all.insert(name.clone(), Arc::new(exec));
            }
            BackendConfig::Webhook {
                url,
                status_url,
                secret,
                secret_file,
                timeout,
                retries,
                backoff,
                status_timeout,
                status_interval,
            } => {
                let d = WebhookSettings::default();
                let s = WebhookSettings {
                    url: url.clone(),
                    status_url: status_url.clone(),
                    // Checked when the config was loaded.
                    secret: SecretSource::from_pair(
                        "secret",
                        secret.as_ref(),
                        secret_file.as_ref(),
                    )
                    .ok()
                    .flatten(),
                    timeout: timeout.map(|t| t.0).unwrap_or(d.timeout),
                    retries: retries.unwrap_or(d.retries),
                    backoff: backoff.map(|t| t.0).unwrap_or(d.backoff),
                    status_timeout: status_timeout.map(|t| t.0).unwrap_or(d.status_timeout),
                    status_interval: status_interval.map(|t| t.0).unwrap_or(d.status_interval),
                };
                all.insert(name.clone(), Arc::new(WebhookBackend::new(s)));
            }
            BackendConfig::Gitops {
                repository,
                branch,
                file,
                key,
                mode,
                workdir,
                ssh_key_file,
                token,
                token_file,
                token_user,
                author_name,
                author_email,
                timeout,
            } => {
                let s = GitopsSettings {
                    repository: repository.clone(),
                    branch: branch.clone().unwrap_or_else(|| "main".into()),
                    file: file.clone(),
                    key: key.clone().unwrap_or_else(|| "image.tag".into()),
                    mode: *mode,
                    workdir: workdir.clone().unwrap_or_else(|| {
                        std::env::temp_dir().join(format!("rollbot-gitops-{name}"))
                    }),
                    ssh_key_file: ssh_key_file.clone(),
                    // Checked when the config was loaded.
                    token: SecretSource::from_pair("token", token.as_ref(), token_file.as_ref())
                        .ok()
                        .flatten(),
                    token_user: token_user
                        .clone()
                        .unwrap_or_else(|| "x-access-token".into()),
                    author_name: author_name.clone().unwrap_or_else(|| "rollbot".into()),
                    author_email: author_email
                        .clone()
                        .unwrap_or_else(|| "rollbot@localhost".into()),
                    timeout: timeout.map(|t| t.0).unwrap_or(Duration::from_secs(60)),
                };
                all.insert(name.clone(), Arc::new(GitopsBackend::new(s)));
            }
            BackendConfig::Unleash {
                url,
                admin_token,
                admin_token_file,
                client_token,
                client_token_file,
                project,
                environment,
                steps,
                timeout,
                verify_timeout,
                verify_interval,
            } => {
                let d = UnleashSettings::default();
                let s = UnleashSettings {
                    url: url.clone(),
                    // Checked when the config was loaded.
                    admin_token: SecretSource::from_pair(
                        "admin_token",
                        admin_token.as_ref(),
                        admin_token_file.as_ref(),
                    )
                    .ok()
                    .flatten(),
                    client_token: SecretSource::from_pair(
                        "client_token",
                        client_token.as_ref(),
                        client_token_file.as_ref(),
                    )
                    .ok()
                    .flatten(),
                    project: project.clone().unwrap_or(d.project),
                    environment: environment.clone(),
                    steps: steps.clone().unwrap_or(d.steps),
                    timeout: timeout.map(|t| t.0).unwrap_or(d.timeout),
                    verify_timeout: verify_timeout.map(|t| t.0).unwrap_or(d.verify_timeout),
                    verify_interval: verify_interval.map(|t| t.0).unwrap_or(d.verify_interval),
                };
                all.insert(name.clone(), Arc::new(UnleashBackend::new(s)));
            }
            BackendConfig::KubernetesDeployment {
                api_server,
                token,
                token_file,
                ca_file,
                namespace,
                request_timeout,
                rollout_timeout,
                poll_interval,
            } => {
                use crate::backend::kubernetes_deployment as kd;
                let d = kd::KubernetesDeploymentSettings::default();
                let s = kd::KubernetesDeploymentSettings {
                    connection: crate::backend::kube_common::KubeConnection::from_config(
                        api_server,
                        token.as_ref(),
                        token_file.as_ref(),
                        namespace,
                        *request_timeout,
                        ca_file,
                    ),
                    rollout_timeout: rollout_timeout.map(|t| t.0).unwrap_or_else(|| {
                        kd::default_rollout_timeout_for(
                            config.engine.backend_timeout.0,
                            request_timeout
                                .map(|t| t.0)
                                .unwrap_or(crate::backend::kube_common::DEFAULT_REQUEST_TIMEOUT),
                        )
                    }),
                    poll_interval: poll_interval.map(|t| t.0).unwrap_or(d.poll_interval),
                };
                all.insert(
                    name.clone(),
                    Arc::new(kd::KubernetesDeploymentBackend::new(s)),
                );
            }
            BackendConfig::Flagger { verify_wait } => {
                let mut s = crate::backend::flagger::FlaggerSettings::default();
                if let Some(w) = verify_wait {
                    s.verify_wait = w.0;
                }
                all.insert(
                    name.clone(),
                    Arc::new(crate::backend::flagger::FlaggerBackend::new(s)),
                );
            }
            BackendConfig::ArgoRollouts {
                api_server,
                token,
                token_file,
                ca_file,
                namespace,
                request_timeout,
                rollout_timeout,
                poll_interval,
            } => {
                use crate::backend::argo_rollouts as ar;
                let connection = crate::backend::kube_common::KubeConnection::from_config(
                    api_server,
                    token.as_ref(),
                    token_file.as_ref(),
                    namespace,
                    *request_timeout,
                    ca_file,
                );
                let s = ar::ArgoRolloutsSettings {
                    connection,
                    rollout_timeout: rollout_timeout.map(|t| t.0).unwrap_or_else(|| {
                        crate::backend::kubernetes_deployment::default_rollout_timeout_for(
                            config.engine.backend_timeout.0,
                            request_timeout
                                .map(|t| t.0)
                                .unwrap_or(crate::backend::kube_common::DEFAULT_REQUEST_TIMEOUT),
                        )
                    }),
                    poll_interval: poll_interval
                        .map(|t| t.0)
                        .unwrap_or(ar::ArgoRolloutsSettings::default().poll_interval),
                };
                all.insert(name.clone(), Arc::new(ar::ArgoRolloutsBackend::new(s)));
            }
            BackendConfig::Istio {
                api_server,
                token,
                token_file,
                ca_file,
                namespace,
                request_timeout,
                api_version,
            } => {
                use crate::backend::istio;
                let s = istio::IstioSettings {
                    connection: crate::backend::kube_common::KubeConnection::from_config(
                        api_server,
                        token.as_ref(),
                        token_file.as_ref(),
                        namespace,
                        *request_timeout,
                        ca_file,
                    ),
                    api_version: api_version
                        .clone()
                        .unwrap_or_else(|| istio::IstioSettings::default().api_version),
                };
                all.insert(name.clone(), Arc::new(istio::IstioBackend::new(s)));
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
    let store = Arc::new(Store::open_with(store_dir, &(&config.store).into())?);
    // A damaged store is reported (log, /readyz, deploy channels) and acts
    // on nothing; it is not a reason to stay down and silent.
    let damaged = store.check_integrity(store_dir).await.err();
    let (backends, simulated) = build_backends(&config);
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
    let engine = Engine::new(EngineParts {
        config: Arc::new(config),
        store,
        backends,
        notifier,
        clock,
        telemetry: telemetry.clone(),
    });
    if let Some(what) = damaged {
        engine.announce_damaged_store(&what).await;
        return Ok(Runtime {
            engine,
            controller: None,
            telemetry,
            simulated,
        });
    }
    let interrupted = engine.recover().await?;
    if !interrupted.is_empty() {
        tracing::warn!(
            count = interrupted.len(),
            "marked interrupted actions from the previous run"
        );
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
