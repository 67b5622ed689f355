//! A node's view of the cluster, as `levee status` shows it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::NodeId;
use super::map::ClusterMap;

/// A node's role in Raft.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// The current leader.
    Leader,
    /// Votes in elections and commits.
    Voter,
    /// Receives the log but does not vote.
    Learner,
    /// Not in the Raft membership (removed, or not yet added).
    None,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Leader => "leader",
            Self::Voter => "voter",
            Self::Learner => "learner",
            Self::None => "-",
        })
    }
}

/// What a node tells the leader in each heartbeat: enough to route
/// recovery around busy nodes and to show its progress.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeReport {
    /// The reporting node.
    pub node: NodeId,
    /// The epoch it has settled at: its map's, or older while a write it
    /// coordinates with an older map is still in flight
    /// (`node/write_epochs.rs`). What a move's copy waits for.
    pub epoch: u64,
    /// Foreground saturation in thousandths (0 idle, 1000 at its limit):
    /// the admission controller's pressure signal.
    pub pressure_permille: u16,
    /// Bytes it has sent for recovery since it started.
    pub recovery_bytes_sent: u64,
    /// Bytes it has received for recovery since it started.
    pub recovery_bytes_received: u64,
    /// The copies it is receiving.
    pub transfers: Vec<TransferProgress>,
    /// Its TLS certificate, `None` on an `--insecure` node.
    pub cert: Option<CertReport>,
    /// Its build (`levee-node --version`), so a rolling upgrade is
    /// visible.
    pub version: String,
    /// Milliseconds since it started.
    pub uptime_ms: u64,
    /// Bytes its data directory takes on disk (data, hints, Raft log).
    pub data_bytes: u64,
    /// Bytes of hints it holds for nodes that missed writes.
    pub hints_pending_bytes: u64,
    /// Its adaptive concurrency limit (foreground requests at once).
    pub limit: u32,
    /// Requests it has answered since it started (every outcome): the
    /// difference of two reports is its rate.
    pub requests_total: u64,
    /// Requests it refused with `Overloaded` since it started.
    pub shed_total: u64,
    /// Partitions it holds that need a new replica and whose records take
    /// fewer than the checker's small-partition bytes: their moves need
    /// no move token (`recovery/checker.rs`). At most
    /// [`MAX_SMALL_REPORTED`]; partitions left out are treated as large.
    pub small_partitions: Vec<u32>,
}

/// Most partitions one report names as small: bounds the report and the
/// reads a node makes to find them (a node past it reports the rest in
/// later beats, as the moves of the first ones finish).
pub const MAX_SMALL_REPORTED: usize = 256;

/// The highest epoch every node that may coordinate (Up or Draining in
/// `map`) has reported settling at, from each one's latest report: every
/// write in flight and every write coordinated from now on uses a map at
/// least that new. 0 while one of them has not reported. Pure.
pub fn settled_epoch<'a>(
    map: &ClusterMap,
    reports: impl IntoIterator<Item = (NodeId, &'a NodeReport)>,
) -> u64 {
    let reports: BTreeMap<NodeId, u64> = reports.into_iter().map(|(id, r)| (id, r.epoch)).collect();
    map.nodes
        .values()
        .filter(|n| {
            matches!(
                n.state,
                super::map::NodeState::Up | super::map::NodeState::Draining
            )
        })
        .map(|n| reports.get(&n.id).copied().unwrap_or(0))
        .min()
        .unwrap_or(map.epoch)
}

/// A node's certificate, as it reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertReport {
    /// When the earlier of its own and its CA's certificates expires (ms
    /// since the epoch).
    pub not_after_ms: u64,
    /// Whether that is inside the node's warning window
    /// (`cert_warn_before_days`) or past.
    pub warn: bool,
}

/// One incoming copy, as its target reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferProgress {
    /// The partition.
    pub partition: u32,
    /// The replica it is copying from now.
    pub source: NodeId,
    /// Records copied so far.
    pub keys: u64,
    /// Bytes copied so far.
    pub bytes: u64,
}

/// What one node knows about the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The answering node.
    pub node_id: NodeId,
    /// The leader it follows, if any.
    pub leader: Option<NodeId>,
    /// Its Raft term.
    pub term: u64,
    /// Raft voters.
    pub voters: Vec<NodeId>,
    /// Raft learners.
    pub learners: Vec<NodeId>,
    /// Last log index it holds.
    pub last_log_index: Option<u64>,
    /// Last log index it applied to its map.
    pub last_applied: Option<u64>,
    /// On the leader: per member, the highest log index known to be
    /// replicated there. `None` elsewhere.
    pub replication: Option<BTreeMap<NodeId, Option<u64>>>,
    /// Its copy of the map.
    pub map: ClusterMap,
    /// The leader's recovery view (failure detector, moves, rates); only
    /// the leader has one, and a status asked of another node carries the
    /// leader's when it could be fetched.
    pub recovery: Option<RecoveryStatus>,
    /// The answering node's own report, as of the answer (what `levee
    /// endpoint status` shows per node).
    pub report: Option<NodeReport>,
}

/// The leader's view of failures and recovery, for `levee status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryStatus {
    /// When the view was taken (Unix ms, the leader's clock).
    pub at_ms: u64,
    /// Per node: ms since its last heartbeat reached the leader.
    pub silence_ms: BTreeMap<NodeId, u64>,
    /// Up nodes that missed heartbeats but are not Down yet.
    pub suspects: Vec<NodeId>,
    /// Nodes a guard keeps from being marked Out, and which guard.
    pub held: Vec<(NodeId, String)>,
    /// Latest report per node.
    pub reports: BTreeMap<NodeId, NodeReport>,
    /// Recovery bytes sent per second, cluster-wide, over the last few
    /// seconds.
    pub bytes_per_sec: u64,
    /// Partitions that need a move that has not started yet.
    pub waiting: u64,
    /// Partitions with no live replica to copy from.
    pub unrecoverable: Vec<u32>,
    /// Moves finished in the last minute.
    pub finished_last_min: u64,
    /// Seconds until every needed move is done, at the last minute's
    /// completion rate; `None` while nothing has finished yet.
    pub eta_s: Option<u64>,
}

impl ClusterStatus {
    /// The Raft role of a node, as this node sees it.
    pub fn role(&self, id: NodeId) -> Role {
        if self.leader == Some(id) {
            Role::Leader
        } else if self.voters.contains(&id) {
            Role::Voter
        } else if self.learners.contains(&id) {
            Role::Learner
        } else {
            Role::None
        }
    }

    /// Members whose log is more than `max_lag` entries behind the leader
    /// (only known on the leader).
    pub fn lagging(&self, max_lag: u64) -> Vec<NodeId> {
        let (Some(replication), Some(last)) = (&self.replication, self.last_log_index) else {
            return Vec::new();
        };
        replication
            .iter()
            .filter(|(_, matched)| matched.is_none_or(|m| last.saturating_sub(m) > max_lag))
            .map(|(id, _)| *id)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::map::{Command, NodeState};

    fn report(node: NodeId, epoch: u64) -> NodeReport {
        NodeReport {
            node,
            epoch,
            ..NodeReport::default()
        }
    }

    #[test]
    fn the_settled_epoch_is_the_lowest_any_live_coordinator_reported() {
        let mut map = crate::cluster::test_maps::map_with(4, 8);
        let reports = [report(1, 9), report(2, 7), report(3, 12), report(4, 8)];
        let of = |map: &ClusterMap, reports: &[NodeReport]| {
            settled_epoch(map, reports.iter().map(|r| (r.node, r)))
        };
        assert_eq!(of(&map, &reports), 7);
        // A node that coordinates nothing (Down, Out) does not hold it back.
        map.apply(&Command::SetNodeState {
            id: 2,
            state: NodeState::Down,
            at_ms: 1,
        });
        assert_eq!(of(&map, &reports), 8);
        // A live node that has not reported holds it at 0.
        assert_eq!(of(&map, &reports[..3]), 0);
    }
}
