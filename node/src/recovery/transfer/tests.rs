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

/// A drain: the replaced node still runs and holds every write it
/// acknowledged; the other replicas may each lack some (W of R
/// acknowledged them). So it alone is copied from, even when the move's
/// chosen source is another replica and even after it failed a page;
/// only once it is down do the others serve.
#[test]
fn a_running_replaced_node_is_the_only_source_until_it_is_down() {
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
    let none = BTreeSet::new();
    assert_eq!(sources(&map, p, &m, 4, &none), vec![from]);
    let failed = BTreeSet::from([from]);
    assert_eq!(sources(&map, p, &m, 4, &failed), vec![from]);
    // Never itself, even if the map lists it.
    assert!(!sources(&map, p, &m, from, &none).contains(&from));
    // Up (a move for placement) counts as running too.
    set_state(&mut map, from, NodeState::Up);
    assert_eq!(sources(&map, p, &m, 4, &none), vec![from]);
    // Down: a failure, which W of R survives; the others serve.
    set_state(&mut map, from, NodeState::Down);
    assert_eq!(sources(&map, p, &m, 4, &none), vec![set[1], set[2]]);
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
    let gap = ms(5);
    // Settled at or past the move's epoch: copy at once.
    assert_eq!(settle_step(Some(7), 7, ms(0), gap), Settle::Go);
    assert_eq!(settle_step(Some(9), 7, ms(900), gap), Settle::Go);
    // Not yet, or no answer: ask again after a beat gap, never past the
    // fallback.
    assert_eq!(settle_step(Some(6), 7, ms(0), gap), Settle::Poll(gap));
    assert_eq!(settle_step(None, 7, ms(12), gap), Settle::Poll(gap));
    assert_eq!(settle_step(Some(6), 7, ms(0), ms(25)), Settle::Poll(ms(25)));
    // Waiting long: a quarter of the time waited, up to the fallback.
    assert_eq!(settle_step(None, 7, ms(100), gap), Settle::Poll(ms(25)));
    assert_eq!(
        settle_step(None, 7, SETTLE - ms(5), gap),
        Settle::Poll(ms(5))
    );
    assert_eq!(settle_step(Some(0), 7, SETTLE, gap), Settle::TimedOut);
    assert_eq!(settle_step(None, 7, SETTLE + ms(1), gap), Settle::TimedOut);
}

#[test]
fn a_node_that_never_reports_costs_a_move_tens_of_questions() {
    for gap_ms in [5, 25, 250] {
        let gap = Duration::from_millis(gap_ms);
        let (mut waited, mut questions) = (Duration::ZERO, 0);
        while let Settle::Poll(wait) = settle_step(Some(6), 7, waited, gap) {
            assert!(!wait.is_zero());
            waited += wait;
            questions += 1;
        }
        assert!(waited >= SETTLE && waited <= SETTLE + gap);
        assert!(questions <= 25, "gap {gap_ms} ms: {questions} questions");
    }
}

#[test]
fn a_copy_draws_on_the_chosen_source_and_another_live_replica() {
    let mut map = map(5);
    let (p, m) = start_moves(&mut map, 5, 1)[0].clone();
    let other = *map.replicas(p).iter().find(|n| **n != m.source).unwrap();
    let none = BTreeSet::new();
    assert_eq!(sources(&map, p, &m, 5, &none), vec![m.source, other]);
    // A full set of R = 3 still gives no more than two.
    map.assignment[p as usize].push(4);
    let found = sources(&map, p, &m, 5, &none);
    assert_eq!(found.len(), SOURCES_PER_MOVE);
    assert_eq!(found[0], m.source);
    // A Down replica is no source.
    set_state(&mut map, other, NodeState::Down);
    assert!(!sources(&map, p, &m, 5, &none).contains(&other));
}

fn rate_settings(bytes_per_sec: u64, bytes_burst: u64) -> RecoverySettings {
    RecoverySettings {
        bytes_per_sec,
        bytes_burst,
        ..RecoverySettings::default()
    }
}

#[test]
fn each_page_goes_to_the_source_that_saved_the_most() {
    let ms = Duration::from_millis;
    let s = rate_settings(1000, 400);
    let one = BTreeMap::new();
    let t0 = Instant::now();
    let mut drained = BTreeMap::new();
    // Nothing asked yet: the chosen source, for its whole burst.
    assert_eq!(
        next_source(&[1, 2], &drained, &one, &s, t0),
        Some(Next::Ask(1, 400))
    );
    // Node 1 just gave a page: node 2 has saved its burst.
    drained.insert(1, t0);
    assert_eq!(
        next_source(&[1, 2], &drained, &one, &s, t0),
        Some(Next::Ask(2, 400))
    );
    // Both emptied, node 2 later: node 1 has saved more, and is asked
    // for what it saved.
    drained.insert(2, t0 + ms(300));
    assert_eq!(
        next_source(&[1, 2], &drained, &one, &s, t0 + ms(350)),
        Some(Next::Ask(1, 350))
    );
    // Never less than half a burst, so pages are not tiny: node 1 has
    // saved 60 bytes, node 2 only 10.
    drained.insert(1, t0 + ms(250));
    assert_eq!(
        next_source(&[1, 2], &drained, &one, &s, t0 + ms(310)),
        Some(Next::Ask(1, 200))
    );
    // One source: a full page, paced by its sender.
    assert_eq!(
        next_source(&[2], &drained, &one, &s, t0 + ms(310)),
        Some(Next::Ask(2, u64::from(PAGE_BYTES)))
    );
    assert_eq!(next_source(&[], &drained, &one, &s, t0), None);
}

#[test]
fn a_source_other_moves_draw_on_counts_for_its_share_only() {
    let ms = Duration::from_millis;
    let s = rate_settings(1000, 400);
    let t0 = Instant::now();
    // Both emptied 300 ms ago, but node 2 serves two moves: this puller
    // counts on 150 bytes of it, against 300 of node 1.
    let drained = BTreeMap::from([(1, t0), (2, t0)]);
    let draws = BTreeMap::from([(1, 1), (2, 2)]);
    assert_eq!(
        next_source(&[2, 1], &drained, &draws, &s, t0 + ms(300)),
        Some(Next::Ask(1, 300))
    );
    // Node 1 emptied since: node 2's share is now the larger.
    let drained = BTreeMap::from([(1, t0 + ms(250)), (2, t0)]);
    assert_eq!(
        next_source(&[2, 1], &drained, &draws, &s, t0 + ms(300)),
        Some(Next::Ask(2, 200))
    );
}

#[test]
fn every_source_of_every_move_counts_as_drawn_on() {
    let mut map = map(5);
    let moves = start_moves(&mut map, 5, 3);
    let draws = draws(&map);
    let mut expected: BTreeMap<NodeId, u32> = BTreeMap::new();
    for (p, _) in &moves {
        for id in map.replicas(*p) {
            *expected.entry(*id).or_default() += 1;
        }
    }
    assert_eq!(draws, expected);
    assert_eq!(draws.values().sum::<u32>(), 6, "two sources a move");
}

#[test]
fn a_source_that_refused_is_left_alone_until_the_time_it_gave() {
    let ms = Duration::from_millis;
    let s = rate_settings(1000, 400);
    let one = BTreeMap::new();
    let t0 = Instant::now();
    let mut drained = BTreeMap::from([(1, t0 + ms(500)), (2, t0 - ms(10))]);
    // Node 2 saved little, but node 1 refused: node 2.
    assert_eq!(
        next_source(&[1, 2], &drained, &one, &s, t0),
        Some(Next::Ask(2, 200))
    );
    // Both refused: wait for the first to come back.
    drained.insert(2, t0 + ms(200));
    assert_eq!(
        next_source(&[1, 2], &drained, &one, &s, t0),
        Some(Next::Wait(ms(200)))
    );
    // Its time has come: it is asked again.
    assert!(matches!(
        next_source(&[1, 2], &drained, &one, &s, t0 + ms(200)),
        Some(Next::Ask(2, _))
    ));
}

/// Simulates `pullers`, each copying from its own `sources` through
/// [`next_source`], against senders that pace every page with a token
/// bucket (a page waits at its sender for the tokens it lacks, in the
/// order asked), for `seconds` of simulated time, each page costing
/// `overhead` besides; returns the bytes copied per second.
fn simulate(pullers: &[Vec<NodeId>], settings: &RecoverySettings, seconds: f64) -> f64 {
    use crate::token_bucket::TokenBucket;
    let overhead = Duration::from_millis(10);
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs_f64(seconds);
    let (rate, burst) = (settings.bytes_per_sec as f64, settings.bytes_burst as f64);
    let mut buckets: BTreeMap<NodeId, TokenBucket> = BTreeMap::new();
    let mut state: Vec<(Instant, BTreeMap<NodeId, Instant>)> =
        pullers.iter().map(|_| (t0, BTreeMap::new())).collect();
    let mut copied = 0.0;
    let mut draws: BTreeMap<NodeId, u32> = BTreeMap::new();
    for id in pullers.iter().flatten() {
        *draws.entry(*id).or_default() += 1;
    }
    loop {
        // The puller whose turn comes first acts next.
        let Some((i, _)) = state
            .iter()
            .enumerate()
            .min_by_key(|(_, (at, _))| *at)
            .filter(|(_, (at, _))| *at < end)
        else {
            return copied / seconds;
        };
        let (now, drained) = state[i].clone();
        let (at, bytes, source) = match next_source(&pullers[i], &drained, &draws, settings, now) {
            Some(Next::Ask(id, want)) => {
                let bucket = buckets
                    .entry(id)
                    .or_insert_with(|| TokenBucket::new(rate, burst, t0));
                let page = (want as f64).min(burst);
                let mut at = now;
                while let Err(crate::token_bucket::Wait(wait)) = bucket.take(page, at) {
                    at += wait.max(Duration::from_micros(1));
                }
                (at + overhead, page, id)
            }
            other => panic!("every source is live: {other:?}"),
        };
        copied += bytes;
        state[i].0 = at;
        state[i].1.insert(source, at);
    }
}

#[test]
fn a_copy_with_two_sources_takes_both_rates_and_shares_a_common_one() {
    // 1 MiB/s per sender, a quarter-second burst, as in node-loss.toml.
    let s = rate_settings(1 << 20, 1 << 18);
    let rate = (1u64 << 20) as f64;
    let one = simulate(&[vec![1]], &s, 30.0);
    assert!(one <= rate * 1.05, "one source: {one}");
    let two = simulate(&[vec![1, 2]], &s, 30.0);
    assert!(two >= rate * 1.8, "two sources, one copy: {two}");
    // Two copies sharing node 3, as when one zone has a single node
    // left: the three senders' rates, not two.
    let shared = simulate(&[vec![1, 3], vec![4, 3]], &s, 30.0);
    assert!(
        shared >= rate * 2.7,
        "two copies over three senders: {shared}"
    );
    assert!(
        shared <= rate * 3.05,
        "never above the senders' rates: {shared}"
    );
}
