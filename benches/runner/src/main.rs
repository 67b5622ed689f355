//! `levee-bench`: runs a benchmark scenario (a cluster, an open-loop load,
//! faults) and writes result.json, summary.md and timeline.png; `levee-bench
//! sim` simulates recovery at scale; `levee-bench replot DIR` draws a
//! leak soak's resources.png again. `levee bench …` and `levee sim …`
//! forward here.

use std::process::ExitCode;

use clap::Parser;

/// Run a benchmark scenario and write its reports (BENCHMARKS.md).
#[derive(Debug, Parser)]
#[command(
    name = "levee-bench",
    version,
    about,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Sub>,
    #[command(flatten)]
    args: Option<levee_bench::Args>,
}

#[derive(Debug, clap::Subcommand)]
enum Sub {
    /// Simulate recovery at scale (benches/sim/): the node's own detector,
    /// checker, placement and budgets on simulated time; writes
    /// result.json, summary.md and sim.png.
    Sim(levee_bench::sim::Args),
    /// Draw a leak soak's resources.png again from its result.json (with
    /// this build's plotting; nothing is run).
    Replot(levee_bench::replot::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The simulation is one thread and needs no runtime.
    let args = match (cli.command, cli.args) {
        (Some(Sub::Sim(args)), _) => {
            return match levee_bench::sim::run(args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("levee sim: {e:#}");
                    ExitCode::from(1)
                }
            };
        }
        (Some(Sub::Replot(args)), _) => {
            return match levee_bench::replot::run(&args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("levee bench replot: {e:#}");
                    ExitCode::from(1)
                }
            };
        }
        (None, Some(args)) => args,
        (None, None) => {
            eprintln!("levee-bench: give a scenario file, or `sim SCENARIO.toml` (see --help)");
            return ExitCode::from(2);
        }
    };
    // The load generator needs every core.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("levee-bench: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(levee_bench::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("levee-bench: {e:#}");
            ExitCode::from(1)
        }
    }
}
