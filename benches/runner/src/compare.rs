//! The variants of a scenario side by side: `result.json` (every
//! variant's phases and server figures, the peak, the targets) and
//! `summary.md` (the same as tables) in the run's directory; each
//! variant's own reports are in its subdirectory.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;

use super::cluster::Event;
use super::node_figures::{self, NodeFigures};
use super::phases::PhaseSummary;
use super::recovery::{self, RecoveryFigures};
use super::report::{self, BenchResult, Machine, PeakUsed, Totals};
use super::scenario::Scenario;
use super::server_figures::ServerFigures;
use super::targets::{self, Verdict};
use super::timeline::{ClientCounts, SecondRow};

/// Every variant of a run.
#[derive(Debug, Serialize)]
pub struct Comparison {
    /// Format version of this file.
    pub format: u32,
    /// The scenario as written (defaults filled in, variants listed).
    pub scenario: Scenario,
    /// Where it ran.
    pub machine: Machine,
    /// When the first variant started (UTC).
    pub started_at: String,
    /// The peak every variant's step load multiplied.
    pub peak: Option<PeakUsed>,
    /// One per variant, in the order they ran.
    pub variants: Vec<VariantResult>,
    /// The scenario's targets, checked.
    pub targets: Vec<Verdict>,
}

/// One variant's figures.
#[derive(Debug, Serialize)]
pub struct VariantResult {
    /// Its name (and subdirectory).
    pub name: String,
    /// What differs.
    pub description: String,
    /// Totals over its run.
    pub totals: Totals,
    /// What its clients sent over the run.
    pub client: ClientCounts,
    /// Its phases.
    pub phases: Vec<PhaseSummary>,
    /// What its nodes said.
    pub server: Option<ServerFigures>,
    /// How it recovered from the faults.
    pub recovery: Option<RecoveryFigures>,
    /// Its seconds, for the plot (in its own result.json).
    #[serde(skip)]
    pub timeline: Vec<SecondRow>,
    /// Its events, for the plot.
    #[serde(skip)]
    pub events: Vec<Event>,
}

impl Comparison {
    /// The comparison of the runs of `scenario`'s variants.
    pub fn of(
        scenario: &Scenario,
        started_at: &str,
        peak: Option<PeakUsed>,
        results: Vec<BenchResult>,
    ) -> Self {
        let verdicts = targets::evaluate(&scenario.targets, &results);
        let machine = results
            .first()
            .map_or_else(Machine::describe, |r| r.machine.clone());
        let variants = results
            .into_iter()
            .map(|r| {
                let name = r.variant.clone().unwrap_or_default();
                let description = scenario
                    .variants
                    .iter()
                    .find(|v| v.name == name)
                    .map(|v| v.description.clone())
                    .unwrap_or_default();
                let mut client = ClientCounts::default();
                for row in &r.timeline {
                    client.add(&row.client);
                }
                VariantResult {
                    name,
                    description,
                    totals: r.totals,
                    client,
                    phases: r.phases,
                    server: r.server,
                    recovery: r.recovery,
                    timeline: r.timeline,
                    events: r.events,
                }
            })
            .collect();
        Self {
            format: 1,
            scenario: scenario.clone(),
            machine,
            started_at: started_at.to_owned(),
            peak,
            variants,
            targets: verdicts,
        }
    }
}

/// Writes `result.json` and `summary.md` into `dir`.
pub fn write(dir: &Path, c: &Comparison) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(c).context("cannot encode result.json")?;
    let path = dir.join("result.json");
    std::fs::write(&path, json).with_context(|| format!("cannot write {}", path.display()))?;
    let path = dir.join("summary.md");
    std::fs::write(&path, summary(c)).with_context(|| format!("cannot write {}", path.display()))
}

fn summary(c: &Comparison) -> String {
    let s = &c.scenario;
    let mut out = String::new();
    let _ = writeln!(out, "# levee bench: {}\n", s.name);
    if !s.description.is_empty() {
        let _ = writeln!(out, "{}\n", s.description);
    }
    let _ = writeln!(
        out,
        "- started {}; each variant on a fresh cluster, one after another",
        c.started_at
    );
    let _ = writeln!(
        out,
        "- load: {}",
        s.profile(c.peak.as_ref().map(|p| p.ops_per_s))
    );
    if let Some(p) = &c.peak {
        let _ = writeln!(out, "- peak: {:.0} ops/s ({})", p.ops_per_s, p.source);
    }
    let _ = writeln!(out, "- machine: {}\n", c.machine.line());
    out.push_str(&tables(c));
    let _ = writeln!(out, "\n## Each variant\n");
    for v in &c.variants {
        let _ = writeln!(
            out,
            "- [{0}]({0}/summary.md): {1}",
            v.name,
            if v.description.is_empty() {
                "–"
            } else {
                &v.description
            }
        );
    }
    let _ = writeln!(
        out,
        "\nLatency is of successful requests, from when each was due (open loop). Ratios (×) are to the first phase of the same variant."
    );
    out
}

/// The comparison tables: the variants, their phases, the targets.
pub fn tables(c: &Comparison) -> String {
    let mut out = String::from("## Variants\n\n");
    out.push_str(
        "| variant | offered | ok | refused | of which in the client | failed | dropped | attempts/request | refusal p99 µs | refusals ≤ 50 µs | shed | deadline drops | elections | nodes not up |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for v in &c.variants {
        let refused: u64 = v
            .timeline
            .iter()
            .map(|r| r.errors.get("overloaded").copied().unwrap_or(0))
            .sum();
        let server = v.server.clone().unwrap_or_default();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            v.name,
            v.totals.offered,
            v.totals.ok,
            refused,
            v.client.refused_in_client,
            v.totals.errors.saturating_sub(refused),
            v.totals.dropped,
            report::num(v.client.attempts_per_request(), 2),
            report::num(server.refusal_p99_us, 1),
            report::percent(server.refusals_within_50us),
            server.shed,
            server.deadline_dropped,
            server.elections.map_or("?".to_owned(), |e| e.to_string()),
            server
                .nodes_not_up
                .map_or("?".to_owned(), |m| m.len().to_string()),
        );
    }
    let _ = writeln!(
        out,
        "\nWhole runs, warm-up included. Refused: answered `Overloaded` after the client's failover, or refused by the client itself without sending (its throttle, or every replica held off: the next column); failed: any other error.\n\n## Phases\n"
    );
    out.push_str(&phase_rows(c));
    let runs: Vec<(Option<&str>, &[PhaseSummary])> = c
        .variants
        .iter()
        .map(|v| (Some(v.name.as_str()), v.phases.as_slice()))
        .collect();
    out.push_str(&report::by_op_section(&runs));
    let nodes: Vec<(Option<&str>, &[NodeFigures])> = c
        .variants
        .iter()
        .filter_map(|v| Some((Some(v.name.as_str()), v.server.as_ref()?.nodes.as_slice())))
        .filter(|(_, n)| !n.is_empty())
        .collect();
    if !nodes.is_empty() {
        let _ = writeln!(out, "\n## Nodes\n");
        out.push_str(&node_figures::table(&nodes));
    }
    let recovered: Vec<(&str, &RecoveryFigures)> = c
        .variants
        .iter()
        .filter_map(|v| Some((v.name.as_str(), v.recovery.as_ref()?)))
        .collect();
    if !recovered.is_empty() {
        let _ = writeln!(out, "\n## Recovery\n");
        out.push_str(&recovery::table(recovered));
        let _ = writeln!(
            out,
            "\nTimes from the status samples (a quarter of a second apart): the first node down, the first out, full redundancy (no under-replicated partition, no move in flight). Copied: bytes the targets applied; node rate: the highest per-node average send rate from out to redundant, over `recovery.bytes_per_sec`; model: `down_out_interval + copied / (bytes_per_sec × senders)`, senders being the nodes that sent more than 0 bytes; failed ops: requests of the whole run that did not succeed."
        );
    }
    if !c.targets.is_empty() {
        let _ = writeln!(out, "\n## Targets\n");
        out.push_str(&targets::table(&c.targets));
    }
    out
}

/// One row per phase and variant, the variants of a phase together.
fn phase_rows(c: &Comparison) -> String {
    let mut out = String::from(
        "| phase | variant | seconds | offered/s | goodput/s | goodput / peak | p50 ms | p99 ms | p99 / first phase | refused | failed | dropped | attempts/request |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let phases = c.variants.first().map_or(0, |v| v.phases.len());
    for i in 0..phases {
        for v in &c.variants {
            let Some(p) = v.phases.get(i) else { continue };
            let _ = writeln!(
                out,
                "| {} | {} | {}–{} | {:.0} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} |",
                p.label,
                v.name,
                p.from_s,
                p.to_s,
                p.offered_per_s,
                p.goodput_per_s,
                report::percent(p.goodput_vs_peak),
                report::num(p.p50_ms, 2),
                report::num(p.p99_ms, 2),
                p.vs_baseline
                    .p99
                    .map_or("–".to_owned(), |r| format!("×{r:.2}")),
                p.refused(),
                p.failed(),
                p.dropped,
                report::num(p.attempts_per_request, 2),
            );
        }
    }
    out
}
