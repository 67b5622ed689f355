//! The node's metrics: plain atomic counters and fixed-bucket histograms,
//! rendered by hand in the Prometheus text format at `GET /metrics` on
//! the admin port. Recording is a few relaxed atomic additions, cheap
//! enough for the refusal path.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::proto::op::{Class, Op};

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
    /// Total request bytes in flight would pass `max_inflight_bytes`.
    Bytes,
    /// Background work while foreground needs the room.
    Background,
}

impl ShedReason {
    const ALL: [ShedReason; 4] = [
        ShedReason::QueueFull,
        ShedReason::QueueTimeout,
        ShedReason::Bytes,
        ShedReason::Background,
    ];

    fn name(self) -> &'static str {
        match self {
            ShedReason::QueueFull => "queue_full",
            ShedReason::QueueTimeout => "queue_timeout",
            ShedReason::Bytes => "bytes",
            ShedReason::Background => "background",
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

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (bound, count) in self.bounds.iter().zip(self.counts.iter()) {
            cumulative += count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        let total = self.count();
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {total}");
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let braced = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braced} {sum}");
        let _ = writeln!(out, "{name}_count{braced} {total}");
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
    shed: [AtomicU64; 4],
    deadline_dropped: AtomicU64,
    /// Bytes of partition records this node sent to move targets.
    recovery_sent: AtomicU64,
    /// Bytes of partition records this node received as a move target.
    recovery_received: AtomicU64,
    /// The cluster as this node's map (and, on the leader, its recovery
    /// loop) last saw it; see [`ClusterGauges`].
    cluster: [AtomicU64; 6],
    /// Panics caught while handling a request, per operation.
    panics: Box<[AtomicU64]>,
    /// Requests refused on arrival because their shape is quarantined,
    /// per operation.
    quarantined: Box<[AtomicU64]>,
}

/// Cluster-wide figures every node exports from its copy of the map, so
/// any node's `/metrics` shows recovery; the byte rate is known only on
/// the leader (0 elsewhere).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClusterGauges {
    /// Partitions with fewer than R live replicas.
    pub under_replicated: u64,
    /// Moves in flight.
    pub moves_in_flight: u64,
    /// Recovery bytes sent per second, cluster-wide (leader only).
    pub recovery_bytes_per_sec: u64,
    /// Nodes marked Down.
    pub nodes_down: u64,
    /// Nodes marked Out.
    pub nodes_out: u64,
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
            deadline_dropped: AtomicU64::new(0),
            recovery_sent: AtomicU64::new(0),
            recovery_received: AtomicU64::new(0),
            cluster: Default::default(),
            panics: Op::ALL.iter().map(|_| AtomicU64::new(0)).collect(),
            quarantined: Op::ALL.iter().map(|_| AtomicU64::new(0)).collect(),
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
            g.recovery_bytes_per_sec,
            g.nodes_down,
            g.nodes_out,
            g.quarantined_shapes,
        ];
        for (slot, v) in self.cluster.iter().zip(values) {
            slot.store(v, Ordering::Relaxed);
        }
    }

    /// The cluster figures last recorded.
    pub fn cluster(&self) -> ClusterGauges {
        let v = |i: usize| self.cluster[i].load(Ordering::Relaxed);
        ClusterGauges {
            under_replicated: v(0),
            moves_in_flight: v(1),
            recovery_bytes_per_sec: v(2),
            nodes_down: v(3),
            nodes_out: v(4),
            quarantined_shapes: v(5),
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

    /// The Prometheus text exposition.
    pub fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::with_capacity(16 * 1024);
        out.push_str("# HELP levee_requests_total Requests answered, by class, operation and outcome.\n# TYPE levee_requests_total counter\n");
        for (op, row) in Op::ALL.iter().zip(self.requests.iter()) {
            for outcome in Outcome::ALL {
                let _ = writeln!(
                    out,
                    "levee_requests_total{{class=\"{}\",op=\"{}\",outcome=\"{}\"}} {}",
                    op.class().name(),
                    op.name(),
                    outcome.name(),
                    row[outcome as usize].load(Ordering::Relaxed)
                );
            }
        }
        out.push_str("# HELP levee_request_duration_seconds Time from receipt to answer of admitted requests, by class.\n# TYPE levee_request_duration_seconds histogram\n");
        for class in Class::ALL {
            self.latency[class.index()].render(
                &mut out,
                "levee_request_duration_seconds",
                &format!("class=\"{}\"", class.name()),
            );
        }
        out.push_str("# HELP levee_refusal_duration_seconds Time from receipt to an Overloaded answer handed to the writer.\n# TYPE levee_refusal_duration_seconds histogram\n");
        self.refusal
            .render(&mut out, "levee_refusal_duration_seconds", "");
        out.push_str("# HELP levee_shed_total Requests refused with Overloaded, by reason.\n# TYPE levee_shed_total counter\n");
        for reason in ShedReason::ALL {
            let _ = writeln!(
                out,
                "levee_shed_total{{reason=\"{}\"}} {}",
                reason.name(),
                self.shed[reason as usize].load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP levee_deadline_dropped_total Requests not executed because their deadline had passed.\n# TYPE levee_deadline_dropped_total counter\nlevee_deadline_dropped_total {}",
            self.deadline_drops()
        );
        let _ = writeln!(
            out,
            "# HELP levee_recovery_bytes_sent_total Bytes of partition records sent to move targets (paced by the recovery byte budget).\n# TYPE levee_recovery_bytes_sent_total counter\nlevee_recovery_bytes_sent_total {}",
            self.recovery_bytes_sent()
        );
        let _ = writeln!(
            out,
            "# HELP levee_recovery_bytes_received_total Bytes of partition records received and applied as a move target.\n# TYPE levee_recovery_bytes_received_total counter\nlevee_recovery_bytes_received_total {}",
            self.recovery_bytes_received()
        );
        for (name, help, counters) in [
            (
                "levee_request_panics_total",
                "Panics caught while handling a request (answered Internal; the node kept serving), by operation.",
                &self.panics,
            ),
            (
                "levee_quarantine_refused_total",
                "Requests refused on arrival because their shape is quarantined, by operation.",
                &self.quarantined,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (op, c) in Op::ALL.iter().zip(counters.iter()) {
                let _ = writeln!(
                    out,
                    "{name}{{op=\"{}\"}} {}",
                    op.name(),
                    c.load(Ordering::Relaxed)
                );
            }
        }
        let c = self.cluster();
        for (name, help, value) in [
            (
                "levee_under_replicated_partitions",
                "Partitions with fewer than R live replicas, in this node's map.",
                c.under_replicated,
            ),
            (
                "levee_moves_in_flight",
                "Replica moves in flight, in this node's map.",
                c.moves_in_flight,
            ),
            (
                "levee_recovery_bytes_per_second",
                "Recovery bytes sent per second cluster-wide (on the leader; 0 elsewhere).",
                c.recovery_bytes_per_sec,
            ),
            (
                "levee_nodes_down",
                "Nodes marked down, in this node's map.",
                c.nodes_down,
            ),
            (
                "levee_nodes_out",
                "Nodes marked out, in this node's map.",
                c.nodes_out,
            ),
            (
                "levee_quarantined_shapes",
                "Request shapes refused on arrival because they crashed handlers, in this node's map.",
                c.quarantined_shapes,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        out.push_str(
            "# HELP levee_inflight Requests executing, by class.\n# TYPE levee_inflight gauge\n",
        );
        for class in Class::ALL {
            let _ = writeln!(
                out,
                "levee_inflight{{class=\"{}\"}} {}",
                class.name(),
                gauges.inflight[class.index()]
            );
        }
        let simple = [
            (
                "levee_concurrency_limit",
                "The adaptive foreground concurrency limit.",
                gauges.limit as f64,
            ),
            (
                "levee_queue_length",
                "Foreground requests waiting for admission.",
                gauges.queued as f64,
            ),
            (
                "levee_inflight_bytes",
                "Request bytes held by admitted requests.",
                gauges.bytes_inflight as f64,
            ),
            (
                "levee_pressure",
                "Foreground saturation in [0, 1] that background work slows down for.",
                gauges.pressure,
            ),
            (
                "levee_admission_enabled",
                "1 when admission control is on.",
                f64::from(u8::from(gauges.enabled)),
            ),
        ];
        for (name, help, value) in simple {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let text = metrics.render(&Gauges::default());
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
        assert!(text.contains("levee_shed_total{reason=\"queue_full\"} 1"));
        assert!(text.contains(
            "levee_requests_total{class=\"foreground\",op=\"put\",outcome=\"overloaded\"} 1"
        ));
        assert!(text.contains("levee_refusal_duration_seconds_bucket{le=\"0.000005\"} 1"));
    }

    #[test]
    fn recovery_bytes_are_counted_and_rendered() {
        let metrics = Metrics::default();
        metrics.record_recovery_sent(100);
        metrics.record_recovery_sent(20);
        metrics.record_recovery_received(7);
        assert_eq!(metrics.recovery_bytes_sent(), 120);
        assert_eq!(metrics.recovery_bytes_received(), 7);
        let text = metrics.render(&Gauges::default());
        assert!(
            text.contains("levee_recovery_bytes_sent_total 120"),
            "{text}"
        );
        assert!(text.contains("levee_recovery_bytes_received_total 7"));
    }
}
