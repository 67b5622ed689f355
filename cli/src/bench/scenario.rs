//! The scenario file: what cluster, what load, what faults. One serde
//! struct per table, unknown keys refused, defaults defined once here, and
//! [`Scenario::validate`] turning every inconsistency into one line that
//! names the key.

use std::path::Path;

use anyhow::{Context, bail};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// A whole scenario file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Name used in reports and the default output directory; defaults to
    /// the file's stem.
    #[serde(default)]
    pub name: String,
    /// One line on what the scenario shows, copied into the reports.
    #[serde(default)]
    pub description: String,
    /// Where the load goes.
    pub cluster: ClusterConfig,
    /// Keys written before the measured run.
    #[serde(default)]
    pub preload: Preload,
    /// The measured load.
    pub workload: Workload,
    /// What happens to the cluster during the run, in time order.
    #[serde(default)]
    pub faults: Vec<Fault>,
}

/// The cluster: local processes started by the runner, or an existing
/// cluster given by `endpoints`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Existing nodes (`HOST:PORT`). When set, nothing is started and only
    /// `faults = []` is allowed (fault actions need the processes).
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// Local processes to start, node i on 127.0.0.i.
    pub nodes: Option<u8>,
    /// Zones; node i goes to zone `(i-1) % zones + 1`. Default: up to 3.
    pub zones: Option<u8>,
    /// R. Default: up to 3. W and the read quorum are majorities of R.
    pub replicas: Option<u8>,
    /// `per_write` or `periodic` (the node's `--durability`).
    pub durability: Option<String>,
    /// Protocol port on every 127.0.0.i (admin: the next one). Default:
    /// one found free on all the hosts, so runs do not collide.
    pub port: Option<u16>,
    /// Extra `levee-node` flags for every node, e.g.
    /// `["--raft-heartbeat-ms", "100"]`.
    #[serde(default)]
    pub node_flags: Vec<String>,
    /// Time allowed for the cluster to form (s).
    #[serde(default = "default_ready_timeout_s")]
    pub ready_timeout_s: u64,
}

fn default_ready_timeout_s() -> u64 {
    60
}

/// Keys written before the run, so reads find data.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preload {
    /// Keys 0..keys of the workload's key space. 0: no preload.
    #[serde(default)]
    pub keys: u64,
    /// Value sizes.
    #[serde(default = "default_value_size")]
    pub value_bytes: ValueSize,
    /// Writes in flight at once: enough to fill the pipes, few enough not
    /// to time out on a small machine.
    #[serde(default = "default_preload_concurrency")]
    pub concurrency: usize,
}

impl Default for Preload {
    fn default() -> Self {
        Self {
            keys: 0,
            value_bytes: default_value_size(),
            concurrency: default_preload_concurrency(),
        }
    }
}

fn default_preload_concurrency() -> usize {
    64
}

fn default_value_size() -> ValueSize {
    ValueSize::Fixed(1024)
}

/// A value size: a fixed count of bytes, or uniform in `min..=max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    untagged,
    expecting = "a byte count (1024) or a range { min = 512, max = 4096 }"
)]
pub enum ValueSize {
    /// Always this many bytes.
    Fixed(u32),
    /// Uniform in `min..=max`.
    Uniform {
        /// Smallest.
        min: u32,
        /// Largest.
        max: u32,
    },
}

impl ValueSize {
    /// The largest size this can produce.
    pub fn max(&self) -> u32 {
        match *self {
            Self::Fixed(n) => n,
            Self::Uniform { max, .. } => max,
        }
    }

    /// One size.
    pub fn sample(&self, rng: &mut impl Rng) -> u32 {
        match *self {
            Self::Fixed(n) => n,
            Self::Uniform { min, max } => rng.random_range(min..=max),
        }
    }
}

/// The measured, open-loop load.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// Constant target rate (ops/s). Give this or `ramp`.
    pub rate: Option<f64>,
    /// Rate ramp `[from, to]` (ops/s), linear over the run.
    pub ramp: Option<[f64; 2]>,
    /// Length of the measured run (s).
    pub duration_s: u64,
    /// Operation mix; fractions summing to 1.
    #[serde(default)]
    pub mix: Mix,
    /// Size of the key space (keys 0..keys).
    pub keys: u64,
    /// Which keys: `uniform` or `zipfian`.
    #[serde(default)]
    pub distribution: KeyDistribution,
    /// Zipfian skew (0 < theta < 1; YCSB uses 0.99).
    #[serde(default = "default_theta")]
    pub theta: f64,
    /// Sizes of written values.
    #[serde(default = "default_value_size")]
    pub value_bytes: ValueSize,
    /// Client instances (each its own connections to every node); request
    /// n goes through instance n % connections.
    #[serde(default = "default_connections")]
    pub connections: usize,
    /// The client's request timeout (ms), failover included: what an
    /// application would set. Short enough that a dead replica costs one
    /// failover, not the run.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Requests in flight at once, at most. Past it a scheduled request is
    /// counted as dropped by the generator instead of delaying the ones
    /// behind it (which would hide latency). Large: reaching it means the
    /// cluster is far behind.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Seconds at the start left out of the before-fault baseline (cold
    /// connections and caches).
    #[serde(default = "default_warmup_s")]
    pub warmup_s: u64,
    /// Seed for keys, ops and sizes, so two runs offer the same load.
    #[serde(default = "default_seed")]
    pub seed: u64,
}

fn default_theta() -> f64 {
    0.99
}
fn default_connections() -> usize {
    4
}
fn default_request_timeout_ms() -> u64 {
    1000
}
fn default_max_in_flight() -> usize {
    20_000
}
fn default_warmup_s() -> u64 {
    2
}
fn default_seed() -> u64 {
    1
}

/// Fractions of gets, puts and deletes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mix {
    /// Reads.
    #[serde(default)]
    pub get: f64,
    /// Writes.
    #[serde(default)]
    pub put: f64,
    /// Deletes.
    #[serde(default)]
    pub delete: f64,
}

impl Default for Mix {
    fn default() -> Self {
        Self {
            get: 0.8,
            put: 0.2,
            delete: 0.0,
        }
    }
}

/// How keys are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyDistribution {
    /// Every key equally likely.
    #[default]
    Uniform,
    /// A few hot keys (rank k has weight 1/k^theta).
    Zipfian,
}

/// One fault at a time in the run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// Seconds after the start of the measured run.
    pub at_s: f64,
    /// What to do.
    pub action: FaultAction,
    /// Which node (1-based: node i runs on 127.0.0.i).
    pub node: u8,
}

/// A fault action on a local node process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultAction {
    /// SIGKILL: the process dies without flushing.
    Kill,
    /// SIGSTOP: the process freezes; connections stay open, answers stop.
    Stop,
    /// SIGCONT: a stopped process resumes.
    Cont,
    /// Start the process again on its data (killing it first if needed).
    Restart,
}

impl std::fmt::Display for FaultAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Kill => "kill",
            Self::Stop => "stop",
            Self::Cont => "cont",
            Self::Restart => "restart",
        })
    }
}

impl Scenario {
    /// Reads, parses and validates a scenario file; the name defaults to
    /// the file's stem.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let mut scenario = Self::parse(&text).with_context(|| format!("in {}", path.display()))?;
        if scenario.name.is_empty() {
            scenario.name = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("scenario")
                .to_owned();
        }
        Ok(scenario)
    }

    /// Parses and validates scenario text.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut scenario: Self = toml::from_str(text)?;
        scenario.faults.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
        scenario.validate()?;
        Ok(scenario)
    }

    /// Whether the runner starts the processes itself.
    pub fn is_local(&self) -> bool {
        self.cluster.endpoints.is_empty()
    }

    /// The target rate at the start and the end of the run.
    pub fn rates(&self) -> (f64, f64) {
        match (self.workload.rate, self.workload.ramp) {
            (Some(r), _) => (r, r),
            (None, Some([from, to])) => (from, to),
            (None, None) => (0.0, 0.0),
        }
    }

    /// Checks everything a run would otherwise trip over halfway.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.validate_cluster()?;
        self.validate_workload()?;
        self.validate_faults()
    }

    fn validate_cluster(&self) -> anyhow::Result<()> {
        let c = &self.cluster;
        if !c.endpoints.is_empty() {
            if c.nodes.is_some() || c.zones.is_some() || c.replicas.is_some() {
                bail!(
                    "cluster: give either endpoints (an existing cluster) or nodes/zones/replicas (local processes), not both"
                );
            }
            if c.durability.is_some() || c.port.is_some() || !c.node_flags.is_empty() {
                bail!(
                    "cluster: durability, port and node_flags configure local processes; an existing cluster (endpoints) keeps its own settings"
                );
            }
            return Ok(());
        }
        let Some(nodes) = c.nodes else {
            bail!("cluster: give nodes = N (local processes) or endpoints = [\"HOST:PORT\", ...]");
        };
        if !(1..=250).contains(&nodes) {
            bail!(
                "cluster.nodes is {nodes}; local clusters have 1 to 250 nodes (one 127.0.0.i each)"
            );
        }
        if c.zones.is_some_and(|z| z == 0 || z > nodes) {
            bail!("cluster.zones must be between 1 and nodes ({nodes})");
        }
        if c.replicas.is_some_and(|r| r == 0 || r > nodes) {
            bail!("cluster.replicas must be between 1 and nodes ({nodes})");
        }
        if let Some(d) = &c.durability
            && d != "per_write"
            && d != "periodic"
        {
            bail!("cluster.durability is {d:?}; use \"per_write\" or \"periodic\"");
        }
        if c.port.is_some_and(|p| p == 0 || p == u16::MAX) {
            bail!("cluster.port must be between 1 and 65534 (the admin port is port + 1)");
        }
        Ok(())
    }

    fn validate_workload(&self) -> anyhow::Result<()> {
        let w = &self.workload;
        match (w.rate, w.ramp) {
            (Some(_), Some(_)) => bail!("workload: give rate or ramp, not both"),
            (None, None) => bail!("workload: give rate = OPS_PER_S or ramp = [FROM, TO]"),
            _ => {}
        }
        let (from, to) = self.rates();
        if !(from.is_finite() && to.is_finite()) || from < 0.0 || to < 0.0 || from + to <= 0.0 {
            bail!("workload rate must be positive ops/s (ramp ends may be 0, not both)");
        }
        if w.duration_s == 0 {
            bail!("workload.duration_s must be at least 1");
        }
        if w.keys == 0 {
            bail!("workload.keys must be at least 1");
        }
        if self.preload.keys > w.keys {
            bail!(
                "preload.keys ({}) is more than workload.keys ({}); the preload writes the workload's keys",
                self.preload.keys,
                w.keys
            );
        }
        let m = w.mix;
        if [m.get, m.put, m.delete]
            .iter()
            .any(|f| !f.is_finite() || *f < 0.0)
            || ((m.get + m.put + m.delete) - 1.0).abs() > 1e-6
        {
            bail!(
                "workload.mix fractions must be non-negative and sum to 1 (get {} + put {} + delete {})",
                m.get,
                m.put,
                m.delete
            );
        }
        if w.distribution == KeyDistribution::Zipfian && !(w.theta > 0.0 && w.theta < 1.0) {
            bail!(
                "workload.theta is {}; zipfian skew must be between 0 and 1 (exclusive)",
                w.theta
            );
        }
        for (what, size) in [
            ("workload.value_bytes", w.value_bytes),
            ("preload.value_bytes", self.preload.value_bytes),
        ] {
            if let ValueSize::Uniform { min, max } = size
                && min > max
            {
                bail!("{what}: min ({min}) is more than max ({max})");
            }
            if size.max() > 4 * 1024 * 1024 {
                bail!("{what}: values over 4 MiB are refused by nodes (max_value_bytes)");
            }
        }
        if w.connections == 0 || self.preload.concurrency == 0 || w.max_in_flight == 0 {
            bail!(
                "workload.connections, workload.max_in_flight and preload.concurrency must be at least 1"
            );
        }
        if w.request_timeout_ms == 0 {
            bail!("workload.request_timeout_ms must be at least 1");
        }
        if w.warmup_s >= w.duration_s {
            bail!("workload.warmup_s must be shorter than duration_s");
        }
        Ok(())
    }

    fn validate_faults(&self) -> anyhow::Result<()> {
        if self.faults.is_empty() {
            return Ok(());
        }
        if !self.is_local() {
            bail!(
                "faults need local processes; with cluster.endpoints (an existing cluster) only faults = [] is supported for now"
            );
        }
        let nodes = self.cluster.nodes.unwrap_or(0);
        for f in &self.faults {
            if !(1..=nodes).contains(&f.node) {
                bail!(
                    "fault at {} s: node {} does not exist (nodes are 1..={nodes})",
                    f.at_s,
                    f.node
                );
            }
            if !f.at_s.is_finite() || f.at_s < 0.0 || f.at_s >= self.workload.duration_s as f64 {
                bail!(
                    "fault at {} s: at_s must be within the run (0 to duration_s = {})",
                    f.at_s,
                    self.workload.duration_s
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [cluster]
        nodes = 3
        [workload]
        rate = 100
        duration_s = 10
        keys = 1000
    "#;

    #[test]
    fn minimal_scenario_gets_documented_defaults() {
        let s = Scenario::parse(MINIMAL).unwrap();
        assert!(s.is_local());
        assert_eq!(s.rates(), (100.0, 100.0));
        assert_eq!(s.workload.mix, Mix::default());
        assert_eq!(s.workload.request_timeout_ms, 1000);
        assert_eq!(s.preload.keys, 0);
        assert!(s.faults.is_empty());
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let text = MINIMAL.replace("rate = 100", "rate = 100\nrat = 3");
        let err = format!("{:#}", Scenario::parse(&text).unwrap_err());
        assert!(err.contains("rat"), "{err}");
    }

    #[test]
    fn value_sizes_parse_as_fixed_or_range() {
        let text = format!("{MINIMAL}value_bytes = {{ min = 10, max = 20 }}\n");
        let s = Scenario::parse(&text).unwrap();
        assert_eq!(
            s.workload.value_bytes,
            ValueSize::Uniform { min: 10, max: 20 }
        );
        let bad = format!("{MINIMAL}value_bytes = {{ min = 30, max = 20 }}\n");
        assert!(Scenario::parse(&bad).is_err());
    }

    #[test]
    fn faults_against_endpoints_are_refused_for_now() {
        let text = r#"
            [cluster]
            endpoints = ["127.0.0.1:7400"]
            [workload]
            rate = 10
            duration_s = 10
            keys = 10
            [[faults]]
            at_s = 5
            action = "kill"
            node = 1
        "#;
        let err = Scenario::parse(text).unwrap_err().to_string();
        assert!(err.contains("faults need local processes"), "{err}");
    }

    #[test]
    fn faults_are_checked_and_sorted() {
        let text = format!(
            "{MINIMAL}\n[[faults]]\nat_s = 6\naction = \"restart\"\nnode = 2\n[[faults]]\nat_s = 3\naction = \"kill\"\nnode = 2\n"
        );
        let s = Scenario::parse(&text).unwrap();
        assert_eq!(s.faults[0].action, FaultAction::Kill);
        let bad = text.replace("node = 2", "node = 4");
        let err = Scenario::parse(&bad).unwrap_err().to_string();
        assert!(err.contains("node 4 does not exist"), "{err}");
        let late = text.replace("at_s = 6", "at_s = 60");
        assert!(Scenario::parse(&late).is_err());
    }

    #[test]
    fn mix_must_sum_to_one_and_rate_xor_ramp() {
        let text = format!("{MINIMAL}mix = {{ get = 0.5, put = 0.2 }}\n");
        assert!(Scenario::parse(&text).is_err());
        let both = MINIMAL.replace("rate = 100", "rate = 100\nramp = [1, 2]");
        assert!(Scenario::parse(&both).is_err());
    }

    #[test]
    fn shipped_scenarios_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../benches/scenarios");
        for name in ["smoke", "steady", "node-loss"] {
            let s = Scenario::load(&dir.join(format!("{name}.toml"))).unwrap();
            assert_eq!(s.name, name);
        }
    }
}
