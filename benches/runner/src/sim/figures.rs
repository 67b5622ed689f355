//! A simulation's figures (bounds and peaks, times against the model,
//! moves, priority, cost) and the scenario's `[[targets]]` checked
//! against them with the runner's own verdicts. Pure.

use levee_node::cluster::map::RecoverySettings;
use levee_node::recovery::transfer::SETTLE;
use serde::{Deserialize, Serialize};

use super::engine::Run;
use super::model::{Prediction, Work};
use super::record::Cost;
use super::scenario::{EventKind, SimScenario};
use crate::targets::{Verdict, bounded};

/// One target of a simulation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimTarget {
    /// The figure.
    pub metric: SimMetric,
    /// The figure must be at least this.
    pub min: Option<f64>,
    /// The figure must be at most this.
    pub max: Option<f64>,
}

/// A figure a simulation target can bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SimMetric {
    /// The most recovery bytes sent cluster-wide in one second, over the
    /// configured bound `min(max_moves, nodes) × bytes_per_sec`.
    ClusterRateVsBound,
    /// The most any node received in one second, over its receive bound
    /// `max_moves_per_node × (bytes_per_sec + bytes_burst)`.
    NodeIngestVsBound,
    /// The most any node sent in one second, over `bytes_per_sec +
    /// bytes_burst` (its budget's bound over one second).
    NodeSendVsBound,
    /// Fault → full redundancy, over the model's time.
    RedundancyTimeVsModel,
    /// First Out (or the drain) → full redundancy, over the model's copy
    /// time.
    CopyTimeVsModel,
    /// Moves the checker started.
    MovesStarted,
    /// Nodes marked Out.
    NodesMarkedOut,
    /// Ticks where a partition with two or more live replicas got a move
    /// while one with a single live replica and a free source waited.
    PriorityInversions,
    /// Under-replicated partitions at the end of the run.
    UnderReplicatedAtEnd,
    /// The most partitions with no live replica at once.
    Unrecoverable,
    /// Wall time of the simulation (s).
    WallS,
    /// The checker's 99th-percentile cost per tick (ms).
    CheckerP99Ms,
}

impl SimMetric {
    /// The figure's name in the reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::ClusterRateVsBound => "peak cluster recovery bytes/s / cluster bound",
            Self::NodeIngestVsBound => "peak node ingest / receive bound",
            Self::NodeSendVsBound => "peak node send / send bound",
            Self::RedundancyTimeVsModel => "fault → full redundancy / model",
            Self::CopyTimeVsModel => "out → full redundancy / model copy time",
            Self::MovesStarted => "moves started",
            Self::NodesMarkedOut => "nodes marked out",
            Self::PriorityInversions => "2-left moves started while a 1-left partition waited",
            Self::UnderReplicatedAtEnd => "under-replicated partitions at the end",
            Self::Unrecoverable => "partitions with no live replica",
            Self::WallS => "wall time",
            Self::CheckerP99Ms => "checker p99 per tick",
        }
    }

    fn show(self, v: f64) -> String {
        match self {
            Self::ClusterRateVsBound
            | Self::NodeIngestVsBound
            | Self::NodeSendVsBound
            | Self::RedundancyTimeVsModel
            | Self::CopyTimeVsModel => format!("×{v:.3}"),
            Self::WallS => format!("{v:.1} s"),
            Self::CheckerP99Ms => format!("{v:.2} ms"),
            _ => format!("{v:.0}"),
        }
    }
}

/// Everything the reports say about a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SimFigures {
    /// Nodes at the start.
    pub nodes: u64,
    /// P.
    pub partitions: u32,
    /// Bytes stored (all replicas).
    pub stored_bytes: u64,
    /// `min(max_moves, nodes) × bytes_per_sec` (bytes/s).
    pub cluster_bound: f64,
    /// `max_moves_per_node × (bytes_per_sec + bytes_burst)` (bytes/s).
    pub receive_bound: f64,
    /// `bytes_per_sec + bytes_burst` (bytes/s).
    pub send_bound: f64,
    /// The most bytes sent cluster-wide in one second, and when.
    pub peak_cluster_bytes: u64,
    /// The second of that peak.
    pub peak_cluster_t: u64,
    /// `peak_cluster_bytes / cluster_bound`.
    pub cluster_vs_bound: f64,
    /// The most any node received in one second.
    pub peak_node_receive: u64,
    /// `peak_node_receive / receive_bound`.
    pub node_receive_vs_bound: f64,
    /// The most any node sent in one second.
    pub peak_node_send: u64,
    /// `peak_node_send / send_bound`.
    pub node_send_vs_bound: f64,
    /// Recovery bytes sent in the run.
    pub bytes_sent: u64,
    /// The first loss or drain (s).
    pub fault_s: Option<f64>,
    /// The first node marked Down (s).
    pub first_down_s: Option<f64>,
    /// The first node marked Out, or the drain (s): the copy starts.
    pub work_s: Option<f64>,
    /// Full redundancy, for good (s).
    pub redundant_s: Option<f64>,
    /// The model's input.
    pub work: Option<Work>,
    /// The model's answer.
    pub model: Option<Prediction>,
    /// `redundant_s − fault_s`.
    pub fault_to_redundant_s: Option<f64>,
    /// `redundant_s − work_s`.
    pub copy_s: Option<f64>,
    /// `fault_to_redundant_s / model.total_s`.
    pub redundancy_time_vs_model: Option<f64>,
    /// `copy_s / model.copy_s`.
    pub copy_time_vs_model: Option<f64>,
    /// Over the copy (first Out or drain → redundant): the mean moves in
    /// flight over `max_moves` (slots kept busy; a finished move's slot
    /// waits for the next tick).
    pub slot_occupancy: Option<f64>,
    /// Over the copy: mean sending nodes over mean moves in flight (below
    /// 1 when two moves share a source: the checker takes the least busy
    /// live replica, and both may already be sending).
    pub senders_per_move: Option<f64>,
    /// Over the copy: the mean cluster-wide recovery bytes/s.
    pub mean_copy_bytes_per_sec: Option<f64>,
    /// Moves started, finished, cancelled.
    pub moves: (u64, u64, u64),
    /// Most moves in flight at once.
    pub max_moves_in_flight: u32,
    /// Nodes marked Out.
    pub nodes_marked_out: usize,
    /// Nodes a guard held from Out, by guard.
    pub held: Vec<(String, usize)>,
    /// Priority inversions (ticks).
    pub inversions: u64,
    /// 1-left partitions that waited behind a 2-left move because their
    /// only live replica was already sending its share.
    pub one_left_source_busy: u64,
    /// When partitions were at k live replicas: (k, first s, last s + 1).
    pub left_windows: Vec<(usize, u64, u64)>,
    /// Most under-replicated partitions at once.
    pub max_under_replicated: u32,
    /// Under-replicated at the end.
    pub under_replicated_at_end: u32,
    /// Most partitions with no live replica at once.
    pub max_unrecoverable: u32,
    /// Replicas placement moved at joins, and their bytes.
    pub join_reassigned: (u64, u64),
    /// The slowest `AddNode` apply (ms).
    pub join_apply_ms_max: Option<f64>,
    /// The checker's cost per tick.
    pub checker_cost: Cost,
    /// The detector's cost per tick.
    pub detector_cost: Cost,
    /// Committing a tick's commands.
    pub apply_cost: Cost,
    /// Building the starting map (ms).
    pub setup_ms: f64,
    /// The simulation (s).
    pub wall_s: f64,
}

impl SimFigures {
    /// The figures of `run` of `s` with `settings`.
    pub fn of(s: &SimScenario, settings: &RecoverySettings, run: &Run, sizes_total: u64) -> Self {
        let nodes = s.nodes();
        let rate = settings.bytes_per_sec as f64;
        let burst = settings.bytes_burst as f64;
        let mut f = Self {
            nodes,
            partitions: s.cluster.partitions,
            stored_bytes: sizes_total * u64::from(s.cluster.replicas),
            cluster_bound: f64::from(settings.max_moves).min(nodes as f64) * rate,
            receive_bound: f64::from(settings.max_moves_per_node) * (rate + burst),
            send_bound: rate + burst,
            bytes_sent: run.rows.iter().map(|r| r.bytes).sum(),
            moves: (run.moves_started, run.moves_finished, run.moves_cancelled),
            max_moves_in_flight: run.rows.iter().map(|r| r.moves).max().unwrap_or(0),
            nodes_marked_out: run.nodes_marked_out.len(),
            inversions: run.inversions,
            one_left_source_busy: run.one_left_source_busy,
            left_windows: run
                .left_windows
                .iter()
                .map(|(k, (a, b))| (*k, *a, *b))
                .collect(),
            max_under_replicated: run
                .rows
                .iter()
                .map(|r| r.under_replicated)
                .max()
                .unwrap_or(0),
            under_replicated_at_end: run.rows.last().map_or(0, |r| r.under_replicated),
            max_unrecoverable: run.rows.iter().map(|r| r.unrecoverable).max().unwrap_or(0),
            join_reassigned: run.join_reassigned,
            join_apply_ms_max: run.join_apply_ms.iter().copied().reduce(f64::max),
            checker_cost: run.checker_cost.clone(),
            detector_cost: run.detector_cost.clone(),
            apply_cost: run.apply_cost.clone(),
            setup_ms: run.setup_ms,
            wall_s: run.wall_s,
            ..Self::default()
        };
        if let Some(peak) = run
            .rows
            .iter()
            .max_by_key(|r| (r.bytes, std::cmp::Reverse(r.t)))
        {
            f.peak_cluster_bytes = peak.bytes;
            f.peak_cluster_t = peak.t;
        }
        f.peak_node_receive = run.nodes.iter().map(|n| n.peak_receive).max().unwrap_or(0);
        f.peak_node_send = run.nodes.iter().map(|n| n.peak_send).max().unwrap_or(0);
        f.cluster_vs_bound = f.peak_cluster_bytes as f64 / f.cluster_bound;
        f.node_receive_vs_bound = f.peak_node_receive as f64 / f.receive_bound;
        f.node_send_vs_bound = f.peak_node_send as f64 / f.send_bound;
        let mut held: Vec<(String, usize)> = Vec::new();
        for guard in run.held.values() {
            match held.iter_mut().find(|(g, _)| g == guard) {
                Some((_, n)) => *n += 1,
                None => held.push((guard.clone(), 1)),
            }
        }
        f.held = held;
        f.times(s, settings, run);
        f
    }

    /// When the work started and ended, against the model.
    fn times(&mut self, s: &SimScenario, settings: &RecoverySettings, run: &Run) {
        let first = |kind: &str| run.events.iter().find(|e| e.kind == kind).map(|e| e.t_s);
        self.fault_s = run
            .events
            .iter()
            .find(|e| {
                [
                    EventKind::NodeLoss,
                    EventKind::RackLoss,
                    EventKind::ZoneLoss,
                    EventKind::Flap,
                    EventKind::Drain,
                ]
                .iter()
                .any(|k| k.name() == e.kind)
            })
            .map(|e| e.t_s);
        self.first_down_s = first("down");
        self.work_s = run.work_ms.map(|ms| ms as f64 / 1000.0);
        self.redundant_s = first("redundant");
        self.fault_to_redundant_s = self.redundant_s.zip(self.fault_s).map(|(r, f)| r - f);
        self.copy_s = self.redundant_s.zip(self.work_s).map(|(r, w)| r - w);
        if let (Some(work), Some(end)) = (self.work_s, self.redundant_s) {
            let copy: Vec<_> = run
                .rows
                .iter()
                .filter(|r| (r.t as f64) >= work && (r.t as f64) < end)
                .collect();
            if !copy.is_empty() {
                let n = copy.len() as f64;
                let moves = copy.iter().map(|r| f64::from(r.moves)).sum::<f64>() / n;
                let senders = copy.iter().map(|r| f64::from(r.senders)).sum::<f64>() / n;
                let bytes = copy.iter().map(|r| r.bytes as f64).sum::<f64>() / n;
                self.slot_occupancy = Some(moves / f64::from(settings.max_moves.max(1)));
                self.senders_per_move = (moves > 0.0).then(|| senders / moves);
                self.mean_copy_bytes_per_sec = Some(bytes);
            }
        }
        let (Some(rate), Some(fault), Some(work)) = (run.model_rate, self.fault_s, self.work_s)
        else {
            return;
        };
        let overhead_s = SETTLE.as_secs_f64() + s.heartbeat_ms as f64 / 2000.0;
        let model = Work {
            delay_s: work_delay(settings, fault, work),
            moves: run.moves_finished,
            bytes: run.bytes_finished,
            largest: run.largest_copied,
            rate,
            slowest_rate: run.slowest_rate.unwrap_or(rate),
            max_moves: settings.max_moves,
            moves_per_sec: settings.moves_per_sec,
            moves_burst: settings.moves_burst,
            overhead_s,
            fixed_sender_s: fixed_sender_s(&run.fixed_senders, overhead_s, settings),
        };
        self.work = Some(model);
        self.model = model.predict();
        if let Some(p) = self.model {
            self.redundancy_time_vs_model = self.fault_to_redundant_s.map(|t| t / p.total_s);
            self.copy_time_vs_model = self.copy_s.map(|t| t / p.copy_s);
        }
    }

    /// The figure a metric bounds.
    pub fn value(&self, metric: SimMetric) -> Option<f64> {
        match metric {
            SimMetric::ClusterRateVsBound => Some(self.cluster_vs_bound),
            SimMetric::NodeIngestVsBound => Some(self.node_receive_vs_bound),
            SimMetric::NodeSendVsBound => Some(self.node_send_vs_bound),
            SimMetric::RedundancyTimeVsModel => self.redundancy_time_vs_model,
            SimMetric::CopyTimeVsModel => self.copy_time_vs_model,
            SimMetric::MovesStarted => Some(self.moves.0 as f64),
            SimMetric::NodesMarkedOut => Some(self.nodes_marked_out as f64),
            SimMetric::PriorityInversions => Some(self.inversions as f64),
            SimMetric::UnderReplicatedAtEnd => Some(f64::from(self.under_replicated_at_end)),
            SimMetric::Unrecoverable => Some(f64::from(self.max_unrecoverable)),
            SimMetric::WallS => Some(self.wall_s),
            SimMetric::CheckerP99Ms => Some(self.checker_cost.p99_us as f64 / 1000.0),
        }
    }
}

/// The longest any drained node takes to send what it holds (bytes,
/// partitions, rate) as its copies' only source: its bytes at its rate,
/// plus each copy's overhead over its `max_moves_per_node` slots. Pure.
fn fixed_sender_s(
    senders: &[(u64, u64, f64)],
    overhead_s: f64,
    settings: &RecoverySettings,
) -> f64 {
    let slots = f64::from(settings.max_moves_per_node.max(1));
    senders
        .iter()
        .filter(|(_, _, rate)| rate.is_finite() && *rate > 0.0)
        .map(|(bytes, partitions, rate)| {
            *bytes as f64 / rate + *partitions as f64 * overhead_s / slots
        })
        .fold(0.0, f64::max)
}

/// The model's delay before copying: `down_out_interval` after a loss
/// (the detector's), none when the work is a drain (it starts at once).
fn work_delay(settings: &RecoverySettings, fault_s: f64, work_s: f64) -> f64 {
    let interval = settings.down_out_interval_ms as f64 / 1000.0;
    if work_s - fault_s >= interval / 2.0 {
        interval
    } else {
        0.0
    }
}

/// The scenario's targets against the figures.
pub fn evaluate(targets: &[SimTarget], f: &SimFigures) -> Vec<Verdict> {
    targets
        .iter()
        .map(|t| {
            Verdict::of(
                None,
                bounded(t.metric.name(), t.min, t.max, |v| t.metric.show(v)),
                f.value(t.metric),
                (t.min, t.max),
                |v| t.metric.show(v),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::record::{NodeTotals, SimEventRecord, SimSecond};

    const TEXT: &str = "duration_s = 100\n[cluster]\nzones = 3\nracks_per_zone = 1\nnodes_per_rack = 2\npartitions = 8\n\
        partition_size = { dist = \"fixed\", mib = 64 }\nnet_mib_per_sec = 100\ndisk_mib_per_sec = 100\n\
        [recovery]\n\"recovery.bytes_per_sec\" = 1048576\n\"recovery.bytes_burst\" = 262144\n\
        \"recovery.max_moves\" = 4\ndown_out_interval = 20000\n";

    fn scenario() -> SimScenario {
        SimScenario::parse(TEXT).unwrap()
    }

    fn event(t_s: f64, kind: &str) -> SimEventRecord {
        SimEventRecord {
            t_s,
            kind: kind.to_owned(),
            nodes: vec![1],
            detail: String::new(),
        }
    }

    fn run() -> Run {
        let row = |t: u64, bytes: u64, under: u32| SimSecond {
            t,
            bytes,
            under_replicated: under,
            ..SimSecond::default()
        };
        Run {
            rows: vec![row(0, 0, 0), row(1, 5 << 20, 3), row(2, 2 << 20, 0)],
            events: vec![
                event(10.0, "node_loss"),
                event(20.0, "down"),
                event(30.5, "out"),
                event(70.0, "redundant"),
            ],
            nodes: vec![NodeTotals {
                id: 1,
                peak_send: 1 << 20,
                peak_receive: 3 << 20,
                ..NodeTotals::default()
            }],
            moves_finished: 4,
            bytes_finished: 4 * (64 << 20),
            largest_copied: 64 << 20,
            model_rate: Some((1u64 << 20) as f64),
            work_ms: Some(30_500),
            ..Run::default()
        }
    }

    #[test]
    fn peaks_are_measured_against_the_configured_bounds() {
        let s = scenario();
        let settings = s.recovery_settings().unwrap();
        let f = SimFigures::of(&s, &settings, &run(), 8 << 26);
        // 4 slots (max_moves, fewer than the 6 nodes) at 1 MiB/s.
        assert_eq!(f.cluster_bound, (4u64 << 20) as f64);
        assert_eq!((f.peak_cluster_bytes, f.peak_cluster_t), (5 << 20, 1));
        assert!((f.cluster_vs_bound - 1.25).abs() < 1e-9);
        // 2 incoming moves × (1 MiB/s + 256 KiB).
        assert!((f.node_receive_vs_bound - 3.0 / 2.5).abs() < 1e-9);
        assert!((f.node_send_vs_bound - 0.8).abs() < 1e-9);
        assert_eq!(f.under_replicated_at_end, 0);
    }

    #[test]
    fn times_are_measured_against_the_model() {
        let s = scenario();
        let settings = s.recovery_settings().unwrap();
        let f = SimFigures::of(&s, &settings, &run(), 8 << 26);
        assert_eq!(
            (f.fault_s, f.work_s, f.redundant_s),
            (Some(10.0), Some(30.5), Some(70.0))
        );
        let model = f.model.unwrap();
        // 4 moves of 64 s + 1.5 s overhead in 4 slots: 65.5 s, after a
        // 20 s delay.
        assert_eq!(model.bound, "slots");
        assert!((model.copy_s - 65.5).abs() < 1e-9, "{model:?}");
        assert!((model.total_s - 85.5).abs() < 1e-9);
        assert!((f.copy_time_vs_model.unwrap() - 39.5 / 65.5).abs() < 1e-9);
        assert!((f.redundancy_time_vs_model.unwrap() - 60.0 / 85.5).abs() < 1e-9);
    }

    #[test]
    fn targets_are_met_or_missed_with_their_figures() {
        let s = SimScenario::parse(&format!(
            "{TEXT}\n[[targets]]\nmetric = \"cluster_rate_vs_bound\"\nmax = 1.05\n[[targets]]\nmetric = \"moves_started\"\nmax = 0\n[[targets]]\nmetric = \"copy_time_vs_model\"\nmax = 1.1\n"
        ))
        .unwrap();
        let settings = s.recovery_settings().unwrap();
        let mut r = run();
        r.moves_started = 4;
        let f = SimFigures::of(&s, &settings, &r, 0);
        let got: Vec<_> = evaluate(&s.targets, &f)
            .into_iter()
            .map(|v| (v.target, v.shown, v.met))
            .collect();
        assert_eq!(
            got[0],
            (
                "peak cluster recovery bytes/s / cluster bound ≤ ×1.050".to_owned(),
                "×1.250".to_owned(),
                Some(false)
            )
        );
        assert_eq!(got[1].2, Some(false));
        assert_eq!(got[2].2, Some(true));
    }

    #[test]
    fn a_drained_node_sends_all_it_holds_through_its_own_slots() {
        let settings = RecoverySettings {
            max_moves_per_node: 2,
            ..RecoverySettings::default()
        };
        // 100 GiB in 100 partitions at 50 MiB/s, 1.5 s per copy over 2
        // slots; the other node holds less; a node without a rate is left out.
        let gib = (1u64 << 30) as f64;
        let senders = [
            (100 << 30, 100, 50.0 * (1 << 20) as f64),
            (10 << 30, 10, 50.0 * (1 << 20) as f64),
            (500 << 30, 500, 0.0),
        ];
        let t = fixed_sender_s(&senders, 1.5, &settings);
        let expected = 100.0 * gib / (50.0 * (1 << 20) as f64) + 100.0 * 1.5 / 2.0;
        assert!((t - expected).abs() < 1e-6, "{t} against {expected}");
        assert_eq!(fixed_sender_s(&[], 1.5, &settings), 0.0);
    }
}
