//! Pure: the soak's figures in `summary.md`: a row per node, a cell per
//! series (after warm-up → at the end, the ratio, and met or missed
//! against the scenario's growth target for that series).

use std::fmt::Write as _;

use super::flatness::Flatness;
use super::{Resources, Series};
use crate::targets::TargetSpec;

/// The "Resources" section.
pub fn section(r: &Resources, targets: &[TargetSpec]) -> String {
    let c = r.config;
    let mut out = String::from("\n## Resources (leak soak)\n\n");
    let _ = writeln!(
        out,
        "Each node's series sampled every second from its `/metrics`. After warm-up: the median of seconds {}–{} of the node's process (from the start of the run, or from its last restart); at the end: the median of the last {} s. A cell: after warm-up → at the end, ratio, verdict against the scenario's target for the series.\n",
        c.warmup_s,
        c.warmup_s + c.window_s,
        c.window_s,
    );
    out.push_str("| node |");
    for s in Series::ALL {
        let _ = write!(out, " {} |", s.label());
    }
    out.push_str("\n|---|");
    out.push_str(&"---|".repeat(Series::ALL.len()));
    out.push('\n');
    for node in &r.nodes {
        let _ = write!(out, "| {} |", node.node);
        for s in Series::ALL {
            let cell = r
                .flatness
                .iter()
                .find(|f| f.node == node.node && f.series == s)
                .map_or("–".to_owned(), |f| cell(f, bound(targets, s)));
            let _ = write!(out, " {cell} |");
        }
        out.push('\n');
    }
    let mut notes = r
        .flatness
        .iter()
        .filter_map(|f| Some((f, f.no_figure.as_ref()?)))
        .peekable();
    if notes.peek().is_some() {
        out.push('\n');
    }
    for (f, why) in notes {
        let _ = writeln!(
            out,
            "- node {} {}: no figure, {why}",
            f.node,
            f.series.label()
        );
    }
    out
}

/// The bound of the scenario's growth target for `series`, if it has one.
fn bound(targets: &[TargetSpec], series: Series) -> Option<f64> {
    targets
        .iter()
        .filter(|t| t.metric.series() == Some(series))
        .find_map(|t| t.max)
}

/// `95.0 → 97.2 MiB ×1.02 met`.
fn cell(f: &Flatness, max: Option<f64>) -> String {
    let show = |v: Option<f64>| v.map_or("–".to_owned(), |v| f.series.show(v));
    let Some(ratio) = f.ratio else {
        return format!("{} → {} no figure", show(f.reference), show(f.final_value));
    };
    let verdict = match max {
        Some(max) if ratio <= max => " met",
        Some(_) => " **missed**",
        None => "",
    };
    format!(
        "{} → {} ×{ratio:.2}{verdict}",
        show(f.reference),
        show(f.final_value)
    )
}

#[cfg(test)]
mod tests {
    use super::super::flatness;
    use super::super::{NodeSamples, ResourcesConfig};
    use super::*;

    #[test]
    fn each_node_gets_a_row_and_a_leak_is_marked_missed() {
        let config = ResourcesConfig {
            warmup_s: 2,
            window_s: 2,
        };
        let mut leaking = NodeSamples::empty(1, 8);
        for (key, values) in leaking.series.iter_mut() {
            for (t, v) in values.iter_mut().enumerate() {
                let grows = *key == Series::OpenFds.key();
                *v = Some(if grows { 10.0 * (t + 1) as f64 } else { 64.0 });
            }
        }
        let nodes = vec![leaking, NodeSamples::empty(2, 8)];
        let r = Resources {
            config,
            flatness: flatness::of(&nodes, &[], config),
            nodes,
        };
        #[derive(serde::Deserialize)]
        struct File {
            targets: Vec<TargetSpec>,
        }
        let file: File =
            toml::from_str("[[targets]]\nmetric = \"open_fds_growth\"\nmax = 1.1\n").unwrap();
        let text = section(&r, &file.targets);
        // fds: 35 after warm-up (seconds 2–4), 75 at the end (6–8).
        assert!(text.contains("| 1 | 0.0 MiB → 0.0 MiB ×1.00 |"), "{text}");
        assert!(text.contains("35 → 75 ×2.14 **missed**"), "{text}");
        assert!(text.contains("| 64 → 64 ×1.00 |"), "{text}");
        assert!(text.contains("| 2 | – → – no figure |"), "{text}");
        assert!(
            text.contains("node 2 RSS: no figure, answered 0 of the 2 s"),
            "{text}"
        );
    }
}
