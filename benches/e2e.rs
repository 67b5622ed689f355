//! End to end: put and get of 1 KiB values through the client, over
//! loopback, to an in-process node; next to the two baselines that say what
//! the protocol costs: the same storage called directly, and a bare TCP
//! echo round trip. The same workload also runs against a 3-node
//! in-process cluster (R = 3, W = 2, the defaults), to show what
//! replication costs next to the single node. After the criterion groups
//! summary tables print the ratios, from their own timed runs (criterion's
//! estimates are not readable from here). The single node also runs with
//! mutual TLS (a CA made for the run), next to the plaintext one, to show
//! what TLS costs.

mod support;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use levee_node::client::{Client, ClientConfig};
use levee_node::cluster::status::ClusterStatus;
use levee_node::config::Config;
use levee_node::node::Node;
use levee_node::raft::Cluster;
use levee_node::server::{Server, ServerOptions};
use levee_node::storage::Durability;
use levee_node::tls::issue::{self, Validity};
use levee_node::tls::{Credentials, Transport};
use support::{CONCURRENCY, Direct, KEYS, VALUE_BYTES, bench_ops, drive};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Size of the echo message: about what a Get request frame takes.
const ECHO_BYTES: usize = 32;

/// How long the summary runs each ops/s figure.
const SUMMARY_RUN: Duration = Duration::from_millis(1500);

/// Sequential round trips behind each summary latency percentile.
const LATENCY_SAMPLES: usize = 2000;

/// Nodes of the cluster case: three, so that every partition has the
/// default three replicas, each in its own zone, and a write waits for two.
const CLUSTER_ZONES: [&str; 3] = ["z1", "z2", "z3"];

/// How long the cluster gets to form. A join, an election and a learner
/// promotion take a few seconds with the default Raft timings; a minute
/// means something is broken, and the bench says so instead of hanging.
const FORM_DEADLINE: Duration = Duration::from_secs(60);

/// Pause between polls of the forming cluster: short next to the 500 ms
/// promotion tick, long enough not to busy the two cores.
const FORM_POLL: Duration = Duration::from_millis(100);

/// A key operation through the client.
#[derive(Debug, Clone, Copy)]
enum Op {
    Put,
    Get,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Self::Put => "put",
            Self::Get => "get",
        }
    }
}

/// In-process nodes serving on loopback, and one client to them.
struct Remote {
    client: Client,
    keys: Vec<Vec<u8>>,
    value: Vec<u8>,
}

/// One in-process node, and what it takes to stop it.
struct Served {
    /// The protocol address it bound and advertises.
    addr: String,
    shutdown: CancellationToken,
    server: JoinHandle<bool>,
    _dir: TempDir,
}

/// A node's credentials and a client's, from one CA.
#[derive(Clone)]
struct Tls {
    node: Arc<Credentials>,
    client: Transport,
}

impl Tls {
    /// A CA, a node pair for 127.0.0.1 and the client "root" in `dir`.
    fn issue(dir: &std::path::Path) -> Self {
        let year = Validity::for_lifetime(Duration::from_secs(365 * 86_400));
        issue::create_cluster(dir, &["127.0.0.1".into()], year)
            .expect("cannot create the certificates");
        Self {
            node: Credentials::node(dir).expect("cannot load the node pair"),
            client: Transport::Tls(
                Credentials::client(dir, "root").expect("cannot load the client pair"),
            ),
        }
    }
}

impl Remote {
    /// One node founding its own cluster, over TLS with `tls`.
    fn start(rt: &Runtime, durability: Durability, tls: Option<Tls>) -> (Arc<Self>, Vec<Served>) {
        rt.block_on(async {
            let node = Served::start(
                Config {
                    durability,
                    storage_shards: support::storage_shards(),
                    ..Config::default()
                },
                tls.as_ref().map(|t| t.node.clone()),
            )
            .await;
            let transport = tls.map_or(Transport::Plain, |t| t.client);
            let remote = Self::connect(vec![node.addr.clone()], transport).await;
            (remote, vec![node])
        })
    }

    /// A cluster of one node per zone of [`CLUSTER_ZONES`]: the first
    /// founds it, the others join through it. The client gets every node
    /// as an endpoint, as a real deployment's would.
    fn start_cluster(rt: &Runtime, durability: Durability) -> (Arc<Self>, Vec<Served>) {
        rt.block_on(async {
            let mut nodes: Vec<Served> = Vec::new();
            for zone in CLUSTER_ZONES {
                let join = nodes.first().map(|n| vec![n.addr.clone()]);
                let config = Config {
                    durability,
                    zone: zone.into(),
                    join: join.unwrap_or_default(),
                    storage_shards: support::storage_shards(),
                    ..Config::default()
                };
                nodes.push(Served::start(config, None).await);
            }
            let endpoints: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
            wait_until_formed(&endpoints).await;
            (Self::connect(endpoints, Transport::Plain).await, nodes)
        })
    }

    /// A client to `endpoints`, connected, with every key written once so
    /// that gets find data.
    async fn connect(endpoints: Vec<String>, transport: Transport) -> Arc<Self> {
        let client = Client::new(ClientConfig {
            endpoints,
            transport,
            ..ClientConfig::default()
        });
        // Connect now, so no measurement includes the handshake.
        client.ping().await.expect("the node does not answer");
        let remote = Arc::new(Self {
            client,
            keys: (0..KEYS).map(support::key).collect(),
            value: support::value(),
        });
        let r = remote.clone();
        drive(CONCURRENCY, KEYS, Duration::MAX, move |i| r.clone().put(i)).await;
        remote
    }

    async fn run(self: Arc<Self>, op: Op, i: u64) {
        match op {
            Op::Put => self.put(i).await,
            Op::Get => self.get(i).await,
        }
    }

    async fn put(self: Arc<Self>, i: u64) {
        let key = &self.keys[(i % KEYS) as usize];
        retrying("put", || self.client.put(key, &self.value)).await;
    }

    async fn get(self: Arc<Self>, i: u64) {
        let key = &self.keys[(i % KEYS) as usize];
        let found = retrying("get", || self.client.get(key)).await;
        assert!(found.is_some(), "the workload reads only keys it filled");
    }
}

/// Attempts one operation may take before the benchmark gives up.
const MAX_TRIES: u32 = 20;

/// Whether an operation has failed in this process (the warning is
/// printed once).
static FAILED_ONCE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Runs `op` until it succeeds, at most [`MAX_TRIES`] times. On a loaded
/// machine a node may answer `Overloaded` or a request may time out even
/// after the client's own retries; counting such an operation as done
/// would inflate the figure, and aborting the whole benchmark loses the
/// others, so it is run again and a warning says the figures are suspect.
async fn retrying<T, E, F, Fut>(what: &str, mut op: F) -> T
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut tries = 0;
    loop {
        tries += 1;
        match op().await {
            Ok(v) => return v,
            Err(e) if tries < MAX_TRIES => {
                if !FAILED_ONCE.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    eprintln!(
                        "e2e: a {what} failed ({e}) and is run again; the machine is probably loaded, so these figures are suspect"
                    );
                }
            }
            Err(e) => panic!("e2e {what} failed {MAX_TRIES} times, the last with: {e}"),
        }
    }
}

impl Served {
    /// Starts a node with `config` in a fresh directory on a free loopback
    /// port, as `levee-node` does minus the admin port and the background
    /// repair (handoff, anti-entropy), which a healthy cluster does not
    /// need. Returns once its Raft runs.
    async fn start(mut config: Config, tls: Option<Arc<Credentials>>) -> Self {
        let dir = tempfile::tempdir().expect("cannot create a temporary directory");
        config.data_dir = dir.path().to_owned();
        config.listen = "127.0.0.1:0".into();
        let node = Arc::new(Node::open(&config).expect("cannot open the node"));
        let options = ServerOptions {
            tls: tls.clone(),
            ..ServerOptions::from(&config)
        };
        let server = Server::bind(&config.listen, node.clone(), options)
            .await
            .expect("cannot bind the node");
        let addr = server.local_addr().expect("no local address").to_string();
        let shutdown = CancellationToken::new();
        // Serving before the cluster starts, as a real node does: a joining
        // node is sent Raft messages as soon as the leader adds it.
        let server = tokio::spawn(server.run(shutdown.clone()));
        // A node serves keys only once it is in a cluster; it founds or
        // joins one advertising the port actually bound.
        config.advertise.clone_from(&addr);
        let meta = sled::Config::new()
            .path(config.meta_dir())
            .open()
            .expect("cannot open the cluster metadata");
        let cluster = Cluster::start(
            meta,
            config.cluster(&tls.map_or(Transport::Plain, Transport::Tls)),
            shutdown.clone(),
        )
        .await
        .expect("cannot start the cluster membership");
        node.set_cluster(cluster);
        Self {
            addr,
            shutdown,
            server,
            _dir: dir,
        }
    }
}

/// Stops nodes: all are told at once, so that none goes on replicating to
/// a peer that is already stopping, then each server is awaited (it lets
/// requests in flight finish).
fn stop(nodes: Vec<Served>, rt: &Runtime) {
    for node in &nodes {
        node.shutdown.cancel();
    }
    rt.block_on(async {
        for node in nodes {
            node.server.await.expect("the server task panicked");
        }
    });
}

/// Waits until the first node sees every node of `endpoints` as a Raft
/// voter under a leader, and every node answers with a leader and the
/// same map, holding them all with no partition short of replicas: so
/// that no measured request meets a stale map or a missing replica.
async fn wait_until_formed(endpoints: &[String]) {
    let clients: Vec<Client> = endpoints
        .iter()
        .map(|addr| {
            Client::new(ClientConfig {
                endpoints: vec![addr.clone()],
                ..ClientConfig::default()
            })
        })
        .collect();
    let deadline = Instant::now() + FORM_DEADLINE;
    loop {
        let mut views = Vec::with_capacity(clients.len());
        for client in &clients {
            views.push(client.status().await.ok());
        }
        if formed(&views) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the {}-node cluster did not form within {FORM_DEADLINE:?}; last views: {}",
            endpoints.len(),
            describe(&views)
        );
        tokio::time::sleep(FORM_POLL).await;
    }
}

/// Whether the nodes' views (the founder's first) show a formed cluster.
fn formed(views: &[Option<ClusterStatus>]) -> bool {
    let Some(Some(first)) = views.first() else {
        return false;
    };
    let n = views.len();
    first.voters.len() == n
        && first.leader.is_some()
        && first.map.nodes.len() == n
        && first.map.under_replicated() == 0
        && views.iter().all(|v| {
            v.as_ref()
                .is_some_and(|v| v.leader.is_some() && v.map.epoch == first.map.epoch)
        })
}

/// The views in one line, for the error when the cluster does not form.
fn describe(views: &[Option<ClusterStatus>]) -> String {
    let view = |v: &Option<ClusterStatus>| match v {
        None => "no answer".to_owned(),
        Some(s) => format!(
            "node {} leader {:?} voters {:?} learners {:?} map epoch {} with {} nodes",
            s.node_id,
            s.leader,
            s.voters,
            s.learners,
            s.map.epoch,
            s.map.nodes.len()
        ),
    };
    views.iter().map(view).collect::<Vec<_>>().join("; ")
}

/// One connection to a loopback echo server.
struct Echo {
    stream: tokio::sync::Mutex<TcpStream>,
}

impl Echo {
    fn start(rt: &Runtime) -> Arc<Self> {
        rt.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0")
                .await
                .expect("cannot bind the echo server");
            let addr: SocketAddr = listener.local_addr().expect("no local address");
            tokio::spawn(async move {
                while let Ok((mut stream, _)) = listener.accept().await {
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(async move {
                        let mut buf = [0u8; 4096];
                        while let Ok(n @ 1..) = stream.read(&mut buf).await {
                            if stream.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    });
                }
            });
            let stream = TcpStream::connect(addr)
                .await
                .expect("cannot connect to the echo server");
            // As the levee client and server do; without it Nagle's
            // algorithm would make this baseline meaningless.
            stream.set_nodelay(true).expect("cannot set TCP_NODELAY");
            Arc::new(Self {
                stream: tokio::sync::Mutex::new(stream),
            })
        })
    }

    async fn round_trip(self: Arc<Self>, _: u64) {
        let mut stream = self.stream.lock().await;
        let message = [7u8; ECHO_BYTES];
        let mut back = [0u8; ECHO_BYTES];
        stream.write_all(&message).await.expect("echo write failed");
        stream
            .read_exact(&mut back)
            .await
            .expect("echo read failed");
    }
}

fn criterion_groups(
    c: &mut Criterion,
    rt: &Runtime,
    echo: &Arc<Echo>,
    direct: &Arc<Direct>,
    remote: &Arc<Remote>,
    tls: &Arc<Remote>,
    cluster: &Arc<Remote>,
) {
    let mut group = c.benchmark_group("tcp_echo");
    group.throughput(Throughput::Elements(1));
    let e = echo.clone();
    bench_ops(&mut group, "round_trip", rt, 1, move |i| {
        e.clone().round_trip(i)
    });
    group.finish();

    let mut group = c.benchmark_group("inprocess_per_write");
    group.throughput(Throughput::Elements(1));
    for concurrency in [1, CONCURRENCY] {
        let d = direct.clone();
        bench_ops(
            &mut group,
            &format!("put/c{concurrency}"),
            rt,
            concurrency,
            move |_| d.clone().put(),
        );
        let d = direct.clone();
        bench_ops(
            &mut group,
            &format!("get/c{concurrency}"),
            rt,
            concurrency,
            move |i| d.clone().get(i),
        );
    }
    group.finish();

    remote_group(c, "e2e_per_write", rt, remote);
    remote_group(c, "e2e_tls_per_write", rt, tls);
    remote_group(c, "e2e_3node_per_write", rt, cluster);
}

/// Put and get through the client, one and many at once.
fn remote_group(c: &mut Criterion, name: &str, rt: &Runtime, remote: &Arc<Remote>) {
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(1));
    for concurrency in [1, CONCURRENCY] {
        let r = remote.clone();
        bench_ops(
            &mut group,
            &format!("put/c{concurrency}"),
            rt,
            concurrency,
            move |i| r.clone().put(i),
        );
        let r = remote.clone();
        bench_ops(
            &mut group,
            &format!("get/c{concurrency}"),
            rt,
            concurrency,
            move |i| r.clone().get(i),
        );
    }
    group.finish();
}

/// Ops/s of `op` at `concurrency`, over [`SUMMARY_RUN`].
fn ops_per_sec<F, Fut>(rt: &Runtime, concurrency: u64, op: F) -> f64
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (ops, took) = rt.block_on(drive(concurrency, u64::MAX, SUMMARY_RUN, op));
    ops as f64 / took.as_secs_f64()
}

/// p50 and p99 of [`LATENCY_SAMPLES`] sequential runs of `op`. Run on a
/// runtime worker, like the criterion figures, since from the `block_on`
/// thread every wake-up would cross threads.
fn latency<F, Fut>(rt: &Runtime, op: F) -> (Duration, Duration)
where
    F: Fn(u64) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let task = rt.spawn(async move {
        let mut samples = Vec::with_capacity(LATENCY_SAMPLES);
        for i in 0..LATENCY_SAMPLES as u64 {
            let start = Instant::now();
            op(i).await;
            samples.push(start.elapsed());
        }
        samples
    });
    let mut samples = rt.block_on(task).expect("the latency task panicked");
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    (at(0.50), at(0.99))
}

fn micros(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

/// Prints the summary table for one durability.
fn summarise(
    rt: &Runtime,
    label: &str,
    echo: &Arc<Echo>,
    direct: &Arc<Direct>,
    remote: &Arc<Remote>,
) {
    // Latencies first, back to back, so that the ratio compares like
    // moments on a noisy machine, and so that neither runs while sled is
    // still writing out the puts of the table below.
    let e = echo.clone();
    let (echo_p50, echo_p99) = latency(rt, move |i| e.clone().round_trip(i));
    let r = remote.clone();
    let (get_p50, get_p99) = latency(rt, move |i| r.clone().get(i));

    println!();
    println!(
        "levee e2e summary: durability {label}, {VALUE_BYTES} B values, one client connection over loopback"
    );
    println!(
        "ops/s over {:.1} s closed-loop runs with 1 or {CONCURRENCY} requests in flight; \
         in-process = the node's storage called directly, same durability and concurrency",
        SUMMARY_RUN.as_secs_f64()
    );
    println!(
        "{:<4} {:>5} {:>14} {:>18} {:>16}",
        "op", "conc", "e2e ops/s", "in-process ops/s", "e2e/in-process"
    );
    for op in ["put", "get"] {
        for concurrency in [1, CONCURRENCY] {
            let (d, r) = (direct.clone(), remote.clone());
            let (inprocess, e2e) = if op == "put" {
                (
                    ops_per_sec(rt, concurrency, move |_| d.clone().put()),
                    ops_per_sec(rt, concurrency, move |i| r.clone().put(i)),
                )
            } else {
                (
                    ops_per_sec(rt, concurrency, move |i| d.clone().get(i)),
                    ops_per_sec(rt, concurrency, move |i| r.clone().get(i)),
                )
            };
            println!(
                "{op:<4} {concurrency:>5} {e2e:>14.0} {inprocess:>18.0} {:>16.3}",
                e2e / inprocess
            );
        }
    }
    println!(
        "get p50 latency: e2e {} / tcp echo ({ECHO_BYTES} B) {} = {:.2}x  \
         (p99: e2e {}, echo {}; {LATENCY_SAMPLES} sequential round trips each)",
        micros(get_p50),
        micros(echo_p50),
        get_p50.as_secs_f64() / echo_p50.as_secs_f64(),
        micros(get_p99),
        micros(echo_p99),
    );
}

/// Prints the 3-node cluster next to the single node.
fn compare_cluster(rt: &Runtime, single: &Arc<Remote>, cluster: &Arc<Remote>) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    compare(
        rt,
        &[
            format!(
                "levee e2e summary: {} nodes (R = 3, W = 2, the defaults) against 1 node, \
                 durability per_write (the default), {VALUE_BYTES} B values",
                CLUSTER_ZONES.len()
            ),
            format!(
                "every node runs in this process, sharing its runtime, {cores} cores and disk; \
                 ops/s over {:.1} s closed-loop runs with 1 or {CONCURRENCY} requests in flight",
                SUMMARY_RUN.as_secs_f64()
            ),
        ],
        ("1-node", single),
        ("3-node", cluster),
    );
}

/// Prints the single node with mutual TLS next to the same node in
/// plaintext.
fn compare_tls(rt: &Runtime, plain: &Arc<Remote>, tls: &Arc<Remote>) {
    compare(
        rt,
        &[
            format!(
                "levee e2e summary: mutual TLS (TLS 1.3, ECDSA P-256, ring) against plaintext, \
                 1 node, durability per_write (the default), {VALUE_BYTES} B values"
            ),
            format!(
                "one client connection each, handshake done before measuring; ops/s over \
                 {:.1} s closed-loop runs with 1 or {CONCURRENCY} requests in flight",
                SUMMARY_RUN.as_secs_f64()
            ),
        ],
        ("plain", plain),
        ("tls", tls),
    );
}

/// Prints `b` next to `a`: same client, same workload, each figure taken
/// alternately on one and the other so that a ratio compares like moments
/// on a noisy machine.
fn compare(
    rt: &Runtime,
    heading: &[String],
    (a_name, single): (&str, &Arc<Remote>),
    (b_name, cluster): (&str, &Arc<Remote>),
) {
    // Latencies first, for the reason given in `summarise`.
    let latencies = [Op::Put, Op::Get].map(|op| {
        let (one, three) = (single.clone(), cluster.clone());
        (
            op,
            latency(rt, move |i| one.clone().run(op, i)),
            latency(rt, move |i| three.clone().run(op, i)),
        )
    });
    println!();
    for line in heading {
        println!("{line}");
    }
    println!(
        "{:<4} {:>5} {:>14} {:>14} {:>15}",
        "op",
        "conc",
        format!("{a_name} ops/s"),
        format!("{b_name} ops/s"),
        format!("{b_name}/{a_name}")
    );
    for op in [Op::Put, Op::Get] {
        for concurrency in [1, CONCURRENCY] {
            let (one, three) = (single.clone(), cluster.clone());
            let one = ops_per_sec(rt, concurrency, move |i| one.clone().run(op, i));
            let three = ops_per_sec(rt, concurrency, move |i| three.clone().run(op, i));
            println!(
                "{:<4} {concurrency:>5} {one:>14.0} {three:>14.0} {:>15.3}",
                op.name(),
                three / one
            );
        }
    }
    println!("latency, {LATENCY_SAMPLES} sequential ops each:");
    println!(
        "{:<4} {:>12} {:>12} {:>7} {:>12} {:>12} {:>7}",
        "op",
        format!("{a_name} p50"),
        format!("{b_name} p50"),
        "ratio",
        format!("{a_name} p99"),
        format!("{b_name} p99"),
        "ratio"
    );
    for (op, (one_p50, one_p99), (three_p50, three_p99)) in latencies {
        println!(
            "{:<4} {:>12} {:>12} {:>6.2}x {:>12} {:>12} {:>6.2}x",
            op.name(),
            micros(one_p50),
            micros(three_p50),
            three_p50.as_secs_f64() / one_p50.as_secs_f64(),
            micros(one_p99),
            micros(three_p99),
            three_p99.as_secs_f64() / one_p99.as_secs_f64(),
        );
    }
}

/// Whether criterion is really benchmarking (`cargo bench`), as opposed
/// to listing, profiling, or smoke-testing under `cargo test --benches`,
/// where a summary would only waste time.
fn benchmarking() -> bool {
    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    has("--bench") && !has("--test") && !has("--list") && !has("--profile-time")
}

fn main() {
    // Small and short: the machine is shared, and a per_write put costs an
    // fsync, so long runs buy little precision.
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    let rt = support::runtime();
    let echo = Echo::start(&rt);
    let direct = Direct::open(&rt, Durability::PerWrite);
    rt.block_on(direct.fill());
    let (remote, mut served) = Remote::start(&rt, Durability::PerWrite, None);
    let certs = tempfile::tempdir().expect("cannot create a temporary directory");
    let (tls, tls_served) =
        Remote::start(&rt, Durability::PerWrite, Some(Tls::issue(certs.path())));
    served.extend(tls_served);
    let (cluster, cluster_served) = Remote::start_cluster(&rt, Durability::PerWrite);
    served.extend(cluster_served);

    criterion_groups(&mut c, &rt, &echo, &direct, &remote, &tls, &cluster);
    c.final_summary();

    if benchmarking() {
        summarise(&rt, "per_write (the default)", &echo, &direct, &remote);
        compare_tls(&rt, &remote, &tls);
        compare_cluster(&rt, &remote, &cluster);
    }
    drop((direct, remote, tls, cluster));
    stop(served, &rt);

    if benchmarking() {
        // The same table with periodic durability, for contrast: cheap,
        // and it separates the fsync's share from the protocol's.
        let direct = Direct::open(&rt, Durability::Periodic);
        rt.block_on(direct.fill());
        let (remote, served) = Remote::start(&rt, Durability::Periodic, None);
        summarise(&rt, "periodic", &echo, &direct, &remote);
        drop((direct, remote));
        stop(served, &rt);
    }
}
