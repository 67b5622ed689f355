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
//!
//! With certificates the port serves HTTPS only: the health endpoints
//! answer anyone (orchestrators probe them without a certificate), every
//! other path needs a client certificate of the cluster's CA (403
//! without). TLS handshakes run off the accept loop, a bounded number at
//! once, each within a timeout, so a slow or silent peer holds nothing.
//! `/metrics` also shows `levee_cert_expiry_timestamp_seconds{role}`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::{IncomingStream, Listener};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use crate::admission::Admission;
use crate::metrics::exposition::{Exposition, Kind};
use crate::metrics::heap::HeapSample;
use crate::metrics::process::ProcessSample;
use crate::metrics::{render_build_info, render_runtime};
use crate::startup::Startup;
use crate::tls::Credentials;

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
pub struct AdminState {
    /// Liveness and readiness.
    pub health: Arc<Health>,
    /// Admission control and the node's counters.
    pub admission: Arc<Admission>,
    /// The startup timeline.
    pub startup: Arc<Startup>,
    /// The node's certificates, whose expiry `/metrics` shows.
    pub tls: Option<Arc<Credentials>>,
}

/// Who is calling, as the connection's TLS says.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    /// The peer's address.
    pub addr: SocketAddr,
    /// Whether it presented a certificate of the cluster's CA (always on a
    /// plaintext, `--insecure` port, where nothing is checked).
    pub certified: bool,
}

/// The admin routes.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/health/live", get(|| async { "live\n" }))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(middleware::from_fn(require_certificate))
        .with_state(state)
}

async fn not_found() -> (StatusCode, &'static str) {
    (StatusCode::NOT_FOUND, "not found\n")
}

const NEED_CERT: &str =
    "a client certificate of this cluster's CA is required (levee cert create-client)\n";

/// Without a certificate only the health paths exist: every other path,
/// unknown ones too, answers 403, so an anonymous peer learns nothing
/// about the rest.
async fn require_certificate(
    ConnectInfo(caller): ConnectInfo<Caller>,
    request: Request,
    next: Next,
) -> Response {
    let open = matches!(request.uri().path(), "/health/live" | "/health/ready");
    if caller.certified || open {
        next.run(request).await
    } else {
        (StatusCode::FORBIDDEN, NEED_CERT).into_response()
    }
}

async fn ready(State(state): State<AdminState>) -> (StatusCode, &'static str) {
    if state.health.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        page(
            &state,
            ProcessSample::read(),
            HeapSample::read(),
            alive_tasks(),
        ),
    )
}

/// Tasks alive on the runtime this handler runs on, which is the node's
/// only one (`main.rs`): the admin port shares it with everything else.
fn alive_tasks() -> Option<usize> {
    tokio::runtime::Handle::try_current()
        .ok()
        .map(|runtime| runtime.metrics().num_alive_tasks())
}

/// The whole `/metrics` text: the node's counters, the startup timeline,
/// the build, the process, its heap (on jemalloc) and its runtime's tasks
/// and, with certificates, their expiry.
fn page(
    state: &AdminState,
    process: ProcessSample,
    heap: Option<HeapSample>,
    alive_tasks: Option<usize>,
) -> String {
    let mut text = Exposition::new();
    state
        .admission
        .metrics()
        .render(&state.admission.gauges(), &mut text);
    state.startup.render(&mut text);
    render_build_info(&mut text);
    process.render(&mut text);
    if let Some(heap) = heap {
        heap.render(&mut text);
    }
    render_runtime(alive_tasks, &mut text);
    if let Some(tls) = &state.tls {
        render_expiry(tls, &mut text);
    }
    text.finish()
}

/// `levee_cert_expiry_timestamp_seconds{role}`: when the node's and the
/// CA's certificates expire, as Unix time. A timestamp rather than the
/// seconds left: it changes only when a certificate does (a rotation
/// shows as a step), and `… - time()` gives the time left at query time.
fn render_expiry(tls: &Credentials, text: &mut Exposition) {
    let unix = |t: SystemTime| match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    };
    let mut family = text.family(
        "levee_cert_expiry_timestamp_seconds",
        Kind::Gauge,
        "When the certificate expires (its notAfter), in seconds since the Unix epoch.",
    );
    family.sample(&[("role", "node")], unix(tls.not_after()));
    family.sample(&[("role", "ca")], unix(tls.ca_not_after()));
}

/// Serves the admin routes until `shutdown`: HTTPS with `state.tls`,
/// plaintext without.
pub async fn serve(listener: TcpListener, state: AdminState, shutdown: CancellationToken) {
    let result = match state.tls.clone() {
        None => {
            let app = router(state).into_make_service_with_connect_info::<Caller>();
            axum::serve(PlainListener(listener), app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
        }
        Some(credentials) => {
            let app = router(state).into_make_service_with_connect_info::<Caller>();
            let listener = TlsListener::start(listener, credentials, shutdown.clone());
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
        }
    };
    if let Err(e) = result {
        tracing::error!(error = %e, "admin server failed");
    }
}

/// The plaintext port: every caller counts as certified, since nothing
/// is checked there (`--insecure`).
struct PlainListener(TcpListener);

impl Listener for PlainListener {
    type Io = TcpStream;
    type Addr = Caller;

    async fn accept(&mut self) -> (TcpStream, Caller) {
        let (stream, addr) = Listener::accept(&mut self.0).await;
        (
            stream,
            Caller {
                addr,
                certified: true,
            },
        )
    }

    fn local_addr(&self) -> std::io::Result<Caller> {
        Ok(Caller {
            addr: self.0.local_addr()?,
            certified: true,
        })
    }
}

/// TLS handshakes in progress at once on the admin port.
const ADMIN_HANDSHAKES: usize = 32;
/// Time a peer gets to finish its TLS handshake on the admin port.
const ADMIN_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The HTTPS port: a task accepts and runs the TLS handshakes (bounded,
/// each with a timeout); axum takes finished ones from a bounded queue.
struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, Caller)>,
    local: SocketAddr,
}

impl TlsListener {
    fn start(listener: TcpListener, tls: Arc<Credentials>, shutdown: CancellationToken) -> Self {
        let local = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (tx, ready) = mpsc::channel(ADMIN_HANDSHAKES);
        tokio::spawn(async move {
            let handshakes = Arc::new(Semaphore::new(ADMIN_HANDSHAKES));
            loop {
                let accepted = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    accepted = listener.accept() => accepted,
                };
                let (stream, addr) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "admin accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // At the cap the newcomer is closed: a flood of silent
                // sockets cannot queue without bound.
                let Ok(permit) = handshakes.clone().try_acquire_owned() else {
                    continue;
                };
                let acceptor = TlsAcceptor::from(tls.admin_config());
                let tx = tx.clone();
                tokio::spawn(async move {
                    let handshake =
                        tokio::time::timeout(ADMIN_HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                    match handshake.await {
                        Ok(Ok(stream)) => {
                            let certified = stream.get_ref().1.peer_certificates().is_some();
                            drop(permit);
                            let _ = tx.send((stream, Caller { addr, certified })).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%addr, error = %e, "admin TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%addr, "admin TLS handshake timed out"),
                    }
                });
            }
        });
        Self { ready, local }
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = Caller;

    async fn accept(&mut self) -> (Self::Io, Caller) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accept task ended (shutdown): wait for axum to stop.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Caller> {
        Ok(Caller {
            addr: self.local,
            certified: false,
        })
    }
}

impl axum::extract::connect_info::Connected<IncomingStream<'_, PlainListener>> for Caller {
    fn connect_info(stream: IncomingStream<'_, PlainListener>) -> Self {
        *stream.remote_addr()
    }
}

impl axum::extract::connect_info::Connected<IncomingStream<'_, TlsListener>> for Caller {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        *stream.remote_addr()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::admission::AdmissionConfig;
    use crate::metrics::lint::lint;
    use crate::metrics::{Outcome, ShedReason};
    use crate::proto::op::Op;
    use crate::startup::Phase;
    use crate::tls::issue::{self, Validity};

    fn state(tls: Option<Arc<Credentials>>) -> AdminState {
        let startup = Startup::new(Instant::now(), SystemTime::now(), true);
        startup.mark(Phase::AdminListening);
        AdminState {
            health: Arc::default(),
            admission: Arc::new(Admission::new(AdmissionConfig::default())),
            startup: Arc::new(startup),
            tls,
        }
    }

    #[test]
    fn the_whole_page_follows_the_format_and_the_naming_rules() {
        let dir = tempfile::tempdir().expect("temp dir");
        let year = Validity::for_lifetime(Duration::from_secs(365 * 86_400));
        issue::create_cluster(dir.path(), &["127.0.0.1".into()], year).expect("certificates");
        let state = state(Some(
            Credentials::node(dir.path()).expect("node credentials"),
        ));
        let metrics = state.admission.metrics();
        metrics.record(Op::Get, Outcome::Ok, Duration::from_micros(300));
        metrics.record_shed(Op::Put, ShedReason::Bytes, Some(Duration::from_micros(2)));
        let process = ProcessSample {
            cpu_seconds: Some(1.5),
            resident_bytes: Some(1 << 20),
            virtual_bytes: Some(1 << 30),
            open_fds: Some(12),
            max_fds: Some(1024),
        };
        let heap = HeapSample {
            allocated: 3 << 20,
            resident: 4 << 20,
            retained: 1 << 20,
        };
        let text = page(&state, process, Some(heap), Some(40));
        assert_eq!(lint(&text), Vec::<String>::new(), "{text}");
        for family in [
            "levee_requests_total",
            "levee_startup_phase_seconds",
            "levee_build_info",
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_max_fds",
            "process_start_time_seconds",
            "levee_runtime_alive_tasks",
            "levee_heap_allocated_bytes",
            "levee_heap_resident_bytes",
            "levee_heap_retained_bytes",
            "levee_open_connections",
            "levee_hints_pending_bytes",
            "levee_cert_expiry_timestamp_seconds",
        ] {
            assert!(
                text.contains(&format!("# TYPE {family} ")),
                "{family} missing:\n{text}"
            );
        }
    }
}
