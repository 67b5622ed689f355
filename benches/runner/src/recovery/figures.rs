//! What a node loss cost and how the re-replication went, from the
//! status samples, the events and the phases of one run. Pure.
//!
//! The byte counters are each node's cumulative recovery bytes as its
//! latest heartbeat told the leader, so they lag by up to a heartbeat;
//! the deltas are taken from the last sample before the fault to the last
//! sample of the run (every byte of the recovery is in by then), and the
//! rates divide them by the recovery window (Out → redundant), in which
//! all of them were sent.

use std::collections::BTreeMap;

use levee_node::node::send_budget::SOURCES_PER_MOVE;
use serde::Serialize;

use super::events::{DOWN, OUT, REDUNDANT, first_fault, samples, window};
use crate::cluster::Event;
use crate::phases::{PhaseKind, PhaseSummary};
use crate::report::Totals;
use crate::timeline::{RecoverySample, SecondRow};

/// The recovery figures of a run with a fault.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RecoveryFigures {
    /// The first fault (s into the run).
    pub fault_s: f64,
    /// Nodes marked Out during the run (runner numbers), in order.
    pub nodes_out: Vec<u8>,
    /// Nodes a guard kept from being marked Out after the fault (runner
    /// number → the guard, as the leader last named it).
    pub held: BTreeMap<u8, String>,
    /// Fault → the first node marked Down: the detector's `down_after`.
    pub fault_to_down_s: Option<f64>,
    /// When the first node was marked Out (s), if one was.
    pub out_s: Option<f64>,
    /// When full redundancy was back (s): the first sample with no
    /// under-replicated partition and no move in flight, after the first
    /// Out, or, when no node was marked Out, after the fault (the lost
    /// nodes came back).
    pub redundant_s: Option<f64>,
    /// Fault → Out: the detector's delay (`down_out_interval` after the
    /// last heartbeat, plus the leader's tick and up to one sampling
    /// interval).
    pub fault_to_out_s: Option<f64>,
    /// Out → redundant: the re-replication itself.
    pub recovery_s: Option<f64>,
    /// Fault → redundant: the time to full redundancy the model predicts.
    pub fault_to_redundant_s: Option<f64>,
    /// Most under-replicated partitions in any sample after the fault:
    /// with one node lost, the partitions it held, each one move.
    pub max_under_replicated: usize,
    /// Most moves in flight in any sample.
    pub max_moves: usize,
    /// Time per move and slot: out → redundant × most moves in flight /
    /// moves (`max_under_replicated`), once redundant. With the slots kept
    /// full, each move's own time plus the pause before the next one
    /// started; an upper bound otherwise. (Not a mean of the sampled moves
    /// in flight: moves of about 2 s sampled once a second alias.)
    pub slot_s_per_move: Option<f64>,
    /// Highest cluster-wide recovery rate the leader reported (its 5 s
    /// window), bytes/s.
    pub peak_cluster_bytes_per_sec: u64,
    /// Bytes the targets received and applied: the recovery's copy.
    pub bytes_copied: u64,
    /// Bytes the sources sent (paid from their byte budgets).
    pub bytes_sent: u64,
    /// Per node that sent or received recovery bytes.
    pub nodes: Vec<NodeRecovery>,
    /// Nodes that sent more than 0 bytes: the senders of the model.
    pub sending_nodes: usize,
    /// Nodes that received more than 0 bytes.
    pub receiving_nodes: usize,
    /// The configured `recovery.bytes_per_sec` (per sending node).
    pub limit_bytes_per_sec: Option<u64>,
    /// The configured `down_out_interval` (s).
    pub down_out_interval_s: Option<f64>,
    /// The highest per-node average send rate over the window, over the
    /// limit.
    pub rate_vs_limit: Option<f64>,
    /// The configured `recovery.bytes_burst`.
    pub burst_bytes: Option<u64>,
    /// The configured `recovery.max_moves_per_node` (a node's ingest
    /// rate is this many times [`SOURCES_PER_MOVE`] times the limit).
    pub max_moves_per_node: Option<u64>,
    /// The highest, over the nodes, of the bytes a node sent over what
    /// its send bucket allows in the recovery window `t`: `limit × t +
    /// burst`, with `t` the sampled window (Out → redundant, or → the last
    /// sample) plus one sampling interval (the Out sample may be up to
    /// that late, which shortens the window).
    pub sent_vs_bound: Option<f64>,
    /// The same for the bytes a node received, against its ingest
    /// bucket: `limit × max_moves_per_node × SOURCES_PER_MOVE × t + burst`.
    pub received_vs_bound: Option<f64>,
    /// `down_out_interval + bytes_copied / (limit × sending_nodes)` (s).
    pub model_s: Option<f64>,
    /// `fault_to_redundant_s / model_s`.
    pub time_vs_model: Option<f64>,
    /// The model with the receivers' ingest buckets as well:
    /// `down_out_interval + bytes_copied / min(limit × sending_nodes,
    /// limit × max_moves_per_node × SOURCES_PER_MOVE × receiving_nodes)`
    /// (s). Not a target:
    /// it tells whether a miss of [`Self::time_vs_model`] is the
    /// receivers' byte budget (when zones leave one possible target, it
    /// takes everything) or time spent besides bytes.
    pub ingest_model_s: Option<f64>,
    /// `fault_to_redundant_s / ingest_model_s`.
    pub time_vs_ingest_model: Option<f64>,
    /// The baseline phase's p99 (ms).
    pub p99_baseline_ms: Option<f64>,
    /// The recovering phase's p99 (ms).
    pub p99_recovering_ms: Option<f64>,
    /// Their ratio.
    pub p99_recovering_vs_baseline: Option<f64>,
    /// Requests of the whole run that did not succeed (offered − ok:
    /// failures of every kind after the client's retries, and requests
    /// the generator dropped).
    pub failed_ops: u64,
}

/// One node's part in the recovery.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NodeRecovery {
    /// Runner number (or id, for a node the runner does not know).
    pub node: u8,
    /// Recovery bytes it sent.
    pub sent: u64,
    /// Recovery bytes it received.
    pub received: u64,
    /// `sent` over the recovery window (bytes/s).
    pub send_rate: Option<f64>,
}

/// The runner's number of node `id` (its id when the runner does not know
/// it, 0 past 255).
pub(super) fn number(index: &BTreeMap<u64, u8>, id: u64) -> u8 {
    index
        .get(&id)
        .copied()
        .or_else(|| u8::try_from(id).ok())
        .unwrap_or(0)
}

/// The per-node counters of the sample `rows` hold at second `t` or the
/// nearest before it; `None` if no sample before `t` has them.
fn counters_before(rows: &[SecondRow], t: u64) -> Option<&RecoverySample> {
    rows.iter()
        .filter(|r| r.t < t)
        .filter_map(|r| r.cluster.as_ref()?.recovery.as_ref())
        .next_back()
}

impl RecoveryFigures {
    /// The figures of a run, if it had a fault. `index` maps node ids to
    /// runner numbers.
    pub fn of(
        rows: &[SecondRow],
        events: &[Event],
        phases: &[PhaseSummary],
        totals: &Totals,
        index: &BTreeMap<u64, u8>,
    ) -> Option<Self> {
        let fault_s = first_fault(events)?;
        let fault_second = fault_s.floor() as u64;
        // Every sample from the fault's second on (several a second), each
        // with its own time: the same samples the events come from.
        let after: Vec<(f64, &crate::timeline::ClusterSample)> = samples(rows)
            .filter(|(t, _, _)| *t >= fault_second)
            .map(|(_, at, s)| (at, s))
            .collect();
        let mut f = Self {
            fault_s,
            nodes_out: events
                .iter()
                .filter(|e| e.kind == OUT)
                .map(|e| e.node)
                .collect(),
            failed_ops: totals.offered.saturating_sub(totals.ok),
            max_under_replicated: after.iter().map(|(_, s)| s.under_replicated).max()?,
            max_moves: after.iter().map(|(_, s)| s.moves).max().unwrap_or(0),
            peak_cluster_bytes_per_sec: after
                .iter()
                .filter_map(|(_, s)| s.recovery.as_ref().map(|r| r.bytes_per_sec))
                .max()
                .unwrap_or(0),
            ..Self::default()
        };
        let last = after
            .iter()
            .filter_map(|(_, s)| s.recovery.as_ref())
            .next_back();
        for (_, s) in &after {
            for (id, guard) in s.recovery.iter().flat_map(|r| &r.held) {
                f.held.insert(number(index, *id), guard.clone());
            }
        }
        if let Some(last) = last {
            f.limit_bytes_per_sec = Some(last.limit_bytes_per_sec);
            f.down_out_interval_s = Some(last.down_out_interval_ms as f64 / 1000.0);
            f.burst_bytes = Some(last.burst_bytes);
            f.max_moves_per_node = Some(last.max_moves_per_node);
        }
        let first = |kind: &str| {
            events
                .iter()
                .filter(|e| e.kind == kind && e.t_s >= fault_s.floor())
                .map(|e| e.t_s)
                .reduce(f64::min)
        };
        f.fault_to_down_s = first(DOWN).map(|t| t - fault_s);
        let window = window(events);
        match window {
            Some((out, redundant)) => {
                f.out_s = Some(out);
                f.redundant_s = redundant;
                f.fault_to_out_s = Some(out - fault_s);
                f.recovery_s = redundant.map(|r| r - out);
            }
            None => f.redundant_s = first(REDUNDANT),
        }
        f.fault_to_redundant_s = f.redundant_s.map(|r| r - fault_s);
        // Without a redundant sample, the window runs to the last sample.
        let window_s = window.and_then(|(out, redundant)| {
            let end = redundant.or(after.last().map(|(at, _)| *at))?;
            (end > out).then_some((out, end))
        });
        if let (Some(copy), true) = (f.recovery_s, f.max_under_replicated > 0) {
            f.slot_s_per_move = Some(copy * f.max_moves as f64 / f.max_under_replicated as f64);
        }
        if let Some(last) = last {
            let empty = RecoverySample::default();
            let base = counters_before(rows, fault_second).unwrap_or(&empty);
            f.count_bytes(base, last, index, window_s.map(|(out, end)| end - out));
        }
        f.model(window_s.is_some());
        f.bounds(window_s.map(|(out, end)| end - out));
        f.latency(phases);
        Some(f)
    }

    /// The bytes each node sent and received between the two counter
    /// samples, and its send rate over `window_s` seconds.
    fn count_bytes(
        &mut self,
        base: &RecoverySample,
        last: &RecoverySample,
        index: &BTreeMap<u64, u8>,
        window_s: Option<f64>,
    ) {
        let delta = |now: &BTreeMap<u64, u64>, then: &BTreeMap<u64, u64>, id: &u64| {
            now.get(id)
                .copied()
                .unwrap_or(0)
                .saturating_sub(then.get(id).copied().unwrap_or(0))
        };
        let ids: std::collections::BTreeSet<u64> = last
            .sent
            .keys()
            .chain(last.received.keys())
            .copied()
            .collect();
        for id in ids {
            let sent = delta(&last.sent, &base.sent, &id);
            let received = delta(&last.received, &base.received, &id);
            if sent == 0 && received == 0 {
                continue;
            }
            let node = number(index, id);
            self.nodes.push(NodeRecovery {
                node,
                sent,
                received,
                send_rate: window_s.map(|w| sent as f64 / w),
            });
        }
        self.nodes.sort_by_key(|n| n.node);
        self.bytes_sent = self.nodes.iter().map(|n| n.sent).sum();
        self.bytes_copied = self.nodes.iter().map(|n| n.received).sum();
        self.sending_nodes = self.nodes.iter().filter(|n| n.sent > 0).count();
        self.receiving_nodes = self.nodes.iter().filter(|n| n.received > 0).count();
    }

    /// How many times the limit a node's ingest bucket allows: the node's
    /// rule ([`levee_node::node::send_budget::ingest_streams`]) on the configured `max_moves_per_node`.
    fn ingest_streams(&self) -> f64 {
        let per_node = self.max_moves_per_node.unwrap_or(1);
        per_node.max(1) as f64 * SOURCES_PER_MOVE as f64
    }

    /// The per-node rate against the limit, and the model time.
    fn model(&mut self, has_window: bool) {
        let Some(limit) = self.limit_bytes_per_sec.filter(|l| *l > 0) else {
            return;
        };
        if has_window {
            self.rate_vs_limit = self
                .nodes
                .iter()
                .filter_map(|n| n.send_rate)
                .reduce(f64::max)
                .map(|r| r / limit as f64);
        }
        if self.out_s.is_none() || self.sending_nodes == 0 {
            return;
        }
        let delay = self.down_out_interval_s.unwrap_or(0.0);
        let senders = limit as f64 * self.sending_nodes as f64;
        let ratio = |model: f64| {
            self.fault_to_redundant_s
                .filter(|_| model > 0.0)
                .map(|t| t / model)
        };
        let model = delay + self.bytes_copied as f64 / senders;
        self.model_s = Some(model);
        self.time_vs_model = ratio(model);
        if self.receiving_nodes > 0 {
            let receivers = limit as f64 * self.ingest_streams() * self.receiving_nodes as f64;
            let ingest_model = delay + self.bytes_copied as f64 / senders.min(receivers);
            self.ingest_model_s = Some(ingest_model);
            self.time_vs_ingest_model = ratio(ingest_model);
        }
    }

    /// Each node's bytes sent and received against its buckets' bound
    /// over the recovery window of `window_s` seconds.
    fn bounds(&mut self, window_s: Option<f64>) {
        let (Some(window), Some(limit)) = (window_s, self.limit_bytes_per_sec) else {
            return;
        };
        let t = window + crate::sampler::SAMPLE_EVERY.as_secs_f64();
        let burst = self.burst_bytes.unwrap_or(0) as f64;
        let per_node = self.ingest_streams();
        let worst = |bytes: &dyn Fn(&NodeRecovery) -> u64, rate: f64| {
            let bound = rate * t + burst;
            (bound > 0.0)
                .then(|| {
                    self.nodes
                        .iter()
                        .map(|n| bytes(n) as f64 / bound)
                        .reduce(f64::max)
                })
                .flatten()
        };
        self.sent_vs_bound = worst(&|n| n.sent, limit as f64);
        self.received_vs_bound = worst(&|n| n.received, limit as f64 * per_node);
    }

    /// The recovering phase's p99 against the baseline's.
    fn latency(&mut self, phases: &[PhaseSummary]) {
        self.p99_baseline_ms = phases.first().and_then(|p| p.p99_ms);
        if let Some(p) = phases.iter().find(|p| p.kind == PhaseKind::Recovering) {
            self.p99_recovering_ms = p.p99_ms;
            self.p99_recovering_vs_baseline = p.vs_baseline.p99;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phases::{spans, summarise, with_recovery};
    use crate::recovery::events::derive;
    use crate::recovery::tests::{fault, row, sample};
    use crate::timeline::{Outcome, Timeline};
    use std::time::Duration;

    const MIB: u64 = 1 << 20;

    /// A 40 s run: node 2 (id 2) killed at 5.2 s, Out at 20, 4 partitions
    /// moved from 20 to 30 (two at a time) by senders 1 and 3 into node 4,
    /// each sending 5 MiB; the limit is 1 MiB/s per node, the delay 15 s.
    fn rows() -> Vec<SecondRow> {
        (0..40u64)
            .map(|t| {
                let state = match t {
                    0..=7 => "up",
                    8..=19 => "down",
                    _ => "out",
                };
                let under = match t {
                    0..=7 => 0,
                    8..=24 => 4,
                    25..=29 => 2,
                    _ => 0,
                };
                let moves = if (20..30).contains(&t) { 2 } else { 0 };
                let copying = t.clamp(20, 30) - 20;
                let mut s = sample(&[(1, "up"), (2, state), (3, "up"), (4, "up")], under, moves);
                let sent = |base: u64| base + copying * MIB / 2;
                s.recovery = Some(RecoverySample {
                    bytes_per_sec: if moves > 0 { 2 * MIB } else { 0 },
                    // Node 1 had sent 3 bytes before the run: not counted.
                    sent: BTreeMap::from([(1, sent(3)), (2, 0), (3, sent(0))]),
                    received: BTreeMap::from([(4, copying * MIB)]),
                    limit_bytes_per_sec: MIB,
                    down_out_interval_ms: 15_000,
                    burst_bytes: MIB / 4,
                    max_moves_per_node: 2,
                    held: BTreeMap::new(),
                });
                row(t, Some(s))
            })
            .collect()
    }

    #[test]
    fn a_throttled_recovery_against_its_model() {
        let rows = rows();
        let mut events = vec![fault(5.2)];
        let index = BTreeMap::from([(1, 1), (2, 2), (3, 3), (4, 4)]);
        events.extend(derive(&rows, &events, &index));
        let mut timeline = Timeline::new(40);
        for t in 0..40u64 {
            let ms = if (20..30).contains(&t) { 12 } else { 10 };
            for i in 0..100 {
                let due = Duration::from_millis(t * 1000 + i * 10);
                timeline.record(due, Duration::from_millis(ms), Outcome::Ok);
            }
        }
        timeline.record(Duration::from_secs(22), Duration::ZERO, Outcome::Dropped);
        let spans = with_recovery(spans(40, 2, &[5.2]), 20.0, Some(30.0));
        let phases = summarise(timeline.buckets(), &spans, None);
        let totals = Totals::of(&timeline.rows());
        let f = RecoveryFigures::of(&rows, &events, &phases, &totals, &index).unwrap();

        assert_eq!(f.nodes_out, [2]);
        assert!((f.fault_to_down_s.unwrap() - 2.8).abs() < 1e-9);
        assert_eq!((f.out_s, f.redundant_s), (Some(20.0), Some(30.0)));
        assert!((f.fault_to_out_s.unwrap() - 14.8).abs() < 1e-9);
        assert_eq!(f.recovery_s, Some(10.0));
        assert_eq!((f.max_under_replicated, f.max_moves), (4, 2));
        assert_eq!(f.slot_s_per_move, Some(5.0), "10 s × 2 in flight / 4 moves");
        assert_eq!(f.peak_cluster_bytes_per_sec, 2 * MIB);
        assert_eq!((f.bytes_copied, f.bytes_sent), (10 * MIB, 10 * MIB));
        assert_eq!((f.sending_nodes, f.receiving_nodes), (2, 1));
        let rates: Vec<_> = f.nodes.iter().map(|n| (n.node, n.send_rate)).collect();
        let half = Some(MIB as f64 / 2.0);
        assert_eq!(rates, [(1, half), (3, half), (4, Some(0.0))]);
        assert_eq!(f.rate_vs_limit, Some(0.5));
        // Node 4 received 10 MiB in the 10 s window: against 2 moves × 2
        // sources × 1 MiB/s × (10 + 0.25) s + 256 KiB; senders 5 MiB
        // against 1 MiB/s × 10.25 s + 256 KiB (a quarter of a second: one
        // sampling interval).
        let received = f.received_vs_bound.unwrap();
        assert!((received - 10.0 / 41.25).abs() < 1e-9, "{received}");
        let sent = f.sent_vs_bound.unwrap();
        assert!((sent - 5.0 / 10.5).abs() < 1e-6, "{sent}");
        // 15 s + 10 MiB / (1 MiB/s × 2 senders) = 20 s; measured 24.8 s.
        assert_eq!(f.model_s, Some(20.0));
        assert!((f.time_vs_model.unwrap() - 24.8 / 20.0).abs() < 1e-9);
        // One receiver with two move slots (4 MiB/s) takes the two
        // senders' 2 MiB/s.
        assert_eq!(f.ingest_model_s, Some(20.0));
        let p99 = f.p99_recovering_vs_baseline.unwrap();
        assert!((p99 - 1.2).abs() < 0.01, "{p99}");
        assert_eq!(f.failed_ops, 1, "the dropped request");
    }

    #[test]
    fn one_receiver_slower_than_its_senders_sets_the_ingest_model() {
        // Three senders at 1 MiB/s into one node with one move slot
        // (two sources): the senders' model counts 3 MiB/s, the ingest
        // model 2 MiB/s.
        let mut f = RecoveryFigures {
            out_s: Some(40.0),
            fault_to_redundant_s: Some(31.0),
            limit_bytes_per_sec: Some(MIB),
            down_out_interval_s: Some(15.0),
            max_moves_per_node: Some(1),
            bytes_copied: 30 * MIB,
            sending_nodes: 3,
            receiving_nodes: 1,
            ..RecoveryFigures::default()
        };
        f.model(true);
        assert_eq!(f.model_s, Some(25.0));
        assert_eq!(f.ingest_model_s, Some(30.0));
        assert!((f.time_vs_ingest_model.unwrap() - 31.0 / 30.0).abs() < 1e-9);
        // Receivers faster than the senders change nothing.
        f.receiving_nodes = 2;
        f.model(true);
        assert_eq!(f.ingest_model_s, f.model_s);
    }

    #[test]
    fn a_recovery_unfinished_at_the_end_has_no_time_but_a_rate() {
        let rows: Vec<SecondRow> = rows().into_iter().take(26).collect();
        let mut events = vec![fault(5.2)];
        events.extend(derive(&rows, &events, &BTreeMap::new()));
        let f =
            RecoveryFigures::of(&rows, &events, &[], &Totals::of(&rows), &BTreeMap::new()).unwrap();
        assert_eq!((f.out_s, f.redundant_s), (Some(20.0), None));
        assert_eq!(
            (f.recovery_s, f.time_vs_model, f.slot_s_per_move),
            (None, None, None)
        );
        assert!(f.model_s.is_some());
        // 2.5 MiB each in the 5 s from Out to the last sample.
        assert_eq!(f.rate_vs_limit, Some(0.5));
    }

    #[test]
    fn a_held_node_loss_moves_nothing() {
        // Down from 8 s to the end, never Out: no window, no model.
        let rows: Vec<SecondRow> = rows()
            .into_iter()
            .map(|mut r| {
                if let Some(c) = r.cluster.as_mut() {
                    c.nodes
                        .insert(2, if r.t < 8 { "up" } else { "down" }.into());
                    c.moves = 0;
                    c.recovery = Some(RecoverySample {
                        limit_bytes_per_sec: MIB,
                        held: BTreeMap::from([(2, "zone".to_owned())]),
                        ..RecoverySample::default()
                    });
                }
                r
            })
            .collect();
        let mut events = vec![fault(5.2)];
        events.extend(derive(&rows, &events, &BTreeMap::new()));
        let f =
            RecoveryFigures::of(&rows, &events, &[], &Totals::of(&rows), &BTreeMap::new()).unwrap();
        assert!(f.nodes_out.is_empty());
        assert_eq!(f.held, BTreeMap::from([(2, "zone".to_owned())]));
        assert_eq!((f.out_s, f.model_s, f.rate_vs_limit), (None, None, None));
        // Whole again at 30 s although nothing was copied (here the test's
        // partitions simply heal; in a run, the node came back).
        assert_eq!(f.redundant_s, Some(30.0));
        assert_eq!((f.recovery_s, f.time_vs_model), (None, None));
        assert_eq!((f.bytes_copied, f.max_moves, f.sending_nodes), (0, 0, 0));
        assert_eq!(f.max_under_replicated, 4);
        assert!(
            RecoveryFigures::of(&rows, &[], &[], &Totals::of(&rows), &BTreeMap::new()).is_none()
        );
    }
}
