//! The simulation's scenario file (`benches/sim/*.toml`): the cluster
//! (zones, racks, nodes, their rates), the data, the clients, the recovery
//! settings, what happens when, and the targets. One serde struct per
//! table, unknown keys refused, defaults defined once here, and
//! [`SimScenario::load`] turning every inconsistency into one line that
//! names the file and the key.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, bail};
use levee_node::cluster::map::RecoverySettings;
use serde::{Deserialize, Serialize};

use super::figures::SimTarget;

/// A whole simulation scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimScenario {
    /// Name used in reports; defaults to the file's stem.
    #[serde(default)]
    pub name: String,
    /// One line on what the scenario shows, copied into the reports.
    #[serde(default)]
    pub description: String,
    /// Seeds every random choice (node rates, loads, partition sizes,
    /// heartbeat phases, drained nodes): the same file gives the same run.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Simulated seconds to run.
    pub duration_s: u64,
    /// Simulated milliseconds per step of the transfers (the flows' rates
    /// are recomputed, and heartbeats delivered, every step). Must divide
    /// 1000 and `heartbeat_ms`. Smaller is finer and slower; the byte
    /// budgets are exact whatever the step (pages are paced at the
    /// instant the bucket allows them).
    #[serde(default = "default_step_ms")]
    pub step_ms: u64,
    /// Every node's heartbeat interval, which is also the leader's tick:
    /// the failure detector and the replica checker run once per
    /// heartbeat, as in `recovery/leader.rs` (`--heartbeat-ms`, 1 s).
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// The cluster.
    pub cluster: SimCluster,
    /// Client load on the nodes.
    #[serde(default)]
    pub clients: Clients,
    /// Recovery settings, with the keys and values `levee admin set`
    /// takes (`"recovery.max_moves" = 256`, `down_out_interval = 600000`);
    /// parsed and range-checked by the node's own code. Unset keys keep
    /// the node's defaults.
    #[serde(default)]
    pub recovery: BTreeMap<String, toml::Value>,
    /// What happens, in time order.
    #[serde(default)]
    pub events: Vec<SimEvent>,
    /// Bounds on the run's figures, reported as met or missed.
    #[serde(default)]
    pub targets: Vec<SimTarget>,
}

fn default_seed() -> u64 {
    1
}

fn default_step_ms() -> u64 {
    100
}

fn default_heartbeat_ms() -> u64 {
    1_000
}

/// The nodes, their failure domains and their hardware.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimCluster {
    /// Zones (`z1`…): the map's failure domains, which placement spreads
    /// replicas over.
    pub zones: u32,
    /// Racks in each zone. A rack exists only in the simulation (a group
    /// of nodes of one zone that fail together): placement and the guards
    /// know zones only, and need nothing more to survive a rack.
    pub racks_per_zone: u32,
    /// Nodes in each rack.
    pub nodes_per_rack: u32,
    /// R.
    #[serde(default = "default_replicas")]
    pub replicas: u8,
    /// P.
    pub partitions: u32,
    /// Bytes per partition (every replica of a partition has its size).
    pub partition_size: SizeDist,
    /// Placement weights, one drawn per node (seeded); `[1]`: all equal.
    #[serde(default = "default_capacities")]
    pub capacities: Vec<u64>,
    /// Each node's network, each way (MiB/s).
    pub net_mib_per_sec: f64,
    /// Each node's disk, reads and writes each (MiB/s).
    pub disk_mib_per_sec: f64,
}

fn default_replicas() -> u8 {
    3
}

fn default_capacities() -> Vec<u64> {
    vec![1]
}

/// How partition sizes are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "dist", rename_all = "snake_case", deny_unknown_fields)]
pub enum SizeDist {
    /// Every partition this size.
    Fixed {
        /// MiB.
        mib: f64,
    },
    /// Uniform in `min_mib..max_mib`.
    Uniform {
        /// Smallest (MiB).
        min_mib: f64,
        /// Largest (MiB).
        max_mib: f64,
    },
    /// Log-normal: `median_mib × e^(sigma × N(0, 1))`. Keys hash evenly
    /// over partitions, so sizes differ by the values' sizes only: a small
    /// sigma (0.1–0.3) is realistic.
    Lognormal {
        /// Median (MiB).
        median_mib: f64,
        /// Spread of the logarithm.
        sigma: f64,
    },
}

/// What the clients take of each node.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Clients {
    /// Mean share of each node's disk and network the clients use, in
    /// [0, 0.95]. It is also the node's admission pressure (what slows its
    /// recovery sends to `max(pressure_floor, 1 − pressure)` of the rate,
    /// and keeps it from receiving at 0.8). When nodes are lost, their
    /// clients' load spreads over the rest.
    #[serde(default)]
    pub load: f64,
    /// Each node's load is `load ± spread` (uniform, seeded).
    #[serde(default)]
    pub spread: f64,
}

/// Something that happens to the cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimEvent {
    /// When (simulated s).
    pub at_s: f64,
    /// What.
    pub kind: EventKind,
    /// The node (`node_loss`, `flap`), 1-based.
    pub node: Option<u64>,
    /// The zone (`rack_loss`, `zone_loss`, optional for `join`), 1-based.
    pub zone: Option<u32>,
    /// The rack within the zone (`rack_loss`), 1-based.
    pub rack: Option<u32>,
    /// A loss ends after this long and the nodes come back with their data
    /// (a restart, a power cut repaired); default: never.
    pub back_after_s: Option<f64>,
    /// `flap`: seconds silent in each cycle.
    pub down_s: Option<f64>,
    /// `flap`: seconds heard in each cycle.
    pub up_s: Option<f64>,
    /// `flap`: cycles.
    pub cycles: Option<u32>,
    /// `drain`: the share of the nodes to drain, chosen at random (seeded).
    pub fraction: Option<f64>,
    /// `join`: nodes that join.
    pub count: Option<u32>,
}

/// The kinds of [`SimEvent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// One node goes silent (its process, disk or power is gone).
    NodeLoss,
    /// Every node of one rack goes silent.
    RackLoss,
    /// Every node of one zone goes silent.
    ZoneLoss,
    /// One node alternates between silent and heard.
    Flap,
    /// An operator drains a share of the nodes (`levee admin drain`).
    Drain,
    /// New nodes join (`Command::AddNode`).
    Join,
}

impl EventKind {
    /// The name in the scenario file.
    pub fn name(self) -> &'static str {
        match self {
            Self::NodeLoss => "node_loss",
            Self::RackLoss => "rack_loss",
            Self::ZoneLoss => "zone_loss",
            Self::Flap => "flap",
            Self::Drain => "drain",
            Self::Join => "join",
        }
    }
}

impl SimScenario {
    /// Reads, parses and validates a scenario file; every error names the
    /// file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let (mut scenario, stem) = crate::scenario::load_file(path, Self::parse)?;
        if scenario.name.is_empty() {
            scenario.name = stem;
        }
        Ok(scenario)
    }

    /// Parses and validates scenario text.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut scenario: Self = toml::from_str(text)?;
        scenario.events.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
        scenario.validate()?;
        Ok(scenario)
    }

    /// Nodes at the start.
    pub fn nodes(&self) -> u64 {
        let c = &self.cluster;
        u64::from(c.zones) * u64::from(c.racks_per_zone) * u64::from(c.nodes_per_rack)
    }

    /// The recovery settings: the node's defaults with the file's keys
    /// applied by the node's own parser, then checked together.
    pub fn recovery_settings(&self) -> anyhow::Result<RecoverySettings> {
        let mut settings = RecoverySettings::default();
        for (key, value) in &self.recovery {
            let text = match value {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => if *b { "on" } else { "off" }.to_owned(),
                other => bail!(
                    "recovery.{key:?}: give a number, a string or a boolean, not {}",
                    other.type_str()
                ),
            };
            settings
                .assign(key, &text)
                .map_err(|why| anyhow::anyhow!("recovery.{key:?}: {why}"))?;
        }
        settings
            .checked()
            .map_err(|why| anyhow::anyhow!("recovery: {why}"))?;
        Ok(settings)
    }

    fn validate(&self) -> anyhow::Result<()> {
        self.validate_time()?;
        self.validate_cluster()?;
        self.recovery_settings()?;
        for (i, e) in self.events.iter().enumerate() {
            self.validate_event(e)
                .with_context(|| format!("events[{i}] ({})", e.kind.name()))?;
        }
        for (i, t) in self.targets.iter().enumerate() {
            if t.min.is_none() && t.max.is_none() {
                bail!("targets[{i}] ({}): give min or max", t.metric.name());
            }
        }
        Ok(())
    }

    fn validate_time(&self) -> anyhow::Result<()> {
        if self.duration_s == 0 || self.duration_s > 7 * 24 * 3600 {
            bail!("duration_s must be between 1 and 604800 (a week)");
        }
        if self.step_ms == 0 || 1000 % self.step_ms != 0 {
            bail!(
                "step_ms is {}; it must divide 1000 (e.g. 50, 100, 250)",
                self.step_ms
            );
        }
        if self.heartbeat_ms == 0 || !self.heartbeat_ms.is_multiple_of(self.step_ms) {
            bail!(
                "heartbeat_ms is {}; it must be a multiple of step_ms ({})",
                self.heartbeat_ms,
                self.step_ms
            );
        }
        Ok(())
    }

    fn validate_cluster(&self) -> anyhow::Result<()> {
        let c = &self.cluster;
        if c.zones == 0 || c.racks_per_zone == 0 || c.nodes_per_rack == 0 {
            bail!(
                "cluster.zones, cluster.racks_per_zone and cluster.nodes_per_rack must be at least 1"
            );
        }
        if self.nodes() > 100_000 {
            bail!(
                "cluster: {} nodes; the simulator takes at most 100000",
                self.nodes()
            );
        }
        if c.replicas == 0 || u64::from(c.replicas) > self.nodes() {
            bail!(
                "cluster.replicas must be between 1 and the node count ({})",
                self.nodes()
            );
        }
        if c.partitions == 0 || c.partitions > 1 << 22 {
            bail!("cluster.partitions must be between 1 and 4194304");
        }
        if c.capacities.is_empty() || c.capacities.contains(&0) {
            bail!("cluster.capacities: give at least one weight, each at least 1");
        }
        for (key, v) in [
            ("net_mib_per_sec", c.net_mib_per_sec),
            ("disk_mib_per_sec", c.disk_mib_per_sec),
        ] {
            if !(v.is_finite() && v > 0.0) {
                bail!("cluster.{key} must be a positive number of MiB/s");
            }
        }
        let positive = |key: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(anyhow::anyhow!(
                    "cluster.partition_size.{key} must be a positive number"
                ))
            }
        };
        match c.partition_size {
            SizeDist::Fixed { mib } => positive("mib", mib)?,
            SizeDist::Uniform { min_mib, max_mib } => {
                positive("min_mib", min_mib)?;
                positive("max_mib", max_mib)?;
                if max_mib < min_mib {
                    bail!("cluster.partition_size: max_mib is below min_mib");
                }
            }
            SizeDist::Lognormal { median_mib, sigma } => {
                positive("median_mib", median_mib)?;
                if !(sigma.is_finite() && (0.0..=3.0).contains(&sigma)) {
                    bail!("cluster.partition_size.sigma must be between 0 and 3");
                }
            }
        }
        let k = &self.clients;
        if !(k.load.is_finite() && (0.0..=0.95).contains(&k.load)) {
            bail!("clients.load must be between 0 and 0.95");
        }
        if !(k.spread.is_finite() && k.spread >= 0.0) {
            bail!("clients.spread must be a number at least 0");
        }
        Ok(())
    }

    fn validate_event(&self, e: &SimEvent) -> anyhow::Result<()> {
        let c = &self.cluster;
        if !(e.at_s.is_finite() && e.at_s >= 0.0 && e.at_s < self.duration_s as f64) {
            bail!(
                "at_s must be within the run (0 to duration_s = {})",
                self.duration_s
            );
        }
        let allowed: &[&str] = match e.kind {
            EventKind::NodeLoss => &["node", "back_after_s"],
            EventKind::RackLoss => &["zone", "rack", "back_after_s"],
            EventKind::ZoneLoss => &["zone", "back_after_s"],
            EventKind::Flap => &["node", "down_s", "up_s", "cycles"],
            EventKind::Drain => &["fraction"],
            EventKind::Join => &["count", "zone"],
        };
        let given = [
            ("node", e.node.is_some()),
            ("zone", e.zone.is_some()),
            ("rack", e.rack.is_some()),
            ("back_after_s", e.back_after_s.is_some()),
            ("down_s", e.down_s.is_some()),
            ("up_s", e.up_s.is_some()),
            ("cycles", e.cycles.is_some()),
            ("fraction", e.fraction.is_some()),
            ("count", e.count.is_some()),
        ];
        for (key, set) in given {
            if set && !allowed.contains(&key) {
                bail!(
                    "{key} does not apply; this kind takes {}",
                    allowed.join(", ")
                );
            }
        }
        let need = |key: &str, set: bool| {
            if set {
                Ok(())
            } else {
                Err(anyhow::anyhow!("give {key}"))
            }
        };
        match e.kind {
            EventKind::NodeLoss | EventKind::Flap => {
                need("node", e.node.is_some())?;
                if e.node.is_some_and(|n| n == 0 || n > self.nodes()) {
                    bail!("node must be between 1 and {}", self.nodes());
                }
            }
            EventKind::RackLoss => {
                need("zone", e.zone.is_some())?;
                need("rack", e.rack.is_some())?;
                if e.rack.is_some_and(|r| r == 0 || r > c.racks_per_zone) {
                    bail!("rack must be between 1 and {}", c.racks_per_zone);
                }
            }
            EventKind::ZoneLoss => need("zone", e.zone.is_some())?,
            EventKind::Drain => {
                need("fraction", e.fraction.is_some())?;
                if e.fraction.is_some_and(|f| !(f > 0.0 && f < 1.0)) {
                    bail!("fraction must be between 0 and 1 (exclusive)");
                }
            }
            EventKind::Join => {
                need("count", e.count.is_some())?;
                if e.count.is_some_and(|n| n == 0 || n > 10_000) {
                    bail!("count must be between 1 and 10000");
                }
            }
        }
        if e.zone.is_some_and(|z| z == 0 || z > c.zones) {
            bail!("zone must be between 1 and {}", c.zones);
        }
        if e.kind == EventKind::Flap {
            need("down_s", e.down_s.is_some())?;
            need("up_s", e.up_s.is_some())?;
            need("cycles", e.cycles.is_some())?;
            let positive = |v: Option<f64>| v.is_some_and(|v| v.is_finite() && v > 0.0);
            if !positive(e.down_s) || !positive(e.up_s) || e.cycles == Some(0) {
                bail!("down_s and up_s must be positive and cycles at least 1");
            }
        }
        if e.back_after_s.is_some_and(|b| !(b.is_finite() && b > 0.0)) {
            bail!("back_after_s must be a positive number of seconds");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
        duration_s = 100
        [cluster]
        zones = 3
        racks_per_zone = 2
        nodes_per_rack = 2
        partitions = 64
        partition_size = { dist = "fixed", mib = 16 }
        net_mib_per_sec = 1000
        disk_mib_per_sec = 500
    "#;

    /// The base with `extra` added: top-level keys before the tables,
    /// tables after.
    fn parse(extra: &str) -> anyhow::Result<SimScenario> {
        if extra.starts_with('[') || extra.is_empty() {
            SimScenario::parse(&format!("{BASE}\n{extra}"))
        } else {
            SimScenario::parse(&format!("{extra}\n{BASE}"))
        }
    }

    fn message(extra: &str) -> String {
        match parse(extra) {
            Ok(_) => panic!("accepted: {extra}"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn a_minimal_scenario_takes_the_defaults() {
        let s = parse("").unwrap();
        assert_eq!((s.seed, s.step_ms, s.heartbeat_ms), (1, 100, 1000));
        assert_eq!(s.nodes(), 12);
        assert_eq!(s.recovery_settings().unwrap(), RecoverySettings::default());
    }

    #[test]
    fn recovery_keys_go_through_the_node_s_own_parser() {
        let s = parse(
            "[recovery]\n\"recovery.max_moves\" = 256\n\"recovery.pressure_floor\" = 0.2\nnoout = true\n",
        )
        .unwrap();
        let r = s.recovery_settings().unwrap();
        assert_eq!(r.max_moves, 256);
        assert_eq!(r.pressure_floor, 0.2);
        assert!(r.noout);
        let bad = message("[recovery]\n\"recovery.max_moves\" = 0\n");
        assert!(bad.contains("recovery.max_moves"), "{bad}");
        let unknown = message("[recovery]\nmax_moves = 3\n");
        assert!(unknown.contains("unknown setting"), "{unknown}");
    }

    #[test]
    fn errors_name_the_field() {
        for (extra, field) in [
            (
                "[[events]]\nat_s = 5\nkind = \"rack_loss\"\nzone = 1\n",
                "give rack",
            ),
            (
                "[[events]]\nat_s = 5\nkind = \"node_loss\"\nnode = 99\n",
                "node must be between 1 and 12",
            ),
            (
                "[[events]]\nat_s = 5\nkind = \"drain\"\nfraction = 0.1\nnode = 3\n",
                "node does not apply",
            ),
            (
                "[[events]]\nat_s = 500\nkind = \"node_loss\"\nnode = 1\n",
                "at_s must be within the run",
            ),
            (
                "[[events]]\nat_s = 5\nkind = \"melt\"\n",
                "unknown variant `melt`",
            ),
            ("step_ms = 300\n", "step_ms is 300"),
            (
                "[[targets]]\nmetric = \"moves_started\"\n",
                "give min or max",
            ),
        ] {
            let m = message(extra);
            assert!(m.contains(field), "{extra}: {m}");
        }
        // Unknown keys in the size's table are refused too.
        let m = SimScenario::parse(&BASE.replace("mib = 16", "mib = 16, median = 3")).unwrap_err();
        assert!(format!("{m:#}").contains("median"), "{m:#}");
    }

    #[test]
    fn a_loaded_file_is_named_in_its_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broken.toml");
        std::fs::write(&path, format!("{BASE}\n[clients]\nload = 2\n")).unwrap();
        let m = format!("{:#}", SimScenario::load(&path).unwrap_err());
        assert!(
            m.contains("broken.toml") && m.contains("clients.load"),
            "{m}"
        );
    }

    // The scenario file is the simulator's one decoder of outside input:
    // whatever a person (or a damaged file) hands it is an error, never a
    // panic, and what it accepts can be run (its settings check out).
    proptest::proptest! {
        #[test]
        fn any_text_is_a_scenario_or_an_error_never_a_panic(text in ".{0,400}") {
            let _ = SimScenario::parse(&text);
        }

        #[test]
        fn every_shipped_scenario_with_a_byte_changed_parses_or_is_refused(
            which in 0usize..9,
            at in proptest::prelude::any::<proptest::sample::Index>(),
            byte in proptest::prelude::any::<u8>(),
        ) {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../sim");
            let mut files: Vec<_> = std::fs::read_dir(&dir)
                .unwrap()
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect();
            files.sort();
            let file = &files[which % files.len()];
            let mut raw = std::fs::read(file).unwrap();
            let i = at.index(raw.len());
            raw[i] = byte;
            if let Ok(text) = String::from_utf8(raw)
                && let Ok(scenario) = SimScenario::parse(&text)
            {
                let _ = scenario.recovery_settings();
            }
        }
    }
}
