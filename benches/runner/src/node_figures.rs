//! Each node's part in a run, from its `/metrics` at the start, at the
//! first fault and at the end: its share of the client operations the
//! cluster coordinated, and its server-side p99 of foreground requests,
//! before the first fault and after it. Shows where the clients sent
//! their load when a node went slow or a zone died, and what that did to
//! the nodes that took it. Pure: snapshots in, figures out.

use std::fmt::Write as _;

use serde::Serialize;

use super::prometheus::{Histogram, Scrape};
use super::report::{num, percent, times};
use super::server_figures::Snapshot;

/// Requests by class, op and outcome (node/src/metrics.rs).
const REQUESTS: &str = "levee_requests_total";
/// Time from receipt to answer of admitted requests, by class.
const DURATION: &str = "levee_request_duration_seconds";
/// The ops a node counts when it coordinates a client's key operation
/// (`Op::name` in node/src/proto/op.rs); the replica requests it sends
/// on have their own names (`get_replica`, `replicate`, `read_local`).
const CLIENT_OPS: [&str; 3] = ["get", "put", "delete"];
/// The class of client and replica reads and writes.
const FOREGROUND: (&str, &str) = ("class", "foreground");

/// One node's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NodeFigures {
    /// The runner's node number (1-based; the snapshots are in its order).
    pub node: u8,
    /// Its share (0..1) of the client operations (get, put, delete, any
    /// outcome) coordinated by the nodes readable at both ends, from the
    /// start of the run to the first fault (the whole run without one).
    pub share_before: Option<f64>,
    /// The same from the first fault to the end.
    pub share_after: Option<f64>,
    /// Its p99 of foreground requests, receipt to answer (ms), before the
    /// first fault.
    pub p99_before_ms: Option<f64>,
    /// The same after it.
    pub p99_after_ms: Option<f64>,
    /// `p99_after_ms / p99_before_ms`.
    pub p99_after_vs_before: Option<f64>,
}

/// What one node did between two snapshots: client ops coordinated and
/// the foreground latency histogram.
struct Interval {
    ops: f64,
    latency: Histogram,
}

fn interval(from: &Result<Scrape, String>, to: &Result<Scrape, String>) -> Option<Interval> {
    let (Ok(from), Ok(to)) = (from, to) else {
        return None;
    };
    let ops = |s: &Scrape| -> f64 {
        CLIENT_OPS
            .iter()
            .map(|op| s.sum(REQUESTS, &[("op", op)]))
            .sum()
    };
    let latency = to
        .histogram_where(DURATION, &[FOREGROUND])
        .since(&from.histogram_where(DURATION, &[FOREGROUND]));
    Some(Interval {
        ops: (ops(to) - ops(from)).max(0.0),
        latency,
    })
}

/// Per node: its share of the ops and its p99 (ms) between `from` and
/// `to` (the same nodes in the same order). A node unreadable at either
/// end has neither, and is missing from the others' denominator: the
/// caller reports it as a problem, not as a zero.
fn shares_and_p99(from: &Snapshot, to: &Snapshot) -> Vec<(Option<f64>, Option<f64>)> {
    let intervals: Vec<Option<Interval>> = from
        .iter()
        .zip(to)
        .map(|(a, b)| interval(&a.metrics, &b.metrics))
        .collect();
    let total: f64 = intervals.iter().flatten().map(|i| i.ops).sum();
    intervals
        .iter()
        .map(|i| match i {
            Some(i) => (
                (total > 0.0).then(|| i.ops / total),
                i.latency.quantile(0.99).map(|s| s * 1e3),
            ),
            None => (None, None),
        })
        .collect()
}

/// Each node's figures from the snapshots at the start, at the first fault
/// (`None`: no fault, the whole run is "before") and at the end.
pub fn of(before: &Snapshot, at_fault: Option<&Snapshot>, after: &Snapshot) -> Vec<NodeFigures> {
    let first = shares_and_p99(before, at_fault.unwrap_or(after));
    let second = at_fault.map(|at| shares_and_p99(at, after));
    first
        .into_iter()
        .enumerate()
        .map(|(i, (share_before, p99_before_ms))| {
            let (share_after, p99_after_ms) = second
                .as_ref()
                .and_then(|s| s.get(i).copied())
                .unwrap_or_default();
            NodeFigures {
                node: u8::try_from(i + 1).unwrap_or(u8::MAX),
                share_before,
                share_after,
                p99_before_ms,
                p99_after_ms,
                p99_after_vs_before: match (p99_after_ms, p99_before_ms) {
                    (Some(a), Some(b)) if b > 0.0 => Some(a / b),
                    _ => None,
                },
            }
        })
        .collect()
}

/// The per-node table in markdown; `variant` names the variant of each
/// set of rows (the comparison), or is `None` (one run).
pub fn table(runs: &[(Option<&str>, &[NodeFigures])]) -> String {
    let with_variant = runs.iter().any(|(v, _)| v.is_some());
    let mut out = String::from(if with_variant {
        "| node | variant | share before fault | share after fault | p99 before ms | p99 after ms | p99 after / before |\n|---|---|---|---|---|---|---|\n"
    } else {
        "| node | share before fault | share after fault | p99 before ms | p99 after ms | p99 after / before |\n|---|---|---|---|---|---|\n"
    });
    let nodes = runs.iter().map(|(_, n)| n.len()).max().unwrap_or(0);
    for i in 0..nodes {
        for (variant, figures) in runs {
            let Some(n) = figures.get(i) else { continue };
            let _ = write!(out, "| {} |", n.node);
            if with_variant {
                let _ = write!(out, " {} |", variant.unwrap_or("–"));
            }
            let _ = writeln!(
                out,
                " {} | {} | {} | {} | {} |",
                percent(n.share_before),
                percent(n.share_after),
                num(n.p99_before_ms, 2),
                num(n.p99_after_ms, 2),
                times(n.p99_after_vs_before),
            );
        }
    }
    out.push_str(
        "\nShares: of the client operations (get, put, delete, any outcome) the nodes readable at both ends coordinated. p99: each node's own time from receipt to answer of foreground requests (client and replica reads and writes), from its histogram's buckets. Before: from the start of the run (warm-up included) to the first fault; after: from the first fault to the end.\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::server_figures::NodeSnapshot;

    /// A node's metrics: `gets` and `puts` coordinated (some refused),
    /// replica requests that are not its own clients', and foreground
    /// requests of which `slow` took more than 10 ms.
    fn metrics(gets: u64, puts: u64, fast: u64, slow: u64) -> NodeSnapshot {
        let text = format!(
            "{REQUESTS}{{class=\"foreground\",op=\"get\",outcome=\"ok\"}} {gets}\n\
             {REQUESTS}{{class=\"foreground\",op=\"put\",outcome=\"ok\"}} {}\n\
             {REQUESTS}{{class=\"foreground\",op=\"put\",outcome=\"overloaded\"}} {}\n\
             {REQUESTS}{{class=\"foreground\",op=\"replicate\",outcome=\"ok\"}} 5000\n\
             {DURATION}_bucket{{class=\"foreground\",le=\"0.001\"}} {fast}\n\
             {DURATION}_bucket{{class=\"foreground\",le=\"0.01\"}} {fast}\n\
             {DURATION}_bucket{{class=\"foreground\",le=\"0.1\"}} {}\n\
             {DURATION}_bucket{{class=\"foreground\",le=\"+Inf\"}} {}\n\
             {DURATION}_bucket{{class=\"control\",le=\"0.001\"}} 0\n\
             {DURATION}_bucket{{class=\"control\",le=\"+Inf\"}} 9999\n",
            puts - puts / 2,
            puts / 2,
            fast + slow,
            fast + slow,
        );
        NodeSnapshot {
            metrics: Ok(Scrape::parse(&text)),
            text: None,
            term: None,
            addrs: BTreeMap::new(),
            map: None,
        }
    }

    fn silent() -> NodeSnapshot {
        NodeSnapshot {
            metrics: Err("127.0.0.2:7401: no answer within 1 s".into()),
            ..metrics(0, 0, 0, 0)
        }
    }

    #[test]
    fn shares_and_p99_are_split_at_the_first_fault() {
        let start = vec![metrics(0, 0, 0, 0); 3];
        // Before: 100 ops each, all fast.
        let at = vec![
            metrics(80, 20, 1000, 0),
            metrics(80, 20, 1000, 0),
            metrics(80, 20, 1000, 0),
        ];
        // After: node 2 slowed, 20 more ops, half of its requests slow;
        // the others take 90 more each at the old latency.
        let end = vec![
            metrics(160, 30, 2000, 0),
            metrics(96, 24, 1100, 100),
            metrics(160, 30, 2000, 0),
        ];
        let nodes = of(&start, Some(&at), &end);
        let shares: Vec<_> = nodes
            .iter()
            .map(|n| (n.node, n.share_before, n.share_after))
            .collect();
        assert_eq!(
            shares,
            [
                (1, Some(1.0 / 3.0), Some(0.45)),
                (2, Some(1.0 / 3.0), Some(0.1)),
                (3, Some(1.0 / 3.0), Some(0.45)),
            ]
        );
        // 1000 fast before: the p99 is inside the first bucket (≤ 1 ms).
        assert!(nodes[1].p99_before_ms.unwrap() <= 1.0);
        // 100 fast and 100 slow after: the p99 is in 10–100 ms.
        let after = nodes[1].p99_after_ms.unwrap();
        assert!(
            (after - (10.0 + 90.0 * 98.0 / 100.0)).abs() < 1e-9,
            "{after}"
        );
        assert!(nodes[1].p99_after_vs_before.unwrap() > 10.0);
        assert_eq!(nodes[0].p99_after_vs_before, Some(1.0));
    }

    #[test]
    fn an_unreadable_node_has_no_figures_and_no_part_in_the_shares() {
        let start = vec![metrics(0, 0, 0, 0); 3];
        let at = vec![metrics(50, 0, 10, 0); 3];
        // Node 2 killed at the fault: unreadable at the end.
        let end = vec![metrics(150, 0, 20, 0), silent(), metrics(100, 0, 20, 0)];
        let nodes = of(&start, Some(&at), &end);
        assert_eq!(nodes[1].share_before, Some(1.0 / 3.0));
        assert_eq!((nodes[1].share_after, nodes[1].p99_after_ms), (None, None));
        assert_eq!(nodes[0].share_after, Some(100.0 / 150.0));
        assert_eq!(nodes[2].share_after, Some(50.0 / 150.0));
    }

    #[test]
    fn without_a_fault_the_whole_run_is_before() {
        let start = vec![metrics(0, 0, 0, 0); 2];
        let end = vec![metrics(30, 0, 10, 0), metrics(10, 0, 10, 0)];
        let nodes = of(&start, None, &end);
        assert_eq!(nodes[0].share_before, Some(0.75));
        assert_eq!(
            (nodes[0].share_after, nodes[0].p99_after_vs_before),
            (None, None)
        );
        let md = table(&[(None, &nodes)]);
        assert!(md.contains("| 1 | 75% | – |"), "{md}");
        let both = table(&[(Some("placement"), &nodes), (Some("load-aware"), &nodes)]);
        assert!(both.contains("| 2 | load-aware | 25% |"), "{both}");
    }
}
