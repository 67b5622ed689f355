//! A cluster of real `levee-node` processes on this machine, node i at
//! 127.0.0.i: started, waited for, signalled and stopped. Shared by
//! `levee local` (run until Ctrl-C) and `levee bench` (faults on a
//! schedule).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use levee_node::client::{Client, ClientConfig};

use crate::cpu_quota::CpuQuota;
use levee_node::tls::{Credentials, Transport};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// What to start: everything needed to start node i, or start it again.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// The `levee-node` binary.
    pub binary: PathBuf,
    /// Node i keeps its data in `data_dir/node-i` and its log in
    /// `data_dir/node-i.log`.
    pub data_dir: PathBuf,
    /// Number of nodes (1..=250: one loopback address each).
    pub nodes: u8,
    /// Node i goes to zone `(i-1) % zones + 1`.
    pub zones: u8,
    /// R, for a new cluster.
    pub replicas: u8,
    /// Protocol port on every 127.0.0.i; the admin port is the next one.
    pub port: u16,
    /// Extra flags given to every node.
    pub extra_args: Vec<String>,
    /// Certificates for every node and the client "root" (`levee cert`):
    /// the cluster speaks mutual TLS. `None` starts it `--insecure`.
    pub certs_dir: Option<PathBuf>,
    /// CPUs each node may use (a cgroup quota each, see
    /// [`crate::cpu_quota`]), as if each had its own machine; `None`
    /// leaves them sharing this machine's.
    pub cpu_quota: Option<f64>,
}

impl ClusterSpec {
    /// Raft voters for this many nodes: as many as possible among 1, 3, 5,
    /// so losing a minority never stops metadata changes.
    pub fn voters(&self) -> u8 {
        match self.nodes {
            n if n >= 5 => 5,
            n if n >= 3 => 3,
            _ => 1,
        }
    }

    /// Protocol address of node `index` (1-based).
    pub fn addr(&self, index: u8) -> String {
        format!("127.0.0.{index}:{}", self.port)
    }

    /// Admin (HTTP) address of node `index`.
    pub fn admin(&self, index: u8) -> String {
        format!("127.0.0.{index}:{}", self.port.saturating_add(1))
    }

    /// How a client reaches this cluster: as "root" with `certs_dir`'s
    /// certificates, or plaintext.
    pub fn transport(&self) -> anyhow::Result<Transport> {
        match &self.certs_dir {
            None => Ok(Transport::Plain),
            Some(dir) => {
                let credentials = Credentials::client(dir, "root").with_context(|| {
                    format!(
                        "cannot load client root's certificate from {} (levee cert create-client root)",
                        dir.display()
                    )
                })?;
                Ok(Transport::Tls(credentials))
            }
        }
    }

    /// Every node's protocol address, node 1 first.
    pub fn endpoints(&self) -> Vec<String> {
        (1..=self.nodes).map(|i| self.addr(i)).collect()
    }
}

/// One running (or stopped) node process.
pub struct LocalNode {
    /// 1-based index: the node's loopback host and its order of start.
    pub index: u8,
    /// Protocol address.
    pub addr: String,
    /// Admin address.
    pub admin: String,
    /// `None` once killed and reaped.
    child: Option<Child>,
}

/// The processes of a local cluster. Dropping it kills them (SIGKILL), so
/// an error on the way never leaves nodes behind; [`LocalCluster::stop_all`]
/// stops them cleanly.
pub struct LocalCluster {
    spec: ClusterSpec,
    nodes: Vec<LocalNode>,
    transport: Transport,
    /// Declared after `nodes`, so its groups are removed after the
    /// processes in them are killed.
    quota: Option<CpuQuota>,
}

impl LocalCluster {
    /// Starts every node (node 1 with `--init`, the others joining it) and
    /// waits until all are members and each answers with a leader known.
    pub async fn start(spec: ClusterSpec, ready_timeout: Duration) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&spec.data_dir)
            .with_context(|| format!("cannot create {}", spec.data_dir.display()))?;
        let deadline = Instant::now() + ready_timeout;
        let transport = spec.transport()?;
        let quota = spec
            .cpu_quota
            .map(|cpus| CpuQuota::create(spec.nodes, cpus))
            .transpose()?;
        let mut cluster = Self {
            spec,
            nodes: Vec::new(),
            transport,
            quota,
        };
        let seed = cluster.spec.addr(1);
        for index in 1..=cluster.spec.nodes {
            let child = cluster.spawn(index)?;
            cluster.nodes.push(LocalNode {
                index,
                addr: cluster.spec.addr(index),
                admin: cluster.spec.admin(index),
                child: Some(child),
            });
            if index == 1 {
                // The others join through node 1: let it come up first.
                cluster.wait_for_leader(&seed, deadline).await?;
            } else {
                // One join at a time: the cluster numbers nodes in the
                // order they join, so node i gets id i, and the number
                // `levee local` prints is the one `levee status` and
                // `levee admin drain N` use.
                cluster
                    .wait_for_map_nodes(&seed, usize::from(index), deadline)
                    .await?;
            }
        }
        cluster
            .wait_for_members(&seed, usize::from(cluster.spec.nodes), deadline)
            .await?;
        Ok(cluster)
    }

    /// How clients reach the cluster.
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// What the cluster was started with.
    pub fn spec(&self) -> &ClusterSpec {
        &self.spec
    }

    /// The nodes, node 1 first.
    pub fn nodes(&self) -> &[LocalNode] {
        &self.nodes
    }

    fn spawn(&self, index: u8) -> anyhow::Result<Child> {
        let spec = &self.spec;
        let zones = spec.zones.clamp(1, spec.nodes.max(1));
        let mut cmd = Command::new(&spec.binary);
        cmd.arg("--data-dir")
            .arg(spec.data_dir.join(format!("node-{index}")))
            .args(["--listen", &spec.addr(index), "--admin", &spec.admin(index)])
            .args(["--zone", &format!("zone-{}", (index - 1) % zones + 1)])
            .args(["--replicas", &spec.replicas.to_string()])
            .args(["--voters", &spec.voters().to_string()])
            .args(&spec.extra_args);
        match &spec.certs_dir {
            Some(dir) => cmd.arg("--certs-dir").arg(dir),
            None => cmd.arg("--insecure"),
        };
        // A restarted node has an identity and ignores both flags, so the
        // same command line serves for the first start and every restart.
        if index == 1 {
            cmd.arg("--init");
        } else {
            cmd.args(["--join", &spec.addr(1)]);
        }
        let log = log_file(&spec.data_dir, index)?;
        let child = cmd
            .env_remove("LEVEE_CONFIG")
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", spec.binary.display()))?;
        // Into its CPU quota at once (a restarted node too); if that
        // fails, the child is dropped, and so killed.
        if let (Some(quota), Some(pid)) = (&self.quota, child.id()) {
            quota.place(index, pid)?;
        }
        Ok(child)
    }

    fn node_mut(&mut self, index: u8) -> anyhow::Result<&mut LocalNode> {
        let count = self.nodes.len();
        self.nodes
            .iter_mut()
            .find(|n| n.index == index)
            .with_context(|| format!("no node {index}: the cluster has nodes 1..={count}"))
    }

    /// Sends `signal` to node `index`; fails if it is not running.
    pub fn signal(&mut self, index: u8, signal: Signal) -> anyhow::Result<()> {
        let node = self.node_mut(index)?;
        let pid = node
            .child
            .as_ref()
            .and_then(Child::id)
            .with_context(|| format!("node {index} is not running"))?;
        let pid = i32::try_from(pid).context("process id out of range")?;
        kill(Pid::from_raw(pid), signal)
            .with_context(|| format!("cannot send {signal} to node {index}"))
    }

    /// SIGKILL node `index` and reap it: no flush, no goodbye.
    pub async fn kill(&mut self, index: u8) -> anyhow::Result<()> {
        let node = self.node_mut(index)?;
        let Some(mut child) = node.child.take() else {
            bail!("node {index} is not running");
        };
        // SIGKILL also ends a stopped (SIGSTOP) process.
        child
            .kill()
            .await
            .with_context(|| format!("cannot kill node {index}"))
    }

    /// Starts node `index` again on its data and addresses (killing it
    /// first if it still runs), without waiting for it to serve.
    pub async fn restart(&mut self, index: u8) -> anyhow::Result<()> {
        if let Some(mut child) = self.node_mut(index)?.child.take() {
            let _ = child.kill().await;
        }
        let child = self.spawn(index)?;
        self.node_mut(index)?.child = Some(child);
        Ok(())
    }

    /// SIGTERM node `index` (SIGCONT first, so a paused one can act on
    /// it) and wait up to `grace` for it to exit, killing it after that.
    /// Returns how it ended.
    pub async fn stop(&mut self, index: u8, grace: Duration) -> anyhow::Result<String> {
        let node = self.node_mut(index)?;
        let Some(mut child) = node.child.take() else {
            bail!("node {index} is not running");
        };
        if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGCONT);
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        match tokio::time::timeout(grace, child.wait()).await {
            Ok(Ok(status)) if status.success() => Ok("stopped cleanly".to_owned()),
            Ok(Ok(status)) => Ok(format!("stopped with {status}")),
            _ => {
                let _ = child.kill().await;
                Ok(format!("did not stop in {grace:?}; killed it"))
            }
        }
    }

    /// Starts node `index` again on its data and addresses; fails if it
    /// is running. Does not wait for it to serve.
    pub fn start_again(&mut self, index: u8) -> anyhow::Result<Option<u32>> {
        if self.node_mut(index)?.child.is_some() {
            bail!("node {index} is running (stop or kill it first)");
        }
        let child = self.spawn(index)?;
        let pid = child.id();
        self.node_mut(index)?.child = Some(child);
        Ok(pid)
    }

    /// Node `index`'s process id while it runs.
    pub fn pid(&self, index: u8) -> Option<u32> {
        self.nodes
            .iter()
            .find(|n| n.index == index)
            .and_then(|n| n.child.as_ref())
            .and_then(Child::id)
    }

    /// Nodes whose process exited by itself since the last call, with how.
    pub fn exited(&mut self) -> Vec<(u8, std::process::ExitStatus)> {
        let mut out = Vec::new();
        for node in &mut self.nodes {
            if let Some(child) = node.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                out.push((node.index, status));
                node.child = None;
            }
        }
        out
    }

    fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some((index, status)) = self.exited().first() {
            bail!(
                "node {index} exited during startup ({status}); see its log in {}",
                self.spec
                    .data_dir
                    .join(format!("node-{index}.log"))
                    .display()
            );
        }
        Ok(())
    }

    async fn wait_for_leader(&mut self, seed: &str, deadline: Instant) -> anyhow::Result<()> {
        let transport = self.transport.clone();
        let elected = || async {
            probe(seed, &transport)
                .status()
                .await
                .is_ok_and(|s| s.leader.is_some())
        };
        self.poll(deadline, Duration::from_millis(100), elected, || {
            "node 1 did not elect a leader in time".to_owned()
        })
        .await
    }

    async fn wait_for_map_nodes(
        &mut self,
        seed: &str,
        count: usize,
        deadline: Instant,
    ) -> anyhow::Result<()> {
        let transport = self.transport.clone();
        let joined = || async {
            probe(seed, &transport)
                .map()
                .await
                .is_ok_and(|map| map.nodes.len() >= count)
        };
        self.poll(deadline, Duration::from_millis(50), joined, || {
            format!("node {count} did not join in time; see its log")
        })
        .await
    }

    /// Polls `done` every `every` until it holds, failing if a node exits
    /// or `deadline` passes.
    async fn poll<F: std::future::Future<Output = bool>>(
        &mut self,
        deadline: Instant,
        every: Duration,
        done: impl Fn() -> F,
        late: impl FnOnce() -> String,
    ) -> anyhow::Result<()> {
        loop {
            self.check_alive()?;
            if done().await {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{}", late());
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Each node's id in the cluster map, by its index (`None` if the map
    /// cannot be read or does not list it).
    pub async fn ids(&self) -> Vec<(u8, Option<u64>)> {
        let seed = self.spec.addr(1);
        let map = probe(&seed, &self.transport).map().await.ok();
        self.nodes
            .iter()
            .map(|n| {
                let id = map
                    .as_ref()
                    .and_then(|m| m.node_by_addr(&n.addr))
                    .map(|info| info.id);
                (n.index, id)
            })
            .collect()
    }

    async fn wait_for_members(
        &mut self,
        seed: &str,
        count: usize,
        deadline: Instant,
    ) -> anyhow::Result<()> {
        loop {
            self.check_alive()?;
            if let Ok(status) = probe(seed, &self.transport).status().await {
                let members = status.voters.len() + status.learners.len();
                if status.map.nodes.len() >= count && members >= count && status.leader.is_some() {
                    // Each node itself must answer with a leader known, so
                    // every one is serving before the cluster is called
                    // ready.
                    let mut all_serving = true;
                    for node in &self.nodes {
                        let serving = probe(&node.addr, &self.transport)
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

    /// SIGTERM to every running node (SIGCONT first, so a stopped one can
    /// act on it), then waits up to `grace` for each before killing it.
    /// Returns one line per node that did not exit cleanly.
    pub async fn stop_all(&mut self, grace: Duration) -> Vec<String> {
        for node in &self.nodes {
            if let Some(pid) = node.child.as_ref().and_then(Child::id)
                && let Ok(pid) = i32::try_from(pid)
            {
                let _ = kill(Pid::from_raw(pid), Signal::SIGCONT);
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
        }
        let mut problems = Vec::new();
        for node in &mut self.nodes {
            let Some(mut child) = node.child.take() else {
                continue;
            };
            match tokio::time::timeout(grace, child.wait()).await {
                Ok(Ok(status)) if status.success() => {}
                Ok(Ok(status)) => {
                    problems.push(format!("node {} stopped with {status}", node.index))
                }
                _ => {
                    problems.push(format!(
                        "node {} did not stop in {grace:?}; killed it",
                        node.index
                    ));
                    let _ = child.kill().await;
                }
            }
        }
        problems
    }
}

/// The `levee-node` binary next to this `levee` binary (both are built
/// together).
pub fn node_binary() -> anyhow::Result<PathBuf> {
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

/// A short-fused client for startup probes: a node that does not answer in
/// 2 s is polled again rather than waited on.
pub fn probe(addr: &str, transport: &Transport) -> Client {
    Client::new(ClientConfig {
        endpoints: vec![addr.to_owned()],
        transport: transport.clone(),
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_secs(2),
        ..ClientConfig::default()
    })
}
