//! The replica checker's decisions: which partitions get a new replica
//! now, copied from where to where. Pure: the leader's task feeds it the
//! map, the nodes' pressure and the time, and applies the [`Plan`]
//! through Raft.
//!
//! Only Out and Draining nodes (and sets short of R) cause moves; a Down
//! node keeps its replicas, since it is probably restarting (design §6).
//! Moves start through a token bucket (moves per second, burst) under a
//! cap on moves in flight, cluster-wide and per node, so that a failure
//! turns into a bounded, configured amount of work rather than a storm.
//! A move of a partition a live replica reports small (under
//! [`SMALL_PARTITION_BYTES`]) needs no token: its bytes are paced by the
//! byte budgets like any other, and what a token paces, the work of a
//! long copy, it does not bring; the caps still hold it. Otherwise losing
//! a node that holds many near-empty partitions waits one token per
//! partition for almost no data (issue #17: 148 s for 200 KB). A move
//! that did take a token gets it back if it left the map within one
//! token's interval of its start ([`Checker::refund_short_moves`]): only
//! copies that last pay for their start.
//!
//! Cost per plan: one pass over the replicas of every partition, with
//! node states and counts read from vectors by id ([`ById`]), plus one
//! scan of the nodes per move actually started (a target is looked for
//! only while the moves bucket has a token). At 1,000 nodes × 65,536
//! partitions that is about a millisecond (`levee sim`, BENCHMARKS.md),
//! where tree lookups per replica and a target scan per waiting partition
//! took 25 ms, and up to a second after a large loss.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use crate::cluster::NodeId;
use crate::cluster::map::{ClusterMap, Move, NodeInfo, NodeState, RecoverySettings};
use crate::node::send_budget::SOURCES_PER_MOVE;
use crate::token_bucket::TokenBucket;

/// Admission pressure at or above which a node gets no new replica: a copy
/// adds writes (the stream and the live traffic of the partition) to a
/// node that is already shedding its clients. Below 1 so that a node close
/// to its limit is spared too; not much lower, or a busy cluster would
/// never recover.
pub const PRESSURE_LIMIT: f64 = 0.8;

/// A partition whose records take fewer bytes than this is small: its
/// move needs no move token. One page of the smallest burst anyone would
/// configure, so a small move is one page and a commit; small enough that
/// a node finds out by reading at most this much of each partition it is
/// asked about (`recovery/heartbeat.rs`).
pub const SMALL_PARTITION_BYTES: u64 = 64 * 1024;

/// What the checker wants done this round. Nothing here has happened yet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Moves to start (`Command::StartMoves`).
    pub start: Vec<(u32, Move)>,
    /// Partitions whose move to abandon (`Command::CancelMoves`): the
    /// target is not Up, or no live replica is left to copy from.
    pub cancel: Vec<u32>,
    /// Draining nodes that hold no partition and take part in no move:
    /// mark them Removed.
    pub remove: Vec<NodeId>,
    /// Partitions that need a move that did not start this round (moves
    /// bucket empty, caps reached, no eligible source or target).
    pub waiting: usize,
    /// Partitions no live node holds: nothing to copy from until one of
    /// their replicas comes back.
    pub unrecoverable: Vec<u32>,
}

/// The replica checker, on the leader.
#[derive(Debug, Clone)]
pub struct Checker {
    /// Paces move starts cluster-wide. Each move costs one token, and the
    /// burst is at least 1, so the bucket never goes into debt here.
    bucket: TokenBucket,
    /// The moves this checker paid a token for, by partition, and whether
    /// the map has shown each yet (see [`Checker::refund_short_moves`]).
    paid: BTreeMap<u32, (Move, bool)>,
}

/// How long a move paid for may take to appear in the map (its
/// `StartMoves` proposal committed) before it is taken as never started.
/// Its token is not given back then: a lost proposal is rare, and keeping
/// the token is the cautious side.
pub const PAID_PENDING_MS: u64 = 10_000;

/// A partition that needs a new replica.
struct Need {
    partition: u32,
    /// The replica to replace (Out or Draining), or `None` to add one.
    from: Option<NodeId>,
}

impl Checker {
    /// A checker with a full moves bucket.
    pub fn new(settings: &RecoverySettings, now: Instant) -> Self {
        Self {
            bucket: TokenBucket::new(settings.moves_per_sec, f64::from(settings.moves_burst), now),
            paid: BTreeMap::new(),
        }
    }

    /// Gives back the token of every move paid for that left the map
    /// (finished, or cancelled) within one token's interval
    /// (`1 / moves_per_sec`) of its start. A token paces the work of a long
    /// copy; a copy that short did not bring it, and without the refund a
    /// partition just above [`SMALL_PARTITION_BYTES`] would wait a whole
    /// token for milliseconds of copying (issue #17: 117 s for 114
    /// partitions of 75 KB at the default 1 move/s). The caps on moves in
    /// flight still bound how many run, and the byte budgets their bytes.
    fn refund_short_moves(&mut self, map: &ClusterMap, now: Instant, now_ms: u64) {
        let rate = map.recovery.moves_per_sec;
        let interval_ms = if rate > 0.0 { 1000.0 / rate } else { 0.0 };
        let mut refunds = 0u32;
        self.paid.retain(|p, (m, seen)| {
            if map.moves.get(p) == Some(&*m) {
                *seen = true;
                return true;
            }
            let age_ms = now_ms.saturating_sub(m.started_ms);
            if *seen {
                refunds += u32::from((age_ms as f64) < interval_ms);
                return false;
            }
            age_ms < PAID_PENDING_MS
        });
        if refunds > 0 {
            self.bucket.settle(f64::from(refunds), 0.0, now);
        }
    }

    /// Decides this round's moves. `pressure` is each node's latest
    /// admission pressure in [0, 1] (a missing node counts as 0).
    /// Partitions are served fewest live replicas first, so a partition
    /// one failure away from loss gets the first tokens.
    pub fn plan(
        &mut self,
        map: &ClusterMap,
        pressure: &BTreeMap<NodeId, f64>,
        now: Instant,
        now_ms: u64,
    ) -> Plan {
        self.plan_sized(map, pressure, &BTreeSet::new(), now, now_ms)
    }

    /// [`plan`](Self::plan), knowing which partitions are `small` (a live
    /// replica reported fewer than [`SMALL_PARTITION_BYTES`]): their
    /// moves start without a move token, under the same caps.
    pub fn plan_sized(
        &mut self,
        map: &ClusterMap,
        pressure: &BTreeMap<NodeId, f64>,
        small: &BTreeSet<u32>,
        now: Instant,
        now_ms: u64,
    ) -> Plan {
        let settings = &map.recovery;
        // Read every round, so `levee admin set` takes effect at once.
        self.bucket
            .set_rate(settings.moves_per_sec, f64::from(settings.moves_burst), now);
        self.refund_short_moves(map, now, now_ms);
        let states = ById::states(map);
        let held = ById::held(map);
        let mut plan = Plan {
            cancel: stuck_moves(map, &states),
            remove: drained(map, &held),
            ..Plan::default()
        };
        let mut round = Round::new(map, pressure, &states, held);
        // Within one class of needs (as many live replicas left), those
        // whose best source is already copying, or whose every live
        // replica some copy already draws on, wait until the others have
        // had their turn: two moves from one source each go at half speed
        // while another node that could send sits idle. Never across
        // classes, so one left is still served before two left.
        let mut class = None;
        let mut shared_source = Vec::new();
        // A `None` after the last need closes the last class too.
        let needs = needs(map, &states, &plan.cancel);
        for item in needs.into_iter().map(Some).chain([None]) {
            let live = item.as_ref().map(|(live, _)| *live);
            if class != live {
                self.start_deferred(
                    &mut plan,
                    &mut round,
                    map,
                    &mut shared_source,
                    small,
                    now,
                    now_ms,
                );
                class = live;
            }
            let Some((_, need)) = item else { break };
            let set = map.replicas(need.partition);
            if !set.iter().any(|n| alive(&states, *n)) {
                plan.unrecoverable.push(need.partition);
                continue;
            }
            // A move being cancelled still holds its partition this round:
            // the new one starts next round, whatever order the runtime
            // applies the plan in.
            if map.moves.contains_key(&need.partition) {
                plan.waiting += 1;
                continue;
            }
            // Cheap (the partition's few replicas): no target is looked
            // for until its turn comes.
            if round.source_is_busy(set, need.from) || round.all_drawn(set, need.from) {
                shared_source.push(need);
                continue;
            }
            self.start(&mut plan, &mut round, map, need, small, now, now_ms);
        }
        plan
    }

    /// Starts the needs `plan` deferred within a class: first those whose
    /// best source is idle now (a replica every copy draws on is a
    /// lesser sharing than a source that already copies), then the rest,
    /// each in partition order.
    #[allow(clippy::too_many_arguments)]
    fn start_deferred(
        &mut self,
        plan: &mut Plan,
        round: &mut Round<'_>,
        map: &ClusterMap,
        deferred: &mut Vec<Need>,
        small: &BTreeSet<u32>,
        now: Instant,
        now_ms: u64,
    ) {
        let mut busy = Vec::new();
        for need in deferred.drain(..) {
            if round.source_is_busy(map.replicas(need.partition), need.from) {
                busy.push(need);
            } else {
                self.start(plan, round, map, need, small, now, now_ms);
            }
        }
        for need in busy {
            self.start(plan, round, map, need, small, now, now_ms);
        }
    }

    /// Starts a move for `need` if a token (unless it is `small`), a
    /// source and a target are free; else counts it as waiting.
    #[allow(clippy::too_many_arguments)]
    fn start(
        &mut self,
        plan: &mut Plan,
        round: &mut Round<'_>,
        map: &ClusterMap,
        need: Need,
        small: &BTreeSet<u32>,
        now: Instant,
        now_ms: u64,
    ) {
        if small.contains(&need.partition) {
            let set = map.replicas(need.partition);
            match round.choose(set, need.from, now_ms) {
                Some(m) => {
                    round.record(&m, set);
                    plan.start.push((need.partition, m));
                }
                None => plan.waiting += 1,
            }
            return;
        }
        // The token first: a move needs one and a target, and looking for
        // a target scans every node. Once the bucket is empty (it stays
        // empty for the rest of the round) every remaining need would scan
        // for nothing. `available ≥ 1` is exactly when `take(1)` succeeds
        // (the burst is at least 1).
        if self.bucket.available(now) < 1.0 {
            plan.waiting += 1;
            return;
        }
        let set = map.replicas(need.partition);
        let Some(m) = round.choose(set, need.from, now_ms) else {
            plan.waiting += 1;
            return;
        };
        if self.bucket.take(1.0, now).is_err() {
            plan.waiting += 1;
            return;
        }
        round.record(&m, set);
        self.paid.insert(need.partition, (m.clone(), false));
        plan.start.push((need.partition, m));
    }
}

/// Values by node id, read once per plan: the plan looks up a state for
/// every replica of every partition. A vector for the ids a map has (1, 2,
/// 3…: given in order, never reused), a tree for any id far beyond them,
/// so an odd map cannot make the vector huge.
struct ById<T> {
    dense: Vec<T>,
    sparse: BTreeMap<NodeId, T>,
}

impl<T: Copy + Default> ById<T> {
    fn new(map: &ClusterMap) -> Self {
        let limit = map.nodes.len() * 4 + 1024;
        let top = map
            .nodes
            .keys()
            .next_back()
            .map_or(0, |id| *id as usize + 1);
        Self {
            dense: vec![T::default(); top.min(limit)],
            sparse: BTreeMap::new(),
        }
    }

    fn get(&self, id: NodeId) -> T {
        match self.dense.get(id as usize) {
            Some(v) => *v,
            None => self.sparse.get(&id).copied().unwrap_or_default(),
        }
    }

    fn get_mut(&mut self, id: NodeId) -> &mut T {
        match self.dense.get_mut(id as usize) {
            Some(v) => v,
            None => self.sparse.entry(id).or_default(),
        }
    }
}

impl ById<Option<NodeState>> {
    /// Every node's state.
    fn states(map: &ClusterMap) -> Self {
        let mut states = Self::new(map);
        for n in map.nodes.values() {
            *states.get_mut(n.id) = Some(n.state);
        }
        states
    }
}

impl ById<usize> {
    /// How many partitions each node holds.
    fn held(map: &ClusterMap) -> Self {
        let mut held = Self::new(map);
        for n in map.assignment.iter().flatten() {
            *held.get_mut(*n) += 1;
        }
        held
    }
}

/// Whether `id` can serve as a copy source: Up, or Draining (an operator
/// is emptying it, but it is running).
fn alive(states: &ById<Option<NodeState>>, id: NodeId) -> bool {
    matches!(states.get(id), Some(NodeState::Up | NodeState::Draining))
}

/// The replicas a copy replacing `from` in `set` may draw on: `from`
/// alone while it runs (Up, or Draining), else every live replica. A
/// replaced node that runs holds every write it acknowledged, and another
/// replica may lack some of them (W of R acknowledged each): a copy from
/// that replica would leave such a write on one replica once the move
/// ends, where it was on W. `transfer::sources` applies the same rule.
fn copy_sources<'s>(
    states: &'s ById<Option<NodeState>>,
    set: &'s [NodeId],
    from: Option<NodeId>,
) -> impl Iterator<Item = NodeId> + 's {
    let running_from = from.filter(|f| set.contains(f) && alive(states, *f));
    set.iter()
        .copied()
        .filter(move |n| running_from.is_none_or(|f| f == *n) && alive(states, *n))
}

/// Moves in flight that cannot complete: the target is not Up, or neither
/// the source nor any other replica is alive to copy from.
fn stuck_moves(map: &ClusterMap, states: &ById<Option<NodeState>>) -> Vec<u32> {
    map.moves
        .iter()
        .filter(|(p, m)| {
            states.get(m.to) != Some(NodeState::Up)
                || !(alive(states, m.source) || map.replicas(**p).iter().any(|n| alive(states, *n)))
        })
        .map(|(p, _)| *p)
        .collect()
}

/// Draining nodes with nothing left on them (`held` counts what each node
/// holds) and no move involving them.
fn drained(map: &ClusterMap, held: &ById<usize>) -> Vec<NodeId> {
    map.nodes
        .values()
        .filter(|n| n.state == NodeState::Draining)
        .filter(|n| held.get(n.id) == 0)
        .filter(|n| {
            map.moves
                .values()
                .all(|m| m.from != Some(n.id) && m.source != n.id)
        })
        .map(|n| n.id)
        .collect()
}

/// Partitions that need a move and have none in flight (or have one
/// being cancelled), with their live replicas, fewest first, then by id.
fn needs(map: &ClusterMap, states: &ById<Option<NodeState>>, cancel: &[u32]) -> Vec<(usize, Need)> {
    let want = usize::from(map.settings.replicas);
    let member_in =
        |set: &[NodeId], state| set.iter().copied().find(|n| states.get(*n) == Some(state));
    let cancelled: BTreeSet<u32> = cancel.iter().copied().collect();
    let mut needs: Vec<(usize, Need)> = (0..map.partitions)
        .filter(|p| map.moves.is_empty() || !map.moves.contains_key(p) || cancelled.contains(p))
        .filter_map(|p| {
            let set = map.replicas(p);
            // An Out replica before a Draining one: the Out one's
            // redundancy is already lost, the draining one still serves.
            let from =
                member_in(set, NodeState::Out).or_else(|| member_in(set, NodeState::Draining));
            if from.is_none() && set.len() >= want {
                return None;
            }
            let live = set
                .iter()
                .filter(|n| states.get(**n) == Some(NodeState::Up))
                .count();
            Some((live, Need { partition: p, from }))
        })
        .collect();
    needs.sort_by_key(|(live, need)| (*live, need.partition));
    needs
}

/// The load this round has seen so far: what the map holds plus what the
/// plan has started.
struct Round<'a> {
    map: &'a ClusterMap,
    pressure: &'a BTreeMap<NodeId, f64>,
    states: &'a ById<Option<NodeState>>,
    /// Partitions each node holds.
    held: ById<usize>,
    /// Moves into each node.
    incoming: ById<usize>,
    /// Moves copying from each node (as their chosen source).
    outgoing: ById<usize>,
    /// Moves whose target draws pages from each node: the chosen source
    /// and the other replicas the puller also asks, up to
    /// `SOURCES_PER_MOVE` in all.
    drawing: ById<usize>,
    /// Moves in flight cluster-wide. Moves being cancelled still count:
    /// the plan may be applied with the starts first.
    in_flight: usize,
}

impl<'a> Round<'a> {
    fn new(
        map: &'a ClusterMap,
        pressure: &'a BTreeMap<NodeId, f64>,
        states: &'a ById<Option<NodeState>>,
        held: ById<usize>,
    ) -> Self {
        let mut round = Self {
            map,
            pressure,
            states,
            held,
            incoming: ById::new(map),
            outgoing: ById::new(map),
            drawing: ById::new(map),
            in_flight: 0,
        };
        for (p, m) in &map.moves {
            round.record(m, map.replicas(*p));
        }
        round
    }

    /// Counts `m`, a move of the partition held by `set`.
    fn record(&mut self, m: &Move, set: &[NodeId]) {
        *self.incoming.get_mut(m.to) += 1;
        *self.outgoing.get_mut(m.source) += 1;
        let others: Vec<NodeId> = copy_sources(self.states, set, m.from)
            .filter(|n| *n != m.source && *n != m.to)
            .take(SOURCES_PER_MOVE.saturating_sub(1))
            .collect();
        for n in std::iter::once(m.source).chain(others) {
            *self.drawing.get_mut(n) += 1;
        }
        self.in_flight += 1;
    }

    fn count(counts: &ById<usize>, id: NodeId) -> usize {
        counts.get(id)
    }

    fn per_node_cap(&self) -> usize {
        self.map.recovery.max_moves_per_node as usize
    }

    fn pressure(&self, id: NodeId) -> f64 {
        self.pressure.get(&id).copied().unwrap_or_default()
    }

    /// A move for the partition held by `set`, if the caps allow one now
    /// and a source and a target are free.
    fn choose(&self, set: &[NodeId], from: Option<NodeId>, now_ms: u64) -> Option<Move> {
        if self.in_flight >= self.map.recovery.max_moves as usize {
            return None;
        }
        let source = self.source(set, from)?;
        let to = self.target(set, from)?;
        Some(Move {
            from,
            to,
            source,
            started_ms: now_ms,
        })
    }

    /// Whether the partition's best source is already copying for another
    /// move (or none is free at all).
    fn source_is_busy(&self, set: &[NodeId], from: Option<NodeId>) -> bool {
        self.source(set, from)
            .is_none_or(|n| Self::count(&self.outgoing, n) > 0)
    }

    /// Whether some copy already draws on every live replica of `set`, so
    /// a copy of this partition would only share senders.
    fn all_drawn(&self, set: &[NodeId], from: Option<NodeId>) -> bool {
        copy_sources(self.states, set, from).all(|n| Self::count(&self.drawing, n) > 0)
    }

    /// Among the replicas the copy may draw on ([`copy_sources`]: a
    /// running `from` alone), the least busy with an outgoing slot free
    /// (then the least pressed, then the lowest id). A running `from` whose
    /// slots are all taken makes the move wait rather than copy from a
    /// replica that may lack some of its writes.
    fn source(&self, set: &[NodeId], from: Option<NodeId>) -> Option<NodeId> {
        copy_sources(self.states, set, from)
            .filter(|n| Self::count(&self.outgoing, *n) < self.per_node_cap())
            .min_by(|a, b| {
                Self::count(&self.outgoing, *a)
                    .cmp(&Self::count(&self.outgoing, *b))
                    .then(Self::count(&self.drawing, *a).cmp(&Self::count(&self.drawing, *b)))
                    .then(self.pressure(*a).total_cmp(&self.pressure(*b)))
                    .then(a.cmp(b))
            })
    }

    /// The Up node outside `set` to receive the copy: in a zone the
    /// remaining replicas (`set` minus `from`) do not hold if any Up node
    /// is there, else anywhere; with an incoming slot free, not under
    /// pressure; the least loaded for its capacity, then the lowest id.
    ///
    /// When a zone-distinct node exists but is busy or pressed, the move
    /// waits rather than land in a zone the set already holds: busy and
    /// pressure pass within seconds, while nothing later would restore the
    /// set's zone spread.
    fn target(&self, set: &[NodeId], from: Option<NodeId>) -> Option<NodeId> {
        let held_zones: Vec<&str> = set
            .iter()
            .filter(|n| Some(**n) != from)
            .filter_map(|n| self.map.nodes.get(n))
            .map(|n| n.spec.zone.as_str())
            .collect();
        let outside: Vec<&NodeInfo> = self
            .map
            .nodes
            .values()
            .filter(|n| n.state == NodeState::Up && !set.contains(&n.id))
            .collect();
        let new_zone = |n: &&NodeInfo| !held_zones.contains(&n.spec.zone.as_str());
        let spread = outside.iter().any(new_zone);
        outside
            .into_iter()
            .filter(|n| !spread || new_zone(n))
            .filter(|n| Self::count(&self.incoming, n.id) < self.per_node_cap())
            .filter(|n| self.pressure(n.id) < PRESSURE_LIMIT)
            .min_by(|a, b| {
                // (held + incoming) / capacity, compared exactly.
                let load = |n: &NodeInfo| {
                    let count = Self::count(&self.held, n.id) + Self::count(&self.incoming, n.id);
                    (count as u128, u128::from(n.spec.capacity.max(1)))
                };
                let ((la, ca), (lb, cb)) = (load(a), load(b));
                (la * cb).cmp(&(lb * ca)).then(a.id.cmp(&b.id))
            })
            .map(|n| n.id)
    }
}

#[cfg(test)]
mod tests;
