//! Whether the checker served partitions with one live replica before
//! those with two: an independent check of its plans, from the map after
//! each tick.

use std::collections::BTreeMap;

use levee_node::cluster::NodeId;
use levee_node::cluster::map::NodeState;
use levee_node::recovery::checker::PRESSURE_LIMIT;

use super::Engine;
use crate::sim::record::States;

impl Engine<'_> {
    /// After a tick that started a move of a partition with two or more
    /// live replicas: partitions at one live replica that need a move and
    /// still have none. Each counts as an inversion if a live replica of it
    /// (its replaced node alone while that one runs, as
    /// `transfer::sources` copies from it alone) had an outgoing slot free
    /// and some node could have received it (Up,
    /// outside the set, in a zone the rest of the set lacks when one is
    /// Up, incoming slot free, not pressed); else as waiting for a busy
    /// source or target, which no order of the needs would have changed.
    pub(super) fn check_priority(&mut self) {
        let states = States::of(&self.map);
        let cap = self.map.recovery.max_moves_per_node as usize;
        let mut outgoing: BTreeMap<NodeId, usize> = BTreeMap::new();
        let mut incoming: BTreeMap<NodeId, usize> = BTreeMap::new();
        for m in self.map.moves.values() {
            *outgoing.entry(m.source).or_default() += 1;
            *incoming.entry(m.to).or_default() += 1;
        }
        let want = usize::from(self.map.settings.replicas);
        let alive = |s: Option<NodeState>| matches!(s, Some(NodeState::Up | NodeState::Draining));
        let mut inverted = false;
        for (p, set) in self.map.assignment.iter().enumerate() {
            let live = set
                .iter()
                .filter(|n| states.get(**n) == Some(NodeState::Up))
                .count();
            if live != 1 || self.map.moves.contains_key(&(p as u32)) {
                continue;
            }
            let from = set
                .iter()
                .find(|n| states.get(**n) == Some(NodeState::Out))
                .or_else(|| {
                    set.iter()
                        .find(|n| states.get(**n) == Some(NodeState::Draining))
                });
            if from.is_none() && set.len() >= want {
                continue;
            }
            let running_from = from.copied().filter(|f| alive(states.get(*f)));
            let source = set
                .iter()
                .filter(|n| running_from.is_none_or(|f| f == **n))
                .any(|n| alive(states.get(*n)) && outgoing.get(n).copied().unwrap_or(0) < cap);
            if source && self.target_free(set, from.copied(), &incoming) {
                inverted = true;
            } else {
                self.run.one_left_source_busy += 1;
            }
        }
        if inverted {
            self.run.inversions += 1;
        }
    }

    /// Whether some node could receive a copy of the partition held by
    /// `set` (replacing `from`) now: the checker's rule for targets.
    fn target_free(
        &self,
        set: &[NodeId],
        from: Option<NodeId>,
        incoming: &BTreeMap<NodeId, usize>,
    ) -> bool {
        let cap = self.map.recovery.max_moves_per_node as usize;
        let zone = |id: &NodeId| self.map.nodes.get(id).map(|n| n.spec.zone.as_str());
        let held: Vec<Option<&str>> = set.iter().filter(|n| Some(**n) != from).map(zone).collect();
        let outside: Vec<NodeId> = self
            .map
            .nodes
            .values()
            .filter(|n| n.state == NodeState::Up && !set.contains(&n.id))
            .map(|n| n.id)
            .collect();
        let spread = outside.iter().any(|n| !held.contains(&zone(n)));
        outside.iter().any(|n| {
            (!spread || !held.contains(&zone(n)))
                && incoming.get(n).copied().unwrap_or(0) < cap
                && self.alive(*n)
                && self.load.get(*n as usize).copied().unwrap_or(0.0) < PRESSURE_LIMIT
        })
    }
}
