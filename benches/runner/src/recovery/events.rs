//! The recovery events of a run, read from its status samples: when a
//! node was marked Down, then Out, and when full redundancy was back.
//! Pure: the rows and the fault events come in, events come out.
//!
//! The samples are four a second, so these events are placed at the time
//! of the first sample that shows them (up to a quarter of a second late,
//! never early), and a state that lasted less than that between two
//! samples may be missed. A sample without its time (tests) is placed at
//! the start of its second.

use std::collections::{BTreeMap, BTreeSet};

use super::figures::number;
use crate::cluster::Event;
use crate::timeline::{ClusterSample, SecondRow};

/// `kind` of the event of a node marked Down (routing avoids it, nothing
/// is copied yet).
pub const DOWN: &str = "down";

/// `kind` of the event of a node marked Out.
pub const OUT: &str = "out";

/// `kind` of the event of full redundancy restored: no under-replicated
/// partition and no move in flight, after there had been some.
pub const REDUNDANT: &str = "redundant";

/// The state names of a Down and an Out node in the samples
/// (`NodeState`'s display).
const DOWN_STATE: &str = "down";
const OUT_STATE: &str = "out";

/// The first fault of the run (s), if any.
pub fn first_fault(events: &[Event]) -> Option<f64> {
    events
        .iter()
        .filter(|e| e.kind == "fault")
        .map(|e| e.t_s)
        .reduce(f64::min)
}

/// Every sample of the rows, in order, with its row's second and its own
/// time (s into the run).
pub(super) fn samples(rows: &[SecondRow]) -> impl Iterator<Item = (u64, f64, &ClusterSample)> {
    rows.iter().flat_map(|r| {
        r.earlier.iter().chain(r.cluster.as_ref()).map(move |c| {
            let at = c.at_ms.map_or(r.t as f64, |ms| ms as f64 / 1000.0);
            (r.t, at, c)
        })
    })
}

/// Whether the cluster is short of redundancy in a sample: a partition
/// with fewer Up replicas than R, or a move still copying.
fn degraded(s: &ClusterSample) -> bool {
    s.under_replicated > 0 || s.moves > 0
}

/// The `down`, `out` and `redundant` events after the run's first fault:
/// one `down` (`out`) per node each time a sample first shows it Down
/// (Out), and one `redundant` each time a degraded cluster
/// (under-replicated partitions or moves in flight) is first seen whole
/// again. `index` maps node ids to the runner's 1-based node numbers; a
/// node missing from it keeps its id. A `redundant` event names no node
/// (0).
pub fn derive(rows: &[SecondRow], events: &[Event], index: &BTreeMap<u64, u8>) -> Vec<Event> {
    let Some(fault) = first_fault(events) else {
        return Vec::new();
    };
    let fault_second = fault.floor() as u64;
    let node_of = |id: u64| number(index, id);
    let in_state = |s: &ClusterSample, state: &str| -> BTreeSet<u64> {
        s.nodes
            .iter()
            .filter(|(_, now)| now.as_str() == state)
            .map(|(id, _)| *id)
            .collect()
    };
    // Nodes already Down or Out before the fault are not its doing.
    let before = samples(rows).filter(|(t, _, _)| *t < fault_second).last();
    // Per state watched: its name, the event it makes, the nodes in it.
    let mut now = [(DOWN_STATE, DOWN), (OUT_STATE, OUT)].map(|(state, kind)| {
        let nodes = before
            .map(|(_, _, s)| in_state(s, state))
            .unwrap_or_default();
        (state, kind, nodes)
    });
    let mut was_degraded = false;
    let mut found = Vec::new();
    for (_, at, s) in samples(rows).filter(|(t, _, _)| *t >= fault_second) {
        for entry in &mut now {
            let (state, kind, nodes) = (entry.0, entry.1, &mut entry.2);
            let seen = in_state(s, state);
            for id in seen.difference(nodes) {
                let node = node_of(*id);
                found.push(Event {
                    t_s: at,
                    kind,
                    action: None,
                    node,
                    detail: format!("node {node} marked {state} (id {id})"),
                });
            }
            *nodes = seen;
        }
        if degraded(s) {
            was_degraded = true;
        } else if was_degraded {
            was_degraded = false;
            found.push(Event {
                t_s: at,
                kind: REDUNDANT,
                action: None,
                node: 0,
                detail: "full redundancy: no under-replicated partition, no move in flight"
                    .to_owned(),
            });
        }
    }
    found
}

/// The first `out` event and the first `redundant` event after it, if
/// any: the recovery window.
pub fn window(events: &[Event]) -> Option<(f64, Option<f64>)> {
    let out = events
        .iter()
        .filter(|e| e.kind == OUT)
        .map(|e| e.t_s)
        .reduce(f64::min)?;
    let redundant = events
        .iter()
        .filter(|e| e.kind == REDUNDANT && e.t_s >= out)
        .map(|e| e.t_s)
        .reduce(f64::min);
    Some((out, redundant))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::recovery::tests::{fault, row, sample};

    #[test]
    fn out_and_redundant_come_from_the_samples_after_the_fault() {
        // Node id 7 is the runner's node 2; killed at 3.4 s, Down at 5,
        // Out at 8, two moves, whole again at 11.
        let rows: Vec<SecondRow> = (0..14u64)
            .map(|t| {
                let state = match t {
                    0..=4 => "up",
                    5..=7 => "down",
                    _ => "out",
                };
                let under = match t {
                    5..=8 => 4,
                    9..=10 => 2,
                    _ => 0,
                };
                let moves = if (8..=10).contains(&t) { 2 } else { 0 };
                row(t, Some(sample(&[(1, "up"), (7, state)], under, moves)))
            })
            .collect();
        let index = BTreeMap::from([(1, 1), (7, 2)]);
        let got = derive(&rows, &[fault(3.4)], &index);
        let summary: Vec<_> = got.iter().map(|e| (e.kind, e.node, e.t_s)).collect();
        assert_eq!(
            summary,
            [(DOWN, 2, 5.0), (OUT, 2, 8.0), (REDUNDANT, 0, 11.0)]
        );
        assert_eq!(got[1].detail, "node 2 marked out (id 7)");
        assert_eq!(window(&got), Some((8.0, Some(11.0))));
    }

    #[test]
    fn a_node_back_before_out_restores_redundancy_without_an_out() {
        let rows: Vec<SecondRow> = (0..10u64)
            .map(|t| {
                let (state, under) = if (4..7).contains(&t) {
                    ("down", 3)
                } else {
                    ("up", 0)
                };
                row(t, Some(sample(&[(1, "up"), (2, state)], under, 0)))
            })
            .collect();
        let got = derive(&rows, &[fault(2.0)], &BTreeMap::new());
        let summary: Vec<_> = got.iter().map(|e| (e.kind, e.t_s)).collect();
        assert_eq!(summary, [(DOWN, 4.0), (REDUNDANT, 7.0)]);
        assert_eq!(window(&got), None, "no out, no recovery window");
    }

    #[test]
    fn samples_within_a_second_place_the_events_to_their_own_time() {
        // Four samples a second through the timeline, as the sampler sends
        // them: node 2 is Out from 8.5 s, whole again from 9.75 s. Each
        // event is placed at the first sample that shows it, not at its
        // row's second (which would place both early) nor at the next
        // whole second (late).
        let mut timeline = crate::timeline::Timeline::new(12);
        for quarter in 0..48u64 {
            let at_ms = quarter * 250;
            let state = if at_ms >= 8500 { "out" } else { "up" };
            let (under, moves) = match at_ms {
                0..=2999 => (0, 0),
                3000..=8499 => (4, 0),
                8500..=9749 => (2, 2),
                _ => (0, 0),
            };
            let mut s = sample(&[(1, "up"), (2, state)], under, moves);
            s.at_ms = Some(at_ms);
            timeline.sample(Duration::from_millis(at_ms), Some(s));
        }
        let rows = timeline.rows();
        let got = derive(&rows, &[fault(2.9)], &BTreeMap::new());
        let summary: Vec<_> = got.iter().map(|e| (e.kind, e.t_s)).collect();
        assert_eq!(summary, [(OUT, 8.5), (REDUNDANT, 9.75)]);
        // The row keeps one sample (the second's last) for the report.
        assert_eq!(rows[8].cluster.as_ref().and_then(|c| c.at_ms), Some(8750));
        assert_eq!(rows[8].earlier.len(), 3);
    }

    #[test]
    fn nothing_before_the_fault_or_without_one_counts() {
        // Out already before the fault, missing samples, never whole again.
        let mut rows: Vec<SecondRow> = (0..6u64)
            .map(|t| row(t, Some(sample(&[(1, "up"), (2, "out")], 5, 1))))
            .collect();
        rows[3].cluster = None;
        assert!(derive(&rows, &[], &BTreeMap::new()).is_empty());
        assert!(derive(&rows, &[fault(2.0)], &BTreeMap::new()).is_empty());
        // A node leaving and re-entering Out is marked again; the id
        // stands in for a node the index does not know.
        rows[4].cluster = Some(sample(&[(1, "up"), (2, "up")], 5, 1));
        let got = derive(&rows, &[fault(2.0)], &BTreeMap::new());
        let summary: Vec<_> = got.iter().map(|e| (e.kind, e.node, e.t_s)).collect();
        assert_eq!(summary, [(OUT, 2, 5.0)]);
        assert_eq!(window(&got), Some((5.0, None)));
    }
}
