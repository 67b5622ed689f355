//! The protocol edge: accepts connections, bounds them, decodes requests
//! and dispatches them to the node's services ([`crate::data`],
//! [`crate::recovery`], [`crate::raft`] over the shared [`Node`]), and
//! shuts down gracefully.
//!
//! Shutdown order: stop accepting, stop reading new requests on every
//! connection, let in-flight requests finish (up to the grace period), then
//! return so the caller can flush storage.

pub mod admin;
mod authority;
mod connection;
pub mod contain;
mod handler;
pub mod last_words;
mod slow_peers;
mod tarpit;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::node::Node;
use crate::proto::Limits;
use crate::tls::Credentials;

/// Connection-handling settings.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Size limits on requests.
    pub limits: Limits,
    /// Connections accepted at once.
    pub max_connections: usize,
    /// Of those, connections still in their handshake; past it the oldest
    /// handshake is ended for the newcomer (`server/slow_peers.rs`).
    pub max_handshaking: usize,
    /// Requests in flight per connection.
    pub max_inflight_per_connection: usize,
    /// Time allowed for the handshake.
    pub handshake_timeout: Duration,
    /// Time allowed for a frame's body once it has begun.
    pub frame_timeout: Duration,
    /// Time in-flight work gets at shutdown.
    pub shutdown_grace: Duration,
    /// Mutual TLS with these credentials, or plaintext (`--insecure`).
    pub tls: Option<Arc<Credentials>>,
}

impl From<&Config> for ServerOptions {
    fn from(c: &Config) -> Self {
        Self {
            limits: c.limits(),
            max_connections: c.max_connections as usize,
            max_handshaking: (c.max_connections as usize / HANDSHAKING_SHARE).max(1),
            max_inflight_per_connection: c.max_inflight_per_connection as usize,
            handshake_timeout: Duration::from_millis(c.handshake_timeout_ms),
            frame_timeout: Duration::from_millis(c.frame_timeout_ms),
            shutdown_grace: c.shutdown_grace(),
            tls: None,
        }
    }
}

/// One connection slot in this many may be held by a connection still in
/// its handshake: plenty for a burst of real clients (each handshakes in
/// one round trip), and a slowloris or a flood of silent sockets can
/// never hold more than a quarter of the slots.
const HANDSHAKING_SHARE: usize = 4;

/// Raises the process's soft limit on open descriptors to its hard limit,
/// as a server that holds a socket per connection (and, under a flood,
/// more: `server/tarpit.rs`) should; returns the limit now in force.
pub fn raise_descriptor_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(e) => {
                tracing::warn!(soft, hard, error = %e, "cannot raise the open-file limit");
                soft
            }
        },
        Ok((soft, _)) => soft,
        Err(_) => descriptor_limit(),
    }
}

/// The process's soft limit on open descriptors (1024, the usual default,
/// if it cannot be read).
fn descriptor_limit() -> u64 {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(1024)
}

/// A connection holding a slot, counted in `levee_open_connections` from
/// its accept until it is dropped with its task, however the task ends:
/// the figure a leak soak watches for connections that never close.
struct OpenConnection(Arc<Node>);

impl OpenConnection {
    fn count(node: &Arc<Node>) -> Self {
        node.admission().metrics().connection_opened();
        Self(node.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.admission().metrics().connection_closed();
    }
}

/// A bound protocol listener.
pub struct Server {
    listener: TcpListener,
    node: Arc<Node>,
    options: Arc<ServerOptions>,
    containment: Arc<contain::Containment>,
    failed_opens: Arc<std::sync::Mutex<slow_peers::Refusals>>,
}

impl Server {
    /// Binds the listener.
    pub async fn bind(
        addr: &str,
        node: Arc<Node>,
        options: ServerOptions,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        contain::install_panic_hook();
        Ok(Self {
            listener,
            node,
            options: Arc::new(options),
            containment: Arc::default(),
            failed_opens: Arc::default(),
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` is cancelled, then drains. Returns whether
    /// every in-flight request finished within the grace period.
    pub async fn run(self, shutdown: CancellationToken) -> bool {
        let connections = TaskTracker::new();
        let slots = Arc::new(Semaphore::new(self.options.max_connections));
        let mut handshakes = slow_peers::Handshakes::new(self.options.max_handshaking);
        let mut refusals = slow_peers::Refusals::default();
        let mut idle = slow_peers::Idle::new(slow_peers::IDLE_MIN);
        let held = tarpit::capacity(self.options.max_connections, descriptor_limit());
        let tarpit = {
            let node = self.node.clone();
            let report = move |held| {
                let metrics = node.admission().metrics();
                match held {
                    tarpit::Held::Taken(now) => {
                        metrics.record_connection_held();
                        metrics.set_connections_held(now);
                    }
                    tarpit::Held::Released(now) => metrics.set_connections_held(now),
                }
            };
            tarpit::Tarpit::spawn(
                held,
                self.options.handshake_timeout,
                report,
                shutdown.clone(),
            )
        };
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = self.listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Usually EMFILE: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let slot = match handshakes.connection_slot(&slots).await {
                Some(slot) => Some(slot),
                None => idle.take_slot(&slots).await,
            };
            let Some(slot) = slot else {
                if let Some(refused) = refusals.refused(Instant::now()) {
                    tracing::warn!(%peer, max = self.options.max_connections, refused, "connection limit reached; closing new connections (`refused`: since the last such line)");
                }
                drop(stream);
                continue;
            };
            let (handshake, evicted) = handshakes.admit();
            if evicted {
                // Debug only: under a flood this is every connection.
                tracing::debug!(%peer, "handshakes at their cap; ended the oldest");
            }
            let _ = stream.set_nodelay(true);
            slow_peers::bound_unsent(&stream);
            let context = connection::Context {
                node: self.node.clone(),
                options: self.options.clone(),
                containment: self.containment.clone(),
                failed_opens: self.failed_opens.clone(),
                tarpit: tarpit.clone(),
            };
            let shutdown = shutdown.clone();
            let activity = idle.register();
            let open = OpenConnection::count(&self.node);
            connections.spawn(async move {
                connection::serve(stream, peer, context, handshake, &activity.0, shutdown).await;
                drop(activity);
                drop(slot);
                drop(open);
            });
        }
        drop(self.listener);
        connections.close();
        let started = Instant::now();
        let drained = tokio::time::timeout(self.options.shutdown_grace, connections.wait())
            .await
            .is_ok();
        tracing::info!(
            drained,
            waited_ms = started.elapsed().as_millis() as u64,
            "protocol server stopped"
        );
        drained
    }
}
