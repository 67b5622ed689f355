//! Phase summaries: the run cut at its faults into before / during /
//! after, its recovery cut out as its own phase (or, for a step load,
//! into its steps; the cutting is in `spans.rs`), each summarised from the
//! per-second buckets, and every figure given as a ratio to the first
//! phase of the same run — the before-fault baseline, or the lowest step
//! (two machines, or two days, differ more than the effect being
//! measured). Pure.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::timeline::{Bucket, ClientCounts, ErrorKind, new_histogram, new_op_histogram, us_to_ms};

mod spans;

pub use spans::{PhaseKind, PhaseSpan, spans, step_spans, with_recovery};

/// One phase, summarised.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseSummary {
    /// Which phase.
    pub kind: PhaseKind,
    /// Human name.
    pub label: String,
    /// For a step: its load as a multiple of the peak.
    pub multiple: Option<f64>,
    /// First second.
    pub from_s: u64,
    /// One past the last second.
    pub to_s: u64,
    /// Requests due per second.
    pub offered_per_s: f64,
    /// Successful requests per second.
    pub goodput_per_s: f64,
    /// The worst second's goodput.
    pub min_goodput_per_s: f64,
    /// Successful / offered.
    pub success_ratio: f64,
    /// Failures by kind over the phase.
    pub errors: BTreeMap<&'static str, u64>,
    /// Requests the generator could not send (in-flight cap).
    pub dropped: u64,
    /// Latency of the successful requests over the whole phase (ms).
    pub p50_ms: Option<f64>,
    /// 99th percentile (ms).
    pub p99_ms: Option<f64>,
    /// 99.9th percentile (ms).
    pub p999_ms: Option<f64>,
    /// Slowest (ms).
    pub max_ms: Option<f64>,
    /// The worst second's p99 (ms).
    pub worst_second_p99_ms: Option<f64>,
    /// The successful reads' and writes' latencies apart (`None` without
    /// any of that kind): whether the work or the wait is the latency.
    pub by_op: ByOp,
    /// Goodput over the peak the steps multiply (step loads only).
    pub goodput_vs_peak: Option<f64>,
    /// What the clients sent during the phase.
    pub client: ClientCounts,
    /// Attempts per logical request: how much retries multiplied the load.
    pub attempts_per_request: Option<f64>,
    /// Ratios to the baseline phase (the first one); `None` where the
    /// baseline or this phase has no value.
    pub vs_baseline: Ratios,
}

impl PhaseSummary {
    /// Requests refused for load (`Overloaded`, after the client's own
    /// failover).
    pub fn refused(&self) -> u64 {
        self.errors.get("overloaded").copied().unwrap_or(0)
    }

    /// Requests that failed for any other reason.
    pub fn failed(&self) -> u64 {
        self.errors.values().sum::<u64>() - self.refused()
    }
}

/// A phase's latencies by kind of operation (ms, two significant digits).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ByOp {
    /// Gets' p50.
    pub read_p50_ms: Option<f64>,
    /// Gets' p99.
    pub read_p99_ms: Option<f64>,
    /// Puts' and deletes' p50.
    pub write_p50_ms: Option<f64>,
    /// Puts' and deletes' p99.
    pub write_p99_ms: Option<f64>,
}

impl ByOp {
    fn of(reads: &Histogram<u64>, writes: &Histogram<u64>) -> Self {
        let pct =
            |h: &Histogram<u64>, q: f64| (!h.is_empty()).then(|| us_to_ms(h.value_at_quantile(q)));
        Self {
            read_p50_ms: pct(reads, 0.5),
            read_p99_ms: pct(reads, 0.99),
            write_p50_ms: pct(writes, 0.5),
            write_p99_ms: pct(writes, 0.99),
        }
    }

    /// Whether the phase had both reads and writes.
    pub fn has_both(&self) -> bool {
        self.read_p50_ms.is_some() && self.write_p50_ms.is_some()
    }
}

/// This phase's figure divided by the baseline's.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Ratios {
    /// Goodput.
    pub goodput: Option<f64>,
    /// Worst second's goodput over the baseline's mean goodput: the depth
    /// of the dip.
    pub min_goodput: Option<f64>,
    /// p50 latency.
    pub p50: Option<f64>,
    /// p99 latency.
    pub p99: Option<f64>,
    /// p99.9 latency.
    pub p999: Option<f64>,
}

/// Summarises each span over `buckets` (one per second) and adds the ratios
/// to the first span; `peak` (ops/s) is what a step load's steps multiply.
pub fn summarise(buckets: &[Bucket], spans: &[PhaseSpan], peak: Option<f64>) -> Vec<PhaseSummary> {
    let mut out: Vec<PhaseSummary> = spans.iter().map(|s| summarise_one(buckets, *s)).collect();
    for phase in &mut out {
        phase.goodput_vs_peak = ratio(Some(phase.goodput_per_s), peak);
    }
    let Some(base) = out.first().cloned() else {
        return out;
    };
    for phase in &mut out {
        phase.vs_baseline = Ratios {
            goodput: ratio(Some(phase.goodput_per_s), Some(base.goodput_per_s)),
            min_goodput: ratio(Some(phase.min_goodput_per_s), Some(base.goodput_per_s)),
            p50: ratio(phase.p50_ms, base.p50_ms),
            p99: ratio(phase.p99_ms, base.p99_ms),
            p999: ratio(phase.p999_ms, base.p999_ms),
        };
    }
    out
}

fn ratio(value: Option<f64>, base: Option<f64>) -> Option<f64> {
    match (value, base) {
        (Some(v), Some(b)) if b > 0.0 => Some(v / b),
        _ => None,
    }
}

fn summarise_one(buckets: &[Bucket], span: PhaseSpan) -> PhaseSummary {
    let from = (span.from_s as usize).min(buckets.len());
    let to = (span.to_s as usize).clamp(from, buckets.len());
    let seconds = &buckets[from..to];
    let n = seconds.len().max(1) as f64;
    let mut latency = new_histogram();
    let (mut reads, mut writes) = (new_op_histogram(), new_op_histogram());
    let mut errors: BTreeMap<&'static str, u64> =
        ErrorKind::ALL.iter().map(|k| (k.name(), 0)).collect();
    let (mut offered, mut ok, mut dropped) = (0, 0, 0);
    let mut worst_p99: Option<u64> = None;
    let mut client = ClientCounts::default();
    for b in seconds {
        client.add(&b.client);
        offered += b.offered;
        ok += b.ok;
        dropped += b.dropped;
        for (kind, count) in &b.errors {
            *errors.entry(kind.name()).or_default() += count;
        }
        // Same bounds on both sides, so adding cannot fail; clamp anyway.
        let _ = latency.add(&b.latency);
        let _ = reads.add(&b.reads);
        let _ = writes.add(&b.writes);
        if b.ok > 0 {
            let p99 = b.latency.value_at_quantile(0.99);
            worst_p99 = Some(worst_p99.map_or(p99, |w| w.max(p99)));
        }
    }
    let pct = |q: f64| (ok > 0).then(|| us_to_ms(latency.value_at_quantile(q)));
    PhaseSummary {
        kind: span.kind,
        label: span.label(),
        multiple: span.multiple,
        from_s: span.from_s,
        to_s: span.to_s,
        offered_per_s: offered as f64 / n,
        goodput_per_s: ok as f64 / n,
        min_goodput_per_s: seconds.iter().map(|b| b.ok).min().unwrap_or(0) as f64,
        success_ratio: if offered > 0 {
            ok as f64 / offered as f64
        } else {
            0.0
        },
        errors,
        dropped,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        p999_ms: pct(0.999),
        max_ms: (ok > 0).then(|| us_to_ms(latency.max())),
        worst_second_p99_ms: worst_p99.map(us_to_ms),
        by_op: ByOp::of(&reads, &writes),
        goodput_vs_peak: None,
        client,
        attempts_per_request: client.attempts_per_request(),
        vs_baseline: Ratios::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timeline::{Outcome, Timeline};
    use std::time::Duration;

    /// 10 s at 100 ops/s: seconds 0-3 fast and clean, 4-6 half fail and
    /// the rest are slow, 7-9 clean again but twice as slow.
    fn run() -> Timeline {
        let mut t = Timeline::new(10);
        for s in 0..10u64 {
            for i in 0..100u64 {
                let due = Duration::from_millis(s * 1000 + i * 10);
                let (latency_ms, outcome) = match s {
                    0..=3 => (2, Outcome::Ok),
                    4..=6 if i % 2 == 0 => (1000, Outcome::Error(ErrorKind::Timeout)),
                    4..=6 => (20, Outcome::Ok),
                    _ => (4, Outcome::Ok),
                };
                t.record(due, Duration::from_millis(latency_ms), outcome);
            }
        }
        t
    }

    #[test]
    fn summaries_and_ratios_to_the_baseline() {
        let t = run();
        let phases = summarise(t.buckets(), &spans(10, 1, &[4.0, 7.0]), None);
        let [before, during, after] = &phases[..] else {
            panic!("{phases:?}")
        };
        assert_eq!((before.from_s, before.to_s), (1, 4));
        assert_eq!(before.goodput_per_s, 100.0);
        assert_eq!(before.success_ratio, 1.0);
        assert_eq!(before.vs_baseline.goodput, Some(1.0));

        assert_eq!(during.goodput_per_s, 50.0);
        assert_eq!(during.errors["timeout"], 150);
        assert_eq!(during.vs_baseline.goodput, Some(0.5));
        assert_eq!(during.vs_baseline.min_goodput, Some(0.5));
        let p99 = during.vs_baseline.p99.unwrap();
        assert!((p99 - 10.0).abs() < 0.05, "{p99}");

        let p50 = after.vs_baseline.p50.unwrap();
        assert!((p50 - 2.0).abs() < 0.01, "{p50}");
        assert_eq!(after.errors.values().sum::<u64>(), 0);
    }

    #[test]
    fn a_phase_without_successes_has_no_latency_ratio() {
        let mut t = Timeline::new(4);
        t.record(Duration::ZERO, Duration::from_millis(1), Outcome::Ok);
        t.record(
            Duration::from_secs(2),
            Duration::from_millis(1),
            Outcome::Error(ErrorKind::Unavailable),
        );
        let phases = summarise(t.buckets(), &spans(4, 0, &[2.0]), None);
        assert_eq!(phases[1].p99_ms, None);
        assert_eq!(phases[1].vs_baseline.p99, None);
        assert_eq!(phases[1].vs_baseline.goodput, Some(0.0));
    }

    /// Three 4-second steps of a 100 ops/s peak: 50/s all fast, 100/s all
    /// fast but slower, 300/s where 100 are refused, 50 time out and the
    /// rest are slow; the clients retry more as the load grows.
    fn stepped() -> Timeline {
        let mut t = Timeline::new(12);
        for s in 0..12u64 {
            let rate = [50, 100, 300][s as usize / 4];
            for i in 0..rate {
                let due = Duration::from_micros(s * 1_000_000 + i * 1_000_000 / rate);
                let outcome = match (rate, i % 6) {
                    (300, 0 | 1) => Outcome::Error(ErrorKind::Overloaded),
                    (300, 2) => Outcome::Error(ErrorKind::Timeout),
                    _ => Outcome::Ok,
                };
                let ms = match rate {
                    50 => 2,
                    100 => 3,
                    _ => 8,
                };
                t.record(due, Duration::from_millis(ms), outcome);
            }
            let retries = if rate == 300 { 150 } else { 0 };
            let counts = ClientCounts {
                requests: rate,
                attempts: rate + retries,
                retries,
                refused_in_client: if rate == 300 { 40 } else { 0 },
            };
            t.client(s, counts);
        }
        t
    }

    #[test]
    fn step_phases_compare_to_the_peak_and_to_the_lowest_step() {
        let t = stepped();
        let phases = summarise(
            t.buckets(),
            &step_spans(&[0.5, 1.0, 3.0], 4, 1),
            Some(100.0),
        );
        let [low, one, three] = &phases[..] else {
            panic!("{phases:?}")
        };
        assert_eq!((low.from_s, low.to_s, low.kind), (1, 4, PhaseKind::Step));
        assert_eq!(low.goodput_vs_peak, Some(0.5));
        assert_eq!(one.goodput_vs_peak, Some(1.0));
        assert_eq!(three.goodput_vs_peak, Some(1.5));
        assert_eq!(three.multiple, Some(3.0));
        assert_eq!((three.refused(), three.failed()), (300, 150));
        assert_eq!(low.attempts_per_request, Some(1.0));
        assert_eq!(three.attempts_per_request, Some(1.5));
        assert_eq!(three.client.retries, 450);
        assert_eq!(three.client.refused_in_client, 120);
        // p99 of the admitted requests against the unloaded step's.
        let p99 = three.vs_baseline.p99.unwrap();
        assert!((p99 - 4.0).abs() < 0.01, "{p99}");
        assert_eq!(low.vs_baseline.p99, Some(1.0));
    }

    #[test]
    fn reads_and_writes_are_summarised_apart() {
        use crate::timeline::OpKind;
        let mut t = Timeline::new(2);
        for i in 0..100u64 {
            let due = Duration::from_millis(i * 10);
            // Four reads at 2 ms for every write at 30 ms; a failed write
            // counts in neither.
            let (op, ms) = if i % 5 == 0 {
                (OpKind::Write, 30)
            } else {
                (OpKind::Read, 2)
            };
            t.record_op(due, Duration::from_millis(ms), Outcome::Ok, op);
        }
        t.record_op(
            Duration::from_millis(5),
            Duration::from_secs(1),
            Outcome::Error(ErrorKind::Timeout),
            OpKind::Write,
        );
        let phases = summarise(t.buckets(), &spans(2, 0, &[]), None);
        let b = &phases[0].by_op;
        let near = |v: Option<f64>, want: f64| (v.unwrap() - want).abs() < want * 0.01;
        assert!(
            near(b.read_p50_ms, 2.0) && near(b.read_p99_ms, 2.0),
            "{b:?}"
        );
        assert!(
            near(b.write_p50_ms, 30.0) && near(b.write_p99_ms, 30.0),
            "{b:?}"
        );
        assert!(b.has_both());
        // Recorded without a kind (`record`): no split.
        let phases = summarise(run().buckets(), &spans(10, 1, &[]), None);
        assert_eq!(phases[0].by_op, ByOp::default());
        assert!(!phases[0].by_op.has_both());
    }
}
