//! Per-second aggregation of request outcomes and cluster samples. Pure:
//! the runner feeds it what happened and when (offsets from the start of
//! the run); nothing in here reads a clock.
//!
//! Every request is counted in the second it was *due*, not the second it
//! finished: the row for second s says what became of the requests
//! offered in s (how many succeeded, failed how, and how long the
//! successful ones took, measured from when they were due).

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

mod error_kinds;

pub use error_kinds::{ErrorKind, classify};

/// Highest latency a histogram tracks (µs); larger ones are clamped. Well
/// above any sensible request timeout.
const MAX_LATENCY_US: u64 = 120_000_000;

/// Significant digits of the histograms: 0.1% resolution.
const SIGFIG: u8 = 3;

/// Distinct client error messages counted; later ones are counted
/// together. Enough for the few causes a run has, bounded for one whose
/// messages all differ (addresses, counts).
const MAX_MESSAGES: usize = 32;

/// Where messages past [`MAX_MESSAGES`] are counted.
const OTHER_MESSAGES: &str = "(other messages)";

/// What became of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered without error (a get that found nothing is a success).
    Ok,
    /// Failed.
    Error(ErrorKind),
    /// Never sent: the in-flight cap was reached when it was due.
    Dropped,
}

/// Significant digits of the by-operation histograms: they only say
/// whether reads and writes wait alike, and at two digits each takes 21 KiB
/// against the three-digit one's 144 (one of each per second of a run).
const OP_SIGFIG: u8 = 2;

/// A new by-operation latency histogram (µs, [`OP_SIGFIG`] digits).
pub fn new_op_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, OP_SIGFIG)
        .unwrap_or_else(|_| unreachable!("constant histogram bounds are valid"))
}

/// Which kind of key operation a request was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// A get.
    Read,
    /// A put or a delete.
    Write,
}

/// A latency as the histograms record it: whole µs, at least 1 (their
/// lowest trackable value).
fn micros(latency: Duration) -> u64 {
    u64::try_from(latency.as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// A new latency histogram (µs).
pub fn new_histogram() -> Histogram<u64> {
    // Bounds are constants known to be valid: 1 ≤ low, high ≥ 2·low.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, SIGFIG)
        .unwrap_or_else(|_| unreachable!("constant histogram bounds are valid"))
}

/// Accumulates one second.
#[derive(Debug, Clone)]
pub struct Bucket {
    /// Requests due in this second.
    pub offered: u64,
    /// Of those, not sent (in-flight cap).
    pub dropped: u64,
    /// Of those, answered without error.
    pub ok: u64,
    /// Of those, failed, by kind.
    pub errors: BTreeMap<ErrorKind, u64>,
    /// Latency of the successful ones (µs, from when they were due).
    pub latency: Histogram<u64>,
    /// The same for the successful reads alone (recorded with
    /// [`Timeline::record_op`]).
    pub reads: Histogram<u64>,
    /// The same for the successful writes alone.
    pub writes: Histogram<u64>,
    /// The cluster as sampled in this second, if a sample arrived: the
    /// last one of the second.
    pub cluster: Option<ClusterSample>,
    /// The samples of this second before the last one, oldest first: the
    /// sampler asks several times a second so that recovery events are
    /// placed to a fraction of a second (`recovery/events.rs`).
    pub earlier: Vec<ClusterSample>,
    /// What the clients sent in this second (by when it was sent).
    pub client: ClientCounts,
}

impl Default for Bucket {
    fn default() -> Self {
        Self {
            offered: 0,
            dropped: 0,
            ok: 0,
            errors: BTreeMap::new(),
            latency: new_histogram(),
            reads: new_op_histogram(),
            writes: new_op_histogram(),
            cluster: None,
            earlier: Vec::new(),
            client: ClientCounts::default(),
        }
    }
}

/// The load generator's client counters (`Client::requests()`,
/// `attempts()`, `retries()`), summed over its clients, or their change
/// over an interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ClientCounts {
    /// Logical requests (key operations) started.
    pub requests: u64,
    /// Attempts sent to nodes: requests plus retries.
    pub attempts: u64,
    /// Attempts beyond the first of each request.
    pub retries: u64,
    /// Requests the clients refused themselves as overloaded, never sent:
    /// their throttle's, and those with every replica held off
    /// (`Client::throttled`, `Client::held_off`). The rest of the
    /// `Overloaded` answers came from nodes.
    pub refused_in_client: u64,
}

impl ClientCounts {
    /// What changed from `earlier` to `self` (0 where a counter went
    /// back, which counters never do).
    pub fn since(&self, earlier: &ClientCounts) -> ClientCounts {
        ClientCounts {
            requests: self.requests.saturating_sub(earlier.requests),
            attempts: self.attempts.saturating_sub(earlier.attempts),
            retries: self.retries.saturating_sub(earlier.retries),
            refused_in_client: self
                .refused_in_client
                .saturating_sub(earlier.refused_in_client),
        }
    }

    /// Adds `other` to these counts.
    pub fn add(&mut self, other: &ClientCounts) {
        self.requests += other.requests;
        self.attempts += other.attempts;
        self.retries += other.retries;
        self.refused_in_client += other.refused_in_client;
    }

    /// Attempts per logical request: the load retries multiply the
    /// cluster's work by. `None` without requests.
    pub fn attempts_per_request(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.attempts as f64 / self.requests as f64)
    }
}

/// What the cluster said about itself at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ClusterSample {
    /// When the sample was taken (ms since the start of the run); `None`
    /// in samples built without a clock (tests).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at_ms: Option<u64>,
    /// Node id → state (`up`, `down`, `out`, ...), from the answering
    /// node's map.
    pub nodes: BTreeMap<u64, String>,
    /// Partitions with fewer Up replicas than R.
    pub under_replicated: usize,
    /// The leader the answering node follows.
    pub leader: Option<u64>,
    /// Moves (re-replications) in flight, from the map.
    pub moves: usize,
    /// The leader's recovery view, when the answering node could give it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery: Option<RecoverySample>,
}

/// The recovery figures of one status sample, from the leader's
/// `RecoveryStatus` and the map's settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RecoverySample {
    /// Recovery bytes sent per second, cluster-wide, over the leader's
    /// last few seconds (its 5 s window).
    pub bytes_per_sec: u64,
    /// Per node id: recovery bytes it has sent since it started, from its
    /// latest heartbeat (up to one heartbeat old; a dead node's last one).
    pub sent: BTreeMap<u64, u64>,
    /// Per node id: recovery bytes it has received since it started.
    pub received: BTreeMap<u64, u64>,
    /// The configured `recovery.bytes_per_sec`: what each node may send.
    pub limit_bytes_per_sec: u64,
    /// The configured `down_out_interval` (ms).
    pub down_out_interval_ms: u64,
    /// The configured `recovery.bytes_burst`: the burst of every node's
    /// send and ingest buckets.
    pub burst_bytes: u64,
    /// The configured `recovery.max_moves_per_node`: a node's ingest rate
    /// is this many times `SOURCES_PER_MOVE` times `limit_bytes_per_sec`.
    pub max_moves_per_node: u64,
    /// Node id → the guard (`min_in_ratio`, `zone`, `noout`) keeping it
    /// from being marked Out although its silence is past
    /// `down_out_interval`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub held: BTreeMap<u64, String>,
}

/// The run, second by second.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    buckets: Vec<Bucket>,
    /// Seconds in which no node answered the status sampler.
    status_misses: Vec<u64>,
    /// How often each client error message was seen: the kinds say what
    /// class of failure, the messages say which (a quorum not reached, a
    /// connection refused...).
    messages: BTreeMap<String, u64>,
}

impl Timeline {
    /// An empty timeline of `seconds` rows (it grows if needed).
    pub fn new(seconds: usize) -> Self {
        Self {
            buckets: (0..seconds).map(|_| Bucket::default()).collect(),
            status_misses: Vec::new(),
            messages: BTreeMap::new(),
        }
    }

    fn bucket(&mut self, due: Duration) -> &mut Bucket {
        let s = due.as_secs() as usize;
        if s >= self.buckets.len() {
            self.buckets.resize_with(s + 1, Bucket::default);
        }
        &mut self.buckets[s]
    }

    /// Records one request: due at `due`, finished `latency` after that.
    pub fn record(&mut self, due: Duration, latency: Duration, outcome: Outcome) {
        let bucket = self.bucket(due);
        bucket.offered += 1;
        match outcome {
            Outcome::Ok => {
                bucket.ok += 1;
                bucket.latency.saturating_record(micros(latency));
            }
            Outcome::Error(kind) => *bucket.errors.entry(kind).or_default() += 1,
            Outcome::Dropped => bucket.dropped += 1,
        }
    }

    /// Records one key operation of kind `op` as [`Timeline::record`]
    /// does, and its latency by kind if it succeeded.
    pub fn record_op(&mut self, due: Duration, latency: Duration, outcome: Outcome, op: OpKind) {
        self.record(due, latency, outcome);
        if outcome == Outcome::Ok {
            let bucket = self.bucket(due);
            let histogram = match op {
                OpKind::Read => &mut bucket.reads,
                OpKind::Write => &mut bucket.writes,
            };
            histogram.saturating_record(micros(latency));
        }
    }

    /// Records a cluster sample taken at `at` (the last one in a second
    /// is the second's, the ones before it are kept beside it), or that
    /// none could be taken. Samples after the last second are ignored:
    /// they describe no request.
    pub fn sample(&mut self, at: Duration, sample: Option<ClusterSample>) {
        if at.as_secs() as usize >= self.buckets.len() {
            return;
        }
        match sample {
            Some(s) => {
                let bucket = self.bucket(at);
                if let Some(before) = bucket.cluster.replace(s) {
                    bucket.earlier.push(before);
                }
            }
            None if self.status_misses.last() == Some(&at.as_secs()) => {}
            None => self.status_misses.push(at.as_secs()),
        }
    }

    /// Adds what the clients sent during second `second` (counted by
    /// when it was sent, unlike requests). Counts from after the last
    /// second (attempts of the last requests, still retrying) go to the
    /// last second rather than growing the run.
    pub fn client(&mut self, second: u64, counts: ClientCounts) {
        let Some(last) = self.buckets.len().checked_sub(1) else {
            return;
        };
        let s = (second as usize).min(last);
        self.buckets[s].client.add(&counts);
    }

    /// Counts one failed request's error message (its durations masked,
    /// see [`normalise`]).
    pub fn message(&mut self, message: &str) {
        let message = normalise(message);
        let key = if self.messages.len() < MAX_MESSAGES || self.messages.contains_key(&message) {
            message
        } else {
            OTHER_MESSAGES.to_owned()
        };
        *self.messages.entry(key).or_default() += 1;
    }

    /// The error messages seen, most frequent first.
    pub fn messages(&self) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> =
            self.messages.iter().map(|(m, n)| (m.clone(), *n)).collect();
        out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        out
    }

    /// The seconds, in order.
    pub fn buckets(&self) -> &[Bucket] {
        &self.buckets
    }

    /// The rows of the report.
    pub fn rows(&self) -> Vec<SecondRow> {
        self.buckets
            .iter()
            .enumerate()
            .map(|(s, b)| SecondRow::of(s as u64, b, self.status_misses.contains(&(s as u64))))
            .collect()
    }
}

/// A message with every duration (`999.997ms`, `1.5s`) shown as `…ms`,
/// `…s`: timeouts differ in their last microseconds, and counted as they
/// come every one would be a message of its own.
pub fn normalise(message: &str) -> String {
    message
        .split(' ')
        .map(|word| {
            let bare = word.trim_end_matches([',', ';', ')']);
            let unit = ["ms", "µs", "ns", "s"].into_iter().find(|u| {
                bare.strip_suffix(u)
                    .is_some_and(|n| n.parse::<f64>().is_ok())
            });
            match unit {
                Some(u) => format!("…{u}{}", &word[bare.len()..]),
                None => word.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// One second of the report.
#[derive(Debug, Clone, Serialize)]
pub struct SecondRow {
    /// Second since the start of the run.
    pub t: u64,
    /// Requests due.
    pub offered: u64,
    /// Not sent (in-flight cap).
    pub dropped: u64,
    /// Answered without error.
    pub ok: u64,
    /// Successful ops per second (equals `ok`: the row is one second).
    pub goodput: f64,
    /// Failures by kind (every kind present, 0 included).
    pub errors: BTreeMap<&'static str, u64>,
    /// Latency percentiles of the successful requests (ms); `None` when
    /// none succeeded.
    pub p50_ms: Option<f64>,
    /// 99th percentile.
    pub p99_ms: Option<f64>,
    /// 99.9th percentile.
    pub p999_ms: Option<f64>,
    /// Slowest.
    pub max_ms: Option<f64>,
    /// The cluster's own view, when a sample arrived in this second (the
    /// last of the second).
    pub cluster: Option<ClusterSample>,
    /// The second's samples before that one, oldest first (not written to
    /// result.json: the recovery events already place what they showed).
    #[serde(skip)]
    pub earlier: Vec<ClusterSample>,
    /// Whether the status sampler got no answer in this second.
    pub status_unreachable: bool,
    /// What the clients sent in this second: `requests`, `attempts`,
    /// `retries`.
    #[serde(flatten)]
    pub client: ClientCounts,
}

impl SecondRow {
    fn of(t: u64, b: &Bucket, status_unreachable: bool) -> Self {
        let errors = ErrorKind::ALL
            .iter()
            .map(|k| (k.name(), b.errors.get(k).copied().unwrap_or(0)))
            .collect();
        let pct = |q: f64| (b.ok > 0).then(|| us_to_ms(b.latency.value_at_quantile(q)));
        Self {
            t,
            offered: b.offered,
            dropped: b.dropped,
            ok: b.ok,
            goodput: b.ok as f64,
            errors,
            p50_ms: pct(0.5),
            p99_ms: pct(0.99),
            p999_ms: pct(0.999),
            max_ms: (b.ok > 0).then(|| us_to_ms(b.latency.max())),
            cluster: b.cluster.clone(),
            earlier: b.earlier.clone(),
            status_unreachable,
            client: b.client,
        }
    }
}

/// Microseconds to milliseconds, for humans.
pub fn us_to_ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn requests_land_in_the_second_they_were_due() {
        let mut t = Timeline::new(3);
        // Due at 0.9 s, answered 2 s later: still second 0's request.
        t.record(ms(900), ms(2000), Outcome::Ok);
        t.record(ms(1500), ms(1), Outcome::Error(ErrorKind::Timeout));
        t.record(ms(1600), ms(0), Outcome::Dropped);
        let rows = t.rows();
        assert_eq!((rows[0].offered, rows[0].ok), (1, 1));
        // HDR reports the top of the value's bucket: within 0.1%.
        assert!((rows[0].p50_ms.unwrap() - 2000.0).abs() < 2.0);
        assert_eq!((rows[1].offered, rows[1].ok, rows[1].dropped), (2, 0, 1));
        assert_eq!(rows[1].errors["timeout"], 1);
        assert_eq!(rows[1].p99_ms, None);
        assert_eq!(rows[2].offered, 0);
    }

    #[test]
    fn percentiles_come_from_the_histogram() {
        let mut t = Timeline::new(1);
        for i in 1..=1000 {
            t.record(ms(0), Duration::from_micros(i * 1000), Outcome::Ok);
        }
        let row = &t.rows()[0];
        let close = |got: Option<f64>, want: f64| (got.unwrap() - want).abs() / want < 0.002;
        assert!(close(row.p50_ms, 500.0), "{:?}", row.p50_ms);
        assert!(close(row.p99_ms, 990.0), "{:?}", row.p99_ms);
        assert!(close(row.p999_ms, 999.0), "{:?}", row.p999_ms);
        assert!(close(row.max_ms, 1000.0), "{:?}", row.max_ms);
        assert_eq!(row.goodput, 1000.0);
    }

    #[test]
    fn the_timeline_grows_for_late_records_and_keeps_samples() {
        let mut t = Timeline::new(1);
        t.record(ms(4200), ms(3), Outcome::Ok);
        t.sample(ms(9000), None);
        let sample = ClusterSample {
            nodes: BTreeMap::from([(1, "up".into()), (2, "down".into())]),
            under_replicated: 17,
            leader: Some(1),
            ..ClusterSample::default()
        };
        t.sample(ms(3100), Some(sample.clone()));
        t.sample(ms(2100), None);
        let rows = t.rows();
        assert_eq!(rows.len(), 5);
        assert_eq!(rows[3].cluster.as_ref(), Some(&sample));
        assert!(rows[2].status_unreachable && !rows[3].status_unreachable);
    }

    #[test]
    fn durations_in_messages_are_masked() {
        assert_eq!(
            normalise("request to 127.0.0.3:7400 timed out after 999.996566ms"),
            "request to 127.0.0.3:7400 timed out after …ms"
        );
        assert_eq!(
            normalise("waited 2s, then 1.5µs; gave up"),
            "waited …s, then …µs; gave up"
        );
        assert_eq!(normalise("map epoch 52 is old"), "map epoch 52 is old");
    }

    #[test]
    fn error_messages_are_counted_most_frequent_first_and_bounded() {
        let mut t = Timeline::new(1);
        for m in ["b", "a", "b"] {
            t.message(m);
        }
        assert_eq!(t.messages(), [("b".to_owned(), 2), ("a".to_owned(), 1)]);
        for i in 0..100 {
            t.message(&format!("m{i}"));
        }
        t.message("a");
        let all = t.messages();
        assert_eq!(all.len(), MAX_MESSAGES + 1);
        assert_eq!(all[0], (OTHER_MESSAGES.to_owned(), 70));
        assert!(all.contains(&("a".to_owned(), 2)), "known ones still count");
    }

    #[test]
    fn client_counts_land_in_their_second_and_the_tail_in_the_last() {
        let mut t = Timeline::new(3);
        let at = |requests, attempts| ClientCounts {
            requests,
            attempts,
            retries: attempts - requests,
            refused_in_client: requests / 10,
        };
        let (t0, t1, t2) = (at(10, 10), at(30, 45), at(50, 80));
        t.client(0, t1.since(&t0));
        t.client(2, t2.since(&t1));
        t.client(7, at(1, 3));
        let rows = t.rows();
        assert_eq!(rows.len(), 3, "the tail does not grow the run");
        assert_eq!((rows[0].client.requests, rows[0].client.attempts), (20, 35));
        assert_eq!(rows[1].client, ClientCounts::default());
        assert_eq!(rows[2].client, at(21, 38));
        assert_eq!(rows[0].client.attempts_per_request(), Some(1.75));
        assert_eq!(ClientCounts::default().attempts_per_request(), None);
        assert_eq!(at(5, 5).since(&at(6, 6)), ClientCounts::default());
    }
}
