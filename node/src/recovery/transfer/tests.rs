use super::*;
use crate::storage::Version;

fn map(nodes: u64) -> ClusterMap {
    crate::cluster::test_maps::map_with(nodes, 16)
}

fn set_state(map: &mut ClusterMap, id: NodeId, state: NodeState) {
    map.apply(&Command::SetNodeState {
        id,
        state,
        at_ms: 1,
    });
}

/// Starts moves of `count` partitions not held by `to`, replacing
/// their first replica, and returns them.
fn start_moves(map: &mut ClusterMap, to: NodeId, count: usize) -> Vec<(u32, Move)> {
    let moves: Vec<(u32, Move)> = (0..map.partitions)
        .filter(|p| !map.replicas(*p).contains(&to))
        .take(count)
        .map(|p| {
            let set = map.replicas(p);
            (
                p,
                Move {
                    from: None,
                    to,
                    source: set[1],
                    started_ms: 1,
                },
            )
        })
        .collect();
    // `from: None` needs a set short of R: make it so by hand.
    for (p, _) in &moves {
        map.assignment[*p as usize].truncate(2);
    }
    map.apply(&Command::StartMoves(moves.clone()));
    moves
}

#[test]
fn pullers_start_for_moves_into_this_node_only_up_to_the_cap() {
    let mut map = map(5);
    map.recovery.max_moves_per_node = 2;
    let into_5 = start_moves(&mut map, 5, 3);
    assert_eq!(map.moves.len(), 3);
    let first = plan(&map, 5, &BTreeMap::new());
    assert_eq!(first.start, into_5[..2].to_vec());
    assert!(first.stop.is_empty());
    // Another node's moves are not this node's business.
    assert_eq!(plan(&map, 4, &BTreeMap::new()), Plan::default());
    // Running ones count toward the cap and are not started twice.
    let running = BTreeMap::from([into_5[0].clone()]);
    assert_eq!(plan(&map, 5, &running).start, vec![into_5[1].clone()]);
}

#[test]
fn a_puller_whose_move_left_the_map_or_changed_is_stopped() {
    let mut map = map(5);
    let moves = start_moves(&mut map, 5, 2);
    let running: BTreeMap<u32, Move> = moves.iter().cloned().collect();
    assert_eq!(plan(&map, 5, &running), Plan::default());
    map.apply(&Command::CancelMoves(vec![moves[0].0]));
    let plan1 = plan(&map, 5, &running);
    assert_eq!(plan1.stop, vec![moves[0].0]);
    assert!(plan1.start.is_empty());
    // Same partition, a different move (restarted by the checker):
    // the old puller stops and a new one starts.
    let (p, mut again) = moves[1].clone();
    again.started_ms = 99;
    map.moves.insert(p, again.clone());
    let plan2 = plan(&map, 5, &running);
    assert!(plan2.stop.contains(&p));
    assert_eq!(plan2.start, vec![(p, again)]);
}

#[test]
fn the_chosen_source_is_used_while_it_can_serve() {
    let mut map = map(5);
    let (p, m) = start_moves(&mut map, 5, 1)[0].clone();
    assert_eq!(
        choose_source(&map, p, &m, 5, &BTreeSet::new()),
        Some(m.source)
    );
}

#[test]
fn a_failed_or_down_source_is_replaced_by_another_live_replica() {
    let mut map = map(5);
    let (p, m) = start_moves(&mut map, 5, 1)[0].clone();
    let other = *map.replicas(p).iter().find(|n| **n != m.source).unwrap();
    let failed = BTreeSet::from([m.source]);
    assert_eq!(choose_source(&map, p, &m, 5, &failed), Some(other));
    set_state(&mut map, m.source, NodeState::Down);
    assert_eq!(choose_source(&map, p, &m, 5, &BTreeSet::new()), Some(other));
    let both = BTreeSet::from([m.source, other]);
    assert_eq!(choose_source(&map, p, &m, 5, &both), None);
    set_state(&mut map, other, NodeState::Out);
    assert_eq!(choose_source(&map, p, &m, 5, &BTreeSet::new()), None);
}

#[test]
fn a_draining_node_being_replaced_is_the_last_resort() {
    let mut map = map(4);
    let p = (0..map.partitions)
        .find(|p| !map.replicas(*p).contains(&4))
        .unwrap();
    let set = map.replicas(p).to_vec();
    let from = set[0];
    set_state(&mut map, from, NodeState::Draining);
    let m = Move {
        from: Some(from),
        to: 4,
        source: set[1],
        started_ms: 1,
    };
    map.apply(&Command::StartMoves(vec![(p, m.clone())]));
    assert_eq!(map.moves.get(&p), Some(&m));
    let all_up = BTreeSet::from([set[1], set[2]]);
    assert_eq!(choose_source(&map, p, &m, 4, &all_up), Some(from));
    // Never itself, even if the map lists it.
    assert_eq!(choose_source(&map, p, &m, from, &all_up), None);
}

fn record(key: &[u8]) -> RangeRecord {
    RangeRecord {
        key: key.to_vec(),
        version: Version { hlc: 1, writer: 1 },
        value: Some(b"v".to_vec()),
    }
}

/// Keys of partition `p` (of 16), in order.
fn keys_of(p: u32, n: usize) -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = (0..10_000u32)
        .map(|i| format!("k{i}").into_bytes())
        .filter(|k| partition_of(k, 16) == p)
        .take(n)
        .collect();
    keys.sort();
    keys
}

#[test]
fn pages_in_order_of_the_partition_pass() {
    let keys = keys_of(3, 4);
    let page: Vec<RangeRecord> = keys[1..].iter().map(|k| record(k)).collect();
    assert_eq!(check_page(&page, Some(&keys[0]), true, 3, 16), Ok(()));
    assert_eq!(check_page(&[], None, false, 3, 16), Ok(()));
}

#[test]
fn pages_that_could_corrupt_or_loop_are_refused() {
    let keys = keys_of(3, 3);
    let rec = |i: usize| record(&keys[i]);
    assert!(check_page(&[], Some(&keys[0]), true, 3, 16).is_err());
    assert!(check_page(&[rec(1), rec(0)], None, false, 3, 16).is_err());
    assert!(check_page(&[rec(0), rec(0)], None, false, 3, 16).is_err());
    assert!(check_page(&[rec(1)], Some(&keys[1]), false, 3, 16).is_err());
    assert!(check_page(&[record(b"")], None, false, 3, 16).is_err());
    let foreign = keys_of(4, 1);
    let err = check_page(&[record(&foreign[0])], None, false, 3, 16).unwrap_err();
    assert!(err.contains("partition 4"), "{err}");
}

#[test]
fn the_copy_waits_for_the_epoch_and_no_longer_than_the_fallback() {
    let ms = Duration::from_millis;
    // Settled at or past the move's epoch: copy at once.
    assert_eq!(settle_step(Some(7), 7, ms(0)), Settle::Go);
    assert_eq!(settle_step(Some(9), 7, ms(900)), Settle::Go);
    // Not yet, or no answer: ask again soon, never past the fallback.
    assert_eq!(settle_step(Some(6), 7, ms(0)), Settle::Poll(SETTLE_POLL));
    assert_eq!(settle_step(None, 7, ms(100)), Settle::Poll(SETTLE_POLL));
    assert_eq!(settle_step(None, 7, SETTLE - ms(5)), Settle::Poll(ms(5)));
    assert_eq!(settle_step(Some(0), 7, SETTLE), Settle::TimedOut);
    assert_eq!(settle_step(None, 7, SETTLE + ms(1)), Settle::TimedOut);
}
