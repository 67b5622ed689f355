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
        let retry_overloaded = self.throttle_gate()?;
        let partition = by.partition(&map);
        let result = self
            .attempt_rounds(partition, &request, deadline, &mut map, retry_overloaded)
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

    /// Refuses locally when the throttle says so. Otherwise says, from
    /// the same window, whether an `Overloaded` answer to this request may
    /// go on to another replica, or the overload is the cluster's and ends
    /// it ([`retry::retries_overloaded`]).
    fn throttle_gate(&self) -> Result<bool, ClientError> {
        let now = std::time::Instant::now();
        let mut throttle = lock_throttle(&self.throttle);
        let p = throttle.reject_probability(now);
        if throttle.admit(rand::random::<f64>(), now) {
            return Ok(retry::retries_overloaded(
                throttle.refused_share(now),
                self.config.overload_retry_below,
            ));
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
        retry_overloaded: bool,
    ) -> Result<Response, ClientError> {
        let mut attempts = self.retry.begin();
        let mut refreshes = 0;
        // Whether the request carries the map's epoch, so that a node with
        // a newer map refuses it and the client learns that map. Cleared
        // once refreshing cannot keep up (below): the node's own map picks
        // the replicas anyway, so the check only serves the client's
        // learning, never correctness.
        let mut check_epoch = true;
        let mut last = None;
        let mut round = 0;
        'rounds: loop {
            let now = std::time::Instant::now();
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let addrs = match self.retry.route(
                &self.replica_order(map, partition),
                now,
                now + remaining,
                retry_overloaded,
            ) {
                Route::Try(addrs) => addrs,
                // Every replica asked not to be sent anything yet, and
                // the cluster refuses more than one node's worth:
                // waiting would only queue this request behind the
                // hold-off and send it to a node as likely to refuse.
                Route::Refuse(at) => {
                    self.held_off.fetch_add(1, Ordering::Relaxed);
                    let wait = at.saturating_duration_since(now).as_millis();
                    return Err(ClientError::Server(WireError::Overloaded {
                        retry_after_ms: u32::try_from(wait.max(1)).unwrap_or(u32::MAX),
                    }));
                }
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
                    remaining.min(self.config.attempt_limit())
                };
                self.retry.acquire(&addr, now);
                let result = self
                    .pool
                    .send(
                        &addr,
                        Request::Client(request(if check_epoch { map.epoch } else { 0 })),
                        timeout,
                    )
                    .await;
                self.retry
                    .record(&addr, retry::verdict(&result), std::time::Instant::now());
                match result {
                    Ok(response) => {
                        self.learn_epoch();
                        return Ok(response);
                    }
                    Err(ClientError::Server(
                        WireError::NotReplica { epoch } | WireError::StaleMap { epoch },
                    )) if refreshes < MAX_MAP_REFRESHES && epoch > map.epoch => {
                        // While partitions move the map changes several
                        // times a second, so one refresh may already be
                        // stale; refresh again as long as the node knows a
                        // newer map than ours (bounded, and within the
                        // deadline).
                        // The refresh counts against the same deadline, and
                        // asks the node that knows the newer map. A node
                        // whose map is not newer (a move's target that has
                        // not applied it yet) has nothing to teach: its
                        // `NotReplica` fails over to the next replica below.
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
                    // The map changed again since the last refresh (while
                    // partitions move it changes several times a second,
                    // and nodes apply it a few milliseconds apart): resend
                    // once without the epoch rather than fail a request
                    // every replica could serve. The client has learnt the
                    // newer maps already. (Nodes no longer answer
                    // `StaleMap` since protocol 5, which serves such a
                    // request; the path stays for any node that does.)
                    Err(ClientError::Server(WireError::StaleMap { .. })) if check_epoch => {
                        check_epoch = false;
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
                    // The cluster, not this node, is short of room: a
                    // retry would wait in another node's queue and add
                    // that wait to the requests that get through.
                    Err(e @ ClientError::Server(WireError::Overloaded { .. }))
                        if !retry_overloaded =>
                    {
                        return Err(e);
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
        // A node killed while the connection was being opened resets it
        // mid-handshake; one answering another protocol version (a rolling
        // upgrade) is that node alone.
        | ClientError::Handshake { .. }
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    use super::*;
    use crate::client::ClientConfig;
    use crate::cluster::map::{Command, NodeSpec, Settings};
    use crate::proto::{ResponseFrame, codec, frame, handshake};

    /// Bounds every wait of the tests.
    const BOUND: Duration = Duration::from_secs(10);

    /// What a fake node does with its connections.
    #[derive(Clone, Copy)]
    enum Fake {
        /// Its map changes between any two of its answers: every `GetMap`
        /// gets a newer map, every put sent with an epoch is refused as
        /// stale with a newer one still; a put without one is served.
        Racing,
        /// Serves every put and `GetMap` (the map never changes).
        Serving,
        /// Closes every connection before the handshake's answer, as a
        /// node killed while the connection was being opened.
        DroppingHandshakes,
        /// Handshakes and reads requests but answers none, as a node
        /// killed (or stopped) with requests on it whose connection has
        /// not failed yet.
        Silent,
        /// Its map is older than everyone's and does not list it for any
        /// partition yet (a move's target before it applies the move): it
        /// answers puts `NotReplica` with epoch 0.
        Lagging,
        /// Serves every put and `GetMap`, and its map moves on by an epoch
        /// after every put it serves (as while partitions move); its
        /// answers carry its epoch.
        Advancing,
        /// Answers every put `Overloaded` with this `retry_after_ms`;
        /// serves `GetMap`.
        Overloaded(u32),
    }

    /// What a fake node was asked.
    #[derive(Default)]
    struct Counts {
        /// Requests of any kind.
        requests: AtomicU64,
        /// Puts it served.
        served: AtomicU64,
        /// `GetMap`s it answered.
        maps: AtomicU64,
    }

    /// A cluster of `nodes` (listening, not yet answering) and its map:
    /// R = `nodes`, so every partition is on all of them.
    async fn cluster(nodes: u64) -> (Vec<TcpListener>, ClusterMap) {
        let mut listeners = Vec::new();
        let mut map = ClusterMap::default();
        for i in 1..=nodes {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let spec = NodeSpec {
                addr: listener.local_addr().unwrap().to_string(),
                admin: String::new(),
                zone: format!("z{i}"),
                capacity: 1,
                join_token: i,
            };
            listeners.push(listener);
            map.apply(&if i == 1 {
                Command::Init {
                    cluster_id: 1,
                    partitions: 4,
                    settings: Settings::majority(nodes as u8, 1),
                    first: spec,
                }
            } else {
                Command::AddNode(spec)
            });
        }
        (listeners, map)
    }

    /// Runs a fake node on `listener`, counting what it is asked.
    fn fake(listener: TcpListener, map: ClusterMap, fake: Fake, counts: Arc<Counts>) {
        let map = Arc::new(std::sync::Mutex::new(map));
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                if let Fake::DroppingHandshakes = fake {
                    drop(stream);
                    continue;
                }
                let (map, counts) = (map.clone(), counts.clone());
                tokio::spawn(async move {
                    handshake::accept(&mut stream, BOUND).await.unwrap();
                    while let Ok(Some(payload)) =
                        frame::read_frame(&mut stream, 1 << 20, BOUND).await
                    {
                        let frame = codec::decode_request(&payload).unwrap();
                        counts.requests.fetch_add(1, Ordering::SeqCst);
                        if let Fake::Silent = fake {
                            continue;
                        }
                        let (result, epoch) = {
                            let mut map = map.lock().unwrap();
                            if let Fake::Racing = fake {
                                map.epoch += 1;
                            }
                            let result = match frame.request {
                                Request::Client(ClientRequest::GetMap) => {
                                    counts.maps.fetch_add(1, Ordering::SeqCst);
                                    Ok(Response::Map(Box::new(map.clone())))
                                }
                                Request::Client(ClientRequest::Put { .. })
                                    if matches!(fake, Fake::Lagging) =>
                                {
                                    Err(WireError::NotReplica { epoch: 0 })
                                }
                                Request::Client(ClientRequest::Put { .. })
                                    if let Fake::Overloaded(retry_after_ms) = fake =>
                                {
                                    Err(WireError::Overloaded { retry_after_ms })
                                }
                                Request::Client(ClientRequest::Put { epoch, version, .. })
                                    if epoch == 0 || !matches!(fake, Fake::Racing) =>
                                {
                                    counts.served.fetch_add(1, Ordering::SeqCst);
                                    if let Fake::Advancing = fake {
                                        map.epoch += 1;
                                    }
                                    Ok(Response::Written {
                                        applied: true,
                                        version,
                                    })
                                }
                                Request::Client(ClientRequest::Put { .. }) => {
                                    Err(WireError::StaleMap { epoch: map.epoch })
                                }
                                other => panic!("unexpected {other:?}"),
                            };
                            (result, map.epoch)
                        };
                        let answer = ResponseFrame {
                            id: frame.id,
                            pressure: 0,
                            epoch,
                            result,
                        };
                        let bytes = codec::encode(&answer).unwrap();
                        stream.write_all(&bytes).await.unwrap();
                    }
                });
            }
        });
    }

    fn client(endpoint: &str) -> Client {
        client_with(endpoint, BOUND)
    }

    fn client_with(endpoint: &str, request_timeout: Duration) -> Client {
        Client::new(ClientConfig {
            endpoints: vec![endpoint.to_owned()],
            request_timeout,
            routing: Routing::PlacementOrder,
            ..ClientConfig::default()
        })
    }

    /// The map changing between every refresh and the next attempt (as
    /// while partitions move, one epoch after another) used to fail the
    /// request with `StaleMap` once the refreshes ran out, though the
    /// node could serve it: the client now resends it once without the
    /// epoch, and the node's own map decides.
    #[tokio::test]
    async fn a_map_that_changes_faster_than_the_client_refreshes_does_not_fail_the_request() {
        let (mut listeners, map) = cluster(1).await;
        let addr = map.nodes[&1].spec.addr.clone();
        let counts = Arc::new(Counts::default());
        fake(listeners.remove(0), map, Fake::Racing, counts.clone());
        let outcome = client(&addr).put(b"k", b"v").await;
        assert!(outcome.is_ok(), "{outcome:?}");
        assert_eq!(
            counts.served.load(Ordering::SeqCst),
            1,
            "one resend, unchecked"
        );
    }

    /// A node whose map moves on after every put (a recovery's moves)
    /// serves each put at the first attempt, however old the client's map;
    /// the client learns the newer map from the epoch on the answers, in
    /// the background and one fetch at a time, and ends with the node's.
    #[tokio::test]
    async fn a_map_that_moves_on_costs_no_second_attempt_and_the_client_catches_up() {
        let (mut listeners, map) = cluster(1).await;
        let addr = map.nodes[&1].spec.addr.clone();
        let start = map.epoch;
        let counts = Arc::new(Counts::default());
        fake(listeners.remove(0), map, Fake::Advancing, counts.clone());
        let client = client(&addr);
        let puts = 20u64;
        for i in 0..puts {
            let outcome = client.put(format!("k{i}").as_bytes(), b"v").await;
            assert!(outcome.is_ok(), "{outcome:?}");
        }
        assert_eq!(counts.served.load(Ordering::SeqCst), puts);
        let node_epoch = start + puts;
        let deadline = tokio::time::Instant::now() + BOUND;
        loop {
            let cached = client.cached_map().await.unwrap().epoch;
            if cached == node_epoch {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the client's map stayed at epoch {cached}, the node's is {node_epoch}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (requests, maps) = (
            counts.requests.load(Ordering::SeqCst),
            counts.maps.load(Ordering::SeqCst),
        );
        assert_eq!(requests, puts + maps, "nothing but puts and map fetches");
        assert!(maps >= 2, "the first map and at least one refresh: {maps}");
    }

    /// A put of a key whose partition lists node 1 first (so it is tried
    /// first) to a two-node cluster whose node 1 behaves as `first` and
    /// node 2 serves; the client starts from node 2's map. Returns the
    /// outcome and what each node was asked.
    async fn put_past(first: Fake) -> (Result<WriteOutcome, ClientError>, [Arc<Counts>; 2]) {
        put_past_within(first, BOUND).await
    }

    async fn put_past_within(
        first: Fake,
        request_timeout: Duration,
    ) -> (Result<WriteOutcome, ClientError>, [Arc<Counts>; 2]) {
        let (outcomes, counts, _) = puts_past(first, Fake::Serving, 1, |addr| {
            client_with(addr, request_timeout)
        })
        .await;
        (outcomes.into_iter().next().unwrap(), counts)
    }

    /// `puts` puts of one key whose partition lists node 1 first to a
    /// two-node cluster whose nodes behave as `first` and `second`, by the
    /// client `make` builds from node 2's address.
    async fn puts_past(
        first: Fake,
        second: Fake,
        puts: usize,
        make: impl FnOnce(&str) -> Client,
    ) -> (
        Vec<Result<WriteOutcome, ClientError>>,
        [Arc<Counts>; 2],
        Client,
    ) {
        let (listeners, map) = cluster(2).await;
        let key = (0..)
            .map(|i: u32| format!("k{i}").into_bytes())
            .find(|k| map.replicas(partition_of(k, map.partitions)).first() == Some(&1))
            .unwrap();
        let counts = [Arc::new(Counts::default()), Arc::new(Counts::default())];
        let endpoint = map.nodes[&2].spec.addr.clone();
        let behaviours = [first, second];
        for ((listener, behaviour), counts) in listeners.into_iter().zip(behaviours).zip(&counts) {
            fake(listener, map.clone(), behaviour, counts.clone());
        }
        let client = make(&endpoint);
        let mut outcomes = Vec::new();
        for _ in 0..puts {
            outcomes.push(client.put(&key, b"v").await);
        }
        (outcomes, counts, client)
    }

    /// Puts a node was sent (its requests but the map fetches).
    fn puts_sent(counts: &Counts) -> u64 {
        counts.requests.load(Ordering::SeqCst) - counts.maps.load(Ordering::SeqCst)
    }

    /// A client half of whose recent requests (50 of 100) were refused as
    /// overloaded, with its throttle off so that only the retry rule
    /// acts on that history; `overload_retry_below` as given.
    fn client_in_an_overloaded_cluster(endpoint: &str, overload_retry_below: f64) -> Client {
        let client = Client::new(ClientConfig {
            endpoints: vec![endpoint.to_owned()],
            request_timeout: BOUND,
            routing: Routing::PlacementOrder,
            throttle_k: 0.0,
            overload_retry_below,
            ..ClientConfig::default()
        });
        let now = std::time::Instant::now();
        for i in 0..100 {
            lock_throttle(&client.throttle).record(i % 2 == 0, now);
        }
        client
    }

    /// One node refusing as overloaded while the cluster accepts what this
    /// client asks: the next replica takes the request.
    #[tokio::test]
    async fn an_overloaded_replica_goes_to_the_next_while_the_cluster_accepts() {
        let (outcome, [first, second]) = put_past(Fake::Overloaded(1)).await;
        assert!(outcome.is_ok(), "{outcome:?}");
        assert_eq!(puts_sent(&first), 1);
        assert_eq!(second.served.load(Ordering::SeqCst), 1);
    }

    /// With half of its recent requests refused, the overload is the
    /// cluster's: an `Overloaded` answer ends the request (no second
    /// replica asked), and once every replica is held off by its
    /// `retry_after`, a request is refused without being sent at all.
    #[tokio::test]
    async fn in_an_overloaded_cluster_an_overloaded_answer_ends_the_request() {
        let (outcomes, [first, second], client) = puts_past(
            Fake::Overloaded(60_000),
            Fake::Overloaded(60_000),
            3,
            |addr| {
                client_in_an_overloaded_cluster(addr, ClientConfig::default().overload_retry_below)
            },
        )
        .await;
        for outcome in &outcomes {
            assert!(
                matches!(
                    outcome,
                    Err(ClientError::Server(WireError::Overloaded { .. }))
                ),
                "{outcome:?}"
            );
        }
        // The first put to node 1 only; the second to node 2 (node 1 held
        // off); the third to neither.
        assert_eq!((puts_sent(&first), puts_sent(&second)), (1, 1));
        // Refused here with what is left of the nodes' hold-off.
        let Err(ClientError::Server(WireError::Overloaded { retry_after_ms })) = outcomes[2] else {
            unreachable!()
        };
        assert!(
            retry_after_ms > 50_000 && retry_after_ms <= 60_000,
            "{retry_after_ms}"
        );
        // Counted apart from the nodes' refusals.
        assert_eq!(client.held_off(), 1);
    }

    /// The same history with the rule off (`overload_retry_below` 1, as
    /// before it): the refused put goes on to node 2, which serves it.
    #[tokio::test]
    async fn with_overload_retries_always_on_the_next_replica_is_asked() {
        let (outcomes, [first, second], client) =
            puts_past(Fake::Overloaded(60_000), Fake::Serving, 1, |addr| {
                client_in_an_overloaded_cluster(addr, 1.0)
            })
            .await;
        assert!(outcomes[0].is_ok(), "{:?}", outcomes[0]);
        assert_eq!(puts_sent(&first), 1);
        assert_eq!(second.served.load(Ordering::SeqCst), 1);
        assert_eq!(client.held_off(), 0);
    }

    /// A replica that resets the connection during the handshake (killed
    /// as the client connected) is failed over like a refused connect;
    /// it used to fail the request at once.
    #[tokio::test]
    async fn a_handshake_cut_short_goes_to_the_next_replica() {
        let (outcome, [_, second]) = put_past(Fake::DroppingHandshakes).await;
        assert!(outcome.is_ok(), "{outcome:?}");
        assert_eq!(second.served.load(Ordering::SeqCst), 1);
    }

    /// A replica that takes the request and never answers (killed with
    /// it in flight, its connection not failed yet) costs the request its
    /// attempt's share of a short request timeout, not all of it: with
    /// `request_timeout` 1 s and the default `attempt_timeout` (1 s) the
    /// first attempt used to wait the whole second and the request
    /// failed; it now waits a third of it and the next replica answers.
    #[tokio::test]
    async fn a_silent_replica_leaves_time_for_the_next_within_a_short_request_timeout() {
        let (outcome, [first, second]) =
            put_past_within(Fake::Silent, Duration::from_secs(1)).await;
        assert!(outcome.is_ok(), "{outcome:?}");
        assert_eq!(first.requests.load(Ordering::SeqCst), 1);
        assert_eq!(second.served.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn an_attempt_gets_at_most_its_share_of_the_request_timeout() {
        let config = |request_ms, attempt_ms, max_attempts| ClientConfig {
            request_timeout: Duration::from_millis(request_ms),
            attempt_timeout: Duration::from_millis(attempt_ms),
            max_attempts,
            ..ClientConfig::default()
        };
        let ms = Duration::from_millis;
        assert_eq!(ClientConfig::default().attempt_limit(), ms(1000));
        assert_eq!(config(900, 1000, 3).attempt_limit(), ms(300));
        assert_eq!(config(10_000, 500, 3).attempt_limit(), ms(500));
        assert_eq!(config(1000, 1000, 0).attempt_limit(), ms(1000));
    }

    /// `NotReplica` from a node whose map is older than the client's goes
    /// to the next replica at once: that node is asked once, not asked
    /// for its (older) map and then the same put again.
    #[tokio::test]
    async fn a_replica_behind_the_clients_map_is_asked_once() {
        let (outcome, [first, second]) = put_past(Fake::Lagging).await;
        assert!(outcome.is_ok(), "{outcome:?}");
        assert_eq!(first.requests.load(Ordering::SeqCst), 1);
        assert_eq!(second.served.load(Ordering::SeqCst), 1);
    }
}
