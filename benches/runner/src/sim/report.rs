//! The outputs of a simulation: `result.json` (everything), `summary.md`
//! (the figures, the targets, the events), `seconds.csv` (one row per
//! simulated second), `nodes.csv` (each node's totals) and
//! `node_seconds.csv` (each node's bytes in each second it moved any).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;

use super::engine::Run;
use super::figures::SimFigures;
use super::record::{Cost, NodeTotals, SimEventRecord, SimSecond};
use super::scenario::SimScenario;
use crate::report::Machine;
use crate::targets::{self, Verdict};

/// Everything a simulation produced, as written to `result.json`.
#[derive(Debug, Serialize)]
pub struct SimResult {
    /// Format version of this file.
    pub format: u32,
    /// The scenario as run (defaults filled in).
    pub scenario: SimScenario,
    /// Where it ran (the wall times depend on it; nothing else does).
    pub machine: Machine,
    /// When it ran (UTC).
    pub started_at: String,
    /// The figures.
    pub figures: SimFigures,
    /// The targets, met or missed.
    pub targets: Vec<Verdict>,
    /// What happened, in time order.
    pub events: Vec<SimEventRecord>,
    /// One row per simulated second.
    pub seconds: Vec<SimSecond>,
    /// Each node's totals.
    pub nodes: Vec<NodeTotals>,
}

/// Writes every file into `dir`.
pub fn write(dir: &Path, result: &SimResult, run: &Run) -> anyhow::Result<()> {
    let put = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
    };
    put(
        "result.json",
        serde_json::to_string_pretty(result).context("cannot encode result.json")?,
    )?;
    put("summary.md", summary(result))?;
    put("seconds.csv", seconds_csv(&result.seconds))?;
    let mut nodes = String::from(
        "node,zone,rack,sent_bytes,received_bytes,peak_send_bytes_per_s,peak_receive_bytes_per_s\n",
    );
    for n in &result.nodes {
        let _ = writeln!(
            nodes,
            "{},{},{},{},{},{},{}",
            n.id, n.zone, n.rack, n.sent, n.received, n.peak_send, n.peak_receive
        );
    }
    put("nodes.csv", nodes)?;
    let mut per_node = String::from("second,node,sent_bytes,received_bytes\n");
    for (t, id, sent, received) in &run.node_seconds {
        let _ = writeln!(per_node, "{t},{id},{sent},{received}");
    }
    put("node_seconds.csv", per_node)
}

fn seconds_csv(rows: &[SimSecond]) -> String {
    let lefts = rows.first().map_or(0, |r| r.by_live.len());
    let mut out = String::from("second");
    for k in 0..lefts {
        let _ = write!(out, ",left_{k}");
    }
    out.push_str(",under_replicated,moves,waiting,unrecoverable,recovery_bytes,senders,receivers,max_send_bytes,median_send_bytes,max_receive_bytes,down,out,draining,held\n");
    for r in rows {
        let _ = write!(out, "{}", r.t);
        for k in 0..lefts {
            let _ = write!(out, ",{}", r.left(k));
        }
        let _ = writeln!(
            out,
            ",{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            r.under_replicated,
            r.moves,
            r.waiting,
            r.unrecoverable,
            r.bytes,
            r.senders,
            r.receivers,
            r.max_send,
            r.median_send,
            r.max_receive,
            r.down,
            r.out,
            r.draining,
            r.held
        );
    }
    out
}

const MIB: f64 = 1_048_576.0;
const GIB: f64 = MIB * 1024.0;

fn secs(v: Option<f64>) -> String {
    v.map_or("–".to_owned(), |v| format!("{v:.1} s"))
}

fn cost(c: &Cost) -> String {
    format!(
        "mean {:.0} µs, p50 {} µs, p99 {} µs, max {} µs over {} ticks",
        c.mean_us, c.p50_us, c.p99_us, c.max_us, c.ticks
    )
}

/// The figures as markdown lines.
pub fn figures_lines(f: &SimFigures) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "- cluster: {} nodes, {} partitions, {:.1} TiB stored (all replicas)",
        f.nodes,
        f.partitions,
        f.stored_bytes as f64 / GIB / 1024.0
    );
    let _ = writeln!(
        out,
        "- peak recovery bytes cluster-wide: {:.2} GiB/s in second {} = ×{:.3} the bound ({:.2} GiB/s = min(max_moves, nodes) × bytes_per_sec)",
        f.peak_cluster_bytes as f64 / GIB,
        f.peak_cluster_t,
        f.cluster_vs_bound,
        f.cluster_bound / GIB
    );
    let _ = writeln!(
        out,
        "- peak node ingest: {:.1} MiB/s = ×{:.3} the receive bound ({:.1} MiB/s = max_moves_per_node × (bytes_per_sec + bytes_burst)); peak node send: {:.1} MiB/s = ×{:.3} (bytes_per_sec + bytes_burst)",
        f.peak_node_receive as f64 / MIB,
        f.node_receive_vs_bound,
        f.receive_bound / MIB,
        f.peak_node_send as f64 / MIB,
        f.node_send_vs_bound
    );
    let _ = writeln!(
        out,
        "- recovery bytes sent: {:.1} GiB; moves started / finished / cancelled: {} / {} / {}; most in flight: {}",
        f.bytes_sent as f64 / GIB,
        f.moves.0,
        f.moves.1,
        f.moves.2,
        f.max_moves_in_flight
    );
    let held: Vec<String> = f.held.iter().map(|(g, n)| format!("{n} by {g}")).collect();
    let _ = writeln!(
        out,
        "- nodes marked out: {}; held from out: {}",
        f.nodes_marked_out,
        if held.is_empty() {
            "none".to_owned()
        } else {
            held.join(", ")
        }
    );
    let _ = writeln!(
        out,
        "- first loss {} → first down {} → copy starts (out / drain) {} → full redundancy {}",
        secs(f.fault_s),
        secs(f.first_down_s),
        secs(f.work_s),
        secs(f.redundant_s)
    );
    if let (Some(m), Some(w)) = (f.model, f.work) {
        let _ = writeln!(
            out,
            "- model: {:.1} s delay + {:.1} s copy ({} bound: {} moves, {:.1} GiB, {:.1} MiB/s per source, slowest {:.1}, {} slots) = {:.1} s; measured fault → redundant {} (×{}), copy {} (×{})",
            w.delay_s,
            m.copy_s,
            m.bound,
            w.moves,
            w.bytes as f64 / GIB,
            w.rate / MIB,
            w.slowest_rate / MIB,
            w.max_moves.min(w.moves as u32),
            m.total_s,
            secs(f.fault_to_redundant_s),
            f.redundancy_time_vs_model
                .map_or("–".to_owned(), |v| format!("{v:.3}")),
            secs(f.copy_s),
            f.copy_time_vs_model
                .map_or("–".to_owned(), |v| format!("{v:.3}")),
        );
    }
    if let (Some(bytes), Some(slots), Some(senders)) = (
        f.mean_copy_bytes_per_sec,
        f.slot_occupancy,
        f.senders_per_move,
    ) {
        let _ = writeln!(
            out,
            "- during the copy: {:.2} GiB/s on average (×{:.3} the bound); moves in flight / max_moves {:.3}; sending nodes per move {:.3}",
            bytes / GIB,
            bytes / f.cluster_bound,
            slots,
            senders
        );
    }
    for (k, from, to) in &f.left_windows {
        let _ = writeln!(
            out,
            "- partitions at {k} live replica(s): from second {from} to {to}"
        );
    }
    let _ = writeln!(
        out,
        "- priority: {} inversions (ticks); {} waits of a 1-left partition whose only live replica was already sending its share",
        f.inversions, f.one_left_source_busy
    );
    if f.join_reassigned.0 > 0 {
        let _ = writeln!(
            out,
            "- joins: placement reassigned {} replicas ({:.1} GiB) at once, to be filled by anti-entropy outside the recovery budget; slowest AddNode apply {:.0} ms",
            f.join_reassigned.0,
            f.join_reassigned.1 as f64 / GIB,
            f.join_apply_ms_max.unwrap_or(0.0)
        );
    }
    let _ = writeln!(out, "- checker `plan` per tick: {}", cost(&f.checker_cost));
    let _ = writeln!(
        out,
        "- detector `evaluate` per tick: {}",
        cost(&f.detector_cost)
    );
    let _ = writeln!(
        out,
        "- committing a tick (`apply`): {}",
        cost(&f.apply_cost)
    );
    let _ = writeln!(
        out,
        "- wall: {:.0} ms to build the starting map, {:.1} s to simulate",
        f.setup_ms, f.wall_s
    );
    out
}

/// summary.md.
pub fn summary(r: &SimResult) -> String {
    let mut out = format!("# levee sim: {}\n\n", r.scenario.name);
    if !r.scenario.description.is_empty() {
        let _ = writeln!(out, "{}\n", r.scenario.description);
    }
    let _ = writeln!(
        out,
        "Simulated {} s, seed {}, on {} ({}).\n",
        r.scenario.duration_s,
        r.scenario.seed,
        r.machine.line(),
        r.started_at
    );
    out.push_str(&figures_lines(&r.figures));
    out.push_str("\n## Targets\n\n");
    out.push_str(&targets::table(&r.targets));
    out.push_str("\n## Events\n\n| s | event | nodes | detail |\n|---|---|---|---|\n");
    for e in &r.events {
        let _ = writeln!(
            out,
            "| {:.1} | {} | {} | {} |",
            e.t_s,
            e.kind,
            nodes_text(&e.nodes),
            e.detail
        );
    }
    out
}

/// `1, 2, 3` or `17 nodes (1 … 40)` for long lists.
fn nodes_text(nodes: &[u64]) -> String {
    match nodes {
        [] => String::new(),
        [a, .., b] if nodes.len() > 6 => format!("{} nodes ({a} … {b})", nodes.len()),
        _ => nodes
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_node_lists_are_shortened() {
        assert_eq!(nodes_text(&[3, 4]), "3, 4");
        assert_eq!(
            nodes_text(&(1..=20).collect::<Vec<_>>()),
            "20 nodes (1 … 20)"
        );
    }

    #[test]
    fn the_seconds_csv_has_a_column_per_live_count() {
        let row = SimSecond {
            t: 7,
            by_live: vec![0, 2, 5],
            under_replicated: 7,
            ..SimSecond::default()
        };
        let csv = seconds_csv(&[row]);
        let mut lines = csv.lines();
        assert!(
            lines
                .next()
                .unwrap()
                .starts_with("second,left_0,left_1,left_2,under_replicated")
        );
        assert!(lines.next().unwrap().starts_with("7,0,2,5,7,"));
    }
}
