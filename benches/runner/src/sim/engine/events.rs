//! The scenario's events as the engine applies them: losses, flaps and
//! returns as changes of liveness at their instants, an operator's drain,
//! joins, and the clients' load moving to the nodes still serving.

use levee_node::cluster::NodeId;
use levee_node::cluster::map::{Command, CommandResult, NodeState};
use rand::seq::SliceRandom;
use std::time::Instant;

use super::Engine;
use crate::sim::record::SimEventRecord;
use crate::sim::scenario::EventKind;
use crate::sim::topology::{self, SimNode};

/// A change of liveness, or an operator's action, at a simulated instant.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Action {
    /// The node stops being heard (and stops sending and receiving).
    Silent(NodeId),
    /// The node is heard again, with its data.
    Heard(NodeId),
    /// Drain this share of the nodes.
    Drain(f64),
    /// Nodes join, in this zone or spread over all.
    Join(u32, Option<u32>),
}

impl Engine<'_> {
    /// The scenario's events as actions at their instants.
    pub(super) fn schedule(&mut self) {
        let ms = |s: f64| (s * 1000.0).round() as u64;
        for e in &self.s.events {
            let at = ms(e.at_s);
            let members: Vec<NodeId> = match e.kind {
                EventKind::NodeLoss | EventKind::Flap => e.node.into_iter().collect(),
                EventKind::RackLoss | EventKind::ZoneLoss => self
                    .nodes
                    .iter()
                    .flatten()
                    .filter(|n| Some(n.zone) == e.zone)
                    .filter(|n| e.kind == EventKind::ZoneLoss || Some(n.rack) == e.rack)
                    .map(|n| n.id)
                    .collect(),
                EventKind::Drain | EventKind::Join => Vec::new(),
            };
            let detail = match e.kind {
                EventKind::RackLoss => format!(
                    "rack {} of zone z{} ({} nodes)",
                    e.rack.unwrap_or(0),
                    e.zone.unwrap_or(0),
                    members.len()
                ),
                EventKind::ZoneLoss => {
                    format!("zone z{} ({} nodes)", e.zone.unwrap_or(0), members.len())
                }
                EventKind::Drain => {
                    format!("{:.1}% of the nodes", e.fraction.unwrap_or(0.0) * 100.0)
                }
                EventKind::Join => format!("{} nodes", e.count.unwrap_or(0)),
                EventKind::NodeLoss | EventKind::Flap => String::new(),
            };
            self.run.events.push(SimEventRecord {
                t_s: e.at_s,
                kind: e.kind.name().to_owned(),
                nodes: members.clone(),
                detail,
            });
            match e.kind {
                EventKind::Flap => {
                    let (down, up) = (ms(e.down_s.unwrap_or(0.0)), ms(e.up_s.unwrap_or(0.0)));
                    for k in 0..u64::from(e.cycles.unwrap_or(0)) {
                        let start = at + k * (down + up);
                        for id in &members {
                            self.actions.push((start, Action::Silent(*id)));
                            self.actions.push((start + down, Action::Heard(*id)));
                        }
                    }
                }
                EventKind::Drain => self
                    .actions
                    .push((at, Action::Drain(e.fraction.unwrap_or(0.0)))),
                EventKind::Join => self
                    .actions
                    .push((at, Action::Join(e.count.unwrap_or(0), e.zone))),
                _ => {
                    for id in &members {
                        self.actions.push((at, Action::Silent(*id)));
                        if let Some(back) = e.back_after_s {
                            self.actions.push((at + ms(back), Action::Heard(*id)));
                        }
                    }
                    if let Some(back) = e.back_after_s {
                        self.run.events.push(SimEventRecord {
                            t_s: e.at_s + back,
                            kind: "back".to_owned(),
                            nodes: members.clone(),
                            detail: format!("after {back} s"),
                        });
                    }
                }
            }
        }
        // Stable: at one instant, actions keep the file's order.
        self.actions.sort_by_key(|(at, _)| *at);
    }

    pub(super) fn act(&mut self, action: Action) {
        match action {
            Action::Silent(id) => {
                if let Some(s) = self.silenced.get_mut(id as usize) {
                    *s += 1;
                }
                self.spread_load();
            }
            Action::Heard(id) => {
                if let Some(s) = self.silenced.get_mut(id as usize) {
                    *s = s.saturating_sub(1);
                }
                self.spread_load();
            }
            Action::Drain(fraction) => self.drain(fraction),
            Action::Join(count, zone) => self.join(count, zone),
        }
    }

    /// `levee admin drain` on a random share of the Up nodes.
    fn drain(&mut self, fraction: f64) {
        let mut up: Vec<NodeId> = self
            .map
            .nodes
            .values()
            .filter(|n| n.state == NodeState::Up)
            .map(|n| n.id)
            .collect();
        up.shuffle(&mut self.rng);
        let count = (up.len() as f64 * fraction).round() as usize;
        let mut chosen: Vec<NodeId> = up.into_iter().take(count).collect();
        chosen.sort_unstable();
        for id in &chosen {
            self.commit(Command::SetNodeState {
                id: *id,
                state: NodeState::Draining,
                at_ms: self.now_ms,
            });
        }
        self.note_work();
        if let Some(e) = self.run.events.iter_mut().rev().find(|e| e.kind == "drain") {
            e.nodes = chosen;
        }
        self.reconcile();
    }

    /// `count` nodes join (`Command::AddNode`), in `zone` or round robin
    /// over the zones, each in a rack of its own zone's joiners.
    fn join(&mut self, count: u32, zone: Option<u32>) {
        let zones = self.s.cluster.zones;
        let rack = self.s.cluster.racks_per_zone + 1;
        let mut ids = Vec::new();
        for k in 0..count {
            let z = zone.unwrap_or(k % zones + 1);
            let id = self.map.next_node_id;
            let node = topology::draw_node(self.s, &mut self.rng, id, z, rack);
            let before = self.map.assignment.clone();
            let wall = Instant::now();
            let result = self.map.apply(&Command::AddNode(node.spec()));
            self.run
                .join_apply_ms
                .push(wall.elapsed().as_secs_f64() * 1000.0);
            if let CommandResult::NodeAdded { id: got, .. } = result {
                debug_assert_eq!(got, id);
                let moved = levee_node::cluster::placement::moves(&before, &self.map.assignment);
                let bytes: u64 = self
                    .map
                    .assignment
                    .iter()
                    .enumerate()
                    .filter(|(p, set)| {
                        set.iter()
                            .any(|n| !before.get(*p).is_some_and(|b| b.contains(n)))
                    })
                    .map(|(p, set)| {
                        let old = before.get(p).map_or(&[][..], Vec::as_slice);
                        let new = set.iter().filter(|n| !old.contains(n)).count() as u64;
                        new * self.sizes.get(p).copied().unwrap_or(0)
                    })
                    .sum();
                self.run.join_reassigned.0 += moved as u64;
                self.run.join_reassigned.1 += bytes;
                self.add(node);
                ids.push(id);
            }
        }
        if let Some(e) = self.run.events.iter_mut().rev().find(|e| e.kind == "join") {
            e.nodes = ids;
        }
        self.spread_load();
        self.reconcile();
    }

    /// The clients of the nodes that are not serving go to the others:
    /// each serving node's load is its own share scaled up by the lost
    /// nodes' (at most 0.95).
    pub(super) fn spread_load(&mut self) {
        let serving = |e: &Self, n: &SimNode| {
            e.alive(n.id)
                && matches!(
                    e.map.state_of(n.id),
                    Some(NodeState::Up | NodeState::Draining | NodeState::Down)
                )
        };
        let total: f64 = self.nodes.iter().flatten().map(|n| n.base_load).sum();
        let live: f64 = self
            .nodes
            .iter()
            .flatten()
            .filter(|n| serving(self, n))
            .map(|n| n.base_load)
            .sum();
        let scale = if live > 0.0 { total / live } else { 1.0 };
        let loads: Vec<(usize, f64)> = self
            .nodes
            .iter()
            .flatten()
            .map(|n| {
                let load = if serving(self, n) {
                    (n.base_load * scale).min(0.95)
                } else {
                    0.0
                };
                (n.id as usize, load)
            })
            .collect();
        for (i, load) in loads {
            self.load[i] = load;
        }
    }
}
