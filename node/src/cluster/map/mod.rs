//! The cluster map: the replicated state machine's contents (this file:
//! the types and the read-only questions asked of them), the pure rules
//! by which commands change it ([`apply`]) and the recovery settings
//! operators change at run time ([`recovery_settings`]).
//!
//! Every node holds a copy; every change goes through Raft and increases
//! the epoch, so two copies with the same epoch are the same map and a
//! client or node can tell at a glance which of two maps is newer.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::NodeId;
use super::placement::Assignment;
use super::quarantine::{Quarantine, Shape};

mod apply;
mod recovery_settings;

pub use recovery_settings::{RECOVERY_KEYS, RecoverySettings, SettingValue};

/// A node's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeState {
    /// Serving.
    Up,
    /// Missed heartbeats for `down_after`: routing avoids it, nothing is
    /// copied yet (it is probably restarting).
    Down,
    /// Gone long enough that its replicas are being rebuilt elsewhere.
    Out,
    /// Being emptied by an operator; receives no new replicas.
    Draining,
    /// No longer part of the cluster.
    Removed,
}

impl NodeState {
    /// Whether placement may put replicas on a node in this state. Down
    /// nodes keep theirs: failures are usually transient, and moving data
    /// off a node that comes back a minute later is wasted work.
    pub fn holds_replicas(self) -> bool {
        matches!(self, Self::Up | Self::Down)
    }
}

impl std::fmt::Display for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Self::Up => "up",
            Self::Down => "down",
            Self::Out => "out",
            Self::Draining => "draining",
            Self::Removed => "removed",
        };
        f.write_str(s)
    }
}

/// What a node says about itself when it joins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSpec {
    /// Protocol address other nodes and clients use.
    pub addr: String,
    /// HTTP admin address.
    pub admin: String,
    /// Failure domain (rack, zone); replicas of a partition go to
    /// distinct zones while enough zones exist.
    pub zone: String,
    /// Relative weight for placement (e.g. disk size in GiB).
    pub capacity: u64,
    /// Random, chosen once per data directory. A retried join carries the
    /// same token and gets the same id back; a node whose data directory
    /// was wiped has a new token and is refused instead of being confused
    /// with its former self.
    pub join_token: u64,
}

/// A member of the cluster map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Node id.
    pub id: NodeId,
    /// What it said when it joined.
    pub spec: NodeSpec,
    /// Lifecycle state.
    pub state: NodeState,
    /// When the state last changed (Unix ms, the leader's clock when it
    /// proposed the change), so `levee status` can say how long a node has
    /// been down.
    pub since_ms: u64,
}

/// Replication settings, fixed at init and changeable through Raft later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// Replicas per partition (R).
    pub replicas: u8,
    /// Acks a write needs (W).
    pub write_quorum: u8,
    /// Replicas a read asks.
    pub read_quorum: u8,
    /// Raft voters wanted (1, 3 or 5); later nodes are learners.
    pub voters: u8,
}

impl Settings {
    /// R replicas with majority quorums for reads and writes.
    pub fn majority(replicas: u8, voters: u8) -> Self {
        let majority = replicas / 2 + 1;
        Self {
            replicas,
            write_quorum: majority,
            read_quorum: majority,
            voters,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self::majority(3, 3)
    }
}

/// One replica being rebuilt or relocated: `to` copies the partition from
/// a live replica, receiving live writes meanwhile, and replaces `from`
/// in the replica set when the copy is complete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    /// The replica being replaced (an Out, Draining or Removed node), or
    /// `None` when the set is short of R and the move only adds one.
    pub from: Option<NodeId>,
    /// The node receiving the copy.
    pub to: NodeId,
    /// The replica it copies from, chosen by the checker so that no node
    /// sends more than its share; the target falls back to another live
    /// replica if this one fails mid-copy.
    pub source: NodeId,
    /// When the leader started it (Unix ms).
    pub started_ms: u64,
}

/// The replicated cluster map.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMap {
    /// Random id fixed at init; every Raft message carries it so that a
    /// node of another cluster can never take part.
    pub cluster_id: u64,
    /// Increases with every change.
    pub epoch: u64,
    /// Partition count, fixed at init.
    pub partitions: u32,
    /// Replication settings.
    pub settings: Settings,
    /// Every node ever added, by id (removed ones stay, marked Removed, so
    /// ids are never reused).
    pub nodes: BTreeMap<NodeId, NodeInfo>,
    /// `assignment[p]`: the nodes holding partition `p`.
    pub assignment: Assignment,
    /// The id the next joining node gets.
    pub next_node_id: NodeId,
    /// Failure detection and re-replication settings, changeable at run
    /// time (`levee admin set`).
    pub recovery: RecoverySettings,
    /// Moves in flight, by partition (at most one per partition).
    pub moves: BTreeMap<u32, Move>,
    /// Request shapes that crashed handlers, and those refused for it.
    pub quarantine: Quarantine,
}

/// A change to the map, replicated through Raft.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Creates the map with its first node (id 1).
    Init {
        /// Random cluster id.
        cluster_id: u64,
        /// Partition count.
        partitions: u32,
        /// Replication settings.
        settings: Settings,
        /// The initialising node.
        first: NodeSpec,
    },
    /// Adds a node (or finds it again, for a retried join).
    AddNode(NodeSpec),
    /// Changes a node's state. Down and Out change no replica set (the
    /// replica checker moves data, throttled); Removed drops the node from
    /// every set at once.
    SetNodeState {
        /// The node.
        id: NodeId,
        /// Its new state.
        state: NodeState,
        /// The leader's clock (Unix ms).
        at_ms: u64,
    },
    /// Starts moves; each is skipped if its partition already has one or
    /// it no longer makes sense (the map changed since it was planned).
    StartMoves(Vec<(u32, Move)>),
    /// A move's copy is complete: `to` replaces `from` in the set.
    FinishMove {
        /// The partition.
        partition: u32,
        /// The node that copied it (must match the move in flight).
        to: NodeId,
    },
    /// Abandons moves (their target died, or the node they replace came
    /// back); the replica sets stay as they are.
    CancelMoves(Vec<u32>),
    /// Replaces every recovery setting (a new cluster's configured ones).
    SetRecoveryAll(RecoverySettings),
    /// Changes one recovery setting (`levee admin set KEY=VALUE`).
    SetRecovery {
        /// The setting's name (see [`RECOVERY_KEYS`]).
        key: String,
        /// Its new value, as the operator typed it.
        value: String,
    },
    /// A node caught a panic while handling a request of this shape
    /// (see [`crate::cluster::quarantine`]).
    Strike {
        /// The request's shape.
        shape: Shape,
        /// The node that caught it.
        node: NodeId,
        /// When, wall clock (ms).
        at_ms: u64,
    },
    /// Lifts every quarantine (`levee admin quarantine clear`).
    ClearQuarantine,
}

/// What applying a command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    /// Applied; the map is now at `epoch`.
    Applied {
        /// The new epoch.
        epoch: u64,
    },
    /// A node was added (or was already there with the same join token).
    NodeAdded {
        /// Its id.
        id: NodeId,
        /// The map's epoch after the command.
        epoch: u64,
    },
    /// Refused; the map is unchanged. The message says why and what to do.
    Rejected(String),
}

impl Default for CommandResult {
    fn default() -> Self {
        Self::Applied { epoch: 0 }
    }
}

impl ClusterMap {
    /// The nodes holding partition `p` (empty for an unknown partition).
    pub fn replicas(&self, partition: u32) -> &[NodeId] {
        self.assignment
            .get(partition as usize)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// Replicas of partition `p` on Up nodes.
    pub fn live_replicas(&self, partition: u32) -> usize {
        self.replicas(partition)
            .iter()
            .filter(|id| self.state_of(**id) == Some(NodeState::Up))
            .count()
    }

    /// A node's state, if it is in the map.
    pub fn state_of(&self, id: NodeId) -> Option<NodeState> {
        self.nodes.get(&id).map(|n| n.state)
    }

    /// The node receiving a copy of partition `p`, if a move is in flight:
    /// writes go to it too, so the copy misses nothing written meanwhile.
    pub fn incoming(&self, partition: u32) -> Option<NodeId> {
        self.moves.get(&partition).map(|m| m.to)
    }

    /// Number of partitions a node holds a replica of.
    pub fn partitions_held(&self, id: NodeId) -> usize {
        self.assignment
            .iter()
            .filter(|set| set.contains(&id))
            .count()
    }

    /// Partitions with fewer replicas than R.
    pub fn under_replicated(&self) -> usize {
        let want = usize::from(self.settings.replicas);
        self.assignment
            .iter()
            .filter(|set| {
                set.iter()
                    .filter(|id| self.nodes.get(id).is_some_and(|n| n.state == NodeState::Up))
                    .count()
                    < want
            })
            .count()
    }

    /// Under-replicated partitions grouped by how many live replicas they
    /// have left: `{1: 4, 2: 30}` means 4 partitions have one, 30 have two.
    pub fn under_replicated_by_live(&self) -> BTreeMap<usize, usize> {
        let want = usize::from(self.settings.replicas);
        let mut groups = BTreeMap::new();
        for p in 0..self.partitions {
            let live = self.live_replicas(p);
            if live < want {
                *groups.entry(live).or_insert(0) += 1;
            }
        }
        groups
    }

    /// The node with this address, if any.
    pub fn node_by_addr(&self, addr: &str) -> Option<&NodeInfo> {
        self.nodes
            .values()
            .find(|n| n.spec.addr == addr && n.state != NodeState::Removed)
    }
}
