//! The fault schedule as timed steps. Every fault of the scenario is one
//! step, except `slow`, whose duty cycle becomes its edges: SIGSTOP at the
//! start of every period, SIGCONT `stop_ms` later, from `at_s` for
//! `for_s` (or to the end of the run), always ending on a SIGCONT. Pure:
//! `cluster::run_faults` sleeps to each step and acts.

use super::scenario::{Fault, FaultAction};

/// What a step does to its fault's node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    /// Applies the fault as written; for `slow`, its first SIGSTOP.
    Start,
    /// A later SIGSTOP of a duty cycle.
    Stop,
    /// A SIGCONT of a duty cycle, not its last.
    Cont,
    /// A duty cycle's last SIGCONT. `early`: it ends before the run does
    /// (`for_s`), so the reports mark it; at the run's end it only tidies
    /// up.
    End {
        /// Before the end of the run.
        early: bool,
    },
}

/// One thing to do at one time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    /// Seconds after the start of the measured run.
    pub at_s: f64,
    /// Index of the fault in the scenario's (sorted) list.
    pub fault: usize,
    /// What to do.
    pub kind: StepKind,
}

/// Every step of `faults` in time order, for a run of `run_end_s`
/// seconds. Steps at the same instant keep the order of the faults.
pub fn plan(faults: &[Fault], run_end_s: f64) -> Vec<Step> {
    let mut steps: Vec<Step> = faults
        .iter()
        .enumerate()
        .flat_map(|(i, f)| match f.action {
            FaultAction::Slow => duty_cycle(i, f, run_end_s),
            _ => vec![Step {
                at_s: f.at_s,
                fault: i,
                kind: StepKind::Start,
            }],
        })
        .collect();
    // Stable: equal times stay in fault order.
    steps.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    steps
}

/// The edges of slow fault number `index`: stopped for `stop_ms` at the
/// start of every `period_ms` that begins before its end (`at_s + for_s`
/// or the run's end, whichever is first); the last SIGCONT comes no later
/// than that end, so the node is never left stopped.
fn duty_cycle(index: usize, f: &Fault, run_end_s: f64) -> Vec<Step> {
    let (Some(stop_ms), Some(period_ms)) = (f.stop_ms, f.period_ms) else {
        return Vec::new();
    };
    let period_ms = period_ms.max(1);
    let requested_end = f.for_s.map_or(f64::INFINITY, |s| f.at_s + s);
    let end = requested_end.min(run_end_s);
    let step = |at_s: f64, kind| Step {
        at_s,
        fault: index,
        kind,
    };
    let mut out = Vec::new();
    // Offsets in whole milliseconds from `at_s`, so a long cycle does not
    // drift by summed rounding errors.
    for k in 0u64.. {
        let stop_at = f.at_s + (k * period_ms) as f64 / 1000.0;
        if stop_at >= end {
            break;
        }
        let cont_at = (stop_at + stop_ms as f64 / 1000.0).min(end);
        out.push(step(
            stop_at,
            if k == 0 {
                StepKind::Start
            } else {
                StepKind::Stop
            },
        ));
        out.push(step(cont_at, StepKind::Cont));
    }
    if let Some(last) = out.last_mut() {
        last.kind = StepKind::End {
            early: requested_end < run_end_s,
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(at_s: f64, action: FaultAction, node: u8) -> Fault {
        Fault {
            at_s,
            action,
            node,
            stop_ms: None,
            period_ms: None,
            for_s: None,
        }
    }

    fn slow(at_s: f64, stop_ms: u64, period_ms: u64, for_s: Option<f64>) -> Fault {
        Fault {
            stop_ms: Some(stop_ms),
            period_ms: Some(period_ms),
            for_s,
            ..fault(at_s, FaultAction::Slow, 2)
        }
    }

    fn shape(steps: &[Step]) -> Vec<(u64, usize, StepKind)> {
        steps
            .iter()
            .map(|s| ((s.at_s * 1000.0).round() as u64, s.fault, s.kind))
            .collect()
    }

    #[test]
    fn a_slow_node_is_stopped_stop_ms_of_every_period_for_for_s() {
        use StepKind::*;
        let steps = plan(&[slow(10.0, 50, 100, Some(0.3))], 60.0);
        assert_eq!(
            shape(&steps),
            [
                (10_000, 0, Start),
                (10_050, 0, Cont),
                (10_100, 0, Stop),
                (10_150, 0, Cont),
                (10_200, 0, Stop),
                (10_250, 0, End { early: true }),
            ]
        );
    }

    #[test]
    fn a_slow_node_to_the_end_is_continued_at_the_end() {
        // 1 s of a 0.7 s period from 59 s: the second stop is cut short
        // by the run's end, and the node is still continued.
        let steps = plan(&[slow(59.0, 500, 700, None)], 60.0);
        let last = steps.last().copied().unwrap();
        assert_eq!(last.kind, StepKind::End { early: false });
        assert!((last.at_s - 60.0).abs() < 1e-9, "{last:?}");
        assert_eq!(steps.len(), 4);
        // A for_s past the end of the run is the same.
        assert_eq!(plan(&[slow(59.0, 500, 700, Some(5.0))], 60.0), steps);
    }

    #[test]
    fn a_long_cycle_does_not_drift() {
        let steps = plan(&[slow(20.0, 50, 100, None)], 60.0);
        assert_eq!(steps.len(), 800);
        let last_stop = steps[steps.len() - 2];
        assert_eq!(last_stop.kind, StepKind::Stop);
        assert!((last_stop.at_s - 59.9).abs() < 1e-9, "{last_stop:?}");
    }

    #[test]
    fn other_faults_interleave_with_a_duty_cycle_in_time_order() {
        use StepKind::*;
        let faults = [
            slow(1.0, 40, 100, Some(0.2)),
            fault(1.1, FaultAction::Kill, 3),
            fault(1.1, FaultAction::Kill, 4),
        ];
        let steps = plan(&faults, 10.0);
        assert_eq!(
            shape(&steps),
            [
                (1_000, 0, Start),
                (1_040, 0, Cont),
                (1_100, 0, Stop),
                (1_100, 1, Start),
                (1_100, 2, Start),
                (1_140, 0, End { early: true }),
            ]
        );
    }
}
