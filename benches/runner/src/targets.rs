//! What a scenario promises, checked on every run: `[[targets]]` name a
//! figure (of a phase, or of the nodes), a variant, and a bound; the
//! reports say for each whether this run met it. Written in the scenario
//! so a target cannot be quietly loosened after a run missed it. Pure.

use std::collections::BTreeSet;

use anyhow::bail;
use serde::{Deserialize, Serialize};

use super::phases::{PhaseKind, PhaseSummary};
use super::recovery::{self, RecoveryFigures};
use super::report::BenchResult;
use super::resources::{Series, flatness};
use super::restarts;
use super::scenario::Scenario;

/// One target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    /// The variant it is about; default: each variant (or the single run).
    pub variant: Option<String>,
    /// The phase, by its label in the tables (`3× peak`, `during fault`);
    /// only for figures of a phase.
    pub phase: Option<String>,
    /// The figure.
    pub metric: Metric,
    /// The figure must be at least this.
    pub min: Option<f64>,
    /// The figure must be at most this.
    pub max: Option<f64>,
}

/// A figure a target can bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// A phase's goodput over the peak (step loads).
    GoodputVsPeak,
    /// A phase's p99 over the first phase's (the baseline, or the lowest
    /// step).
    P99VsBaseline,
    /// A phase's client attempts per logical request.
    AttemptsPerRequest,
    /// A phase's successful share of the offered requests.
    SuccessRatio,
    /// The nodes' refusal-time p99 over the run (µs).
    RefusalP99Us,
    /// Raft elections during the run.
    Elections,
    /// Nodes not `up` in the map at the end.
    NodesNotUp,
    /// The highest per-node average recovery send rate over the recovery
    /// (Out → redundant), over the configured `recovery.bytes_per_sec`.
    RecoveryRateVsLimit,
    /// The highest, over the nodes, of the recovery bytes a node sent over
    /// its send bucket's bound `bytes_per_sec × t + bytes_burst` (`t`: the
    /// recovery window plus the samples' second).
    RecoverySentVsBound,
    /// The same for the bytes a node received, against its ingest
    /// bucket's `bytes_per_sec × max_moves_per_node × SOURCES_PER_MOVE ×
    /// t + bytes_burst`.
    RecoveryReceivedVsBound,
    /// Time from the fault to full redundancy over the model's
    /// `down_out_interval + bytes copied / (bytes_per_sec × sending nodes)`.
    RedundancyTimeVsModel,
    /// The recovering phase's p99 over the baseline's.
    P99RecoveringVsBaseline,
    /// Requests of the run that did not succeed (failed after the client's
    /// retries, or dropped by the generator).
    FailedOps,
    /// Nodes marked Out during the run.
    NodesMarkedOut,
    /// Bytes copied for recovery during the run.
    RecoveryBytes,
    /// The slowest restart's time from spawn to first request served (s).
    RestartToFirstServedS,
    /// The worst restart's client p99 over the 10 s after the node was
    /// ready, over the baseline's.
    P99AfterRejoinVsBaseline,
    /// The share (0..1) of the client operations coordinated by the nodes
    /// the faults name, from the first fault to the end: how much load
    /// the clients still sent to a slow node.
    FaultedNodeShare,
    /// The largest ratio, over the nodes no fault names and readable at
    /// the end, of a node's own foreground p99 after the first fault over
    /// its p99 before it: whether the load a lost node left hurt the
    /// survivors.
    SurvivorP99VsBeforeMax,
    /// Nodes marked Down after the first fault that no fault named: nodes
    /// the cluster wrongly declared dead (overloaded, not gone).
    NodesMarkedDownUnfaulted,
    /// The worst node's resident memory at the end over after warm-up
    /// (`[resources]`, `resources/flatness.rs`).
    RssGrowth,
    /// The same for bytes in live heap allocations.
    HeapGrowth,
    /// The same for open file descriptors.
    OpenFdsGrowth,
    /// The same for tasks alive on the node's runtime.
    AliveTasksGrowth,
    /// The same for protocol connections holding a slot.
    OpenConnectionsGrowth,
    /// The same for bytes of hints held.
    HintBytesGrowth,
}

impl Metric {
    /// Whether the figure belongs to a phase (else to the whole run).
    fn of_phase(self) -> bool {
        matches!(
            self,
            Self::GoodputVsPeak
                | Self::P99VsBaseline
                | Self::AttemptsPerRequest
                | Self::SuccessRatio
        )
    }

    /// The figure for humans.
    fn show(self, v: f64) -> String {
        match self {
            Self::GoodputVsPeak | Self::SuccessRatio | Self::FaultedNodeShare => {
                format!("{:.1}%", v * 100.0)
            }
            Self::P99VsBaseline
            | Self::AttemptsPerRequest
            | Self::RecoveryRateVsLimit
            | Self::RecoverySentVsBound
            | Self::RecoveryReceivedVsBound
            | Self::RedundancyTimeVsModel
            | Self::P99RecoveringVsBaseline
            | Self::P99AfterRejoinVsBaseline
            | Self::SurvivorP99VsBeforeMax
            | Self::RssGrowth
            | Self::HeapGrowth
            | Self::OpenFdsGrowth
            | Self::AliveTasksGrowth
            | Self::OpenConnectionsGrowth
            | Self::HintBytesGrowth => format!("×{v:.2}"),
            Self::RestartToFirstServedS => format!("{v:.3} s"),
            Self::RefusalP99Us => format!("{v:.1} µs"),
            Self::RecoveryBytes => format!("{:.1} MiB", v / f64::from(1u32 << 20)),
            Self::Elections
            | Self::NodesNotUp
            | Self::FailedOps
            | Self::NodesMarkedOut
            | Self::NodesMarkedDownUnfaulted => format!("{v:.0}"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::GoodputVsPeak => "goodput / peak",
            Self::P99VsBaseline => "p99 / baseline p99",
            Self::AttemptsPerRequest => "attempts per request",
            Self::SuccessRatio => "success ratio",
            Self::RefusalP99Us => "refusal p99",
            Self::Elections => "Raft elections",
            Self::NodesNotUp => "nodes not up at the end",
            Self::RecoveryRateVsLimit => "recovery send rate per node / configured rate",
            Self::RecoverySentVsBound => "recovery bytes sent per node / (rate × t + burst)",
            Self::RecoveryReceivedVsBound => {
                "recovery bytes received per node / (ingest rate × t + burst)"
            }
            Self::RedundancyTimeVsModel => "time to full redundancy / model",
            Self::P99RecoveringVsBaseline => "p99 while recovering / baseline p99",
            Self::FailedOps => "failed client operations",
            Self::NodesMarkedOut => "nodes marked out",
            Self::RecoveryBytes => "bytes copied for recovery",
            Self::RestartToFirstServedS => "restart → first request served",
            Self::P99AfterRejoinVsBaseline => "p99 in the 10 s after rejoin / baseline p99",
            Self::FaultedNodeShare => "faulted nodes' share of client operations after the fault",
            Self::SurvivorP99VsBeforeMax => "worst survivor's server p99 after / before the fault",
            Self::NodesMarkedDownUnfaulted => "nodes marked down that no fault touched",
            Self::RssGrowth => "worst node's RSS at the end / after warm-up",
            Self::HeapGrowth => "worst node's heap in use at the end / after warm-up",
            Self::OpenFdsGrowth => "worst node's open fds at the end / after warm-up",
            Self::AliveTasksGrowth => "worst node's tokio tasks at the end / after warm-up",
            Self::OpenConnectionsGrowth => {
                "worst node's open connections at the end / after warm-up"
            }
            Self::HintBytesGrowth => "worst node's hint bytes at the end / after warm-up",
        }
    }

    /// The sampled series a growth figure is of.
    pub fn series(self) -> Option<Series> {
        match self {
            Self::RssGrowth => Some(Series::RssBytes),
            Self::HeapGrowth => Some(Series::HeapBytes),
            Self::OpenFdsGrowth => Some(Series::OpenFds),
            Self::AliveTasksGrowth => Some(Series::AliveTasks),
            Self::OpenConnectionsGrowth => Some(Series::OpenConnections),
            Self::HintBytesGrowth => Some(Series::HintBytes),
            _ => None,
        }
    }
}

impl TargetSpec {
    /// `goodput / peak at 3× peak ≥ 90.0%`.
    pub fn describe(&self) -> String {
        let mut name = self.metric.name().to_owned();
        if let Some(p) = &self.phase {
            name.push_str(&format!(" at {p}"));
        }
        bounded(&name, self.min, self.max, |v| self.metric.show(v))
    }

    /// The figure in a run, if the run has it.
    fn value(&self, result: &BenchResult) -> Option<f64> {
        if self.metric.of_phase() {
            let phase = result
                .phases
                .iter()
                .find(|p| Some(&p.label) == self.phase.as_ref())?;
            return phase_value(self.metric, phase);
        }
        if self.metric == Metric::FailedOps {
            return Some(result.totals.offered.saturating_sub(result.totals.ok) as f64);
        }
        match self.metric {
            Metric::RestartToFirstServedS => {
                return restarts::worst(&result.restarts, |r| r.restart_to_first_served_s);
            }
            Metric::P99AfterRejoinVsBaseline => {
                return restarts::worst(&result.restarts, |r| r.p99_after_ready_vs_baseline);
            }
            _ => {}
        }
        if let Some(series) = self.metric.series() {
            let figures = result.resources.as_ref()?;
            return flatness::worst(&figures.flatness, series);
        }
        if let Some(v) = recovery_value(self.metric, result.recovery.as_ref()) {
            return v;
        }
        if let Some(v) = node_value(self.metric, result) {
            return v;
        }
        let server = result.server.as_ref()?;
        match self.metric {
            Metric::RefusalP99Us => server.refusal_p99_us,
            Metric::Elections => server.elections.map(|e| e as f64),
            Metric::NodesNotUp => server.nodes_not_up.as_ref().map(|m| m.len() as f64),
            _ => None,
        }
    }
}

/// A figure of the recovery: `None` when the metric is not one,
/// `Some(None)` when the run has no such figure (no fault, no Out, not
/// redundant by the end).
fn recovery_value(metric: Metric, f: Option<&RecoveryFigures>) -> Option<Option<f64>> {
    let pick = |get: fn(&RecoveryFigures) -> Option<f64>| Some(f.and_then(get));
    match metric {
        Metric::RecoveryRateVsLimit => pick(|f| f.rate_vs_limit),
        Metric::RecoverySentVsBound => pick(|f| f.sent_vs_bound),
        Metric::RecoveryReceivedVsBound => pick(|f| f.received_vs_bound),
        Metric::RedundancyTimeVsModel => pick(|f| f.time_vs_model),
        Metric::P99RecoveringVsBaseline => pick(|f| f.p99_recovering_vs_baseline),
        Metric::NodesMarkedOut => pick(|f| Some(f.nodes_out.len() as f64)),
        Metric::RecoveryBytes => pick(|f| Some(f.bytes_copied as f64)),
        _ => None,
    }
}

/// A figure of the nodes against the faults: `None` when the metric is
/// not one, `Some(None)` when the run has no such figure (no fault, or a
/// node's metrics missing).
fn node_value(metric: Metric, result: &BenchResult) -> Option<Option<f64>> {
    let faulted: BTreeSet<u8> = result.scenario.faults.iter().map(|f| f.node).collect();
    let had_fault = result.events.iter().any(|e| e.kind == "fault");
    let nodes = result.server.as_ref().map_or(&[][..], |s| &s.nodes[..]);
    match metric {
        Metric::FaultedNodeShare => Some(if faulted.is_empty() {
            None
        } else {
            // One faulted node without a figure leaves the sum unknown.
            faulted
                .iter()
                .map(|f| nodes.iter().find(|n| n.node == *f)?.share_after)
                .sum::<Option<f64>>()
        }),
        Metric::SurvivorP99VsBeforeMax => Some(
            nodes
                .iter()
                .filter(|n| !faulted.contains(&n.node))
                .filter_map(|n| n.p99_after_vs_before)
                .reduce(f64::max),
        ),
        // The Down events are derived from the samples after the first
        // fault only: without one, nobody looked.
        Metric::NodesMarkedDownUnfaulted => Some(had_fault.then(|| {
            let down: BTreeSet<u8> = result
                .events
                .iter()
                .filter(|e| e.kind == recovery::DOWN && !faulted.contains(&e.node))
                .map(|e| e.node)
                .collect();
            down.len() as f64
        })),
        _ => None,
    }
}

fn phase_value(metric: Metric, p: &PhaseSummary) -> Option<f64> {
    match metric {
        Metric::GoodputVsPeak => p.goodput_vs_peak,
        Metric::P99VsBaseline => p.vs_baseline.p99,
        Metric::AttemptsPerRequest => p.attempts_per_request,
        Metric::SuccessRatio => Some(p.success_ratio),
        _ => None,
    }
}

/// A target checked against one run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    /// The variant (none for a run without variants).
    pub variant: Option<String>,
    /// The target, in words.
    pub target: String,
    /// The figure measured, if the run has it.
    pub value: Option<f64>,
    /// The figure for humans.
    pub shown: String,
    /// Met, missed, or `None` when the figure is missing (not met either).
    pub met: Option<bool>,
}

impl Verdict {
    /// The verdict on `value` against `(min, max)`, `target` being the
    /// bound in words and `show` the figure for humans. Shared by the
    /// simulator's targets (`sim/figures.rs`).
    pub fn of(
        variant: Option<String>,
        target: String,
        value: Option<f64>,
        (min, max): (Option<f64>, Option<f64>),
        show: impl Fn(f64) -> String,
    ) -> Self {
        Self {
            variant,
            target,
            value,
            shown: value.map_or("no figure".to_owned(), show),
            met: value.map(|v| min.is_none_or(|m| v >= m) && max.is_none_or(|m| v <= m)),
        }
    }
}

/// `name ≥ min ≤ max`, each bound shown in the figure's unit.
pub fn bounded(
    name: &str,
    min: Option<f64>,
    max: Option<f64>,
    show: impl Fn(f64) -> String,
) -> String {
    let mut out = name.to_owned();
    if let Some(min) = min {
        out.push_str(&format!(" ≥ {}", show(min)));
    }
    if let Some(max) = max {
        out.push_str(&format!(" ≤ {}", show(max)));
    }
    out
}

/// Checks every target against the runs it is about.
pub fn evaluate(targets: &[TargetSpec], results: &[BenchResult]) -> Vec<Verdict> {
    let mut out = Vec::new();
    for t in targets {
        for r in results {
            if t.variant.is_some() && t.variant != r.variant {
                continue;
            }
            out.push(Verdict::of(
                r.variant.clone(),
                t.describe(),
                t.value(r),
                (t.min, t.max),
                |v| t.metric.show(v),
            ));
        }
    }
    out
}

/// The verdicts as a markdown table.
pub fn table(verdicts: &[Verdict]) -> String {
    let mut out = String::from("| variant | target | measured | |\n|---|---|---|---|\n");
    for v in verdicts {
        out.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            v.variant.as_deref().unwrap_or("–"),
            v.target,
            v.shown,
            match v.met {
                Some(true) => "met",
                Some(false) => "**missed**",
                None => "**no figure**",
            }
        ));
    }
    out
}

impl Scenario {
    /// The labels the phases of a run of this scenario will have.
    fn phase_labels(&self) -> Vec<String> {
        if self.phases_by_fault() {
            [
                PhaseKind::Steady,
                PhaseKind::BeforeFault,
                PhaseKind::DuringFault,
                PhaseKind::AfterFault,
                PhaseKind::Recovering,
                PhaseKind::Recovered,
            ]
            .iter()
            .map(|k| k.label().to_owned())
            .collect()
        } else {
            self.workload
                .steps
                .iter()
                .map(|m| format!("{m}× peak"))
                .collect()
        }
    }

    /// Each target names a figure, an existing variant, a phase the run
    /// will have (only for phase figures) and a bound.
    pub(super) fn validate_targets(&self) -> anyhow::Result<()> {
        let labels = self.phase_labels();
        for (i, t) in self.targets.iter().enumerate() {
            if t.min.is_none() && t.max.is_none() {
                bail!("targets[{i}]: give min or max");
            }
            if let Some(v) = &t.variant
                && !self.variants.iter().any(|x| &x.name == v)
            {
                bail!("targets[{i}]: there is no variant {v:?}");
            }
            match (&t.phase, t.metric.of_phase()) {
                (None, true) => bail!(
                    "targets[{i}]: {} is a figure of a phase; give phase = one of {labels:?}",
                    t.metric.name()
                ),
                (Some(_), false) => bail!(
                    "targets[{i}]: {} is a figure of the whole run; leave phase out",
                    t.metric.name()
                ),
                (Some(p), true) if !labels.contains(p) => {
                    bail!("targets[{i}]: phase {p:?} is not one of {labels:?}")
                }
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
        [cluster]
        nodes = 3
        [workload]
        steps = [0.5, 3]
        step_s = 5
        peak = 100
        keys = 10
        [[variants]]
        name = "on"
        [[variants]]
        name = "off"
    "#;

    fn parse(targets: &str) -> anyhow::Result<Scenario> {
        Scenario::parse(&format!("{BASE}\n{targets}"))
    }

    #[test]
    fn targets_must_name_real_phases_variants_and_a_bound() {
        let good = "[[targets]]\nvariant = \"on\"\nphase = \"3× peak\"\nmetric = \"goodput_vs_peak\"\nmin = 0.9\n[[targets]]\nmetric = \"elections\"\nmax = 0\n";
        assert_eq!(parse(good).unwrap().targets.len(), 2);
        for bad in [
            "[[targets]]\nphase = \"3× peak\"\nmetric = \"goodput_vs_peak\"\n",
            "[[targets]]\nvariant = \"maybe\"\nmetric = \"elections\"\nmax = 0\n",
            "[[targets]]\nphase = \"2× peak\"\nmetric = \"goodput_vs_peak\"\nmin = 0.9\n",
            "[[targets]]\nmetric = \"goodput_vs_peak\"\nmin = 0.9\n",
            "[[targets]]\nphase = \"3× peak\"\nmetric = \"elections\"\nmax = 0\n",
        ] {
            assert!(parse(bad).is_err(), "accepted: {bad}");
        }
    }

    #[test]
    fn descriptions_show_the_bound_in_the_figure_s_unit() {
        let t = TargetSpec {
            variant: None,
            phase: Some("3× peak".into()),
            metric: Metric::GoodputVsPeak,
            min: Some(0.9),
            max: None,
        };
        assert_eq!(t.describe(), "goodput / peak at 3× peak ≥ 90.0%");
        let r = TargetSpec {
            phase: None,
            metric: Metric::RefusalP99Us,
            min: None,
            max: Some(50.0),
            ..t
        };
        assert_eq!(r.describe(), "refusal p99 ≤ 50.0 µs");
    }

    fn result(variant: &str, goodput: u64, elections: Option<u64>) -> BenchResult {
        use super::super::phases::{step_spans, summarise};
        use super::super::report::{Machine, Totals};
        use super::super::server_figures::ServerFigures;
        use super::super::timeline::{Outcome, Timeline};
        use std::time::Duration;
        let mut t = Timeline::new(10);
        for s in 0..10u64 {
            let ok = if s < 5 { 50 } else { goodput };
            for i in 0..ok {
                t.record(
                    Duration::from_secs(s),
                    Duration::from_millis(1 + i % 3),
                    Outcome::Ok,
                );
            }
        }
        let phases = summarise(t.buckets(), &step_spans(&[0.5, 3.0], 5, 0), Some(100.0));
        BenchResult {
            format: 1,
            scenario: parse("").unwrap(),
            machine: Machine::describe(),
            started_at: String::new(),
            totals: Totals::of(&t.rows()),
            timeline: t.rows(),
            events: Vec::new(),
            phases,
            variant: Some(variant.to_owned()),
            peak: None,
            recovery: None,
            restarts: Vec::new(),
            error_messages: Vec::new(),
            resources: None,
            server: Some(ServerFigures {
                elections,
                ..ServerFigures::default()
            }),
        }
    }

    /// Each target's figure as shown, and its verdict, for one run.
    fn shown(targets: &[TargetSpec], run: &BenchResult) -> Vec<(String, Option<bool>)> {
        evaluate(targets, std::slice::from_ref(run))
            .into_iter()
            .map(|v| (v.shown, v.met))
            .collect()
    }

    #[test]
    fn each_target_is_checked_against_the_variants_it_names() {
        let s = parse(
            "[[targets]]\nvariant = \"on\"\nphase = \"3× peak\"\nmetric = \"goodput_vs_peak\"\nmin = 0.9\n[[targets]]\nmetric = \"elections\"\nmax = 0\n",
        )
        .unwrap();
        let runs = [result("on", 95, Some(0)), result("off", 40, None)];
        let verdicts = evaluate(&s.targets, &runs);
        let got: Vec<_> = verdicts
            .iter()
            .map(|v| (v.variant.as_deref(), v.shown.as_str(), v.met))
            .collect();
        assert_eq!(
            got,
            [
                (Some("on"), "95.0%", Some(true)),
                (Some("on"), "0", Some(true)),
                (Some("off"), "no figure", None),
            ]
        );
        let missed = evaluate(&s.targets, &[result("on", 80, Some(2))]);
        assert!(missed.iter().all(|v| v.met == Some(false)), "{missed:?}");
        assert!(table(&missed).contains("**missed**"));
    }

    #[test]
    fn restart_targets_take_the_worst_restart() {
        use super::super::restarts::RestartFigures;
        let s = parse(
            "[[targets]]\nmetric = \"restart_to_first_served_s\"\nmax = 0.5\n[[targets]]\nmetric = \"p99_after_rejoin_vs_baseline\"\nmax = 1.5\n",
        )
        .unwrap();
        let mut run = result("on", 50, Some(0));
        let shown = |run: &BenchResult| shown(&s.targets, run);
        assert_eq!(shown(&run)[0], ("no figure".to_owned(), None));
        let restart = |first: f64, ratio: f64| RestartFigures {
            restart_to_first_served_s: Some(first),
            p99_after_ready_vs_baseline: Some(ratio),
            ..RestartFigures::default()
        };
        run.restarts = vec![restart(0.04, 1.1), restart(1.02, 1.2)];
        assert_eq!(
            shown(&run),
            [
                ("1.020 s".to_owned(), Some(false)),
                ("×1.20".to_owned(), Some(true)),
            ]
        );
    }

    #[test]
    fn recovery_targets_read_the_recovery_figures_and_the_totals() {
        let s = parse(
            "[[targets]]\nmetric = \"redundancy_time_vs_model\"\nmax = 1.1\n[[targets]]\nmetric = \"recovery_rate_vs_limit\"\nmax = 1.05\n[[targets]]\nmetric = \"failed_ops\"\nmax = 0\n[[targets]]\nmetric = \"nodes_marked_out\"\nmax = 0\n[[targets]]\nmetric = \"p99_recovering_vs_baseline\"\nmax = 1.25\n",
        )
        .unwrap();
        let mut run = result("on", 50, Some(0));
        run.totals.offered += 3;
        run.recovery = Some(RecoveryFigures {
            time_vs_model: Some(2.5),
            rate_vs_limit: Some(0.98),
            nodes_out: vec![2],
            ..RecoveryFigures::default()
        });
        let got: Vec<_> = evaluate(&s.targets, &[run])
            .into_iter()
            .map(|v| (v.shown, v.met))
            .collect();
        assert_eq!(
            got,
            [
                ("×2.50".to_owned(), Some(false)),
                ("×0.98".to_owned(), Some(true)),
                ("3".to_owned(), Some(false)),
                ("1".to_owned(), Some(false)),
                ("no figure".to_owned(), None),
            ]
        );
        // Without a fault there are no recovery figures, but failed ops.
        let calm = evaluate(&s.targets, &[result("on", 50, Some(0))]);
        assert_eq!(calm[2].met, Some(true));
        assert_eq!(calm[0].met, None);
    }

    #[test]
    fn node_targets_tell_faulted_nodes_from_survivors() {
        use super::super::cluster::Event;
        use super::super::node_figures::NodeFigures;
        use super::super::scenario::{Fault, FaultAction};
        let s = parse(
            "[[targets]]\nmetric = \"faulted_node_share\"\nmax = 0.1\n[[targets]]\nmetric = \"survivor_p99_vs_before_max\"\nmax = 2\n[[targets]]\nmetric = \"nodes_marked_down_unfaulted\"\nmax = 0\n",
        )
        .unwrap();
        let shown = |run: &BenchResult| shown(&s.targets, run);
        let mut run = result("on", 50, Some(0));
        let none = ("no figure".to_owned(), None);
        assert_eq!(shown(&run), [none.clone(), none.clone(), none.clone()]);

        let node = |node, share_after, ratio| NodeFigures {
            node,
            share_after,
            p99_after_vs_before: ratio,
            ..NodeFigures::default()
        };
        let event = |kind, node| Event {
            t_s: 20.0,
            kind,
            action: (kind == "fault").then_some(FaultAction::Kill),
            node,
            detail: String::new(),
        };
        run.scenario.faults = [2, 5]
            .map(|node| Fault {
                at_s: 20.0,
                action: FaultAction::Kill,
                node,
                stop_ms: None,
                period_ms: None,
                for_s: None,
            })
            .to_vec();
        run.events = vec![
            event("fault", 2),
            event("fault", 5),
            event("down", 2),
            event("down", 5),
        ];
        run.server.as_mut().unwrap().nodes = vec![
            node(1, Some(0.5), Some(1.4)),
            node(2, Some(0.02), Some(40.0)),
            node(3, Some(0.45), Some(2.5)),
            node(4, Some(0.0), None),
            node(5, Some(0.03), None),
        ];
        assert_eq!(
            shown(&run),
            [
                ("5.0%".to_owned(), Some(true)),
                ("×2.50".to_owned(), Some(false)),
                ("0".to_owned(), Some(true)),
            ]
        );
        // Node 3 marked down too (overloaded); node 5 unreadable at the
        // end, so the faulted nodes' share is unknown.
        run.events.push(event("down", 3));
        run.server.as_mut().unwrap().nodes[4].share_after = None;
        let got = shown(&run);
        assert_eq!(got[0], none);
        assert_eq!(got[2], ("1".to_owned(), Some(false)));
    }

    #[test]
    fn growth_targets_take_the_worst_node_and_a_leak_misses() {
        use super::super::resources::{NodeSamples, Resources, ResourcesConfig};
        let s = parse(
            "[[targets]]\nmetric = \"rss_growth\"\nmax = 1.1\n[[targets]]\nmetric = \"alive_tasks_growth\"\nmax = 1.1\n",
        )
        .unwrap();
        let mut run = result("on", 50, Some(0));
        let shown = |run: &BenchResult| shown(&s.targets, run);
        assert_eq!(shown(&run)[0], ("no figure".to_owned(), None));
        let config = ResourcesConfig {
            warmup_s: 10,
            window_s: 5,
        };
        // Node 1 flat; node 2's tasks grow 2 a second from 100.
        let nodes: Vec<_> = (1..=2)
            .map(|node| {
                let mut n = NodeSamples::empty(node, 40);
                for (key, values) in n.series.iter_mut() {
                    for (t, v) in values.iter_mut().enumerate() {
                        let leaks = node == 2 && *key == Series::AliveTasks.key();
                        *v = Some(if leaks { 100.0 + 2.0 * t as f64 } else { 100.0 });
                    }
                }
                n
            })
            .collect();
        run.resources = Some(Resources {
            config,
            flatness: flatness::of(&nodes, &[], config),
            nodes,
        });
        // Tasks: 174 at the end (median of 35..40) over 124 (of 10..15).
        assert_eq!(
            shown(&run),
            [
                ("×1.00".to_owned(), Some(true)),
                ("×1.40".to_owned(), Some(false)),
            ]
        );
    }
}
