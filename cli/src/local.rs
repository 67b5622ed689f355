//! `levee local`: a cluster of real `levee-node` processes on this
//! machine, node i at 127.0.0.i, for trying levee and for development.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use levee_node::client::{Client, ClientConfig};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::time::Instant;

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

struct LocalNode {
    index: u8,
    addr: String,
    admin: String,
    child: Child,
}

/// Runs the cluster until Ctrl-C or SIGTERM, then stops every node
/// cleanly.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let binary = node_binary()?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create {}", args.data_dir.display()))?;
    let zones = args.zones.unwrap_or(args.nodes.min(3)).clamp(1, args.nodes);
    let voters = if args.nodes >= 5 {
        5
    } else if args.nodes >= 3 {
        3
    } else {
        1
    };
    let replicas = args.nodes.min(3);
    let seed = format!("127.0.0.1:{}", args.port);
    let deadline = Instant::now() + Duration::from_secs(args.ready_timeout_secs);

    let mut nodes = Vec::new();
    for index in 1..=args.nodes {
        let addr = format!("127.0.0.{index}:{}", args.port);
        let admin = format!("127.0.0.{index}:{}", args.port + 1);
        let mut cmd = Command::new(&binary);
        cmd.arg("--data-dir")
            .arg(args.data_dir.join(format!("node-{index}")))
            .args(["--listen", &addr, "--admin", &admin])
            .args(["--zone", &format!("zone-{}", (index - 1) % zones + 1)])
            .args([
                "--replicas",
                &replicas.to_string(),
                "--voters",
                &voters.to_string(),
            ]);
        if index == 1 {
            cmd.arg("--init");
        } else {
            cmd.args(["--join", &seed]);
        }
        let log = log_file(&args.data_dir, index)?;
        let child = cmd
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        nodes.push(LocalNode {
            index,
            addr,
            admin,
            child,
        });
        if index == 1 {
            // The others join through node 1: let it come up first.
            wait_for_leader(&seed, deadline, &mut nodes).await?;
        }
    }
    wait_for_members(&seed, usize::from(args.nodes), deadline, &mut nodes).await?;
    print_ready(&nodes, &args.data_dir);

    let outcome = wait_for_stop(&mut nodes).await;
    stop_all(&mut nodes).await;
    outcome
}

fn node_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot locate the levee binary")?;
    let sibling = exe.with_file_name("levee-node");
    if sibling.exists() {
        return Ok(sibling);
    }
    bail!(
        "levee-node not found next to {} (build it with `cargo build --release`, which builds both)",
        exe.display()
    )
}

fn log_file(dir: &Path, index: u8) -> anyhow::Result<std::fs::File> {
    let path = dir.join(format!("node-{index}.log"));
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))
}

fn client(addr: &str) -> Client {
    Client::new(ClientConfig {
        endpoints: vec![addr.to_owned()],
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_secs(2),
        ..ClientConfig::default()
    })
}

fn check_alive(nodes: &mut [LocalNode]) -> anyhow::Result<()> {
    for node in nodes {
        if let Ok(Some(status)) = node.child.try_wait() {
            bail!(
                "node {} exited during startup ({status}); see its log in node-{}.log",
                node.index,
                node.index
            );
        }
    }
    Ok(())
}

async fn wait_for_leader(
    seed: &str,
    deadline: Instant,
    nodes: &mut [LocalNode],
) -> anyhow::Result<()> {
    loop {
        check_alive(nodes)?;
        if let Ok(status) = client(seed).status().await
            && status.leader.is_some()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("node 1 did not elect a leader in time");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_for_members(
    seed: &str,
    count: usize,
    deadline: Instant,
    nodes: &mut [LocalNode],
) -> anyhow::Result<()> {
    loop {
        check_alive(nodes)?;
        if let Ok(status) = client(seed).status().await {
            let members = status.voters.len() + status.learners.len();
            if status.map.nodes.len() >= count && members >= count && status.leader.is_some() {
                // Each node itself must answer with a leader known, so
                // every one is serving before the cluster is called ready.
                let mut all_serving = true;
                for node in nodes.iter() {
                    let serving = client(&node.addr)
                        .status()
                        .await
                        .is_ok_and(|s| s.leader.is_some());
                    all_serving &= serving;
                }
                if all_serving {
                    return Ok(());
                }
            }
        }
        if Instant::now() > deadline {
            bail!("the cluster did not reach {count} members in time; see the node logs");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn print_ready(nodes: &[LocalNode], dir: &Path) {
    let endpoints: Vec<&str> = nodes.iter().map(|n| n.addr.as_str()).collect();
    let endpoints = endpoints.join(",");
    say!(
        "levee local: {} nodes ready (data and logs in {})",
        nodes.len(),
        dir.display()
    );
    for node in nodes {
        say!(
            "  node {}  protocol {}  admin http://{}",
            node.index,
            node.addr,
            node.admin
        );
    }
    say!();
    say!("  export LEVEE_ENDPOINTS={endpoints}");
    say!("  levee put greeting \"hello world\"");
    say!("  levee get greeting");
    say!("  levee status");
    say!();
    say!("Ctrl-C stops the cluster; running this command again restarts it with its data.");
}

async fn wait_for_stop(nodes: &mut [LocalNode]) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut reported = vec![false; nodes.len()];
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            _ = tick.tick() => {
                for (node, reported) in nodes.iter_mut().zip(reported.iter_mut()) {
                    if !*reported && let Ok(Some(status)) = node.child.try_wait() {
                        *reported = true;
                        eprintln!("levee local: node {} exited ({status}); the others keep running", node.index);
                    }
                }
            }
        }
    }
}

async fn stop_all(nodes: &mut [LocalNode]) {
    for node in nodes.iter() {
        if let Some(pid) = node.child.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
    }
    for node in nodes.iter_mut() {
        match tokio::time::timeout(Duration::from_secs(30), node.child.wait()).await {
            Ok(Ok(status)) if status.success() => {}
            Ok(Ok(status)) => eprintln!("levee local: node {} stopped with {status}", node.index),
            _ => {
                eprintln!(
                    "levee local: node {} did not stop in 30 s; killing it",
                    node.index
                );
                let _ = node.child.kill().await;
            }
        }
    }
    say!("levee local: stopped");
}
