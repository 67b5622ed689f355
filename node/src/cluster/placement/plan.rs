//! The assignment being built and the three passes over it: keep the valid
//! current replicas, fill the empty slots, then rebalance by short move
//! chains until no node above its quota can be relieved.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use super::Assignment;
use super::layout::Layout;

/// One replica changing node within a partition.
#[derive(Debug, Clone, Copy)]
struct Step {
    partition: usize,
    from: usize,
    to: usize,
}

/// What a chain of steps costs: first the replicas it copies that the plan would not otherwise
/// copy (moving a replica placed in this very call is free), then the number of steps.
type Cost = (usize, usize);

/// The assignment being built, by node index, with each node's replica count.
pub(super) struct Plan<'a> {
    layout: &'a Layout,
    sets: Vec<Vec<usize>>,
    loads: Vec<u64>,
    /// The current replicas that are still candidates, per partition: moving one of these
    /// costs a copy, moving a replica placed during this call does not.
    held: Vec<Vec<usize>>,
}

impl<'a> Plan<'a> {
    /// Pass 1: every current replica on a candidate that the zone rule still allows, in the
    /// current order (earlier replicas win a zone conflict, so the preferred one stays).
    pub(super) fn keep(layout: &'a Layout, current: &Assignment, partitions: usize) -> Plan<'a> {
        let held: Vec<Vec<usize>> = (0..partitions)
            .map(|p| {
                let ids = current.get(p).map_or(&[][..], Vec::as_slice);
                ids.iter().filter_map(|&id| layout.index_of(id)).collect()
            })
            .collect();
        let sets: Vec<Vec<usize>> = held
            .iter()
            .map(|nodes| {
                let mut set = Vec::with_capacity(layout.want);
                for &node in nodes {
                    if layout.allows(&set, None, node) {
                        set.push(node);
                    }
                }
                set
            })
            .collect();
        let mut loads = vec![0; layout.len()];
        for &node in sets.iter().flatten() {
            if let Some(load) = loads.get_mut(node) {
                *load += 1;
            }
        }
        Plan {
            layout,
            sets,
            loads,
            held,
        }
    }

    fn load(&self, node: usize) -> u64 {
        self.loads.get(node).copied().unwrap_or_default()
    }

    /// How many more replicas `node` should take.
    fn room(&self, node: usize) -> u64 {
        self.layout.quota(node).saturating_sub(self.load(node))
    }

    fn holds(&self, partition: usize, node: usize) -> bool {
        self.held.get(partition).is_some_and(|h| h.contains(&node))
    }

    /// Pass 2: fill empty slots with the best-ranked allowed node that has room. When none has
    /// room, take the best-ranked allowed node anyway; the rebalance pass then moves the excess.
    pub(super) fn fill(&mut self) {
        let layout = self.layout;
        for (p, set) in self.sets.iter_mut().enumerate() {
            if set.len() >= layout.want {
                continue;
            }
            let ranked = layout.ranked(p);
            while set.len() < layout.want {
                let mut allowed = ranked
                    .iter()
                    .copied()
                    .filter(|&n| layout.allows(set, None, n));
                let has_room =
                    |n: &usize| self.loads.get(*n).is_some_and(|&l| l < layout.quota(*n));
                let Some(node) = allowed.clone().find(has_room).or_else(|| allowed.next()) else {
                    break; // unreachable: an allowed node always exists while a slot is empty
                };
                set.push(node);
                if let Some(load) = self.loads.get_mut(node) {
                    *load += 1;
                }
            }
        }
    }

    /// Pass 3: relieve nodes above quota, the most loaded first. A node no chain can relieve
    /// is skipped until some other move changes the picture, so the loop ends (each success
    /// lowers the total excess by one) and ends where no chain exists, which is what makes
    /// placing the result again a no-op.
    pub(super) fn rebalance(&mut self) {
        let mut stuck = vec![false; self.layout.len()];
        loop {
            let over = (0..self.layout.len())
                .filter(|&n| !stuck.get(n).copied().unwrap_or(true))
                .filter(|&n| self.load(n) > self.layout.quota(n))
                .max_by_key(|&n| (self.load(n) - self.layout.quota(n), Reverse(n)));
            let Some(node) = over else { break };
            if self.relief(node).is_some_and(|steps| self.apply(&steps)) {
                stuck.fill(false);
            } else if let Some(flag) = stuck.get_mut(node) {
                *flag = true;
            }
        }
    }

    /// The cheapest chain of steps that takes one replica off `node` and ends at a node with
    /// room: in one partition `node` hands its replica to another node, which (if full) hands
    /// one of its own on in another partition, and so on. A shortest-path search over nodes by
    /// [`Cost`]; among equally cheap ends it prefers the node with the most room (a new node
    /// fills up before rounding slack elsewhere is used), then the partition it ranks highest.
    fn relief(&self, node: usize) -> Option<Vec<Step>> {
        let mut reached: Vec<Option<(Cost, Step)>> = vec![None; self.layout.len()];
        let mut done = vec![false; self.layout.len()];
        let mut ends: Vec<usize> = Vec::new();
        let mut queue = BinaryHeap::from([Reverse(((0, 0), node))]);
        while let Some(Reverse((cost, from))) = queue.pop() {
            let cheapest_end = ends.iter().filter_map(|&e| self.cost_to(&reached, e)).min();
            if cheapest_end.is_some_and(|end| cost >= end) {
                break;
            }
            match done.get_mut(from) {
                Some(flag) if !*flag => *flag = true,
                _ => continue,
            }
            for (partition, to, step_cost) in self.steps_from(from, cost) {
                let step = Step {
                    partition,
                    from,
                    to,
                };
                if done.get(to).copied().unwrap_or(true)
                    || !self.improves(&reached, step, step_cost)
                {
                    continue;
                }
                if let Some(slot) = reached.get_mut(to) {
                    *slot = Some((step_cost, step));
                }
                if self.room(to) > 0 {
                    ends.push(to);
                } else {
                    queue.push(Reverse((step_cost, to)));
                }
            }
        }
        let end = ends.into_iter().min_by_key(|&e| {
            let reach = reached.get(e).copied().flatten();
            let score = reach.map(|(_, s)| self.layout.score(s.partition, e));
            (reach.map(|(c, _)| c), Reverse(self.room(e)), Reverse(score))
        })?;
        Some(Self::unwind(&reached, end))
    }

    /// Whether reaching `step.to` by `step` at `cost` beats how it was reached so far: cheaper,
    /// or as cheap and into a partition that `step.to` ranks higher (rendezvous order).
    fn improves(&self, reached: &[Option<(Cost, Step)>], step: Step, cost: Cost) -> bool {
        let Some((old_cost, old)) = reached.get(step.to).copied().flatten() else {
            return true;
        };
        let score = |s: Step| self.layout.score(s.partition, s.to);
        cost < old_cost || (cost == old_cost && score(step) > score(old))
    }

    fn cost_to(&self, reached: &[Option<(Cost, Step)>], node: usize) -> Option<Cost> {
        reached.get(node).copied().flatten().map(|(cost, _)| cost)
    }

    /// Every allowed single step handing on a replica of `from`, with the cost of the chain
    /// that ends with it when reaching `from` cost `cost`.
    fn steps_from(&self, from: usize, cost: Cost) -> Vec<(usize, usize, Cost)> {
        let mut steps = Vec::new();
        for (partition, set) in self
            .sets
            .iter()
            .enumerate()
            .filter(|(_, s)| s.contains(&from))
        {
            let copies = cost.0 + usize::from(self.holds(partition, from));
            for to in (0..self.layout.len()).filter(|&to| self.layout.allows(set, Some(from), to)) {
                steps.push((partition, to, (copies, cost.1 + 1)));
            }
        }
        steps
    }

    /// The steps that led to `end`, last first.
    fn unwind(reached: &[Option<(Cost, Step)>], end: usize) -> Vec<Step> {
        let mut steps: Vec<Step> = Vec::new();
        let mut at = end;
        // The reached links form a tree rooted at the start; the length check is only a guard.
        while let Some((_, step)) = reached.get(at).copied().flatten() {
            if steps.len() > reached.len() {
                break;
            }
            steps.push(step);
            at = step.from;
        }
        steps
    }

    /// Applies `steps` unless a partition would break the zone rule. Each step was checked
    /// against its partition as it is now; two steps in one partition must also pass together.
    fn apply(&mut self, steps: &[Step]) -> bool {
        let mut touched: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for step in steps {
            let set = touched
                .entry(step.partition)
                .or_insert_with(|| self.sets.get(step.partition).cloned().unwrap_or_default());
            // The newcomer goes last: the replicas that already hold the data stay preferred.
            set.retain(|&n| n != step.from);
            set.push(step.to);
        }
        if !touched.values().all(|set| self.layout.feasible(set)) {
            return false;
        }
        for (partition, set) in touched {
            if let Some(slot) = self.sets.get_mut(partition) {
                *slot = set;
            }
        }
        for step in steps {
            for (n, delta) in [(step.from, -1), (step.to, 1)] {
                if let Some(load) = self.loads.get_mut(n) {
                    *load = load.saturating_add_signed(delta);
                }
            }
        }
        true
    }

    pub(super) fn into_assignment(self) -> Assignment {
        let layout = self.layout;
        self.sets
            .into_iter()
            .map(|set| set.into_iter().map(|n| layout.id(n)).collect())
            .collect()
    }
}
