//! `levee local`: a cluster of real `levee-node` processes on this
//! machine, node i at 127.0.0.i, for trying levee and for development.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use levee_cli::local_cluster::{ClusterSpec, LocalCluster, LocalNode, node_binary};
use levee_cli::local_ctl::{self, Action, Job, NodeProcess, Reply, Request};
use tokio::sync::mpsc;

use crate::Output;

/// How long a graceful stop may take before the node is killed.
const STOP_GRACE: Duration = Duration::from_secs(30);

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
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    ctl: Option<Sub>,
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
    /// Time allowed for the cluster to form (60s, 2m).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    ready_timeout: Duration,
}

#[derive(Debug, clap::Subcommand)]
enum Sub {
    /// Act on one node of the `levee local` running on --data-dir:
    /// stop, kill, pause, resume or start it; `ps` lists them.
    Ctl(CtlArgs),
}

/// Flags of `levee local ctl`.
#[derive(Debug, clap::Args)]
struct CtlArgs {
    /// The running `levee local`'s data directory.
    #[arg(long, default_value = "levee-local")]
    data_dir: PathBuf,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Debug, clap::Subcommand)]
enum CtlCommand {
    /// The nodes, their process ids and states (running, paused, stopped).
    Ps,
    /// SIGTERM: the node stops cleanly (killed after 30 s).
    Stop { node: u8 },
    /// SIGKILL: a crash, no flush.
    Kill { node: u8 },
    /// SIGSTOP: the node hangs with its sockets open.
    Pause { node: u8 },
    /// SIGCONT a paused node.
    Resume { node: u8 },
    /// Start a stopped or killed node again on its data.
    Start { node: u8 },
}

impl CtlCommand {
    fn request(&self) -> Request {
        let act = |action, node| Request::Act { action, node };
        match *self {
            CtlCommand::Ps => Request::Ps,
            CtlCommand::Stop { node } => act(Action::Stop, node),
            CtlCommand::Kill { node } => act(Action::Kill, node),
            CtlCommand::Pause { node } => act(Action::Pause, node),
            CtlCommand::Resume { node } => act(Action::Resume, node),
            CtlCommand::Start { node } => act(Action::Start, node),
        }
    }
}

/// Runs the cluster until Ctrl-C or SIGTERM, then stops every node
/// cleanly.
pub async fn run(args: Args, certs_dir: Option<PathBuf>, output: Output) -> anyhow::Result<()> {
    if let Some(Sub::Ctl(ctl)) = args.ctl {
        return control(ctl, output).await;
    }
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create {}", args.data_dir.display()))?;
    // First, so a second run on the same directory is refused naming the
    // first, before it starts nodes that would find their ports taken.
    let ctl = local_ctl::bind(&args.data_dir).await?;
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
    let mut cluster = LocalCluster::start(spec, args.ready_timeout).await?;
    let ids = cluster.ids().await;
    print_ready(cluster.nodes(), &ids, &args.data_dir, certs_dir.as_deref());

    let (jobs, requests) = mpsc::channel(local_ctl::QUEUE);
    tokio::spawn(local_ctl::serve(ctl, jobs));
    let outcome = wait_for_stop(&mut cluster, requests).await;
    let _ = std::fs::remove_file(local_ctl::socket_path(&args.data_dir));
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
    say!(
        "  levee local ctl --data-dir {} kill 3   # also stop, pause, resume, start N; ps",
        dir.display()
    );
    say!();
    say!("Ctrl-C stops the cluster; running this command again restarts it with its data.");
}

async fn wait_for_stop(
    cluster: &mut LocalCluster,
    mut requests: mpsc::Receiver<Job>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            Some((request, reply)) = requests.recv() => {
                let _ = reply.send(act(cluster, request).await);
            }
            _ = tick.tick() => {
                for (index, status) in cluster.exited() {
                    eprintln!("levee local: node {index} exited ({status}); the others keep running");
                }
            }
        }
    }
}

/// Carries out one `levee local ctl` request on the cluster.
async fn act(cluster: &mut LocalCluster, request: Request) -> Reply {
    let done = match request {
        Request::Ps => Ok(String::new()),
        Request::Act { action, node } => match action {
            Action::Stop => cluster
                .stop(node, STOP_GRACE)
                .await
                .map(|how| format!("node {node} {how}")),
            Action::Kill => cluster
                .kill(node)
                .await
                .map(|()| format!("node {node} killed")),
            Action::Pause => cluster
                .signal(node, nix::sys::signal::Signal::SIGSTOP)
                .map(|()| format!("node {node} paused (SIGSTOP); `resume {node}` continues it")),
            Action::Resume => cluster
                .signal(node, nix::sys::signal::Signal::SIGCONT)
                .map(|()| format!("node {node} resumed")),
            Action::Start => cluster.start_again(node).map(|pid| {
                format!(
                    "node {node} started (pid {}); it serves once its storage is open",
                    pid.map_or_else(|| "?".to_owned(), |p| p.to_string())
                )
            }),
        },
    };
    let nodes = cluster
        .nodes()
        .iter()
        .map(|n| {
            let pid = cluster.pid(n.index);
            let state = pid.and_then(local_ctl::process_state).unwrap_or("stopped");
            NodeProcess {
                node: n.index,
                addr: n.addr.clone(),
                pid,
                state: state.to_owned(),
            }
        })
        .collect();
    let (ok, message) = match done {
        Ok(message) => (true, message),
        Err(e) => (false, format!("{e:#}")),
    };
    Reply {
        ok,
        message,
        nodes,
        pid: std::process::id(),
    }
}

/// `levee local ctl`: one request to the running `levee local`, its
/// answer printed.
async fn control(args: CtlArgs, output: Output) -> anyhow::Result<()> {
    // A stop may wait out its grace period.
    let timeout = STOP_GRACE + Duration::from_secs(10);
    let reply = local_ctl::send(&args.data_dir, &args.command.request(), timeout).await?;
    if !reply.ok {
        anyhow::bail!("{}", reply.message);
    }
    match output {
        Output::Json => say!(
            "{}",
            serde_json::to_string(&reply).context("cannot encode")?
        ),
        Output::Text => {
            if !reply.message.is_empty() {
                say!("{}", reply.message);
            }
            if matches!(args.command, CtlCommand::Ps) {
                say!("{:<5} {:<22} {:<8} STATE", "NODE", "ADDRESS", "PID");
                for n in &reply.nodes {
                    let pid = n.pid.map_or_else(|| "-".to_owned(), |p| p.to_string());
                    say!("{:<5} {:<22} {:<8} {}", n.node, n.addr, pid, n.state);
                }
            }
        }
    }
    Ok(())
}
