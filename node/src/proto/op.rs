//! Which class each request belongs to, and the operation name used in
//! metrics.

use crate::proto::{ClientRequest, NodeRequest, Request};

/// How a request competes for the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Raft, joins, pings, map and status fetches: never shed, with their
    /// own small budget, so client load can neither get this node declared
    /// dead nor cost it its leadership.
    Control,
    /// Client and replica reads and writes: capped by the adaptive limit.
    Foreground,
    /// Anti-entropy and tombstone collection: served only while foreground
    /// leaves room.
    Background,
}

impl Class {
    /// Every class, in metrics order.
    pub const ALL: [Class; 3] = [Class::Control, Class::Foreground, Class::Background];

    /// The label used in metrics.
    pub fn name(self) -> &'static str {
        match self {
            Class::Control => "control",
            Class::Foreground => "foreground",
            Class::Background => "background",
        }
    }

    /// Position in [`Class::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A request's operation, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `ClientRequest::Ping`.
    Ping,
    /// `ClientRequest::Get`.
    Get,
    /// `ClientRequest::Put`.
    Put,
    /// `ClientRequest::Delete`.
    Delete,
    /// `ClientRequest::GetReplica`.
    GetReplica,
    /// `ClientRequest::GetMap`.
    GetMap,
    /// `ClientRequest::Status`.
    Status,
    /// `NodeRequest::Raft`.
    Raft,
    /// `NodeRequest::Join`.
    Join,
    /// `NodeRequest::Replicate`.
    Replicate,
    /// `NodeRequest::ReadLocal`.
    ReadLocal,
    /// `NodeRequest::PurgeTombstone`.
    PurgeTombstone,
    /// `NodeRequest::Digest`.
    Digest,
    /// `NodeRequest::BucketEntries`.
    BucketEntries,
    /// `ClientRequest::Admin`.
    Admin,
    /// `NodeRequest::Heartbeat`.
    Heartbeat,
    /// `NodeRequest::Propose`.
    Propose,
    /// `NodeRequest::FetchRange`.
    FetchRange,
    /// `ClientRequest::Scan`.
    Scan,
    /// `NodeRequest::Settled`.
    Settled,
}

impl Op {
    /// Every operation, in metrics order.
    pub const ALL: [Op; 20] = [
        Op::Ping,
        Op::Get,
        Op::Put,
        Op::Delete,
        Op::GetReplica,
        Op::GetMap,
        Op::Status,
        Op::Raft,
        Op::Join,
        Op::Replicate,
        Op::ReadLocal,
        Op::PurgeTombstone,
        Op::Digest,
        Op::BucketEntries,
        Op::Admin,
        Op::Heartbeat,
        Op::Propose,
        Op::FetchRange,
        Op::Scan,
        Op::Settled,
    ];

    /// The operation of a request.
    pub fn of(request: &Request) -> Op {
        match request {
            Request::Client(c) => match c {
                ClientRequest::Ping => Op::Ping,
                ClientRequest::Get { .. } => Op::Get,
                ClientRequest::Put { .. } => Op::Put,
                ClientRequest::Delete { .. } => Op::Delete,
                ClientRequest::GetReplica { .. } => Op::GetReplica,
                ClientRequest::GetMap => Op::GetMap,
                ClientRequest::Status => Op::Status,
                ClientRequest::Admin(_) => Op::Admin,
                ClientRequest::Scan { .. } => Op::Scan,
            },
            Request::Node(n) => match n {
                NodeRequest::Raft { .. } => Op::Raft,
                NodeRequest::Join(_) => Op::Join,
                NodeRequest::Replicate { .. } => Op::Replicate,
                NodeRequest::ReadLocal { .. } => Op::ReadLocal,
                NodeRequest::PurgeTombstone { .. } => Op::PurgeTombstone,
                NodeRequest::Digest { .. } => Op::Digest,
                NodeRequest::BucketEntries { .. } => Op::BucketEntries,
                NodeRequest::Heartbeat(_) => Op::Heartbeat,
                NodeRequest::Propose(_) => Op::Propose,
                NodeRequest::FetchRange { .. } => Op::FetchRange,
                NodeRequest::Settled => Op::Settled,
            },
        }
    }

    /// Whether the operation is part of a request another node already
    /// admitted (a coordinator's fan-out), which admission favours.
    pub fn in_progress(self) -> bool {
        matches!(self, Op::Replicate | Op::ReadLocal)
    }

    /// The class the operation belongs to.
    pub fn class(self) -> Class {
        match self {
            // Heartbeats are control: an overloaded node that could not
            // send them would be declared down for being busy.
            Op::Ping
            | Op::GetMap
            | Op::Status
            | Op::Raft
            | Op::Join
            | Op::Admin
            | Op::Heartbeat
            | Op::Propose
            | Op::Settled => Class::Control,
            Op::Get | Op::Put | Op::Delete | Op::GetReplica | Op::Replicate | Op::ReadLocal => {
                Class::Foreground
            }
            // A scan page reads up to a MiB of a partition for an
            // operator's listing or export, which can wait; as foreground
            // it would take the slots of the applications' gets and puts.
            // Refused as background, it gets `Overloaded` and the client
            // tries another replica or backs off.
            Op::PurgeTombstone | Op::Digest | Op::BucketEntries | Op::FetchRange | Op::Scan => {
                Class::Background
            }
        }
    }

    /// The label used in metrics.
    pub fn name(self) -> &'static str {
        match self {
            Op::Ping => "ping",
            Op::Get => "get",
            Op::Put => "put",
            Op::Delete => "delete",
            Op::GetReplica => "get_replica",
            Op::GetMap => "get_map",
            Op::Status => "status",
            Op::Raft => "raft",
            Op::Join => "join",
            Op::Replicate => "replicate",
            Op::ReadLocal => "read_local",
            Op::PurgeTombstone => "purge_tombstone",
            Op::Digest => "digest",
            Op::BucketEntries => "bucket_entries",
            Op::Admin => "admin",
            Op::Heartbeat => "heartbeat",
            Op::Propose => "propose",
            Op::FetchRange => "fetch_range",
            Op::Scan => "scan",
            Op::Settled => "settled",
        }
    }

    /// Position in [`Op::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raft_and_health_are_control_and_anti_entropy_is_background() {
        let digest = Request::Node(NodeRequest::Digest {
            partition: 0,
            buckets: 64,
        });
        assert_eq!(Op::of(&digest).class(), Class::Background);
        assert_eq!(Op::Raft.class(), Class::Control);
        assert_eq!(Op::Join.class(), Class::Control);
        assert_eq!(Op::Replicate.class(), Class::Foreground);
        assert_eq!(
            Op::of(&Request::Client(ClientRequest::Ping)).class(),
            Class::Control
        );
        assert_eq!(
            Op::of(&Request::Client(ClientRequest::Status)).class(),
            Class::Control
        );
    }

    #[test]
    fn a_scan_yields_to_the_applications_reads_and_writes() {
        let scan = Request::Client(ClientRequest::Scan {
            partition: 0,
            prefix: Vec::new(),
            after: None,
            limit: 10,
            values: true,
            epoch: 0,
        });
        assert_eq!(Op::of(&scan), Op::Scan);
        assert_eq!(Op::of(&scan).class(), Class::Background);
    }

    #[test]
    fn the_tables_agree_with_the_indices() {
        for (i, op) in Op::ALL.iter().enumerate() {
            assert_eq!(op.index(), i);
        }
        for (i, class) in Class::ALL.iter().enumerate() {
            assert_eq!(class.index(), i);
        }
    }
}
