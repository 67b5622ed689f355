//! The heartbeat every node sends the Raft leader: "alive", with its load
//! and the progress of the copies it is receiving.
//!
//! Separate from Raft's own heartbeats on purpose: Raft only reaches
//! voters and learners it replicates to, says nothing about load, and its
//! timing is tuned for elections, not for deciding that a node's data must
//! be rebuilt.
//!
//! Besides the beat every `heartbeat_ms`, a node beats as soon as it
//! applies a new map epoch, and again as soon as the last write it
//! coordinated with an older map ends (at most one extra beat per
//! [`epoch_beat_gap`], 5 ms in a small cluster, more in a large one so
//! that the leader's load stays bounded): a move's target waits, before copying, until every
//! coordinator has reported the move's epoch as settled
//! (`recovery/transfer.rs`, `node/write_epochs.rs`), and that wait is what
//! one move costs beyond its bytes.
//!
//! Each beat also names the partitions this node holds that need a new
//! replica and are small (under the checker's
//! [`SMALL_PARTITION_BYTES`]), found by reading at most that much of each,
//! so their moves start without move tokens.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::checker::SMALL_PARTITION_BYTES;
use super::sender::MAX_PAGE_RECORDS;
use crate::cluster::NodeId;
use crate::cluster::map::{ClusterMap, NodeState};
use crate::cluster::status::{MAX_SMALL_REPORTED, NodeReport};
use crate::metrics::ClusterGauges;
use crate::node::Node;
use crate::proto::{NodeRequest, Response};
use crate::raft::Cluster;

/// Epoch beats a second the leader is asked to take, cluster-wide, at
/// most: during a recovery the map changes with every move started and
/// finished, and each node beats for each new epoch. 40,000 is a 25 ms gap
/// at 1,000 nodes, what every cluster used to get.
pub const EPOCH_BEATS_PER_SEC: u32 = 40_000;

/// Least time between two epoch beats of one node, whatever the cluster's
/// size: a few per map change at most.
pub const MIN_EPOCH_BEAT_GAP: Duration = Duration::from_millis(5);

/// Least time between two beats a node sends for a new epoch in a
/// cluster of `nodes` and `partitions` × `replicas` replica entries: what
/// keeps the cluster's epoch beats within [`EPOCH_BEATS_PER_SEC`] and a
/// beat's pass over the map (`size_candidates`) within a twentieth of a
/// core ([`super::map_pass_gap`]), and at least [`MIN_EPOCH_BEAT_GAP`]. A
/// move's target waits for every coordinator's beat before it copies, so
/// this gap is most of what a small move costs: 5 ms in a cluster of up
/// to 200 nodes and 16,384 partitions of 3 replicas, 25 ms at 1,000 nodes
/// (issue #17: a fixed 25 ms made the 32 moves of an almost-empty node
/// take a second, two at a time). Pure.
pub fn epoch_beat_gap(nodes: usize, partitions: u32, replicas: u8) -> Duration {
    let nodes = u32::try_from(nodes).unwrap_or(u32::MAX);
    let by_nodes = (Duration::from_secs(1) / EPOCH_BEATS_PER_SEC).saturating_mul(nodes);
    by_nodes
        .max(super::map_pass_gap(partitions, replicas))
        .max(MIN_EPOCH_BEAT_GAP)
}

/// [`epoch_beat_gap`] for `map`'s cluster.
pub fn epoch_beat_gap_of(map: &ClusterMap) -> Duration {
    epoch_beat_gap(map.nodes.len(), map.partitions, map.settings.replicas)
}

/// How long a partition's size, once read, is trusted: a small partition
/// that grows past the threshold is still paced by the byte budgets, so
/// a stale answer costs a token, not a bound; rereading every beat would
/// cost each candidate partition a read per beat during a recovery.
const SIZE_FRESH: Duration = Duration::from_secs(5);

/// Partitions `me` holds, Up, that need a new replica (a member Out or
/// Draining, or a set short of R) and have no move in flight: the ones
/// whose size the checker would use. At most [`MAX_SMALL_REPORTED`], in
/// partition order. Pure.
pub fn size_candidates(map: &ClusterMap, me: NodeId) -> Vec<u32> {
    if map.state_of(me) != Some(NodeState::Up) {
        return Vec::new();
    }
    let want = usize::from(map.settings.replicas);
    (0..map.partitions)
        .filter(|p| !map.moves.contains_key(p))
        .filter(|p| {
            let set = map.replicas(*p);
            set.contains(&me)
                && (set.len() < want
                    || set.iter().any(|n| {
                        matches!(map.state_of(*n), Some(NodeState::Out | NodeState::Draining))
                    }))
        })
        .take(MAX_SMALL_REPORTED)
        .collect()
}

/// What the beats remember of partition sizes between them.
#[derive(Default)]
struct SizeCache {
    /// [`size_candidates`] of the map epoch it was computed for: a pass
    /// over every partition, repeated only when the map changes (beats
    /// come up to every [`epoch_beat_gap`] during a recovery).
    candidates: Option<(u64, Vec<u32>)>,
    /// Partition → when its size was read and whether it was small; only
    /// candidates, so it stays bounded by them.
    sizes: BTreeMap<u32, (Instant, bool)>,
}

/// Which of the candidate partitions are small, read from storage (at
/// most [`SMALL_PARTITION_BYTES`] of each) or from the cache while fresh.
async fn small_partitions(
    node: &Node,
    map: &ClusterMap,
    me: NodeId,
    cache: &mut SizeCache,
) -> Vec<u32> {
    let candidates = match &cache.candidates {
        Some((epoch, list)) if *epoch == map.epoch => list.clone(),
        _ => {
            let list = size_candidates(map, me);
            cache.candidates = Some((map.epoch, list.clone()));
            list
        }
    };
    let sizes = &mut cache.sizes;
    sizes.retain(|p, (at, _)| candidates.contains(p) && at.elapsed() < SIZE_FRESH);
    let unknown: Vec<u32> = candidates
        .iter()
        .copied()
        .filter(|p| !sizes.contains_key(p))
        .collect();
    if !unknown.is_empty() {
        let storage = node.storage().clone();
        let read = tokio::task::spawn_blocking(move || {
            unknown
                .into_iter()
                .filter_map(|p| {
                    let (_, more) = storage
                        .range_after(p, None, SMALL_PARTITION_BYTES, MAX_PAGE_RECORDS)
                        .ok()?;
                    Some((p, !more))
                })
                .collect::<Vec<_>>()
        })
        .await;
        let now = Instant::now();
        for (p, small) in read.unwrap_or_default() {
            sizes.insert(p, (now, small));
        }
    }
    candidates
        .into_iter()
        .filter(|p| sizes.get(p).is_some_and(|(_, small)| *small))
        .collect()
}

/// What this node would report now.
pub fn report(node: &Node, cluster: &Cluster) -> NodeReport {
    let pressure = node.admission().pressure();
    let pressure_permille = if pressure.is_finite() {
        (pressure.clamp(0.0, 1.0) * 1000.0).round() as u16
    } else {
        1000
    };
    let metrics = node.admission().metrics();
    NodeReport {
        node: cluster.node_id(),
        epoch: node.write_epochs().settled(|| cluster.epoch()),
        pressure_permille,
        recovery_bytes_sent: metrics.recovery_bytes_sent(),
        recovery_bytes_received: metrics.recovery_bytes_received(),
        transfers: node.transfers().progress(),
        cert: node.cert_report(std::time::SystemTime::now()),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        uptime_ms: u64::try_from(node.uptime().as_millis()).unwrap_or(u64::MAX),
        data_bytes: node.storage().bytes_on_disk(),
        hints_pending_bytes: node.hints().pending().iter().map(|(_, bytes)| bytes).sum(),
        limit: u32::try_from(node.admission().limit()).unwrap_or(u32::MAX),
        requests_total: metrics.requests_total(),
        shed_total: metrics.shed_total(),
        small_partitions: Vec::new(),
    }
}

/// Puts this node's view of the cluster, and the hints it holds, into
/// its metrics.
fn export_gauges(node: &Node, cluster: &Cluster) {
    let hints = node.hints().pending().iter().map(|(_, bytes)| bytes).sum();
    node.admission().metrics().set_hints_pending(hints);
    let map = cluster.map();
    let count = |state| map.nodes.values().filter(|n| n.state == state).count() as u64;
    node.admission().metrics().set_cluster(ClusterGauges {
        under_replicated: map.under_replicated() as u64,
        moves_in_flight: map.moves.len() as u64,
        nodes_up: count(NodeState::Up),
        nodes_down: count(NodeState::Down),
        nodes_out: count(NodeState::Out),
        nodes_draining: count(NodeState::Draining),
        quarantined_shapes: map.quarantine.active(crate::hlc::wall_ms()).count() as u64,
    });
}

/// Sends a heartbeat every `every` until shutdown. The leader records its
/// own directly. A beat that cannot be delivered is simply lost: the next
/// one follows, and silence is exactly what the detector measures.
pub async fn run(
    node: Arc<Node>,
    cluster: Arc<Cluster>,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut maps = cluster.subscribe();
    let mut sizes = SizeCache::default();
    let mut last_beat = tokio::time::Instant::now();
    let mut last_settled = 0;
    loop {
        let early = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => false,
            changed = maps.changed() => {
                if changed.is_err() {
                    return;
                }
                true
            }
            // The last write on an older map ended: the settled epoch may
            // have risen, and a move's copy waits for exactly that news.
            () = node.write_epochs().drained() => {
                if node.write_epochs().settled(|| cluster.epoch()) <= last_settled {
                    continue;
                }
                true
            }
        };
        if early {
            // A new epoch: beat now, unless one went out just now (then
            // after the gap, with whatever epoch is newest).
            let next = last_beat + epoch_beat_gap_of(&cluster.map());
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(next) => {}
            }
            maps.borrow_and_update();
        }
        last_beat = tokio::time::Instant::now();
        export_gauges(&node, &cluster);
        // A breaker's open → half-open turn comes with time alone, not
        // with a call: the gauge is refreshed here too.
        node.peers().export();
        let mut report = report(&node, &cluster);
        last_settled = report.epoch;
        let map = cluster.map();
        report.small_partitions = small_partitions(&node, &map, report.node, &mut sizes).await;
        if cluster.is_leader() {
            cluster.handle_heartbeat(report);
            continue;
        }
        let Some((leader, addr)) = cluster.leader() else {
            continue;
        };
        // One interval at most: a beat later than that is worth less than
        // the next one. Past the breaker: silence is what the leader's
        // detector measures, so a beat is never held back here.
        match node
            .peers()
            .request_past_breaker(&addr, NodeRequest::Heartbeat(report), every)
            .await
        {
            Ok(Response::Ack) => {}
            Ok(other) => tracing::debug!(leader, ?other, "unexpected answer to a heartbeat"),
            Err(e) => tracing::debug!(leader, error = %e, "heartbeat not delivered"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::map::{Command, Move};

    #[test]
    fn the_epoch_beat_gap_keeps_the_leaders_beats_bounded_and_small_clusters_fast() {
        let ms = Duration::from_millis;
        let gap = |nodes| epoch_beat_gap(nodes, 64, 3);
        assert_eq!(gap(0), MIN_EPOCH_BEAT_GAP);
        assert_eq!(gap(5), ms(5));
        assert_eq!(gap(200), ms(5));
        assert_eq!(gap(1_000), ms(25));
        assert_eq!(gap(10_000), ms(250));
        assert!(
            gap(usize::MAX) > Duration::from_secs(100_000),
            "no overflow"
        );
        for nodes in [1usize, 7, 199, 201, 999, 1_000, 4_096, 65_536] {
            let per_sec = nodes as f64 / gap(nodes).as_secs_f64();
            assert!(
                per_sec <= f64::from(EPOCH_BEATS_PER_SEC) + 1e-6,
                "{nodes} nodes: {per_sec} epoch beats/s"
            );
        }
    }

    #[test]
    fn a_map_with_many_partitions_is_not_passed_over_more_than_a_twentieth_of_the_time() {
        let ms = Duration::from_millis;
        assert_eq!(epoch_beat_gap(5, 16_384, 3), ms(5));
        assert_eq!(
            epoch_beat_gap(5, 65_536, 3),
            Duration::from_nanos(19_660_800)
        );
        assert_eq!(epoch_beat_gap(1_000, 65_536, 3), ms(25), "the nodes bound");
        assert!(epoch_beat_gap(5, u32::MAX, u8::MAX) > Duration::from_secs(100_000));
        let mut map = crate::cluster::test_maps::map_with(5, 4_096);
        map.settings.replicas = 3;
        assert_eq!(epoch_beat_gap_of(&map), ms(5));
    }

    #[test]
    fn sizes_are_read_only_for_partitions_needing_a_replica_without_a_move() {
        let mut map = crate::cluster::test_maps::map_with(5, 32);
        assert!(
            size_candidates(&map, 1).is_empty(),
            "nothing needs a replica"
        );
        map.apply(&Command::SetNodeState {
            id: 2,
            state: NodeState::Out,
            at_ms: 1,
        });
        let expected: Vec<u32> = (0..32)
            .filter(|p| map.replicas(*p).contains(&2) && map.replicas(*p).contains(&1))
            .collect();
        assert!(!expected.is_empty());
        assert_eq!(size_candidates(&map, 1), expected);
        // A partition whose move is in flight is left out.
        let p = expected[0];
        let to = (3..=5).find(|n| !map.replicas(p).contains(n)).unwrap();
        map.apply(&Command::StartMoves(vec![(
            p,
            Move {
                from: Some(2),
                to,
                source: 1,
                started_ms: 1,
            },
        )]));
        assert_eq!(size_candidates(&map, 1), expected[1..]);
        // The Out node itself reports nothing.
        assert!(size_candidates(&map, 2).is_empty());
    }
}
