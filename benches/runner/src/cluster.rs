//! Where the load goes: local `levee-node` processes the runner starts
//! (and signals, on the fault schedule `fault_run.rs` keeps), an existing
//! cluster given by its endpoints (no fault actions), or the docker
//! compose cluster (faults through `docker.rs`); and the events of a run.

use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sys::signal::Signal;
use serde::Serialize;

use super::recovery;
use super::scenario::{Fault, FaultAction, Scenario};
use levee_cli::local_cluster::{ClusterSpec, LocalCluster, node_binary};
use levee_node::tls::issue::{self, Validity};
use levee_node::tls::{Credentials, Transport};

/// Time each node gets to drain and flush on SIGTERM at the end.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// The cluster under load.
pub enum Target {
    /// Processes this run started.
    Local(LocalCluster),
    /// A cluster someone else runs.
    Remote(Vec<String>, Transport),
    /// The docker compose cluster: faults through `docker/cluster.sh`.
    Docker {
        /// Protocol addresses, node i first at index i − 1.
        endpoints: Vec<String>,
        /// Admin addresses, same order.
        admin: Vec<String>,
        /// The script that does the faults.
        script: std::path::PathBuf,
        /// How the run's clients reach it.
        transport: Transport,
    },
}

impl Target {
    /// Starts the scenario's local cluster with its data and logs under
    /// `dir`, or takes its endpoints.
    pub async fn start(scenario: &Scenario, dir: &Path) -> anyhow::Result<Self> {
        let c = &scenario.cluster;
        // An existing cluster with certificates: the run connects as
        // client "root" with the ones in `certs_dir`.
        let transport = match &c.certs_dir {
            Some(certs) if c.nodes.is_none() => Transport::Tls(
                Credentials::client(Path::new(certs), "root")
                    .with_context(|| format!("cluster.certs_dir {certs}"))?,
            ),
            _ => Transport::Plain,
        };
        if let Some(script) = &c.docker {
            let admin = if c.admin_endpoints.is_empty() {
                c.endpoints.iter().map(|a| admin_of(a)).collect()
            } else {
                c.admin_endpoints.clone()
            };
            return Ok(Self::Docker {
                endpoints: c.endpoints.clone(),
                admin,
                script: script.into(),
                transport,
            });
        }
        if !c.endpoints.is_empty() {
            return Ok(Self::Remote(c.endpoints.clone(), transport));
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
            certs_dir: if c.tls {
                Some(issue_certs(&dir.join("certs"), nodes)?)
            } else {
                None
            },
            cpu_quota: c.cpu_quota,
        };
        let cluster = LocalCluster::start(spec, Duration::from_secs(c.ready_timeout_s)).await?;
        Ok(Self::Local(cluster))
    }

    /// How the run's clients reach the cluster.
    pub fn transport(&self) -> Transport {
        match self {
            Self::Local(c) => c.transport().clone(),
            Self::Remote(_, transport) | Self::Docker { transport, .. } => transport.clone(),
        }
    }

    /// Every node's protocol address.
    pub fn endpoints(&self) -> Vec<String> {
        match self {
            Self::Local(c) => c.spec().endpoints(),
            Self::Remote(e, _) => e.clone(),
            Self::Docker { endpoints, .. } => endpoints.clone(),
        }
    }

    /// Every node's admin (HTTP) address: for local nodes the one they
    /// were started with; for an existing cluster, by levee's convention,
    /// the protocol port + 1.
    pub fn admin_endpoints(&self) -> Vec<String> {
        match self {
            Self::Local(c) => (1..=c.spec().nodes).map(|i| c.spec().admin(i)).collect(),
            Self::Remote(e, _) => e.iter().map(|a| admin_of(a)).collect(),
            Self::Docker { admin, .. } => admin.clone(),
        }
    }

    /// The protocol address of local node `index`.
    pub(crate) fn addr(&self, index: u8) -> Option<String> {
        match self {
            Self::Local(c) => Some(c.spec().addr(index)),
            Self::Remote(..) | Self::Docker { .. } => None,
        }
    }

    /// Sends `signal` to local node `node` (a `slow` fault's duty cycle).
    pub(crate) fn signal(&mut self, node: u8, signal: Signal) -> anyhow::Result<()> {
        match self {
            Self::Local(cluster) => cluster.signal(node, signal),
            Self::Remote(..) | Self::Docker { .. } => {
                bail!("signals need local processes; this run targets an existing cluster")
            }
        }
    }

    /// Performs one fault action; for `slow`, the first SIGSTOP of its
    /// duty cycle (`fault_run.rs` sends the rest).
    pub async fn apply(&mut self, fault: &Fault) -> anyhow::Result<()> {
        if let Self::Docker { script, .. } = self {
            return super::docker::apply(script, fault).await;
        }
        let Self::Local(cluster) = self else {
            bail!("fault actions need local processes; this run targets an existing cluster");
        };
        match fault.action {
            FaultAction::Kill => cluster.kill(fault.node).await,
            FaultAction::Stop | FaultAction::Slow => cluster.signal(fault.node, Signal::SIGSTOP),
            FaultAction::Cont => cluster.signal(fault.node, Signal::SIGCONT),
            FaultAction::Restart => cluster.restart(fault.node).await,
            FaultAction::Partition | FaultAction::Heal => {
                bail!("{} needs the docker cluster (cluster.docker)", fault.action)
            }
        }
    }

    /// Stops the local processes cleanly; returns what went wrong.
    pub async fn stop(&mut self) -> Vec<String> {
        match self {
            Self::Local(c) => c.stop_all(STOP_GRACE).await,
            Self::Remote(..) | Self::Docker { .. } => Vec::new(),
        }
    }
}

/// `HOST:PORT+1` for `HOST:PORT` (unchanged if it has no port).
fn admin_of(addr: &str) -> String {
    match addr.rsplit_once(':') {
        Some((host, port)) => match port.parse::<u16>() {
            Ok(p) => format!("{host}:{}", p.saturating_add(1)),
            Err(_) => addr.to_owned(),
        },
        None => addr.to_owned(),
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
    /// `fault` (an action was taken), `fault_failed`, `serving` (a
    /// restarted or resumed node answers again with a leader known), or,
    /// read from the status samples after the run, `down` and `out` (the
    /// node was marked Down, Out) and `redundant` (every partition has R
    /// live replicas again and no move is in flight).
    pub kind: &'static str,
    /// The action, for `fault` and `fault_failed`.
    pub action: Option<FaultAction>,
    /// The node (1-based); 0 for an event of the whole cluster
    /// (`redundant`).
    pub node: u8,
    /// Human detail.
    pub detail: String,
}

impl Event {
    /// Short label for the plot.
    #[cfg(test)]
    pub fn label(&self) -> String {
        self.label_for(&format!("n{}", self.node))
    }

    /// The label of this event happening to `nodes` (`n1,n2`) at once.
    pub fn label_for(&self, nodes: &str) -> String {
        match (self.kind, self.action) {
            ("fault", Some(action)) => format!("{action} {nodes}"),
            (_, Some(action)) => format!("{action} {nodes} failed"),
            (recovery::DOWN, None) => format!("{nodes} down"),
            (recovery::OUT, None) => format!("{nodes} out"),
            (recovery::REDUNDANT, None) => "redundant".to_owned(),
            (_, None) => format!("{nodes} serving"),
        }
    }

    /// Whether `other` is the same thing happening to another node at
    /// about the same moment (within half a second), so one label can
    /// name both.
    pub fn same_moment(&self, other: &Event) -> bool {
        self.kind == other.kind && self.action == other.action && (self.t_s - other.t_s).abs() < 0.5
    }
}

/// Events of a run, shared by the fault task and its watchers. A run has
/// two events per fault at most, so the list stays small.
pub type Events = Arc<Mutex<Vec<Event>>>;

/// Adds an event; a panicked holder of the lock does not lose the rest.
pub(crate) fn push(events: &Events, event: Event) {
    events.lock().unwrap_or_else(|e| e.into_inner()).push(event);
}

/// A CA, one node pair valid for 127.0.0.1..=nodes and the client "root",
/// for a local cluster with `tls = true`: what `levee cert` makes.
fn issue_certs(dir: &Path, nodes: u8) -> anyhow::Result<std::path::PathBuf> {
    let year = Validity::for_lifetime(Duration::from_secs(365 * 86_400));
    let hosts: Vec<String> = (1..=nodes).map(|i| format!("127.0.0.{i}")).collect();
    issue::create_cluster(dir, &hosts, year)?;
    Ok(dir.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(t_s: f64, kind: &'static str, action: Option<FaultAction>, node: u8) -> Event {
        Event {
            t_s,
            kind,
            action,
            node,
            detail: String::new(),
        }
    }

    #[test]
    fn events_at_the_same_moment_share_a_label() {
        let stop = event(15.0, "fault", Some(FaultAction::Stop), 1);
        assert_eq!(stop.label(), "stop n1");
        assert!(stop.same_moment(&event(15.01, "fault", Some(FaultAction::Stop), 2)));
        assert!(!stop.same_moment(&event(15.0, "fault", Some(FaultAction::Cont), 2)));
        assert!(!stop.same_moment(&event(16.0, "fault", Some(FaultAction::Stop), 2)));
        assert_eq!(
            event(25.6, "serving", None, 2).label_for("n2,n3"),
            "n2,n3 serving"
        );
        assert_eq!(event(31.0, "out", None, 2).label(), "n2 out");
        assert_eq!(event(61.0, "redundant", None, 0).label(), "redundant");
    }

    #[test]
    fn the_admin_port_is_the_next_one() {
        assert_eq!(admin_of("10.0.0.1:7400"), "10.0.0.1:7401");
        assert_eq!(admin_of("[::1]:7400"), "[::1]:7401");
        assert_eq!(admin_of("node-1"), "node-1");
    }
}
