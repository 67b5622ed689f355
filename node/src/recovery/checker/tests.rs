//! The checker's plans, applied to a real `ClusterMap` under simulated
//! time.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;
use crate::cluster::map::Command;
use crate::recovery::detector::tests::{FIVE, apply, cluster, set};

fn set_state(map: &mut ClusterMap, id: NodeId, state: NodeState) {
    apply(
        map,
        Command::SetNodeState {
            id,
            state,
            at_ms: 1,
        },
    );
}

/// Lifts the caps and the bucket out of the way, so one limit at a time
/// can be tested.
fn unlimited(map: &mut ClusterMap) {
    set(map, "recovery.moves_burst", "1000");
    set(map, "recovery.max_moves", "1000");
    set(map, "recovery.max_moves_per_node", "1000");
}

/// The checker's first plan for `map` at a fixed instant.
fn plan_once(map: &ClusterMap, pressure: &BTreeMap<NodeId, f64>) -> Plan {
    let now = Instant::now();
    Checker::new(&map.recovery, now).plan(map, pressure, now, 0)
}

fn zone(map: &ClusterMap, id: NodeId) -> &str {
    &map.nodes[&id].spec.zone
}

/// Commits a plan as the leader's task would.
fn commit(map: &mut ClusterMap, plan: &Plan, now_ms: u64) {
    apply(map, Command::CancelMoves(plan.cancel.clone()));
    apply(map, Command::StartMoves(plan.start.clone()));
    for id in &plan.remove {
        let (id, state) = (*id, NodeState::Removed);
        apply(
            map,
            Command::SetNodeState {
                id,
                state,
                at_ms: now_ms,
            },
        );
    }
}

/// Finishes every move that has been copying for `copy_ms`.
fn finish_copies(map: &mut ClusterMap, now_ms: u64, copy_ms: u64) {
    let done: Vec<(u32, NodeId)> = map
        .moves
        .iter()
        .filter(|(_, m)| now_ms >= m.started_ms + copy_ms)
        .map(|(p, m)| (*p, m.to))
        .collect();
    for (partition, to) in done {
        apply(map, Command::FinishMove { partition, to });
    }
}

#[test]
fn partitions_with_one_live_replica_start_before_those_with_two() {
    let mut map = cluster(&FIVE, 32);
    unlimited(&mut map);
    set_state(&mut map, 2, NodeState::Out);
    set_state(&mut map, 4, NodeState::Down);
    let one_left: BTreeSet<u32> = (0..32).filter(|p| map.live_replicas(*p) == 1).collect();
    let two_left = (0..32).filter(|p| map.live_replicas(*p) == 2).count();
    assert!(!one_left.is_empty() && two_left > 0);
    // Exactly enough tokens for the one-left partitions.
    set(
        &mut map,
        "recovery.moves_burst",
        &one_left.len().to_string(),
    );
    let plan = plan_once(&map, &BTreeMap::new());
    let started: BTreeSet<u32> = plan.start.iter().map(|(p, _)| *p).collect();
    assert_eq!(started, one_left);
    let needing = (0..32).filter(|p| map.replicas(*p).contains(&2)).count();
    assert_eq!(plan.waiting, needing - one_left.len());
}

#[test]
fn caps_on_moves_in_flight_hold_cluster_wide_and_per_node() {
    let mut map = cluster(&FIVE, 32);
    unlimited(&mut map);
    set(&mut map, "recovery.max_moves", "3");
    set(&mut map, "recovery.max_moves_per_node", "2");
    set_state(&mut map, 2, NodeState::Out);
    // Node 5 is the only Up node of z2, so every copy goes to it, and
    // its incoming cap binds first.
    let plan = plan_once(&map, &BTreeMap::new());
    assert_eq!(plan.start.len(), 2);
    assert!(plan.start.iter().all(|(_, m)| m.to == 5));
    // With a looser per-node cap the cluster-wide one binds.
    set(&mut map, "recovery.max_moves_per_node", "10");
    let plan = plan_once(&map, &BTreeMap::new());
    assert_eq!(plan.start.len(), 3);
    commit(&mut map, &plan, 0);
    let plan = plan_once(&map, &BTreeMap::new());
    assert!(plan.start.is_empty(), "3 moves are in flight already");
    assert_eq!(plan.waiting, map.partitions_held(2) - 3);
}

#[test]
fn a_source_sends_at_most_its_share_of_copies() {
    // Plenty of targets in z2, so only the sources can bind.
    let mut map = cluster(&["z1", "z2", "z3", "z1", "z2", "z2", "z2", "z2"], 64);
    unlimited(&mut map);
    set(&mut map, "recovery.max_moves_per_node", "2");
    set_state(&mut map, 2, NodeState::Out);
    set_state(&mut map, 4, NodeState::Down);
    // Partitions that held 2 and 4 can copy only from node 3; those that
    // held 2 and 1, from 1 or 3.
    let with_2 = |other: NodeId| {
        (0..64)
            .filter(|p| map.replicas(*p).contains(&2) && map.replicas(*p).contains(&other))
            .count()
    };
    assert!(with_2(4) >= 3 && with_2(1) >= 3);
    let plan = plan_once(&map, &BTreeMap::new());
    let mut sources: BTreeMap<NodeId, usize> = BTreeMap::new();
    for (_, m) in &plan.start {
        *sources.entry(m.source).or_default() += 1;
    }
    assert_eq!(sources, BTreeMap::from([(1, 2), (3, 2)]));
    assert_eq!(plan.waiting, with_2(4) + with_2(1) - 4);
}

#[test]
fn a_rate_change_applies_at_the_next_plan() {
    let mut map = cluster(&FIVE, 32);
    unlimited(&mut map);
    set(&mut map, "recovery.moves_burst", "1");
    set(&mut map, "recovery.moves_per_sec", "0.001");
    set_state(&mut map, 2, NodeState::Out);
    let t0 = Instant::now();
    let mut checker = Checker::new(&map.recovery, t0);
    let none = BTreeMap::new();
    assert_eq!(checker.plan(&map, &none, t0, 0).start.len(), 1);
    let later = t0 + Duration::from_millis(10);
    assert!(checker.plan(&map, &none, later, 0).start.is_empty());
    set(&mut map, "recovery.moves_per_sec", "1000");
    set(&mut map, "recovery.moves_burst", "5");
    // The plan that reads the new rate starts pacing with it: the time
    // before it was paced at the old one.
    assert!(checker.plan(&map, &none, later, 0).start.is_empty());
    let later = later + Duration::from_millis(5);
    assert_eq!(checker.plan(&map, &none, later, 0).start.len(), 5);
}

#[test]
fn targets_are_in_a_zone_the_set_does_not_hold() {
    let mut map = cluster(&FIVE, 32);
    unlimited(&mut map);
    set_state(&mut map, 2, NodeState::Out);
    let plan = plan_once(&map, &BTreeMap::new());
    assert_eq!(plan.start.len(), map.partitions_held(2));
    for (p, m) in &plan.start {
        let others: Vec<&str> = map
            .replicas(*p)
            .iter()
            .filter(|n| **n != 2)
            .map(|n| zone(&map, *n))
            .collect();
        assert!(!others.contains(&zone(&map, m.to)), "partition {p}: {m:?}");
    }
}

#[test]
fn a_busy_zone_distinct_target_is_waited_for() {
    let mut map = cluster(&FIVE, 32);
    unlimited(&mut map);
    set(&mut map, "recovery.max_moves_per_node", "1");
    set_state(&mut map, 2, NodeState::Out);
    let plan = plan_once(&map, &BTreeMap::new());
    assert_eq!(
        plan.start.len(),
        1,
        "only node 5 keeps the sets' zones apart"
    );
    assert_eq!(plan.waiting, map.partitions_held(2) - 1);
}

#[test]
fn without_a_free_zone_any_up_node_will_do() {
    // Node 3 is alone in z3: losing it leaves two zones for three replicas.
    let mut map = cluster(&FIVE, 32);
    unlimited(&mut map);
    set_state(&mut map, 3, NodeState::Out);
    let plan = plan_once(&map, &BTreeMap::new());
    assert_eq!(plan.start.len(), 32);
    assert!(
        plan.start
            .iter()
            .all(|(_, m)| m.to != 3 && m.from == Some(3))
    );
}

#[test]
fn pressured_nodes_receive_no_replicas() {
    let mut map = cluster(&["z1", "z2", "z3", "z1", "z2", "z2"], 32);
    unlimited(&mut map);
    set_state(&mut map, 2, NodeState::Out);
    let pressure = BTreeMap::from([(5, 0.9)]);
    let plan = plan_once(&map, &pressure);
    assert!(!plan.start.is_empty());
    assert!(plan.start.iter().all(|(_, m)| m.to == 6), "{plan:?}");
    // With every node of the missing zone pressed, the moves wait.
    let pressure = BTreeMap::from([(5, 0.9), (6, 0.8)]);
    let plan = plan_once(&map, &pressure);
    assert!(plan.start.is_empty());
    assert_eq!(plan.waiting, map.partitions_held(2));
}

#[test]
fn a_move_with_no_live_replica_left_is_cancelled_and_reported() {
    let mut map = cluster(&FIVE, 32);
    unlimited(&mut map);
    set_state(&mut map, 4, NodeState::Out);
    let plan = plan_once(&map, &BTreeMap::new());
    commit(&mut map, &plan, 0);
    let (p, m) = map
        .moves
        .iter()
        .next()
        .map(|(p, m)| (*p, m.clone()))
        .unwrap();
    for n in map.replicas(p).to_vec() {
        if n != 4 {
            set_state(&mut map, n, NodeState::Down);
        }
    }
    assert_eq!(map.moves.get(&p), Some(&m), "the target is still Up");
    let plan = plan_once(&map, &BTreeMap::new());
    assert!(plan.cancel.contains(&p), "{plan:?}");
    assert!(plan.unrecoverable.contains(&p), "{plan:?}");
}

/// `map` with node `old` renumbered `new` (no command does this; it
/// stands for a map whose ids are far apart).
fn renumbered(map: &ClusterMap, old: NodeId, new: NodeId) -> ClusterMap {
    let mut map = map.clone();
    if let Some(mut info) = map.nodes.remove(&old) {
        info.id = new;
        map.nodes.insert(new, info);
    }
    for set in &mut map.assignment {
        for n in set.iter_mut().filter(|n| **n == old) {
            *n = new;
        }
    }
    map
}

#[test]
fn ids_far_apart_give_the_same_plan_without_a_table_that_large() {
    // Node 5 has the highest id either way, so every tie breaks the same:
    // the plans must be the same with 5 read as the far id.
    let mut map = cluster(&FIVE, 64);
    unlimited(&mut map);
    set_state(&mut map, 2, NodeState::Out);
    let far = 1 << 60;
    let near = plan_once(&map, &BTreeMap::from([(3, 0.5)]));
    let plan = plan_once(&renumbered(&map, 5, far), &BTreeMap::from([(3, 0.5)]));
    let rename = |n: NodeId| if n == 5 { far } else { n };
    let expected: Vec<(u32, Move)> = near
        .start
        .iter()
        .map(|(p, m)| {
            let m = Move {
                from: m.from.map(rename),
                to: rename(m.to),
                source: rename(m.source),
                started_ms: m.started_ms,
            };
            (*p, m)
        })
        .collect();
    assert!(expected.iter().any(|(_, m)| m.to == far), "{expected:?}");
    assert_eq!(plan.start, expected);
    assert_eq!(plan.waiting, near.waiting);
}

/// Plans and commits every 250 ms of simulated time, finishing each move
/// `copy_ms` after it started, until `check` (shown each plan before it is
/// committed) says the work is done. Whether it ever said so.
fn run_rounds(
    map: &mut ClusterMap,
    copy_ms: u64,
    mut check: impl FnMut(u64, &Plan, &ClusterMap) -> bool,
) -> bool {
    let t0 = Instant::now();
    let mut checker = Checker::new(&map.recovery, t0);
    for round in 0..10_000u64 {
        let now_ms = round * 250;
        finish_copies(map, now_ms, copy_ms);
        let now = t0 + Duration::from_millis(now_ms);
        let plan = checker.plan(map, &BTreeMap::new(), now, now_ms);
        let done = check(now_ms, &plan, map);
        commit(map, &plan, now_ms);
        if done {
            return true;
        }
    }
    false
}

#[test]
fn a_draining_node_is_emptied_then_listed_for_removal() {
    let mut map = cluster(&FIVE, 32);
    set_state(&mut map, 4, NodeState::Draining);
    let removed = run_rounds(&mut map, 1_000, |_, plan, map| {
        let listed = plan.remove.contains(&4);
        assert!(!listed || map.partitions_held(4) == 0);
        listed
    });
    assert!(removed, "node 4 was never emptied");
    assert_eq!(map.state_of(4), Some(NodeState::Removed));
    assert!(map.assignment.iter().all(|set| set.len() == 3));
}

/// A drained node still runs and holds every write it acknowledged,
/// which another replica may lack: every move off it copies from it, at
/// most its outgoing cap at once, and never from the others.
#[test]
fn a_drain_copies_from_the_draining_node_alone() {
    let mut map = cluster(&FIVE, 32);
    set_state(&mut map, 4, NodeState::Draining);
    let cap = map.recovery.max_moves_per_node as usize;
    let mut started = 0;
    let removed = run_rounds(&mut map, 1_000, |_, plan, map| {
        for (_, m) in &plan.start {
            assert_eq!(m.from, Some(4));
            assert_eq!(
                m.source, 4,
                "a copy off a running node from another replica: {m:?}"
            );
        }
        let from_4 = map
            .moves
            .values()
            .chain(plan.start.iter().map(|(_, m)| m))
            .filter(|m| m.source == 4)
            .count();
        assert!(
            from_4 <= cap,
            "{from_4} copies from node 4 at once, cap {cap}"
        );
        started += plan.start.len();
        plan.remove.contains(&4)
    });
    assert!(removed, "node 4 was never emptied");
    assert!(started > 0);
}

#[test]
fn a_lost_node_is_rebuilt_at_r_replicas_in_distinct_zones() {
    let mut map = cluster(&FIVE, 64);
    set_state(&mut map, 2, NodeState::Out);
    let settings = map.recovery;
    let mut started = 0usize;
    let done = run_rounds(&mut map, 2_000, |now_ms, plan, map| {
        started += plan.start.len();
        let budget =
            settings.moves_per_sec * now_ms as f64 / 1000.0 + f64::from(settings.moves_burst);
        assert!(
            started as f64 <= budget + 1e-9,
            "{started} moves by {now_ms} ms"
        );
        let in_flight: Vec<&Move> = map
            .moves
            .values()
            .chain(plan.start.iter().map(|(_, m)| m))
            .collect();
        assert!(in_flight.len() <= settings.max_moves as usize);
        let mut per_node: BTreeMap<(&str, NodeId), u32> = BTreeMap::new();
        for m in &in_flight {
            *per_node.entry(("in", m.to)).or_default() += 1;
            *per_node.entry(("out", m.source)).or_default() += 1;
        }
        assert!(
            per_node.values().all(|n| *n <= settings.max_moves_per_node),
            "{per_node:?}"
        );
        plan.start.is_empty() && plan.waiting == 0 && map.moves.is_empty()
    });
    assert!(done, "recovery never finished");
    for p in 0..64 {
        let set = map.replicas(p);
        assert_eq!(map.live_replicas(p), 3, "partition {p}: {set:?}");
        assert!(!set.contains(&2));
        let zones: BTreeSet<&str> = set.iter().map(|n| zone(&map, *n)).collect();
        assert_eq!(zones.len(), 3, "partition {p}: {set:?}");
    }
}

proptest! {
    #[test]
    fn starts_in_any_window_stay_within_rate_times_time_plus_burst(
        rate in 0.5f64..20.0,
        burst in 1u32..10,
        advances in prop::collection::vec(0u64..1_500, 1..60),
    ) {
        let mut map = cluster(&FIVE, 64);
        unlimited(&mut map);
        set(&mut map, "recovery.moves_per_sec", &rate.to_string());
        set(&mut map, "recovery.moves_burst", &burst.to_string());
        set_state(&mut map, 2, NodeState::Out);
        let t0 = Instant::now();
        let mut checker = Checker::new(&map.recovery, t0);
        // The map is never changed, so every round has the same needs:
        // only the bucket limits the starts.
        let mut rounds: Vec<(u64, usize)> = Vec::new();
        let mut ms = 0;
        for advance in advances {
            ms += advance;
            let plan = checker.plan(&map, &BTreeMap::new(), t0 + Duration::from_millis(ms), ms);
            rounds.push((ms, plan.start.len()));
        }
        for i in 0..rounds.len() {
            let mut granted = 0;
            for j in i..rounds.len() {
                granted += rounds[j].1;
                let window = (rounds[j].0 - rounds[i].0) as f64 / 1000.0;
                prop_assert!(granted as f64 <= rate * window + f64::from(burst) + 1e-6,
                    "{} starts in {} s at {}/s burst {}", granted, window, rate, burst);
            }
        }
    }
}

#[test]
fn a_source_already_copying_waits_for_the_idle_ones_of_its_class() {
    const NINE: [&str; 9] = ["z1", "z2", "z3", "z1", "z2", "z3", "z1", "z2", "z3"];
    let mut map = cluster(&NINE, 64);
    unlimited(&mut map);
    // Tokens for fewer moves than there are live nodes: which partitions
    // get them decides whether two moves share a source.
    set(&mut map, "recovery.moves_burst", "6");
    set_state(&mut map, 1, NodeState::Out);
    let plan = plan_once(&map, &BTreeMap::new());
    assert_eq!(plan.start.len(), 6, "{plan:?}");
    let sources: BTreeSet<NodeId> = plan.start.iter().map(|(_, m)| m.source).collect();
    assert_eq!(
        sources.len(),
        plan.start.len(),
        "each move from its own node while idle ones could send: {plan:?}"
    );
}

#[test]
fn small_partitions_start_without_move_tokens_under_the_caps() {
    let mut map = cluster(&FIVE, 64);
    unlimited(&mut map);
    // One token, almost never refilled: without the size rule one move
    // would start, then one every 1,000 s.
    set(&mut map, "recovery.moves_burst", "1");
    set(&mut map, "recovery.moves_per_sec", "0.001");
    set(&mut map, "recovery.max_moves", "6");
    set(&mut map, "recovery.max_moves_per_node", "4");
    set_state(&mut map, 2, NodeState::Out);
    let held: Vec<u32> = (0..64).filter(|p| map.replicas(*p).contains(&2)).collect();
    assert!(held.len() > 8);
    let small: BTreeSet<u32> = held.iter().copied().collect();
    let t0 = Instant::now();
    let mut checker = Checker::new(&map.recovery, t0);
    let mut now_ms = 0;
    let mut rounds = 0;
    while map.partitions_held(2) > 0 {
        let now = t0 + Duration::from_millis(now_ms);
        let plan = checker.plan_sized(&map, &BTreeMap::new(), &small, now, now_ms);
        commit(&mut map, &plan, now_ms);
        // The caps hold: every node of z2 but 2 is node 5.
        assert!(map.moves.len() <= 4, "{:?}", map.moves);
        finish_copies(&mut map, now_ms + 1, 1);
        now_ms += 10;
        rounds += 1;
        assert!(rounds < 100, "small moves waited for tokens");
    }
    // Four at a time (node 5's incoming cap), never one token each: the
    // whole node in ⌈held / 4⌉ rounds of 10 ms, where the bucket alone
    // would have taken one move per 1,000 s.
    assert_eq!(rounds, held.len().div_ceil(4));
    // A partition not known small still needs its token.
    let mut map = cluster(&FIVE, 64);
    unlimited(&mut map);
    set(&mut map, "recovery.moves_burst", "1");
    set(&mut map, "recovery.moves_per_sec", "0.001");
    set_state(&mut map, 2, NodeState::Out);
    let only: BTreeSet<u32> = held.iter().copied().take(2).collect();
    let plan = Checker::new(&map.recovery, t0).plan_sized(&map, &BTreeMap::new(), &only, t0, 0);
    let started: BTreeSet<u32> = plan.start.iter().map(|(p, _)| *p).collect();
    assert_eq!(started.len(), 3, "two small ones and one token: {plan:?}");
    assert!(only.is_subset(&started));
}

proptest! {
    /// Small or not, the caps on moves in flight (cluster-wide and per
    /// node, in and out) hold in every round, and large partitions
    /// still start no faster than the bucket allows.
    #[test]
    fn small_moves_never_break_the_caps_nor_speed_up_large_ones(
        small_mask in prop::collection::vec(any::<bool>(), 64),
        max_moves in 1u32..10,
        per_node in 1u32..5,
        rounds in 1usize..30,
    ) {
        let mut map = cluster(&["z1", "z2", "z3", "z1", "z2", "z3", "z2"], 64);
        set(&mut map, "recovery.moves_burst", "1");
        set(&mut map, "recovery.moves_per_sec", "1");
        set(&mut map, "recovery.max_moves", &max_moves.to_string());
        set(&mut map, "recovery.max_moves_per_node", &per_node.to_string());
        set_state(&mut map, 2, NodeState::Out);
        let small: BTreeSet<u32> = (0..64).filter(|p| small_mask[*p as usize]).collect();
        let t0 = Instant::now();
        let mut checker = Checker::new(&map.recovery, t0);
        let mut large_started = 0usize;
        for round in 0..rounds {
            let ms = round as u64 * 100;
            let plan = checker.plan_sized(&map, &BTreeMap::new(), &small, t0 + Duration::from_millis(ms), ms);
            large_started += plan.start.iter().filter(|(p, _)| !small.contains(p)).count();
            commit(&mut map, &plan, ms);
            prop_assert!(map.moves.len() <= max_moves as usize);
            let mut into: BTreeMap<NodeId, u32> = BTreeMap::new();
            let mut out: BTreeMap<NodeId, u32> = BTreeMap::new();
            for m in map.moves.values() {
                *into.entry(m.to).or_default() += 1;
                *out.entry(m.source).or_default() += 1;
            }
            prop_assert!(into.values().chain(out.values()).all(|n| *n <= per_node));
            finish_copies(&mut map, ms + 50, 50);
        }
        // One token at start, one a second after: at most burst + rate·t.
        let span = (rounds.saturating_sub(1)) as f64 * 0.1;
        prop_assert!(large_started as f64 <= 1.0 + span + 1e-9, "{large_started} in {span} s");
    }
}

#[test]
fn moves_into_one_target_draw_on_every_surviving_replica_they_can() {
    // node-loss.toml's shape: z1 = {1, 4}, z2 = {2, 5}, z3 = {3}; node 2
    // is lost, so node 5 is the only target of all its partitions, two
    // at a time. Every set keeps node 3 and one of nodes 1 and 4: the
    // two copies should between them draw on all three, not leave one
    // of nodes 1 and 4 idle while the other sends for both.
    let mut map = cluster(&FIVE, 64);
    unlimited(&mut map);
    set(&mut map, "recovery.max_moves_per_node", "2");
    set_state(&mut map, 2, NodeState::Out);
    let plan = plan_once(&map, &BTreeMap::new());
    assert_eq!(plan.start.len(), 2, "{plan:?}");
    let drawn: BTreeSet<NodeId> = plan
        .start
        .iter()
        .flat_map(|(p, _)| map.replicas(*p).to_vec())
        .filter(|n| *n != 2)
        .collect();
    assert_eq!(drawn, BTreeSet::from([1, 3, 4]), "{plan:?}");
    assert!(plan.start.iter().all(|(_, m)| m.to == 5), "{plan:?}");
}

/// Applies a plan's starts, as the leader's commit does.
fn commit_starts(map: &mut ClusterMap, plan: &Plan) {
    apply(map, Command::StartMoves(plan.start.clone()));
}

fn finish(map: &mut ClusterMap, (partition, m): &(u32, Move)) {
    apply(
        map,
        Command::FinishMove {
            partition: *partition,
            to: m.to,
        },
    );
}

/// Node 2 of five out, a token every 10 s with `burst` at once; the
/// checker's first plan, committed, and the checker and map after it,
/// at `t0` = 1,000 ms of the map's clock.
fn one_token_every_ten_seconds(burst: &str) -> (ClusterMap, Checker, Instant, Plan) {
    let mut map = cluster(&FIVE, 64);
    unlimited(&mut map);
    set(&mut map, "recovery.moves_burst", burst);
    set(&mut map, "recovery.moves_per_sec", "0.1");
    set_state(&mut map, 2, NodeState::Out);
    let t0 = Instant::now();
    let mut checker = Checker::new(&map.recovery, t0);
    let none = BTreeMap::new();
    let first = checker.plan(&map, &none, t0, 1_000);
    // Not committed yet: it is neither refunded nor forgotten.
    let early = checker.plan(&map, &none, t0 + Duration::from_millis(5), 1_005);
    assert!(early.start.is_empty(), "{early:?}");
    commit_starts(&mut map, &first);
    let seen = checker.plan(&map, &none, t0 + Duration::from_millis(10), 1_010);
    assert!(seen.start.is_empty(), "{seen:?}");
    (map, checker, t0, first)
}

#[test]
fn a_move_done_within_a_token_interval_gives_its_token_back() {
    let (mut map, mut checker, t0, first) = one_token_every_ten_seconds("1");
    assert_eq!(first.start.len(), 1, "{first:?}");
    // Done 80 ms after its start: the next move starts at once, where
    // the bucket alone would make it wait 10 s.
    finish(&mut map, &first.start[0]);
    let next = checker.plan(
        &map,
        &BTreeMap::new(),
        t0 + Duration::from_millis(80),
        1_080,
    );
    assert_eq!(next.start.len(), 1, "{next:?}");
}

#[test]
fn a_move_that_lasts_a_token_interval_keeps_its_token() {
    let (mut map, mut checker, t0, first) = one_token_every_ten_seconds("2");
    assert_eq!(first.start.len(), 2, "{first:?}");
    // One finishes after 11 s, longer than a token's 10 s: 1.1 tokens
    // were earned meanwhile and none comes back, so one move starts,
    // not two.
    finish(&mut map, &first.start[0]);
    let later = checker.plan(&map, &BTreeMap::new(), t0 + Duration::from_secs(11), 12_000);
    assert_eq!(later.start.len(), 1, "{later:?}");
}
