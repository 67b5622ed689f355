//! `levee bench SCENARIO.toml [--out DIR]`: runs a scenario — a cluster,
//! an open-loop workload, a fault schedule — and writes `result.json`,
//! `summary.md` and `timeline.png`.
//!
//! | file | what |
//! |---|---|
//! | `scenario.rs` | the TOML schema, defaults and validation |
//! | `schedule.rs` | pure: due times (rate, ramp), op mix, keys (uniform, zipfian), sizes |
//! | `load.rs` | preload, the open-loop generator, the status sampler |
//! | `timeline.rs` | pure: per-second buckets, HDR histograms, error kinds |
//! | `phases.rs` | pure: before / during / after fault, ratios to the baseline |
//! | `cluster.rs` | local processes or endpoints; fault actions and events |
//! | `report.rs` | result.json, summary.md, the machine description |
//! | `plot.rs` | timeline.png |

mod cluster;
mod load;
mod phases;
mod plot;
mod report;
mod scenario;
mod schedule;
mod timeline;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::time::Instant;

use self::cluster::{Event, Events, Target};
use self::report::{BenchResult, Machine, Totals};
use self::scenario::Scenario;
use self::schedule::RateProfile;

/// Pause between the preload and the measured run, so the preload's
/// flushes and hint replays do not count against the baseline.
const SETTLE: Duration = Duration::from_secs(1);

/// Flags of `levee bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The scenario file (see benches/scenarios/).
    scenario: PathBuf,
    /// Where to write the results; default
    /// bench-results/<scenario>-<UTC time>.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Keep the nodes' data directories (default: only their logs are
    /// kept, in OUT/cluster/).
    #[arg(long)]
    keep_data: bool,
}

/// Runs a scenario and writes its reports; the phase table goes to stdout.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let scenario = Scenario::load(&args.scenario)?;
    let started_at = report::utc_now();
    let out = args.out.clone().unwrap_or_else(|| {
        let stamp: String = started_at
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect();
        PathBuf::from("bench-results").join(format!("{}-{stamp}", scenario.name))
    });
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let cluster_dir = out.join("cluster");

    eprintln!("levee bench: {} → {}", scenario.name, out.display());
    if scenario.is_local() {
        eprintln!(
            "levee bench: starting {} local nodes (logs in {})",
            scenario.cluster.nodes.unwrap_or(0),
            cluster_dir.display()
        );
    }
    let mut target = Target::start(&scenario, &cluster_dir).await?;

    // Ctrl-C ends the run with an error instead of ending the process at
    // once, so the node processes are killed when their handles drop
    // rather than left running.
    let outcome = tokio::select! {
        outcome = measure(&scenario, &mut target, &started_at) => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    for problem in target.stop().await {
        eprintln!("levee bench: {problem}");
    }
    if scenario.is_local() && !args.keep_data {
        remove_node_data(&cluster_dir, scenario.cluster.nodes.unwrap_or(0));
    }
    let result = outcome?;

    report::write(&out, &result)?;
    plot::draw(
        &out.join("timeline.png"),
        &format!("levee bench: {} ({})", scenario.name, result.machine.line()),
        &result.timeline,
        &result.events,
    )?;
    println!("{}", report::phase_table(&result.phases));
    println!(
        "levee bench: wrote {}/{{result.json, summary.md, timeline.png}}",
        out.display()
    );
    Ok(())
}

/// Preload, then the measured run with its faults; the result.
async fn measure(
    scenario: &Scenario,
    target: &mut Target,
    started_at: &str,
) -> anyhow::Result<BenchResult> {
    let endpoints = target.endpoints();
    let workload = &scenario.workload;
    let clients = load::clients(&endpoints, workload);
    if scenario.preload.keys > 0 {
        eprintln!("levee bench: preloading {} keys", scenario.preload.keys);
        load::preload(&clients, &scenario.preload, workload.seed).await?;
        tokio::time::sleep(SETTLE).await;
    }
    let (from, to) = scenario.rates();
    let profile = RateProfile {
        from,
        to,
        duration_s: workload.duration_s as f64,
    };
    eprintln!(
        "levee bench: running {} s open loop at {}",
        workload.duration_s,
        if from == to {
            format!("{from} ops/s")
        } else {
            format!("{from} → {to} ops/s")
        }
    );

    let start = Instant::now();
    let events: Events = Default::default();
    // The fault task borrows nothing: it owns the target for the run and
    // hands it back, so the processes are stopped in one place after.
    let placeholder = Target::Remote(Vec::new());
    let owned = std::mem::replace(target, placeholder);
    let faults = tokio::spawn(cluster::run_faults(
        owned,
        scenario.faults.clone(),
        start,
        events.clone(),
    ));
    let timeline = load::run(clients, endpoints, workload, profile, start).await;
    match faults.await {
        Ok(back) => *target = back,
        Err(e) => bail!("the fault task failed: {e}"),
    }

    let mut events: Vec<Event> = events.lock().unwrap_or_else(|e| e.into_inner()).clone();
    events.sort_by(|a, b| a.t_s.total_cmp(&b.t_s));
    let fault_times: Vec<f64> = events
        .iter()
        .filter(|e| e.kind == "fault")
        .map(|e| e.t_s)
        .collect();
    let spans = phases::spans(workload.duration_s, workload.warmup_s, &fault_times);
    let phases = phases::summarise(timeline.buckets(), &spans);
    let rows = timeline.rows();
    Ok(BenchResult {
        format: 1,
        scenario: scenario.clone(),
        machine: Machine::describe(),
        started_at: started_at.to_owned(),
        totals: Totals::of(&rows),
        timeline: rows,
        events,
        phases,
    })
}

/// Removes `dir/node-i` (the data), keeping `dir/node-i.log`.
fn remove_node_data(dir: &Path, nodes: u8) {
    for i in 1..=nodes {
        let data = dir.join(format!("node-{i}"));
        if let Err(e) = std::fs::remove_dir_all(&data)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!("levee bench: cannot remove {}: {e}", data.display());
        }
    }
}
