//! The levee client library, used by the CLI and the benchmarks.
//!
//! A [`Client`] fetches the cluster map from one of its endpoints and sends
//! each key operation straight to a replica of the key's partition (one
//! multiplexed [`Connection`] per node, in a [`Pool`]). If that replica
//! cannot be reached or is busy, the same request goes to the next replica;
//! if a node says the map is out of date, the map is fetched again, once.
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

pub mod backoff;
pub mod breaker;
pub mod budget;
mod config;
mod connection;
pub mod pool;
mod retry;
pub mod throttle;

pub use breaker::BreakerState;
pub use config::ClientConfig;
pub use connection::Connection;

use self::pool::Pool;
use self::retry::{Retry, Route};
use crate::cluster::map::{ClusterMap, NodeState};
use crate::partition::partition_of;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Mutex;

use crate::hlc::Clock;
use crate::proto::handshake::HandshakeError;
use crate::proto::{ClientRequest, Request, Response, WireError};
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
    /// The connection did not open in time.
    #[error("connecting to {addr} timed out after {after:?}")]
    ConnectTimeout {
        /// Endpoint.
        addr: String,
        /// The timeout.
        after: Duration,
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
    /// Every endpoint failed; the last error is given.
    #[error("no endpoint reachable ({tried} tried); last error: {last}")]
    AllEndpointsFailed {
        /// How many were tried.
        tried: usize,
        /// The last failure.
        last: Box<ClientError>,
    },
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
    /// The cached cluster map.
    map: std::sync::RwLock<Option<Arc<ClusterMap>>>,
    /// Connections to the nodes holding replicas.
    pool: Pool,
    /// Retry budget, breakers and counters shared by all requests.
    retry: Retry,
    /// Adaptive client-side throttling (see `throttle.rs`).
    throttle: std::sync::Mutex<throttle::Throttle>,
    /// Requests refused by the throttle.
    throttled: std::sync::atomic::AtomicU64,
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
            map: std::sync::RwLock::new(None),
            pool: Pool::new(config.connect_timeout, config.max_frame_bytes),
            retry: Retry::new(&config, std::time::Instant::now()),
            throttle: std::sync::Mutex::new(throttle::Throttle::new(
                config.throttle_k,
                config.throttle_window,
                std::time::Instant::now(),
            )),
            throttled: std::sync::atomic::AtomicU64::new(0),
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

    /// Checks that a node answers.
    pub async fn ping(&self) -> Result<(), ClientError> {
        match self.call(ClientRequest::Ping).await? {
            Response::Pong { .. } => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// The cluster map held by the node this client talks to.
    pub async fn map(&self) -> Result<crate::cluster::map::ClusterMap, ClientError> {
        match self.call(ClientRequest::GetMap).await? {
            Response::Map(map) => Ok(*map),
            other => Err(unexpected(other)),
        }
    }

    /// The cluster as the node this client talks to sees it.
    pub async fn status(&self) -> Result<crate::cluster::status::ClusterStatus, ClientError> {
        match self.call(ClientRequest::Status).await? {
            Response::Status(status) => Ok(*status),
            other => Err(unexpected(other)),
        }
    }

    /// The cluster as its leader sees it when the leader can be reached
    /// (only the leader knows replication progress, failures, moves and
    /// recovery rates), otherwise as the answering node sees it.
    pub async fn leader_status(
        &self,
    ) -> Result<crate::cluster::status::ClusterStatus, ClientError> {
        let status = self.status().await?;
        let Some(leader) = status
            .leader
            .filter(|l| *l != status.node_id)
            .and_then(|id| status.map.nodes.get(&id))
        else {
            return Ok(status);
        };
        let request = Request::Client(ClientRequest::Status);
        match self
            .pool
            .send(&leader.spec.addr, request, self.config.request_timeout)
            .await
        {
            Ok(Response::Status(from_leader)) => Ok(*from_leader),
            _ => Ok(status),
        }
    }

    /// An operator's change, committed through the leader; what applying
    /// it did (a refusal says why).
    pub async fn admin(
        &self,
        command: crate::proto::AdminCommand,
    ) -> Result<crate::cluster::map::CommandResult, ClientError> {
        match self.call(ClientRequest::Admin(command)).await? {
            Response::Proposed(result) => Ok(result),
            other => Err(unexpected(other)),
        }
    }

    /// Reads a key; `None` if it does not exist or was deleted.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Value>, ClientError> {
        let request = |epoch| ClientRequest::Get {
            key: key.to_vec(),
            epoch,
        };
        match self.key_call(key, request).await? {
            Response::Get(found) => {
                if let Some(f) = &found {
                    self.observe(f.version);
                }
                Ok(live_value(found))
            }
            other => Err(unexpected(other)),
        }
    }

    /// Writes a value under a new version.
    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<WriteOutcome, ClientError> {
        self.put_version(key, value, self.next_version()).await
    }

    /// Writes a value under the given version. Sending the same key, value
    /// and version again is idempotent: this is how a retry is made safe.
    pub async fn put_version(
        &self,
        key: &[u8],
        value: &[u8],
        version: Version,
    ) -> Result<WriteOutcome, ClientError> {
        let request = |epoch| ClientRequest::Put {
            key: key.to_vec(),
            value: value.to_vec(),
            version,
            epoch,
        };
        self.write(key, request, version).await
    }

    /// Deletes a key (writes a tombstone under a new version).
    pub async fn delete(&self, key: &[u8]) -> Result<WriteOutcome, ClientError> {
        let version = self.next_version();
        let request = |epoch| ClientRequest::Delete {
            key: key.to_vec(),
            version,
            epoch,
        };
        self.write(key, request, version).await
    }

    /// Reads one node's own copy of a key: no quorum, no repair.
    pub async fn get_from(&self, node: u64, key: &[u8]) -> Result<Option<Value>, ClientError> {
        Ok(live_value(self.record_from(node, key).await?))
    }

    /// One node's own record of a key, tombstone included (a tombstone is
    /// a `Found` without a value; `None` means no record at all).
    pub async fn record_from(
        &self,
        node: u64,
        key: &[u8],
    ) -> Result<Option<crate::proto::Found>, ClientError> {
        let map = self.cached_map().await?;
        let Some(info) = map.nodes.get(&node) else {
            return Err(ClientError::Unexpected(format!(
                "no node {node} in the cluster map"
            )));
        };
        let request = Request::Client(ClientRequest::GetReplica { key: key.to_vec() });
        match self
            .pool
            .send(&info.spec.addr, request, self.config.request_timeout)
            .await?
        {
            Response::Get(found) => Ok(found),
            other => Err(unexpected(other)),
        }
    }

    async fn write(
        &self,
        key: &[u8],
        request: impl Fn(u64) -> ClientRequest,
        version: Version,
    ) -> Result<WriteOutcome, ClientError> {
        match self.key_call(key, request).await? {
            Response::Written {
                applied,
                version: stored,
            } => {
                self.observe(stored);
                Ok(WriteOutcome {
                    version,
                    applied,
                    stored,
                })
            }
            other => Err(unexpected(other)),
        }
    }

    /// Sends a key operation to the replicas of its partition until one
    /// answers, all within one request timeout. Each round tries the
    /// available replicas in order; between rounds, a jittered backoff.
    /// Attempts after the first are retries: bounded by `max_attempts` and
    /// by the retry budget. A write resent this way carries the same
    /// version, so it lands at most once.
    async fn key_call(
        &self,
        key: &[u8],
        request: impl Fn(u64) -> ClientRequest,
    ) -> Result<Response, ClientError> {
        let deadline = tokio::time::Instant::now() + self.config.request_timeout;
        let mut map = self.cached_map().await?;
        self.throttle_gate()?;
        let result = self.attempt_rounds(key, &request, deadline, &mut map).await;
        // Accepted: some node took the request on (any answer but
        // `Overloaded`, including errors about the request itself). No
        // answer at all is not the throttle's business.
        let accepted = match &result {
            Ok(_) => Some(true),
            Err(ClientError::Server(WireError::Overloaded { .. })) => Some(false),
            Err(ClientError::Server(_)) => Some(true),
            Err(_) => None,
        };
        if let Some(accepted) = accepted {
            lock_throttle(&self.throttle).record(accepted, std::time::Instant::now());
        }
        result
    }

    /// Refuses locally when the throttle says so.
    fn throttle_gate(&self) -> Result<(), ClientError> {
        let now = std::time::Instant::now();
        let mut throttle = lock_throttle(&self.throttle);
        let p = throttle.reject_probability(now);
        if throttle.admit(rand::random::<f64>(), now) {
            return Ok(());
        }
        throttle.record(false, now);
        self.throttled.fetch_add(1, Ordering::Relaxed);
        Err(ClientError::Throttled {
            reject_permille: (p * 1000.0).round().clamp(0.0, 1000.0) as u16,
        })
    }

    async fn attempt_rounds(
        &self,
        key: &[u8],
        request: &impl Fn(u64) -> ClientRequest,
        deadline: tokio::time::Instant,
        map: &mut Arc<ClusterMap>,
    ) -> Result<Response, ClientError> {
        let mut attempts = self.retry.begin();
        let mut refreshes = 0;
        let mut last = None;
        let mut round = 0;
        'rounds: loop {
            let now = std::time::Instant::now();
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let addrs = match self
                .retry
                .route(&replica_addrs(map, key), now, now + remaining)
            {
                Route::Try(addrs) => addrs,
                Route::WaitUntil(at) => {
                    // Nothing is available yet: wait (no attempt, no
                    // budget), a little at a time, since another request's
                    // probe may reopen a node sooner.
                    let wait = at.saturating_duration_since(now).min(self.retry.max_wait());
                    tokio::time::sleep(wait.min(remaining)).await;
                    if remaining.is_zero() {
                        break;
                    }
                    continue;
                }
            };
            if addrs.is_empty() {
                break;
            }
            for addr in addrs {
                let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
                let now = std::time::Instant::now();
                if remaining.is_zero() || attempts.next(now).is_err() {
                    break 'rounds;
                }
                let timeout = if attempts.is_last(now) {
                    remaining
                } else {
                    remaining.min(self.config.attempt_timeout)
                };
                self.retry.acquire(&addr, now);
                let result = self
                    .pool
                    .send(&addr, Request::Client(request(map.epoch)), timeout)
                    .await;
                self.retry
                    .record(&addr, retry::verdict(&result), std::time::Instant::now());
                match result {
                    Ok(response) => return Ok(response),
                    Err(ClientError::Server(
                        WireError::NotReplica { epoch } | WireError::StaleMap { epoch },
                    )) if refreshes == 0
                        || (refreshes < MAX_MAP_REFRESHES && epoch > map.epoch) =>
                    {
                        // While partitions move the map changes several
                        // times a second, so one refresh may already be
                        // stale; refresh again as long as the node knows a
                        // newer map than ours (bounded, and within the
                        // deadline).
                        // The refresh counts against the same deadline, and
                        // asks the node that knows the newer map.
                        *map = tokio::time::timeout_at(deadline, self.refresh_map_from(&addr))
                            .await
                            .map_err(|_| ClientError::Timeout {
                                addr: "the map refresh".into(),
                                after: self.config.request_timeout,
                            })??;
                        refreshes += 1;
                        attempts.grant_resend();
                        continue 'rounds;
                    }
                    // Overloaded included: the next replica is tried at
                    // once, and this node is held off (recorded above).
                    Err(e) if fails_over(&e) => keep_most_telling(&mut last, e),
                    Err(e) => return Err(e),
                }
            }
            // Every replica of this round failed: back off before the next,
            // unless no retry could follow.
            if let Some(stop) = attempts.stop_reason(std::time::Instant::now()) {
                attempts.give_up(stop);
                break;
            }
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let wait = self.retry.backoff(round);
            round = round.saturating_add(1);
            if wait >= remaining {
                break;
            }
            tokio::time::sleep(wait).await;
        }
        Err(last.unwrap_or(ClientError::Timeout {
            addr: "every replica".into(),
            after: self.config.request_timeout,
        }))
    }

    /// The cached map, fetched on first use.
    async fn cached_map(&self) -> Result<Arc<ClusterMap>, ClientError> {
        let cached = self.map.read().unwrap_or_else(|e| e.into_inner()).clone();
        match cached {
            Some(map) => Ok(map),
            None => self.refresh_map().await,
        }
    }

    /// Fetches the map from an endpoint and caches it.
    pub async fn refresh_map(&self) -> Result<Arc<ClusterMap>, ClientError> {
        let map = Arc::new(self.map().await?);
        Ok(self.install_map(map))
    }

    /// Fetches the map from `addr` — a node that just said it knows a newer
    /// one than ours, when the node this client usually asks may lag
    /// behind — and keeps it if it is newer.
    async fn refresh_map_from(&self, addr: &str) -> Result<Arc<ClusterMap>, ClientError> {
        let request = Request::Client(ClientRequest::GetMap);
        match self
            .pool
            .send(addr, request, self.config.request_timeout)
            .await?
        {
            Response::Map(map) => Ok(self.install_map(Arc::new(*map))),
            other => Err(unexpected(other)),
        }
    }

    fn install_map(&self, map: Arc<ClusterMap>) -> Arc<ClusterMap> {
        let mut slot = self.map.write().unwrap_or_else(|e| e.into_inner());
        // Keep whichever is newer: concurrent refreshes may finish out of
        // order.
        if slot.as_ref().is_none_or(|m| m.epoch <= map.epoch) {
            *slot = Some(map.clone());
        }
        slot.clone().unwrap_or(map)
    }

    /// Keeps this client's clock ahead of versions it has seen, so its next
    /// write to a key it just read sorts after what it read.
    fn observe(&self, version: Version) {
        // A version too far ahead is not adopted; writes stay on local time.
        let _ = self.clock.observe(version.hlc);
    }

    async fn call(&self, request: ClientRequest) -> Result<Response, ClientError> {
        let conn = self.connection().await?;
        let result = conn
            .request(Request::Client(request), self.config.request_timeout)
            .await;
        if let Err(ClientError::ConnectionClosed { .. }) = &result {
            self.forget(&conn).await;
        }
        result
    }

    /// The current connection, or a new one to the first endpoint that
    /// accepts, starting after the last one that failed.
    pub async fn connection(&self) -> Result<Arc<Connection>, ClientError> {
        let mut slot = self.conn.lock().await;
        if let Some(conn) = slot.as_ref()
            && !conn.is_closed()
        {
            return Ok(conn.clone());
        }
        let endpoints = &self.config.endpoints;
        if endpoints.is_empty() {
            return Err(ClientError::NoEndpoints);
        }
        let start = self.next_endpoint.load(Ordering::Relaxed);
        let mut last = None;
        for i in 0..endpoints.len() {
            let index = (start + i) % endpoints.len();
            let addr = &endpoints[index];
            match Connection::connect(
                addr,
                self.config.connect_timeout,
                self.config.max_frame_bytes,
            )
            .await
            {
                Ok(conn) => {
                    let conn = Arc::new(conn);
                    *slot = Some(conn.clone());
                    self.next_endpoint.store(index, Ordering::Relaxed);
                    return Ok(conn);
                }
                Err(e) => {
                    tracing::debug!(%addr, error = %e, "endpoint failed");
                    last = Some(e);
                }
            }
        }
        self.next_endpoint
            .store((start + 1) % endpoints.len(), Ordering::Relaxed);
        match last {
            Some(e) if endpoints.len() == 1 => Err(e),
            Some(e) => Err(ClientError::AllEndpointsFailed {
                tried: endpoints.len(),
                last: Box::new(e),
            }),
            None => Err(ClientError::NoEndpoints),
        }
    }

    async fn forget(&self, conn: &Arc<Connection>) {
        let mut slot = self.conn.lock().await;
        if slot.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            *slot = None;
            let len = self.config.endpoints.len().max(1);
            self.next_endpoint.fetch_add(1, Ordering::Relaxed);
            self.next_endpoint
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some(n % len))
                .ok();
        }
    }
}

/// The addresses of a key's replicas, Up ones first, in placement order.
fn replica_addrs(map: &ClusterMap, key: &[u8]) -> Vec<String> {
    let partition = partition_of(key, map.partitions.max(1));
    let mut replicas: Vec<_> = map
        .assignment
        .get(partition as usize)
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|id| map.nodes.get(id))
        .collect();
    replicas.sort_by_key(|n| n.state != NodeState::Up);
    replicas.into_iter().map(|n| n.spec.addr.clone()).collect()
}

/// Keeps the most telling failure: what a node said beats "could not
/// reach the next one".
fn keep_most_telling(last: &mut Option<ClientError>, e: ClientError) {
    if last
        .as_ref()
        .is_none_or(|l| !matches!(l, ClientError::Server(_)))
    {
        *last = Some(e);
    }
}

/// Whether a failed attempt should move on to the next replica. Safe for
/// writes too: the retry carries the same version.
fn fails_over(e: &ClientError) -> bool {
    match e {
        ClientError::Connect { .. }
        | ClientError::ConnectTimeout { .. }
        | ClientError::Timeout { .. }
        | ClientError::ConnectionClosed { .. } => true,
        ClientError::Server(e) => e.is_retryable(),
        _ => false,
    }
}

/// A stored record as a value, `None` for a tombstone.
fn live_value(found: Option<crate::proto::Found>) -> Option<Value> {
    found.and_then(|f| {
        f.value.map(|value| Value {
            value,
            version: f.version,
        })
    })
}

/// Map refreshes one key operation may make when nodes answer with a newer
/// epoch.
const MAX_MAP_REFRESHES: u32 = 4;

fn lock_throttle(
    m: &std::sync::Mutex<throttle::Throttle>,
) -> std::sync::MutexGuard<'_, throttle::Throttle> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn unexpected(response: Response) -> ClientError {
    ClientError::Unexpected(format!("{response:?}"))
}
