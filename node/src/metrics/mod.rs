//! The node's metrics: plain atomic counters and fixed-bucket histograms,
//! rendered by hand in the Prometheus text format at `GET /metrics` on
//! the admin port. Recording is a few relaxed atomic additions, cheap
//! enough for the refusal path.
//!
//! Names follow Prometheus' conventions, and [`lint`] checks them on the
//! whole page: a unit or what is counted at the end (`_seconds`,
//! `_bytes`, `_requests`), `_total` on counters only, counters rather
//! than rates computed here.

pub mod exposition;
pub mod heap;
pub mod lint;
pub mod process;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::proto::op::{Class, Op};
use exposition::{Exposition, Family, Kind, Value};

/// Upper bounds (seconds) of the request latency buckets: 50 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3,
    1.0, 2.5, 5.0, 10.0,
];

/// Upper bounds (seconds) of the refusal-time buckets: a refusal should
/// cost microseconds, so the buckets are fine there.
const REFUSAL_BUCKETS: &[f64] = &[
    1e-6, 2e-6, 5e-6, 10e-6, 20e-6, 50e-6, 100e-6, 200e-6, 500e-6, 1e-3, 5e-3, 10e-3,
];

/// How a request ended, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered successfully.
    Ok,
    /// Answered with an error other than the ones below.
    Error,
    /// Refused: the node is overloaded.
    Overloaded,
    /// Dropped: its deadline passed before it ran.
    DeadlineExceeded,
}

impl Outcome {
    const ALL: [Outcome; 4] = [
        Outcome::Ok,
        Outcome::Error,
        Outcome::Overloaded,
        Outcome::DeadlineExceeded,
    ];

    fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Overloaded => "overloaded",
            Outcome::DeadlineExceeded => "deadline_exceeded",
        }
    }

    /// The outcome of a response.
    pub fn of<T>(result: &Result<T, crate::proto::WireError>) -> Self {
        use crate::proto::WireError;
        match result {
            Ok(_) => Outcome::Ok,
            Err(WireError::Overloaded { .. }) => Outcome::Overloaded,
            Err(WireError::DeadlineExceeded) => Outcome::DeadlineExceeded,
            Err(_) => Outcome::Error,
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShedReason {
    /// Over the limit and the wait queue was full.
    QueueFull,
    /// Waited in the queue for the whole queue-time limit.
    QueueTimeout,
    /// Waited past `admission_queue_timeout_ms` in a standing queue
    /// (overload): refused before its own patience ran out
    /// (`admission/queue.rs`).
    QueueStanding,
    /// Total request bytes in flight would pass `max_inflight_bytes`.
    Bytes,
    /// Background work while foreground needs the room.
    Background,
}

impl ShedReason {
    const ALL: [ShedReason; 5] = [
        ShedReason::QueueFull,
        ShedReason::QueueTimeout,
        ShedReason::QueueStanding,
        ShedReason::Bytes,
        ShedReason::Background,
    ];

    fn name(self) -> &'static str {
        match self {
            ShedReason::QueueFull => "queue_full",
            ShedReason::QueueTimeout => "queue_timeout",
            ShedReason::QueueStanding => "queue_standing",
            ShedReason::Bytes => "bytes",
            ShedReason::Background => "background",
        }
    }
}

/// What happened to a node-to-node call (`node/peers.rs`), for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerEvent {
    /// Refused at once: the peer's circuit breaker was open.
    Refused,
    /// Sent, and failed after a timeout (what opens a breaker).
    TimedOut,
    /// A retry (or hedge) paid from the peer retry budget.
    Retried,
    /// A retry not made: the peer retry budget was spent.
    RetryRefused,
}

impl PeerEvent {
    const ALL: [PeerEvent; 4] = [
        PeerEvent::Refused,
        PeerEvent::TimedOut,
        PeerEvent::Retried,
        PeerEvent::RetryRefused,
    ];

    /// The counter's name and help.
    fn family(self) -> (&'static str, &'static str) {
        match self {
            PeerEvent::Refused => (
                "levee_peer_breaker_refused_requests_total",
                "Node-to-node calls refused at once, not sent, because the peer's circuit breaker was open (a write's replica gets a hint instead).",
            ),
            PeerEvent::TimedOut => (
                "levee_peer_timed_out_requests_total",
                "Node-to-node calls that failed after waiting for a timeout (or answered past their deadline): what opens a peer's breaker.",
            ),
            PeerEvent::Retried => (
                "levee_peer_retried_requests_total",
                "Node-to-node retries and hedges made (a read's next replica, a transfer page or hint replay after a failure), each paid from the node's retry budget.",
            ),
            PeerEvent::RetryRefused => (
                "levee_peer_retry_refused_requests_total",
                "Node-to-node retries and hedges not made because the node's retry budget was spent.",
            ),
        }
    }
}

/// A histogram with fixed buckets.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Per bucket (not cumulative), plus one for +Inf.
    counts: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = self.bounds.partition_point(|b| *b < secs);
        if let Some(c) = self.counts.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_nanos.fetch_add(
            d.as_nanos().min(u128::from(u64::MAX)) as u64,
            Ordering::Relaxed,
        );
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Writes the `_bucket` (cumulative), `_sum` and `_count` samples
    /// under `labels`. `_count` is the `+Inf` bucket as summed here, so
    /// the two agree even while requests are being recorded.
    fn render(&self, family: &mut Family<'_>, labels: &[(&str, &str)]) {
        let bounds = self
            .bounds
            .iter()
            .map(f64::to_string)
            .chain(std::iter::once("+Inf".to_owned()));
        let mut cumulative = 0;
        for (le, count) in bounds.zip(self.counts.iter()) {
            cumulative += count.load(Ordering::Relaxed);
            let mut with_le = labels.to_vec();
            with_le.push(("le", &le));
            family.suffixed("_bucket", &with_le, Value::Int(cumulative));
        }
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        family.suffixed("_sum", labels, Value::Float(sum));
        family.suffixed("_count", labels, Value::Int(cumulative));
    }
}

/// Current values that live in the admission controller, read at render
/// time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    /// Requests executing, per class (in [`Class::ALL`] order).
    pub inflight: [u64; 3],
    /// The foreground concurrency limit.
    pub limit: u64,
    /// Foreground requests waiting in the queue.
    pub queued: u64,
    /// Request bytes held by admitted requests.
    pub bytes_inflight: u64,
    /// Foreground saturation in [0, 1].
    pub pressure: f64,
    /// Whether admission control is on.
    pub enabled: bool,
}

/// Every counter and histogram of the node.
#[derive(Debug)]
pub struct Metrics {
    requests: Box<[[AtomicU64; 4]]>,
    latency: [Histogram; 3],
    refusal: Histogram,
    shed: [AtomicU64; 5],
    /// Freed slots handed to a waiter: [oldest first, newest first]
    /// (the latter only in a standing queue, `admission/queue.rs`).
    queue_grants: [AtomicU64; 2],
    deadline_dropped: AtomicU64,
    /// Bytes of partition records this node sent to move targets.
    recovery_sent: AtomicU64,
    /// Bytes of partition records this node received as a move target.
    recovery_received: AtomicU64,
    /// The cluster as this node's map (and, on the leader, its recovery
    /// loop) last saw it; see [`ClusterGauges`].
    cluster: [AtomicU64; 7],
    /// Panics caught while handling a request, per operation.
    panics: Box<[AtomicU64]>,
    /// Requests refused on arrival because their shape is quarantined,
    /// per operation.
    quarantined: Box<[AtomicU64]>,
    /// Connections ended to make room whose socket is held open
    /// (`server/tarpit.rs`): now, and so far.
    connections_held: AtomicU64,
    connections_held_total: AtomicU64,
    /// Protocol connections holding a slot now (`server/mod.rs` counts
    /// each from its accept to the end of its task).
    connections_open: AtomicU64,
    /// Bytes of hints this node holds for others, as of its last
    /// heartbeat (`recovery/heartbeat.rs`): the hint store lives on a
    /// floor below this one and cannot report itself.
    hints_pending: AtomicU64,
    /// Node-to-node calls, by [`PeerEvent`].
    peer_calls: [AtomicU64; 4],
    /// Peers whose breaker is open, then half-open, when last counted.
    peer_breakers: [AtomicU64; 2],
}

/// Cluster-wide figures every node exports from its copy of the map, so
/// any node's `/metrics` shows recovery.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClusterGauges {
    /// Partitions with fewer than R live replicas.
    pub under_replicated: u64,
    /// Moves in flight.
    pub moves_in_flight: u64,
    /// Nodes serving.
    pub nodes_up: u64,
    /// Nodes marked Down.
    pub nodes_down: u64,
    /// Nodes marked Out.
    pub nodes_out: u64,
    /// Nodes being drained.
    pub nodes_draining: u64,
    /// Request shapes quarantined now.
    pub quarantined_shapes: u64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: Op::ALL.iter().map(|_| Default::default()).collect(),
            latency: [
                Histogram::new(LATENCY_BUCKETS),
                Histogram::new(LATENCY_BUCKETS),
                Histogram::new(LATENCY_BUCKETS),
            ],
            refusal: Histogram::new(REFUSAL_BUCKETS),
            shed: Default::default(),
            queue_grants: Default::default(),
            deadline_dropped: AtomicU64::new(0),
            recovery_sent: AtomicU64::new(0),
            recovery_received: AtomicU64::new(0),
            cluster: Default::default(),
            panics: Op::ALL.iter().map(|_| AtomicU64::new(0)).collect(),
            quarantined: Op::ALL.iter().map(|_| AtomicU64::new(0)).collect(),
            connections_held: AtomicU64::new(0),
            connections_held_total: AtomicU64::new(0),
            connections_open: AtomicU64::new(0),
            hints_pending: AtomicU64::new(0),
            peer_calls: Default::default(),
            peer_breakers: Default::default(),
        }
    }
}

impl Metrics {
    /// Counts a finished request; `latency` is from receipt to answer.
    pub fn record(&self, op: Op, outcome: Outcome, latency: Duration) {
        if let Some(row) = self.requests.get(op.index()) {
            row[outcome as usize].fetch_add(1, Ordering::Relaxed);
        }
        self.latency[op.class().index()].observe(latency);
    }

    /// Counts a refusal and, for an immediate one, how long it took to
    /// refuse (a refusal after waiting in the queue is not a fast refusal
    /// and would only blur that histogram).
    pub fn record_shed(&self, op: Op, reason: ShedReason, took: Option<Duration>) {
        if let Some(row) = self.requests.get(op.index()) {
            row[Outcome::Overloaded as usize].fetch_add(1, Ordering::Relaxed);
        }
        self.shed[reason as usize].fetch_add(1, Ordering::Relaxed);
        if let Some(took) = took {
            self.refusal.observe(took);
        }
    }

    /// Counts a request dropped because its deadline had passed.
    pub fn record_deadline_drop(&self) {
        self.deadline_dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests answered so far, every operation and outcome.
    pub fn requests_total(&self) -> u64 {
        self.requests
            .iter()
            .flat_map(|row| row.iter())
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// Refusals so far, all reasons.
    pub fn shed_total(&self) -> u64 {
        self.shed.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Counts a freed slot handed to a waiter, newest first (`lifo`, the
    /// queue stood) or oldest first.
    pub fn record_queue_grant(&self, lifo: bool) {
        self.queue_grants[usize::from(lifo)].fetch_add(1, Ordering::Relaxed);
    }

    /// Requests dropped for a passed deadline so far.
    pub fn deadline_drops(&self) -> u64 {
        self.deadline_dropped.load(Ordering::Relaxed)
    }

    /// Counts a panic caught while handling a request of `op`.
    pub fn record_panic(&self, op: Op) {
        if let Some(c) = self.panics.get(op.index()) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Panics caught so far, all operations.
    pub fn panics_total(&self) -> u64 {
        self.panics.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Counts a request of `op` refused because its shape is quarantined.
    pub fn record_quarantined(&self, op: Op) {
        if let Some(c) = self.quarantined.get(op.index()) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a connection ended to make room whose socket is held open.
    pub fn record_connection_held(&self) {
        self.connections_held_total.fetch_add(1, Ordering::Relaxed);
    }

    /// Sockets held open now.
    pub fn set_connections_held(&self, held: u64) {
        self.connections_held.store(held, Ordering::Relaxed);
    }

    /// Connections held open so far.
    pub fn connections_held_total(&self) -> u64 {
        self.connections_held_total.load(Ordering::Relaxed)
    }

    /// Counts a protocol connection that took a slot.
    pub fn connection_opened(&self) {
        self.connections_open.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts the end of one [`Metrics::connection_opened`] counted. Never
    /// below 0: an unpaired call would be a bug in the caller, not a
    /// reason to show 2^64 connections.
    pub fn connection_closed(&self) {
        let _ = self
            .connections_open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// Protocol connections holding a slot now.
    pub fn connections_open(&self) -> u64 {
        self.connections_open.load(Ordering::Relaxed)
    }

    /// Records the bytes of hints held now.
    pub fn set_hints_pending(&self, bytes: u64) {
        self.hints_pending.store(bytes, Ordering::Relaxed);
    }

    /// Counts a node-to-node call's `event`.
    pub fn record_peer(&self, event: PeerEvent) {
        self.peer_calls[event as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Node-to-node calls with `event` so far.
    pub fn peer_calls(&self, event: PeerEvent) -> u64 {
        self.peer_calls[event as usize].load(Ordering::Relaxed)
    }

    /// Peers whose breaker is open and half-open now.
    pub fn set_peer_breakers(&self, open: u64, half_open: u64) {
        self.peer_breakers[0].store(open, Ordering::Relaxed);
        self.peer_breakers[1].store(half_open, Ordering::Relaxed);
    }

    /// Counts bytes sent for recovery (a transfer page served).
    pub fn record_recovery_sent(&self, bytes: u64) {
        self.recovery_sent.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts bytes received for recovery (a transfer page applied).
    pub fn record_recovery_received(&self, bytes: u64) {
        self.recovery_received.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Records the cluster figures (see [`ClusterGauges`]).
    pub fn set_cluster(&self, g: ClusterGauges) {
        let values = [
            g.under_replicated,
            g.moves_in_flight,
            g.nodes_up,
            g.nodes_down,
            g.nodes_out,
            g.nodes_draining,
            g.quarantined_shapes,
        ];
        for (slot, v) in self.cluster.iter().zip(values) {
            slot.store(v, Ordering::Relaxed);
        }
    }

    /// The cluster figures last recorded.
    pub fn cluster(&self) -> ClusterGauges {
        let [
            under_replicated,
            moves_in_flight,
            nodes_up,
            nodes_down,
            nodes_out,
            nodes_draining,
            quarantined_shapes,
        ] = self
            .cluster
            .each_ref()
            .map(|slot| slot.load(Ordering::Relaxed));
        ClusterGauges {
            under_replicated,
            moves_in_flight,
            nodes_up,
            nodes_down,
            nodes_out,
            nodes_draining,
            quarantined_shapes,
        }
    }

    /// Bytes sent for recovery since the node started.
    pub fn recovery_bytes_sent(&self) -> u64 {
        self.recovery_sent.load(Ordering::Relaxed)
    }

    /// Bytes received for recovery since the node started.
    pub fn recovery_bytes_received(&self) -> u64 {
        self.recovery_received.load(Ordering::Relaxed)
    }

    /// Writes the node's counters, histograms and gauges.
    pub fn render(&self, gauges: &Gauges, text: &mut Exposition) {
        self.render_requests(text);
        self.render_recovery(text);
        text.single(
            "levee_hints_pending_bytes",
            Kind::Gauge,
            "Bytes of hints held for nodes that missed writes, waiting for replay (as of the last heartbeat).",
            self.hints_pending.load(Ordering::Relaxed),
        );
        self.render_peers(text);
        self.render_cluster(text);
        render_admission(gauges, text);
    }

    fn render_requests(&self, text: &mut Exposition) {
        let mut requests = text.family(
            "levee_requests_total",
            Kind::Counter,
            "Requests answered, by class, operation and outcome.",
        );
        for (op, row) in Op::ALL.iter().zip(self.requests.iter()) {
            for (outcome, count) in Outcome::ALL.iter().zip(row.iter()) {
                let labels = [
                    ("class", op.class().name()),
                    ("op", op.name()),
                    ("outcome", outcome.name()),
                ];
                requests.sample(&labels, count.load(Ordering::Relaxed));
            }
        }
        let mut latency = text.family(
            "levee_request_duration_seconds",
            Kind::Histogram,
            "Time from receipt to answer of admitted requests, by class.",
        );
        for (class, histogram) in Class::ALL.iter().zip(self.latency.iter()) {
            histogram.render(&mut latency, &[("class", class.name())]);
        }
        let mut refusal = text.family(
            "levee_refusal_duration_seconds",
            Kind::Histogram,
            "Time from receipt to an Overloaded answer handed to the writer.",
        );
        self.refusal.render(&mut refusal, &[]);
        let mut shed = text.family(
            "levee_shed_requests_total",
            Kind::Counter,
            "Requests refused with Overloaded, by reason.",
        );
        for (reason, count) in ShedReason::ALL.iter().zip(self.shed.iter()) {
            shed.sample(&[("reason", reason.name())], count.load(Ordering::Relaxed));
        }
        let mut grants = text.family(
            "levee_queue_granted_requests_total",
            Kind::Counter,
            "Freed foreground slots handed to a waiting request, by the queue's order: fifo while it absorbs bursts, lifo once it stands (overload).",
        );
        for (order, count) in ["fifo", "lifo"].iter().zip(self.queue_grants.iter()) {
            grants.sample(&[("order", order)], count.load(Ordering::Relaxed));
        }
        text.single(
            "levee_deadline_dropped_requests_total",
            Kind::Counter,
            "Requests not executed because their deadline had passed.",
            self.deadline_drops(),
        );
        text.single(
            "levee_open_connections",
            Kind::Gauge,
            "Protocol connections holding a connection slot now (in their handshake or serving); held ones are in levee_held_connections.",
            self.connections_open(),
        );
        text.single(
            "levee_held_connections",
            Kind::Gauge,
            "Connections ended to make room (slow or silent peers) whose socket is held open until the handshake timeout, so the peer does not replace it at once.",
            self.connections_held.load(Ordering::Relaxed),
        );
        text.single(
            "levee_held_connections_total",
            Kind::Counter,
            "Connections ended to make room and held open before closing.",
            self.connections_held_total(),
        );
        for (name, help, counters) in [
            (
                "levee_request_panics_total",
                "Panics caught while handling a request (answered Internal; the node kept serving), by operation.",
                &self.panics,
            ),
            (
                "levee_quarantine_refused_requests_total",
                "Requests refused on arrival because their shape is quarantined, by operation.",
                &self.quarantined,
            ),
        ] {
            let mut family = text.family(name, Kind::Counter, help);
            for (op, c) in Op::ALL.iter().zip(counters.iter()) {
                family.sample(&[("op", op.name())], c.load(Ordering::Relaxed));
            }
        }
    }

    /// Counters only: a cluster-wide recovery rate is
    /// `sum(rate(levee_recovery_sent_bytes_total[1m]))`, which, unlike a
    /// rate the leader precomputes, survives a change of leader and a
    /// missed scrape.
    fn render_recovery(&self, text: &mut Exposition) {
        text.single(
            "levee_recovery_sent_bytes_total",
            Kind::Counter,
            "Bytes of partition records sent to move targets (paced by the recovery byte budget).",
            self.recovery_bytes_sent(),
        );
        text.single(
            "levee_recovery_received_bytes_total",
            Kind::Counter,
            "Bytes of partition records received and applied as a move target.",
            self.recovery_bytes_received(),
        );
    }

    /// This node's calls to its peers: breakers and the retry budget.
    fn render_peers(&self, text: &mut Exposition) {
        let mut breakers = text.family(
            "levee_peer_breaker_nodes",
            Kind::Gauge,
            "Peers whose circuit breaker, as this node holds it, is not closed: open (calls refused) or half_open (one probe call may go).",
        );
        for (state, count) in ["open", "half_open"].iter().zip(&self.peer_breakers) {
            breakers.sample(&[("state", state)], count.load(Ordering::Relaxed));
        }
        for event in PeerEvent::ALL {
            let (name, help) = event.family();
            text.single(name, Kind::Counter, help, self.peer_calls(event));
        }
    }

    fn render_cluster(&self, text: &mut Exposition) {
        let c = self.cluster();
        text.single(
            "levee_under_replicated_partitions",
            Kind::Gauge,
            "Partitions with fewer than R live replicas, in this node's map.",
            c.under_replicated,
        );
        text.single(
            "levee_inflight_moves",
            Kind::Gauge,
            "Replica moves in flight, in this node's map.",
            c.moves_in_flight,
        );
        let mut nodes = text.family(
            "levee_nodes",
            Kind::Gauge,
            "Members of the cluster by state (removed ones left out), in this node's map.",
        );
        for (state, count) in [
            ("up", c.nodes_up),
            ("down", c.nodes_down),
            ("out", c.nodes_out),
            ("draining", c.nodes_draining),
        ] {
            nodes.sample(&[("state", state)], count);
        }
        text.single(
            "levee_quarantined_shapes",
            Kind::Gauge,
            "Request shapes refused on arrival because they crashed handlers, in this node's map.",
            c.quarantined_shapes,
        );
    }
}

/// The admission controller's current values.
fn render_admission(gauges: &Gauges, text: &mut Exposition) {
    let mut inflight = text.family(
        "levee_inflight_requests",
        Kind::Gauge,
        "Requests executing, by class.",
    );
    for (class, count) in Class::ALL.iter().zip(gauges.inflight) {
        inflight.sample(&[("class", class.name())], count);
    }
    text.single(
        "levee_concurrency_limit_requests",
        Kind::Gauge,
        "The adaptive foreground concurrency limit.",
        gauges.limit,
    );
    text.single(
        "levee_queued_requests",
        Kind::Gauge,
        "Foreground requests waiting for admission.",
        gauges.queued,
    );
    text.single(
        "levee_inflight_bytes",
        Kind::Gauge,
        "Request bytes held by admitted requests.",
        gauges.bytes_inflight,
    );
    text.single(
        "levee_pressure_ratio",
        Kind::Gauge,
        "Foreground saturation in [0, 1] that background work slows down for.",
        gauges.pressure,
    );
    text.single(
        "levee_admission_enabled",
        Kind::Gauge,
        "1 when admission control is on.",
        u64::from(gauges.enabled),
    );
}

/// `levee_runtime_alive_tasks`: the tasks alive on the node's async
/// runtime (spawned and not yet finished; tokio's `num_alive_tasks`),
/// the figure that grows when something spawns without end. Left out
/// when there is no runtime to ask (`None`).
pub fn render_runtime(alive_tasks: Option<usize>, text: &mut Exposition) {
    if let Some(tasks) = alive_tasks {
        text.single(
            "levee_runtime_alive_tasks",
            Kind::Gauge,
            "Tasks alive on the node's async runtime: spawned and not yet finished.",
            u64::try_from(tasks).unwrap_or(u64::MAX),
        );
    }
}

/// `levee_build_info{version, protocol} 1`: what this binary is, as
/// labels, so a dashboard can join it to any other family and a mixed
/// version cluster shows during an upgrade.
pub fn render_build_info(text: &mut Exposition) {
    let protocol = crate::proto::PROTOCOL_VERSION.to_string();
    text.family(
        "levee_build_info",
        Kind::Gauge,
        "Always 1; the labels say which build of levee-node this is and the protocol version it speaks.",
    )
    .sample(
        &[
            ("version", env!("CARGO_PKG_VERSION")),
            ("protocol", &protocol),
        ],
        1_u64,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(metrics: &Metrics) -> String {
        let mut text = Exposition::new();
        metrics.render(&Gauges::default(), &mut text);
        text.finish()
    }

    #[test]
    fn histogram_buckets_are_cumulative_in_the_rendering() {
        let metrics = Metrics::default();
        metrics.record(Op::Get, Outcome::Ok, Duration::from_micros(30));
        metrics.record(Op::Get, Outcome::Ok, Duration::from_millis(3));
        metrics.record_shed(
            Op::Put,
            ShedReason::QueueFull,
            Some(Duration::from_micros(4)),
        );
        let text = page(&metrics);
        assert!(
            text.contains(
                "levee_request_duration_seconds_bucket{class=\"foreground\",le=\"0.00005\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "levee_request_duration_seconds_bucket{class=\"foreground\",le=\"+Inf\"} 2"
            )
        );
        assert!(text.contains("levee_shed_requests_total{reason=\"queue_full\"} 1"));
        assert!(text.contains(
            "levee_requests_total{class=\"foreground\",op=\"put\",outcome=\"overloaded\"} 1"
        ));
        assert!(text.contains("levee_refusal_duration_seconds_bucket{le=\"0.000005\"} 1"));
    }

    #[test]
    fn open_connections_count_up_and_down_and_never_below_zero() {
        let metrics = Metrics::default();
        metrics.connection_opened();
        metrics.connection_opened();
        metrics.connection_closed();
        assert_eq!(metrics.connections_open(), 1);
        metrics.connection_closed();
        metrics.connection_closed();
        assert_eq!(metrics.connections_open(), 0);
    }

    #[test]
    fn recovery_bytes_are_counted_and_rendered() {
        let metrics = Metrics::default();
        metrics.record_recovery_sent(100);
        metrics.record_recovery_sent(20);
        metrics.record_recovery_received(7);
        assert_eq!(metrics.recovery_bytes_sent(), 120);
        assert_eq!(metrics.recovery_bytes_received(), 7);
        let text = page(&metrics);
        assert!(
            text.contains("levee_recovery_sent_bytes_total 120"),
            "{text}"
        );
        assert!(text.contains("levee_recovery_received_bytes_total 7"));
    }

    #[test]
    fn every_family_passes_the_lint_with_every_series_recorded() {
        let metrics = Metrics::default();
        for op in Op::ALL {
            for outcome in Outcome::ALL {
                metrics.record(op, outcome, Duration::from_millis(2));
            }
            metrics.record_panic(op);
            metrics.record_quarantined(op);
        }
        for reason in ShedReason::ALL {
            metrics.record_shed(Op::Get, reason, Some(Duration::from_micros(3)));
        }
        metrics.record_deadline_drop();
        metrics.connection_opened();
        metrics.set_hints_pending(4096);
        for (n, event) in PeerEvent::ALL.into_iter().enumerate() {
            for _ in 0..=n {
                metrics.record_peer(event);
            }
        }
        metrics.set_peer_breakers(2, 1);
        metrics.set_cluster(ClusterGauges {
            under_replicated: 1,
            moves_in_flight: 2,
            nodes_up: 3,
            nodes_down: 4,
            nodes_out: 5,
            nodes_draining: 6,
            quarantined_shapes: 7,
        });
        let mut text = Exposition::new();
        metrics.render(
            &Gauges {
                inflight: [1, 2, 3],
                limit: 64,
                queued: 4,
                bytes_inflight: 1024,
                pressure: 0.5,
                enabled: true,
            },
            &mut text,
        );
        render_build_info(&mut text);
        render_runtime(Some(17), &mut text);
        let text = text.finish();
        assert_eq!(lint::lint(&text), Vec::<String>::new(), "{text}");
        assert!(text.contains("levee_open_connections 1\n"), "{text}");
        assert!(text.contains("levee_hints_pending_bytes 4096\n"), "{text}");
        assert!(text.contains("levee_runtime_alive_tasks 17\n"), "{text}");
        assert!(
            text.contains("levee_nodes{state=\"draining\"} 6\n"),
            "{text}"
        );
        for line in [
            "levee_peer_breaker_nodes{state=\"open\"} 2\n",
            "levee_peer_breaker_nodes{state=\"half_open\"} 1\n",
            "levee_peer_breaker_refused_requests_total 1\n",
            "levee_peer_timed_out_requests_total 2\n",
            "levee_peer_retried_requests_total 3\n",
            "levee_peer_retry_refused_requests_total 4\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        assert!(text.contains("levee_pressure_ratio 0.5\n"), "{text}");
        assert!(
            text.contains(&format!(
                "levee_build_info{{version=\"{}\",protocol=\"{}\"}} 1\n",
                env!("CARGO_PKG_VERSION"),
                crate::proto::PROTOCOL_VERSION
            )),
            "{text}"
        );
    }
}
