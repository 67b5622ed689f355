//! `levee-bench`: runs a benchmark scenario (a cluster, an open-loop load,
//! faults) and writes result.json, summary.md and timeline.png. `levee
//! bench …` forwards here.

use std::process::ExitCode;

use clap::Parser;

/// Run a benchmark scenario and write its reports (BENCHMARKS.md).
#[derive(Debug, Parser)]
#[command(name = "levee-bench", version, about)]
struct Cli {
    #[command(flatten)]
    args: levee_bench::Args,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
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
    match runtime.block_on(levee_bench::run(cli.args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("levee-bench: {e:#}");
            ExitCode::from(1)
        }
    }
}
