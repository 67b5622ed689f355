//! The starting corpus of every fuzz target: realistic inputs made by the
//! node's own encoders, so the fuzzer starts from what the node really
//! reads and mutates outward from there.
//!
//! The map is built with the cluster model's own commands (a 5-node,
//! 3-zone cluster in which a node goes down, out, has a partition moved
//! off it and is removed); the Raft entries are those commands; the state
//! and snapshot come from a real [`StateMachine`] that applied them; the
//! handshake replies are what `accept` wrote. `node/examples/fuzz_seeds.rs`
//! writes them under `fuzz/corpus/<target>/`.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context;
use openraft::error::{Fatal, InstallSnapshotError, RaftError, SnapshotMismatch};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{CommittedLeaderId, EntryPayload, Membership, SnapshotSegmentId, Vote};

use super::{FRAME_TIMEOUT, block_on};
use crate::cluster::map::{
    ClusterMap, Command, CommandResult, Move, NodeSpec, NodeState, Settings,
};
use crate::cluster::status::{
    CertReport, ClusterStatus, NodeReport, RecoveryStatus, TransferProgress,
};
use crate::config::Config;
use crate::hlc;
use crate::partition::partition_of;
use crate::proto::handshake;
use crate::proto::{
    AdminCommand, ClientRequest, Found, KeyVersion, NodeRequest, RaftRpc, RangeRecord, Request,
    RequestFrame, Response, ResponseFrame, ScanEntry, WireError, codec,
};
use crate::raft::identity::Identity;
use crate::raft::log_store;
use crate::raft::network::{AppendEntriesAnswer, InstallSnapshotAnswer, VoteAnswer};
use crate::raft::state_machine::{StateMachine, StoredSnapshot};
use crate::raft::types::{Entry, LogId, Member, TypeConfig};
use crate::storage::hints::{self, Hint};
use crate::storage::record;
use crate::storage::{Version, journal, layout};

/// One input of a target's starting corpus.
#[derive(Debug, Clone)]
pub struct Seed {
    /// The target (a name in [`super::TARGETS`]).
    pub target: &'static str,
    /// Its file name in the target's corpus directory.
    pub name: String,
    /// The input.
    pub bytes: Vec<u8>,
}

#[derive(Default)]
struct Seeds(Vec<Seed>);

impl Seeds {
    fn add(&mut self, target: &'static str, name: impl Into<String>, bytes: Vec<u8>) {
        self.0.push(Seed {
            target,
            name: name.into(),
            bytes,
        });
    }

    /// A Raft value behind the byte that selects its decoder.
    fn add_selected(&mut self, target: &'static str, name: &str, selector: u8, value: Vec<u8>) {
        let mut bytes = vec![selector];
        bytes.extend(value);
        self.add(target, name, bytes);
    }
}

/// The leader of the seeds' cluster, its term and cluster id.
const LEADER: u64 = 1;
const TERM: u64 = 2;
const CLUSTER_ID: u64 = 0x5eed_c0de_1e7e_e001;
/// A wall clock in the cluster's life (Unix ms).
const NOW_MS: u64 = 1_767_225_600_000;
/// A client's random writer id.
const WRITER: u64 = 0x7f3a_91c2_44e0_1b5d;

/// Every seed of every target.
pub fn seeds() -> anyhow::Result<Vec<Seed>> {
    let mut seeds = Seeds::default();
    let (map, commands) = cluster_map();
    let entries = raft_entries(&commands);
    let (snapshot, stored_snapshot) = snapshot_of(&entries)?;

    handshake_seeds(&mut seeds)?;
    request_seeds(&mut seeds, &map, &commands, &entries, &snapshot)?;
    response_seeds(&mut seeds, &map, &entries)?;
    storage_seeds(&mut seeds, &map)?;
    raft_store_seeds(&mut seeds, &entries, &snapshot, &stored_snapshot)?;
    file_seeds(&mut seeds)?;
    Ok(seeds.0)
}

fn spec(id: u64, zone: &str) -> NodeSpec {
    NodeSpec {
        addr: format!("127.0.0.{id}:7400"),
        admin: format!("127.0.0.{id}:7401"),
        zone: zone.into(),
        capacity: 100,
        join_token: 0x9e37_79b9_7f4a_7c15 ^ id,
    }
}

/// A 5-node, 3-zone cluster's map and the commands that built it: node 5
/// goes down, then out; one of its partitions moves to another node; then
/// it is removed and an operator changes a recovery setting.
fn cluster_map() -> (ClusterMap, Vec<Command>) {
    let mut map = ClusterMap::default();
    let mut commands = Vec::new();
    let mut run = |map: &mut ClusterMap, command: Command| {
        map.apply(&command);
        commands.push(command);
    };
    run(
        &mut map,
        Command::Init {
            cluster_id: CLUSTER_ID,
            partitions: 64,
            settings: Settings::default(),
            first: spec(1, "z1"),
        },
    );
    for (id, zone) in [(2, "z2"), (3, "z3"), (4, "z1"), (5, "z2")] {
        run(&mut map, Command::AddNode(spec(id, zone)));
    }
    for (state, at_ms) in [
        (NodeState::Down, NOW_MS),
        (NodeState::Out, NOW_MS + 600_000),
    ] {
        run(
            &mut map,
            Command::SetNodeState {
                id: 5,
                state,
                at_ms,
            },
        );
    }
    // A move off node 5, chosen as the replica checker would: a node not
    // in the set as target, a live replica as source.
    let planned = (0..map.partitions).find_map(|p| {
        let set = map.replicas(p);
        let source = *set.iter().find(|id| **id != 5)?;
        let to = (1..=4).find(|id| !set.contains(id))?;
        set.contains(&5).then_some((p, to, source))
    });
    if let Some((partition, to, source)) = planned {
        let step = Move {
            from: Some(5),
            to,
            source,
            started_ms: NOW_MS + 601_000,
        };
        run(&mut map, Command::StartMoves(vec![(partition, step)]));
        run(&mut map, Command::FinishMove { partition, to });
        run(&mut map, Command::CancelMoves(vec![partition]));
    }
    run(
        &mut map,
        Command::SetNodeState {
            id: 5,
            state: NodeState::Removed,
            at_ms: NOW_MS + 900_000,
        },
    );
    run(
        &mut map,
        Command::SetRecovery {
            key: "recovery.max_moves".into(),
            value: "16".into(),
        },
    );
    (map, commands)
}

fn log_id(index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(TERM, LEADER), index)
}

fn member(id: u64) -> Member {
    let spec = spec(id, "");
    Member {
        addr: spec.addr,
        admin: spec.admin,
    }
}

/// The log of the seeds' cluster: a blank entry, the first membership,
/// the commands, and a membership with nodes 2 and 3 promoted.
fn raft_entries(commands: &[Command]) -> Vec<Entry> {
    let membership = |voters: &[u64]| {
        let nodes: BTreeMap<u64, Member> = (1..=5).map(|id| (id, member(id))).collect();
        Membership::new(vec![voters.iter().copied().collect::<BTreeSet<_>>()], nodes)
    };
    let mut payloads = vec![
        EntryPayload::Blank,
        EntryPayload::Membership(membership(&[1])),
    ];
    payloads.extend(commands.iter().cloned().map(EntryPayload::Normal));
    payloads.push(EntryPayload::Membership(membership(&[1, 2, 3])));
    payloads
        .into_iter()
        .zip(1..)
        .map(|(payload, index)| Entry {
            log_id: log_id(index),
            payload,
        })
        .collect()
}

/// A snapshot built by a real state machine that applied `entries`, and
/// its stored form.
fn snapshot_of(entries: &[Entry]) -> anyhow::Result<(Snapshot, Vec<u8>)> {
    let db = sled::Config::new()
        .temporary(true)
        .open()
        .context("a temporary sled database")?;
    let mut machine = StateMachine::open(&db).context("a state machine")?;
    let snapshot = block_on(async {
        machine.apply(entries.to_vec()).await?;
        machine.get_snapshot_builder().await.build_snapshot().await
    })
    .context("applying the log and building a snapshot")?;
    let snapshot = Snapshot {
        meta: snapshot.meta,
        data: snapshot.snapshot.into_inner(),
    };
    let stored = log_store::encode(&StoredSnapshot {
        meta: snapshot.meta.clone(),
        data: snapshot.data.clone(),
    })?;
    Ok((snapshot, stored))
}

struct Snapshot {
    meta: crate::raft::types::SnapshotMeta,
    data: Vec<u8>,
}

/// Client hellos (this build's, another version's, not levee at all) and
/// the server's replies to them, as `accept` wrote them.
fn handshake_seeds(seeds: &mut Seeds) -> anyhow::Result<()> {
    let hello = handshake::client_hello();
    let mut other_version = hello;
    other_version[5] = other_version[5].wrapping_add(1);
    let hellos: [(&str, &[u8]); 3] = [
        ("hello", &hello),
        ("hello-other-version", &other_version),
        ("http-get", b"GET / HTTP/1.1\r\n"),
    ];
    for (name, hello) in hellos {
        seeds.add("handshake", name, hello.to_vec());
        let mut wire = tokio::io::join(hello, Vec::new());
        // Refusals are the point of two of them; the reply is what counts.
        let _ = block_on(handshake::accept(&mut wire, FRAME_TIMEOUT));
        let (_, reply) = wire.into_inner();
        anyhow::ensure!(reply.len() == handshake::LEN, "no reply to {name}");
        seeds.add("handshake", format!("reply-to-{name}"), reply);
    }
    Ok(())
}

fn version(ms_ago: u64, logical: u64) -> Version {
    Version {
        hlc: hlc::compose(NOW_MS - ms_ago, logical),
        writer: WRITER,
    }
}

const KEY: &[u8] = b"user:1042/profile";
const VALUE: &[u8] = br#"{"name":"Ada","plan":"pro","seats":12,"since":"2024-03-01"}"#;

/// Every request variant, as a client or a node sends it.
fn request_seeds(
    seeds: &mut Seeds,
    map: &ClusterMap,
    commands: &[Command],
    entries: &[Entry],
    snapshot: &Snapshot,
) -> anyhow::Result<()> {
    let partition = partition_of(KEY, map.partitions);
    let epoch = map.epoch;
    let append = AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(TERM, LEADER),
        prev_log_id: Some(log_id(2)),
        entries: entries.iter().skip(2).take(4).cloned().collect(),
        leader_commit: Some(log_id(2)),
    };
    let heartbeat = AppendEntriesRequest::<TypeConfig> {
        entries: Vec::new(),
        ..append.clone()
    };
    let vote = VoteRequest {
        vote: Vote::new(TERM + 1, 2),
        last_log_id: entries.last().map(|e| e.log_id),
    };
    let install = InstallSnapshotRequest::<TypeConfig> {
        vote: Vote::new_committed(TERM, LEADER),
        meta: snapshot.meta.clone(),
        offset: 0,
        data: snapshot.data.clone(),
        done: true,
    };
    let raft = |rpc, payload| NodeRequest::Raft {
        cluster_id: CLUSTER_ID,
        target: 2,
        rpc,
        payload,
    };
    let report = NodeReport {
        node: 3,
        epoch,
        pressure_permille: 420,
        recovery_bytes_sent: 48 << 20,
        recovery_bytes_received: 3 << 20,
        transfers: vec![TransferProgress {
            partition: 7,
            source: 2,
            keys: 18_230,
            bytes: 9 << 20,
        }],
        cert: Some(CertReport {
            not_after_ms: NOW_MS + 86_400_000 * 20,
            warn: true,
        }),
        version: "0.1.0".into(),
        uptime_ms: 3_600_000,
        data_bytes: 1 << 30,
        hints_pending_bytes: 4096,
        limit: 64,
        requests_total: 98_765,
        shed_total: 12,
        small_partitions: vec![3, 9, 40],
    };
    let client = |request| Request::Client(request);
    let node = |request| Request::Node(request);
    let requests = vec![
        ("ping", client(ClientRequest::Ping)),
        (
            "get",
            client(ClientRequest::Get {
                key: KEY.to_vec(),
                epoch,
            }),
        ),
        (
            "put",
            client(ClientRequest::Put {
                key: KEY.to_vec(),
                value: VALUE.to_vec(),
                version: version(0, 3),
                epoch,
            }),
        ),
        (
            "delete",
            client(ClientRequest::Delete {
                key: b"session:9f2c".to_vec(),
                version: version(0, 4),
                epoch: 0,
            }),
        ),
        (
            "get-replica",
            client(ClientRequest::GetReplica { key: KEY.to_vec() }),
        ),
        ("get-map", client(ClientRequest::GetMap)),
        ("status", client(ClientRequest::Status)),
        (
            "admin-drain",
            client(ClientRequest::Admin(AdminCommand::Drain { node: 4 })),
        ),
        (
            "admin-set",
            client(ClientRequest::Admin(AdminCommand::Set {
                key: "noout".into(),
                value: "on".into(),
            })),
        ),
        (
            "raft-append-entries",
            node(raft(RaftRpc::AppendEntries, codec::to_bytes(&append)?)),
        ),
        (
            "raft-heartbeat",
            node(raft(RaftRpc::AppendEntries, codec::to_bytes(&heartbeat)?)),
        ),
        (
            "raft-vote",
            node(raft(RaftRpc::Vote, codec::to_bytes(&vote)?)),
        ),
        (
            "raft-install-snapshot",
            node(raft(RaftRpc::InstallSnapshot, codec::to_bytes(&install)?)),
        ),
        ("join", node(NodeRequest::Join(spec(6, "z3")))),
        (
            "replicate",
            node(NodeRequest::Replicate {
                partition,
                key: KEY.to_vec(),
                version: version(0, 3),
                value: Some(VALUE.to_vec()),
            }),
        ),
        (
            "replicate-tombstone",
            node(NodeRequest::Replicate {
                partition,
                key: KEY.to_vec(),
                version: version(0, 5),
                value: None,
            }),
        ),
        (
            "read-local",
            node(NodeRequest::ReadLocal {
                partition,
                key: KEY.to_vec(),
            }),
        ),
        (
            "purge-tombstone",
            node(NodeRequest::PurgeTombstone {
                partition,
                key: b"session:9f2c".to_vec(),
                version: version(86_400_000, 0),
            }),
        ),
        (
            "digest",
            node(NodeRequest::Digest {
                partition,
                buckets: 64,
            }),
        ),
        (
            "bucket-entries",
            node(NodeRequest::BucketEntries {
                partition,
                buckets: 64,
                bucket: 17,
                after: Some(b"user:0999".to_vec()),
                limit: 512,
            }),
        ),
        ("heartbeat", node(NodeRequest::Heartbeat(report))),
        (
            "propose-finish-move",
            node(NodeRequest::Propose(
                commands
                    .iter()
                    .find(|c| matches!(c, Command::FinishMove { .. }))
                    .cloned()
                    .unwrap_or(Command::CancelMoves(vec![7])),
            )),
        ),
        (
            "fetch-range",
            node(NodeRequest::FetchRange {
                partition,
                after: Some(b"user:1000".to_vec()),
                max_bytes: 1 << 20,
            }),
        ),
        (
            "scan",
            client(ClientRequest::Scan {
                partition,
                prefix: b"user:".to_vec(),
                after: Some(b"user:1042/profile".to_vec()),
                limit: 1000,
                values: true,
                epoch,
            }),
        ),
        (
            "scan-keys-from-start",
            client(ClientRequest::Scan {
                partition: 0,
                prefix: Vec::new(),
                after: None,
                limit: 50,
                values: false,
                epoch: 0,
            }),
        ),
        ("settled", node(NodeRequest::Settled)),
    ];
    let mut session = handshake::client_hello().to_vec();
    let mut stream = Vec::new();
    for (id, (name, request)) in (1u64..).zip(requests) {
        let frame = codec::encode(&RequestFrame {
            id,
            timeout_ms: 2_000,
            request,
        })?;
        seeds.add("request", name, frame[4..].to_vec());
        if id <= 5 {
            stream.extend_from_slice(&frame);
        }
        session.extend_from_slice(&frame);
    }
    seeds.add("frame", "client-session", stream);
    seeds.add("frame", "session-after-hello", session);

    let raft_payloads: [(&str, u8, Vec<u8>); 4] = [
        ("append-entries", 0, codec::to_bytes(&append)?),
        ("heartbeat", 0, codec::to_bytes(&heartbeat)?),
        ("vote", 1, codec::to_bytes(&vote)?),
        ("install-snapshot", 2, codec::to_bytes(&install)?),
    ];
    for (name, selector, payload) in raft_payloads {
        seeds.add_selected("raft_rpc", name, selector, payload);
    }
    Ok(())
}

/// What peers answer to the Raft RPCs (as `handle_raft` encodes them).
fn raft_answers() -> anyhow::Result<Vec<(&'static str, u8, Vec<u8>)>> {
    let vote = Vote::new_committed(TERM, LEADER);
    let append: [(&str, AppendEntriesAnswer); 5] = [
        ("append-success", Ok(AppendEntriesResponse::Success)),
        (
            "append-partial",
            Ok(AppendEntriesResponse::PartialSuccess(Some(log_id(9)))),
        ),
        ("append-conflict", Ok(AppendEntriesResponse::Conflict)),
        (
            "append-higher-vote",
            Ok(AppendEntriesResponse::HigherVote(Vote::new(TERM + 1, 3))),
        ),
        ("append-stopped", Err(RaftError::Fatal(Fatal::Stopped))),
    ];
    let votes: [(&str, VoteAnswer); 2] = [
        (
            "vote-granted",
            Ok(VoteResponse {
                vote,
                vote_granted: true,
                last_log_id: Some(log_id(12)),
            }),
        ),
        ("vote-stopped", Err(RaftError::Fatal(Fatal::Stopped))),
    ];
    let segment = |offset| SnapshotSegmentId {
        id: format!("{TERM}-12-1"),
        offset,
    };
    let installs: [(&str, InstallSnapshotAnswer); 2] = [
        ("install-done", Ok(InstallSnapshotResponse { vote })),
        (
            "install-mismatch",
            Err(RaftError::APIError(InstallSnapshotError::SnapshotMismatch(
                SnapshotMismatch {
                    expect: segment(0),
                    got: segment(4096),
                },
            ))),
        ),
    ];
    let mut out = Vec::new();
    for (name, answer) in append {
        out.push((name, 3, codec::to_bytes(&answer)?));
    }
    for (name, answer) in votes {
        out.push((name, 4, codec::to_bytes(&answer)?));
    }
    for (name, answer) in installs {
        out.push((name, 5, codec::to_bytes(&answer)?));
    }
    Ok(out)
}

/// Every response variant and a spread of errors.
fn response_seeds(seeds: &mut Seeds, map: &ClusterMap, entries: &[Entry]) -> anyhow::Result<()> {
    let answers = raft_answers()?;
    let status = ClusterStatus {
        node_id: 2,
        leader: Some(LEADER),
        term: TERM,
        voters: vec![1, 2, 3],
        learners: vec![4],
        last_log_index: entries.last().map(|e| e.log_id.index),
        last_applied: entries.last().map(|e| e.log_id.index),
        replication: None,
        map: map.clone(),
        recovery: Some(RecoveryStatus {
            at_ms: NOW_MS,
            silence_ms: BTreeMap::from([(1, 0), (2, 210), (3, 180), (4, 12_400)]),
            suspects: vec![4],
            held: vec![(4, "zone_guard".into())],
            reports: BTreeMap::from([(
                3,
                NodeReport {
                    node: 3,
                    epoch: map.epoch,
                    pressure_permille: 120,
                    ..NodeReport::default()
                },
            )]),
            bytes_per_sec: 31 << 20,
            waiting: 3,
            unrecoverable: Vec::new(),
            finished_last_min: 5,
            eta_s: Some(42),
        }),
        report: Some(NodeReport {
            node: 2,
            epoch: map.epoch,
            version: "0.1.0".into(),
            uptime_ms: 86_400_000,
            data_bytes: 3 << 30,
            hints_pending_bytes: 12_000,
            limit: 180,
            requests_total: 1_234_567,
            shed_total: 42,
            ..NodeReport::default()
        }),
    };
    let found = Found {
        version: version(0, 3),
        value: Some(VALUE.to_vec()),
    };
    let mut results: Vec<(&str, Result<Response, WireError>)> = vec![
        ("pong", Ok(Response::Pong { protocol: 1 })),
        ("get-found", Ok(Response::Get(Some(found)))),
        ("get-missing", Ok(Response::Get(None))),
        (
            "written",
            Ok(Response::Written {
                applied: true,
                version: version(0, 3),
            }),
        ),
        ("map", Ok(Response::Map(Box::new(map.clone())))),
        ("status", Ok(Response::Status(Box::new(status)))),
        (
            "digest",
            Ok(Response::Digest(
                (0..64u64).map(|b| b.wrapping_mul(0x9e37_79b9)).collect(),
            )),
        ),
        (
            "entries",
            Ok(Response::Entries {
                entries: vec![
                    KeyVersion {
                        key: b"user:1000".to_vec(),
                        version: version(5_000, 0),
                        tombstone: false,
                    },
                    KeyVersion {
                        key: b"user:1001".to_vec(),
                        version: version(4_000, 1),
                        tombstone: true,
                    },
                ],
                more: true,
            }),
        ),
        ("ack", Ok(Response::Ack)),
        (
            "proposed",
            Ok(Response::Proposed(CommandResult::Applied {
                epoch: map.epoch,
            })),
        ),
        (
            "range",
            Ok(Response::Range {
                records: vec![
                    RangeRecord {
                        key: b"user:1042/profile".to_vec(),
                        version: version(0, 3),
                        value: Some(VALUE.to_vec()),
                    },
                    RangeRecord {
                        key: b"user:1043/profile".to_vec(),
                        version: version(1_000, 0),
                        value: None,
                    },
                ],
                more: false,
            }),
        ),
        (
            "joined",
            Ok(Response::Joined {
                node_id: 6,
                cluster_id: CLUSTER_ID,
            }),
        ),
        (
            "err-overloaded",
            Err(WireError::Overloaded { retry_after_ms: 5 }),
        ),
        (
            "err-not-leader",
            Err(WireError::NotLeader {
                leader: Some(LEADER),
                leader_addr: Some(spec(LEADER, "").addr),
            }),
        ),
        (
            "err-quorum-failed",
            Err(WireError::QuorumFailed {
                acked: 1,
                needed: 2,
                replicas: 3,
                detail: "node 3: connection refused".into(),
            }),
        ),
        (
            "err-malformed",
            Err(WireError::Malformed {
                detail: "unexpected end of input".into(),
            }),
        ),
        (
            "err-clock-drift",
            Err(WireError::ClockDrift {
                ahead_ms: 45_000,
                max_drift_ms: 30_000,
            }),
        ),
        (
            "err-stale-map",
            Err(WireError::StaleMap { epoch: map.epoch }),
        ),
    ];
    for (name, _, answer) in &answers {
        results.push((name, Ok(Response::Raft(answer.clone()))));
    }
    // After the Raft answers, so the seeds written before keep their ids.
    results.extend([
        (
            "scanned",
            Ok(Response::Scanned {
                entries: vec![
                    ScanEntry {
                        key: b"user:1042/profile".to_vec(),
                        version: version(0, 3),
                        value: Some(VALUE.to_vec()),
                    },
                    ScanEntry {
                        key: b"user:1044/profile".to_vec(),
                        version: version(2_000, 1),
                        value: None,
                    },
                ],
                next: Some(b"user:1044/profile".to_vec()),
            }),
        ),
        (
            "scanned-last",
            Ok(Response::Scanned {
                entries: Vec::new(),
                next: None,
            }),
        ),
        ("settled", Ok(Response::Settled { epoch: map.epoch })),
    ]);
    for (id, (name, result)) in (1u64..).zip(results) {
        let frame = codec::encode(&ResponseFrame {
            id,
            pressure: (id % 256) as u8,
            epoch: map.epoch,
            result,
        })?;
        seeds.add("response", name, frame[4..].to_vec());
    }
    for (name, selector, answer) in answers {
        seeds.add_selected("raft_rpc", name, selector, answer);
    }
    Ok(())
}

/// Records and hints as storage writes them.
fn storage_seeds(seeds: &mut Seeds, map: &ClusterMap) -> anyhow::Result<()> {
    let records: [(&str, Option<&[u8]>); 4] = [
        ("value", Some(VALUE)),
        ("tombstone", None),
        ("empty-value", Some(b"")),
        ("binary-value", Some(&[0x00, 0xff, 0x10, 0x80, 0x7f, 0x01])),
    ];
    for (ms_ago, (name, value)) in (0u64..).zip(records) {
        seeds.add("record", name, record::encode(version(ms_ago, 0), value));
    }
    let partition = partition_of(KEY, map.partitions);
    let mut segment = journal::MAGIC.to_vec();
    journal::encode_frame(
        &mut segment,
        partition,
        KEY,
        &record::encode(version(0, 1), Some(VALUE)),
    );
    seeds.add("journal", "one-record", segment.clone());
    journal::encode_frame(
        &mut segment,
        partition,
        b"session:9f2c",
        &record::encode(version(0, 2), None),
    );
    seeds.add("journal", "two-records", segment.clone());
    let whole = segment.len();
    segment.truncate(whole - 3);
    seeds.add("journal", "torn-tail", segment);
    seeds.add("journal", "created-cut-short", journal::MAGIC[..9].to_vec());
    let hints = [
        (
            "value",
            Hint {
                partition,
                key: KEY.to_vec(),
                version: version(0, 3),
                value: Some(VALUE.to_vec()),
            },
        ),
        (
            "tombstone",
            Hint {
                partition,
                key: b"session:9f2c".to_vec(),
                version: version(0, 4),
                value: None,
            },
        ),
    ];
    for (name, hint) in hints {
        seeds.add("hint", name, hints::encode_hint(&hint)?);
    }
    Ok(())
}

/// The log store's and state machine's values, as they store them.
fn raft_store_seeds(
    seeds: &mut Seeds,
    entries: &[Entry],
    snapshot: &Snapshot,
    stored_snapshot: &[u8],
) -> anyhow::Result<()> {
    for entry in entries {
        let kind = match &entry.payload {
            EntryPayload::Blank => "blank".to_string(),
            EntryPayload::Membership(_) => "membership".to_string(),
            EntryPayload::Normal(command) => {
                let debug = format!("{command:?}");
                let name: String = debug
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric())
                    .collect();
                name.to_ascii_lowercase()
            }
        };
        let name = format!("entry-{}-{kind}", entry.log_id.index);
        seeds.add_selected("raft_log", &name, 0, log_store::encode(entry)?);
    }
    let vote = Vote::new_committed(TERM, LEADER);
    seeds.add_selected("raft_log", "vote", 1, log_store::encode(&vote)?);
    let committed = Some(log_id(12));
    seeds.add_selected("raft_log", "committed", 2, log_store::encode(&committed)?);
    seeds.add_selected("raft_log", "last-purged", 3, log_store::encode(&log_id(3))?);

    seeds.add_selected("raft_state", "state", 0, snapshot.data.clone());
    seeds.add_selected("raft_state", "snapshot", 1, stored_snapshot.to_vec());
    Ok(())
}

/// A README-style configuration of a node in a 3-zone cluster.
const CONFIG: &str = r#"# levee-node.toml: node 2 of a 3-zone cluster
data_dir = "/var/lib/levee"
listen = "0.0.0.0:7400"
admin = "0.0.0.0:7401"
advertise = "127.0.0.2:7400"
join = ["127.0.0.1:7400", "127.0.0.3:7400"]
zone = "z2"
capacity = 500
durability = "per_write"
storage_shards = 16
partitions = 256
max_value_bytes = 4194304
max_frame_bytes = 4196352
hint_max_bytes_per_node = 67108864
tombstone_grace_ms = 86400000
admission = true
admission_limit_min = 32
admission_limit_max = 1000
log_format = "json"
log = "info,openraft=error"
"#;

/// The files of a data directory and of a node's setup: `LAYOUT`, the
/// identity tree's values, configuration files.
fn file_seeds(seeds: &mut Seeds) -> anyhow::Result<()> {
    for shards in [1, 16, 256] {
        seeds.add(
            "layout",
            format!("shards-{shards}"),
            layout::render_layout(shards).into_bytes(),
        );
    }
    let identity = Identity {
        node_id: 3,
        cluster_id: CLUSTER_ID,
    };
    seeds.add("identity", "identity", codec::to_bytes(&identity)?);
    seeds.add(
        "identity",
        "join-token",
        spec(3, "").join_token.to_be_bytes().to_vec(),
    );
    seeds.add("config", "node", CONFIG.as_bytes().to_vec());
    seeds.add(
        "config",
        "print-config-defaults",
        Config::default().to_toml().into_bytes(),
    );
    seeds.add("config", "empty", Vec::new());
    seeds.add(
        "last_words",
        "put",
        crate::server::last_words::encode(crate::proto::op::Op::Put, 0x5eed).to_vec(),
    );
    seeds.add("last_words", "empty", Vec::new());
    cert_seeds(seeds)?;
    seeds.add(
        "admin_answer",
        "metrics",
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: 21\r\n\r\nlevee_requests_total 7\n".to_vec(),
    );
    seeds.add(
        "admin_answer",
        "forbidden",
        b"HTTP/1.1 403 Forbidden\r\ncontent-length: 20\r\n\r\nclient certificate\n".to_vec(),
    );
    Ok(())
}

/// A CA, a node pair and a client pair made by `levee cert`'s own code,
/// as the `cert` target takes them (role byte, then length-prefixed CA and
/// certificate, then the key); and a mismatched pair.
fn cert_seeds(seeds: &mut Seeds) -> anyhow::Result<()> {
    use crate::tls::issue::{self, Validity};
    let dir = tempfile_dir()?;
    let year = Validity::for_lifetime(std::time::Duration::from_secs(365 * 86_400));
    issue::create_cluster(&dir, &["127.0.0.1".into(), "n1".into()], year)?;
    let read = |name: &str| std::fs::read(dir.join(name));
    let ca = read(issue::CA_CERT)?;
    let pack = |role: u8, cert: &[u8], key: &[u8]| -> anyhow::Result<Vec<u8>> {
        let mut out = vec![role];
        for part in [&ca[..], cert] {
            out.extend_from_slice(&u16::try_from(part.len())?.to_be_bytes());
            out.extend_from_slice(part);
        }
        out.extend_from_slice(key);
        Ok(out)
    };
    let (node_crt, node_key) = (read(issue::NODE_CERT)?, read(issue::NODE_KEY)?);
    let (client_crt, client_key) = (read("client.root.crt")?, read("client.root.key")?);
    seeds.add("cert", "node", pack(0, &node_crt, &node_key)?);
    seeds.add("cert", "client", pack(1, &client_crt, &client_key)?);
    seeds.add("cert", "mismatched", pack(0, &node_crt, &client_key)?);
    seeds.add("cert", "wrong-role", pack(1, &node_crt, &node_key)?);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// A fresh directory under the system's temporary directory.
fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "levee-fuzz-seeds-{}-{}",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
