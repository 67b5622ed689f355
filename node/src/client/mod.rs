//! The levee client library, used by the CLI and the benchmarks.
//!
//! A [`Client`] fetches the cluster map from one of its endpoints and sends
//! each key operation straight to a replica of the key's partition (one
//! multiplexed [`Connection`] per node, in a [`Pool`]). If that replica
//! cannot be reached or is busy, the same request goes to the next replica;
//! a node whose map is newer serves the request by its own map and says
//! so on the answer, and the client fetches that map in the background.
//! Every connect and every request has a timeout. Writes are stamped with a
//! version `(hybrid clock, writer id)` by the client, so sending the same
//! write again, to any replica, is harmless: see [`Client::put_version`].
//!
//! Retries are bounded three ways, so that a failing cluster is not sent
//! more work than it was sent when healthy (design.md §8): at most
//! `max_attempts` per request, a retry budget shared by all requests of
//! the client ([`budget`]), and a circuit breaker per node ([`breaker`])
//! that keeps requests away from a node that keeps failing. Rounds of
//! retries are spaced by capped exponential backoff with full jitter
//! ([`backoff`]); a node answering `Overloaded` is left alone for the
//! time it asks while the request moves on to another replica at once.
//!
//! This file holds the client's types and state; what it does is split by
//! idea: key operations (`requests.rs`), the cached map they route by
//! (`map_cache.rs`), prefix scans over every partition (`scan.rs`), and
//! the calls that go to one endpoint (`endpoint.rs`).

pub mod admin_http;
pub mod backoff;
pub mod breaker;
pub mod budget;
mod config;
mod connection;
mod endpoint;
pub mod load;
mod map_cache;
pub mod pool;
mod requests;
mod retry;
mod scan;
pub mod throttle;

pub use breaker::BreakerState;
pub use config::{ClientConfig, Routing};
pub use connection::Connection;
pub use scan::{PageAsk, Scan, ScanCursor};

use self::pool::Pool;
use self::retry::Retry;
use crate::cluster::map::ClusterMap;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Mutex;

use crate::hlc::Clock;
use crate::proto::handshake::HandshakeError;
use crate::proto::{Response, WireError};
use crate::storage::Version;

/// Client failures. The messages name the endpoint and the cause.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No endpoints were configured.
    #[error("no endpoints given (use --endpoints or LEVEE_ENDPOINTS)")]
    NoEndpoints,
    /// The TCP connection failed.
    #[error("cannot connect to {addr}: {error}")]
    Connect {
        /// Endpoint.
        addr: String,
        /// Cause.
        error: std::io::Error,
    },
    /// The TLS handshake failed: a certificate the other side does not
    /// trust, one not valid for the address used, or an expired one.
    #[error("TLS with {addr} failed: {detail}")]
    Tls {
        /// Endpoint.
        addr: String,
        /// What rustls said.
        detail: String,
    },
    /// The connection did not open in time.
    #[error("connecting to {addr} timed out after {after:?}")]
    ConnectTimeout {
        /// Endpoint.
        addr: String,
        /// The timeout.
        after: Duration,
    },
    /// A connect to the endpoint failed moments ago and the pool does not
    /// dial it again before its hold-off ends; nothing was sent.
    #[error("not connecting to {addr} for another {remaining:?}: its last connect failed")]
    HeldOff {
        /// Endpoint.
        addr: String,
        /// Until the hold-off ends.
        remaining: Duration,
    },
    /// The endpoint is not a compatible levee node.
    #[error("handshake with {addr} failed: {error}")]
    Handshake {
        /// Endpoint.
        addr: String,
        /// Cause.
        error: HandshakeError,
    },
    /// No answer in time. For a write, the outcome is unknown; retrying
    /// with the same version is safe.
    #[error("request to {addr} timed out after {after:?}")]
    Timeout {
        /// Endpoint.
        addr: String,
        /// The timeout.
        after: Duration,
    },
    /// The connection closed before the answer came.
    #[error("connection to {addr} closed{}", reason.as_ref().map(|r| format!(": {r}")).unwrap_or_default())]
    ConnectionClosed {
        /// Endpoint.
        addr: String,
        /// What the server said before closing, if anything.
        reason: Option<WireError>,
    },
    /// Not sent: a node's call to a peer whose circuit breaker is open
    /// (its recent calls timed out) is refused at once, rather than left
    /// to wait for a timeout of its own (`node/peers.rs`). The caller does
    /// what it does for any failed call: a write becomes a hint, a read
    /// asks another replica, background work backs off.
    #[error(
        "not sent to {addr}: its circuit breaker is open after repeated timeouts (next probe in {retry_in:?})"
    )]
    BreakerOpen {
        /// The peer.
        addr: String,
        /// When a probe call may go again.
        retry_in: Duration,
    },
    /// The node answered with an error.
    #[error("{0}")]
    Server(WireError),
    /// The node answered with a response of the wrong kind.
    #[error("unexpected response from node: {0}")]
    Unexpected(String),
    /// Refused by this client's own adaptive throttle, without being sent:
    /// the cluster has recently been refusing most requests as overloaded
    /// (see `client/throttle.rs`).
    #[error(
        "not sent: the cluster is overloaded (it accepted too few recent requests; this client refuses {}% locally)",
        reject_permille / 10
    )]
    Throttled {
        /// The refusal probability at the time, in thousandths.
        reject_permille: u16,
    },
    /// The request crashed the handler (an `Internal` answer, or the
    /// connection closed under it) on this many replicas, and was not
    /// sent to another: a request that crashes two nodes would crash them
    /// all (the query of death).
    #[error(
        "the request crashed the handler on {replicas} replicas (last: {last}); not tried on a third, since it would likely crash it too; see the nodes' logs, and `levee status` for quarantined requests"
    )]
    QueryOfDeath {
        /// Replicas whose handler it crashed.
        replicas: u32,
        /// The last of those failures.
        last: Box<ClientError>,
    },
    /// Every endpoint failed; the last error is given.
    #[error("no endpoint reachable ({tried} tried); last error: {last}")]
    AllEndpointsFailed {
        /// How many were tried.
        tried: usize,
        /// The last failure.
        last: Box<ClientError>,
    },
    /// The request breaks a limit the client checks before sending (an
    /// empty key, a key or value over `max_key_bytes` / `max_value_bytes`):
    /// nothing was sent.
    #[error("{0} (refused by the client, nothing sent)")]
    Invalid(WireError),
}

/// A value read from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    /// The bytes.
    pub value: Vec<u8>,
    /// The version of the write that stored them.
    pub version: Version,
}

/// The outcome of a put or delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteOutcome {
    /// The version this write carried.
    pub version: Version,
    /// `false` if the node already had this version or a newer one (for a
    /// retry, that means the first attempt landed).
    pub applied: bool,
    /// The version the node holds after the write.
    pub stored: Version,
}

/// A levee client. Cheap to share behind an `Arc`; requests from many
/// tasks share its connection.
pub struct Client {
    config: ClientConfig,
    clock: Clock,
    writer: u64,
    conn: Mutex<Option<Arc<Connection>>>,
    /// Endpoint to try first on the next connect; moves on after failures.
    next_endpoint: AtomicUsize,
    /// The cached cluster map (shared with its background refresh).
    map: Arc<std::sync::RwLock<Option<Arc<ClusterMap>>>>,
    /// Whether a background refresh of the map is running (at most one).
    refreshing: Arc<std::sync::atomic::AtomicBool>,
    /// Connections to the nodes holding replicas.
    pool: Arc<Pool>,
    /// Retry budget, breakers and counters shared by all requests.
    retry: Retry,
    /// Adaptive client-side throttling (see `throttle.rs`).
    throttle: std::sync::Mutex<throttle::Throttle>,
    /// Requests refused by the throttle.
    throttled: std::sync::atomic::AtomicU64,
    /// Requests refused because every replica was held off for overload.
    held_off: std::sync::atomic::AtomicU64,
}

impl Client {
    /// A client; nothing is connected until the first request.
    pub fn new(config: ClientConfig) -> Self {
        let clock = Clock::new(config.max_clock_drift_ms);
        Self {
            clock,
            // Random, so two clients started in the same millisecond never
            // produce equal versions for different writes.
            writer: rand::random(),
            conn: Mutex::new(None),
            next_endpoint: AtomicUsize::new(0),
            map: Arc::new(std::sync::RwLock::new(None)),
            refreshing: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            pool: Arc::new(Pool::new(
                config.connect_timeout,
                config.max_frame_bytes,
                config.transport.clone(),
            )),
            retry: Retry::new(&config, std::time::Instant::now()),
            throttle: std::sync::Mutex::new(throttle::Throttle::new(
                config.throttle_k,
                config.throttle_window,
                std::time::Instant::now(),
            )),
            throttled: std::sync::atomic::AtomicU64::new(0),
            held_off: std::sync::atomic::AtomicU64::new(0),
            config,
        }
    }

    /// The client's configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Key operations this client refused itself (its adaptive throttle),
    /// without sending them.
    pub fn throttled(&self) -> u64 {
        self.throttled.load(Ordering::Relaxed)
    }

    /// Key operations this client refused itself because every replica
    /// was still held off by an overloaded node's `retry_after` while the
    /// cluster as a whole refused (the retry rule,
    /// `ClientConfig::overload_retry_below`), without sending them. They
    /// end as `Overloaded`, as a node's refusal does; this tells them
    /// apart.
    pub fn held_off(&self) -> u64 {
        self.held_off.load(Ordering::Relaxed)
    }

    /// Key operations started by this client (each counts once, however
    /// many attempts it takes).
    pub fn requests(&self) -> u64 {
        self.retry.requests()
    }

    /// Attempts sent for key operations: one per request sent to a node.
    /// `attempts() / requests()` is the load amplification by retries.
    pub fn attempts(&self) -> u64 {
        self.retry.attempts()
    }

    /// Attempts beyond the first of each request.
    pub fn retries(&self) -> u64 {
        self.attempts().saturating_sub(self.requests())
    }

    /// Retries refused because the retry budget was spent.
    pub fn budget_exhausted(&self) -> u64 {
        self.retry.budget_exhausted()
    }

    /// The circuit breaker state this client holds for the node at `addr`
    /// (closed for a node it never talked to).
    pub fn breaker_state(&self, addr: &str) -> BreakerState {
        self.retry.breaker_state(addr, std::time::Instant::now())
    }

    /// A fresh version for a new write by this client.
    pub fn next_version(&self) -> Version {
        Version {
            hlc: self.clock.now(),
            writer: self.writer,
        }
    }

    /// Keeps this client's clock ahead of versions it has seen, so its next
    /// write to a key it just read sorts after what it read.
    fn observe(&self, version: Version) {
        // A version too far ahead is not adopted; writes stay on local time.
        let _ = self.clock.observe(version.hlc);
    }
}

fn unexpected(response: Response) -> ClientError {
    ClientError::Unexpected(format!("{response:?}"))
}
