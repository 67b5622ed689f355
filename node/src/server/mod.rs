//! The protocol server: accepts connections, bounds them, and shuts down
//! gracefully.
//!
//! Shutdown order: stop accepting, stop reading new requests on every
//! connection, let in-flight requests finish (up to the grace period), then
//! return so the caller can flush storage.

pub mod admin;
mod connection;
mod handler;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::Admission;
use crate::client::pool::Pool;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::hlc::Clock;
use crate::proto::Limits;
use crate::recovery::sender::SendBudget;
use crate::recovery::transfer::Transfers;
use crate::storage::hints::HintStore;
use crate::storage::{Storage, StorageError};

/// State shared by every request on a node.
pub struct Node {
    storage: Storage,
    clock: Clock,
    hints: HintStore,
    peers: Pool,
    /// Admission control and metrics; shared with the admin endpoint and
    /// read by background work for the pressure signal.
    admission: Arc<Admission>,
    /// Set once the node has started or joined its cluster; until then,
    /// cluster requests are answered `Unavailable`.
    cluster: OnceLock<Arc<Cluster>>,
    /// The recovery byte budget every transfer page this node serves is
    /// paid from (one per node: a node's disk and network are what
    /// transfers compete with clients for).
    send_budget: SendBudget,
    /// Copies this node is receiving, read by the heartbeat.
    transfers: Transfers,
}

impl Node {
    /// Opens the node's storage.
    pub fn open(config: &Config) -> Result<Self, StorageError> {
        Self::new(Storage::open(&config.storage())?, config)
    }

    /// Opens the node's storage, with an admission controller made earlier
    /// (the admin endpoint serves its metrics before storage is open).
    pub fn open_with(config: &Config, admission: Arc<Admission>) -> Result<Self, StorageError> {
        Self::with_admission(Storage::open(&config.storage())?, config, admission)
    }

    /// A node over already-open storage.
    pub fn new(storage: Storage, config: &Config) -> Result<Self, StorageError> {
        let admission = Arc::new(Admission::new(config.admission()));
        Self::with_admission(storage, config, admission)
    }

    /// A node over already-open storage with the given admission controller.
    pub fn with_admission(
        storage: Storage,
        config: &Config,
        admission: Arc<Admission>,
    ) -> Result<Self, StorageError> {
        let hints = HintStore::open(&storage, config.hint_max_bytes_per_node)?;
        Ok(Self {
            storage,
            clock: Clock::new(config.max_clock_drift_ms),
            hints,
            peers: Pool::default(),
            admission,
            cluster: OnceLock::new(),
            send_budget: SendBudget::default(),
            transfers: Transfers::default(),
        })
    }

    /// Admission control, metrics and the foreground pressure signal.
    pub fn admission(&self) -> &Arc<Admission> {
        &self.admission
    }

    /// Writes this node keeps for replicas that missed them.
    pub fn hints(&self) -> &HintStore {
        &self.hints
    }

    /// Connections to the other nodes for the data path.
    pub fn peers(&self) -> &Pool {
        &self.peers
    }

    /// The node's clock.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Attaches the running cluster membership (once).
    pub fn set_cluster(&self, cluster: Arc<Cluster>) {
        if self.cluster.set(cluster).is_err() {
            tracing::warn!("cluster attached twice; keeping the first");
        }
    }

    /// The cluster membership, once started.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.get()
    }

    /// The node's storage.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// The recovery byte budget of the pages this node sends.
    pub fn send_budget(&self) -> &SendBudget {
        &self.send_budget
    }

    /// The copies this node is receiving, with their progress.
    pub fn transfers(&self) -> &Transfers {
        &self.transfers
    }
}

/// Connection-handling settings.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Size limits on requests.
    pub limits: Limits,
    /// Connections accepted at once.
    pub max_connections: usize,
    /// Requests in flight per connection.
    pub max_inflight_per_connection: usize,
    /// Time allowed for the handshake.
    pub handshake_timeout: Duration,
    /// Time allowed for a frame's body once it has begun.
    pub frame_timeout: Duration,
    /// Time in-flight work gets at shutdown.
    pub shutdown_grace: Duration,
}

impl From<&Config> for ServerOptions {
    fn from(c: &Config) -> Self {
        Self {
            limits: c.limits(),
            max_connections: c.max_connections as usize,
            max_inflight_per_connection: c.max_inflight_per_connection as usize,
            handshake_timeout: Duration::from_millis(c.handshake_timeout_ms),
            frame_timeout: Duration::from_millis(c.frame_timeout_ms),
            shutdown_grace: c.shutdown_grace(),
        }
    }
}

/// A bound protocol listener.
pub struct Server {
    listener: TcpListener,
    node: Arc<Node>,
    options: Arc<ServerOptions>,
}

impl Server {
    /// Binds the listener.
    pub async fn bind(
        addr: &str,
        node: Arc<Node>,
        options: ServerOptions,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        Ok(Self {
            listener,
            node,
            options: Arc::new(options),
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
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                tracing::warn!(%peer, max = self.options.max_connections, "connection limit reached; closing new connection");
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let (node, options, shutdown) =
                (self.node.clone(), self.options.clone(), shutdown.clone());
            connections.spawn(async move {
                connection::serve(stream, peer, node, options, shutdown).await;
                drop(slot);
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
