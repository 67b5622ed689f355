//! `put-load`: one closed-loop put load for levee and etcd alike, so the
//! two are measured by the same program (`benches/etcd/compare.sh` starts
//! each cluster in turn and runs this against it).
//!
//! ```text
//! put-load run --system etcd --endpoints http://127.0.0.1:23790,... --out etcd.json
//! put-load run --system levee --endpoints 127.0.0.1:7470,... --out levee.json
//! put-load report --etcd etcd.json --levee levee.json --out-dir DIR
//! ```

mod closed_loop;
mod cpu;
mod report;
mod systems;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::time::Instant;

use closed_loop::Settings;
use report::{Comparison, Run};
use systems::System;

#[derive(Parser)]
#[command(about = "One closed-loop put load for levee and etcd alike")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the load against one system and write its figures as JSON.
    Run(RunArgs),
    /// Compare an etcd run with a levee run: a table on stdout,
    /// compare.md and compare.json in --out-dir.
    Report(ReportArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// Which client to use.
    #[arg(long, value_enum)]
    system: System,
    /// Every server: levee HOST:PORT, etcd http://HOST:PORT.
    #[arg(long, value_delimiter = ',', required = true)]
    endpoints: Vec<String>,
    /// Puts in flight (closed-loop workers).
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Client instances the workers share, each with its own connections
    /// to every server.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Bytes per value.
    #[arg(long, default_value_t = 256)]
    value_bytes: usize,
    /// Seconds of load before the measured window.
    #[arg(long, default_value_t = 3)]
    warmup_s: u64,
    /// Seconds measured.
    #[arg(long, default_value_t = 20)]
    duration_s: u64,
    /// What is measured, for the report (etcd --version, a git revision).
    #[arg(long, default_value = "")]
    version: String,
    /// Process ids of the servers, whose CPU time in the window is
    /// reported.
    #[arg(long, value_delimiter = ',')]
    pids: Vec<String>,
    /// Where to write the run's JSON.
    #[arg(long)]
    out: PathBuf,
}

#[derive(clap::Args)]
struct ReportArgs {
    /// The etcd run's JSON.
    #[arg(long)]
    etcd: PathBuf,
    /// The levee run's JSON.
    #[arg(long)]
    levee: PathBuf,
    /// What the machine is, for the notes.
    #[arg(long, default_value = "")]
    machine: String,
    /// Where compare.md and compare.json go.
    #[arg(long)]
    out_dir: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run(args) => run(args).await,
        Command::Report(args) => report(args),
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.clients > 0 && args.connections > 0,
        "--clients and --connections must be at least 1"
    );
    let settings = Settings {
        clients: args.clients,
        value_bytes: args.value_bytes,
        warmup: Duration::from_secs(args.warmup_s),
        duration: Duration::from_secs(args.duration_s),
    };
    let putters = systems::connect(args.system, &args.endpoints, args.connections).await?;
    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let start = Instant::now();
    let cpu = tokio::spawn(window_cpu(settings, start, args.pids.clone()));
    let outcome = closed_loop::run(putters, settings, start, run_id).await?;
    let usage = cpu.await?;

    let ms = |q: f64| outcome.latencies.value_at_quantile(q) as f64 / 1000.0;
    let duration_s = settings.duration.as_secs_f64();
    let puts = outcome.latencies.len();
    let run = Run {
        system: args.system.name().to_owned(),
        version: args.version,
        endpoints: args.endpoints,
        clients: args.clients,
        connections: args.connections,
        value_bytes: args.value_bytes,
        warmup_s: settings.warmup.as_secs_f64(),
        duration_s,
        puts,
        errors: outcome.errors,
        last_error: outcome.last_error,
        puts_per_s: puts as f64 / duration_s,
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        max_ms: outcome.latencies.max() as f64 / 1000.0,
        server_cpu_s: usage.servers,
        generator_cpu_s: usage.generator,
        other_cpu_s: usage.others,
        load_average: usage.load_average,
    };
    println!(
        "{}: {:.0} puts/s, p50 {:.2} ms, p99 {:.2} ms, {} errors{}",
        run.system,
        run.puts_per_s,
        run.p50_ms,
        run.p99_ms,
        run.errors,
        run.last_error
            .as_deref()
            .map_or(String::new(), |e| format!(" (last: {e})"))
    );
    let json = serde_json::to_string_pretty(&run)?;
    std::fs::write(&args.out, json + "\n")
        .with_context(|| format!("cannot write {}", args.out.display()))
}

/// CPU seconds over the measured window: the servers', this process's
/// and the rest of the machine's; the load average at its end.
async fn window_cpu(settings: Settings, start: Instant, pids: Vec<String>) -> Usage {
    let (from, until) = settings.window(start);
    let servers = || {
        (!pids.is_empty())
            .then(|| cpu::total_seconds(&pids))
            .flatten()
    };
    tokio::time::sleep_until(from).await;
    let before = (servers(), cpu::seconds("self"), cpu::machine_busy_seconds());
    tokio::time::sleep_until(until).await;
    let after = (servers(), cpu::seconds("self"), cpu::machine_busy_seconds());
    let delta = |before: Option<f64>, after: Option<f64>| Some(after? - before?);
    let servers = delta(before.0, after.0);
    let generator = delta(before.1, after.1);
    let machine = delta(before.2, after.2);
    Usage {
        servers,
        generator,
        others: (|| Some((machine? - servers? - generator?).max(0.0)))(),
        load_average: cpu::load_average(),
    }
}

/// What [`window_cpu`] measured.
struct Usage {
    servers: Option<f64>,
    generator: Option<f64>,
    others: Option<f64>,
    load_average: Option<f64>,
}

fn report(args: ReportArgs) -> anyhow::Result<()> {
    let etcd = report::read(&args.etcd)?;
    let levee = report::read(&args.levee)?;
    let comparison = Comparison::new(&levee, &etcd, args.machine);
    print!("{}\n{}", comparison.table(), comparison.notes());
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("cannot create {}", args.out_dir.display()))?;
    comparison.write(&args.out_dir)
}
