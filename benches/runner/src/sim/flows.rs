//! The copies in flight, modelled as flows: one per move in the map, from
//! its source to its target, paced by the source's real [`SendBudget`]
//! (one token bucket per node, `bytes_per_sec × max(pressure_floor, 1 −
//! pressure)`, pages never larger than the burst) and by what the clients
//! leave of each end's disk and network, shared evenly by the flows at
//! that end. Sources that fail are replaced by the node's own
//! [`choose_source`], and flows start [`SETTLE`] after their move, as the
//! real puller does. Each step a flow copies from one of its move's
//! [`sources`] (up to `SOURCES_PER_MOVE`, as the node's puller): the one
//! with the fewest flows so far that step, which is where the node's
//! puller, asking each page of the source that saved the most budget,
//! sends most of its pages. Time is simulated: pages are taken at the instants
//! the bucket allows, so the budget is exact whatever the step.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use levee_node::cluster::NodeId;
use levee_node::cluster::map::{ClusterMap, Move, NodeState, RecoverySettings};
use levee_node::node::send_budget::SendBudget;
use levee_node::recovery::transfer::{
    FAILED_HOLD, FETCH_TIMEOUT, PAGE_BYTES, SETTLE, choose_source, sources,
};
use levee_node::token_bucket::Wait;

use super::topology::SimNode;

/// One copy: the move's target pulling the partition.
#[derive(Debug, Clone)]
pub struct Flow {
    /// The move as the map holds it (a flow ends when its move does).
    pub m: Move,
    /// The node copied from now: the move's source, or a fallback.
    pub source: NodeId,
    /// Bytes to copy.
    pub size: u64,
    /// Bytes copied so far (the copy resumes after a source change).
    pub copied: u64,
    /// When the first page may be asked (simulated ms).
    pub start_ms: u64,
    /// Sources that failed, and when (ms): skipped for [`FAILED_HOLD`].
    failed: BTreeMap<NodeId, u64>,
    /// Bytes the network still lets this flow carry this step.
    allowance: f64,
}

/// What the world looks like to the flows during one step.
pub struct World<'a> {
    /// The map.
    pub map: &'a ClusterMap,
    /// The recovery settings (the map's).
    pub settings: &'a RecoverySettings,
    /// Node facts by id (index 0 unused).
    pub nodes: &'a [Option<SimNode>],
    /// Whether each node is running (by id): a silent node neither sends
    /// nor receives, whatever the map says yet.
    pub alive: &'a [bool],
    /// Each node's client load, which is also its pressure (by id).
    pub load: &'a [f64],
    /// The instant simulated time 0 stands for.
    pub t0: Instant,
}

impl World<'_> {
    fn alive(&self, id: NodeId) -> bool {
        self.alive.get(id as usize).copied().unwrap_or(false)
    }

    fn load(&self, id: NodeId) -> f64 {
        self.load.get(id as usize).copied().unwrap_or(0.0)
    }

    fn spare(&self, id: NodeId) -> f64 {
        match self.nodes.get(id as usize) {
            Some(Some(n)) => n.spare(self.load(id)),
            _ => 0.0,
        }
    }

    fn instant(&self, ms: f64) -> Instant {
        self.t0 + Duration::from_secs_f64(ms / 1000.0)
    }
}

/// Bytes moved during one step, by node.
#[derive(Debug, Default)]
pub struct Moved {
    /// (source, bytes) of each page sent.
    pub sent: Vec<(NodeId, u64)>,
    /// (target, bytes) of each page received.
    pub received: Vec<(NodeId, u64)>,
    /// Copies completed: (partition, target), for `FinishMove`.
    pub finished: Vec<(u32, NodeId)>,
}

/// Every copy in flight and every node's send budget.
#[derive(Debug, Default)]
pub struct Transfers {
    /// By partition (the map has at most one move per partition).
    pub flows: BTreeMap<u32, Flow>,
    /// By node id; created on a node's first page.
    budgets: BTreeMap<NodeId, SendBudget>,
    /// The partition each source served last, so that its flows take
    /// turns across steps too (a slow source sends less than a page per
    /// step, and the first flow would otherwise always win).
    last_served: BTreeMap<NodeId, u32>,
}

impl Transfers {
    /// Matches the flows to the map's moves: a new move gets a flow
    /// starting [`SETTLE`] from now, a move that left the map (finished,
    /// cancelled, replaced) loses its flow. Returns the moves that got a
    /// flow.
    pub fn reconcile(&mut self, map: &ClusterMap, sizes: &[u64], now_ms: u64) -> usize {
        self.flows
            .retain(|p, f| map.moves.get(p).is_some_and(|m| *m == f.m));
        let mut started = 0;
        for (p, m) in &map.moves {
            if self.flows.contains_key(p) {
                continue;
            }
            started += 1;
            self.flows.insert(
                *p,
                Flow {
                    m: m.clone(),
                    source: m.source,
                    size: sizes.get(*p as usize).copied().unwrap_or(0),
                    copied: 0,
                    start_ms: now_ms + SETTLE.as_millis() as u64,
                    failed: BTreeMap::new(),
                    allowance: 0.0,
                },
            );
        }
        started
    }

    /// Moves the bytes of the step `[now_ms, now_ms + step_ms)`.
    pub fn step(&mut self, world: &World<'_>, now_ms: u64, step_ms: u64) -> Moved {
        let mut moved = Moved::default();
        let active = self.prepare(world, now_ms);
        // Each end's spare bytes/s, shared evenly by its flows.
        let mut outgoing: BTreeMap<NodeId, usize> = BTreeMap::new();
        let mut incoming: BTreeMap<NodeId, usize> = BTreeMap::new();
        for p in &active {
            if let Some(f) = self.flows.get_mut(p) {
                // The node's puller asks each page of whichever of its
                // sources has saved the most budget; over a step, that is
                // the one with the fewest flows so far (the current one
                // on a tie).
                let failed = f.failed.keys().copied().collect();
                let best = sources(world.map, *p, &f.m, f.m.to, &failed)
                    .into_iter()
                    .filter(|id| world.alive(*id))
                    .min_by_key(|id| (outgoing.get(id).copied().unwrap_or(0), *id != f.source));
                if let Some(id) = best {
                    f.source = id;
                }
                *outgoing.entry(f.source).or_default() += 1;
                *incoming.entry(f.m.to).or_default() += 1;
            }
        }
        let step_s = step_ms as f64 / 1000.0;
        let mut by_source: BTreeMap<NodeId, Vec<u32>> = BTreeMap::new();
        for p in active {
            let Some(f) = self.flows.get_mut(&p) else {
                continue;
            };
            let share = |counts: &BTreeMap<NodeId, usize>, id| {
                world.spare(id) / counts.get(&id).copied().unwrap_or(1).max(1) as f64
            };
            let rate = share(&outgoing, f.source).min(share(&incoming, f.m.to));
            // A page's worth may wait for a slow flow's next step; no more
            // is kept, so a flow never bursts past its share.
            f.allowance = (f.allowance + rate * step_s).min(rate * step_s + f64::from(PAGE_BYTES));
            by_source.entry(f.source).or_default().push(p);
        }
        for (source, partitions) in by_source {
            self.send(world, source, &partitions, now_ms, step_ms, &mut moved);
        }
        for (p, f) in &self.flows {
            if f.copied >= f.size && f.start_ms <= now_ms {
                moved.finished.push((*p, f.m.to));
            }
        }
        moved
    }

    /// The flows that can copy this step: settled, target running and Up,
    /// and a running source (falling back as the real puller does).
    fn prepare(&mut self, world: &World<'_>, now_ms: u64) -> Vec<u32> {
        let mut active = Vec::new();
        for (p, f) in &mut self.flows {
            if now_ms < f.start_ms
                || f.copied >= f.size
                || !world.alive(f.m.to)
                || world.map.state_of(f.m.to) != Some(NodeState::Up)
            {
                continue;
            }
            f.failed
                .retain(|_, at| now_ms.saturating_sub(*at) < FAILED_HOLD.as_millis() as u64);
            // A silent source fails the fetch; the puller marks it and
            // asks `choose_source` again, at most once per replica.
            for _ in 0..=world.map.replicas(*p).len() {
                if world.alive(f.source) && !f.failed.contains_key(&f.source) {
                    break;
                }
                f.failed.insert(f.source, now_ms);
                let failed = f.failed.keys().copied().collect();
                match choose_source(world.map, *p, &f.m, f.m.to, &failed) {
                    Some(next) => f.source = next,
                    None => break,
                }
            }
            if world.alive(f.source) && !f.failed.contains_key(&f.source) {
                active.push(*p);
            }
        }
        active
    }

    /// One source's pages during the step, its flows served in turn, each
    /// page paid from its budget at the instant the bucket allows it.
    fn send(
        &mut self,
        world: &World<'_>,
        source: NodeId,
        partitions: &[u32],
        now_ms: u64,
        step_ms: u64,
        moved: &mut Moved,
    ) {
        let settings = world.settings;
        let pressure = world.load(source);
        let budget = self
            .budgets
            .entry(source)
            .or_insert_with(|| SendBudget::new(settings, world.instant(now_ms as f64)));
        let end = (now_ms + step_ms) as f64;
        let mut at = now_ms as f64;
        let mut blocked = vec![false; partitions.len()];
        // `partitions` is in order: start after the one served last.
        let last = self.last_served.get(&source).copied();
        let mut turn = partitions
            .iter()
            .position(|p| last.is_some_and(|l| *p > l))
            .unwrap_or(0);
        while at < end && blocked.iter().any(|b| !b) {
            let i = turn % partitions.len();
            turn += 1;
            if blocked[i] {
                continue;
            }
            let Some(f) = self.flows.get_mut(&partitions[i]) else {
                blocked[i] = true;
                continue;
            };
            let now = world.instant(at);
            let remaining = f.size - f.copied;
            let page = budget
                .page_bytes(settings, pressure, PAGE_BYTES, FETCH_TIMEOUT, now)
                .min(remaining);
            if page == 0 || f.allowance < page as f64 {
                blocked[i] = true;
                continue;
            }
            match budget.take(settings, pressure, page, now) {
                Ok(()) => {
                    self.last_served.insert(source, partitions[i]);
                    f.copied += page;
                    f.allowance -= page as f64;
                    moved.sent.push((source, page));
                    moved.received.push((f.m.to, page));
                }
                Err(Wait(wait)) => {
                    // The bucket is empty: nothing is sent before `wait`,
                    // for any of this source's flows. Retry this flow then.
                    turn -= 1;
                    // At least a microsecond: a wait that rounds to 0 ns
                    // would ask the bucket at the same instant forever.
                    at += (wait.as_secs_f64() * 1000.0).max(0.001);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::topology::MIB;
    use std::collections::BTreeSet;

    fn node(id: NodeId, mib_per_sec: f64) -> SimNode {
        SimNode {
            id,
            zone: id as u32,
            rack: 1,
            capacity: 1,
            net: mib_per_sec * MIB,
            disk: mib_per_sec * MIB,
            base_load: 0.0,
            phase_ms: 0,
        }
    }

    /// A map of four nodes in four zones, 8 partitions, R = 3, built as
    /// the simulator builds its clusters.
    fn map() -> ClusterMap {
        let s = crate::sim::scenario::SimScenario::parse(
            "duration_s = 10\n[cluster]\nzones = 4\nracks_per_zone = 1\nnodes_per_rack = 1\n\
             partitions = 8\npartition_size = { dist = \"fixed\", mib = 64 }\n\
             net_mib_per_sec = 1\ndisk_mib_per_sec = 1\n",
        )
        .expect("a valid scenario");
        let nodes: Vec<SimNode> = (1..=4).map(|i| node(i, 1.0)).collect();
        crate::sim::topology::initial_map(&s, &nodes, RecoverySettings::default()).expect("a map")
    }

    fn settings(bytes_per_sec: u64, burst: u64) -> RecoverySettings {
        RecoverySettings {
            bytes_per_sec,
            bytes_burst: burst,
            ..RecoverySettings::default()
        }
    }

    struct Bench {
        map: ClusterMap,
        nodes: Vec<Option<SimNode>>,
        alive: Vec<bool>,
        load: Vec<f64>,
        t0: Instant,
    }

    impl Bench {
        fn new(net_mib: f64) -> Self {
            let mut nodes = vec![None];
            nodes.extend((1..=4).map(|i| Some(node(i, net_mib))));
            Self {
                map: map(),
                nodes,
                alive: vec![true; 5],
                load: vec![0.0; 5],
                t0: Instant::now(),
            }
        }

        fn world<'a>(&'a self, settings: &'a RecoverySettings) -> World<'a> {
            World {
                map: &self.map,
                settings,
                nodes: &self.nodes,
                alive: &self.alive,
                load: &self.load,
                t0: self.t0,
            }
        }

        /// Starts a move of a partition node 1 holds and node `to` does
        /// not, copied from node 1.
        fn start(&mut self, to: NodeId) -> u32 {
            use levee_node::cluster::map::Command;
            let p = (0..8)
                .find(|p| {
                    let set = self.map.replicas(*p);
                    set.contains(&1) && !set.contains(&to) && !self.map.moves.contains_key(p)
                })
                .expect("a partition to move");
            let from = *self
                .map
                .replicas(p)
                .iter()
                .find(|n| **n != 1)
                .expect("a replica to replace");
            self.map.apply(&Command::StartMoves(vec![(
                p,
                Move {
                    from: Some(from),
                    to,
                    source: 1,
                    started_ms: 0,
                },
            )]));
            p
        }
    }

    /// Runs steps of 100 ms until `end_ms`; bytes sent per second.
    fn run(b: &Bench, t: &mut Transfers, s: &RecoverySettings, end_ms: u64) -> Vec<u64> {
        let mut per_second = vec![0u64; (end_ms / 1000 + 1) as usize];
        for now in (0..end_ms).step_by(100) {
            let moved = t.step(&b.world(s), now, 100);
            for (_, bytes) in moved.sent {
                per_second[(now / 1000) as usize] += bytes;
            }
        }
        per_second
    }

    #[test]
    fn a_source_sends_at_its_budget_whatever_its_flows() {
        let mut b = Bench::new(10_000.0);
        b.start(4);
        let p2 = b.start(4);
        // Nodes 2 and 3 silent: node 1 is the only source either flow has.
        b.alive[2] = false;
        b.alive[3] = false;
        let s = settings(8 << 20, 1 << 20);
        let mut t = Transfers::default();
        t.reconcile(&b.map, &[64 << 20; 8], 0);
        assert_eq!(t.flows.len(), 2);
        assert_eq!(t.flows[&p2].start_ms, 1000, "settles one second first");
        let seconds = run(&b, &mut t, &s, 5000);
        assert_eq!(seconds[0], 0);
        // One bucket for both flows: its burst at once, then a page each
        // 125 ms: 8 MiB/s, whatever the number of flows.
        for s in &seconds[1..5] {
            assert_eq!(*s, 8 << 20);
        }
        let flows: Vec<u64> = t.flows.values().map(|f| f.copied).collect();
        assert_eq!(flows, [16 << 20, 16 << 20], "served in turn");
    }

    #[test]
    fn flows_with_a_second_live_source_spread_over_both() {
        let mut b = Bench::new(10_000.0);
        let moved = [b.start(4), b.start(4)];
        // The replaced nodes failed: a running one would be its copy's
        // only source (`transfer::sources`).
        for p in moved {
            let from = b.map.moves[&p].from.expect("a replaced node");
            b.map
                .apply(&levee_node::cluster::map::Command::SetNodeState {
                    id: from,
                    state: NodeState::Out,
                    at_ms: 0,
                });
        }
        let s = settings(8 << 20, 1 << 20);
        let mut t = Transfers::default();
        t.reconcile(&b.map, &[64 << 20; 8], 0);
        let seconds = run(&b, &mut t, &s, 5000);
        // Each flow on its own sender from the second second on: twice
        // one bucket's 8 MiB/s (give or take a burst).
        for s in &seconds[2..5] {
            assert!(*s >= 15 << 20, "{s}");
        }
        let sources: BTreeSet<NodeId> = t.flows.values().map(|f| f.source).collect();
        assert_eq!(sources.len(), 2, "{sources:?}");
    }

    #[test]
    fn a_slow_target_bounds_its_flow_below_the_budget() {
        let mut b = Bench::new(10_000.0);
        b.nodes[2] = Some(node(2, 2.0));
        b.start(2);
        let s = settings(8 << 20, 1 << 20);
        let mut t = Transfers::default();
        t.reconcile(&b.map, &[64 << 20; 8], 0);
        let seconds = run(&b, &mut t, &s, 4000);
        for s in &seconds[2..4] {
            assert!((*s as f64 - 2.0 * MIB).abs() <= MIB, "{s}");
        }
    }

    #[test]
    fn a_dead_source_is_replaced_and_the_copy_resumes() {
        let mut b = Bench::new(10_000.0);
        let p = b.start(4);
        let s = settings(8 << 20, 1 << 20);
        let mut t = Transfers::default();
        t.reconcile(&b.map, &[64 << 20; 8], 0);
        run(&b, &mut t, &s, 2000);
        let before = t.flows[&p].copied;
        assert!(before > 0);
        b.alive[1] = false;
        let moved = t.step(&b.world(&s), 2000, 100);
        assert_ne!(t.flows[&p].source, 1);
        assert!(moved.sent.iter().all(|(n, _)| *n != 1));
        assert!(t.flows[&p].copied > before, "resumed, not restarted");
    }

    #[test]
    fn a_finished_copy_is_reported_and_a_cancelled_one_dropped() {
        use levee_node::cluster::map::Command;
        let mut b = Bench::new(10_000.0);
        let p = b.start(4);
        let q = b.start(3);
        let s = settings(64 << 20, 4 << 20);
        let mut t = Transfers::default();
        t.reconcile(&b.map, &[2 << 20; 8], 0);
        let moved = t.step(&b.world(&s), 1000, 100);
        let mut finished = moved.finished.clone();
        finished.sort();
        assert_eq!(finished, {
            let mut f = vec![(p, 4), (q, 3)];
            f.sort();
            f
        });
        b.map.apply(&Command::CancelMoves(vec![q]));
        t.reconcile(&b.map, &[2 << 20; 8], 1100);
        assert!(t.flows.contains_key(&p) && !t.flows.contains_key(&q));
    }
}
