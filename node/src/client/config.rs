//! The client's settings: one struct, every default defined once, each
//! field saying what breaks if it is too small or too large.

use crate::tls::Transport;
use std::time::Duration;

/// Client settings; every field has a default, defined once in
/// [`ClientConfig::default`].
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Nodes to talk to (`HOST:PORT`), tried in order.
    pub endpoints: Vec<String>,
    /// Time allowed to open a connection and handshake. Short (default
    /// 2 s): a node that cannot accept within it is better skipped.
    pub connect_timeout: Duration,
    /// Time allowed per request, also sent to the node as its deadline.
    /// Every attempt, backoff and wait of a key operation fits inside it.
    /// Default 5 s: a flushed write takes milliseconds; seconds mean the
    /// node is in trouble and waiting longer only adds load.
    pub request_timeout: Duration,
    /// Time one attempt of a key operation may take before the next
    /// replica is tried, when another attempt can follow (the last one
    /// gets whatever is left of `request_timeout`). Default 1 s: hundreds
    /// of times a normal write, so a slow but working node is not
    /// abandoned; short enough that a stopped node (whose connection
    /// stays open and silent) costs a fraction of the request timeout
    /// instead of all of it. With a short `request_timeout` an attempt
    /// gets at most its share of it, `request_timeout / max_attempts`
    /// ([`ClientConfig::attempt_limit`]), so that a node killed or frozen
    /// with the request on it still leaves time for another replica.
    pub attempt_timeout: Duration,
    /// Attempts per key operation, the first included (default 3: the
    /// replicas of a partition with R = 3). More only multiplies the load
    /// on a cluster that is already failing; the retry budget bounds the
    /// total anyway.
    pub max_attempts: u32,
    /// Ceiling of the random wait before the first retry round; it doubles
    /// each round (full jitter: the wait is uniform in `[0, ceiling)`).
    /// Default 25 ms: a few round trips, enough to spread a burst of
    /// clients that failed together without adding visible latency.
    pub backoff_base: Duration,
    /// Largest backoff ceiling (default 1 s). Longer waits rarely fit in a
    /// request timeout of seconds; shorter ones stop spreading retries.
    pub backoff_cap: Duration,
    /// Retry tokens each request earns: retries are at most this fraction
    /// of requests, plus the floor. Default 0.1, as gRPC's and Finagle's
    /// retry budgets suggest: a full outage adds at most 10% load instead
    /// of `max_attempts ×`. Higher retries more under partial failure;
    /// 0 leaves only the floor.
    pub retry_budget_ratio: f64,
    /// Most retry tokens saved up in healthy times (default 20). A sudden
    /// outage may spend this many retries on top of the ratio; more lets a
    /// short blip be retried fully, less makes a long-healthy client as
    /// stingy as a new one.
    pub retry_budget_cap: f64,
    /// Retries per second allowed whatever the request count (default 10,
    /// as Finagle's `minRetriesPerSec`). Without it a client sending few
    /// requests, like the CLI's single one, could never retry.
    pub retry_budget_floor_per_sec: f64,
    /// Consecutive failures (unreachable, timed out, not serving) that open
    /// a node's circuit breaker, after which the node is skipped while
    /// another replica is available. Default 5: one or two failures happen
    /// to healthy nodes (a restart, a dropped connection); five in a row
    /// with none succeeding means the node is gone.
    pub breaker_failures: u32,
    /// How long an open breaker keeps a node skipped before one probe
    /// request is let through (default 1 s, about how fast the cluster's
    /// own failure detection reacts). Doubles after each failed probe.
    pub breaker_cooldown: Duration,
    /// Longest cool-down after repeated failed probes (default 30 s): a
    /// node that stays down gets one probe per 30 s from each client, and
    /// is found again within that time once it is back.
    pub breaker_max_cooldown: Duration,
    /// Multiplier `k` of the adaptive client-side throttle: the client
    /// refuses a request itself with probability
    /// `(requests − k·accepts) / (requests + 1)` over `throttle_window`
    /// (the SRE book's client-side throttling). Default 2: the cluster
    /// still sees twice what it accepts, so it is probed and the throttle
    /// lets go as soon as capacity returns, while most of a sustained
    /// excess never costs a node anything. 0 turns it off.
    pub throttle_k: f64,
    /// An `Overloaded` answer goes on to the next replica only while less
    /// than this share of the client's recent requests (over
    /// `throttle_window`) ended refused as overloaded. Default 0.1. Below
    /// it one node is short of room (a hot key, a slow disk) and another
    /// replica may have some. Above it the cluster as a whole is: a retry
    /// only waits in another node's queue, is refused there as likely, and
    /// the wait lands on the requests that do get through (measured: at
    /// three times the cluster's peak the tenth of requests retried made
    /// the admitted p99 2.5 times that of one attempt each). The answer
    /// then ends the request, the SRE book's "overloaded; don't retry",
    /// and so does a moment when every replica is still held off by its
    /// `retry_after`: the request is refused here, with the soonest
    /// replica's `retry_after`, instead of waiting for it. 1 retries
    /// them always; 0 never.
    pub overload_retry_below: f64,
    /// The throttle's memory (default 10 s): long enough to see a trend,
    /// short enough to let go soon after an overload ends.
    pub throttle_window: Duration,
    /// Largest response frame accepted (default 64 MiB, above any value a
    /// node accepts by default).
    pub max_frame_bytes: u32,
    /// Plaintext, or mutual TLS with a client's (or a node's) pair.
    pub transport: Transport,
    /// How far ahead of this machine's clock a version seen from the
    /// cluster may be before it is ignored for stamping (ms).
    pub max_clock_drift_ms: u64,
    /// Which replica of a key a request goes to first (default
    /// [`Routing::LoadAware`]).
    pub routing: Routing,
    /// Largest key and value the client sends (defaults: the node's, 1 KiB
    /// and 4 MiB): past them a request is refused here, with the limit's
    /// name, rather than by the node's frame reader with a frame size.
    pub limits: crate::proto::Limits,
}

/// How a client picks the replica a key operation goes to first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Routing {
    /// By each node's score: its latency and pressure as this client has
    /// seen them, with a cubic penalty on queueing (C3), and two random
    /// replicas compared so that clients do not herd onto one node. A
    /// slow node loses its share; a lost node's load spreads by headroom.
    #[default]
    LoadAware,
    /// The first Up replica in placement order, the rest after it: what
    /// levee did before load-aware routing, kept for comparison.
    PlacementOrder,
}

impl ClientConfig {
    /// The longest one attempt waits when another can follow:
    /// `attempt_timeout`, and at most an even share of `request_timeout`
    /// among `max_attempts`.
    pub fn attempt_limit(&self) -> Duration {
        self.attempt_timeout
            .min(self.request_timeout / self.max_attempts.max(1))
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            endpoints: vec!["127.0.0.1:7400".into()],
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            attempt_timeout: Duration::from_secs(1),
            max_attempts: 3,
            backoff_base: Duration::from_millis(25),
            backoff_cap: Duration::from_secs(1),
            retry_budget_ratio: 0.1,
            retry_budget_cap: 20.0,
            retry_budget_floor_per_sec: 10.0,
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(1),
            breaker_max_cooldown: Duration::from_secs(30),
            throttle_k: 2.0,
            overload_retry_below: 0.1,
            throttle_window: Duration::from_secs(10),
            max_frame_bytes: 64 * 1024 * 1024,
            transport: Transport::Plain,
            max_clock_drift_ms: 30_000,
            routing: Routing::LoadAware,
            limits: crate::proto::Limits::default(),
        }
    }
}
