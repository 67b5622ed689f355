//! openraft type configuration for levee's cluster metadata.

use std::io::Cursor;

use serde::{Deserialize, Serialize};

pub use crate::cluster::NodeId;
use crate::cluster::map::{Command, CommandResult};

/// What Raft needs to reach a member.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Protocol address (`HOST:PORT`), also used for Raft RPCs.
    pub addr: String,
    /// HTTP admin address.
    pub admin: String,
}

openraft::declare_raft_types!(
    /// levee's Raft types: commands change the cluster map.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = NodeId,
        Node = Member,
        SnapshotData = Cursor<Vec<u8>>,
);

/// The Raft instance.
pub type Raft = openraft::Raft<TypeConfig>;
/// A log entry.
pub type Entry = openraft::Entry<TypeConfig>;
/// A storage error.
pub type StorageError = openraft::StorageError<NodeId>;
/// A log id.
pub type LogId = openraft::LogId<NodeId>;
/// The membership as stored with the state machine.
pub type StoredMembership = openraft::StoredMembership<NodeId, Member>;
/// A snapshot's metadata.
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Member>;
