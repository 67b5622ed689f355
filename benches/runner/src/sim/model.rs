//! The time a throttled recovery should take, from the configuration and
//! the work alone: what the figures compare the simulation against. Pure.
//!
//! After a loss nothing is copied for `down_out_interval`. Then `n` moves
//! of `B` bytes in all run at most `slots = min(max_moves, n)` at a time,
//! each from one source at `r` bytes/s (its budget, slowed by pressure,
//! and no more than its disk and network spare), each costing a fixed
//! `overhead` on top of its bytes: the puller's settle time and, on
//! average, half a tick before the checker sees its slot free. The slots
//! fill at `moves_per_sec` after the first `moves_burst`. So the copy
//! takes the longest of:
//!
//! - slots: `n × (overhead + B/n/r) / slots + ramp / 2`, with `ramp =
//!   (slots − burst) / moves_per_sec` (half of it lost while filling);
//! - starts: `(n − burst) / moves_per_sec + overhead + B/n/r`;
//! - the largest copy at the slowest source's rate: `overhead + largest /
//!   r_min` (sources under more client pressure send slower; no single
//!   copy can take longer than this, and when a loss needs few moves, all
//!   in flight at once, the slowest of them is the recovery);
//! - a drain's busiest sender: a drained node is the only source of its
//!   copies, so it sends all it holds, `B_i / r_i + n_i × overhead /
//!   max_moves_per_node` for the node with the most.

use serde::Serialize;

/// What the model is given.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Work {
    /// Silence before Out (s): `down_out_interval`, or 0 for a drain.
    pub delay_s: f64,
    /// Moves.
    pub moves: u64,
    /// Their bytes.
    pub bytes: u64,
    /// The largest one (bytes).
    pub largest: u64,
    /// Bytes/s one source sends (the mean over the serving nodes).
    pub rate: f64,
    /// Bytes/s the slowest serving node sends.
    pub slowest_rate: f64,
    /// `max_moves`.
    pub max_moves: u32,
    /// `moves_per_sec`.
    pub moves_per_sec: f64,
    /// `moves_burst`.
    pub moves_burst: u32,
    /// Per-move cost besides the bytes (s).
    pub overhead_s: f64,
    /// The longest a drained node takes to send all it holds, as its
    /// copies' only source (s; 0 without a drain).
    pub fixed_sender_s: f64,
}

/// The model's answer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Prediction {
    /// The copy, from the first Out (or the drain) to full redundancy (s).
    pub copy_s: f64,
    /// From the fault to full redundancy: `delay_s + copy_s`.
    pub total_s: f64,
    /// Which bound set the copy time: `slots`, `starts`, `largest` or
    /// `sender`.
    pub bound: &'static str,
}

impl Work {
    /// The predicted times, or `None` without moves or rate.
    pub fn predict(&self) -> Option<Prediction> {
        // Written so that NaN rates give no prediction too.
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if self.moves == 0
            || !positive(self.rate)
            || !positive(self.slowest_rate)
            || !positive(self.moves_per_sec)
        {
            return None;
        }
        let n = self.moves as f64;
        let mean_copy = self.bytes as f64 / n / self.rate;
        let per_move = self.overhead_s + mean_copy;
        let slots = f64::from(self.max_moves).min(n).max(1.0);
        let burst = f64::from(self.moves_burst);
        let ramp = (slots - burst).max(0.0) / self.moves_per_sec;
        let candidates = [
            ("slots", n * per_move / slots + ramp / 2.0),
            (
                "starts",
                (n - burst).max(0.0) / self.moves_per_sec + per_move,
            ),
            (
                "largest",
                self.overhead_s + self.largest as f64 / self.slowest_rate.min(self.rate),
            ),
            ("sender", self.fixed_sender_s),
        ];
        let (bound, copy_s) =
            candidates.into_iter().fold(
                ("slots", 0.0),
                |best, c| if c.1 > best.1 { c } else { best },
            );
        Some(Prediction {
            copy_s,
            total_s: self.delay_s + copy_s,
            bound,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn work(moves: u64, max_moves: u32) -> Work {
        Work {
            delay_s: 600.0,
            moves,
            bytes: moves * GIB,
            largest: GIB,
            rate: (64u64 << 20) as f64,
            slowest_rate: (64u64 << 20) as f64,
            max_moves,
            moves_per_sec: 10.0,
            moves_burst: 20,
            overhead_s: 1.5,
            fixed_sender_s: 0.0,
        }
    }

    #[test]
    fn many_moves_are_bound_by_the_slots() {
        // 4000 moves of 16 s + 1.5 s, 256 at a time: 273.4 s, plus half
        // of the 4.72 s the slots take to fill at 50 starts/s.
        let mut w = work(4000, 256);
        w.moves_per_sec = 50.0;
        let p = w.predict().unwrap();
        assert_eq!(p.bound, "slots");
        assert!(
            (p.copy_s - (4000.0 * 17.5 / 256.0 + 2.36)).abs() < 1e-6,
            "{p:?}"
        );
        // At 10 starts/s, the starts bind instead.
        assert_eq!(work(4000, 256).predict().unwrap().bound, "starts");
        assert!((p.total_s - p.copy_s - 600.0).abs() < 1e-9);
    }

    #[test]
    fn few_moves_are_bound_by_their_starts_or_the_largest() {
        // 200 moves at 10/s after a burst of 20: the last starts at 18 s.
        let p = work(200, 256).predict().unwrap();
        assert_eq!(p.bound, "starts");
        assert!((p.copy_s - (18.0 + 17.5)).abs() < 1e-9, "{p:?}");
        let mut w = work(10, 256);
        w.largest = 8 * GIB;
        let p = w.predict().unwrap();
        assert_eq!(p.bound, "largest");
        assert!((p.copy_s - (1.5 + 128.0)).abs() < 1e-9, "{p:?}");
        // At half the rate on the slowest source, the largest takes twice.
        w.slowest_rate = w.rate / 2.0;
        assert!((w.predict().unwrap().copy_s - (1.5 + 256.0)).abs() < 1e-9);
    }

    #[test]
    fn a_drain_is_bound_by_its_busiest_sender() {
        // 4000 moves that the slots would finish in 273 s, but one drained
        // node must send 200 GiB itself at 64 MiB/s: 3,200 s.
        let mut w = work(4000, 256);
        w.moves_per_sec = 50.0;
        w.fixed_sender_s = 3200.0;
        let p = w.predict().unwrap();
        assert_eq!(p.bound, "sender");
        assert!((p.copy_s - 3200.0).abs() < 1e-9, "{p:?}");
    }

    #[test]
    fn no_work_no_prediction() {
        assert_eq!(work(0, 8).predict(), None);
        let mut w = work(5, 8);
        w.rate = 0.0;
        assert_eq!(w.predict(), None);
    }
}
