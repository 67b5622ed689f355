//! `levee-node`: one levee storage node.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use levee_node::admission::Admission;
use levee_node::cluster::Cluster;
use levee_node::config::{Config, LogFormat, Overrides};
use levee_node::data::{anti_entropy, handoff};
use levee_node::server::admin::{self, Health};
use levee_node::server::{Node, Server, ServerOptions};
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
    #[command(flatten)]
    overrides: Overrides,
}

fn main() -> ExitCode {
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
    let started = Instant::now();
    let args = Args::parse();
    let config = Config::load(args.config.as_deref(), &args.overrides)?;
    if args.print_config {
        print!("{}", config.to_toml());
        return Ok(());
    }
    init_logging(&config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run(config, started))
}

fn init_logging(config: &Config) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log)
        .with_context(|| format!("invalid log filter {:?}", config.log))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

async fn run(config: Config, started: Instant) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let health = Arc::new(Health::default());
    let admission = Arc::new(Admission::new(config.admission()));

    // Liveness first: the admin port answers before storage is open.
    let admin_listener = tokio::net::TcpListener::bind(&config.admin)
        .await
        .with_context(|| format!("cannot bind the admin address {}", config.admin))?;
    // The admin port outlives the protocol server, so /health/ready can
    // report "not ready" while in-flight requests drain.
    let admin_shutdown = CancellationToken::new();
    let admin_task = tokio::spawn(admin::serve(
        admin_listener,
        health.clone(),
        admission.clone(),
        admin_shutdown.clone(),
    ));
    let admin_ms = started.elapsed().as_millis();

    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    let node = Arc::new(
        Node::open_with(&config, admission)
            .with_context(|| format!("cannot open storage in {}", config.data_dir.display()))?,
    );
    let storage_ms = started.elapsed().as_millis();

    let server = Server::bind(&config.listen, node.clone(), ServerOptions::from(&config))
        .await
        .with_context(|| format!("cannot bind the protocol address {}", config.listen))?;
    let listen_addr = server.local_addr()?;
    // Serve from here on: Raft RPCs may arrive while this node is still
    // joining, and are answered "unavailable" until the cluster is set.
    let server_task = tokio::spawn(server.run(shutdown.clone()));
    tokio::spawn(wait_for_signal(shutdown.clone(), health.clone()));

    let meta_dir = config.meta_dir();
    let meta = sled::Config::new()
        .path(&meta_dir)
        .open()
        .with_context(|| format!("cannot open cluster metadata in {}", meta_dir.display()))?;
    let cluster = Cluster::start(meta, config.cluster(), shutdown.clone())
        .await
        .context("cannot start cluster membership")?;
    node.set_cluster(cluster.clone());
    // Catch-up work runs in the background, throttled, after the node
    // serves.
    tokio::spawn(handoff::run(
        node.clone(),
        cluster.clone(),
        config.handoff(),
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
        heartbeat,
        shutdown.clone(),
    ));
    tokio::spawn(anti_entropy::run(
        node.clone(),
        cluster.clone(),
        config.anti_entropy(),
        shutdown.clone(),
    ));
    // Moves into this node: copy each partition from a live replica,
    // paced by the senders' byte budgets, then commit the new replica set.
    tokio::spawn(levee_node::recovery::transfer::run(
        node.clone(),
        cluster.clone(),
        shutdown.clone(),
    ));
    health.set_ready(true);
    tracing::info!(
        listen = %listen_addr,
        admin = %config.admin,
        data_dir = %config.data_dir.display(),
        durability = ?config.durability,
        admission = config.admission,
        admin_ms,
        storage_open_ms = storage_ms,
        ready_ms = started.elapsed().as_millis(),
        node_id = cluster.node_id(),
        cluster_id = format!("{:x}", cluster.cluster_id()),
        "levee-node ready"
    );

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
