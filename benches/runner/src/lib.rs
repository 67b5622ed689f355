//! levee-bench, the scenario runner (`levee-bench SCENARIO.toml [--out
//! DIR]`, also reached as `levee bench …`): runs a scenario — a cluster,
//! an open-loop workload, a fault schedule — and writes `result.json`,
//! `summary.md` and `timeline.png`; with `[[variants]]`, once per variant
//! and a comparison (`comparison.png`).
//!
//! | file | what |
//! |---|---|
//! | `scenario.rs` | the TOML schema, defaults and validation |
//! | `variants.rs` | `[[variants]]`, and the load generator's client settings (retry policies) |
//! | `schedule.rs` | pure: due times (rate, ramp, steps), op mix, keys (uniform, zipfian), sizes |
//! | `load.rs` | preload, peak calibration, the open-loop generator, the client-counter sampler |
//! | `sampler.rs` | the status sampler: node states, under-replicated partitions, moves, recovery bytes |
//! | `timeline/` | pure: per-second buckets, HDR histograms, error kinds and messages, client counters |
//! | `phases/` | pure: before / during / after fault, recovering, or the steps; ratios to the baseline |
//! | `recovery/` | pure: out and redundant events, recovery times, bytes, rates, the model |
//! | `prometheus.rs` | pure: the nodes' `/metrics` text, histogram quantiles |
//! | `server_figures.rs` | the nodes' metrics, terms and map before and after a run (metrics also at the first fault) |
//! | `node_figures.rs` | pure: each node's share of the client operations and its foreground p99, before and after the first fault |
//! | `cluster.rs` | local processes or endpoints; fault actions and events |
//! | `fault_plan.rs` | pure: the faults as timed steps, a `slow` fault's SIGSTOP/SIGCONT duty cycle |
//! | `fault_run.rs` | the fault task: the steps at their times, events, metrics at the first fault |
//! | `restarts.rs` | a restarted node's startup phases, restart → first served, p99 after it rejoins |
//! | `resources/` | the leak soak: each node's RSS, fds, tasks, connections, hint bytes every second; pure flatness figures and their table; `replot` (resources.png again from result.json) |
//! | `cpus.rs` | the nodes on some CPUs, the load generator on others |
//! | `targets.rs` | pure: the scenario's `[[targets]]`, met or missed |
//! | `report.rs` | result.json, summary.md, the machine description |
//! | `compare.rs` | the variants side by side: result.json, summary.md |
//! | `plot.rs` | timeline.png |
//! | `plot_compare.rs` | comparison.png |
//! | `plot_recovery.rs` | the recovery panel of both |
//! | `plot_resources.rs` | resources.png: the leak soak's series, a line per node |
//! | `sim/` | `levee-bench sim`: recovery at 1,000 nodes by simulation (its own table) |

mod cluster;
mod compare;
mod cpus;
mod docker;
mod fault_plan;
mod fault_run;
mod load;
mod node_figures;
mod phases;
mod plot;
mod plot_compare;
mod plot_recovery;
mod plot_resources;
mod prometheus;
mod recovery;
mod report;
mod resources;
mod restarts;
mod sampler;
mod scenario;
mod schedule;
mod server_figures;
pub mod sim;
mod targets;

pub use resources::replot;
mod timeline;
mod variants;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::time::Instant;

use self::cluster::{Event, Events, Target};
use self::report::{BenchResult, Machine, PeakUsed, Totals};
use self::scenario::{Peak, Scenario};

/// Pause between the preload (or the calibration) and the measured run,
/// so their flushes and hint replays do not count against the baseline.
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
/// With variants, the scenario runs once per variant (reports in
/// `OUT/<variant>/`) and the comparison goes to `OUT/`.
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
    eprintln!("levee bench: {} → {}", scenario.name, out.display());
    if scenario.variants.is_empty() {
        let result = run_one(&scenario, None, &out, &args, &started_at, None).await?;
        println!("{}", report::phases_table(&result.phases));
        for r in &result.restarts {
            println!("{}", restarts::line(r));
        }
        if let Some(r) = &result.resources {
            print!("{}", resources::section(r, &scenario.targets));
        }
        print!("{}", report::targets_section(&result));
        let plots = if result.resources.is_some() {
            "timeline.png, resources.png"
        } else {
            "timeline.png"
        };
        println!(
            "levee bench: wrote {}/{{result.json, summary.md, {plots}}}",
            out.display()
        );
        return Ok(());
    }

    let mut results = Vec::new();
    // Measured on the first variant's cluster, then given to the others,
    // so every variant is offered the same absolute load.
    let mut peak: Option<PeakUsed> = scenario.fixed_peak().map(|ops_per_s| PeakUsed {
        ops_per_s,
        source: "given in the scenario".to_owned(),
    });
    for variant in &scenario.variants {
        eprintln!("levee bench: variant {}", variant.name);
        let s = scenario.for_variant(variant);
        let dir = out.join(&variant.name);
        let result = run_one(
            &s,
            Some(&variant.name),
            &dir,
            &args,
            &started_at,
            peak.clone(),
        )
        .await?;
        println!("## {}\n", variant.name);
        println!("{}", report::phases_table(&result.phases));
        if peak.is_none() {
            peak = result.peak.clone();
        }
        results.push(result);
    }
    let comparison = compare::Comparison::of(&scenario, &started_at, peak, results);
    compare::write(&out, &comparison)?;
    plot_compare::draw(
        &out.join("comparison.png"),
        &format!(
            "levee bench: {} ({})",
            scenario.name,
            comparison.machine.line()
        ),
        &comparison,
    )?;
    println!("{}", compare::tables(&comparison));
    println!(
        "levee bench: wrote {}/{{result.json, summary.md, comparison.png}} and one directory per variant",
        out.display()
    );
    Ok(())
}

/// One run of a scenario on a fresh cluster, its reports written in
/// `out`. `peak`: the peak to use instead of measuring it.
async fn run_one(
    scenario: &Scenario,
    variant: Option<&str>,
    out: &Path,
    args: &Args,
    started_at: &str,
    peak: Option<PeakUsed>,
) -> anyhow::Result<BenchResult> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let cluster_dir = out.join("cluster");
    if scenario.is_local() {
        eprintln!(
            "levee bench: starting {} local nodes (logs in {})",
            scenario.cluster.nodes.unwrap_or(0),
            cluster_dir.display()
        );
    }
    if let Some(list) = &scenario.cluster.cpus {
        cpus::move_self(list)?;
    }
    let mut target = Target::start(scenario, &cluster_dir).await?;
    if let Some(list) = &scenario.workload.cpus {
        // The nodes keep the CPUs they started on.
        cpus::move_self(list)?;
    }

    // Ctrl-C ends the run with an error instead of ending the process at
    // once, so the node processes are killed when their handles drop
    // rather than left running.
    let outcome = tokio::select! {
        outcome = measure(scenario, &mut target, started_at, peak, &cluster_dir) => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    for problem in target.stop().await {
        eprintln!("levee bench: {problem}");
    }
    if scenario.is_local() && !args.keep_data {
        remove_node_data(&cluster_dir, scenario.cluster.nodes.unwrap_or(0));
    }
    let mut result = outcome?;
    result.variant = variant.map(str::to_owned);

    report::write(out, &result)?;
    let title = match variant {
        Some(v) => format!("{} / {v}", scenario.name),
        None => scenario.name.clone(),
    };
    plot::draw(
        &out.join("timeline.png"),
        &format!("levee bench: {title} ({})", result.machine.line()),
        &result.timeline,
        &result.events,
    )?;
    if let Some(r) = &result.resources {
        plot_resources::draw(
            &out.join("resources.png"),
            &plot_resources::title(&title, &result.machine),
            r,
            &result.events,
        )?;
    }
    Ok(result)
}

/// Preload, calibration, then the measured run with its faults; the
/// result.
async fn measure(
    scenario: &Scenario,
    target: &mut Target,
    started_at: &str,
    peak: Option<PeakUsed>,
    cluster_dir: &Path,
) -> anyhow::Result<BenchResult> {
    let endpoints = target.endpoints();
    let workload = &scenario.workload;
    let transport = target.transport();
    let clients = load::clients(&endpoints, &transport, workload);
    if scenario.preload.keys > 0 {
        eprintln!("levee bench: preloading {} keys", scenario.preload.keys);
        let writers = load::preload_clients(&endpoints, &transport, workload);
        load::preload(&writers, &scenario.preload, workload.seed).await?;
        tokio::time::sleep(SETTLE).await;
    }
    let peak = match (peak, workload.peak) {
        (Some(p), _) => Some(p),
        (None, Some(Peak::Calibrate(c))) => {
            eprintln!(
                "levee bench: measuring the peak ({} s closed loop, {} in flight)",
                c.calibrate_s, c.concurrency
            );
            let ops_per_s = load::calibrate(&clients, workload, &c).await?;
            eprintln!("levee bench: peak {ops_per_s:.0} ops/s");
            tokio::time::sleep(SETTLE).await;
            Some(PeakUsed {
                ops_per_s,
                source: format!(
                    "measured: {} s closed loop, {} requests in flight",
                    c.calibrate_s, c.concurrency
                ),
            })
        }
        (None, _) => scenario.fixed_peak().map(|ops_per_s| PeakUsed {
            ops_per_s,
            source: "given in the scenario".to_owned(),
        }),
    };
    let peak_rate = peak.as_ref().map(|p| p.ops_per_s);
    let profile = scenario.profile(peak_rate);
    eprintln!(
        "levee bench: running {} s open loop at {profile}",
        workload.duration_s
    );
    let admin = target.admin_endpoints();
    let before = server_figures::snapshot(&admin, &endpoints, &transport).await;

    let start = Instant::now();
    let events: Events = Default::default();
    // The fault task borrows nothing: it owns the target for the run and
    // hands it back, so the processes are stopped in one place after.
    let placeholder = Target::Remote(Vec::new(), levee_node::tls::Transport::Plain);
    let owned = std::mem::replace(target, placeholder);
    let restarts: restarts::Restarts = Default::default();
    // The end of the load ends the faults' duty cycles; if this function
    // is cut short instead (an error, Ctrl-C), the sender drops with it,
    // which tells the fault task the same.
    let (run_over, over) = tokio::sync::oneshot::channel();
    // Beside the load and the faults, so a node down is a gap in its
    // series at the second it was down.
    let sampled = scenario.resources.map(|config| {
        let task = resources::sample(admin.clone(), transport.clone(), start, workload.duration_s);
        (config, tokio::spawn(task))
    });
    let faults = tokio::spawn(fault_run::run_faults(
        owned,
        scenario.faults.clone(),
        (start, workload.duration_s),
        over,
        events.clone(),
        restarts.clone(),
    ));
    let timeline = load::run(
        clients,
        endpoints.clone(),
        transport.clone(),
        workload,
        profile,
        start,
    )
    .await;
    let _ = run_over.send(());
    let at_fault = match faults.await {
        Ok(done) => {
            *target = done.target;
            for w in done.watchers {
                let _ = w.await;
            }
            done.at_first_fault
        }
        Err(e) => bail!("the fault task failed: {e}"),
    };
    let samples = match sampled {
        Some((config, task)) => match task.await {
            Ok(nodes) => Some((config, nodes)),
            Err(e) => bail!("the resource sampler failed: {e}"),
        },
        None => None,
    };
    let after = server_figures::snapshot(&admin, &endpoints, &transport).await;
    server_figures::keep(cluster_dir, &before, "metrics-before.txt");
    if let Some(at) = &at_fault {
        server_figures::keep(cluster_dir, at, "metrics-at-fault.txt");
    }
    server_figures::keep(cluster_dir, &after, "metrics-after.txt");

    let rows = timeline.rows();
    let numbers = server_figures::node_numbers(&before, &endpoints);
    let mut events: Vec<Event> = events.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let derived = recovery::derive_events(&rows, &events, &numbers);
    events.extend(derived);
    events.sort_by(|a, b| a.t_s.total_cmp(&b.t_s));
    let spans = if scenario.phases_by_fault() {
        let fault_times: Vec<f64> = events
            .iter()
            .filter(|e| e.kind == "fault")
            .map(|e| e.t_s)
            .collect();
        let spans = phases::spans(workload.duration_s, workload.warmup_s, &fault_times);
        match recovery::window(&events) {
            Some((out, redundant)) => phases::with_recovery(spans, out, redundant),
            None => spans,
        }
    } else {
        phases::step_spans(
            &workload.steps,
            workload.step_s.unwrap_or(1),
            workload.warmup_s,
        )
    };
    let phases = phases::summarise(timeline.buckets(), &spans, peak_rate);
    let totals = Totals::of(&rows);
    let recovery = recovery::RecoveryFigures::of(&rows, &events, &phases, &totals, &numbers);
    let restarts = restarts.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let restarts = restarts::with_rejoin_p99(restarts, timeline.buckets(), &phases);
    let resources = samples.map(|(config, nodes)| {
        let restarted: Vec<(u8, f64)> = events
            .iter()
            .filter(|e| e.kind == "fault" && e.action == Some(scenario::FaultAction::Restart))
            .map(|e| (e.node, e.t_s))
            .collect();
        resources::Resources {
            config,
            flatness: resources::flatness::of(&nodes, &restarted, config),
            nodes,
        }
    });
    Ok(BenchResult {
        format: 1,
        scenario: scenario.clone(),
        machine: Machine::describe(),
        started_at: started_at.to_owned(),
        totals,
        timeline: rows,
        events,
        phases,
        variant: None,
        peak,
        server: Some(
            server_figures::figures(&before, at_fault.as_ref(), &after).renumber(&numbers),
        ),
        recovery,
        restarts,
        error_messages: timeline.messages(),
        resources,
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
