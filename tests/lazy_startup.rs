//! Lazy startup and gentle rejoin (design §9): a restarted node answers
//! liveness before its storage is open, is ready as soon as storage is open
//! and its persisted map loaded (without waiting for Raft), serves, starts
//! its concurrency limit low, and loses no acknowledged write.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::cluster::{CLUSTER_DEADLINE, start_cluster, status};
use common::{START_DEADLINE, TestNode, http_body, http_status, metric, runtime, wait_for};
use levee_node::client::{Client, ClientConfig};

/// Keys the load cycles through; each belongs to one writer task, so the
/// writes to a key are sequential and a larger sequence number is newer.
const KEYS: u64 = 48;
const WRITERS: u64 = 4;

/// A FIFO the node opens before its storage (`--storage-gate`): it waits
/// there, admin port up and storage closed, until [`StorageGate::open`].
struct StorageGate(PathBuf);

impl StorageGate {
    fn new(dir: &Path) -> Self {
        let path = dir.join("storage-gate");
        let status = Command::new("mkfifo").arg(&path).status().expect("mkfifo");
        assert!(status.success(), "mkfifo failed");
        Self(path)
    }

    fn arg(&self) -> &str {
        self.0.to_str().expect("utf-8 path")
    }

    /// Lets the node open its storage. Opening a FIFO for writing waits
    /// for its reader, so it runs on a thread and is waited for with a
    /// deadline.
    fn open(&self) {
        let path = self.0.clone();
        let opener = std::thread::spawn(move || std::fs::OpenOptions::new().write(true).open(path));
        wait_for("the node to pass its storage gate", START_DEADLINE, || {
            opener.is_finished().then_some(())
        });
        opener.join().expect("gate thread").expect("open the gate");
    }
}

/// Writes and reads through a client against the whole cluster until
/// stopped, remembering the last acknowledged write of every key.
struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<HashMap<u64, u64>>>,
    acks: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(endpoints: Vec<String>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(HashMap::new()));
        let acks = Arc::new(AtomicU64::new(0));
        let (s, a, n) = (stop.clone(), acked.clone(), acks.clone());
        let thread = std::thread::spawn(move || {
            let client = Arc::new(client(endpoints));
            runtime().block_on(async move {
                let writers: Vec<_> = (0..WRITERS)
                    .map(|w| {
                        tokio::spawn(write_loop(
                            w,
                            client.clone(),
                            s.clone(),
                            a.clone(),
                            n.clone(),
                        ))
                    })
                    .collect();
                for w in writers {
                    w.await.expect("writer task");
                }
            });
        });
        Self {
            stop,
            acked,
            acks,
            thread: Some(thread),
        }
    }

    fn acks(&self) -> u64 {
        self.acks.load(Ordering::Relaxed)
    }

    /// Waits until `n` more writes have been acknowledged: the cluster
    /// serves the load.
    fn wait_acks(&self, what: &str, n: u64) {
        let target = self.acks() + n;
        wait_for(what, CLUSTER_DEADLINE, || {
            (self.acks() >= target).then_some(())
        });
    }

    /// Stops the load and returns the last acknowledged sequence per key.
    fn stop(mut self) -> HashMap<u64, u64> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("load thread");
        }
        self.acked.lock().unwrap().clone()
    }
}

async fn write_loop(
    writer: u64,
    client: Arc<Client>,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<HashMap<u64, u64>>>,
    acks: Arc<AtomicU64>,
) {
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        seq += 1;
        let key = writer + WRITERS * (seq % (KEYS / WRITERS));
        // Failures are expected while a node is down; only what was
        // acknowledged is checked at the end.
        if client
            .put(&key_name(key), seq.to_string().as_bytes())
            .await
            .is_ok()
        {
            acked.lock().unwrap().insert(key, seq);
            acks.fetch_add(1, Ordering::Relaxed);
        }
        let _ = client.get(&key_name((key + 1) % KEYS)).await;
    }
}

fn key_name(key: u64) -> Vec<u8> {
    format!("lazy-{key}").into_bytes()
}

fn client(endpoints: Vec<String>) -> Client {
    Client::new(ClientConfig {
        endpoints,
        request_timeout: Duration::from_secs(2),
        ..common::certs::client_config()
    })
}

/// Every acknowledged write is readable with its value or a newer one.
fn assert_no_acked_write_lost(client: &Client, acked: &HashMap<u64, u64>) {
    let rt = runtime();
    for (key, seq) in acked {
        let got = wait_for("a quorum read after the restart", CLUSTER_DEADLINE, || {
            rt.block_on(client.get(&key_name(*key))).ok()
        });
        let stored: u64 = got
            .and_then(|v| String::from_utf8(v.value).ok()?.parse().ok())
            .unwrap_or_else(|| panic!("acknowledged write {seq} of key {key} lost"));
        assert!(
            stored >= *seq,
            "key {key}: acknowledged write {seq}, read back older {stored}"
        );
    }
}

/// When each startup phase was reached, from the node's `/metrics`.
fn phases(node: &TestNode) -> HashMap<String, f64> {
    let text = http_body(&node.admin, "/metrics").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("levee_startup_phase_seconds{phase=\"")?;
            let (phase, value) = rest.split_once("\"} ")?;
            Some((phase.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// The node's id, from the cluster map, by its address.
fn node_id(nodes: &[TestNode], node: &TestNode) -> u64 {
    let view = wait_for("a status", CLUSTER_DEADLINE, || {
        nodes.iter().find_map(status)
    });
    view.map
        .nodes
        .iter()
        .find(|(_, n)| n.spec.addr == node.addr)
        .map(|(id, _)| *id)
        .expect("node in the map")
}

/// Writes `value` under `key` and waits until every node holds it.
fn put_everywhere(nodes: &[TestNode], key: &[u8], value: &[u8]) {
    let rt = runtime();
    let client = client(nodes.iter().map(|n| n.addr.clone()).collect());
    rt.block_on(client.put(key, value)).expect("put");
    for node in nodes {
        let id = node_id(nodes, node);
        wait_for("the value on every replica", CLUSTER_DEADLINE, || {
            let got = rt.block_on(client.get_from(id, key)).ok()??;
            (got.value == value).then_some(())
        });
    }
}

/// The log without terminal colour codes.
fn plain(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|c| *c == 'm');
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn a_node_killed_under_load_answers_liveness_first_then_serves_and_loses_no_acked_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start_cluster(dir.path(), 3);
    for node in &nodes {
        assert_eq!(
            metric(
                &http_body(&node.admin, "/metrics").unwrap(),
                "levee_startup_restart"
            ),
            Some(0.0)
        );
    }
    put_everywhere(&nodes, b"before-kill", b"kept");
    let leader = status(&nodes[0]).and_then(|s| s.leader).expect("a leader");
    let victim = (0..nodes.len())
        .find(|&i| node_id(&nodes, &nodes[i]) != leader)
        .expect("a follower");
    let victim_id = node_id(&nodes, &nodes[victim]);

    let load = Load::start(nodes.iter().map(|n| n.addr.clone()).collect());
    load.wait_acks("writes before the kill", 100);

    // SIGKILL, and start again held before storage opens.
    let gate = StorageGate::new(dir.path());
    nodes[victim].respawn_with(&["--storage-gate", gate.arg()]);
    let admin = nodes[victim].admin.clone();
    wait_for("liveness with storage still closed", START_DEADLINE, || {
        (http_status(&admin, "/health/live") == Some(200)).then_some(())
    });
    assert_eq!(http_status(&admin, "/health/ready"), Some(503));
    let held = phases(&nodes[victim]);
    assert!(held.contains_key("admin_listening"), "{held:?}");
    assert!(!held.contains_key("storage_open"), "{held:?}");
    load.wait_acks("writes while the node is down", 100);

    gate.open();
    nodes[victim].wait_ready();
    let p = phases(&nodes[victim]);
    let order = [
        "admin_listening",
        "storage_open",
        "protocol_listening",
        "map_loaded",
        "ready",
    ];
    for pair in order.windows(2) {
        assert!(
            p[pair[0]] <= p[pair[1]],
            "{} after {}: {p:?}",
            pair[0],
            pair[1]
        );
    }

    // It serves from its own copy, and its first answers are recorded.
    let rt = runtime();
    let reader = client(vec![nodes[victim].addr.clone()]);
    let kept = wait_for("the restarted node serving", START_DEADLINE, || {
        rt.block_on(reader.get_from(victim_id, b"before-kill")).ok()
    });
    assert_eq!(kept.map(|v| v.value), Some(b"kept".to_vec()));
    wait_for("map current and first served", CLUSTER_DEADLINE, || {
        let p = phases(&nodes[victim]);
        (p.contains_key("map_current") && p.contains_key("first_served")).then_some(())
    });
    let log = plain(&nodes[victim].log());
    let ready_line = log
        .lines()
        .rfind(|l| l.contains("levee-node ready:"))
        .expect("a ready line");
    assert!(ready_line.contains("restart=true"), "{ready_line}");
    assert!(
        ready_line.contains("limit_start=32"),
        "gentle rejoin: {ready_line}"
    );
    wait_for("the startup line", START_DEADLINE, || {
        plain(&nodes[victim].log())
            .contains("first_served_ms=")
            .then_some(())
    });
    // Storage opened only its layout and hints before ready; the shards
    // open on first touch and in the warm-up after ready, which ends with
    // every one of the default 16 open.
    assert!(p["storage_open"] <= p["ready"], "{p:?}");
    let text = wait_for("every storage shard open", START_DEADLINE, || {
        let text = http_body(&nodes[victim].admin, "/metrics").unwrap_or_default();
        (phases(&nodes[victim]).contains_key("storage_warm")
            && text.contains("levee_storage_shards{state=\"closed\"} 0\n"))
        .then_some(text)
    });
    assert_eq!(metric(&text, "levee_storage_shards"), Some(16.0));
    assert!(
        plain(&nodes[victim].log()).contains("storage warm: every shard open"),
        "the warm-up logs its end"
    );

    load.wait_acks("writes after the rejoin", 100);
    let acked = load.stop();
    assert!(
        acked.len() as u64 >= KEYS / 2,
        "too few keys written: {}",
        acked.len()
    );
    let everyone = client(nodes.iter().map(|n| n.addr.clone()).collect());
    assert_no_acked_write_lost(&everyone, &acked);
}

#[test]
fn a_restarted_node_is_ready_and_serves_without_a_raft_quorum() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start_cluster(dir.path(), 3);
    put_everywhere(&nodes, b"k", b"v");
    let id = node_id(&nodes, &nodes[1]);
    for node in &mut nodes {
        node.kill();
    }
    // Alone, it can never elect a leader; it must not wait for one.
    nodes[1].respawn();
    nodes[1].wait_ready();
    let rt = runtime();
    let got = rt
        .block_on(client(vec![nodes[1].addr.clone()]).get_from(id, b"k"))
        .expect("served from its own copy");
    assert_eq!(got.map(|v| v.value), Some(b"v".to_vec()));
    let p = phases(&nodes[1]);
    assert!(
        p.contains_key("map_loaded") && p.contains_key("first_served"),
        "{p:?}"
    );
    assert!(
        !p.contains_key("map_current"),
        "no leader, so not current: {p:?}"
    );
}
