//! Slow-input attacks against one real `levee-node` process (issue 15,
//! item 6): does a well-behaved client on an already established
//! connection keep its latency while others abuse the node's patience?
//!
//! The node is the release binary (`target/release/levee-node`, built
//! first with `cargo build --release -p levee-node`), started with its
//! default settings in a temporary directory. A well-behaved client (the
//! client library, one connection, closed loop, alternating 100-byte puts
//! and gets over 1000 keys) runs alone for 5 s, then for 13 s under an
//! attack, and so on for each attack in turn: each attack's ratio is to
//! the baseline just before it, so that a machine whose load drifts over
//! the run (other work on a shared VM) moves both sides. Each attack's
//! window starts with the attack, so that it holds the attack's opening
//! burst and a whole round of the node's timeouts (handshake 5 s, frame
//! and write 10 s) with the attackers' reconnections after them:
//!
//! - `slowloris`: 500 connections sending the 8-byte handshake one byte a
//!   second (never the last byte); each reconnects a second after the node
//!   closes it;
//! - `flood`: 2000 connections opened at once that send nothing (past
//!   `max_connections`); each reconnects a second after it is closed;
//! - `trickle`: 64 handshaken connections, each announcing a 4 MiB frame
//!   and then sending its body one byte a second;
//! - `non-reader`: 16 handshaken connections pipelining gets as fast as
//!   the node takes them and never reading an answer;
//! - `idle-flood`: 2000 connections that complete the handshake and then
//!   stay silent (not on the list; it shows the limit of the
//!   defences: see BENCHMARKS.md).
//!
//! For each phase: the client's p50 / p99 / p99.9 (and the p99 of puts
//! and gets apart) and errors, the CPU used by the node, by this process
//! (attackers, client, probes) and by the whole machine, the node's peak
//! RSS (`VmRSS`) and open fds (`/proc/PID/fd`), sampled every 100 ms,
//! whether new well-behaved connections (connect, handshake, ping, every
//! 200 ms) still got in, and what the attackers saw (connections opened,
//! and closed by the node). The target, checked per attack: p99 under
//! attack ≤ 1.5 × p99 alone (the window before), both in this one run.
//!
//! Machine: written for the 2-core development VM, everything on
//! loopback. Nothing is pinned: the node, the attackers (one tokio worker)
//! and the measured client (its own thread) share both cores, so an
//! attack's own CPU counts against the node, as it would for attackers on
//! the same host. Under two minutes. Results: stdout (a table) and
//! `target/slow_input.json`; the node's log is `target/slow_input-node.log`.
//!
//! `cargo bench --bench slow_input`; `SLOW_INPUT_ATTACKS=flood,trickle`
//! runs only the attacks named, `SLOW_INPUT_NODE=PATH` runs another
//! `levee-node` binary (an older build, to compare).

use std::collections::HashMap;
use std::net::TcpListener as StdTcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use levee_node::client::{Client, ClientConfig, Connection};
use levee_node::config::Config;
use levee_node::proto::{ClientRequest, Request, RequestFrame, Response, codec, handshake};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;

/// The length of the baseline before each attack.
const ALONE: Duration = Duration::from_secs(5);

/// The measured window under each attack, from the attack's start: the
/// node's 10 s frame / write timeout, plus the attackers' one-second wait
/// before reconnecting, plus the time a reconnected attacker needs to be
/// felt.
const MEASURE: Duration = Duration::from_secs(13);

/// After an attack stops, how long the node gets to close its sockets.
const SETTLE_DEADLINE: Duration = Duration::from_secs(20);

/// p99 under attack over p99 alone: the target.
const TARGET_RATIO: f64 = 1.5;

/// Keys of the measured client's workload.
const KEYS: usize = 1000;

/// Value size of the measured client's puts.
const VALUE_BYTES: usize = 100;

/// The attackers' pace: a byte a second, and a second before reconnecting.
const TICK: Duration = Duration::from_secs(1);

/// Timeout of the attackers' own connects and handshakes.
const ATTACK_IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Frame length the trickling attackers announce.
const TRICKLE_FRAME: u32 = 4 * 1024 * 1024;

/// Interval of the new-connection probe and of the /proc sampler.
const PROBE_EVERY: Duration = Duration::from_millis(200);
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// The attacks, in the order they run.
#[derive(Debug, Clone, Copy)]
enum Attack {
    Slowloris,
    Flood,
    Trickle,
    NonReader,
    IdleFlood,
}

impl Attack {
    const ALL: [Self; 5] = [
        Self::Slowloris,
        Self::Flood,
        Self::Trickle,
        Self::NonReader,
        Self::IdleFlood,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Slowloris => "slowloris",
            Self::Flood => "flood",
            Self::Trickle => "trickle",
            Self::NonReader => "non-reader",
            Self::IdleFlood => "idle-flood",
        }
    }

    /// Attacking connections (each one task that reconnects when closed).
    fn connections(self) -> usize {
        match self {
            Self::Slowloris => 500,
            Self::Flood | Self::IdleFlood => 2000,
            Self::Trickle => 64,
            Self::NonReader => 16,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Slowloris => "500 conns, handshake 1 byte/s",
            Self::Flood => "2000 conns at once, silent",
            Self::Trickle => "64 conns, 4 MiB frame at 1 byte/s",
            Self::NonReader => "16 conns pipelining gets, never reading",
            Self::IdleFlood => "2000 conns, handshake then silent",
        }
    }
}

/// What the attackers saw.
#[derive(Default)]
struct Tally {
    /// TCP connections established.
    opened: AtomicU64,
    /// Connections the node closed (eviction, timeout, refusal, error).
    closed_by_node: AtomicU64,
    /// Connects or handshakes that failed or timed out.
    failed: AtomicU64,
}

impl Tally {
    fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// One `levee-node` process, killed when dropped.
struct NodeProcess {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One measured phase.
struct Phase {
    name: String,
    attack: Option<Attack>,
    ops: usize,
    errors: u64,
    /// The most frequent error message, if any, and its count.
    top_error: Option<(String, u64)>,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    max_us: f64,
    /// p99 of the puts and of the gets alone: the mix is bimodal (a put
    /// waits for its flush), so its p50 falls between the two modes.
    put_p99_us: f64,
    get_p99_us: f64,
    /// CPU over the window, in cores (2.0 = both cores busy): the node,
    /// this process (attackers, measured client, probes), the machine.
    node_cpu: f64,
    bench_cpu: f64,
    machine_cpu: f64,
    rss_start_kib: u64,
    rss_peak_kib: u64,
    fds_start: u64,
    fds_peak: u64,
    probes_ok: u64,
    probes: u64,
    opened: u64,
    closed_by_node: u64,
    failed: u64,
}

fn main() {
    let target = target_dir();
    let node = start_node(&target);
    let pid = node.child.id();
    eprintln!("levee-node pid {pid} on {}", node.addr);

    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    let attack_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("attack runtime");

    let client = Client::new(ClientConfig {
        endpoints: vec![node.addr.clone()],
        ..ClientConfig::default()
    });
    let keys: Vec<Vec<u8>> = (0..KEYS)
        .map(|i| format!("slow-input-{i:04}").into_bytes())
        .collect();
    let value: Vec<u8> = (0..VALUE_BYTES).map(|i| (i % 251) as u8).collect();
    client_rt.block_on(async {
        wait_ready(&node, &client, &value).await;
        for key in &keys {
            client.put(key, &value).await.expect("preload put");
        }
        // Warm the path (connection, caches) before the baseline.
        closed_loop(&client, &keys, &value, Duration::from_secs(1)).await;
    });

    let mut phases = Vec::new();
    let bench = Bench {
        node: &node,
        client_rt: &client_rt,
        client: &client,
        keys: &keys,
        value: &value,
    };
    let (_, fds_alone) = proc_sample(pid);
    let only = std::env::var("SLOW_INPUT_ATTACKS").ok();
    let chosen = Attack::ALL.into_iter().filter(|a| {
        only.as_deref()
            .is_none_or(|names| names.split(',').any(|n| n.trim() == a.name()))
    });
    for attack in chosen {
        let before = format!("alone, before {}", attack.name());
        phases.push(bench.measure(&before, None, ALONE, &Tally::default()));
        eprintln!("attack: {} ({})", attack.name(), attack.describe());
        let tally = Arc::new(Tally::default());
        let cancel = CancellationToken::new();
        launch(attack, &attack_rt, &node.addr, &cancel, &tally);
        phases.push(bench.measure(attack.name(), Some(attack), MEASURE, &tally));
        cancel.cancel();
        settle(pid, fds_alone);
    }
    report(&phases, &target);
}

/// `target/`: the bench binary is `target/release/deps/slow_input-…`.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("bench binary path");
    exe.ancestors()
        .nth(3)
        .expect("target directory above target/release/deps")
        .to_path_buf()
}

/// Builds the release node (a no-op when up to date) and starts it with
/// its defaults (`wait_ready` waits for it to serve).
fn start_node(target: &Path) -> NodeProcess {
    let bin = match std::env::var_os("SLOW_INPUT_NODE") {
        Some(other) => PathBuf::from(other),
        None => {
            let status = Command::new(env!("CARGO"))
                .args(["build", "--quiet", "--release", "-p", "levee-node", "--bin"])
                .arg("levee-node")
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .expect("run cargo build");
            assert!(status.success(), "cargo build of levee-node failed");
            target.join("release").join("levee-node")
        }
    };
    let dir = tempfile::tempdir().expect("temporary directory");
    let addr = free_addr();
    let admin = free_addr();
    let log = std::fs::File::create(target.join("slow_input-node.log")).expect("node log");
    let child = Command::new(&bin)
        .arg("--data-dir")
        .arg(dir.path().join("node"))
        .args(["--listen", &addr, "--admin", &admin])
        // The attacks are on the protocol layer, byte by byte, in plaintext.
        .arg("--insecure")
        .env_remove("LEVEE_CONFIG")
        .env_remove("FAILPOINTS")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn levee-node");
    NodeProcess {
        child,
        addr,
        _dir: dir,
    }
}

/// Polls a put until the node takes it: its storage is open and it has
/// its cluster map.
async fn wait_ready(node: &NodeProcess, client: &Client, value: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.put(b"slow-input-ready", value).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "levee-node {} did not serve a put in 30 s; see target/slow_input-node.log",
            node.addr
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn free_addr() -> String {
    let listener = StdTcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").to_string()
}

/// The node's resident memory (KiB) and open file descriptors.
fn proc_sample(pid: u32) -> (u64, u64) {
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as u64)
        .unwrap_or(0);
    (rss, fds)
}

/// `USER_HZ`: the unit of the CPU times in `/proc/PID/stat` (100 on
/// every Linux this runs on).
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

/// CPU time so far, in clock ticks: the node's, this process's, and the
/// whole machine's busy time.
struct CpuTicks(u64, u64, u64);

impl CpuTicks {
    fn now(node: u32) -> Self {
        Self(
            cpu_ticks(node),
            cpu_ticks(std::process::id()),
            machine_busy_ticks(),
        )
    }

    /// Cores used since `start`, `elapsed` ago: (node, bench, machine).
    fn cores_since(&self, start: &Self, elapsed: Duration) -> (f64, f64, f64) {
        let cores = |now: u64, then: u64| {
            now.saturating_sub(then) as f64 / CLOCK_TICKS_PER_SEC / elapsed.as_secs_f64()
        };
        (
            cores(self.0, start.0),
            cores(self.1, start.1),
            cores(self.2, start.2),
        )
    }
}

/// Busy time of all CPUs (`/proc/stat`: everything but idle and iowait).
fn machine_busy_ticks() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return 0;
    };
    let Some(line) = stat.lines().next() else {
        return 0;
    };
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|v| v.parse().ok())
        .collect();
    let (idle, iowait) = (
        fields.get(3).copied().unwrap_or(0),
        fields.get(4).copied().unwrap_or(0),
    );
    fields.iter().sum::<u64>().saturating_sub(idle + iowait)
}

/// A process's CPU time so far (user + system), in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the command name (in parentheses): state is field 3,
    // utime 14 and stime 15.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> u64 { fields.get(n - 3).and_then(|v| v.parse().ok()).unwrap_or(0) };
    field(14) + field(15)
}

/// Waits for the node to close what the last attack left (its fds back
/// near the baseline), so one attack's leftovers do not count against
/// the next.
fn settle(pid: u32, fds_alone: u64) {
    let deadline = Instant::now() + SETTLE_DEADLINE;
    loop {
        let (_, fds) = proc_sample(pid);
        if fds <= fds_alone + 8 {
            return;
        }
        if Instant::now() > deadline {
            eprintln!(
                "  the node still has {fds} fds (baseline {fds_alone}) after {SETTLE_DEADLINE:?}"
            );
            return;
        }
        std::thread::sleep(SAMPLE_EVERY);
    }
}

/// What every measured phase uses.
struct Bench<'a> {
    node: &'a NodeProcess,
    client_rt: &'a Runtime,
    client: &'a Client,
    keys: &'a [Vec<u8>],
    value: &'a [u8],
}

impl Bench<'_> {
    /// Runs the measured client for `length` while sampling the node and
    /// probing new connections from their own threads.
    fn measure(
        &self,
        name: &str,
        attack: Option<Attack>,
        length: Duration,
        tally: &Tally,
    ) -> Phase {
        let Self {
            node,
            client_rt,
            client,
            keys,
            value,
        } = *self;
        let pid = node.child.id();
        let (rss_start_kib, fds_start) = proc_sample(pid);
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let (mut rss, mut fds) = (0, 0);
                while !stop.load(Ordering::Relaxed) {
                    let (r, f) = proc_sample(pid);
                    rss = rss.max(r);
                    fds = fds.max(f);
                    std::thread::sleep(SAMPLE_EVERY);
                }
                (rss, fds)
            })
        };
        let prober = {
            let stop = stop.clone();
            let addr = node.addr.clone();
            std::thread::spawn(move || probe_new_connections(&addr, &stop))
        };
        let (cpu_start, started) = (CpuTicks::now(pid), Instant::now());
        let (samples, errors, top_error) =
            client_rt.block_on(closed_loop(client, keys, value, length));
        let cpu = CpuTicks::now(pid).cores_since(&cpu_start, started.elapsed());
        stop.store(true, Ordering::Relaxed);
        let (rss_peak_kib, fds_peak) = sampler.join().expect("sampler thread");
        let (probes_ok, probes) = prober.join().expect("prober thread");
        let sorted = |put: Option<bool>| -> Vec<u64> {
            let mut v: Vec<u64> = samples
                .iter()
                .filter(|(is_put, _)| put.is_none_or(|p| p == *is_put))
                .map(|(_, ns)| *ns)
                .collect();
            v.sort_unstable();
            v
        };
        let (latencies, puts, gets) = (sorted(None), sorted(Some(true)), sorted(Some(false)));
        let at = |v: &[u64], q: f64| -> f64 {
            let i = ((v.len() as f64 * q).ceil() as usize).saturating_sub(1);
            v.get(i).map_or(f64::NAN, |ns| *ns as f64 / 1000.0)
        };
        let phase = Phase {
            name: name.to_owned(),
            attack,
            ops: latencies.len(),
            errors,
            top_error,
            p50_us: at(&latencies, 0.50),
            p99_us: at(&latencies, 0.99),
            p999_us: at(&latencies, 0.999),
            max_us: at(&latencies, 1.0),
            put_p99_us: at(&puts, 0.99),
            get_p99_us: at(&gets, 0.99),
            node_cpu: cpu.0,
            bench_cpu: cpu.1,
            machine_cpu: cpu.2,
            rss_start_kib,
            rss_peak_kib,
            fds_start,
            fds_peak,
            probes_ok,
            probes,
            opened: tally.opened.load(Ordering::Relaxed),
            closed_by_node: tally.closed_by_node.load(Ordering::Relaxed),
            failed: tally.failed.load(Ordering::Relaxed),
        };
        eprintln!(
            "  {name}: {} ops, p99 {:.0} µs, node CPU {:.2} cores, peak RSS {} MiB, peak fds {}, new conns {}/{}",
            phase.ops,
            phase.p99_us,
            phase.node_cpu,
            phase.rss_peak_kib / 1024,
            phase.fds_peak,
            phase.probes_ok,
            phase.probes
        );
        if let Some((message, count)) = &phase.top_error {
            eprintln!("  most frequent error ({count}×): {message}");
        }
        phase
    }
}

/// The well-behaved client: one request at a time, puts and gets in
/// turn. Returns each successful request (whether a put, its latency in
/// ns), the number of errors and the most frequent error message.
async fn closed_loop(
    client: &Client,
    keys: &[Vec<u8>],
    value: &[u8],
    length: Duration,
) -> (Vec<(bool, u64)>, u64, Option<(String, u64)>) {
    let end = Instant::now() + length;
    let mut latencies = Vec::with_capacity(200_000);
    let mut errors = 0;
    let mut messages: HashMap<String, u64> = HashMap::new();
    // Each key is put, then got back.
    let mut ops = keys
        .iter()
        .cycle()
        .flat_map(|key| [(true, key), (false, key)]);
    while Instant::now() < end {
        let Some((put, key)) = ops.next() else { break };
        let started = Instant::now();
        let done = if put {
            client.put(key, value).await.map(drop)
        } else {
            client.get(key).await.map(drop)
        };
        match done {
            Ok(()) => latencies.push((put, started.elapsed().as_nanos() as u64)),
            Err(e) => {
                errors += 1;
                *messages.entry(e.to_string()).or_insert(0) += 1;
            }
        }
    }
    let top = messages.into_iter().max_by_key(|(_, n)| *n);
    (latencies, errors, top)
}

/// Every [`PROBE_EVERY`], a new connection (connect, handshake, ping,
/// each within 1 s): can a new well-behaved client still get in?
/// Returns (succeeded, tried).
fn probe_new_connections(addr: &str, stop: &AtomicBool) -> (u64, u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("probe runtime");
    let max_frame = Config::default().max_frame_bytes;
    let (mut ok, mut tried) = (0, 0);
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        tried += 1;
        let answered = rt.block_on(async {
            let conn =
                Connection::connect(addr, &Default::default(), Duration::from_secs(1), max_frame)
                    .await?;
            conn.request(Request::Client(ClientRequest::Ping), Duration::from_secs(1))
                .await
        });
        if matches!(answered, Ok(Response::Pong { .. })) {
            ok += 1;
        }
        std::thread::sleep(PROBE_EVERY.saturating_sub(started.elapsed()));
    }
    (ok, tried)
}

/// Starts `attack`'s connections on the attack runtime; they stop when
/// `cancel` is cancelled, dropping their sockets.
fn launch(
    attack: Attack,
    rt: &Runtime,
    addr: &str,
    cancel: &CancellationToken,
    tally: &Arc<Tally>,
) {
    let n = attack.connections();
    for i in 0..n {
        let (addr, cancel, tally) = (addr.to_owned(), cancel.clone(), tally.clone());
        // Spread the paced attackers over their tick, as independent
        // clients would be; the floods come all at once.
        let offset = TICK.mul_f64(i as f64 / n as f64);
        rt.spawn(async move {
            let run = async {
                match attack {
                    Attack::Slowloris => slowloris(&addr, &tally, offset).await,
                    Attack::Flood => silent(&addr, &tally, false).await,
                    Attack::Trickle => trickle(&addr, &tally, offset).await,
                    Attack::NonReader => non_reader(&addr, &tally).await,
                    Attack::IdleFlood => silent(&addr, &tally, true).await,
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => {}
                () = run => {}
            }
        });
    }
}

async fn connect(addr: &str, tally: &Tally) -> Option<TcpStream> {
    match tokio::time::timeout(ATTACK_IO_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => {
            Tally::add(&tally.opened);
            Some(stream)
        }
        _ => {
            Tally::add(&tally.failed);
            None
        }
    }
}

/// Connects and completes the handshake.
async fn handshaken(addr: &str, tally: &Tally) -> Option<TcpStream> {
    let mut stream = connect(addr, tally).await?;
    let exchange = async {
        stream.write_all(&handshake::client_hello()).await?;
        let mut reply = [0u8; handshake::LEN];
        stream.read_exact(&mut reply).await?;
        Ok::<_, std::io::Error>(handshake::parse_reply(reply).2 == Some(handshake::Status::Ok))
    };
    match tokio::time::timeout(ATTACK_IO_TIMEOUT, exchange).await {
        Ok(Ok(true)) => Some(stream),
        _ => {
            // Refused at the door (the connection cap closes it unanswered).
            Tally::add(&tally.closed_by_node);
            None
        }
    }
}

/// Whether the node has closed the stream (reads whatever it sent first).
fn closed_by_node(stream: &TcpStream) -> bool {
    let mut buf = [0u8; 256];
    loop {
        match stream.try_read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

/// The handshake one byte a tick, never its last byte.
async fn slowloris(addr: &str, tally: &Tally, offset: Duration) {
    tokio::time::sleep(offset).await;
    let hello = handshake::client_hello();
    loop {
        let Some(mut stream) = connect(addr, tally).await else {
            tokio::time::sleep(TICK).await;
            continue;
        };
        let mut sent = 0;
        loop {
            if closed_by_node(&stream) {
                Tally::add(&tally.closed_by_node);
                break;
            }
            if let Some(byte) = hello.get(sent).filter(|_| sent + 1 < hello.len()) {
                if stream.write_all(&[*byte]).await.is_err() {
                    Tally::add(&tally.closed_by_node);
                    break;
                }
                sent += 1;
            }
            tokio::time::sleep(TICK).await;
        }
        tokio::time::sleep(TICK).await;
    }
}

/// Connects (and handshakes, if `handshake`), then says nothing;
/// reconnects a tick after the node closes the connection.
async fn silent(addr: &str, tally: &Tally, handshake: bool) {
    loop {
        let stream = if handshake {
            handshaken(addr, tally).await
        } else {
            connect(addr, tally).await
        };
        if let Some(mut stream) = stream {
            let mut buf = [0u8; 64];
            // The node sends nothing unasked: any return is the node
            // closing.
            let _ = stream.read(&mut buf).await;
            Tally::add(&tally.closed_by_node);
        }
        tokio::time::sleep(TICK).await;
    }
}

/// Announces a 4 MiB frame, then sends its body a byte a tick.
async fn trickle(addr: &str, tally: &Tally, offset: Duration) {
    tokio::time::sleep(offset).await;
    loop {
        if let Some(mut stream) = handshaken(addr, tally).await
            && stream.write_all(&TRICKLE_FRAME.to_be_bytes()).await.is_ok()
        {
            loop {
                tokio::time::sleep(TICK).await;
                if closed_by_node(&stream) || stream.write_all(&[0x5a]).await.is_err() {
                    Tally::add(&tally.closed_by_node);
                    break;
                }
            }
        }
        tokio::time::sleep(TICK).await;
    }
}

/// Pipelines gets as fast as the node reads them; never reads a byte.
async fn non_reader(addr: &str, tally: &Tally) {
    let mut batch = Vec::new();
    for id in 1..=64u64 {
        let frame = RequestFrame {
            id,
            timeout_ms: 5000,
            request: Request::Client(ClientRequest::Get {
                key: format!("slow-input-{:04}", id % KEYS as u64).into_bytes(),
                epoch: 0,
            }),
        };
        batch.extend(codec::encode(&frame).expect("encode a get"));
    }
    loop {
        if let Some(mut stream) = handshaken(addr, tally).await {
            // Blocks once the node stops reading; a write error is the
            // node closing the connection.
            while stream.write_all(&batch).await.is_ok() {}
            Tally::add(&tally.closed_by_node);
        }
        tokio::time::sleep(TICK).await;
    }
}

fn report(phases: &[Phase], target: &Path) {
    let config = Config::default();
    println!();
    println!(
        "slow input: one levee-node (max_connections {}, handshake_timeout {} ms, frame_timeout {} ms), \
         closed-loop client {VALUE_BYTES}-byte put/get; {} cores, loopback, nothing pinned",
        config.max_connections,
        config.handshake_timeout_ms,
        config.frame_timeout_ms,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    println!(
        "| phase | attack | ops | errors | p50 µs | p99 µs | p99.9 µs | put / get p99 µs | p99 / alone | target ≤ {TARGET_RATIO}× | CPU node / bench / machine | peak RSS MiB | peak fds | new conns ok | attackers opened / closed by node / failed |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut rows = Vec::new();
    // Each attack against the baseline measured just before it.
    let mut baseline = f64::NAN;
    for p in phases {
        if p.attack.is_none() {
            baseline = p.p99_us;
        }
        let ratio = p.p99_us / baseline;
        let verdict = match p.attack {
            Some(_) if ratio <= TARGET_RATIO => "met",
            Some(_) => "missed",
            None => "",
        };
        println!(
            "| {} | {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} / {:.0} | {} | {} | {:.2} / {:.2} / {:.2} | {:.1} | {} | {}/{} | {} |",
            p.name,
            p.attack.map_or("none", Attack::describe),
            p.ops,
            p.errors,
            p.p50_us,
            p.p99_us,
            p.p999_us,
            p.put_p99_us,
            p.get_p99_us,
            match p.attack {
                Some(_) => format!("×{ratio:.2}"),
                None => "–".to_owned(),
            },
            verdict,
            p.node_cpu,
            p.bench_cpu,
            p.machine_cpu,
            p.rss_peak_kib as f64 / 1024.0,
            p.fds_peak,
            p.probes_ok,
            p.probes,
            if p.attack.is_some() {
                format!("{} / {} / {}", p.opened, p.closed_by_node, p.failed)
            } else {
                "–".to_owned()
            },
        );
        rows.push(json!({
            "phase": p.name,
            "attack": p.attack.map(Attack::describe),
            "attack_connections": p.attack.map(Attack::connections),
            "ops": p.ops,
            "errors": p.errors,
            "top_error": p.top_error.as_ref().map(|(m, n)| json!({"message": m, "count": n})),
            "p50_us": p.p50_us,
            "p99_us": p.p99_us,
            "p999_us": p.p999_us,
            "max_us": p.max_us,
            "baseline_p99_us": baseline,
            "p99_ratio_to_alone": ratio,
            "target_met": p.attack.map(|_| ratio <= TARGET_RATIO),
            "put_p99_us": p.put_p99_us,
            "get_p99_us": p.get_p99_us,
            "node_cpu_cores": p.node_cpu,
            "bench_cpu_cores": p.bench_cpu,
            "machine_cpu_cores": p.machine_cpu,
            "rss_start_kib": p.rss_start_kib,
            "rss_peak_kib": p.rss_peak_kib,
            "fds_start": p.fds_start,
            "fds_peak": p.fds_peak,
            "new_connections_ok": p.probes_ok,
            "new_connections_tried": p.probes,
            "attackers_opened": p.opened,
            "attackers_closed_by_node": p.closed_by_node,
            "attackers_failed": p.failed,
        }));
    }
    for p in phases {
        if let Some((message, count)) = &p.top_error {
            println!("{}: most frequent error ({count}×): {message}", p.name);
        }
    }
    let out = json!({
        "bench": "slow_input",
        "machine": {
            "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
            "network": "loopback",
            "pinned": false,
        },
        "node": {
            "max_connections": config.max_connections,
            "handshake_timeout_ms": config.handshake_timeout_ms,
            "frame_timeout_ms": config.frame_timeout_ms,
            "max_inflight_per_connection": config.max_inflight_per_connection,
        },
        "target_p99_ratio": TARGET_RATIO,
        "phases": rows,
    });
    let path = target.join("slow_input.json");
    match serde_json::to_string_pretty(&out) {
        Ok(text) => match std::fs::write(&path, text) {
            Ok(()) => println!("\nwritten: {}", path.display()),
            Err(e) => eprintln!("cannot write {}: {e}", path.display()),
        },
        Err(e) => eprintln!("cannot encode the results: {e}"),
    }
}
