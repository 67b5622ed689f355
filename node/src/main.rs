//! `levee-node`: one levee storage node.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use clap::Parser;
use levee_node::admission::Admission;
use levee_node::config::{Config, LogFormat, Overrides};
use levee_node::data::anti_entropy::{self, AntiEntropyConfig};
use levee_node::data::handoff::{self, HandoffConfig};
use levee_node::log_repeats::RepeatLimit;
use levee_node::node::Node;
use levee_node::raft::Cluster;
use levee_node::server::admin::{self, Health};
use levee_node::server::{Server, ServerOptions};
use levee_node::startup::{self, Phase, Startup};
use levee_node::tls::{Credentials, Transport};
use tokio_util::sync::CancellationToken;

/// A levee storage node.
#[derive(Debug, Parser)]
#[command(name = "levee-node", version, about)]
struct Args {
    /// TOML configuration file; flags and LEVEE_* variables override it.
    #[arg(long, env = "LEVEE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
    /// For tests: a FIFO the node opens for reading before it opens
    /// storage, so it waits there (admin port up, storage closed) until
    /// the test opens the FIFO for writing.
    #[arg(long, hide = true, value_name = "FIFO")]
    storage_gate: Option<PathBuf>,
    #[command(flatten)]
    overrides: Overrides,
}

/// jemalloc rather than glibc's malloc: glibc keeps the pages a burst
/// freed in the arena of the thread that freed them, so a node's RSS kept
/// each new high-water mark of a peer's return (the leak soak, BENCHMARKS
/// "Leak soak"); jemalloc gives them back after its decay time, and its
/// counters (`levee_heap_*`) tell memory in use from memory kept.
/// The feature `system-allocator` leaves it out, for a side-by-side run.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    #[cfg(not(feature = "system-allocator"))]
    levee_node::metrics::heap::jemalloc_installed();
    match try_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, cause chain included, for the operator.
            eprintln!("levee-node: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn try_main() -> anyhow::Result<()> {
    // Process start for the startup timeline: first thing, before parsing.
    let started = (Instant::now(), SystemTime::now());
    levee_node::failpoint::setup_from_env();
    let args = Args::parse();
    let config = Config::load(args.config.as_deref(), &args.overrides)?;
    if args.print_config {
        print!("{}", config.to_toml());
        return Ok(());
    }
    let repeat_limit = init_logging(&config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        spawn_repeat_summaries(repeat_limit);
        run(config, args.storage_gate, started).await
    })
}

fn init_logging(config: &Config) -> anyhow::Result<Option<(RepeatLimit, Duration)>> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log)
        .with_context(|| format!("invalid log filter {:?}", config.log))?;
    // Colours only on a terminal: a log file or a collector gets plain
    // text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let interval = Duration::from_millis(config.log_repeat_interval_ms);
    let limit = (!interval.is_zero()).then(|| RepeatLimit::new(interval));
    match config.log_format {
        LogFormat::Text => builder.finish().with(limit.clone()).try_init(),
        LogFormat::Json => builder.json().finish().with(limit.clone()).try_init(),
    }
    .context("cannot set up logging")?;
    Ok(limit.map(|l| (l, interval)))
}

/// Logs, once an interval, what the repeat limit dropped ("N more like
/// this").
fn spawn_repeat_summaries(limit: Option<(RepeatLimit, Duration)>) {
    let Some((limit, interval)) = limit else {
        return;
    };
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            limit.log_summaries(interval);
        }
    });
}

async fn run(
    config: Config,
    storage_gate: Option<PathBuf>,
    (started, started_at): (Instant, SystemTime),
) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    if config.clock_skew_ms != 0 {
        levee_node::hlc::set_skew_ms(config.clock_skew_ms);
        tracing::warn!(
            skew_ms = config.clock_skew_ms,
            "clock_skew_ms: this node's clock is skewed on purpose (fault injection)"
        );
    }
    let open_files = levee_node::server::raise_descriptor_limit();
    tracing::debug!(open_files, "open-file limit");
    // A restart: the data directory already holds a node's metadata.
    // Looked at before anything is opened, since opening creates it.
    let restart = config.meta_dir().exists();
    let startup = Arc::new(Startup::new(started, started_at, restart));
    let health = Arc::new(Health::default());
    // Gentle rejoin: a restarted node is sent its whole share of traffic
    // at once, with a cold cache, so its limit starts low and grows as
    // latency proves it healthy.
    let admission = Arc::new(Admission::new(if restart {
        config.admission_after_restart()
    } else {
        config.admission()
    }));
    let tls = match config.security()? {
        Some(dir) => Some(
            Credentials::node(dir)
                .with_context(|| format!("cannot load the certificates in {}", dir.display()))?,
        ),
        None => {
            tracing::warn!(
                "--insecure: plaintext on every port, no authentication; anyone who can reach this node can read, write and send it cluster messages"
            );
            None
        }
    };
    let transport = tls.clone().map_or(Transport::Plain, Transport::Tls);

    // Liveness first: the admin port answers before storage is open.
    let admin_listener = tokio::net::TcpListener::bind(&config.admin)
        .await
        .with_context(|| format!("cannot bind the admin address {}", config.admin))?;
    // The admin port outlives the protocol server, so /health/ready can
    // report "not ready" while in-flight requests drain.
    let admin_shutdown = CancellationToken::new();
    let admin_task = tokio::spawn(admin::serve(
        admin_listener,
        admin::AdminState {
            health: health.clone(),
            admission: admission.clone(),
            startup: startup.clone(),
            tls: tls.clone(),
        },
        admin_shutdown.clone(),
    ));
    if let Some(tls) = &tls {
        tokio::spawn(levee_node::tls::watch(
            tls.clone(),
            Duration::from_secs(config.cert_warn_before_days * 86_400),
            shutdown.clone(),
        ));
    }
    startup.mark(Phase::AdminListening);
    if let Some(gate) = storage_gate {
        startup::wait_at_gate(&gate)
            .await
            .with_context(|| format!("cannot open the storage gate {}", gate.display()))?;
    }

    let node = open_node(&config, &admission, transport.clone()).await?;
    // Before any request runs: what the last run was handling when it
    // aborted, if it did (struck once the map is here).
    let last_words =
        levee_node::server::last_words::install(&config.data_dir).with_context(|| {
            format!(
                "cannot open the last-words file in {}",
                config.data_dir.display()
            )
        })?;
    startup.mark(Phase::StorageOpen);
    startup.attach_storage(node.storage().clone());

    let options = ServerOptions {
        tls: tls.clone(),
        ..ServerOptions::from(&config)
    };
    let server = Server::bind(&config.listen, node.clone(), options)
        .await
        .with_context(|| format!("cannot bind the protocol address {}", config.listen))?;
    let listen_addr = server.local_addr()?;
    // Serve from here on: Raft RPCs may arrive while this node is still
    // joining, and are answered "unavailable" until the cluster is set.
    let server_task = tokio::spawn(server.run(shutdown.clone()));
    startup.mark(Phase::ProtocolListening);
    tokio::spawn(wait_for_signal(shutdown.clone(), health.clone()));

    let meta_dir = config.meta_dir();
    let meta = levee_node::storage::open_metadata(&meta_dir)
        .with_context(|| format!("cannot open cluster metadata in {}", meta_dir.display()))?;
    // A restarted node loads its persisted map here and does not wait for
    // an election: Raft runs in the background from here on.
    let cluster = Cluster::start(meta, config.cluster(&transport), shutdown.clone())
        .await
        .context("cannot start cluster membership")?;
    node.set_cluster(cluster.clone());
    spawn_background(&config, &node, &cluster, &shutdown);
    if cluster.map().cluster_id == 0 {
        tracing::info!("waiting for the cluster map from the leader");
    }
    let loaded = tokio::select! {
        loaded = cluster.wait_map_loaded() => loaded,
        _ = shutdown.cancelled() => false,
    };
    if !loaded && !shutdown.is_cancelled() {
        anyhow::bail!("Raft stopped before this node received the cluster map; see the log above");
    }
    if loaded {
        startup.mark(Phase::MapLoaded);
        if let Some(shape) = last_words {
            levee_node::server::contain::report_abort(&node, shape);
        }
        health.set_ready(true);
        startup.mark(Phase::Ready);
        tracing::info!(
            listen = %listen_addr,
            admin = %config.admin,
            data_dir = %config.data_dir.display(),
            durability = ?config.durability,
            admission = config.admission,
            restart,
            limit_start = admission.limit(),
            node_id = cluster.node_id(),
            cluster_id = format!("{:x}", cluster.cluster_id()),
            "levee-node ready: {}",
            startup.summary()
        );
        tokio::spawn(startup::watch(
            startup.clone(),
            cluster.clone(),
            admission.clone(),
        ));
        // Shards the first requests did not open yet open now, one at a
        // time, so that later first touches do not wait for an open.
        tokio::spawn(startup::warm_storage(
            startup.clone(),
            node.storage().clone(),
            admission.clone(),
        ));
    }

    let drained = server_task.await.unwrap_or(false);
    if !drained {
        tracing::warn!("shutdown grace period ended with requests still in flight");
    }
    node.storage().flush().await.context("final flush failed")?;
    admin_shutdown.cancel();
    let _ = admin_task.await;
    tracing::info!("levee-node stopped");
    Ok(())
}

/// Opens the node's storage: its layout and the hint instance; data
/// shards open on first touch. sled's open blocks (it reads its snapshot,
/// every segment header and the log written since its last open), so it
/// runs off the async threads and the admin port keeps answering
/// meanwhile, even on a one-core runtime.
async fn open_node(
    config: &Config,
    admission: &Arc<Admission>,
    transport: Transport,
) -> anyhow::Result<Arc<Node>> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    let (opening, admission) = (config.clone(), admission.clone());
    let node = tokio::task::spawn_blocking(move || Node::open_with(&opening, admission, transport))
        .await
        .context("storage open was cancelled")?
        .with_context(|| format!("cannot open storage in {}", config.data_dir.display()))?;
    Ok(Arc::new(node))
}

/// Catch-up and recovery work: started once the node serves and has its
/// cluster (a joining node's map may still be on its way; each task waits
/// for what it needs), each paced by its own budget and slowed further by
/// foreground pressure. None of it delays readiness.
fn spawn_background(
    config: &Config,
    node: &Arc<Node>,
    cluster: &Arc<Cluster>,
    shutdown: &CancellationToken,
) {
    // Hints this node holds for others, replayed at
    // `hint_replay_bytes_per_sec`.
    tokio::spawn(handoff::run(
        node.clone(),
        cluster.clone(),
        HandoffConfig::from(config),
        shutdown.clone(),
    ));
    // Failure detection: every node beats the leader; the leader judges.
    let heartbeat = std::time::Duration::from_millis(config.heartbeat_ms);
    tokio::spawn(levee_node::recovery::heartbeat::run(
        node.clone(),
        cluster.clone(),
        heartbeat,
        shutdown.clone(),
    ));
    tokio::spawn(levee_node::recovery::leader::run(
        cluster.clone(),
        levee_node::recovery::leader::tick(heartbeat),
        shutdown.clone(),
    ));
    // First round after `anti_entropy_startup_delay_ms`, then at
    // `anti_entropy_keys_per_sec`.
    tokio::spawn(anti_entropy::run(
        node.clone(),
        cluster.clone(),
        AntiEntropyConfig::from(config),
        shutdown.clone(),
    ));
    // Moves into this node: copy each partition from a live replica,
    // paced by the senders' byte budgets, then commit the new replica set.
    tokio::spawn(levee_node::recovery::transfer::run(
        node.clone(),
        cluster.clone(),
        shutdown.clone(),
    ));
}

async fn wait_for_signal(shutdown: CancellationToken, health: Arc<Health>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the node with SIGKILL");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
    health.set_ready(false);
    shutdown.cancel();
}
