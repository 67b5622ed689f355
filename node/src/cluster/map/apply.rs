//! The pure rules by which a [`Command`] changes the [`ClusterMap`]: every
//! replica computes the same map from the same log.

use super::*;
use crate::cluster::placement::{self, Candidate};

impl ClusterMap {
    /// Applies a command. Pure and deterministic: every replica computes
    /// the same map from the same log.
    pub fn apply(&mut self, command: &Command) -> CommandResult {
        match command {
            Command::Init {
                cluster_id,
                partitions,
                settings,
                first,
            } => {
                if self.cluster_id != 0 {
                    return CommandResult::Rejected("cluster is already initialised".into());
                }
                *self = Self {
                    cluster_id: *cluster_id,
                    epoch: 0,
                    partitions: *partitions,
                    settings: *settings,
                    nodes: BTreeMap::new(),
                    assignment: Vec::new(),
                    next_node_id: 1,
                    recovery: RecoverySettings::default(),
                    moves: BTreeMap::new(),
                    quarantine: Default::default(),
                };
                self.add_node(first)
            }
            Command::AddNode(spec) => self.add_node(spec),
            Command::SetNodeState { id, state, at_ms } => self.set_node_state(*id, *state, *at_ms),
            Command::StartMoves(moves) => {
                let mut started = 0;
                for (partition, m) in moves {
                    if self.can_start(*partition, m) {
                        self.moves.insert(*partition, m.clone());
                        started += 1;
                    }
                }
                if started == 0 {
                    return CommandResult::Applied { epoch: self.epoch };
                }
                self.bump()
            }
            Command::FinishMove { partition, to } => self.finish_move(*partition, *to),
            Command::CancelMoves(partitions) => {
                let before = self.moves.len();
                for p in partitions {
                    self.moves.remove(p);
                }
                if self.moves.len() == before {
                    return CommandResult::Applied { epoch: self.epoch };
                }
                self.bump()
            }
            Command::SetRecoveryAll(settings) => match settings.checked() {
                Ok(()) => {
                    self.recovery = *settings;
                    self.bump()
                }
                Err(why) => CommandResult::Rejected(why),
            },
            Command::SetRecovery { key, value } => match self.recovery.with(key, value) {
                Ok(next) => {
                    self.recovery = next;
                    self.bump()
                }
                Err(why) => CommandResult::Rejected(why),
            },
            Command::Strike { shape, node, at_ms } => {
                let before = self.quarantine.clone();
                self.quarantine.strike(shape.clone(), *node, *at_ms);
                if self.quarantine == before {
                    return CommandResult::Applied { epoch: self.epoch };
                }
                self.bump()
            }
            Command::ClearQuarantine => {
                if self.quarantine.is_empty() {
                    return CommandResult::Applied { epoch: self.epoch };
                }
                self.quarantine.clear();
                self.bump()
            }
        }
    }

    fn set_node_state(&mut self, id: NodeId, state: NodeState, at_ms: u64) -> CommandResult {
        let Some(node) = self.nodes.get_mut(&id) else {
            return CommandResult::Rejected(format!("no node {id} in the cluster"));
        };
        if node.state == state {
            return CommandResult::Applied { epoch: self.epoch };
        }
        if node.state == NodeState::Removed {
            return CommandResult::Rejected(format!(
                "node {id} was removed; a removed node never comes back (start it with an empty data directory to join as a new node)"
            ));
        }
        node.state = state;
        node.since_ms = at_ms;
        match state {
            // Only an operator's removal changes the sets at once: the
            // node is gone for good and its replicas must be rebuilt (by
            // the next rebalance's placement, then anti-entropy).
            NodeState::Removed => {
                self.moves.retain(|_, m| m.to != id && m.from != Some(id));
                for set in &mut self.assignment {
                    set.retain(|n| *n != id);
                }
            }
            // A node that is back keeps its replicas; moves replacing it
            // are pointless now.
            NodeState::Up => {
                self.moves.retain(|_, m| m.from != Some(id));
            }
            // Nothing is copied to a node that is not Up.
            NodeState::Down | NodeState::Out => {
                self.moves.retain(|_, m| m.to != id);
            }
            NodeState::Draining => {
                self.moves.retain(|_, m| m.to != id);
            }
        }
        self.bump()
    }

    /// Whether a planned move still fits the map: no other move on the
    /// partition, `from` in the set, `to` Up and not in it.
    fn can_start(&self, partition: u32, m: &Move) -> bool {
        let Some(set) = self.assignment.get(partition as usize) else {
            return false;
        };
        let to_up = self
            .nodes
            .get(&m.to)
            .is_some_and(|n| n.state == NodeState::Up);
        let from_ok = match m.from {
            Some(from) => set.contains(&from),
            None => set.len() < usize::from(self.settings.replicas),
        };
        !self.moves.contains_key(&partition) && to_up && from_ok && !set.contains(&m.to)
    }

    fn finish_move(&mut self, partition: u32, to: NodeId) -> CommandResult {
        let Some(m) = self.moves.get(&partition).filter(|m| m.to == to) else {
            return CommandResult::Rejected(format!(
                "no move of partition {partition} to node {to} is in flight (it was cancelled or already finished)"
            ));
        };
        let from = m.from;
        self.moves.remove(&partition);
        let Some(set) = self.assignment.get_mut(partition as usize) else {
            return CommandResult::Rejected(format!("no partition {partition}"));
        };
        match from.and_then(|f| set.iter().position(|n| *n == f)) {
            Some(i) => set[i] = to,
            None if !set.contains(&to) => set.push(to),
            None => {}
        }
        self.bump()
    }

    fn add_node(&mut self, spec: &NodeSpec) -> CommandResult {
        let existing = self
            .nodes
            .values()
            .find(|n| n.spec.addr == spec.addr && n.state != NodeState::Removed);
        if let Some(node) = existing {
            if node.spec.join_token == spec.join_token {
                return CommandResult::NodeAdded {
                    id: node.id,
                    epoch: self.epoch,
                };
            }
            return CommandResult::Rejected(format!(
                "address {} already belongs to node {} of this cluster, and the joining node is not it \
                 (its data directory was probably wiped). Restart node {} with its original data \
                 directory, or join with a different address to become a new node",
                spec.addr, node.id, node.id
            ));
        }
        let id = self.next_node_id.max(1);
        self.next_node_id = id + 1;
        self.nodes.insert(
            id,
            NodeInfo {
                id,
                spec: spec.clone(),
                state: NodeState::Up,
                since_ms: 0,
            },
        );
        self.rebalance();
        self.epoch += 1;
        CommandResult::NodeAdded {
            id,
            epoch: self.epoch,
        }
    }

    fn bump(&mut self) -> CommandResult {
        self.epoch += 1;
        CommandResult::Applied { epoch: self.epoch }
    }

    /// Recomputes replica sets with placement, moving as little as
    /// possible.
    fn rebalance(&mut self) {
        let candidates: Vec<Candidate> = self
            .nodes
            .values()
            .filter(|n| n.state.holds_replicas())
            .map(|n| Candidate {
                id: n.id,
                zone: n.spec.zone.clone(),
                capacity: n.spec.capacity,
            })
            .collect();
        self.assignment = placement::place(
            &candidates,
            self.partitions,
            usize::from(self.settings.replicas),
            &self.assignment,
        );
        // Placement may have changed sets under moves in flight; keep only
        // the moves that still make sense.
        let moves = std::mem::take(&mut self.moves);
        for (partition, m) in moves {
            if self.can_start(partition, &m) {
                self.moves.insert(partition, m);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(addr: &str, zone: &str, token: u64) -> NodeSpec {
        NodeSpec {
            addr: addr.into(),
            admin: format!("{addr}-admin"),
            zone: zone.into(),
            capacity: 1,
            join_token: token,
        }
    }

    fn init() -> ClusterMap {
        let mut map = ClusterMap::default();
        let result = map.apply(&Command::Init {
            cluster_id: 42,
            partitions: 16,
            settings: Settings::default(),
            first: spec("a:1", "z1", 1),
        });
        assert_eq!(result, CommandResult::NodeAdded { id: 1, epoch: 1 });
        map
    }

    #[test]
    fn every_change_increases_the_epoch() {
        let mut map = init();
        let before = map.epoch;
        assert!(matches!(
            map.apply(&Command::AddNode(spec("b:1", "z2", 2))),
            CommandResult::NodeAdded { id: 2, .. }
        ));
        assert!(map.epoch > before);
        let before = map.epoch;
        map.apply(&Command::SetNodeState {
            id: 2,
            state: NodeState::Down,
            at_ms: 1,
        });
        assert!(map.epoch > before);
    }

    #[test]
    fn a_retried_join_gets_the_same_id_and_changes_nothing() {
        let mut map = init();
        let first = map.apply(&Command::AddNode(spec("b:1", "z2", 7)));
        let epoch = map.epoch;
        let again = map.apply(&Command::AddNode(spec("b:1", "z2", 7)));
        assert_eq!(first, again);
        assert_eq!(map.epoch, epoch);
    }

    #[test]
    fn a_wiped_node_reusing_an_address_is_refused_with_a_remedy() {
        let mut map = init();
        map.apply(&Command::AddNode(spec("b:1", "z2", 7)));
        let before = map.clone();
        let CommandResult::Rejected(message) = map.apply(&Command::AddNode(spec("b:1", "z2", 8)))
        else {
            panic!("a new token on a known address must be refused");
        };
        assert!(
            message.contains("node 2") && message.contains("different address"),
            "{message}"
        );
        assert_eq!(map, before);
    }

    #[test]
    fn ids_are_never_reused() {
        let mut map = init();
        map.apply(&Command::AddNode(spec("b:1", "z2", 2)));
        map.apply(&Command::SetNodeState {
            id: 2,
            state: NodeState::Removed,
            at_ms: 1,
        });
        let result = map.apply(&Command::AddNode(spec("b:1", "z2", 3)));
        assert!(
            matches!(result, CommandResult::NodeAdded { id: 3, .. }),
            "{result:?}"
        );
    }

    #[test]
    fn joining_nodes_get_partitions_and_replicas_reach_r() {
        let mut map = init();
        map.apply(&Command::AddNode(spec("b:1", "z2", 2)));
        map.apply(&Command::AddNode(spec("c:1", "z3", 3)));
        assert_eq!(map.assignment.len(), 16);
        assert!(map.assignment.iter().all(|set| set.len() == 3));
        assert_eq!(map.under_replicated(), 0);
        for id in 1..=3 {
            assert_eq!(map.partitions_held(id), 16);
        }
    }

    fn five_nodes() -> ClusterMap {
        let mut map = init();
        for (i, zone) in [(2, "z2"), (3, "z3"), (4, "z1"), (5, "z2")] {
            map.apply(&Command::AddNode(spec(&format!("n{i}:1"), zone, i)));
        }
        map
    }

    fn set_state(map: &mut ClusterMap, id: NodeId, state: NodeState) -> CommandResult {
        map.apply(&Command::SetNodeState {
            id,
            state,
            at_ms: 1_000,
        })
    }

    /// A partition holding `from` but not `to`, and a move between them.
    fn a_move(map: &ClusterMap, from: NodeId, to: NodeId) -> (u32, Move) {
        let p = (0..map.partitions)
            .find(|p| map.replicas(*p).contains(&from) && !map.replicas(*p).contains(&to))
            .expect("some partition holds `from` and not `to`");
        let source = *map.replicas(p).iter().find(|n| **n != from).unwrap();
        (
            p,
            Move {
                from: Some(from),
                to,
                source,
                started_ms: 5,
            },
        )
    }

    #[test]
    fn down_and_out_change_no_replica_set() {
        let mut map = five_nodes();
        let before = map.assignment.clone();
        set_state(&mut map, 2, NodeState::Down);
        assert_eq!(map.assignment, before);
        assert_eq!(map.nodes[&2].since_ms, 1_000);
        assert!(map.under_replicated() > 0);
        set_state(&mut map, 2, NodeState::Out);
        assert_eq!(
            map.assignment, before,
            "only the checker's moves change sets"
        );
        let groups = map.under_replicated_by_live();
        assert_eq!(groups.get(&2).copied(), Some(map.partitions_held(2)));
    }

    #[test]
    fn a_finished_move_replaces_the_lost_replica() {
        let mut map = five_nodes();
        set_state(&mut map, 2, NodeState::Out);
        let (p, m) = a_move(&map, 2, 4);
        map.apply(&Command::StartMoves(vec![(p, m.clone())]));
        assert_eq!(map.incoming(p), Some(4));
        let epoch = map.epoch;
        assert!(matches!(
            map.apply(&Command::FinishMove {
                partition: p,
                to: 5
            }),
            CommandResult::Rejected(_)
        ));
        assert_eq!(map.epoch, epoch);
        map.apply(&Command::FinishMove {
            partition: p,
            to: 4,
        });
        assert!(map.replicas(p).contains(&4) && !map.replicas(p).contains(&2));
        assert_eq!(map.replicas(p).len(), 3);
        assert!(map.moves.is_empty());
    }

    #[test]
    fn moves_that_no_longer_fit_are_skipped_or_dropped() {
        let mut map = five_nodes();
        set_state(&mut map, 2, NodeState::Out);
        let (p, m) = a_move(&map, 2, 4);
        // Twice on one partition: the second is skipped.
        map.apply(&Command::StartMoves(vec![(p, m.clone()), (p, m.clone())]));
        assert_eq!(map.moves.len(), 1);
        // The node being replaced comes back: the move is pointless.
        set_state(&mut map, 2, NodeState::Up);
        assert!(map.moves.is_empty());
        // A target that is not Up is never started, and one that goes
        // down loses its move.
        set_state(&mut map, 2, NodeState::Out);
        set_state(&mut map, 4, NodeState::Down);
        map.apply(&Command::StartMoves(vec![(p, m.clone())]));
        assert!(map.moves.is_empty());
        set_state(&mut map, 4, NodeState::Up);
        map.apply(&Command::StartMoves(vec![(p, m)]));
        assert_eq!(map.moves.len(), 1);
        set_state(&mut map, 4, NodeState::Down);
        assert!(map.moves.is_empty());
    }

    #[test]
    fn cancelled_moves_leave_the_sets_alone() {
        let mut map = five_nodes();
        set_state(&mut map, 2, NodeState::Out);
        let before = map.assignment.clone();
        let (p, m) = a_move(&map, 2, 4);
        map.apply(&Command::StartMoves(vec![(p, m)]));
        map.apply(&Command::CancelMoves(vec![p]));
        assert!(map.moves.is_empty());
        assert_eq!(map.assignment, before);
    }

    #[test]
    fn removal_drops_the_node_from_every_set_and_is_final() {
        let mut map = five_nodes();
        set_state(&mut map, 2, NodeState::Removed);
        assert_eq!(map.partitions_held(2), 0);
        assert!(matches!(
            set_state(&mut map, 2, NodeState::Up),
            CommandResult::Rejected(_)
        ));
    }

    #[test]
    fn recovery_settings_are_checked_before_they_are_applied() {
        let mut map = init();
        let set = |map: &mut ClusterMap, k: &str, v: &str| {
            map.apply(&Command::SetRecovery {
                key: k.into(),
                value: v.into(),
            })
        };
        assert!(matches!(
            set(&mut map, "recovery.bytes_per_sec", "1048576"),
            CommandResult::Applied { .. }
        ));
        assert_eq!(map.recovery.bytes_per_sec, 1 << 20);
        set(&mut map, "noout", "on");
        assert!(map.recovery.noout);
        set(&mut map, "min_in_ratio", "0.5");
        assert_eq!(map.recovery.min_in_ratio, 0.5);
        let before = map.clone();
        for (k, v) in [
            ("recovery.bytes_per_sec", "0"),
            ("recovery.bytes_per_sec", "fast"),
            ("recovery.moves_per_sec", "NaN"),
            ("min_in_ratio", "1.5"),
            ("down_after", "1"),
            ("nonsense", "1"),
        ] {
            let result = set(&mut map, k, v);
            assert!(
                matches!(result, CommandResult::Rejected(_)),
                "{k}={v}: {result:?}"
            );
        }
        assert_eq!(map, before);
        // Every key listed for operators is accepted by the map.
        for (key, _) in RECOVERY_KEYS {
            let value = match *key {
                "noout" | "zone_guard" => "off",
                "min_in_ratio" | "recovery.pressure_floor" => "0.9",
                "suspect_after" => "1000",
                "down_out_interval" => "900000",
                _ => "20000",
            };
            assert!(
                map.recovery.with(key, value).is_ok(),
                "{key}={value} refused"
            );
        }
    }

    #[test]
    fn strikes_quarantine_a_shape_in_the_map_and_clear_lifts_it() {
        use crate::cluster::quarantine::Shape;
        let mut map = init();
        let shape = Shape {
            op: "put".into(),
            hash: 9,
        };
        let strike = |node, at_ms| Command::Strike {
            shape: shape.clone(),
            node,
            at_ms,
        };
        let e0 = map.epoch;
        map.apply(&strike(1, 100));
        assert!(map.epoch > e0, "a strike is news to every node");
        assert_eq!(map.quarantine.refuses("put", 9, 101), None);
        map.apply(&strike(2, 200));
        assert!(map.quarantine.refuses("put", 9, 201).is_some());
        let e1 = map.epoch;
        map.apply(&Command::ClearQuarantine);
        assert!(map.epoch > e1);
        assert_eq!(map.quarantine.refuses("put", 9, 202), None);
        let e2 = map.epoch;
        map.apply(&Command::ClearQuarantine);
        assert_eq!(map.epoch, e2, "clearing an empty list changes nothing");
    }
}
