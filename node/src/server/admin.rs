//! The HTTP admin endpoint: health and metrics.
//!
//! `/health/live` answers 200 whenever the process can answer at all: it
//! never depends on load or storage, so an orchestrator never restarts a
//! node for being busy. `/health/ready` answers 200 once storage is open
//! and the cluster map is known (the node serves), 503 before that and
//! while shutting down. Neither looks at load: an overloaded node sheds
//! what it cannot serve and stays in service, where taking it out would
//! push its load onto the others and spread the overload (the cascading
//! failures warning about health checks).
//!
//! `/metrics` renders [`crate::metrics::Metrics`] in the Prometheus text
//! format, followed by the startup timeline ([`crate::startup`]). The
//! admin port is a separate listener and runtime path from the protocol
//! server, so it answers while the protocol side sheds, and it is bound
//! before storage is opened, so liveness and the startup gauges answer
//! while a restarting node is still opening its data.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::admission::Admission;
use crate::startup::Startup;

/// What the health endpoints report.
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
}

impl Health {
    /// Marks the node ready or not.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Whether the node is ready.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

/// What the admin routes read.
#[derive(Clone)]
struct AdminState {
    health: Arc<Health>,
    admission: Arc<Admission>,
    startup: Arc<Startup>,
}

/// The admin routes.
pub fn router(health: Arc<Health>, admission: Arc<Admission>, startup: Arc<Startup>) -> Router {
    Router::new()
        .route("/health/live", get(|| async { "live\n" }))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(AdminState {
            health,
            admission,
            startup,
        })
}

async fn ready(State(state): State<AdminState>) -> (StatusCode, &'static str) {
    if state.health.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    let gauges = state.admission.gauges();
    let mut text = state.admission.metrics().render(&gauges);
    text.push_str(&state.startup.render());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

/// Serves the admin routes until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    health: Arc<Health>,
    admission: Arc<Admission>,
    startup: Arc<Startup>,
    shutdown: CancellationToken,
) {
    let app = router(health, admission, startup);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
    {
        tracing::error!(error = %e, "admin server failed");
    }
}
