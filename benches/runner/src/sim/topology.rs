//! The simulated cluster's fixed facts: each node's zone, rack, weight,
//! rates, client load and heartbeat phase; each partition's size; and the
//! map the cluster starts from, built with the node's own commands and
//! placement. Seeded: the same scenario gives the same cluster.

use levee_node::cluster::NodeId;
use levee_node::cluster::map::{
    ClusterMap, Command, CommandResult, NodeInfo, NodeSpec, NodeState, Settings,
};
use levee_node::cluster::placement::Assignment;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::scenario::{SimScenario, SizeDist};

/// Bytes in a MiB.
pub const MIB: f64 = 1_048_576.0;

/// A simulated node's facts (what changes over the run lives in the
/// engine).
#[derive(Debug, Clone, PartialEq)]
pub struct SimNode {
    /// The id the map gives it.
    pub id: NodeId,
    /// Zone, 1-based (the map's zone is `z{zone}`).
    pub zone: u32,
    /// Rack within the zone, 1-based (the simulation's own label).
    pub rack: u32,
    /// Placement weight.
    pub capacity: u64,
    /// Network, each way (bytes/s).
    pub net: f64,
    /// Disk, reads and writes each (bytes/s).
    pub disk: f64,
    /// Share of its disk and network its clients use when every node is
    /// up.
    pub base_load: f64,
    /// Offset of its heartbeats within the interval (ms).
    pub phase_ms: u64,
}

impl SimNode {
    /// What it tells the map when it joins.
    pub fn spec(&self) -> NodeSpec {
        NodeSpec {
            addr: format!("sim-{}", self.id),
            admin: String::new(),
            zone: format!("z{}", self.zone),
            capacity: self.capacity,
            join_token: self.id,
        }
    }

    /// Bytes/s it can move each way once its clients are served: the
    /// slower of disk and network, less the clients' share.
    pub fn spare(&self, load: f64) -> f64 {
        self.net.min(self.disk) * (1.0 - load.clamp(0.0, 1.0))
    }
}

/// Draws a node's facts. `id` is its map id; nodes are numbered zone by
/// zone, rack by rack, at the start, and joiners after them.
pub fn draw_node(s: &SimScenario, rng: &mut StdRng, id: NodeId, zone: u32, rack: u32) -> SimNode {
    let c = &s.cluster;
    let capacity = c.capacities[rng.random_range(0..c.capacities.len())];
    let spread = s.clients.spread * (2.0 * rng.random::<f64>() - 1.0);
    SimNode {
        id,
        zone,
        rack,
        capacity,
        net: c.net_mib_per_sec * MIB,
        disk: c.disk_mib_per_sec * MIB,
        base_load: (s.clients.load + spread).clamp(0.0, 0.95),
        phase_ms: rng.random_range(0..s.heartbeat_ms / s.step_ms) * s.step_ms,
    }
}

/// The nodes at the start: ids 1.., zone by zone, rack by rack.
pub fn nodes(s: &SimScenario, rng: &mut StdRng) -> Vec<SimNode> {
    let c = &s.cluster;
    let mut out = Vec::new();
    for zone in 1..=c.zones {
        for rack in 1..=c.racks_per_zone {
            for _ in 0..c.nodes_per_rack {
                let id = out.len() as NodeId + 1;
                out.push(draw_node(s, rng, id, zone, rack));
            }
        }
    }
    out
}

/// Each partition's size in bytes (at least 1).
pub fn partition_sizes(dist: SizeDist, count: u32, rng: &mut StdRng) -> Vec<u64> {
    (0..count)
        .map(|_| {
            let mib = match dist {
                SizeDist::Fixed { mib } => mib,
                SizeDist::Uniform { min_mib, max_mib } => {
                    min_mib + (max_mib - min_mib) * rng.random::<f64>()
                }
                SizeDist::Lognormal { median_mib, sigma } => {
                    median_mib * (sigma * standard_normal(rng)).exp()
                }
            };
            ((mib * MIB) as u64).max(1)
        })
        .collect()
}

/// One draw of N(0, 1) (Box–Muller), from the seeded generator.
fn standard_normal(rng: &mut StdRng) -> f64 {
    // 1 − u is in (0, 1], so the logarithm is finite.
    let u1 = 1.0 - rng.random::<f64>();
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// The generator every random draw of a run comes from.
pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// The map of a cluster of `nodes`, all Up, with the scenario's R, P and
/// recovery settings, its replica sets placed by the node's placement.
///
/// Built as a real cluster is, with `Command`s, except for one shortcut:
/// a real cluster gets its nodes by N joins, each a full placement over P
/// partitions (about a second each at 1,000 × 65,536, see the join
/// scenario), which would take a quarter of an hour here. Instead the
/// first node initialises the map, the next N − 2 are entered directly
/// with a zone-spread, weight-balanced, shuffled starting assignment, and the last
/// one joins with `Command::AddNode`: its placement (the map's own
/// `rebalance`) keeps every starting replica the zone rule allows and
/// moves the others to meet each node's quota. The result is a placement
/// the real code chose and accepts as its own (placing it again changes
/// nothing), though not the one N joins would have reached.
pub fn initial_map(
    s: &SimScenario,
    nodes: &[SimNode],
    settings: levee_node::cluster::map::RecoverySettings,
) -> anyhow::Result<ClusterMap> {
    let (Some(first), Some(last)) = (nodes.first(), nodes.last()) else {
        anyhow::bail!("a cluster needs at least one node");
    };
    let c = &s.cluster;
    let mut map = ClusterMap::default();
    check(map.apply(&Command::Init {
        cluster_id: s.seed | 1,
        partitions: c.partitions,
        settings: Settings::majority(c.replicas, 3),
        first: first.spec(),
    }))?;
    check(map.apply(&Command::SetRecoveryAll(settings)))?;
    if nodes.len() > 1 {
        for n in &nodes[1..nodes.len() - 1] {
            map.nodes.insert(
                n.id,
                NodeInfo {
                    id: n.id,
                    spec: n.spec(),
                    state: NodeState::Up,
                    since_ms: 0,
                },
            );
        }
        map.next_node_id = last.id;
        map.assignment = starting_assignment(
            nodes,
            c.partitions,
            usize::from(c.replicas),
            &mut rng(s.seed ^ 0x5eed),
        );
        check(map.apply(&Command::AddNode(last.spec())))?;
    }
    Ok(map)
}

fn check(result: CommandResult) -> anyhow::Result<()> {
    match result {
        CommandResult::Rejected(why) => anyhow::bail!("the map refused a command: {why}"),
        _ => Ok(()),
    }
}

/// Replica sets that already spread over zones and weigh nodes by
/// capacity, so that placement has little left to move: partition `p`
/// goes to zones `p, p+1, …` (mod the zone count), and within a zone to
/// the next node of a shuffled deck holding each node as many times as
/// its capacity's share of the zone's replicas. Shuffled, as rendezvous
/// hashing does it, so that a node's partitions have their other replicas
/// on many nodes: a lost node is then rebuilt from many sources at once
/// (dealing in order would pair node i of one zone with node i of the
/// next, and leave a handful of sources).
fn starting_assignment(
    nodes: &[SimNode],
    partitions: u32,
    replicas: usize,
    rng: &mut StdRng,
) -> Assignment {
    let zones = nodes.iter().map(|n| n.zone).max().unwrap_or(0) as usize;
    let used = replicas.min(zones);
    let mut decks: Vec<std::vec::IntoIter<NodeId>> = (0..zones)
        .map(|z| {
            let members: Vec<&SimNode> =
                nodes.iter().filter(|n| n.zone as usize == z + 1).collect();
            // Partitions whose zones `p, p+1, …` include z.
            let count = (0..partitions as usize)
                .filter(|p| (z + zones - p % zones) % zones < used)
                .count();
            let total: u64 = members.iter().map(|n| n.capacity).sum();
            let shares: Vec<f64> = members
                .iter()
                .map(|n| count as f64 * n.capacity as f64 / total.max(1) as f64)
                .collect();
            let mut deck: Vec<NodeId> = Vec::with_capacity(count);
            for (n, whole) in members.iter().zip(largest_remainder(&shares, count)) {
                deck.extend(std::iter::repeat_n(n.id, whole));
            }
            deck.shuffle(rng);
            deck.into_iter()
        })
        .collect();
    (0..partitions as usize)
        .map(|p| {
            (0..used)
                .filter_map(|k| decks[(p + k) % zones].next())
                .collect()
        })
        .collect()
}

/// `shares` rounded to whole numbers that add up to `total`: the floors,
/// and one more for the largest remainders.
fn largest_remainder(shares: &[f64], total: usize) -> Vec<usize> {
    let mut whole: Vec<usize> = shares.iter().map(|s| s.floor() as usize).collect();
    let mut order: Vec<usize> = (0..shares.len()).collect();
    order.sort_by(|a, b| {
        let frac = |i: usize| shares[i] - shares[i].floor();
        frac(*b).total_cmp(&frac(*a)).then(a.cmp(b))
    });
    let short = total.saturating_sub(whole.iter().sum());
    for i in order.into_iter().take(short) {
        whole[i] += 1;
    }
    whole
}

#[cfg(test)]
mod tests {
    use super::*;
    use levee_node::cluster::placement::{Candidate, place};

    fn scenario(zones: u32, racks: u32, per_rack: u32, partitions: u32) -> SimScenario {
        SimScenario::parse(&format!(
            "duration_s = 10\n[cluster]\nzones = {zones}\nracks_per_zone = {racks}\nnodes_per_rack = {per_rack}\n\
             partitions = {partitions}\npartition_size = {{ dist = \"lognormal\", median_mib = 64, sigma = 0.3 }}\n\
             capacities = [1, 2]\nnet_mib_per_sec = 1000\ndisk_mib_per_sec = 400\n[clients]\nload = 0.3\nspread = 0.1\n"
        ))
        .unwrap()
    }

    #[test]
    fn the_starting_map_is_a_placement_the_node_s_code_keeps() {
        let s = scenario(3, 2, 3, 256);
        let mut rng = rng(s.seed);
        let nodes = nodes(&s, &mut rng);
        assert_eq!(nodes.len(), 18);
        assert_eq!((nodes[5].zone, nodes[5].rack), (1, 2));
        assert_eq!((nodes[6].zone, nodes[6].rack), (2, 1));
        let map = initial_map(&s, &nodes, s.recovery_settings().unwrap()).unwrap();
        assert_eq!(map.nodes.len(), 18);
        assert_eq!(map.under_replicated(), 0);
        let candidates: Vec<Candidate> = map
            .nodes
            .values()
            .map(|n| Candidate {
                id: n.id,
                zone: n.spec.zone.clone(),
                capacity: n.spec.capacity,
            })
            .collect();
        assert_eq!(place(&candidates, 256, 3, &map.assignment), map.assignment);
        // Node 1's partitions have their other replicas on (nearly) every
        // node of the other zones, so a loss is rebuilt from many sources.
        let mut partners: Vec<u64> = map
            .assignment
            .iter()
            .filter(|set| set.contains(&1))
            .flatten()
            .copied()
            .filter(|n| *n != 1)
            .collect();
        partners.sort_unstable();
        partners.dedup();
        assert!(partners.len() >= 10, "{partners:?}");
        for set in &map.assignment {
            let mut zones: Vec<&str> = set
                .iter()
                .map(|id| map.nodes[id].spec.zone.as_str())
                .collect();
            zones.dedup();
            assert_eq!(zones.len(), 3, "{set:?}");
        }
    }

    #[test]
    fn the_same_seed_draws_the_same_cluster() {
        let s = scenario(2, 2, 2, 32);
        let draw = || {
            let mut rng = rng(s.seed);
            let nodes = nodes(&s, &mut rng);
            let sizes = partition_sizes(s.cluster.partition_size, 32, &mut rng);
            (nodes, sizes)
        };
        assert_eq!(draw(), draw());
        let (nodes, sizes) = draw();
        assert!(nodes.iter().all(|n| (0.2..=0.4).contains(&n.base_load)));
        assert!(
            nodes
                .iter()
                .all(|n| n.phase_ms % s.step_ms == 0 && n.phase_ms < 1000)
        );
        let median = 64.0 * MIB;
        assert!(
            sizes
                .iter()
                .all(|b| (*b as f64) > median / 10.0 && (*b as f64) < median * 10.0)
        );
    }
}
