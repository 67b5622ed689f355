//! The cluster map: the replicated state machine's contents, and the pure
//! rules by which commands change it.
//!
//! Every node holds a copy; every change goes through Raft and increases
//! the epoch, so two copies with the same epoch are the same map and a
//! client or node can tell at a glance which of two maps is newer.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::placement::{self, Assignment, Candidate};
use super::types::NodeId;

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
    /// Changes a node's state.
    SetNodeState {
        /// The node.
        id: NodeId,
        /// Its new state.
        state: NodeState,
    },
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
    /// Applies a command. Pure and deterministic: every replica computes
    /// the same map from the same log.
    pub fn apply(&mut self, command: &Command) -> CommandResult {
        match command {
            Command::Init {
                cluster_id,
                partitions,
                settings,
                first,
            } => {
                if self.cluster_id != 0 {
                    return CommandResult::Rejected("cluster is already initialised".into());
                }
                *self = Self {
                    cluster_id: *cluster_id,
                    epoch: 0,
                    partitions: *partitions,
                    settings: *settings,
                    nodes: BTreeMap::new(),
                    assignment: Vec::new(),
                    next_node_id: 1,
                };
                self.add_node(first)
            }
            Command::AddNode(spec) => self.add_node(spec),
            Command::SetNodeState { id, state } => {
                let Some(node) = self.nodes.get_mut(id) else {
                    return CommandResult::Rejected(format!("no node {id} in the cluster"));
                };
                if node.state == *state {
                    return CommandResult::Applied { epoch: self.epoch };
                }
                node.state = *state;
                self.rebalance();
                self.bump()
            }
        }
    }

    fn add_node(&mut self, spec: &NodeSpec) -> CommandResult {
        let existing = self
            .nodes
            .values()
            .find(|n| n.spec.addr == spec.addr && n.state != NodeState::Removed);
        if let Some(node) = existing {
            if node.spec.join_token == spec.join_token {
                return CommandResult::NodeAdded {
                    id: node.id,
                    epoch: self.epoch,
                };
            }
            return CommandResult::Rejected(format!(
                "address {} already belongs to node {} of this cluster, and the joining node is not it \
                 (its data directory was probably wiped). Restart node {} with its original data \
                 directory, or join with a different address to become a new node",
                spec.addr, node.id, node.id
            ));
        }
        let id = self.next_node_id.max(1);
        self.next_node_id = id + 1;
        self.nodes.insert(
            id,
            NodeInfo {
                id,
                spec: spec.clone(),
                state: NodeState::Up,
            },
        );
        self.rebalance();
        self.epoch += 1;
        CommandResult::NodeAdded {
            id,
            epoch: self.epoch,
        }
    }

    fn bump(&mut self) -> CommandResult {
        self.epoch += 1;
        CommandResult::Applied { epoch: self.epoch }
    }

    /// Recomputes replica sets with placement, moving as little as
    /// possible.
    fn rebalance(&mut self) {
        let candidates: Vec<Candidate> = self
            .nodes
            .values()
            .filter(|n| n.state.holds_replicas())
            .map(|n| Candidate {
                id: n.id,
                zone: n.spec.zone.clone(),
                capacity: n.spec.capacity,
            })
            .collect();
        self.assignment = placement::place(
            &candidates,
            self.partitions,
            usize::from(self.settings.replicas),
            &self.assignment,
        );
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

    /// The node with this address, if any.
    pub fn node_by_addr(&self, addr: &str) -> Option<&NodeInfo> {
        self.nodes
            .values()
            .find(|n| n.spec.addr == addr && n.state != NodeState::Removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(addr: &str, zone: &str, token: u64) -> NodeSpec {
        NodeSpec {
            addr: addr.into(),
            admin: format!("{addr}-admin"),
            zone: zone.into(),
            capacity: 1,
            join_token: token,
        }
    }

    fn init() -> ClusterMap {
        let mut map = ClusterMap::default();
        let result = map.apply(&Command::Init {
            cluster_id: 42,
            partitions: 16,
            settings: Settings::default(),
            first: spec("a:1", "z1", 1),
        });
        assert_eq!(result, CommandResult::NodeAdded { id: 1, epoch: 1 });
        map
    }

    #[test]
    fn every_change_increases_the_epoch() {
        let mut map = init();
        let before = map.epoch;
        assert!(matches!(
            map.apply(&Command::AddNode(spec("b:1", "z2", 2))),
            CommandResult::NodeAdded { id: 2, .. }
        ));
        assert!(map.epoch > before);
        let before = map.epoch;
        map.apply(&Command::SetNodeState {
            id: 2,
            state: NodeState::Down,
        });
        assert!(map.epoch > before);
    }

    #[test]
    fn a_retried_join_gets_the_same_id_and_changes_nothing() {
        let mut map = init();
        let first = map.apply(&Command::AddNode(spec("b:1", "z2", 7)));
        let epoch = map.epoch;
        let again = map.apply(&Command::AddNode(spec("b:1", "z2", 7)));
        assert_eq!(first, again);
        assert_eq!(map.epoch, epoch);
    }

    #[test]
    fn a_wiped_node_reusing_an_address_is_refused_with_a_remedy() {
        let mut map = init();
        map.apply(&Command::AddNode(spec("b:1", "z2", 7)));
        let before = map.clone();
        let CommandResult::Rejected(message) = map.apply(&Command::AddNode(spec("b:1", "z2", 8)))
        else {
            panic!("a new token on a known address must be refused");
        };
        assert!(
            message.contains("node 2") && message.contains("different address"),
            "{message}"
        );
        assert_eq!(map, before);
    }

    #[test]
    fn ids_are_never_reused() {
        let mut map = init();
        map.apply(&Command::AddNode(spec("b:1", "z2", 2)));
        map.apply(&Command::SetNodeState {
            id: 2,
            state: NodeState::Removed,
        });
        let result = map.apply(&Command::AddNode(spec("b:1", "z2", 3)));
        assert!(
            matches!(result, CommandResult::NodeAdded { id: 3, .. }),
            "{result:?}"
        );
    }

    #[test]
    fn joining_nodes_get_partitions_and_replicas_reach_r() {
        let mut map = init();
        map.apply(&Command::AddNode(spec("b:1", "z2", 2)));
        map.apply(&Command::AddNode(spec("c:1", "z3", 3)));
        assert_eq!(map.assignment.len(), 16);
        assert!(map.assignment.iter().all(|set| set.len() == 3));
        assert_eq!(map.under_replicated(), 0);
        for id in 1..=3 {
            assert_eq!(map.partitions_held(id), 16);
        }
    }
}
