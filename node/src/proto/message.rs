//! The messages carried in frames.
//!
//! Requests are split into client messages and (later) node-to-node
//! messages, so that a connection's identity can decide which it may send.

use serde::{Deserialize, Serialize};

use crate::cluster::map::{ClusterMap, Command, CommandResult, NodeSpec};
use crate::cluster::status::{ClusterStatus, NodeReport};
use crate::storage::Version;

/// A request and its envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestFrame {
    /// Chosen by the sender, unique among its in-flight requests on this
    /// connection; the response carries it back. 0 is reserved for
    /// connection-level errors.
    pub id: u64,
    /// Time the sender will wait for the answer. The receiver derives its
    /// deadline from it on arrival (a relative budget, because clocks
    /// differ between machines) and drops the work once it has passed.
    /// Must be at least 1.
    pub timeout_ms: u32,
    /// What is asked.
    pub request: Request,
}

/// Any request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Operations a client may ask of any node.
    Client(ClientRequest),
    /// Node-to-node messages (Raft, joins). With mutual TLS these will
    /// require a node certificate.
    Node(NodeRequest),
}

impl Request {
    /// The key the request is about, for the requests that name one.
    pub fn key(&self) -> Option<&[u8]> {
        match self {
            Request::Client(
                ClientRequest::Get { key, .. }
                | ClientRequest::Put { key, .. }
                | ClientRequest::Delete { key, .. }
                | ClientRequest::GetReplica { key },
            )
            | Request::Node(
                NodeRequest::Replicate { key, .. }
                | NodeRequest::ReadLocal { key, .. }
                | NodeRequest::PurgeTombstone { key, .. },
            ) => Some(key),
            _ => None,
        }
    }
}

/// Messages between nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeRequest {
    /// A Raft RPC, its openraft request encoded as the payload. The
    /// receiver checks that it belongs to `cluster_id` and is node
    /// `target`, so a node of another cluster, or a wiped node that came
    /// back at an old address, is never mistaken for a member.
    Raft {
        /// The sender's cluster.
        cluster_id: u64,
        /// The node the sender means to reach.
        target: u64,
        /// Which RPC.
        rpc: RaftRpc,
        /// bincode of the openraft request.
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
    },
    /// A new node asks to join; answered by the leader.
    Join(NodeSpec),
    /// A coordinator's write (or repair, or hint replay) to one replica:
    /// applied if newer. Answered [`Response::Written`].
    Replicate {
        /// The key's partition.
        partition: u32,
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// The write's version.
        version: Version,
        /// The value, or `None` for a tombstone.
        #[serde(with = "serde_bytes")]
        value: Option<Vec<u8>>,
    },
    /// A coordinator's read of one replica's record (tombstones included).
    /// Answered [`Response::Get`].
    ReadLocal {
        /// The key's partition.
        partition: u32,
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
    /// Tombstone collection: deletes the record of `key` if it is still
    /// the tombstone with exactly `version`. Answered
    /// [`Response::Written`] (`applied` = purged).
    PurgeTombstone {
        /// The key's partition.
        partition: u32,
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// The tombstone's version.
        version: Version,
    },
    /// Anti-entropy: per-bucket digests of a partition. Answered
    /// [`Response::Digest`].
    Digest {
        /// The partition.
        partition: u32,
        /// Number of hash buckets the partition is split into.
        buckets: u32,
    },
    /// Anti-entropy: the keys and versions in one bucket, in key order,
    /// after `after`, at most `limit`. Answered [`Response::Entries`].
    BucketEntries {
        /// The partition.
        partition: u32,
        /// Number of hash buckets.
        buckets: u32,
        /// The bucket.
        bucket: u32,
        /// Resume after this key.
        #[serde(with = "serde_bytes")]
        after: Option<Vec<u8>>,
        /// Most entries to return.
        limit: u32,
    },
    /// A node's heartbeat to the Raft leader, with its load and recovery
    /// progress. Answered [`Response::Ack`].
    Heartbeat(NodeReport),
    /// A cluster change a node needs (a finished move); answered by the
    /// leader with [`Response::Proposed`], by others with `NotLeader`.
    Propose(Command),
    /// Recovery transfer: the records of a partition in key order after
    /// `after`, about `max_bytes` of them (at least one). The sender paces
    /// its answers through its recovery byte budget. Answered
    /// [`Response::Range`].
    FetchRange {
        /// The partition.
        partition: u32,
        /// Resume after this key (`None`: from the start).
        #[serde(with = "serde_bytes")]
        after: Option<Vec<u8>>,
        /// About how many bytes of records to return.
        max_bytes: u32,
    },
    /// Asked of the leader by a move's target before it copies: the
    /// highest map epoch every node that may coordinate has reported
    /// applying in its heartbeats (`cluster::status::settled_epoch`).
    /// Answered [`Response::Settled`]; by a node that does not lead,
    /// `NotLeader`. Added last (protocol 4).
    Settled,
}

/// An operator's change to the cluster, sent by `levee admin`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminCommand {
    /// Move every replica off a node through the throttled recovery
    /// machinery, then mark it Removed.
    Drain {
        /// The node.
        node: u64,
    },
    /// Change a recovery setting (`noout` included).
    Set {
        /// The setting (see `cluster::map::RECOVERY_KEYS`).
        key: String,
        /// Its value.
        value: String,
    },
    /// Lift every quarantine (`levee admin quarantine clear`).
    ClearQuarantine,
}

/// One record of a recovery transfer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeRecord {
    /// The key.
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// Its version.
    pub version: Version,
    /// The value, or `None` for a tombstone.
    #[serde(with = "serde_bytes")]
    pub value: Option<Vec<u8>>,
}

/// A key and the version a replica holds for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyVersion {
    /// The key.
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// Its version.
    pub version: Version,
    /// Whether the record is a tombstone.
    pub tombstone: bool,
}

/// The Raft RPCs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RaftRpc {
    /// AppendEntries (also the heartbeat).
    AppendEntries,
    /// RequestVote.
    Vote,
    /// One chunk of a snapshot.
    InstallSnapshot,
}

/// Operations on keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientRequest {
    /// Liveness of the connection; answered with [`Response::Pong`].
    Ping,
    /// Reads a key through the read quorum of its partition.
    Get {
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// Epoch of the map the client routed by (0: none). Informational
        /// since protocol 5: the node routes by its own map, and its
        /// epoch comes back on every answer ([`ResponseFrame::epoch`]).
        epoch: u64,
    },
    /// Writes a value under a version chosen by the client. Retrying with
    /// the same version is harmless: it is applied at most once.
    Put {
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// The value.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        /// The write's version.
        version: Version,
        /// Epoch of the map the client routed by (0: none); informational
        /// since protocol 5, as for `Get`.
        epoch: u64,
    },
    /// Deletes a key by writing a tombstone with this version.
    Delete {
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// The tombstone's version.
        version: Version,
        /// Epoch of the map the client routed by (0: none); informational
        /// since protocol 5, as for `Get`.
        epoch: u64,
    },
    /// Reads this node's own copy of a key: no quorum, no repair. For
    /// operators checking what each replica holds.
    GetReplica {
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
    /// The node's copy of the cluster map.
    GetMap,
    /// The node's view of the cluster: map, leader, roles.
    Status,
    /// An operator's change, applied through the leader's Raft log.
    Admin(AdminCommand),
    /// One page of the live keys of a partition that start with `prefix`,
    /// in key order, from this node's own copy: not a quorum read, so it
    /// may miss a write that reached only the other replicas. Answered
    /// [`Response::Scanned`]. Added at the end of the enum, so every
    /// other request encodes as before (see `Response::Scanned`).
    Scan {
        /// The partition to read; this node must hold one of its replicas.
        partition: u32,
        /// Only keys starting with these bytes (empty: every key).
        #[serde(with = "serde_bytes")]
        prefix: Vec<u8>,
        /// Resume strictly after this key: the `next` of the previous
        /// page (`None`: from the start of the prefix).
        #[serde(with = "serde_bytes")]
        after: Option<Vec<u8>>,
        /// Most entries wanted; the node caps it (`limits::MAX_SCAN_ENTRIES`).
        limit: u32,
        /// Whether to return values too, or keys and versions only.
        values: bool,
        /// Epoch of the map the client routed by (0: none); informational
        /// since protocol 5, as for `Get`.
        epoch: u64,
    },
}

/// A response and its envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseFrame {
    /// The id of the request answered, or 0 for an error about the
    /// connection itself (the connection closes after it).
    pub id: u64,
    /// How busy the answering node is: its foreground requests, executing
    /// and waiting, as a percentage of its concurrency limit (100 = at the
    /// limit, above = queueing), saturating at 255. Clients rank replicas
    /// by it (with their own latency figures), so load moves away from a
    /// node before it has to shed; 0 when the node does not say.
    pub pressure: u8,
    /// The answering node's cluster map epoch (0 before it has one). A
    /// client whose map is older fetches the newer one (in the
    /// background); the request itself was served by the node's own map,
    /// so a map that changes several times a second during a recovery
    /// costs no request a second attempt. Added in protocol 5.
    pub epoch: u64,
    /// The answer.
    pub result: Result<Response, WireError>,
}

/// Successful answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Answer to [`ClientRequest::Ping`].
    Pong {
        /// The node's protocol version.
        protocol: u16,
    },
    /// Answer to a get: the stored record, tombstones included, or `None`
    /// if the key was never written.
    Get(Option<Found>),
    /// Answer to a put or delete.
    Written {
        /// `false` if the node already held this version or a newer one
        /// (a retried write lands here, and that is success).
        applied: bool,
        /// The version now stored for the key.
        version: Version,
    },
    /// Answer to [`ClientRequest::GetMap`].
    Map(Box<ClusterMap>),
    /// Answer to [`ClientRequest::Status`].
    Status(Box<ClusterStatus>),
    /// Answer to a Raft RPC: bincode of openraft's result.
    Raft(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Answer to [`NodeRequest::Digest`]: one hash per bucket.
    Digest(Vec<u64>),
    /// Answer to [`NodeRequest::BucketEntries`].
    Entries {
        /// Entries in key order.
        entries: Vec<KeyVersion>,
        /// Whether more follow after the last one.
        more: bool,
    },
    /// Answer to a heartbeat.
    Ack,
    /// Answer to [`NodeRequest::Propose`] or an admin command: what
    /// applying it did.
    Proposed(CommandResult),
    /// Answer to [`NodeRequest::FetchRange`].
    Range {
        /// Records in key order.
        records: Vec<RangeRecord>,
        /// Whether more follow after the last one.
        more: bool,
    },
    /// Answer to a join.
    Joined {
        /// The joining node's id.
        node_id: u64,
        /// The cluster's id.
        cluster_id: u64,
    },
    /// Answer to [`ClientRequest::Scan`]. Only a node that was asked a
    /// scan sends it, so a peer of the same protocol version that predates
    /// it never receives one.
    Scanned {
        /// Live records in key order (tombstones are skipped).
        entries: Vec<ScanEntry>,
        /// The cursor: ask again with `after = next` for the rest; `None`
        /// once the partition holds no more keys with the prefix. May be
        /// set with `entries` empty (a page of tombstones only).
        #[serde(with = "serde_bytes")]
        next: Option<Vec<u8>>,
    },
    /// Answer to [`NodeRequest::Settled`]: the epoch every live
    /// coordinator has applied, as the leader's heartbeats show it.
    Settled {
        /// The epoch (0 while a live node has not reported).
        epoch: u64,
    },
}

/// One live record of a scan page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanEntry {
    /// The key.
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// The version this replica holds.
    pub version: Version,
    /// The value, when the scan asked for values.
    #[serde(with = "serde_bytes")]
    pub value: Option<Vec<u8>>,
}

/// A stored record as returned by a get.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Found {
    /// Its version.
    pub version: Version,
    /// Its value; `None` when the key was deleted.
    #[serde(with = "serde_bytes")]
    pub value: Option<Vec<u8>>,
}

/// Errors a node answers with. Each message says what was wrong and, where
/// there is one, what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum WireError {
    /// A frame longer than the receiver accepts; the connection closes,
    /// since the rest of the frame cannot be skipped safely.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes (max_frame_bytes)")]
    FrameTooLarge {
        /// Announced length.
        len: u64,
        /// The limit.
        max: u32,
    },
    /// A frame whose payload is not a valid message (bad encoding, unknown
    /// message type, trailing bytes).
    #[error("malformed frame: {detail}")]
    Malformed {
        /// What the decoder said.
        detail: String,
    },
    /// A request without a timeout.
    #[error("request has no deadline: timeout_ms must be at least 1")]
    MissingDeadline,
    /// An empty key.
    #[error("key is empty; keys are 1 byte or more")]
    EmptyKey,
    /// A key over the limit.
    #[error("key is {len} bytes; the limit is {max} (max_key_bytes)")]
    KeyTooLarge {
        /// Key length.
        len: u64,
        /// The limit.
        max: u32,
    },
    /// A value over the limit.
    #[error(
        "value is {len} bytes; the limit is {max} (max_value_bytes); split large objects into blocks"
    )]
    ValueTooLarge {
        /// Value length.
        len: u64,
        /// The limit.
        max: u32,
    },
    /// The request's deadline passed before it could run; it was not
    /// executed.
    #[error("deadline exceeded before the request ran; it was not executed")]
    DeadlineExceeded,
    /// The node is too busy to serve the request in time. Retry after the
    /// hint, preferably on another replica.
    #[error("node overloaded; retry after {retry_after_ms} ms")]
    Overloaded {
        /// Suggested wait before retrying here.
        retry_after_ms: u32,
    },
    /// The write's version is too far in the future for this node.
    #[error(
        "version timestamp is {ahead_ms} ms ahead of the node's clock (limit {max_drift_ms} ms, max_clock_drift_ms); check clock synchronisation"
    )]
    ClockDrift {
        /// How far ahead.
        ahead_ms: u64,
        /// The limit.
        max_drift_ms: u64,
    },
    /// Storage failed (I/O error, or a record failed its checksum).
    #[error("storage error: {detail}")]
    Storage {
        /// What failed.
        detail: String,
    },
    /// The node is shutting down and takes no new requests; use another.
    #[error("node is shutting down; send the request to another node")]
    ShuttingDown,
    /// Only the Raft leader can do this; ask it instead.
    #[error("this node is not the cluster leader{}", leader_addr.as_ref().map(|a| format!("; the leader is {a}")).unwrap_or_else(|| "; no leader is known yet, retry shortly".into()))]
    NotLeader {
        /// The leader's id, if known.
        leader: Option<u64>,
        /// The leader's protocol address, if known.
        leader_addr: Option<String>,
    },
    /// The node cannot do this now (still starting, no cluster yet).
    #[error("unavailable: {detail}")]
    Unavailable {
        /// Why.
        detail: String,
    },
    /// The request was understood and refused; the message says why.
    #[error("refused: {detail}")]
    Refused {
        /// Why, and what to do.
        detail: String,
    },
    /// This node holds no replica of the key's partition; the client's map
    /// is out of date.
    #[error(
        "this node is not a replica of the key's partition (map epoch {epoch}); refresh the map"
    )]
    NotReplica {
        /// The node's map epoch.
        epoch: u64,
    },
    /// The client routed by an older map than the node's. Not sent by
    /// nodes since protocol 5 (the node serves the request with its own
    /// map and its epoch rides on the answer, [`ResponseFrame::epoch`]);
    /// kept so that clients still handle it.
    #[error("the client's map is older than this node's (epoch {epoch}); refresh the map")]
    StaleMap {
        /// The node's map epoch.
        epoch: u64,
    },
    /// Fewer replicas acknowledged than the quorum needs. For a write, the
    /// value may still be on the replicas that acked; retrying with the same
    /// version is safe.
    #[error("quorum not reached: {acked} of {needed} needed replicas answered ({replicas} in the set){}", if detail.is_empty() { String::new() } else { format!("; {detail}") })]
    QuorumFailed {
        /// Replicas that answered.
        acked: u32,
        /// Replicas needed.
        needed: u32,
        /// Replicas in the partition's set.
        replicas: u32,
        /// The first failure seen, if any.
        detail: String,
    },
    /// A replica read of a partition whose storage this node, just
    /// restarted, is still opening: ask another replica, or this one
    /// again in a moment (the open has started).
    #[error("the storage of partition {partition} is still opening after a restart")]
    PartitionOpening {
        /// The partition asked for.
        partition: u32,
    },
    /// The request's handling failed inside the node (a caught panic).
    /// The node is still serving; the incident id finds the log line.
    /// Not retried by the client on a third replica: a request that
    /// crashes two handlers would crash them all.
    #[error(
        "internal error on the node while handling this request (incident {incident}, in the node's log); the node is still serving"
    )]
    Internal {
        /// A short id that names the panic in the node's log.
        incident: String,
    },
    /// This request's shape (operation + key hash) crashed handlers and is
    /// refused on arrival, before any work, on every node.
    #[error(
        "request refused: its shape {shape} crashed node handlers and is quarantined for {} more (levee status shows it; levee admin quarantine clear lifts it)",
        minutes_and_seconds(*remaining_ms)
    )]
    Quarantined {
        /// `op/hash` of the refused shape.
        shape: String,
        /// Milliseconds until the quarantine expires.
        remaining_ms: u64,
    },
    /// The caller's certificate does not allow this request (a node-only
    /// message from a client certificate, say). Not retried: another node
    /// answers the same.
    #[error("permission denied: {detail}")]
    PermissionDenied {
        /// What was refused and what would allow it.
        detail: String,
    },
}

/// `1h 5m`, `12m 30s`, `45s`: a duration as an operator reads it.
fn minutes_and_seconds(ms: u64) -> String {
    let s = ms.div_ceil(1000);
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, min, sec) => format!("{min}m {sec}s"),
        (h, min, _) => format!("{h}h {min}m"),
    }
}

impl WireError {
    /// Whether sending the same request again (here or elsewhere) may
    /// succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::DeadlineExceeded
                | Self::Overloaded { .. }
                | Self::ShuttingDown
                | Self::NotLeader { .. }
                | Self::Unavailable { .. }
                | Self::NotReplica { .. }
                | Self::StaleMap { .. }
                | Self::QuorumFailed { .. }
                | Self::PartitionOpening { .. }
                // This node's clock is behind the request's version;
                // another coordinator's may not be (the retry carries the
                // same version, so it stays idempotent).
                | Self::ClockDrift { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_whose_clock_is_behind_sends_the_client_elsewhere() {
        let drift = WireError::ClockDrift {
            ahead_ms: 45_000,
            max_drift_ms: 30_000,
        };
        assert!(drift.is_retryable());
        assert!(!WireError::EmptyKey.is_retryable());
    }

    #[test]
    fn a_quarantine_says_how_long_it_lasts_in_words() {
        let refused = |remaining_ms| {
            WireError::Quarantined {
                shape: "put/00".into(),
                remaining_ms,
            }
            .to_string()
        };
        assert!(refused(3_598_989).contains("for 59m 59s more"));
        assert!(refused(3_600_000).contains("for 1h 0m more"));
        assert!(refused(1).contains("for 1s more"));
    }
}
