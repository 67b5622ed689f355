//! The node's shared state: what every request and every background task
//! on a node reaches (storage, clock, hints, peer connections, admission,
//! the cluster membership once started, the recovery byte budget and the
//! copies in progress).
//!
//! It sits below the services that use it ([`crate::data`],
//! [`crate::recovery`]) and the protocol edge that dispatches to them
//! ([`crate::server`]), so each of those imports it and none of them
//! imports another's floor above.

pub mod peer_guard;
pub mod peers;
pub mod send_budget;
pub mod transfers;
pub mod write_epochs;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::admission::Admission;
use crate::client::ClientConfig;
use crate::client::load::HedgeDelay;
use crate::client::pool::Pool;
use crate::cluster::status::CertReport;
use crate::config::Config;
use crate::hlc::Clock;
use crate::proto::Limits;
use crate::raft::Cluster;
use crate::storage::hints::HintStore;
use crate::storage::{Storage, StorageError};
use crate::tls::Transport;

pub use self::peer_guard::GuardConfig;
pub use self::peers::Peers;
pub use self::send_budget::SendBudget;
pub use self::transfers::Transfers;
pub use self::write_epochs::WriteEpochs;

/// State shared by every request on a node.
pub struct Node {
    storage: Storage,
    clock: Clock,
    hints: HintStore,
    /// Connections to the other nodes for the data path, with a circuit
    /// breaker per peer and the node's retry budget.
    peers: Peers,
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
    /// The recovery byte budget every transfer page this node pulls is
    /// paid from: its ingest, bounded whatever its senders do.
    recv_budget: SendBudget,
    /// Copies this node is receiving, read by the heartbeat.
    transfers: Transfers,
    /// The map epochs of the writes this node is coordinating, for the
    /// epoch its heartbeat reports as settled.
    write_epochs: WriteEpochs,
    /// How this node reaches others, and its certificates.
    transport: Transport,
    /// How far ahead of a certificate's expiry the node warns.
    cert_warn_before: Duration,
    /// When a coordinated read asks one more replica: the p95 of this
    /// node's recent replica reads.
    hedge: Mutex<HedgeDelay>,
    /// When this node's state was made: at process start.
    started: std::time::Instant,
    /// The node's frame, key and value limits, which bound what one answer
    /// may carry (a scan page).
    limits: Limits,
}

impl Node {
    /// Opens the node's storage.
    pub fn open(config: &Config) -> Result<Self, StorageError> {
        Self::new(Storage::open(&config.storage())?, config)
    }

    /// Opens the node's storage, with an admission controller made earlier
    /// (the admin endpoint serves its metrics before storage is open).
    /// Other nodes are reached over `transport`.
    pub fn open_with(
        config: &Config,
        admission: Arc<Admission>,
        transport: Transport,
    ) -> Result<Self, StorageError> {
        Self::with_admission(
            Storage::open(&config.storage())?,
            config,
            admission,
            transport,
        )
    }

    /// A node over already-open storage.
    pub fn new(storage: Storage, config: &Config) -> Result<Self, StorageError> {
        let admission = Arc::new(Admission::new(config.admission()));
        Self::with_admission(storage, config, admission, Transport::Plain)
    }

    /// A node over already-open storage with the given admission controller.
    pub fn with_admission(
        storage: Storage,
        config: &Config,
        admission: Arc<Admission>,
        transport: Transport,
    ) -> Result<Self, StorageError> {
        let hints = HintStore::open(&storage, config.hint_max_bytes_per_node)?;
        Ok(Self {
            storage,
            clock: Clock::new(config.max_clock_drift_ms),
            hints,
            // Nodes talk to nodes: a short connect timeout, and frames as
            // large as any value a node accepts; breakers and retry budget
            // as a client's.
            peers: Peers::new(
                Pool::new(
                    Duration::from_millis(500),
                    64 * 1024 * 1024,
                    transport.clone(),
                ),
                GuardConfig::of(&ClientConfig::default(), config.peer_breakers),
                admission.clone(),
            ),
            transport,
            cert_warn_before: Duration::from_secs(config.cert_warn_before_days * 86_400),
            admission,
            cluster: OnceLock::new(),
            send_budget: SendBudget::default(),
            recv_budget: SendBudget::receiving(
                &crate::cluster::map::RecoverySettings::default(),
                std::time::Instant::now(),
            ),
            transfers: Transfers::default(),
            write_epochs: WriteEpochs::default(),
            hedge: Mutex::default(),
            started: std::time::Instant::now(),
            limits: config.limits(),
        })
    }

    /// Time since the node started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// The node's frame, key and value limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// How long a coordinated read waits for a replica before asking one
    /// more (the p95 of recent replica reads, 200 ms until measured).
    pub fn hedge_delay(&self) -> Duration {
        self.hedge.lock().unwrap_or_else(|e| e.into_inner()).delay()
    }

    /// A replica read to another node answered after `latency`.
    pub fn record_replica_read(&self, latency: Duration) {
        self.hedge
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(latency);
    }

    /// This node's certificate for its heartbeat, `None` when insecure.
    pub fn cert_report(&self, now: std::time::SystemTime) -> Option<CertReport> {
        let Transport::Tls(credentials) = &self.transport else {
            return None;
        };
        let not_after = credentials.not_after().min(credentials.ca_not_after());
        let expiry = crate::tls::Expiry::of(not_after, now, self.cert_warn_before);
        Some(CertReport {
            not_after_ms: not_after
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            warn: expiry != crate::tls::Expiry::Fine,
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

    /// Calls to the other nodes for the data path.
    pub fn peers(&self) -> &Peers {
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

    /// The recovery byte budget of the pages this node pulls (its ingest).
    pub fn recv_budget(&self) -> &SendBudget {
        &self.recv_budget
    }

    /// The copies this node is receiving, with their progress.
    pub fn transfers(&self) -> &Transfers {
        &self.transfers
    }

    /// The map epochs of the writes this node is coordinating now.
    pub fn write_epochs(&self) -> &WriteEpochs {
        &self.write_epochs
    }
}
