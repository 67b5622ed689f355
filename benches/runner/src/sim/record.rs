//! What a simulation writes down as it goes: one row per simulated
//! second, what happened when, each node's totals, the cost of each
//! decision. Pure bookkeeping.

use levee_node::cluster::NodeId;
use levee_node::cluster::map::{ClusterMap, NodeState};
use serde::Serialize;

/// One simulated second.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SimSecond {
    /// The second (from 0).
    pub t: u64,
    /// Under-replicated partitions by live (Up) replicas left at the end
    /// of the second: `by_live[k]` have k left, for k < R.
    pub by_live: Vec<u32>,
    /// Their sum: partitions with fewer than R Up replicas.
    pub under_replicated: u32,
    /// Moves in flight in the map.
    pub moves: u32,
    /// Partitions the checker's last plan left waiting (bucket empty,
    /// caps reached, no source or target free).
    pub waiting: u32,
    /// Partitions with no live replica to copy from.
    pub unrecoverable: u32,
    /// Recovery bytes sent cluster-wide during the second.
    pub bytes: u64,
    /// Nodes that sent recovery bytes during the second.
    pub senders: u32,
    /// Nodes that received recovery bytes during the second.
    pub receivers: u32,
    /// The most any node sent during the second.
    pub max_send: u64,
    /// The most any node received during the second.
    pub max_receive: u64,
    /// The median of what the sending nodes sent.
    pub median_send: u64,
    /// Nodes Down in the map.
    pub down: u32,
    /// Nodes Out in the map.
    pub out: u32,
    /// Nodes Draining in the map.
    pub draining: u32,
    /// Nodes ripe for Out that a guard holds Down.
    pub held: u32,
}

impl SimSecond {
    /// The row of second `t` for `map`, with the byte counts of the second
    /// (`sent[id]`, `received[id]`).
    pub fn of(t: u64, map: &ClusterMap, states: &States, sent: &[u64], received: &[u64]) -> Self {
        let want = usize::from(map.settings.replicas);
        let mut by_live = vec![0u32; want];
        for set in &map.assignment {
            let live = set
                .iter()
                .filter(|n| states.get(**n) == Some(NodeState::Up))
                .count();
            if let Some(slot) = by_live.get_mut(live) {
                *slot += 1;
            }
        }
        let count = |state| map.nodes.values().filter(|n| n.state == state).count() as u32;
        let mut senders: Vec<u64> = sent.iter().copied().filter(|b| *b > 0).collect();
        senders.sort_unstable();
        Self {
            t,
            under_replicated: by_live.iter().sum(),
            by_live,
            moves: map.moves.len() as u32,
            bytes: sent.iter().sum(),
            senders: senders.len() as u32,
            receivers: received.iter().filter(|b| **b > 0).count() as u32,
            max_send: senders.last().copied().unwrap_or(0),
            max_receive: received.iter().copied().max().unwrap_or(0),
            median_send: senders.get(senders.len() / 2).copied().unwrap_or(0),
            down: count(NodeState::Down),
            out: count(NodeState::Out),
            draining: count(NodeState::Draining),
            ..Self::default()
        }
    }

    /// Partitions with this many live replicas left (0 past R − 1).
    pub fn left(&self, live: usize) -> u32 {
        self.by_live.get(live).copied().unwrap_or(0)
    }
}

/// Every node's state by id, for lookups in loops over all partitions
/// (the map's own `state_of` is a tree lookup).
#[derive(Debug, Default)]
pub struct States(Vec<Option<NodeState>>);

impl States {
    /// The states `map` holds now.
    pub fn of(map: &ClusterMap) -> Self {
        let top = map.nodes.keys().next_back().copied().unwrap_or(0) as usize;
        let mut states = vec![None; top + 1];
        for n in map.nodes.values() {
            states[n.id as usize] = Some(n.state);
        }
        Self(states)
    }

    /// A node's state.
    pub fn get(&self, id: NodeId) -> Option<NodeState> {
        self.0.get(id as usize).copied().flatten()
    }
}

/// Something that happened, for the reports and the plot.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimEventRecord {
    /// When (simulated s).
    pub t_s: f64,
    /// A scenario event (`node_loss`, `rack_loss`, `zone_loss`, `flap`,
    /// `back`, `drain`, `join`), a state the map gave nodes (`down`,
    /// `out`, `up`, `removed`), or `redundant` (from the rows: every
    /// partition has R Up replicas and no move is in flight, for good).
    pub kind: String,
    /// The nodes it happened to.
    pub nodes: Vec<NodeId>,
    /// Human detail.
    pub detail: String,
}

/// A node's part in the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NodeTotals {
    /// Its id.
    pub id: NodeId,
    /// Zone, 1-based.
    pub zone: u32,
    /// Rack, 1-based (joiners are in rack `racks_per_zone + 1`).
    pub rack: u32,
    /// Recovery bytes it sent.
    pub sent: u64,
    /// Recovery bytes it received.
    pub received: u64,
    /// The most it sent in one second.
    pub peak_send: u64,
    /// The most it received in one second.
    pub peak_receive: u64,
}

/// Wall-clock cost of one kind of decision, per leader tick (µs).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Cost {
    /// Ticks measured.
    pub ticks: usize,
    /// Mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Slowest.
    pub max_us: u64,
}

impl Cost {
    /// The summary of samples (µs).
    pub fn of(samples: &[u64]) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
        Self {
            ticks: sorted.len(),
            mean_us: sorted.iter().sum::<u64>() as f64 / sorted.len() as f64,
            p50_us: at(0.5),
            p99_us: at(0.99),
            max_us: at(1.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_summarise_their_samples() {
        let c = Cost::of(&(1..=100).collect::<Vec<u64>>());
        assert_eq!((c.ticks, c.p50_us, c.p99_us, c.max_us), (100, 51, 99, 100));
        assert!((c.mean_us - 50.5).abs() < 1e-9);
        assert_eq!(Cost::of(&[]), Cost::default());
    }
}
