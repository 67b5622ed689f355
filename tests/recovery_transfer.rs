//! Partition transfers with real processes: a move committed through Raft
//! is copied to its target in key order, paced by the sender's byte
//! budget, with the writes made meanwhile; a source that dies mid-copy is
//! replaced and the copy resumes after the last key; only nodes holding a
//! partition serve it.
//!
//! Moves are started by hand (a `Propose(StartMoves)` to the leader), so
//! these tests exercise the transfer alone, without the failure detector
//! or the replica checker deciding anything.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::cluster::{by_id, start_cluster_with, status, wait_for_members};
use common::{TestNode, http_body, metric, runtime, wait_for};
use levee_node::client::{Client, ClientConfig, ClientError, Connection, Routing};
use levee_node::cluster::map::{ClusterMap, Command, CommandResult, Move};
use levee_node::cluster::status::ClusterStatus;
use levee_node::partition::partition_of;
use levee_node::proto::{NodeRequest, Request, Response, WireError};
use levee_node::storage::scan::record_bytes;
use tokio::runtime::Runtime;

const PARTITIONS: u32 = 8;
/// Sending rate and burst of each node: slow enough that a partition of
/// ~50 one-KiB records takes several seconds to copy, so the tests can
/// act while it runs.
const RATE: u64 = 8 * 1024;
const BURST: u64 = 4 * 1024;
const VALUE_BYTES: usize = 1000;
const KEYS: usize = 400;
/// Time allowed for a copy to finish.
const MOVE_DEADLINE: Duration = Duration::from_secs(90);

/// A 4-node cluster (R = 3) holding `KEYS` keys.
struct Setup {
    /// Declared before `_dir`, so the nodes stop before their data goes.
    nodes: Vec<TestNode>,
    view: ClusterStatus,
    rt: Runtime,
    client: Client,
    /// What each key holds.
    expected: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    _dir: tempfile::TempDir,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let recovery = format!("recovery.bytes_per_sec={RATE},recovery.bytes_burst={BURST}");
    let nodes = start_cluster_with(
        dir.path(),
        4,
        &[
            "--partitions",
            &PARTITIONS.to_string(),
            "--recovery",
            &recovery,
        ],
    );
    let view = wait_for_members(&nodes, 4);
    let rt = runtime();
    let client = client_for(&nodes.iter().collect::<Vec<_>>());
    let expected = fill(&rt, &client);
    Setup {
        nodes,
        view,
        rt,
        client,
        expected,
        _dir: dir,
    }
}

fn client_for(nodes: &[&TestNode]) -> Client {
    Client::new(ClientConfig {
        endpoints: nodes.iter().map(|n| n.addr.clone()).collect(),
        ..common::certs::client_config()
    })
}

fn value(round: &str, i: usize) -> Vec<u8> {
    let mut v = format!("{round}-{i}-").into_bytes();
    v.resize(VALUE_BYTES, b'.');
    v
}

/// Writes `KEYS` keys and returns what each holds.
fn fill(rt: &Runtime, client: &Client) -> BTreeMap<Vec<u8>, Option<Vec<u8>>> {
    rt.block_on(async {
        let mut expected = BTreeMap::new();
        for i in 0..KEYS {
            let key = format!("k{i:04}").into_bytes();
            let v = value("first", i);
            client.put(&key, &v).await.expect("put before the move");
            expected.insert(key, Some(v));
        }
        expected
    })
}

/// A move of the partition with the most keys to a node that does not
/// hold it, replacing the first replica and copying from it, as the
/// checker does while the replaced node runs (it alone holds every write
/// it acknowledged: `transfer::sources`); neither it nor the second replica
/// is the leader (so the test is about the transfer, not about an
/// election).
fn plan_move(view: &ClusterStatus, keys: &BTreeMap<Vec<u8>, Option<Vec<u8>>>) -> (u32, Move) {
    let map = &view.map;
    let leader = view.leader.expect("a leader");
    let mut count = BTreeMap::<u32, usize>::new();
    for key in keys.keys() {
        *count.entry(partition_of(key, PARTITIONS)).or_default() += 1;
    }
    let mut by_size: Vec<(u32, usize)> = count.into_iter().collect();
    by_size.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    for (p, _) in by_size {
        let set = map.replicas(p);
        let Some(to) = map.nodes.keys().copied().find(|n| !set.contains(n)) else {
            continue;
        };
        if set[0] == leader || set[1] == leader {
            continue;
        }
        let m = Move {
            from: Some(set[0]),
            to,
            source: set[0],
            started_ms: levee_node::hlc::wall_ms(),
        };
        return (p, m);
    }
    panic!("no partition fits: {map:?}");
}

/// Commits `StartMoves` through the leader, as the replica checker would.
/// A connection to `addr` with a node's certificate, as another node
/// would make it.
async fn as_node(addr: &str) -> Connection {
    Connection::connect(
        addr,
        &common::certs::node_transport(),
        Duration::from_secs(2),
        64 << 20,
    )
    .await
    .expect("connect")
}

fn start_move(rt: &Runtime, nodes: &[TestNode], view: &ClusterStatus, p: u32, m: &Move) {
    let leader = view.leader.expect("a leader");
    let addr = view.map.nodes[&leader].spec.addr.clone();
    let result = rt.block_on(async {
        let conn = as_node(&addr).await;
        conn.request(
            Request::Node(NodeRequest::Propose(Command::StartMoves(vec![(
                p,
                m.clone(),
            )]))),
            Duration::from_secs(5),
        )
        .await
    });
    assert!(
        matches!(
            result,
            Ok(Response::Proposed(CommandResult::Applied { .. }))
        ),
        "{result:?}"
    );
    wait_for(
        "the move to be in every map",
        Duration::from_secs(10),
        || {
            nodes
                .iter()
                .all(|n| status(n).is_some_and(|s| s.map.moves.get(&p) == Some(m)))
                .then_some(())
        },
    );
}

/// Waits until the target replaced `from` in the partition's set.
fn wait_for_finish(node: &TestNode, p: u32, m: &Move) -> ClusterMap {
    wait_for("the move to finish", MOVE_DEADLINE, || {
        let s = status(node)?;
        let set = s.map.replicas(p);
        (set.contains(&m.to) && m.from.is_none_or(|f| !set.contains(&f)) && s.map.moves.is_empty())
            .then_some(s.map)
    })
}

/// Checks the target's own copy of every key of the partition.
fn assert_target_holds(
    rt: &Runtime,
    client: &Client,
    to: u64,
    p: u32,
    expected: &BTreeMap<Vec<u8>, Option<Vec<u8>>>,
) -> usize {
    rt.block_on(async {
        let mut checked = 0;
        for (key, want) in expected {
            if partition_of(key, PARTITIONS) != p {
                continue;
            }
            let found = client
                .record_from(to, key)
                .await
                .unwrap_or_else(|e| panic!("read {key:?} on node {to}: {e}"));
            let got = found.map(|f| f.value);
            assert_eq!(
                got.as_ref()
                    .map(|v| v.as_ref().map(|v| String::from_utf8_lossy(&v[..20]))),
                Some(want.as_ref().map(|v| String::from_utf8_lossy(&v[..20]))),
                "key {} on the target",
                String::from_utf8_lossy(key)
            );
            checked += 1;
        }
        checked
    })
}

fn metric_of(node: &TestNode, name: &str) -> f64 {
    http_body(&node.admin, "/metrics")
        .and_then(|text| metric(&text, name))
        .unwrap_or(0.0)
}

#[test]
fn a_moved_partition_arrives_whole_with_the_writes_made_during_the_copy() {
    // `_dir` first: bindings drop in reverse, so the nodes stop first.
    let Setup {
        _dir,
        nodes,
        view,
        rt,
        client,
        mut expected,
    } = setup();
    let (p, m) = plan_move(&view, &expected);
    let started = Instant::now();
    start_move(&rt, &nodes, &view, p, &m);

    // While the copy runs: overwrite, delete and add keys of the partition.
    rt.block_on(async {
        let keys: Vec<Vec<u8>> = expected
            .keys()
            .filter(|k| partition_of(k, PARTITIONS) == p)
            .cloned()
            .collect();
        for (i, key) in keys.iter().enumerate() {
            match i % 3 {
                0 => {
                    let v = value("during", i);
                    client.put(key, &v).await.expect("put during the move");
                    expected.insert(key.clone(), Some(v));
                }
                1 => {
                    client.delete(key).await.expect("delete during the move");
                    expected.insert(key.clone(), None);
                }
                _ => {}
            }
        }
        let mut added = 0;
        for i in KEYS..KEYS * 10 {
            let key = format!("k{i:04}").into_bytes();
            if partition_of(&key, PARTITIONS) == p && added < 20 {
                let v = value("new", i);
                client.put(&key, &v).await.expect("new key during the move");
                expected.insert(key, Some(v));
                added += 1;
            }
        }
    });
    let during = status(&nodes[0]).expect("status");
    assert_eq!(
        during.map.moves.get(&p),
        Some(&m),
        "the writes must overlap the copy for this test to mean anything; slow RATE down"
    );

    wait_for_finish(&nodes[0], p, &m);
    let elapsed = started.elapsed().as_secs_f64();
    let checked = assert_target_holds(&rt, &client, m.to, p, &expected);
    assert!(checked > 30, "only {checked} keys in the moved partition");
    let target = &nodes[by_id(&nodes, &view, m.to)];
    assert!(metric_of(target, "levee_recovery_received_bytes_total") > 0.0);
    let source = &nodes[by_id(&nodes, &view, m.source)];
    let sent = metric_of(source, "levee_recovery_sent_bytes_total");
    assert!(sent > 0.0);
    // The sender's budget held: never more than rate × time + burst.
    assert!(
        sent <= RATE as f64 * elapsed + BURST as f64,
        "{sent} bytes sent in {elapsed:.1} s at {RATE} B/s, burst {BURST}"
    );
    eprintln!("{sent} bytes copied in {elapsed:.1} s at {RATE} B/s, burst {BURST}");
    assert!(
        target.log().contains("move finished"),
        "the target logs the end of the move"
    );
}

#[test]
fn a_source_that_dies_mid_copy_is_replaced_and_the_copy_resumes() {
    let Setup {
        _dir,
        mut nodes,
        view,
        rt,
        expected,
        ..
    } = setup();
    let (p, m) = plan_move(&view, &expected);
    let partition_bytes: u64 = expected
        .iter()
        .filter(|(k, _)| partition_of(k, PARTITIONS) == p)
        .map(|(k, v)| record_bytes(k, v.as_deref()))
        .sum();
    let to = by_id(&nodes, &view, m.to);
    let source = by_id(&nodes, &view, m.source);
    start_move(&rt, &nodes, &view, p, &m);

    // Kill the source once the target has about half of the partition.
    // It is the replaced node: the copy waits for it while the map says
    // it runs, then, once it is marked down, goes on from another replica.
    let started = Instant::now();
    wait_for("half the partition copied", MOVE_DEADLINE, || {
        (metric_of(&nodes[to], "levee_recovery_received_bytes_total")
            >= partition_bytes as f64 / 2.0)
            .then_some(())
    });
    nodes[source].kill();
    let live: Vec<&TestNode> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != source)
        .map(|(_, n)| n)
        .collect();
    wait_for_finish(live[0], p, &m);
    eprintln!(
        "copy finished {:?} after the move started",
        started.elapsed()
    );

    let client = client_for(&live);
    assert_target_holds(&rt, &client, m.to, p, &expected);
    let received = metric_of(&nodes[to], "levee_recovery_received_bytes_total");
    assert!(
        received < partition_bytes as f64 * 1.25,
        "received {received} bytes for a partition of {partition_bytes}: the copy started over instead of resuming"
    );
    assert!(
        nodes[to].log().contains("transfer source changed"),
        "the target logs the switch of source"
    );
}

#[test]
fn only_nodes_holding_a_partition_serve_its_pages() {
    // The nodes must be bound to keep running.
    let Setup {
        _dir,
        nodes: _nodes,
        view,
        rt,
        expected,
        ..
    } = setup();
    let map = &view.map;
    let p = 0;
    let set = map.replicas(p);
    let outsider = map
        .nodes
        .keys()
        .copied()
        .find(|n| !set.contains(n))
        .unwrap();
    let fetch = |id: u64| {
        let addr = map.nodes[&id].spec.addr.clone();
        rt.block_on(async move {
            let conn = as_node(&addr).await;
            conn.request(
                Request::Node(NodeRequest::FetchRange {
                    partition: p,
                    after: None,
                    max_bytes: 1 << 20,
                }),
                Duration::from_secs(10),
            )
            .await
        })
    };

    match fetch(outsider) {
        Err(ClientError::Server(WireError::Refused { detail })) => assert!(
            detail.contains(&format!("holds no replica of partition {p}")),
            "{detail}"
        ),
        other => panic!("a node without the partition answered {other:?}"),
    }

    let Ok(Response::Range { records, more }) = fetch(set[0]) else {
        panic!("a replica must serve its partition");
    };
    assert!(!records.is_empty());
    let bytes: u64 = records
        .iter()
        .map(|r| record_bytes(&r.key, r.value.as_deref()))
        .sum();
    assert!(
        bytes <= BURST || records.len() == 1,
        "a page of {bytes} bytes is larger than the burst"
    );
    assert!(more, "the partition holds more than one burst of records");
    assert!(records.windows(2).all(|w| w[0].key < w[1].key), "key order");
    for r in &records {
        assert_eq!(partition_of(&r.key, PARTITIONS), p);
        assert_eq!(expected.get(&r.key), Some(&r.value));
    }
}

/// Issue #17: a move's target waits, before copying, for every node that
/// may coordinate to have applied the move's epoch, as the leader learns
/// it from the heartbeats (every node beats as soon as it applies a new
/// epoch). The leader answers that epoch; another node says it does not
/// lead.
#[test]
fn the_leader_answers_the_epoch_every_live_node_has_applied() {
    let Setup {
        _dir,
        nodes,
        view,
        rt,
        expected,
        ..
    } = setup();
    let leader = view.leader.expect("a leader");
    let ask = |id: u64| {
        let addr = view.map.nodes[&id].spec.addr.clone();
        rt.block_on(async move {
            let conn = as_node(&addr).await;
            conn.request(Request::Node(NodeRequest::Settled), Duration::from_secs(5))
                .await
        })
    };
    // A move makes a new epoch on every node; the leader's answer reaches
    // it once each node has beaten with it.
    let (p, m) = plan_move(&view, &expected);
    start_move(&rt, &nodes, &view, p, &m);
    let epoch = status(&nodes[0]).expect("a status").map.epoch;
    wait_for(
        "the move's epoch settled",
        Duration::from_secs(30),
        || match ask(leader) {
            Ok(Response::Settled { epoch: settled }) => (settled >= epoch).then_some(()),
            other => panic!("the leader answered {other:?}"),
        },
    );
    let follower = view
        .map
        .nodes
        .keys()
        .copied()
        .find(|id| *id != leader)
        .unwrap();
    match ask(follower) {
        Err(ClientError::Server(WireError::NotLeader { leader: named, .. })) => {
            assert_eq!(named, Some(leader))
        }
        other => panic!("a follower answered {other:?}"),
    }
    wait_for_finish(&nodes[0], p, &m);
}

/// A write its coordinator took an older map for, still in flight, holds
/// back the epoch that coordinator reports as settled: the write goes to
/// the source of a move started meanwhile but not to its target, so the
/// copy must not start before it lands (`node/write_epochs.rs`). Once it
/// ends, the coordinator reports the new epoch.
#[test]
fn a_write_in_flight_on_an_older_map_holds_its_coordinators_settled_epoch_back() {
    let dir = tempfile::tempdir().unwrap();
    // R = 2, so W = 2: a write waits for both of its replicas.
    let mut nodes = start_cluster_with(
        dir.path(),
        3,
        &["--partitions", &PARTITIONS.to_string(), "--replicas", "2"],
    );
    let view = wait_for_members(&nodes, 3);
    let leader = view.leader.expect("a leader");
    let me = status(&nodes[0]).expect("a status").node_id;
    // A key whose replicas are node 0 first (so that a client routing in
    // placement order sends it there) and a node that does not lead (so
    // that freezing it leaves the cluster able to change its map).
    let (key, other) = (0..1000)
        .find_map(|i| {
            let key = format!("held-{i}").into_bytes();
            match view.map.replicas(partition_of(&key, PARTITIONS))[..] {
                [first, other] if first == me && other != leader => Some((key, other)),
                _ => None,
            }
        })
        .expect("a partition led by node 0's copy, with a follower");
    let client = || {
        Client::new(ClientConfig {
            endpoints: vec![nodes[0].addr.clone()],
            request_timeout: Duration::from_secs(60),
            attempt_timeout: Duration::from_secs(60),
            max_attempts: 1,
            routing: Routing::PlacementOrder,
            ..common::certs::client_config()
        })
    };
    // A first write opens node 0's connection to the other replica, so
    // that the held one waits for an answer rather than for a connection.
    runtime()
        .block_on(client().put(&key, b"first"))
        .expect("a put with every replica up");
    let frozen = nodes[by_id(&nodes, &view, other)].stop();
    let put = {
        let key = key.clone();
        let client = client();
        std::thread::spawn(move || runtime().block_on(async { client.put(&key, b"held").await }))
    };
    let foreground = |node: &TestNode| {
        http_body(&node.admin, "/metrics").and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("levee_inflight_requests{class=\"foreground\"}"))
                .and_then(|l| l.rsplit_once(' '))
                .and_then(|(_, v)| v.parse::<f64>().ok())
        })
    };
    let in_flight = wait_for(
        "the put to be in flight on node 0",
        Duration::from_secs(10),
        || {
            if put.is_finished() {
                return Some(false);
            }
            (foreground(&nodes[0])? >= 1.0).then_some(true)
        },
    );
    assert!(
        in_flight,
        "the put ended while a replica was frozen: {:?}",
        put.join()
    );
    let before = status(&nodes[0]).expect("a status");
    let old = before.map.epoch;
    assert_eq!(
        before.report.as_ref().map(|r| r.epoch),
        Some(old),
        "the write took the current map"
    );

    // A new epoch (any map change will do).
    let set = nodes[0].cli(&["admin", "set", "down_out_interval=11m"], None);
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    let during = wait_for(
        "node 0 to apply the new map",
        Duration::from_secs(20),
        || status(&nodes[0]).filter(|s| s.map.epoch > old),
    );
    assert_eq!(
        during.report.as_ref().map(|r| r.epoch),
        Some(old),
        "node 0 applied epoch {} but still coordinates a write on {old}",
        during.map.epoch
    );

    frozen.resume();
    let written = put.join().expect("the put's thread");
    assert!(written.is_ok(), "the held put: {written:?}");
    wait_for(
        "node 0 to report the new epoch once the write ended",
        Duration::from_secs(10),
        || {
            let s = status(&nodes[0])?;
            (s.report.as_ref()?.epoch == s.map.epoch && s.map.epoch > old).then_some(())
        },
    );
    for node in &mut nodes {
        assert!(node.is_running());
    }
}
