//! The fault task of a run: sleeps to each step of the fault plan
//! (`fault_plan.rs` decides the steps), acts on the target (`cluster.rs`)
//! and records what happened as events; reads every node's metrics just
//! before the first fault; watches restarted and resumed nodes until they
//! serve again.

use std::collections::BTreeSet;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::time::Instant;

use super::cluster::{Event, Events, Target, push};
use super::fault_plan::{self, Step, StepKind};
use super::restarts;
use super::scenario::{Fault, FaultAction};
use super::server_figures::{self, Snapshot};
use levee_cli::local_cluster::probe;
use levee_node::tls::Transport;

/// Time a restarted or resumed node gets to serve again before the runner
/// stops watching for it (the event is then missing from the report).
const SERVING_DEADLINE: Duration = Duration::from_secs(60);

/// Time each node gets to give its metrics at the first fault. The fault
/// waits for them, so this is tighter than the end of the run's: a node
/// that cannot answer within it is a problem of the before/after split,
/// and the fault is at most this late (its event has the real time).
const FIRST_FAULT_ASK: Duration = Duration::from_secs(1);

/// What the fault task hands back when the run is over.
pub struct FaultsDone {
    /// The cluster, to stop.
    pub target: Target,
    /// Watchers still timing a restarted node's startup.
    pub watchers: Vec<tokio::task::JoinHandle<()>>,
    /// Every node's metrics just before the first fault, if one was due.
    pub at_first_fault: Option<Snapshot>,
}

/// Applies the faults at their times (from `start`), recording each, and
/// runs the duty cycle of every `slow` fault, until the plan is done or
/// `over` fires (the measured run ended, or was dropped); a run of
/// `duration_s` ends the duty cycles that last to its end. Just before
/// the first fault, every node's metrics are read, so per-node figures
/// can be split there.
///
/// However the loop ends, no node is left stopped by a duty cycle: every
/// plan ends a cycle on SIGCONT, and a node a cycle still had stopped
/// when the run was over is continued after the loop. (If this task is
/// dropped instead, the target drops with it and its processes are
/// killed, stopped or not.)
pub async fn run_faults(
    mut target: Target,
    faults: Vec<Fault>,
    (start, duration_s): (Instant, u64),
    mut over: tokio::sync::oneshot::Receiver<()>,
    events: Events,
    restarts: restarts::Restarts,
) -> FaultsDone {
    let mut watchers = Vec::new();
    let mut at_first_fault = None;
    let mut cycles = Cycles::default();
    for step in fault_plan::plan(&faults, duration_s as f64) {
        tokio::select! {
            () = tokio::time::sleep_until(start + Duration::from_secs_f64(step.at_s)) => {}
            _ = &mut over => break,
        }
        let fault = faults[step.fault];
        if step.kind != StepKind::Start {
            let t_s = start.elapsed().as_secs_f64();
            cycles.edge(&mut target, step, &fault, (&events, t_s));
            continue;
        }
        if at_first_fault.is_none() {
            let (admin, transport) = (target.admin_endpoints(), target.transport());
            let at = server_figures::metrics_snapshot(&admin, &transport, FIRST_FAULT_ASK);
            at_first_fault = Some(at.await);
        }
        let ok = start_fault(
            &mut target,
            &fault,
            start,
            &events,
            &restarts,
            &mut watchers,
        )
        .await;
        if fault.action == FaultAction::Slow {
            cycles.started(step.fault, &fault, ok);
        }
    }
    cycles.continue_all(&mut target);
    FaultsDone {
        target,
        watchers,
        at_first_fault,
    }
}

/// The duty cycles of a run's `slow` faults.
#[derive(Default)]
struct Cycles {
    /// Nodes a cycle has stopped and not yet continued.
    stopped: BTreeSet<u8>,
    /// Slow faults (by index) whose cycle failed: their later edges are
    /// skipped.
    broken: BTreeSet<usize>,
}

impl Cycles {
    /// Slow fault `index` sent its first SIGSTOP, or failed to.
    fn started(&mut self, index: usize, fault: &Fault, ok: bool) {
        if ok {
            self.stopped.insert(fault.node);
        } else {
            self.broken.insert(index);
        }
    }

    /// Sends one later edge of a cycle; records the end of a cycle that
    /// ends before the run does, and the first failure of one.
    fn edge(
        &mut self,
        target: &mut Target,
        step: Step,
        fault: &Fault,
        (events, t_s): (&Events, f64),
    ) {
        if self.broken.contains(&step.fault) {
            return;
        }
        let stop = step.kind == StepKind::Stop;
        let signal = if stop {
            Signal::SIGSTOP
        } else {
            Signal::SIGCONT
        };
        if let Err(e) = target.signal(fault.node, signal) {
            // The node is gone (a later kill): nothing left to cycle.
            self.broken.insert(step.fault);
            self.stopped.remove(&fault.node);
            let detail = format!("slow node {}: {e:#}", fault.node);
            record(
                events,
                t_s,
                "fault_failed",
                (fault, FaultAction::Slow),
                detail,
            );
            return;
        }
        if stop {
            self.stopped.insert(fault.node);
        } else {
            self.stopped.remove(&fault.node);
        }
        if step.kind == (StepKind::End { early: true }) {
            let detail = format!("node {} no longer slowed (SIGCONT)", fault.node);
            record(events, t_s, "fault", (fault, FaultAction::Cont), detail);
        }
    }

    /// Continues every node a cycle still has stopped: the run ended
    /// before the cycle's own last SIGCONT.
    fn continue_all(self, target: &mut Target) {
        for node in self.stopped {
            if let Err(e) = target.signal(node, Signal::SIGCONT) {
                eprintln!("levee bench: cannot continue node {node} after its slow fault: {e:#}");
            }
        }
    }
}

/// Records an event of `fault`'s node at `t_s`, and says so on stderr.
fn record(
    events: &Events,
    t_s: f64,
    kind: &'static str,
    (fault, action): (&Fault, FaultAction),
    detail: String,
) {
    eprintln!("levee bench: {t_s:6.1} s  {detail}");
    push(
        events,
        Event {
            t_s,
            kind,
            action: Some(action),
            node: fault.node,
            detail,
        },
    );
}

/// Applies one fault and records it. For a restart or a resume, a watcher
/// records when the node serves again; after a restart, another one times
/// its startup into `restarts` (its handle goes into `watchers`). Whether
/// the action succeeded.
async fn start_fault(
    target: &mut Target,
    fault: &Fault,
    start: Instant,
    events: &Events,
    restarts: &restarts::Restarts,
    watchers: &mut Vec<tokio::task::JoinHandle<()>>,
) -> bool {
    let t_s = start.elapsed().as_secs_f64();
    let unix = std::time::SystemTime::now();
    let result = target.apply(fault).await;
    let (kind, detail) = match &result {
        Ok(()) => ("fault", describe(fault)),
        Err(e) => ("fault_failed", format!("{e:#}")),
    };
    record(events, t_s, kind, (fault, fault.action), detail);
    if result.is_err() {
        return false;
    }
    let comes_back = matches!(fault.action, FaultAction::Restart | FaultAction::Cont);
    if comes_back && let Some(addr) = target.addr(fault.node) {
        let transport = target.transport();
        tokio::spawn(watch_serving(
            addr,
            transport,
            fault.node,
            start,
            events.clone(),
        ));
    }
    if fault.action == FaultAction::Restart
        && let Some(admin) = target.admin_endpoints().get(usize::from(fault.node) - 1)
    {
        watchers.push(tokio::spawn(restarts::watch(
            admin.clone(),
            target.transport(),
            fault.node,
            t_s,
            unix,
            restarts.clone(),
        )));
    }
    true
}

/// A fault in words: `kill node 2`, or a slow fault's duty cycle.
fn describe(fault: &Fault) -> String {
    match (fault.action, fault.stop_ms, fault.period_ms) {
        (FaultAction::Slow, Some(stop), Some(period)) => format!(
            "slow node {}: stopped {stop} ms of every {period} ms, {}",
            fault.node,
            fault
                .for_s
                .map_or("to the end".to_owned(), |s| format!("for {s} s"))
        ),
        _ => format!("{} node {}", fault.action, fault.node),
    }
}

/// Polls a node until it answers with a leader known, then records it.
async fn watch_serving(
    addr: String,
    transport: Transport,
    node: u8,
    start: Instant,
    events: Events,
) {
    let deadline = Instant::now() + SERVING_DEADLINE;
    while Instant::now() < deadline {
        let client = probe(&addr, &transport);
        if let Ok(Ok(status)) = tokio::time::timeout(Duration::from_secs(3), client.status()).await
            && status.leader.is_some()
        {
            let t_s = start.elapsed().as_secs_f64();
            eprintln!("levee bench: {t_s:6.1} s  node {node} serving again");
            push(
                &events,
                Event {
                    t_s,
                    kind: "serving",
                    action: None,
                    node,
                    detail: format!("node {node} answers with a leader known"),
                },
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault_plan::plan;

    fn slow() -> Fault {
        Fault {
            at_s: 1.0,
            action: FaultAction::Slow,
            node: 2,
            stop_ms: Some(50),
            period_ms: Some(100),
            for_s: Some(0.3),
        }
    }

    #[test]
    fn a_slow_fault_is_described_by_its_duty_cycle() {
        assert_eq!(
            describe(&slow()),
            "slow node 2: stopped 50 ms of every 100 ms, for 0.3 s"
        );
        let kill = Fault {
            action: FaultAction::Kill,
            stop_ms: None,
            period_ms: None,
            for_s: None,
            ..slow()
        };
        assert_eq!(describe(&kill), "kill node 2");
    }

    #[test]
    fn a_cycle_that_cannot_signal_fails_once_and_stops() {
        // An existing cluster cannot be signalled: every edge would fail.
        let mut target = Target::Remote(Vec::new(), Transport::Plain);
        let events: Events = Default::default();
        let mut cycles = Cycles::default();
        cycles.started(0, &slow(), true);
        for step in plan(&[slow()], 60.0).into_iter().skip(1) {
            cycles.edge(&mut target, step, &slow(), (&events, step.at_s));
        }
        let events = events.lock().unwrap();
        let kinds: Vec<_> = events.iter().map(|e| (e.kind, e.action)).collect();
        assert_eq!(kinds, [("fault_failed", Some(FaultAction::Slow))]);
        assert!(cycles.stopped.is_empty(), "a failed node is not waited for");
    }
}
