//! `levee-bench sim SCENARIO.toml [--out DIR]` (also `levee sim …`):
//! recovery at a scale no machine here can host, by simulation. The
//! node's own failure detector, replica checker, placement, map `apply`,
//! send budgets and source choice decide everything; the simulator only
//! delivers simulated time, heartbeats (or their absence) and bytes, and
//! writes down what happened. Seeded: the same file gives the same run.
//!
//! | file | what |
//! |---|---|
//! | `scenario.rs` | the TOML schema (`benches/sim/*.toml`), defaults, validation |
//! | `topology.rs` | nodes in zones and racks, their rates and loads, partition sizes, the starting map |
//! | `engine/` | the loop: heartbeats, the leader's tick (detector, checker, `apply`), copies (`mod.rs`); the scenario's events (`events.rs`); the check that one-left partitions go first (`priority.rs`) |
//! | `flows.rs` | the copies as flows paced by the senders' real budgets and the nodes' spare bandwidth |
//! | `record.rs` | per-second rows, events, node totals, decision costs |
//! | `model.rs` | pure: the time a throttled recovery should take |
//! | `figures.rs` | pure: bounds, peaks, times against the model, `[[targets]]` |
//! | `report.rs` | result.json, summary.md, CSVs |
//! | `plot.rs` | sim.png |

mod engine;
mod figures;
mod flows;
mod model;
mod plot;
mod record;
mod report;
mod scenario;
#[cfg(test)]
mod tests;
mod topology;

use std::path::PathBuf;

use anyhow::Context;

use self::engine::Engine;
use self::figures::SimFigures;
use self::report::SimResult;
use self::scenario::SimScenario;
use crate::report::Machine;

/// Flags of `levee sim`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The scenario file (see benches/sim/).
    scenario: PathBuf,
    /// Where to write the results; default bench-results/sim-<scenario>-<UTC
    /// time>.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Simulates a scenario and writes its reports; the figures and targets
/// go to stdout.
pub fn run(args: Args) -> anyhow::Result<()> {
    let scenario = SimScenario::load(&args.scenario)?;
    let started_at = crate::report::utc_now();
    let out = args.out.clone().unwrap_or_else(|| {
        let stamp: String = started_at
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect();
        PathBuf::from("bench-results").join(format!("sim-{}-{stamp}", scenario.name))
    });
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    eprintln!(
        "levee sim: {} ({} nodes, {} partitions, {} s simulated) → {}",
        scenario.name,
        scenario.nodes(),
        scenario.cluster.partitions,
        scenario.duration_s,
        out.display()
    );
    let engine = Engine::new(&scenario)?;
    let sizes_total = engine.stored_bytes();
    let run = engine.run();
    let settings = scenario.recovery_settings()?;
    let figures = SimFigures::of(&scenario, &settings, &run, sizes_total);
    let targets = figures::evaluate(&scenario.targets, &figures);
    let result = SimResult {
        format: 1,
        machine: Machine::describe(),
        started_at,
        figures,
        targets,
        events: run.events.clone(),
        seconds: run.rows.clone(),
        nodes: run.nodes.clone(),
        scenario,
    };
    report::write(&out, &result, &run)?;
    plot::draw(
        &out.join("sim.png"),
        &format!(
            "levee sim: {} — {} nodes, {} partitions (simulated)",
            result.scenario.name, result.figures.nodes, result.figures.partitions
        ),
        &result.seconds,
        &result.events,
        &result.figures,
    )?;
    print!("{}", report::figures_lines(&result.figures));
    println!();
    print!("{}", crate::targets::table(&result.targets));
    println!(
        "levee sim: wrote {}/{{result.json, summary.md, sim.png, seconds.csv, nodes.csv, node_seconds.csv}}",
        out.display()
    );
    Ok(())
}
