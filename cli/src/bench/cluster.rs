//! Where the load goes: local `levee-node` processes the runner starts
//! (and signals, on the fault schedule), or an existing cluster given by
//! its endpoints (no fault actions yet; the docker cluster will add them).

use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sys::signal::Signal;
use serde::Serialize;
use tokio::time::Instant;

use super::scenario::{Fault, FaultAction, Scenario};
use crate::local_cluster::{ClusterSpec, LocalCluster, node_binary, probe};

/// Time a restarted or resumed node gets to serve again before the runner
/// stops watching for it (the event is then missing from the report).
const SERVING_DEADLINE: Duration = Duration::from_secs(60);

/// Time each node gets to drain and flush on SIGTERM at the end.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// The cluster under load.
pub enum Target {
    /// Processes this run started.
    Local(LocalCluster),
    /// A cluster someone else runs.
    Remote(Vec<String>),
}

impl Target {
    /// Starts the scenario's local cluster with its data and logs under
    /// `dir`, or takes its endpoints.
    pub async fn start(scenario: &Scenario, dir: &Path) -> anyhow::Result<Self> {
        let c = &scenario.cluster;
        if !c.endpoints.is_empty() {
            return Ok(Self::Remote(c.endpoints.clone()));
        }
        let nodes = c.nodes.context("cluster.nodes is missing")?;
        let mut extra_args = c.node_flags.clone();
        if let Some(d) = &c.durability {
            extra_args.extend(["--durability".to_owned(), d.clone()]);
        }
        let spec = ClusterSpec {
            binary: node_binary()?,
            data_dir: dir.to_path_buf(),
            nodes,
            zones: c.zones.unwrap_or(nodes.min(3)),
            replicas: c.replicas.unwrap_or(nodes.min(3)),
            port: match c.port {
                Some(p) => p,
                None => free_port(nodes)?,
            },
            extra_args,
        };
        let cluster = LocalCluster::start(spec, Duration::from_secs(c.ready_timeout_s)).await?;
        Ok(Self::Local(cluster))
    }

    /// Every node's protocol address.
    pub fn endpoints(&self) -> Vec<String> {
        match self {
            Self::Local(c) => c.spec().endpoints(),
            Self::Remote(e) => e.clone(),
        }
    }

    /// The protocol address of local node `index`.
    fn addr(&self, index: u8) -> Option<String> {
        match self {
            Self::Local(c) => Some(c.spec().addr(index)),
            Self::Remote(_) => None,
        }
    }

    /// Performs one fault action.
    pub async fn apply(&mut self, fault: &Fault) -> anyhow::Result<()> {
        let Self::Local(cluster) = self else {
            bail!("fault actions need local processes; this run targets an existing cluster");
        };
        match fault.action {
            FaultAction::Kill => cluster.kill(fault.node).await,
            FaultAction::Stop => cluster.signal(fault.node, Signal::SIGSTOP),
            FaultAction::Cont => cluster.signal(fault.node, Signal::SIGCONT),
            FaultAction::Restart => cluster.restart(fault.node).await,
        }
    }

    /// Stops the local processes cleanly; returns what went wrong.
    pub async fn stop(&mut self) -> Vec<String> {
        match self {
            Self::Local(c) => c.stop_all(STOP_GRACE).await,
            Self::Remote(_) => Vec::new(),
        }
    }
}

/// A port free (with the next one, for admin) on 127.0.0.1..=nodes, so a
/// run never collides with a cluster already running on 7400.
fn free_port(nodes: u8) -> anyhow::Result<u16> {
    for _ in 0..100 {
        let probe = TcpListener::bind("127.0.0.1:0").context("cannot bind 127.0.0.1")?;
        let port = probe.local_addr().context("no local address")?.port();
        drop(probe);
        if port == u16::MAX {
            continue;
        }
        let free = (1..=nodes).all(|h| {
            TcpListener::bind(format!("127.0.0.{h}:{port}")).is_ok()
                && TcpListener::bind(format!("127.0.0.{h}:{}", port + 1)).is_ok()
        });
        if free {
            return Ok(port);
        }
    }
    bail!("no port free on 127.0.0.1..={nodes} after 100 tries; set cluster.port")
}

/// Something that happened to the cluster during the run.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Seconds since the start of the measured run.
    pub t_s: f64,
    /// `fault` (an action was taken), `fault_failed`, or `serving` (a
    /// restarted or resumed node answers again with a leader known).
    pub kind: &'static str,
    /// The action, for `fault` and `fault_failed`.
    pub action: Option<FaultAction>,
    /// The node (1-based).
    pub node: u8,
    /// Human detail.
    pub detail: String,
}

impl Event {
    /// Short label for the plot.
    pub fn label(&self) -> String {
        match self.action {
            Some(action) if self.kind == "fault" => format!("{action} n{}", self.node),
            Some(action) => format!("{action} n{} failed", self.node),
            None => format!("n{} serving", self.node),
        }
    }
}

/// Events of a run, shared by the fault task and its watchers. A run has
/// two events per fault at most, so the list stays small.
pub type Events = Arc<Mutex<Vec<Event>>>;

fn push(events: &Events, event: Event) {
    events.lock().unwrap_or_else(|e| e.into_inner()).push(event);
}

/// Applies the faults at their times (from `start`), recording each. For
/// a restart or a resume, a watcher records when the node serves again.
/// Returns the target when the last fault is done.
pub async fn run_faults(
    mut target: Target,
    faults: Vec<Fault>,
    start: Instant,
    events: Events,
) -> Target {
    for fault in faults {
        tokio::time::sleep_until(start + Duration::from_secs_f64(fault.at_s)).await;
        let t_s = start.elapsed().as_secs_f64();
        let result = target.apply(&fault).await;
        let (kind, detail) = match &result {
            Ok(()) => ("fault", format!("{} node {}", fault.action, fault.node)),
            Err(e) => ("fault_failed", format!("{e:#}")),
        };
        eprintln!("levee bench: {t_s:6.1} s  {detail}");
        push(
            &events,
            Event {
                t_s,
                kind,
                action: Some(fault.action),
                node: fault.node,
                detail,
            },
        );
        let comes_back = matches!(fault.action, FaultAction::Restart | FaultAction::Cont);
        if result.is_ok()
            && comes_back
            && let Some(addr) = target.addr(fault.node)
        {
            tokio::spawn(watch_serving(addr, fault.node, start, events.clone()));
        }
    }
    target
}

/// Polls a node until it answers with a leader known, then records it.
async fn watch_serving(addr: String, node: u8, start: Instant, events: Events) {
    let deadline = Instant::now() + SERVING_DEADLINE;
    while Instant::now() < deadline {
        let client = probe(&addr);
        if let Ok(Ok(status)) = tokio::time::timeout(Duration::from_secs(3), client.status()).await
            && status.leader.is_some()
        {
            let t_s = start.elapsed().as_secs_f64();
            eprintln!("levee bench: {t_s:6.1} s  node {node} serving again");
            push(
                &events,
                Event {
                    t_s,
                    kind: "serving",
                    action: None,
                    node,
                    detail: format!("node {node} answers with a leader known"),
                },
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
