//! `levee local`: a cluster of real `levee-node` processes on this
//! machine, node i at 127.0.0.i, for trying levee and for development.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use levee_cli::local_cluster::{ClusterSpec, LocalCluster, LocalNode, node_binary};

/// Prints a line; a closed stdout (the reader went away) is not worth a
/// panic that would leave the nodes running.
macro_rules! say {
    () => {{
        use std::io::Write;
        let _ = writeln!(std::io::stdout());
    }};
    ($($arg:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// Flags of `levee local`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Number of nodes.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=50))]
    nodes: u8,
    /// Number of zones; node i goes to zone (i-1) % zones. Default: up to 3.
    #[arg(long)]
    zones: Option<u8>,
    /// Where the nodes keep their data (node-i/) and logs (node-i.log).
    #[arg(long, default_value = "levee-local")]
    data_dir: PathBuf,
    /// Protocol port; the admin port is the next one.
    #[arg(long, default_value_t = 7400)]
    port: u16,
    /// Time allowed for the cluster to form.
    #[arg(long, default_value_t = 60)]
    ready_timeout_secs: u64,
}

/// Runs the cluster until Ctrl-C or SIGTERM, then stops every node
/// cleanly.
pub async fn run(args: Args, certs_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let spec = ClusterSpec {
        binary: node_binary()?,
        data_dir: args.data_dir.clone(),
        nodes: args.nodes,
        zones: args.zones.unwrap_or(args.nodes.min(3)).clamp(1, args.nodes),
        replicas: args.nodes.min(3),
        port: args.port,
        extra_args: Vec::new(),
        certs_dir: certs_dir.clone(),
        cpu_quota: None,
    };
    let mut cluster =
        LocalCluster::start(spec, Duration::from_secs(args.ready_timeout_secs)).await?;
    let ids = cluster.ids().await;
    print_ready(cluster.nodes(), &ids, &args.data_dir, certs_dir.as_deref());

    let outcome = wait_for_stop(&mut cluster).await;
    for problem in cluster.stop_all(Duration::from_secs(30)).await {
        eprintln!("levee local: {problem}");
    }
    say!("levee local: stopped");
    outcome
}

fn print_ready(
    nodes: &[LocalNode],
    ids: &[(u8, Option<u64>)],
    dir: &Path,
    certs_dir: Option<&Path>,
) {
    let endpoints: Vec<&str> = nodes.iter().map(|n| n.addr.as_str()).collect();
    let endpoints = endpoints.join(",");
    let scheme = if certs_dir.is_some() { "https" } else { "http" };
    say!(
        "levee local: {} nodes ready (data and logs in {})",
        nodes.len(),
        dir.display()
    );
    for node in nodes {
        // A directory made before joins were serialised may number its
        // nodes otherwise: say so, since status and admin use the id.
        let id = ids
            .iter()
            .find(|(i, _)| *i == node.index)
            .and_then(|(_, id)| *id);
        let note = match id {
            Some(id) if id != u64::from(node.index) => format!("  (cluster id {id})"),
            _ => String::new(),
        };
        say!(
            "  node {}  protocol {}  admin {scheme}://{}{note}",
            node.index,
            node.addr,
            node.admin
        );
    }
    say!();
    match certs_dir {
        Some(certs) => {
            say!(
                "  mutual TLS: every port needs a certificate from {}",
                certs.display()
            );
            say!();
            say!("  export LEVEE_ENDPOINTS={endpoints}");
            let absolute = std::fs::canonicalize(certs).unwrap_or_else(|_| certs.to_owned());
            say!("  export LEVEE_CERTS_DIR={}", absolute.display());
        }
        None => {
            say!("  PLAINTEXT (--insecure): no TLS, no authentication; anyone who can reach");
            say!("  these ports can read and write. For a secured cluster see `levee cert`");
            say!("  and run `levee local --certs-dir DIR`.");
            say!();
            say!("  export LEVEE_ENDPOINTS={endpoints}");
            say!("  export LEVEE_INSECURE=1");
        }
    }
    say!("  levee put greeting \"hello world\"");
    say!("  levee get greeting");
    say!("  levee status");
    say!();
    say!("Ctrl-C stops the cluster; running this command again restarts it with its data.");
}

async fn wait_for_stop(cluster: &mut LocalCluster) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            _ = tick.tick() => {
                for (index, status) in cluster.exited() {
                    eprintln!("levee local: node {index} exited ({status}); the others keep running");
                }
            }
        }
    }
}
