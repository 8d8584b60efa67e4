//! `rollbot serve`: the HTTP server.
//!
//! - `GET /healthz`: liveness, the process answers.
//! - `GET /readyz`: the store is open and the config loaded; 503 while
//!   shutting down so traffic moves elsewhere.
//!   A standby is 503 too, unless `[leader_election] label_pod` routes by
//!   the leader's pod label: then it is 200 with JSON naming the leader.
//! - `GET /metrics`: rollbot's own metrics in the Prometheus text format.
//! - `POST /api/v1/actions`: a command for an API client (`[[api.clients]]`),
//!   bearer-token authenticated, answered with the engine's outcome as JSON.
//! - `/gates/flagger/*`, `GET /gates/argo/analysis`: Flagger's webhooks and
//!   an Argo Rollouts web metric, with the `[gates]` bearer token (`gates.rs`).
//! - Chat adapters mount their own endpoints (`/slack/commands`,
//!   `/discord/interactions`, …) and readiness checks through [`Adapters`].

mod api;
pub mod bench;
pub(crate) mod gates;
mod rollouts;

use crate::engine::Engine;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A readiness check: the problems it sees now (empty when ready).
pub type ReadinessCheck = Arc<dyn Fn() -> Vec<String> + Send + Sync>;

/// What chat adapters add to the server: routes and readiness checks.
#[derive(Default)]
pub struct Adapters {
    pub routes: Vec<Router>,
    pub checks: Vec<ReadinessCheck>,
}

#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    /// Bearer token → API client name.
    pub api_tokens: Arc<Vec<(String, crate::config::SecretValue)>>,
    pub shutting_down: Arc<AtomicBool>,
    pub checks: Arc<Vec<ReadinessCheck>>,
    pub controller: Option<Arc<crate::controller::Controller>>,
    pub gates: Arc<gates::Gates>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/actions", post(api::action))
        .route(
            "/api/v1/rollouts",
            post(rollouts::announce).get(rollouts::list),
        )
        .route(
            "/gates/flagger/confirm-rollout",
            post(gates::confirm_rollout),
        )
        .route(
            "/gates/flagger/confirm-promotion",
            post(gates::confirm_promotion),
        )
        .route("/gates/flagger/rollback", post(gates::rollback))
        .route("/gates/argo/analysis", get(gates::argo_analysis))
        .with_state(state)
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    if s.shutting_down.load(Ordering::SeqCst) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down\n".to_string(),
        );
    }
    let store = s.engine.store.problems();
    if !store.is_empty() {
        let lines: Vec<&str> = store.iter().map(|p| p.text.as_str()).collect();
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready:\n{}\n", lines.join("\n")),
        );
    }
    // A standby replica is not ready, so the Service sends chat and gate
    // traffic to the Lease holder.
    let leader = s.engine.leadership.view();
    if !leader.leader && leader.standby_ready {
        return standby_ready(&s, &leader);
    }
    if !leader.leader {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready:\n{}\n", leader.describe()),
        );
    }
    let problems: Vec<String> = s.checks.iter().flat_map(|c| c()).collect();
    if !problems.is_empty() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready:\n{}\n", problems.join("\n")),
        );
    }
    let metrics = match &s.controller {
        None => "metrics: no source configured".to_string(),
        Some(c) => {
            let h = c.health();
            let line = match h.down_since {
                Some(since) => format!("metrics: UNAVAILABLE since {} ({}); verdicts are no_data, nothing is rolled back automatically", since.format("%Y-%m-%d %H:%M:%S UTC"), h.last_error.unwrap_or_default()),
                None => format!("metrics: ok ({} queries last tick, {} ticks)", h.queries_last_tick, h.ticks),
            };
            // A tick shorter than two scrapes is reported, not unready.
            match c.tick_warning() {
                Some(w) => format!("{line}\n{w}"),
                None => line,
            }
        }
    };
    // The status page and the pager are reported the same way: a wrong
    // key there must not stop anyone from rolling back.
    let comms: String = s
        .engine
        .comms()
        .map(|c| c.readiness().iter().map(|l| format!("{l}\n")).collect())
        .unwrap_or_default();
    // Not ready means "send chat traffic elsewhere"; missing metrics must not
    // stop people from rolling back, so they are reported but readiness stays.
    (
        StatusCode::OK,
        format!(
            "ready: {} services, audit log at #{}\n{metrics}\n{comms}{}\n",
            s.engine.config.services.len(),
            s.engine.store.audit_len(),
            leader.describe()
        ),
    )
}

/// `label_pod`: a healthy standby is Ready (rolling updates and drains
/// count it) while the Service routes to the leader's label; it says so
/// in JSON, naming the leader it last saw.
fn standby_ready(s: &AppState, leader: &crate::leader::LeaderView) -> (StatusCode, String) {
    let problems: Vec<String> = s.checks.iter().flat_map(|c| c()).collect();
    let body = serde_json::json!({
        "ready": problems.is_empty(),
        "role": "standby",
        "leader": leader.holder,
        "identity": leader.identity,
        "lease": leader.lease,
        "detail": leader.describe(),
        "problems": problems,
    });
    let code = match problems.is_empty() {
        true => StatusCode::OK,
        false => StatusCode::SERVICE_UNAVAILABLE,
    };
    (code, format!("{body}\n"))
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    refresh_kpis(&s.engine).await;
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.engine.telemetry.render(),
    )
}

/// Reads the rollback KPIs from the audit log again when the last read
/// is older than 30 s, so frequent scrapes do not each read 30 days of it.
async fn refresh_kpis(engine: &Engine) {
    let kpi = &engine.telemetry.kpi;
    {
        let mut last = kpi.refreshed.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|t| t.elapsed() < Duration::from_secs(30)) {
            return;
        }
        *last = Some(std::time::Instant::now());
    }
    let until = engine.clock.now();
    let since = until - chrono::Duration::days(crate::telemetry::KPI_WINDOW_DAYS);
    match crate::audit::kpi::read(&engine.store, since, until).await {
        Ok(report) => engine.telemetry.set_kpis(&report),
        Err(e) => {
            // Keep the previous figures; the store's trouble shows in /readyz.
            tracing::warn!(error = %e, "could not read the rollback KPIs from the audit log");
            *kpi.refreshed.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }
}

/// Serves until SIGTERM or Ctrl-C, then finishes in-flight actions.
pub async fn serve(
    engine: Arc<Engine>,
    controller: Option<Arc<crate::controller::Controller>>,
    listen: &str,
    adapters: Adapters,
) -> anyhow::Result<()> {
    let mut tokens = Vec::new();
    for c in &engine.config.api.clients {
        let src = c.token_source().map_err(anyhow::Error::msg)?;
        tokens.push((
            c.name.clone(),
            src.resolve()
                .map_err(|e| anyhow::anyhow!("api client {}: {e}", c.name))?,
        ));
    }
    let gates_token = match engine.config.gates.token_source() {
        Ok(Some(src)) => Some(
            src.resolve()
                .map_err(|e| anyhow::anyhow!("[gates] token: {e}"))?,
        ),
        Ok(None) => None,
        Err(e) => anyhow::bail!("[gates]: {e}"),
    };
    let gates = Arc::new(gates::Gates::new(
        gates_token,
        crate::backend::flagger::GateBook::open(&engine.store),
    ));
    let state = AppState {
        gates,
        engine: engine.clone(),
        api_tokens: Arc::new(tokens),
        shutting_down: Arc::new(AtomicBool::new(false)),
        checks: Arc::new(adapters.checks),
        controller: controller.clone(),
    };
    match controller {
        Some(c) => {
            tokio::spawn(c.run());
        }
        // Without a metric source there is no controller loop, but prompts
        // (a critical service's promotion) still escalate.
        None => {
            tokio::spawn(engine.clone().escalate_forever(Duration::from_secs(5)));
        }
    }
    tokio::spawn(engine.clone().maintain_forever());
    // `label_pod` without POD_NAME would leave the Service without a
    // leader to route to: refuse to start instead.
    let own_pod = match &engine.config.leader_election {
        Some(le) if le.label_pod => Some(
            crate::leader::OwnPod::from_env(le.namespace.as_ref())
                .map_err(|e| anyhow::anyhow!("{e}"))?,
        ),
        _ => None,
    };
    let (stop_electing, electing) = tokio::sync::watch::channel(false);
    let stop_electing = Arc::new(stop_electing);
    let elector = engine.config.leader_election.as_ref().map(|le| {
        let mut elector = engine.leadership.elect(le.settings());
        if let Some(pod) = &own_pod {
            elector = elector.label_pod(pod.clone());
        }
        // From here on a replica that is not within its renew deadline
        // appends nothing (see `crate::fence`).
        engine.store.fence_with(engine.leadership.fence());
        tokio::spawn(
            engine
                .clone()
                .recover_on_takeover_forever(le.settings().retry_period),
        );
        tokio::spawn(elector.run(electing))
    });
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}; change [server] listen"))?;
    tracing::info!(address = %listener.local_addr()?, "rollbot serving");
    println!("rollbot listening on http://{}", listener.local_addr()?);
    let flag = state.shutting_down.clone();
    let mut app = router(state);
    for r in adapters.routes {
        app = app.merge(r);
    }
    let (closing, hand_over) = (engine.clone(), stop_electing.clone());
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            flag.store(true, Ordering::SeqCst);
            tracing::info!("shutdown requested; finishing in-flight actions");
            // No new action starts from now on. As soon as those running
            // have sent their last change, the Lease goes to a standby,
            // which takes over while they verify and record their results.
            tokio::spawn(async move {
                if !closing.stop_acting(Duration::from_secs(60)).await {
                    tracing::warn!(
                        "actions were still acting after 60s; handing the Lease over anyway"
                    );
                }
                let _ = hand_over.send(true);
            });
        })
        .await?;
    if !engine.drain(Duration::from_secs(60)).await {
        tracing::warn!("some actions were still running after 60s; they will be reported as interrupted at the next start");
    }
    engine.store.flush().await?;
    // Last: give the Lease up so another replica need not wait for it to expire.
    let _ = stop_electing.send(true);
    if let Some(e) = elector {
        let _ = tokio::time::timeout(Duration::from_secs(5), e).await;
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
