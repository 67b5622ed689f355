//! The detector under simulated time; also the map builders the checker's
//! tests share.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;
use crate::cluster::map::{Command, CommandResult, NodeSpec, Settings};
use crate::recovery::checker::Checker;

/// Unix ms at the simulation's start; any value far from 0 will do.
const BASE_MS: u64 = 1_700_000_000_000;

/// A cluster of `zones.len()` nodes, node `i + 1` in `zones[i]`, R = 3.
pub(crate) fn cluster(zones: &[&str], partitions: u32) -> ClusterMap {
    let spec = |i: usize| NodeSpec {
        addr: format!("n{}:1", i + 1),
        admin: format!("n{}:2", i + 1),
        zone: zones[i].into(),
        capacity: 1,
        join_token: i as u64 + 1,
    };
    let mut map = ClusterMap::default();
    map.apply(&Command::Init {
        cluster_id: 7,
        partitions,
        settings: Settings::default(),
        first: spec(0),
    });
    for i in 1..zones.len() {
        map.apply(&Command::AddNode(spec(i)));
    }
    map
}

/// Five nodes in three zones: z1 = {1, 4}, z2 = {2, 5}, z3 = {3}.
pub(crate) const FIVE: [&str; 5] = ["z1", "z2", "z3", "z1", "z2"];

/// Applies `command`, which must not be rejected.
pub(crate) fn apply(map: &mut ClusterMap, command: Command) {
    let result = map.apply(&command);
    assert!(
        !matches!(result, CommandResult::Rejected(_)),
        "{command:?}: {result:?}"
    );
}

/// Sets a recovery setting as `levee admin set` would.
pub(crate) fn set(map: &mut ClusterMap, key: &str, value: &str) {
    apply(
        map,
        Command::SetRecovery {
            key: key.into(),
            value: value.into(),
        },
    );
}

/// A leader's view: the map, the detector, and simulated time in ms.
struct Sim {
    map: ClusterMap,
    detector: Detector,
    t0: Instant,
}

impl Sim {
    /// Thresholds: suspect 1 s, down 3 s, out 20 s.
    fn new(zones: &[&str]) -> Self {
        let mut map = cluster(zones, 16);
        set(&mut map, "suspect_after", "1000");
        set(&mut map, "down_after", "3000");
        set(&mut map, "down_out_interval", "20000");
        let t0 = Instant::now();
        let mut detector = Detector::new();
        detector.start_leading(&map, t0, BASE_MS);
        Self { map, detector, t0 }
    }

    fn at(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }

    /// Evaluates at `ms` and commits what the detector decides.
    fn tick(&mut self, ms: u64) -> Vec<Transition> {
        let transitions = self.detector.evaluate(&self.map, self.at(ms));
        for t in &transitions {
            let (id, state) = (t.node, t.to);
            apply(
                &mut self.map,
                Command::SetNodeState {
                    id,
                    state,
                    at_ms: BASE_MS + ms,
                },
            );
        }
        transitions
    }

    /// Every node except `dead` beats each second; the detector evaluates
    /// every 500 ms in `(from, to]`. Returns `(ms, transition)` pairs.
    fn run(&mut self, from: u64, to: u64, dead: &[NodeId]) -> Vec<(u64, Transition)> {
        let mut seen = Vec::new();
        for ms in (from + 1..=to).filter(|ms| ms % 500 == 0) {
            if ms % 1000 == 0 {
                let alive: Vec<NodeId> = self
                    .map
                    .nodes
                    .keys()
                    .copied()
                    .filter(|id| !dead.contains(id))
                    .collect();
                for id in alive {
                    self.detector.beat(id, self.at(ms));
                }
            }
            seen.extend(self.tick(ms).into_iter().map(|t| (ms, t)));
        }
        seen
    }

    fn state(&self, id: NodeId) -> NodeState {
        self.map.state_of(id).expect("node in the map")
    }
}

fn changes(seen: &[(u64, Transition)]) -> Vec<(u64, NodeId, NodeState)> {
    seen.iter().map(|(ms, t)| (*ms, t.node, t.to)).collect()
}

#[test]
fn a_silent_node_goes_down_after_down_after_and_not_before() {
    let mut sim = Sim::new(&FIVE);
    assert!(sim.run(0, 2_500, &[2]).is_empty());
    let seen = sim.run(2_500, 3_000, &[2]);
    assert_eq!(changes(&seen), vec![(3_000, 2, NodeState::Down)]);
    assert!(
        seen[0].1.reason.contains("down_after"),
        "{}",
        seen[0].1.reason
    );
}

#[test]
fn suspects_are_up_nodes_between_suspect_after_and_down_after() {
    let mut sim = Sim::new(&FIVE);
    sim.run(0, 1_000, &[2]);
    assert_eq!(sim.detector.suspects(&sim.map, sim.at(1_000)), vec![2]);
    sim.run(1_000, 3_000, &[2]);
    assert!(sim.detector.suspects(&sim.map, sim.at(3_000)).is_empty());
}

#[test]
fn a_down_node_goes_out_only_after_down_out_interval() {
    let mut sim = Sim::new(&FIVE);
    let seen = sim.run(0, 19_500, &[2]);
    assert_eq!(changes(&seen), vec![(3_000, 2, NodeState::Down)]);
    let seen = sim.run(19_500, 20_000, &[2]);
    assert_eq!(changes(&seen), vec![(20_000, 2, NodeState::Out)]);
}

#[test]
fn noout_holds_every_node_down_until_switched_off() {
    let mut sim = Sim::new(&FIVE);
    set(&mut sim.map, "noout", "on");
    sim.run(0, 40_000, &[2]);
    assert_eq!(sim.state(2), NodeState::Down);
    let held = sim.detector.held_by_guard(&sim.map, sim.at(40_000));
    assert_eq!(held, vec![(2, guard::NOOUT)]);
    set(&mut sim.map, "noout", "off");
    assert_eq!(
        changes(&sim.run(40_000, 40_500, &[2])),
        vec![(40_500, 2, NodeState::Out)]
    );
}

#[test]
fn losing_two_of_five_at_min_in_ratio_three_quarters_marks_none_out() {
    let mut sim = Sim::new(&FIVE);
    // Different zones, so the zone guard is not what holds them.
    sim.run(0, 60_000, &[1, 2]);
    assert_eq!(sim.state(1), NodeState::Down);
    assert_eq!(sim.state(2), NodeState::Down);
    let held = sim.detector.held_by_guard(&sim.map, sim.at(60_000));
    assert_eq!(
        held,
        vec![(1, guard::MIN_IN_RATIO), (2, guard::MIN_IN_RATIO)]
    );
}

#[test]
fn losing_one_of_five_marks_it_out() {
    let mut sim = Sim::new(&FIVE);
    sim.run(0, 60_000, &[4]);
    assert_eq!(sim.state(4), NodeState::Out);
    assert!(
        sim.detector
            .held_by_guard(&sim.map, sim.at(60_000))
            .is_empty()
    );
}

#[test]
fn a_zone_whose_nodes_are_all_silent_stays_down() {
    let mut sim = Sim::new(&FIVE);
    // Low enough that only the zone guard can hold z2 (3 of 5 stay in).
    set(&mut sim.map, "min_in_ratio", "0.5");
    sim.run(0, 60_000, &[2, 5]);
    assert_eq!(sim.state(2), NodeState::Down);
    assert_eq!(sim.state(5), NodeState::Down);
    let held = sim.detector.held_by_guard(&sim.map, sim.at(60_000));
    assert_eq!(held, vec![(2, guard::ZONE), (5, guard::ZONE)]);
}

#[test]
fn with_the_zone_guard_off_a_dark_zone_is_marked_out() {
    let mut sim = Sim::new(&FIVE);
    set(&mut sim.map, "min_in_ratio", "0.5");
    set(&mut sim.map, "zone_guard", "off");
    sim.run(0, 60_000, &[2, 5]);
    assert_eq!(sim.state(2), NodeState::Out);
    assert_eq!(sim.state(5), NodeState::Out);
}

#[test]
fn a_zone_coming_back_node_by_node_releases_no_node_to_out() {
    let mut sim = Sim::new(&FIVE);
    set(&mut sim.map, "min_in_ratio", "0.5");
    // z2 = {2, 5} dark for a minute, held by the guard.
    sim.run(0, 60_000, &[2, 5]);
    assert_eq!(sim.state(2), NodeState::Down);
    // Node 2 is back (its first beat at 61 s); node 5's come 5 s later.
    let seen = sim.run(60_000, 65_000, &[5]);
    assert_eq!(changes(&seen), vec![(61_000, 2, NodeState::Up)]);
    assert_eq!(sim.state(5), NodeState::Down, "not released by node 2");
    let held = sim.detector.held_by_guard(&sim.map, sim.at(65_000));
    assert_eq!(held, vec![(5, guard::ZONE)]);
    let seen = sim.run(65_000, 66_000, &[]);
    assert_eq!(changes(&seen), vec![(66_000, 5, NodeState::Up)]);
}

#[test]
fn a_node_that_stays_silent_after_its_zone_came_back_goes_out_in_time() {
    let mut sim = Sim::new(&FIVE);
    set(&mut sim.map, "min_in_ratio", "0.5");
    sim.run(0, 60_000, &[2, 5]);
    // Node 2 is back at 61 s; node 5 never is: it goes Out once node 2 has
    // been back for down_out_interval (20 s), not before.
    let seen = sim.run(60_000, 90_000, &[5]);
    let out: Vec<_> = changes(&seen)
        .into_iter()
        .filter(|(_, _, s)| *s == NodeState::Out)
        .collect();
    assert_eq!(out, vec![(81_000, 5, NodeState::Out)]);
}

#[test]
fn a_node_alone_in_its_zone_is_never_marked_out_automatically() {
    let mut sim = Sim::new(&FIVE);
    sim.run(0, 60_000, &[3]);
    assert_eq!(sim.state(3), NodeState::Down);
    let held = sim.detector.held_by_guard(&sim.map, sim.at(60_000));
    assert_eq!(held, vec![(3, guard::ZONE)]);
}

#[test]
fn a_zone_mate_going_down_in_the_same_round_does_not_count_as_up() {
    let mut sim = Sim::new(&FIVE);
    set(&mut sim.map, "min_in_ratio", "0.5");
    sim.run(0, 17_000, &[2]);
    // Node 5's last beat is at 17 s: at 20 s it goes Down in the same
    // round as node 2 becomes ripe for Out.
    let seen = sim.run(17_000, 20_000, &[2, 5]);
    assert_eq!(changes(&seen), vec![(20_000, 5, NodeState::Down)]);
    assert_eq!(sim.state(2), NodeState::Down);
}

#[test]
fn a_node_back_before_out_returns_up_and_nothing_moves() {
    let mut sim = Sim::new(&FIVE);
    sim.run(0, 10_000, &[2]);
    assert_eq!(sim.state(2), NodeState::Down);
    let seen = sim.run(10_000, 60_000, &[]);
    assert_eq!(changes(&seen), vec![(11_000, 2, NodeState::Up)]);
    let mut checker = Checker::new(&sim.map.recovery, sim.at(0));
    let plan = checker.plan(&sim.map, &BTreeMap::new(), sim.at(60_000), BASE_MS);
    assert!(plan.start.is_empty(), "{plan:?}");
}

#[test]
fn an_out_node_that_returns_has_its_moves_cancelled() {
    let mut sim = Sim::new(&FIVE);
    sim.run(0, 20_000, &[4]);
    assert_eq!(sim.state(4), NodeState::Out);
    let mut checker = Checker::new(&sim.map.recovery, sim.at(20_000));
    let plan = checker.plan(&sim.map, &BTreeMap::new(), sim.at(20_000), BASE_MS);
    assert!(!plan.start.is_empty());
    apply(&mut sim.map, Command::StartMoves(plan.start));
    assert!(sim.map.moves.values().any(|m| m.from == Some(4)));
    let seen = sim.run(20_000, 21_000, &[]);
    assert_eq!(changes(&seen), vec![(21_000, 4, NodeState::Up)]);
    assert!(sim.map.moves.values().all(|m| m.from != Some(4)));
}

#[test]
fn a_leader_change_carries_the_down_silence_over() {
    let mut sim = Sim::new(&FIVE);
    sim.run(0, 10_000, &[2]);
    // Down since 3 s. A new leader takes over at 10 s with an empty
    // detector: node 2 is 7 s into its down time, the rest get grace.
    sim.detector = Detector::new();
    sim.detector
        .start_leading(&sim.map, sim.at(10_000), BASE_MS + 10_000);
    assert_eq!(
        sim.detector.silence(2, sim.at(10_000)),
        Some(Duration::from_secs(7))
    );
    let seen = sim.run(10_000, 23_000, &[2]);
    assert_eq!(changes(&seen), vec![(23_000, 2, NodeState::Out)]);
}

#[test]
fn a_new_leader_gives_every_up_node_a_grace_period() {
    let mut sim = Sim::new(&FIVE);
    sim.run(0, 10_000, &[]);
    sim.detector = Detector::new();
    sim.detector
        .start_leading(&sim.map, sim.at(10_000), BASE_MS + 10_000);
    // Nobody has beaten the new leader yet.
    assert!(sim.tick(12_500).is_empty());
    assert_eq!(sim.tick(13_000).len(), 5);
}

#[test]
fn a_node_that_joins_later_is_judged_from_when_the_detector_sees_it() {
    let mut sim = Sim::new(&FIVE);
    sim.run(0, 100_000, &[]);
    apply(
        &mut sim.map,
        Command::AddNode(NodeSpec {
            addr: "n6:1".into(),
            admin: "n6:2".into(),
            zone: "z3".into(),
            capacity: 1,
            join_token: 6,
        }),
    );
    assert_eq!(sim.detector.silence(6, sim.at(100_000)), None);
    assert!(sim.tick(100_000).is_empty());
    let seen = sim.run(100_000, 103_000, &[6]);
    assert_eq!(changes(&seen), vec![(103_000, 6, NodeState::Down)]);
}

proptest! {
    #[test]
    fn recent_beaters_stay_up_and_nothing_goes_out_early(
        min_in_ratio in prop::sample::select(vec!["0.2", "0.5", "0.75", "1"]),
        steps in prop::collection::vec((0u64..4_000, 0u8..32), 1..150),
    ) {
        let mut sim = Sim::new(&FIVE);
        set(&mut sim.map, "min_in_ratio", min_in_ratio);
        let r = sim.map.recovery;
        // Real silence as the test sees it: since the last beat, or since
        // start_leading for a node that never beat.
        let mut last: BTreeMap<NodeId, u64> = sim.map.nodes.keys().map(|id| (*id, 0)).collect();
        let mut ms = 0;
        for (advance, beats) in steps {
            ms += advance;
            for id in 1..=5u64 {
                if beats & (1 << (id - 1)) != 0 {
                    sim.detector.beat(id, sim.at(ms));
                    last.insert(id, ms);
                }
            }
            for t in sim.tick(ms) {
                let silent = ms - last[&t.node];
                match t.to {
                    NodeState::Down => prop_assert!(silent >= r.down_after_ms, "{t:?} after {silent} ms"),
                    NodeState::Out => prop_assert!(silent >= r.down_out_interval_ms, "{t:?} after {silent} ms"),
                    _ => {}
                }
            }
            for (id, beat) in &last {
                if ms - beat < r.suspect_after_ms {
                    prop_assert_eq!(sim.state(*id), NodeState::Up, "node {} beat at {} ms, now {}", id, beat, ms);
                }
            }
        }
    }
}
