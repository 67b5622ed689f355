//! The leader's recovery loop: the I/O around the pure failure detector
//! and replica checker. Each tick it feeds the heartbeats received to the
//! detector, commits the node state changes it decides, asks the checker
//! for moves and commits those, and publishes what it knows for
//! `levee status`. On any other node it does nothing but wait.
//!
//! Besides every tick, it runs when the map changes (at most once per
//! [`replan_gap`]): a move that finishes frees its slots at once, so a
//! node's worth of small partitions is not copied one tick per move slot.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::checker::{Checker, Plan};
use super::detector::Detector;
use crate::cluster::NodeId;
use crate::cluster::map::{ClusterMap, Command, CommandResult, Move};
use crate::cluster::status::RecoveryStatus;
use crate::hlc::wall_ms;
use crate::raft::Cluster;

/// Least time between two runs of the loop woken by map changes, for
/// the largest maps: a plan is about a millisecond at 1,000 nodes × 65,536
/// partitions, and during a recovery the map changes with every move.
const REPLAN_GAP: Duration = Duration::from_millis(20);

/// Least time between two runs woken by map changes, for the smallest
/// maps, whose plan takes microseconds.
const MIN_REPLAN_GAP: Duration = Duration::from_millis(2);

/// Least time between two runs of the loop woken by map changes, for a
/// map of `partitions` × `replicas` replica entries: about twenty times
/// what a plan over them costs ([`super::map_pass_gap`]), between
/// [`MIN_REPLAN_GAP`] and [`REPLAN_GAP`]. So a large map's
/// recovery costs the leader about 5% of a core in plans, and a small
/// one's moves follow each other within milliseconds: the loop's own
/// commit wakes it too, and a fixed 20 ms made a finished move wait up to
/// that long for its slot to be used again (issue #17). Pure.
pub fn replan_gap(partitions: u32, replicas: u8) -> Duration {
    super::map_pass_gap(partitions, replicas).clamp(MIN_REPLAN_GAP, REPLAN_GAP)
}

/// Seconds of recovery byte counts kept to compute the current rate.
const RATE_WINDOW: Duration = Duration::from_secs(5);
/// Window over which finished moves give the completion rate for the ETA.
const ETA_WINDOW: Duration = Duration::from_secs(60);

/// State that exists only while this node leads.
struct Leading {
    detector: Detector,
    checker: Checker,
    since: Instant,
    /// (when, total recovery bytes sent cluster-wide) samples.
    sent: VecDeque<(Instant, u64)>,
    /// Moves in flight at the previous tick.
    moves: BTreeMap<u32, Move>,
    /// When recent moves finished.
    finished: VecDeque<Instant>,
}

/// The loop's period for nodes that beat every `heartbeat`: a quarter of
/// it (at least 25 ms). A node's silence is judged from its last beat, so
/// a tick as long as the heartbeat could mark a node down or out up to a
/// whole heartbeat after its `down_after` or `down_out_interval`; a
/// quarter keeps that within a quarter. Between map changes a tick plans
/// nothing new (the buckets pace the moves), at about a millisecond at
/// 1,000 nodes (see [`replan_gap`]).
pub fn tick(heartbeat: Duration) -> Duration {
    (heartbeat / 4).max(Duration::from_millis(25))
}

/// Runs the loop every `tick` until shutdown.
pub async fn run(cluster: Arc<Cluster>, tick: Duration, shutdown: CancellationToken) {
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut leading: Option<Leading> = None;
    let mut maps = cluster.subscribe();
    let mut last = Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => {}
            changed = maps.changed() => {
                if changed.is_err() {
                    return;
                }
                let gap = {
                    let map = cluster.map();
                    replan_gap(map.partitions, map.settings.replicas)
                };
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep_until(last + gap) => {}
                }
                maps.borrow_and_update();
            }
        }
        last = Instant::now();
        if !cluster.is_leader() {
            if leading.take().is_some() {
                tracing::info!("no longer leader: recovery decisions stop here");
                cluster.publish_recovery(None);
            }
            continue;
        }
        let map = cluster.map();
        let now = Instant::now();
        let state = leading.get_or_insert_with(|| {
            tracing::info!("leader: failure detection and replica checking start");
            let mut detector = Detector::new();
            detector.start_leading(&map, now.into_std(), wall_ms());
            Leading {
                detector,
                checker: Checker::new(&map.recovery, now.into_std()),
                since: now,
                sent: VecDeque::new(),
                moves: map.moves.clone(),
                finished: VecDeque::new(),
            }
        });
        if let Err(e) = step(&cluster, state, now).await {
            tracing::warn!(error = %e, "recovery step failed; retrying next tick");
        }
    }
}

/// One tick as leader.
async fn step(cluster: &Cluster, state: &mut Leading, now: Instant) -> Result<(), String> {
    let reports = cluster.reports();
    for (id, (at, _)) in &reports {
        // Beats that arrived before this node led were judged by the old
        // leader (or by nobody); the detector's grace covers them.
        if *at >= state.since {
            state.detector.beat(*id, at.into_std());
        }
    }
    let map = cluster.map();
    for t in state.detector.evaluate(&map, now.into_std()) {
        tracing::warn!(node = t.node, to = %t.to, reason = %t.reason, "node state change");
        let command = Command::SetNodeState {
            id: t.node,
            state: t.to,
            at_ms: wall_ms(),
        };
        commit(cluster, command).await?;
    }

    let map = cluster.map();
    let pressure: BTreeMap<NodeId, f64> = reports
        .iter()
        .map(|(id, (_, r))| (*id, f64::from(r.pressure_permille) / 1000.0))
        .collect();
    let small = small_partitions(&map, &reports);
    let plan = state
        .checker
        .plan_sized(&map, &pressure, &small, now.into_std(), wall_ms());
    apply_plan(cluster, &plan).await?;

    let total_sent: u64 = reports.values().map(|(_, r)| r.recovery_bytes_sent).sum();
    state.sent.push_back((now, total_sent));
    while state
        .sent
        .front()
        .is_some_and(|(t, _)| now.duration_since(*t) > RATE_WINDOW)
    {
        state.sent.pop_front();
    }
    let map = cluster.map();
    // A move that left the map with its target now in the set finished
    // (a cancelled one leaves the set as it was).
    for (p, m) in &state.moves {
        if !map.moves.contains_key(p) && map.replicas(*p).contains(&m.to) {
            state.finished.push_back(now);
        }
    }
    while state
        .finished
        .front()
        .is_some_and(|t| now.duration_since(*t) > ETA_WINDOW)
    {
        state.finished.pop_front();
    }
    state.moves = map.moves.clone();
    cluster.publish_recovery(Some(view(state, &map, &reports, &plan, now)));
    Ok(())
}

/// The partitions a live replica (Up or Draining) reports small in its
/// latest heartbeat.
fn small_partitions(
    map: &ClusterMap,
    reports: &BTreeMap<NodeId, (Instant, crate::cluster::status::NodeReport)>,
) -> BTreeSet<u32> {
    reports
        .iter()
        .filter(|(id, _)| {
            matches!(
                map.state_of(**id),
                Some(crate::cluster::map::NodeState::Up | crate::cluster::map::NodeState::Draining)
            )
        })
        .flat_map(|(id, (_, r))| {
            r.small_partitions
                .iter()
                .take(crate::cluster::status::MAX_SMALL_REPORTED)
                .filter(move |p| map.replicas(**p).contains(id))
                .copied()
        })
        .collect()
}

async fn apply_plan(cluster: &Cluster, plan: &Plan) -> Result<(), String> {
    if !plan.cancel.is_empty() {
        tracing::info!(partitions = ?plan.cancel, "cancelling moves");
        commit(cluster, Command::CancelMoves(plan.cancel.clone())).await?;
    }
    if !plan.start.is_empty() {
        for (p, m) in &plan.start {
            tracing::info!(
                partition = p,
                from = ?m.from,
                to = m.to,
                source = m.source,
                "starting move"
            );
        }
        commit(cluster, Command::StartMoves(plan.start.clone())).await?;
    }
    for id in &plan.remove {
        tracing::info!(node = id, "drained: marking removed");
        let command = Command::SetNodeState {
            id: *id,
            state: crate::cluster::map::NodeState::Removed,
            at_ms: wall_ms(),
        };
        commit(cluster, command).await?;
    }
    Ok(())
}

async fn commit(cluster: &Cluster, command: Command) -> Result<(), String> {
    match cluster.propose_as_leader(command).await {
        Ok(CommandResult::Rejected(why)) => {
            // The map moved on between planning and committing; the next
            // tick plans from the new map.
            tracing::debug!(%why, "recovery command rejected");
            Ok(())
        }
        Ok(_) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

fn view(
    state: &Leading,
    map: &ClusterMap,
    reports: &BTreeMap<NodeId, (Instant, crate::cluster::status::NodeReport)>,
    plan: &Plan,
    now: Instant,
) -> RecoveryStatus {
    let std_now = now.into_std();
    let bytes_per_sec = match (state.sent.front(), state.sent.back()) {
        (Some((t0, b0)), Some((t1, b1))) if t1 > t0 => {
            (b1.saturating_sub(*b0) as f64 / t1.duration_since(*t0).as_secs_f64()) as u64
        }
        _ => 0,
    };
    RecoveryStatus {
        at_ms: wall_ms(),
        silence_ms: map
            .nodes
            .keys()
            .filter_map(|id| {
                state
                    .detector
                    .silence(*id, std_now)
                    .map(|s| (*id, s.as_millis() as u64))
            })
            .collect(),
        suspects: state.detector.suspects(map, std_now),
        held: state
            .detector
            .held_by_guard(map, std_now)
            .into_iter()
            .map(|(id, why)| (id, why.to_owned()))
            .collect(),
        reports: reports
            .iter()
            .map(|(id, (_, r))| (*id, r.clone()))
            .collect(),
        bytes_per_sec,
        waiting: plan.waiting as u64,
        unrecoverable: plan.unrecoverable.clone(),
        finished_last_min: state.finished.len() as u64,
        eta_s: eta(state, map, plan, now),
    }
}

/// Seconds until the moves in flight and waiting are done, at the recent
/// completion rate.
fn eta(state: &Leading, map: &ClusterMap, plan: &Plan, now: Instant) -> Option<u64> {
    let remaining = map.moves.len() + plan.waiting;
    if remaining == 0 {
        return Some(0);
    }
    let first = state.finished.front()?;
    let span = now.duration_since(*first).as_secs_f64().max(1.0);
    let rate = state.finished.len() as f64 / span;
    Some((remaining as f64 / rate).ceil() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_map_is_replanned_within_milliseconds_a_large_one_every_20() {
        let ms = Duration::from_millis;
        assert_eq!(replan_gap(64, 3), MIN_REPLAN_GAP);
        assert_eq!(replan_gap(0, 0), MIN_REPLAN_GAP);
        assert_eq!(replan_gap(16_384, 3), Duration::from_nanos(4_915_200));
        assert!(replan_gap(65_536, 3) >= ms(19));
        assert_eq!(replan_gap(65_536, 5), REPLAN_GAP);
        assert_eq!(replan_gap(u32::MAX, u8::MAX), REPLAN_GAP);
    }

    #[test]
    fn the_leader_judges_four_times_a_heartbeat_and_not_faster_than_every_25_ms() {
        let ms = Duration::from_millis;
        assert_eq!(tick(ms(500)), ms(125));
        assert_eq!(tick(ms(1000)), ms(250));
        assert_eq!(tick(ms(40)), ms(25));
    }
}
