//! The scenario file: what cluster, what load, what faults. One serde
//! struct per table, unknown keys refused, defaults defined once here, and
//! [`Scenario::validate`] turning every inconsistency into one line that
//! names the key.

use std::path::Path;

use anyhow::{Context, bail};
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::resources::ResourcesConfig;
use super::schedule::{Profile, RateProfile, StepProfile};
use super::targets::TargetSpec;
use super::variants::{RetryPolicy, RoutingPolicy, Variant};

mod validate;

/// A scenario file parsed by `parse`, every error naming the file, and the
/// file's stem (the name of a scenario that gives none). Shared by `levee
/// bench` and `levee sim` (`sim/scenario.rs`).
pub(crate) fn load_file<T>(
    path: &Path,
    parse: impl FnOnce(&str) -> anyhow::Result<T>,
) -> anyhow::Result<(T, String)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let parsed = parse(&text).with_context(|| format!("in {}", path.display()))?;
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("scenario")
        .to_owned();
    Ok((parsed, stem))
}

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
    /// Settings to compare in one run: the whole scenario runs once per
    /// variant, each on a fresh cluster. Empty: one run as written.
    #[serde(default)]
    pub variants: Vec<Variant>,
    /// Bounds on figures of the run, reported as met or missed.
    #[serde(default)]
    pub targets: Vec<TargetSpec>,
    /// Sample every node's memory, descriptors, tasks, connections and
    /// hint bytes each second and judge each flat or not (the leak soak).
    /// Default: not sampled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourcesConfig>,
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
    /// With `endpoints`: the docker compose cluster's control script
    /// (`docker/cluster.sh`); faults are then done through it on node i =
    /// `endpoints[i-1]` (kill, stop = pause, cont = unpause, restart =
    /// start, partition, heal). The cluster is left running.
    pub docker: Option<String>,
    /// Admin addresses in `endpoints` order, when they are not protocol
    /// port + 1 (the compose cluster publishes them apart).
    #[serde(default)]
    pub admin_endpoints: Vec<String>,
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
    /// Local cluster: start it with mutual TLS (a CA and certificates made
    /// for the run under its directory); the run's clients use them.
    #[serde(default)]
    pub tls: bool,
    /// An existing (or docker) cluster with certificates: the directory
    /// with ca.crt and client.root.crt/.key.
    pub certs_dir: Option<String>,
    /// CPUs the node processes run on (`taskset -c` list, e.g. `"0"`);
    /// give `workload.cpus` too, so the load generator runs elsewhere.
    /// Default: not pinned (nodes and generator share every CPU).
    pub cpus: Option<String>,
    /// CPUs each local node may use (a cgroup CPU quota each, e.g. `0.3`):
    /// every node gets its own capacity, as on its own machine, so load
    /// moved onto a node past its quota queues there instead of taking
    /// CPU a lost node freed. Needs root (or a delegated cgroup). Default:
    /// none.
    pub cpu_quota: Option<f64>,
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
    /// Constant target rate (ops/s). Give this, `ramp` or `steps`.
    pub rate: Option<f64>,
    /// Rate ramp `[from, to]` (ops/s), linear over the run.
    pub ramp: Option<[f64; 2]>,
    /// Step loads as multiples of `peak` (e.g. `[0.5, 1, 2, 3, 4]`), each
    /// held for `step_s`; each step is a phase of the report, the first
    /// one its baseline.
    #[serde(default)]
    pub steps: Vec<f64>,
    /// Length of each step (s).
    pub step_s: Option<u64>,
    /// What `steps` multiply: a rate in ops/s, or a closed-loop measurement
    /// of the cluster's best goodput taken before the run.
    pub peak: Option<Peak>,
    /// Length of the measured run (s). With `steps` it defaults to
    /// `steps × step_s` and must equal it if given.
    #[serde(default)]
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
    /// CPUs the load generator (this process) runs on, with
    /// `cluster.cpus`.
    pub cpus: Option<String>,
    /// How the client retries: `budget` (the library's defaults: retry
    /// budget, breakers, backoff) or `naive` (every failure retried at
    /// once up to `max_attempts`), to show what the budget saves.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Which replica the client asks first: `load_aware` (the library's
    /// default: by each node's observed latency and pressure) or
    /// `placement` (the first Up replica in placement order), to show
    /// what load-aware routing saves when a node is slow or lost.
    #[serde(default)]
    pub routing: RoutingPolicy,
    /// Attempts per request, the first included (default: the client's,
    /// 3).
    pub max_attempts: Option<u32>,
    /// Time one attempt may take before the next replica is tried (ms;
    /// default: the client's, 1000). Below `request_timeout_ms`, a silent
    /// node costs one attempt and leaves time for retries.
    pub attempt_timeout_ms: Option<u64>,
    /// The multiplier `k` of the client's adaptive throttle (default: the
    /// client's, 2; 0 turns it off): the cluster is sent up to `k` times
    /// what it accepted over the last seconds, the rest refused in the
    /// client. Lower sends less excess to overloaded nodes.
    pub throttle_k: Option<f64>,
    /// The client's `overload_retry_below` (default: the client's, 0.1):
    /// an `Overloaded` answer goes on to another replica only while less
    /// than this share of the client's recent requests ended refused; 1
    /// retries them always, as the client did before the rule.
    pub overload_retry_below: Option<f64>,
}

/// The rate `steps` multiply.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(
    untagged,
    expecting = "a rate in ops/s (3000) or a calibration { calibrate_s = 10, concurrency = 64 }"
)]
pub enum Peak {
    /// This many ops/s.
    Fixed(f64),
    /// Measured before the run.
    Calibrate(Calibration),
}

/// How the peak is measured: closed loop (each of `concurrency` workers
/// sends its next request when the last one answered) for `calibrate_s`,
/// on the first variant's cluster after the preload; every variant then
/// gets the same absolute load.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    /// Length of the measurement (s), after one second of warm-up.
    #[serde(default = "default_calibrate_s")]
    pub calibrate_s: u64,
    /// Requests in flight. Enough to keep every node busy; far more only
    /// measures queueing (and, with admission on, refusals).
    #[serde(default = "default_calibrate_concurrency")]
    pub concurrency: usize,
}

fn default_calibrate_s() -> u64 {
    10
}
fn default_calibrate_concurrency() -> usize {
    64
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
    /// `slow` only: how long the node is stopped in each period (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_ms: Option<u64>,
    /// `slow` only: the length of one stop-and-run cycle (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_ms: Option<u64>,
    /// `slow` only: how long the node is slowed (s); default: to the end
    /// of the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_s: Option<f64>,
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
    /// Cut the node off the network (docker only).
    Partition,
    /// Reconnect a partitioned node (docker only).
    Heal,
    /// A SIGSTOP/SIGCONT duty cycle (`stop_ms` of every `period_ms`, for
    /// `for_s`): the node still answers and heartbeats, only slowly — a
    /// sick node rather than a dead one (local processes only).
    Slow,
}

impl std::fmt::Display for FaultAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Kill => "kill",
            Self::Stop => "stop",
            Self::Cont => "cont",
            Self::Restart => "restart",
            Self::Partition => "partition",
            Self::Heal => "heal",
            Self::Slow => "slow",
        })
    }
}

impl Scenario {
    /// Reads, parses and validates a scenario file; the name defaults to
    /// the file's stem.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let (mut scenario, stem) = load_file(path, Self::parse)?;
        if scenario.name.is_empty() {
            scenario.name = stem;
        }
        Ok(scenario)
    }

    /// Parses and validates scenario text.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut scenario: Self = toml::from_str(text)?;
        scenario.faults.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
        let w = &mut scenario.workload;
        if let (false, Some(step_s)) = (w.steps.is_empty(), w.step_s) {
            let total = w.steps.len() as u64 * step_s;
            if w.duration_s == 0 {
                w.duration_s = total;
            } else if w.duration_s != total {
                bail!(
                    "workload.duration_s is {} but {} steps of {step_s} s last {total} s; leave duration_s out",
                    w.duration_s,
                    w.steps.len()
                );
            }
        }
        scenario.validate()?;
        Ok(scenario)
    }

    /// Whether the runner starts the processes itself.
    pub fn is_local(&self) -> bool {
        self.cluster.endpoints.is_empty()
    }

    /// The target rate at the start and the end of the run (0 for a step
    /// load, whose rates depend on the peak).
    pub fn rates(&self) -> (f64, f64) {
        match (self.workload.rate, self.workload.ramp) {
            (Some(r), _) => (r, r),
            (None, Some([from, to])) => (from, to),
            (None, None) => (0.0, 0.0),
        }
    }

    /// The offered load over the run; `peak` (ops/s) is what `steps`
    /// multiply, and is needed only for a step load.
    pub fn profile(&self, peak: Option<f64>) -> Profile {
        let w = &self.workload;
        if w.steps.is_empty() {
            let (from, to) = self.rates();
            return Profile::Ramp(RateProfile {
                from,
                to,
                duration_s: w.duration_s as f64,
            });
        }
        let peak = peak.unwrap_or(0.0);
        Profile::Steps(StepProfile {
            rates: w.steps.iter().map(|m| m * peak).collect(),
            step_s: w.step_s.unwrap_or(1) as f64,
        })
    }

    /// The peak a step load multiplies, when the scenario gives it as a
    /// rate (`None`: it must be measured, or there are no steps).
    pub fn fixed_peak(&self) -> Option<f64> {
        match self.workload.peak {
            Some(Peak::Fixed(rate)) => Some(rate),
            _ => None,
        }
    }

    /// Whether the run is cut into phases at its faults (else into its
    /// steps): a scenario with faults has at most one step, a constant
    /// load at a multiple of the peak.
    pub fn phases_by_fault(&self) -> bool {
        self.workload.steps.is_empty() || !self.faults.is_empty()
    }

    /// Checks everything a run would otherwise trip over halfway.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.validate_cluster()?;
        self.validate_cpus()?;
        self.validate_cpu_quota()?;
        // Steps first: they set the duration the workload checks.
        self.validate_steps()?;
        self.validate_workload()?;
        self.validate_faults()?;
        self.validate_variants()?;
        self.validate_resources()?;
        self.validate_targets()
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// The smallest valid scenario.
    pub(crate) const MINIMAL: &str = r#"
        [cluster]
        nodes = 3
        [workload]
        rate = 100
        duration_s = 10
        keys = 1000
    "#;

    /// A scenario against an existing cluster; tests append to it.
    pub(crate) const REMOTE: &str = r#"
        [cluster]
        endpoints = ["127.0.0.1:7400"]
        [workload]
        rate = 10
        duration_s = 10
        keys = 10
    "#;

    /// Two nodes of the docker cluster, node 2 partitioned at 3 s.
    pub(crate) const DOCKER: &str = r#"
        [cluster]
        endpoints = ["127.0.0.1:7410", "127.0.0.1:7411"]
        docker = "docker/cluster.sh"
        [workload]
        rate = 10
        duration_s = 10
        keys = 10
        [[faults]]
        at_s = 3
        action = "partition"
        node = 2
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
    fn partitions_need_the_docker_cluster() {
        let local = format!("{MINIMAL}\n[[faults]]\nat_s = 3\naction = \"partition\"\nnode = 2\n");
        let err = format!("{:#}", Scenario::parse(&local).unwrap_err());
        assert!(err.contains("docker"), "{err}");
        assert!(Scenario::parse(DOCKER).is_ok());
        let beyond = DOCKER.replace("node = 2", "node = 3");
        assert!(Scenario::parse(&beyond).is_err());
    }

    #[test]
    fn shipped_scenarios_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
        for name in [
            "smoke",
            "steady",
            "node-loss",
            "node-restart",
            "restart",
            "zone-loss",
            "overload",
            "retry-storm",
            "docker-node-loss",
            "slow-node",
            "zone-loss-under-load",
            "leak-soak",
            "leak-soak-short",
        ] {
            let s = Scenario::load(&dir.join(format!("{name}.toml"))).unwrap();
            assert_eq!(s.name, name);
        }
    }
}
