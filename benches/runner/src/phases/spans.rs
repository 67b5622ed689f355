//! Where a run is cut into phases: at its faults (before / during /
//! after), at its recovery (the seconds from the first node marked Out to
//! full redundancy), or into the steps of a step load. Pure.

use serde::Serialize;

/// Which part of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PhaseKind {
    /// No faults in the scenario: the whole run after the warm-up.
    Steady,
    /// From the end of the warm-up to the first fault: the baseline.
    BeforeFault,
    /// From the first fault to the last one (or to the end, with one).
    DuringFault,
    /// From the last fault to the end.
    AfterFault,
    /// From the first node marked Out to full redundancy (or the end):
    /// the re-replication, cut out of the phase it falls in.
    Recovering,
    /// What was left of the during-fault phase once redundancy was back.
    Recovered,
    /// One step of a step load.
    Step,
}

impl PhaseKind {
    /// Human name, as in summary.md.
    pub fn label(self) -> &'static str {
        match self {
            Self::Steady => "steady",
            Self::BeforeFault => "before fault",
            Self::DuringFault => "during fault",
            Self::AfterFault => "after fault",
            Self::Recovering => "recovering",
            Self::Recovered => "recovered",
            Self::Step => "step",
        }
    }
}

/// Seconds `[from_s, to_s)` of the run that form a phase.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PhaseSpan {
    /// Which phase.
    pub kind: PhaseKind,
    /// First second.
    pub from_s: u64,
    /// One past the last second.
    pub to_s: u64,
    /// For a step: its load as a multiple of the peak.
    pub multiple: Option<f64>,
}

impl PhaseSpan {
    /// Human name: the kind, or a step's load (`3× peak`).
    pub fn label(&self) -> String {
        match self.multiple {
            Some(m) => format!("{m}× peak"),
            None => self.kind.label().to_owned(),
        }
    }
}

/// Cuts a run of `duration_s` seconds at its fault times. The baseline
/// starts after `warmup_s`. A second holding a fault belongs to the phase
/// the fault starts, so a baseline second is never touched by a fault.
pub fn spans(duration_s: u64, warmup_s: u64, fault_times_s: &[f64]) -> Vec<PhaseSpan> {
    let span = |kind, from_s, to_s| PhaseSpan {
        kind,
        from_s,
        to_s,
        multiple: None,
    };
    let first = fault_times_s.iter().copied().reduce(f64::min);
    let last = fault_times_s.iter().copied().reduce(f64::max);
    let (Some(first), Some(last)) = (first, last) else {
        return vec![span(
            PhaseKind::Steady,
            warmup_s.min(duration_s),
            duration_s,
        )];
    };
    let first = (first.floor() as u64).min(duration_s);
    let last = (last.floor() as u64).min(duration_s);
    let mut out = vec![span(PhaseKind::BeforeFault, warmup_s.min(first), first)];
    if last > first {
        out.push(span(PhaseKind::DuringFault, first, last));
        out.push(span(PhaseKind::AfterFault, last, duration_s));
    } else {
        out.push(span(PhaseKind::DuringFault, first, duration_s));
    }
    out
}

/// The steps of a step load, `step_s` each, back to back; the first
/// `warmup_s` of every step are left out, so a step's figures are the
/// load it names rather than the move from the step before.
pub fn step_spans(multiples: &[f64], step_s: u64, warmup_s: u64) -> Vec<PhaseSpan> {
    let skip = warmup_s.min(step_s.saturating_sub(1));
    (0u64..)
        .zip(multiples)
        .map(|(i, &m)| PhaseSpan {
            kind: PhaseKind::Step,
            from_s: i * step_s + skip,
            to_s: (i + 1) * step_s,
            multiple: Some(m),
        })
        .collect()
}

/// `spans` with the recovery window cut out as its own phase: from the
/// first node marked Out (`out_s`) to full redundancy (`redundant_s`, or
/// the end). The seconds of the other phases that fall inside it leave
/// them; what follows it of the during-fault phase becomes `recovered`
/// (the other phases keep their kind). Event seconds belong to the phase
/// they start, as in [`spans`], but for a recovery that starts and ends
/// within one second: that second is the recovering phase, so a recovery
/// faster than a second still has its latency measured rather than
/// blended into the recovered phase.
pub fn with_recovery(
    spans: Vec<PhaseSpan>,
    out_s: f64,
    redundant_s: Option<f64>,
) -> Vec<PhaseSpan> {
    let end = spans.iter().map(|s| s.to_s).max().unwrap_or(0);
    let from = (out_s.max(0.0).floor() as u64).min(end);
    let to = redundant_s.map_or(end, |r| (r.max(0.0).floor() as u64).clamp(from, end));
    let to = if redundant_s.is_some() && to == from {
        (from + 1).min(end)
    } else {
        to
    };
    let mut out = Vec::new();
    let mut recovering = Some(PhaseSpan {
        kind: PhaseKind::Recovering,
        from_s: from,
        to_s: to,
        multiple: None,
    });
    for span in spans {
        if span.from_s < from {
            out.push(PhaseSpan {
                to_s: span.to_s.min(from),
                ..span
            });
        }
        if span.to_s > from
            && let Some(r) = recovering.take().filter(|r| r.to_s > r.from_s)
        {
            out.push(r);
        }
        if span.to_s > to {
            let kind = match span.kind {
                PhaseKind::DuringFault => PhaseKind::Recovered,
                other => other,
            };
            out.push(PhaseSpan {
                kind,
                from_s: span.from_s.max(to),
                ..span
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_faults_is_one_steady_phase_after_warmup() {
        assert_eq!(
            spans(30, 2, &[]),
            vec![PhaseSpan {
                kind: PhaseKind::Steady,
                from_s: 2,
                to_s: 30,
                multiple: None,
            }]
        );
    }

    #[test]
    fn kill_then_restart_gives_before_during_after() {
        let s = spans(60, 2, &[40.5, 20.0]);
        let kinds: Vec<_> = s.iter().map(|p| (p.kind, p.from_s, p.to_s)).collect();
        assert_eq!(
            kinds,
            vec![
                (PhaseKind::BeforeFault, 2, 20),
                (PhaseKind::DuringFault, 20, 40),
                (PhaseKind::AfterFault, 40, 60),
            ]
        );
    }

    #[test]
    fn a_single_fault_lasts_to_the_end() {
        let s = spans(30, 2, &[10.3]);
        assert_eq!(s.len(), 2);
        assert_eq!(
            (s[1].kind, s[1].from_s, s[1].to_s),
            (PhaseKind::DuringFault, 10, 30)
        );
    }

    #[test]
    fn steps_are_phases_without_their_first_seconds() {
        let s = step_spans(&[0.5, 1.0, 3.0], 10, 2);
        let got: Vec<_> = s.iter().map(|p| (p.from_s, p.to_s, p.label())).collect();
        assert_eq!(
            got,
            [
                (2, 10, "0.5× peak".to_owned()),
                (12, 20, "1× peak".to_owned()),
                (22, 30, "3× peak".to_owned()),
            ]
        );
        // A warm-up as long as the step still leaves a second.
        assert_eq!(step_spans(&[1.0], 3, 5)[0].from_s, 2);
    }

    fn shape(spans: &[PhaseSpan]) -> Vec<(PhaseKind, u64, u64)> {
        spans.iter().map(|p| (p.kind, p.from_s, p.to_s)).collect()
    }

    #[test]
    fn the_recovery_is_cut_out_of_the_during_fault_phase() {
        let s = with_recovery(spans(100, 2, &[15.0]), 31.2, Some(61.0));
        assert_eq!(
            shape(&s),
            [
                (PhaseKind::BeforeFault, 2, 15),
                (PhaseKind::DuringFault, 15, 31),
                (PhaseKind::Recovering, 31, 61),
                (PhaseKind::Recovered, 61, 100),
            ]
        );
        assert_eq!(s[2].label(), "recovering");
        // Not redundant by the end: recovering to the end.
        let s = with_recovery(spans(100, 2, &[15.0]), 31.0, None);
        assert_eq!(shape(&s)[2..], [(PhaseKind::Recovering, 31, 100)]);
    }

    #[test]
    fn a_recovery_across_a_later_fault_keeps_the_other_phases() {
        // Kill at 10, out at 20, restart at 30, redundant at 40.
        let s = with_recovery(spans(60, 2, &[10.0, 30.0]), 20.0, Some(40.0));
        assert_eq!(
            shape(&s),
            [
                (PhaseKind::BeforeFault, 2, 10),
                (PhaseKind::DuringFault, 10, 20),
                (PhaseKind::Recovering, 20, 40),
                (PhaseKind::AfterFault, 40, 60),
            ]
        );
        // Redundant in the second it went out: that second is the
        // recovering phase.
        let s = with_recovery(spans(60, 2, &[10.0]), 20.5, Some(20.9));
        assert_eq!(
            shape(&s),
            [
                (PhaseKind::BeforeFault, 2, 10),
                (PhaseKind::DuringFault, 10, 20),
                (PhaseKind::Recovering, 20, 21),
                (PhaseKind::Recovered, 21, 60),
            ]
        );
        // At the run's last second: no phase past the end.
        let s = with_recovery(spans(60, 2, &[10.0]), 59.2, Some(59.5));
        assert_eq!(
            shape(&s),
            [
                (PhaseKind::BeforeFault, 2, 10),
                (PhaseKind::DuringFault, 10, 59),
                (PhaseKind::Recovering, 59, 60),
            ]
        );
    }
}
