//! The cluster's model: what Raft replicates and the pure decisions made
//! on it. No I/O happens in here.
//!
//! Raft holds decisions, never data blocks: membership, node states, where
//! each partition lives and the replication settings, all in the
//! [`map::ClusterMap`] and changed only by its pure `apply(Command)`.
//! [`placement`] decides where partitions live, [`voters`] which members
//! vote, [`quarantine`] which requests are refused for crashing handlers, and [`status`] is the view of the cluster that nodes report and
//! `levee status` shows. The running Raft group that replicates the map is
//! [`crate::raft`], a floor above: everything here is usable (and tested)
//! without a network, a disk or a clock.

pub mod map;
pub mod placement;
pub mod quarantine;
pub mod status;
pub mod voters;

#[cfg(test)]
pub(crate) mod test_maps;

/// A node's id in the cluster; 1 is the node that initialised it.
pub type NodeId = u64;
