//! A service's health endpoint and metrics on 127.0.0.1, as the
//! post-rollback checks see them: `GET /healthz` answers the status the
//! test sets, `GET /metrics` exposes `app_error_ratio` with the value the
//! test sets (for a real Prometheus to scrape). Stopped on drop.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};
use std::sync::Arc;

#[derive(Default)]
struct Shared {
    status: AtomicU16,
    /// `app_error_ratio` × 1,000,000.
    ratio_ppm: AtomicU32,
    hits: AtomicU32,
}

pub struct HealthEndpoint {
    shared: Arc<Shared>,
    pub addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl HealthEndpoint {
    pub async fn start(status: u16, error_ratio: f64) -> HealthEndpoint {
        let shared = Arc::new(Shared::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .route(
                "/healthz",
                get(|State(s): State<Arc<Shared>>| async move {
                    s.hits.fetch_add(1, Ordering::SeqCst);
                    StatusCode::from_u16(s.status.load(Ordering::SeqCst)).unwrap()
                }),
            )
            .route(
                "/metrics",
                get(|State(s): State<Arc<Shared>>| async move {
                    let v = s.ratio_ppm.load(Ordering::SeqCst) as f64 / 1e6;
                    format!("# TYPE app_error_ratio gauge\napp_error_ratio {v}\n")
                }),
            )
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        let e = HealthEndpoint { shared, addr, task };
        e.set_status(status);
        e.set_error_ratio(error_ratio);
        e
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn set_status(&self, status: u16) {
        self.shared.status.store(status, Ordering::SeqCst);
    }

    pub fn set_error_ratio(&self, ratio: f64) {
        self.shared
            .ratio_ppm
            .store((ratio * 1e6).round() as u32, Ordering::SeqCst);
    }

    /// How many times `/healthz` was asked.
    pub fn hits(&self) -> u32 {
        self.shared.hits.load(Ordering::SeqCst)
    }
}

impl Drop for HealthEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}
