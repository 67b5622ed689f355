//! The placement problem in a fixed form: the candidates as indices, the
//! zone rule every replica set must satisfy, each node's quota and its
//! rendezvous preference for each partition.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::Candidate;
use super::quotas::quotas;

/// The candidates in a fixed order, with what every replica set must satisfy and how much each
/// node should hold. Nodes are referred to by their index in `ids`.
pub(super) struct Layout {
    /// Node ids, sorted and unique, so the result does not depend on the candidates' order.
    pub(super) ids: Vec<u64>,
    /// Zone number of each node.
    zone: Vec<usize>,
    /// Replicas each node should hold. They add up to exactly all replicas: any slack would let
    /// old nodes keep replicas that a new node should take, and any shortfall could not be met.
    quota: Vec<u64>,
    /// Replicas per partition: `min(replicas, nodes)`.
    pub(super) want: usize,
    /// Distinct zones every replica set must span: `min(want, zones)`.
    zones_needed: usize,
}

impl Layout {
    /// `None` when no replica can be placed at all (no candidates or no replicas wanted).
    pub(super) fn new(
        candidates: &[Candidate],
        replicas: usize,
        partitions: usize,
    ) -> Option<Layout> {
        let mut nodes: Vec<&Candidate> = candidates.iter().collect();
        nodes.sort_by_key(|c| c.id); // stable, so dedup keeps the first listed duplicate
        nodes.dedup_by_key(|c| c.id);
        let want = replicas.min(nodes.len());
        if want == 0 {
            return None;
        }
        let mut names: BTreeMap<&str, usize> = BTreeMap::new();
        let zone: Vec<usize> = nodes
            .iter()
            .map(|c| {
                let next = names.len();
                *names.entry(c.zone.as_str()).or_insert(next)
            })
            .collect();
        let weights: Vec<f64> = nodes.iter().map(|c| c.capacity.max(1) as f64).collect();
        let quota = quotas(&weights, &zone, names.len(), want, partitions);
        Some(Layout {
            ids: nodes.iter().map(|c| c.id).collect(),
            zone,
            quota,
            want,
            zones_needed: want.min(names.len()),
        })
    }

    pub(super) fn len(&self) -> usize {
        self.ids.len()
    }

    pub(super) fn index_of(&self, id: u64) -> Option<usize> {
        self.ids.binary_search(&id).ok()
    }

    pub(super) fn id(&self, node: usize) -> u64 {
        self.ids.get(node).copied().unwrap_or_default()
    }

    pub(super) fn quota(&self, node: usize) -> u64 {
        self.quota.get(node).copied().unwrap_or_default()
    }

    /// Rendezvous score of `node` for `partition`: a stable hash, so a node's preference for a
    /// partition never depends on which other nodes exist.
    pub(super) fn score(&self, partition: usize, node: usize) -> u64 {
        xxh3_64_with_seed(&self.id(node).to_le_bytes(), partition as u64)
    }

    /// All nodes, the ones that like `partition` most first.
    pub(super) fn ranked(&self, partition: usize) -> Vec<usize> {
        let mut nodes: Vec<usize> = (0..self.len()).collect();
        nodes.sort_by_key(|&n| Reverse((self.score(partition, n), self.id(n))));
        nodes
    }

    /// Whether `node` may join `set` (after `leaving`, if any, has left it): the set must not be
    /// full or hold `node` already, and the slots left after it must still be able to reach
    /// `zones_needed` distinct zones.
    pub(super) fn allows(&self, set: &[usize], leaving: Option<usize>, node: usize) -> bool {
        let stay = || set.iter().copied().filter(move |&m| Some(m) != leaving);
        let size = stay().count();
        if size >= self.want || stay().any(|m| m == node) {
            return false;
        }
        let zone = self.zone.get(node);
        if stay().all(|m| self.zone.get(m) != zone) {
            return true;
        }
        let mut zones: Vec<usize> = stay().filter_map(|m| self.zone.get(m).copied()).collect();
        zones.sort_unstable();
        zones.dedup();
        zones.len() + (self.want - size - 1) >= self.zones_needed
    }

    /// Whether `set` has distinct nodes, fits, and can still reach `zones_needed` zones.
    pub(super) fn feasible(&self, set: &[usize]) -> bool {
        let mut nodes = set.to_vec();
        nodes.sort_unstable();
        nodes.dedup();
        let mut zones: Vec<usize> = set
            .iter()
            .filter_map(|&m| self.zone.get(m).copied())
            .collect();
        zones.sort_unstable();
        zones.dedup();
        nodes.len() == set.len()
            && set.len() <= self.want
            && zones.len() + (self.want - set.len()) >= self.zones_needed
    }
}
