//! Captures fuzz seeds from a real run: three `levee-node` processes on
//! loopback, every byte to and from each of them recorded by a proxy in
//! front of it (each node advertises its proxy, so Raft and replica
//! traffic between nodes passes through it too), a client workload with a
//! node killed and restarted in the middle (hints, hint replay,
//! anti-entropy), then the nodes' data directories read back once they
//! have stopped.
//!
//! ```sh
//! cargo build -p levee-node
//! cargo run --example capture_fuzz_corpus [CORPUS_DIR]
//! ```
//!
//! Writes `captured-*` files under `fuzz/corpus/<target>/`: one per kind
//! of request, response, Raft RPC and answer, stored record, hint, Raft
//! log entry and meta value, state and snapshot, the handshakes, `LAYOUT`,
//! the identity, and the first bytes of a client and a peer connection.
//! The seeds of `levee_node::fuzzing::seeds` cover the same ground from
//! values; these are what a running cluster really sent and stored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use levee_node::client::{Client, ClientConfig, Connection};
use levee_node::proto::op::Op;
use levee_node::proto::{
    AdminCommand, ClientRequest, NodeRequest, RaftRpc, Request, Response, codec,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Bytes one way of one proxied connection.
type Recording = Arc<Mutex<Vec<u8>>>;

/// One proxied connection: what was sent to the node and what it answered.
struct Capture {
    node: u8,
    to_node: Recording,
    from_node: Recording,
}

type Captures = Arc<Mutex<Vec<Capture>>>;

const NODES: u8 = 3;
const HOST: &str = "127.0.0.1";
const BASE_PORT: u16 = 17_400;
const TIMEOUT: Duration = Duration::from_secs(5);

fn listen(i: u8) -> String {
    format!("{HOST}:{}", BASE_PORT + u16::from(i))
}
fn proxy(i: u8) -> String {
    format!("{HOST}:{}", BASE_PORT + 10 + u16::from(i))
}
fn admin(i: u8) -> String {
    format!("{HOST}:{}", BASE_PORT + 20 + u16::from(i))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Error> {
    let corpus = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus"));
    let binary = std::env::current_exe()?
        .parent()
        .and_then(Path::parent)
        .map(|debug| debug.join("levee-node"))
        .ok_or("no target directory")?;
    if !binary.exists() {
        return Err(format!("{} missing: cargo build -p levee-node", binary.display()).into());
    }
    let dir = tempfile::tempdir()?;
    let captures: Captures = Arc::default();
    for i in 1..=NODES {
        tokio::spawn(run_proxy(i, captures.clone()));
    }
    let mut nodes = BTreeMap::new();
    for i in 1..=NODES {
        nodes.insert(i, start(&binary, dir.path(), i)?);
        wait_ready(i).await?;
    }
    workload(&mut nodes, &binary, dir.path()).await?;
    for child in nodes.values_mut() {
        signal(child, "-TERM")?;
    }
    for child in nodes.values_mut() {
        child.wait()?;
    }

    let mut out = Out::new(corpus);
    split_captures(&captures, &mut out)?;
    for i in 1..=NODES {
        read_disk(&dir.path().join(format!("n{i}")), &mut out)?;
    }
    println!("{} captured seeds written", out.written);
    Ok(())
}

fn start(binary: &Path, dir: &Path, i: u8) -> Result<Child, Error> {
    let mut command = Command::new(binary);
    command
        .arg("--data-dir")
        .arg(dir.join(format!("n{i}")))
        .args(["--listen", &listen(i), "--admin", &admin(i)])
        .args(["--advertise", &proxy(i), "--zone", &format!("z{i}")])
        .args(["--partitions", "16", "--storage-shards", "4"])
        .args(["--anti-entropy-startup-delay-ms", "500"])
        // Plaintext: the proxy records the frames as the decoders see them.
        .arg("--insecure")
        .env_remove("LEVEE_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if i == 1 {
        command.arg("--init");
    } else {
        command.args(["--join", &proxy(1)]);
    }
    Ok(command.spawn()?)
}

fn signal(child: &Child, signal: &str) -> Result<(), Error> {
    Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()?;
    Ok(())
}

async fn wait_ready(i: u8) -> Result<(), Error> {
    for _ in 0..300 {
        if let Ok(mut stream) = TcpStream::connect(admin(i)).await {
            let request = "GET /health/ready HTTP/1.0\r\n\r\n";
            stream.write_all(request.as_bytes()).await?;
            let mut answer = String::new();
            stream.read_to_string(&mut answer).await?;
            if answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200") {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("node {i} not ready").into())
}

async fn run_proxy(i: u8, captures: Captures) -> Result<(), Error> {
    let listener = TcpListener::bind(proxy(i)).await?;
    loop {
        let (inbound, _) = listener.accept().await?;
        let Ok(outbound) = TcpStream::connect(listen(i)).await else {
            continue;
        };
        let capture = Capture {
            node: i,
            to_node: Arc::default(),
            from_node: Arc::default(),
        };
        let (in_read, in_write) = inbound.into_split();
        let (out_read, out_write) = outbound.into_split();
        tokio::spawn(pump(in_read, out_write, capture.to_node.clone()));
        tokio::spawn(pump(out_read, in_write, capture.from_node.clone()));
        captures.lock().map_err(|_| "poisoned")?.push(capture);
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    recording: Recording,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    while let Ok(n) = from.read(&mut buffer).await {
        if n == 0 {
            break;
        }
        if let Ok(mut recorded) = recording.lock() {
            recorded.extend_from_slice(&buffer[..n]);
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// Writes, reads, deletes, replica reads, the operator's requests; node 3
/// killed during writes (hints) and restarted (hint replay, anti-entropy).
async fn workload(nodes: &mut BTreeMap<u8, Child>, binary: &Path, dir: &Path) -> Result<(), Error> {
    let client = Client::new(ClientConfig {
        endpoints: (1..=NODES).map(proxy).collect(),
        ..ClientConfig::default()
    });
    // Until every node has joined and the map has settled, writes may fail.
    for n in 0..40 {
        let key = format!("user:{n:04}");
        let mut tries = 0;
        while client
            .put(key.as_bytes(), value(n).as_bytes())
            .await
            .is_err()
            && tries < 50
        {
            tries += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for n in 0..10 {
        let _ = client.get(format!("user:{n:04}").as_bytes()).await;
    }
    for n in 30..35 {
        let _ = client.delete(format!("user:{n:04}").as_bytes()).await;
    }
    let _ = client.get(b"user:0031").await;
    let _ = client.get(b"missing").await;
    let _ = client.get_from(2, b"user:0001").await;
    let conn = Connection::connect(&proxy(1), &Default::default(), TIMEOUT, 1 << 24).await?;
    let operator = [
        ClientRequest::Ping,
        ClientRequest::GetMap,
        ClientRequest::Status,
        ClientRequest::Admin(AdminCommand::Set {
            key: "recovery.max_moves".into(),
            value: "12".into(),
        }),
        ClientRequest::Get {
            key: Vec::new(),
            epoch: 0,
        },
    ];
    for request in operator {
        let _ = conn.request(Request::Client(request), TIMEOUT).await;
    }

    kill(nodes, 3)?;
    put_range(&client, 40..60).await;
    let _ = client.delete(b"user:0001").await;
    nodes.insert(3, start(binary, dir, 3)?);
    wait_ready(3).await?;
    // Hint replay runs every 500 ms; anti-entropy starts after 500 ms.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let _ = client.get_from(3, b"user:0045").await;

    // The leader goes: an election (votes), then it comes back as a
    // follower.
    kill(nodes, 1)?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let _ = client.put(b"user:0100", value(100).as_bytes()).await;
    nodes.insert(1, start(binary, dir, 1)?);
    wait_ready(1).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Node 3 goes for good: the writes it misses stay as hints on disk.
    kill(nodes, 3)?;
    put_range(&client, 200..205).await;
    let _ = client.delete(b"user:0002").await;
    Ok(())
}

/// The workload's value for key number `n`.
fn value(n: usize) -> String {
    format!(r#"{{"user":{n},"plan":"pro","seats":{}}}"#, n % 17)
}

/// Writes keys `user:NNNN` for `range`, ignoring failures (a node may be
/// down: that is the point).
async fn put_range(client: &Client, range: std::ops::Range<usize>) {
    for n in range {
        let _ = client
            .put(format!("user:{n:04}").as_bytes(), value(n).as_bytes())
            .await;
    }
}

/// Kills node `i` (SIGKILL: a crash) and waits for it to be gone.
fn kill(nodes: &mut BTreeMap<u8, Child>, i: u8) -> Result<(), Error> {
    if let Some(mut child) = nodes.remove(&i) {
        signal(&child, "-KILL")?;
        child.wait()?;
    }
    Ok(())
}

/// Where captured seeds go, at most one per kind.
struct Out {
    corpus: PathBuf,
    seen: std::collections::BTreeSet<(String, String)>,
    written: usize,
}

impl Out {
    fn new(corpus: PathBuf) -> Self {
        Self {
            corpus,
            seen: Default::default(),
            written: 0,
        }
    }

    fn write(&mut self, target: &str, kind: &str, bytes: &[u8]) -> Result<(), Error> {
        if !self.seen.insert((target.into(), kind.into())) {
            return Ok(());
        }
        let dir = self.corpus.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(format!("captured-{kind}")), bytes)?;
        self.written += 1;
        Ok(())
    }
}

/// The kind of a value for file names: its variant, from `Debug`.
fn kind(debug: &str) -> String {
    debug
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_ascii_lowercase()
}

/// The frames of one direction of a connection, after its handshake.
fn frames(stream: &[u8]) -> Vec<&[u8]> {
    let mut rest = stream.get(8..).unwrap_or_default();
    let mut out = Vec::new();
    while let Some(len) = rest.get(..4) {
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let Some(payload) = rest.get(4..4 + len) else {
            break;
        };
        out.push(payload);
        rest = &rest[4 + len..];
    }
    out
}

fn split_captures(captures: &Captures, out: &mut Out) -> Result<(), Error> {
    let captures = captures.lock().map_err(|_| "poisoned")?;
    for capture in captures.iter() {
        let to_node = capture.to_node.lock().map_err(|_| "poisoned")?.clone();
        let from_node = capture.from_node.lock().map_err(|_| "poisoned")?.clone();
        out.write("handshake", "hello", to_node.get(..8).unwrap_or_default())?;
        out.write("handshake", "reply", from_node.get(..8).unwrap_or_default())?;
        let mut raft_ids = BTreeMap::new();
        let mut peer = false;
        for payload in frames(&to_node) {
            let Ok(frame) = codec::decode_request(payload) else {
                continue;
            };
            let op = Op::of(&frame.request).name();
            out.write("request", op, payload)?;
            if let Request::Node(NodeRequest::Raft { rpc, payload, .. }) = &frame.request {
                peer = true;
                let (selector, name) = match rpc {
                    RaftRpc::AppendEntries => (0, "append-entries"),
                    RaftRpc::Vote => (1, "vote"),
                    RaftRpc::InstallSnapshot => (2, "install-snapshot"),
                };
                let heartbeat = payload.len() < 40;
                let name = if heartbeat && selector == 0 {
                    "heartbeat"
                } else {
                    name
                };
                out.write("raft_rpc", name, &[&[selector][..], payload].concat())?;
                raft_ids.insert(frame.id, selector);
            }
        }
        for payload in frames(&from_node) {
            let Ok(frame) = codec::decode_response(payload) else {
                continue;
            };
            let name = match &frame.result {
                Ok(response) => kind(&format!("{response:?}")),
                Err(error) => format!("err-{}", kind(&format!("{error:?}"))),
            };
            out.write("response", &name, payload)?;
            if let (Ok(Response::Raft(answer)), Some(selector)) =
                (&frame.result, raft_ids.get(&frame.id))
            {
                let name = ["append-answer", "vote-answer", "install-answer"][*selector as usize];
                out.write("raft_rpc", name, &[&[selector + 3][..], answer].concat())?;
            }
        }
        // The first frames of a connection, handshake included, for the
        // reader (capped so the file stays small).
        let head = &to_node[8.min(to_node.len())..to_node.len().min(8 + 4096)];
        let name = if peer {
            "peer-connection"
        } else {
            "client-connection"
        };
        out.write("frame", &format!("{name}-to-node-{}", capture.node), head)?;
    }
    Ok(())
}

/// A storage instance of the node, opened with the segment size it was
/// created with (sled refuses another).
fn open_storage(path: &Path, segment_size: usize) -> Result<sled::Db, Error> {
    Ok(sled::Config::new()
        .path(path)
        .segment_size(segment_size)
        .open()?)
}

/// The values of a stopped node's data directory, each as the target
/// that reads it.
fn read_disk(node: &Path, out: &mut Out) -> Result<(), Error> {
    let layout = std::fs::read(node.join("data/LAYOUT"))?;
    out.write("layout", "layout", &layout)?;
    let meta = sled::open(node.join("meta"))?;
    let identity = meta.open_tree("identity")?;
    if let Some(raw) = identity.get("identity")? {
        out.write("identity", "identity", &raw)?;
    }
    if let Some(raw) = identity.get("join_token")? {
        out.write("identity", "join-token", &raw)?;
    }
    for item in meta.open_tree("raft_log")?.iter() {
        let (_, raw) = item?;
        let entry = levee_node::raft::log_store::decode::<levee_node::raft::types::Entry>(&raw)?;
        let name = match &entry.payload {
            openraft::EntryPayload::Normal(command) => kind(&format!("{command:?}")),
            openraft::EntryPayload::Blank => "blank".into(),
            openraft::EntryPayload::Membership(_) => "membership".into(),
        };
        out.write(
            "raft_log",
            &format!("entry-{name}"),
            &[&[0][..], &raw].concat(),
        )?;
    }
    let raft_meta = meta.open_tree("raft_meta")?;
    for (selector, key) in [(1u8, "vote"), (2, "committed"), (3, "last_purged")] {
        if let Some(raw) = raft_meta.get(key)? {
            out.write("raft_log", key, &[&[selector][..], &raw].concat())?;
        }
    }
    let state = meta.open_tree("raft_sm")?;
    for (selector, key) in [(0u8, "state"), (1, "snapshot")] {
        if let Some(raw) = state.get(key)? {
            out.write("raft_state", key, &[&[selector][..], &raw].concat())?;
        }
    }
    drop(meta);
    let hints = open_storage(&node.join("data/hints"), 512 << 10)?;
    for name in hints.tree_names() {
        for item in hints.open_tree(&name)?.iter() {
            let (_, raw) = item?;
            out.write("hint", "hint", &raw)?;
        }
    }
    for shard in std::fs::read_dir(node.join("data"))? {
        let shard = shard?.path();
        if !shard
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("shard-"))
        {
            continue;
        }
        let db = open_storage(&shard, 2 << 20)?;
        for item in db.open_tree("data")?.iter() {
            let (_, raw) = item?;
            let tombstone = levee_node::storage::record::decode_header(&raw).is_ok_and(|h| h.1);
            out.write(
                "record",
                if tombstone { "tombstone" } else { "value" },
                &raw,
            )?;
        }
    }
    Ok(())
}
