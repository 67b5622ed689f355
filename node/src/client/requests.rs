//! Key operations: put, get and delete sent to the replicas of the key's
//! partition, in rounds with failover (bounded attempts, per-attempt
//! timeout, backoff between rounds, all within the request timeout), a
//! map refresh when a node knows a newer one, and the client's adaptive
//! throttle in front; and the reads of one node's own copy.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::map_cache::replica_addrs;
use super::retry::{self, Route};
use super::{Client, ClientError, Routing, Value, WriteOutcome, throttle, unexpected};
use crate::cluster::map::ClusterMap;
use crate::partition::partition_of;
use crate::proto::{ClientRequest, Request, Response, WireError};
use crate::storage::Version;

impl Client {
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
        self.check_limits(key, Some(value))?;
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
    /// answers (see [`Client::partition_call`]). A write resent this way
    /// carries the same version, so it lands at most once.
    async fn key_call(
        &self,
        key: &[u8],
        request: impl Fn(u64) -> ClientRequest,
    ) -> Result<Response, ClientError> {
        self.check_limits(key, None)?;
        self.partition_call(RouteBy::Key(key), request).await
    }

    /// Sends a request to the replicas of one partition until one answers,
    /// all within one request timeout. Each round tries the available
    /// replicas in order; between rounds, a jittered backoff. Attempts
    /// after the first are retries: bounded by `max_attempts` and by the
    /// retry budget.
    pub(super) async fn partition_call(
        &self,
        by: RouteBy<'_>,
        request: impl Fn(u64) -> ClientRequest,
    ) -> Result<Response, ClientError> {
        let deadline = tokio::time::Instant::now() + self.config.request_timeout;
        let mut map = self.cached_map().await?;
        self.throttle_gate()?;
        let partition = by.partition(&map);
        let result = self
            .attempt_rounds(partition, &request, deadline, &mut map)
            .await;
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
        partition: u32,
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
            let addrs =
                match self
                    .retry
                    .route(&self.replica_order(map, partition), now, now + remaining)
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
                    // A request that crashed a handler may be that
                    // node's trouble: one more replica is asked; after a
                    // second crash, none (the query of death).
                    Err(e) if retry::crashed_handler(&e) => match attempts.crashed() {
                        Some(replicas) => {
                            return Err(ClientError::QueryOfDeath {
                                replicas,
                                last: Box::new(e),
                            });
                        }
                        None => keep_most_telling(&mut last, e),
                    },
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
}

impl Client {
    /// Refuses, before anything is sent, a key or value the nodes would
    /// refuse (with the limit's own name, not a frame size): the nodes'
    /// own checks, on this client's copy of their limits.
    fn check_limits(&self, key: &[u8], value: Option<&[u8]>) -> Result<(), ClientError> {
        let limits = &self.config.limits;
        limits
            .key(key)
            .and_then(|()| value.map_or(Ok(()), |v| limits.value(v)))
            .map_err(ClientError::Invalid)
    }

    /// The replicas of `partition` in the order this round tries them: the
    /// Up ones first, ranked by load (or in placement order, when the
    /// client is set to it), then the others. Each round ranks again, so a
    /// replica that just failed or slowed down has already lost its place.
    fn replica_order(&self, map: &ClusterMap, partition: u32) -> Vec<String> {
        let (mut addrs, up) = replica_addrs(map, partition);
        if self.config.routing == Routing::LoadAware
            && let Some(up) = addrs.get_mut(..up)
        {
            self.pool.rank(up);
        }
        addrs
    }
}

/// What a request is routed by: its key's partition, or a partition named
/// outright (a scan page).
#[derive(Debug, Clone, Copy)]
pub(super) enum RouteBy<'a> {
    /// The partition of this key.
    Key(&'a [u8]),
    /// This partition.
    Partition(u32),
}

impl RouteBy<'_> {
    /// The partition, under `map`'s partition count (fixed for the life of
    /// the cluster, so a refreshed map routes the same way).
    fn partition(self, map: &ClusterMap) -> u32 {
        match self {
            RouteBy::Key(key) => partition_of(key, map.partitions.max(1)),
            RouteBy::Partition(p) => p,
        }
    }
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
        // A TLS failure is this node's certificate (expired, not valid
        // for its address): another replica may be fine.
        ClientError::Connect { .. }
        | ClientError::ConnectTimeout { .. }
        | ClientError::HeldOff { .. }
        | ClientError::Tls { .. }
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
