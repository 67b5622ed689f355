//! A node's view of the cluster, as `levee status` shows it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::map::ClusterMap;
use super::types::NodeId;

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
