//! End to end: put and get of 1 KiB values through the client, over
//! loopback, to an in-process node; next to the two baselines that say what
//! the protocol costs: the same storage called directly, and a bare TCP
//! echo round trip. After the criterion groups a summary table prints the
//! ratios, from its own timed runs (criterion's estimates are not readable
//! from here).

mod support;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use levee_node::client::{Client, ClientConfig};
use levee_node::cluster::Cluster;
use levee_node::config::Config;
use levee_node::server::{Node, Server, ServerOptions};
use levee_node::storage::Durability;
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

/// A node serving on loopback, and one client (one connection) to it.
struct Remote {
    client: Client,
    keys: Vec<Vec<u8>>,
    value: Vec<u8>,
}

/// What it takes to stop the node of a [`Remote`].
struct Served {
    shutdown: CancellationToken,
    server: JoinHandle<bool>,
    _dir: TempDir,
}

impl Remote {
    fn start(rt: &Runtime, durability: Durability) -> (Arc<Self>, Served) {
        let dir = tempfile::tempdir().expect("cannot create a temporary directory");
        let mut config = Config {
            data_dir: dir.path().to_owned(),
            listen: "127.0.0.1:0".into(),
            durability,
            ..Config::default()
        };
        rt.block_on(async {
            let node = Arc::new(Node::open(&config).expect("cannot open the node"));
            let server = Server::bind(&config.listen, node.clone(), ServerOptions::from(&config))
                .await
                .expect("cannot bind the node");
            let addr = server.local_addr().expect("no local address");
            let shutdown = CancellationToken::new();
            let server = tokio::spawn(server.run(shutdown.clone()));
            // A node serves keys only once it is in a cluster; this one
            // founds its own, advertising the port actually bound.
            config.advertise = addr.to_string();
            let meta = sled::Config::new()
                .path(config.meta_dir())
                .open()
                .expect("cannot open the cluster metadata");
            let cluster = Cluster::start(meta, config.cluster(), shutdown.clone())
                .await
                .expect("cannot start the cluster membership");
            node.set_cluster(cluster);
            let client = Client::new(ClientConfig {
                endpoints: vec![addr.to_string()],
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
            let served = Served {
                shutdown,
                server,
                _dir: dir,
            };
            (remote, served)
        })
    }

    async fn put(self: Arc<Self>, i: u64) {
        let key = &self.keys[(i % KEYS) as usize];
        self.client
            .put(key, &self.value)
            .await
            .expect("e2e put failed");
    }

    async fn get(self: Arc<Self>, i: u64) {
        let key = &self.keys[(i % KEYS) as usize];
        let found = self.client.get(key).await.expect("e2e get failed");
        assert!(found.is_some(), "the workload reads only keys it filled");
    }
}

impl Served {
    /// Stops the node; its client must be gone, or draining waits for it.
    fn stop(self, rt: &Runtime) {
        self.shutdown.cancel();
        rt.block_on(self.server).expect("the server task panicked");
    }
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

    let mut group = c.benchmark_group("e2e_per_write");
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
    let (remote, served) = Remote::start(&rt, Durability::PerWrite);

    criterion_groups(&mut c, &rt, &echo, &direct, &remote);
    c.final_summary();

    if benchmarking() {
        summarise(&rt, "per_write (the default)", &echo, &direct, &remote);
    }
    drop((direct, remote));
    served.stop(&rt);

    if benchmarking() {
        // The same table with periodic durability, for contrast: cheap,
        // and it separates the fsync's share from the protocol's.
        let direct = Direct::open(&rt, Durability::Periodic);
        rt.block_on(direct.fill());
        let (remote, served) = Remote::start(&rt, Durability::Periodic);
        summarise(&rt, "periodic", &echo, &direct, &remote);
        drop((direct, remote));
        served.stop(&rt);
    }
}
