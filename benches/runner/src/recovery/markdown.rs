//! The recovery figures in words: a list for one run's summary.md, a
//! table row per variant for the comparison.

use std::fmt::Write as _;

use levee_node::node::send_budget::SOURCES_PER_MOVE;

use super::figures::RecoveryFigures;
use crate::report::num;

/// Bytes as MiB with one decimal.
fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / f64::from(1u32 << 20))
}

/// Seconds with one decimal, `–` when missing.
fn secs(v: Option<f64>) -> String {
    v.map_or("–".to_owned(), |v| format!("{v:.1} s"))
}

/// A ratio as `×1.23`, `–` when missing.
fn times(v: Option<f64>) -> String {
    v.map_or("–".to_owned(), |v| format!("×{v:.2}"))
}

/// `node 2 (zone), node 5 (zone)`.
fn held(f: &RecoveryFigures) -> String {
    let nodes: Vec<String> = f
        .held
        .iter()
        .map(|(n, guard)| format!("node {n} ({guard})"))
        .collect();
    nodes.join(", ")
}

/// The figures of one run as a markdown list.
pub fn lines(f: &RecoveryFigures) -> String {
    let mut out = String::new();
    let delay = f
        .down_out_interval_s
        .map_or(String::new(), |d| format!("; down_out_interval {d:.0} s"));
    let down = f.fault_to_down_s.map_or(String::new(), |d| {
        format!("; first node down {d:.1} s after it")
    });
    let _ = write!(out, "- fault at {:.1} s{down}; ", f.fault_s);
    match f.out_s {
        Some(out_s) => {
            let nodes: Vec<String> = f.nodes_out.iter().map(|n| format!("node {n}")).collect();
            let _ = writeln!(
                out,
                "{} marked out from {out_s:.1} s ({} after the fault{delay})",
                nodes.join(", "),
                secs(f.fault_to_out_s),
            );
        }
        None => {
            let _ = writeln!(out, "no node marked out{delay}");
        }
    }
    if !f.held.is_empty() {
        let _ = writeln!(out, "- held by a guard instead: {}", held(f));
    }
    match (f.out_s, f.redundant_s) {
        (Some(_), Some(r)) => {
            let _ = writeln!(
                out,
                "- full redundancy at {r:.1} s: {} after out, {} after the fault",
                secs(f.recovery_s),
                secs(f.fault_to_redundant_s),
            );
        }
        (Some(_), None) => {
            let _ = writeln!(out, "- **not** fully redundant by the end of the run");
        }
        (None, Some(r)) => {
            let _ = writeln!(
                out,
                "- full redundancy again at {r:.1} s, {} after the fault, without a node marked out (the lost nodes came back)",
                secs(f.fault_to_redundant_s),
            );
        }
        (None, None) => {}
    }
    let _ = writeln!(
        out,
        "- under-replicated partitions: at most {}; moves in flight: at most {}; time per move and slot {}",
        f.max_under_replicated,
        f.max_moves,
        secs(f.slot_s_per_move),
    );
    let _ = writeln!(
        out,
        "- copied {} (sent {}) by {} sending into {} receiving nodes; peak cluster-wide rate {}/s",
        mib(f.bytes_copied as f64),
        mib(f.bytes_sent as f64),
        f.sending_nodes,
        f.receiving_nodes,
        mib(f.peak_cluster_bytes_per_sec as f64),
    );
    if !f.nodes.is_empty() {
        let per_node: Vec<String> = f
            .nodes
            .iter()
            .map(|n| {
                let rate = n
                    .send_rate
                    .filter(|_| n.sent > 0)
                    .map_or(String::new(), |r| format!(" at {}/s", mib(r)));
                format!(
                    "node {} sent {}{rate}, received {}",
                    n.node,
                    mib(n.sent as f64),
                    mib(n.received as f64)
                )
            })
            .collect();
        let _ = writeln!(out, "- per node: {}", per_node.join("; "));
    }
    if let Some(limit) = f.limit_bytes_per_sec.filter(|_| f.out_s.is_some()) {
        let _ = writeln!(
            out,
            "- limit {}/s per sending node; highest node's average send rate over the recovery: {} of it",
            mib(limit as f64),
            times(f.rate_vs_limit),
        );
        if f.sent_vs_bound.is_some() || f.received_vs_bound.is_some() {
            let _ = writeln!(
                out,
                "- per node against its buckets over the recovery window (+{} s, one sampling interval): sent {} of rate × t + burst, received {} of ingest rate × t + burst",
                crate::sampler::SAMPLE_EVERY.as_secs_f64(),
                times(f.sent_vs_bound),
                times(f.received_vs_bound),
            );
        }
        if let Some(model) = f.model_s {
            let _ = writeln!(
                out,
                "- model: {} + {} / ({}/s × {} senders) = {model:.1} s; measured fault → redundant {}: {}",
                secs(f.down_out_interval_s),
                mib(f.bytes_copied as f64),
                mib(limit as f64),
                f.sending_nodes,
                secs(f.fault_to_redundant_s),
                times(f.time_vs_model),
            );
        }
        if let (Some(model), Some(per_node)) = (f.ingest_model_s, f.max_moves_per_node) {
            let _ = writeln!(
                out,
                "- with the receivers' ingest buckets ({}/s × {per_node} moves × {SOURCES_PER_MOVE} sources × {} receivers): {model:.1} s, measured {} (not a target: what is left besides the byte budgets)",
                mib(limit as f64),
                f.receiving_nodes,
                times(f.time_vs_ingest_model),
            );
        }
    }
    if f.p99_recovering_ms.is_some() {
        let _ = writeln!(
            out,
            "- p99 while recovering {} ms, baseline {} ms: {}",
            num(f.p99_recovering_ms, 2),
            num(f.p99_baseline_ms, 2),
            times(f.p99_recovering_vs_baseline),
        );
    }
    let _ = writeln!(
        out,
        "- failed client operations (whole run, after retries): {}",
        f.failed_ops
    );
    out
}

/// One row per variant that has recovery figures.
pub fn table<'a>(variants: impl IntoIterator<Item = (&'a str, &'a RecoveryFigures)>) -> String {
    let mut out = String::from(
        "| variant | nodes out | fault → down | fault → out | out → redundant | fault → redundant | partitions | most moves in flight | s per move and slot | copied | senders → receivers | peak rate | node rate / limit | model | measured / model | p99 recovering / baseline | failed ops |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for (name, f) in variants {
        let out_nodes: Vec<String> = f.nodes_out.iter().map(u8::to_string).collect();
        let redundant = match (f.out_s, f.recovery_s) {
            (Some(_), None) => "not by the end".to_owned(),
            (_, r) => secs(r),
        };
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {redundant} | {} | {} | {} | {} | {} | {} → {} | {}/s | {} | {} | {} | {} | {} |",
            match (out_nodes.is_empty(), f.held.is_empty()) {
                (false, _) => out_nodes.join(", "),
                (true, true) => "none".to_owned(),
                (true, false) => format!("none; held: {}", held(f)),
            },
            secs(f.fault_to_down_s),
            secs(f.fault_to_out_s),
            secs(f.fault_to_redundant_s),
            f.max_under_replicated,
            f.max_moves,
            secs(f.slot_s_per_move),
            mib(f.bytes_copied as f64),
            f.sending_nodes,
            f.receiving_nodes,
            mib(f.peak_cluster_bytes_per_sec as f64),
            times(f.rate_vs_limit),
            secs(f.model_s),
            times(f.time_vs_model),
            times(f.p99_recovering_vs_baseline),
            f.failed_ops,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recovery::figures::NodeRecovery;

    #[test]
    fn the_words_name_every_figure_or_say_what_is_missing() {
        let f = RecoveryFigures {
            fault_s: 15.0,
            nodes_out: vec![2],
            out_s: Some(31.0),
            redundant_s: Some(61.0),
            fault_to_out_s: Some(16.0),
            recovery_s: Some(30.0),
            fault_to_redundant_s: Some(46.0),
            bytes_copied: 3 << 20,
            nodes: vec![NodeRecovery {
                node: 1,
                sent: 3 << 20,
                received: 0,
                send_rate: Some(f64::from(1u32 << 19)),
            }],
            sending_nodes: 1,
            limit_bytes_per_sec: Some(1 << 20),
            down_out_interval_s: Some(15.0),
            model_s: Some(18.0),
            time_vs_model: Some(46.0 / 18.0),
            ..RecoveryFigures::default()
        };
        let text = lines(&f);
        assert!(
            text.contains("node 2 marked out from 31.0 s (16.0 s after"),
            "{text}"
        );
        assert!(text.contains("node 1 sent 3.0 MiB at 0.5 MiB/s"), "{text}");
        assert!(
            text.contains("= 18.0 s; measured fault → redundant 46.0 s: ×2.56"),
            "{text}"
        );
        let row = table([("throttled", &f)]);
        assert!(
            row.contains("| throttled | 2 | – | 16.0 s | 30.0 s | 46.0 s |"),
            "{row}"
        );

        let unfinished = RecoveryFigures {
            redundant_s: None,
            recovery_s: None,
            ..f
        };
        assert!(lines(&unfinished).contains("**not** fully redundant"));
        assert!(table([("x", &unfinished)]).contains("not by the end"));
        let held = RecoveryFigures::default();
        assert!(lines(&held).contains("no node marked out"));
        let back = RecoveryFigures {
            redundant_s: Some(41.0),
            fault_to_redundant_s: Some(21.0),
            ..RecoveryFigures::default()
        };
        assert!(lines(&back).contains("again at 41.0 s, 21.0 s after the fault"));
        assert!(table([("calm", &held)]).contains("| calm | none |"));
        let guarded = RecoveryFigures {
            held: std::collections::BTreeMap::from([(2, "zone".to_owned())]),
            ..RecoveryFigures::default()
        };
        assert!(lines(&guarded).contains("held by a guard instead: node 2 (zone)"));
        assert!(table([("guarded", &guarded)]).contains("| guarded | none; held: node 2 (zone) |"));
    }
}
