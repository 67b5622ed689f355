//! This node's recovery byte budget: one token bucket per node, whatever
//! the number of targets pulling from it, since what a transfer competes
//! with clients for is this node's disk and network. Its rate is
//! `recovery.bytes_per_sec × max(pressure_floor, 1 − pressure)`, re-read
//! from the map and the admission controller on every take, so a
//! `levee admin set` or a burst of client load changes the pace within one
//! page. Pages are never larger than the burst, so the bytes sent over any
//! window `t` stay within `bytes_per_sec · t + bytes_burst` (one record
//! larger than the burst is the only exception: it goes alone and leaves
//! the bucket in debt, so it is paid for, never starved).
//!
//! The same budget exists on the receiving side ([`SendBudget::receiving`],
//! the node's ingest): a node runs up to `max_moves_per_node` incoming
//! copies, each drawing pages from up to [`SOURCES_PER_MOVE`] replicas,
//! each paced by its own sender's bucket, so without a bucket of its own
//! its ingest is bounded only by how many senders there are (CockroachDB's
//! receivers were once swamped by unbounded snapshot ingest). The
//! receiving bucket's rate is `max_moves_per_node × SOURCES_PER_MOVE ×
//! bytes_per_sec` ([`ingest_streams`]), slowed by the receiver's own
//! pressure the same way, and its burst the same `bytes_burst`: it never
//! slows a receiver whose senders are at their configured pace and
//! unpressed, and it holds a receiver that is busy with clients, or fed by
//! senders that are not.
//!
//! Part of the node's shared state (the sender in
//! [`crate::recovery::sender`] and the puller in
//! [`crate::recovery::transfer`] spend them); the rate and page
//! arithmetic is pure.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::cluster::map::RecoverySettings;
use crate::token_bucket::{TokenBucket, Wait};

/// The bytes per second this node may send for recovery now: the
/// configured rate scaled down by client pressure, never below
/// `pressure_floor` of it (recovery yields to clients but never stops).
pub fn effective_rate(settings: &RecoverySettings, pressure: f64) -> f64 {
    let floor = if settings.pressure_floor.is_finite() {
        settings.pressure_floor.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let share = if pressure.is_finite() {
        (1.0 - pressure.clamp(0.0, 1.0)).max(floor)
    } else {
        // An unreadable signal is treated as full pressure: the safe side.
        floor
    };
    settings.bytes_per_sec as f64 * share
}

fn rate_of(side: Side, settings: &RecoverySettings, pressure: f64) -> f64 {
    match side {
        Side::Send => effective_rate(settings, pressure),
        Side::Receive => effective_ingest_rate(settings, pressure),
    }
}

/// Byte budget of the next page: what the target asked, never more than
/// the burst (the conformance bound), and no more than the bucket can pay
/// for within half the time left (the other half is for reading and
/// sending), so a slow rate gives smaller pages rather than refusals.
/// At least 1: the page always carries one record if any is left.
pub fn page_bytes(
    max_bytes: u32,
    burst: u64,
    available: f64,
    rate: f64,
    remaining: Duration,
) -> u64 {
    let in_time = available.max(0.0) + rate.max(0.0) * remaining.as_secs_f64() / 2.0;
    // `as` saturates for floats, and NaN becomes 0 (then 1 below).
    let in_time = in_time as u64;
    u64::from(max_bytes).min(burst.max(1)).min(in_time).max(1)
}

/// Most replicas one incoming copy draws pages from. A copy asks each
/// page of whichever of its sources has saved the most budget, so a
/// receiver that is the only possible target of many partitions (the last
/// node of a zone) is not held to one sender's rate per copy while the
/// other replicas' budgets go unused. Two: what R = 3 leaves alive when
/// one replica is lost.
pub const SOURCES_PER_MOVE: usize = 2;

/// How many senders' rates a node's ingest bucket allows at once: its
/// `max_moves_per_node` incoming copies, [`SOURCES_PER_MOVE`] sources each.
pub fn ingest_streams(settings: &RecoverySettings) -> u32 {
    settings
        .max_moves_per_node
        .max(1)
        .saturating_mul(SOURCES_PER_MOVE as u32)
}

/// The bytes per second this node may take in for recovery now: what
/// its incoming copies may bring at the configured rate
/// ([`ingest_streams`] senders), scaled down by its own pressure as
/// [`effective_rate`] is.
pub fn effective_ingest_rate(settings: &RecoverySettings, pressure: f64) -> f64 {
    effective_rate(settings, pressure) * f64::from(ingest_streams(settings))
}

/// Which way a budget's bytes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Pages this node serves to targets ([`effective_rate`]).
    Send,
    /// Pages this node pulls as a target ([`effective_ingest_rate`]).
    Receive,
}

/// One of this node's recovery byte budgets, shared by every page it
/// serves (or, receiving, pulls).
#[derive(Debug)]
pub struct SendBudget {
    side: Side,
    bucket: Mutex<TokenBucket>,
}

impl Default for SendBudget {
    fn default() -> Self {
        Self::new(&RecoverySettings::default(), Instant::now())
    }
}

impl SendBudget {
    /// A full budget at `settings`' rate, as of `now`. Time is a parameter
    /// so that a simulation (`levee sim`) runs it on simulated time.
    pub fn new(settings: &RecoverySettings, now: Instant) -> Self {
        Self::of(Side::Send, settings, now)
    }

    /// A full ingest budget (the receiving side), as of `now`.
    pub fn receiving(settings: &RecoverySettings, now: Instant) -> Self {
        Self::of(Side::Receive, settings, now)
    }

    fn of(side: Side, settings: &RecoverySettings, now: Instant) -> Self {
        Self {
            side,
            bucket: Mutex::new(TokenBucket::new(
                rate_of(side, settings, 0.0),
                settings.bytes_burst as f64,
                now,
            )),
        }
    }

    /// Runs `f` on the bucket after bringing its rate and burst up to date
    /// with `settings` and `pressure`.
    fn with_bucket<T>(
        &self,
        settings: &RecoverySettings,
        pressure: f64,
        now: Instant,
        f: impl FnOnce(&mut TokenBucket) -> T,
    ) -> T {
        let mut bucket = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        bucket.set_rate(
            rate_of(self.side, settings, pressure),
            settings.bytes_burst as f64,
            now,
        );
        f(&mut bucket)
    }

    /// Settles `taken` bytes taken up front for a page that turned out to
    /// be `used` bytes (see [`TokenBucket::settle`]).
    pub fn settle(
        &self,
        settings: &RecoverySettings,
        pressure: f64,
        taken: u64,
        used: u64,
        now: Instant,
    ) {
        self.with_bucket(settings, pressure, now, |b| {
            b.settle(taken as f64, used as f64, now)
        });
    }

    /// Takes `bytes` tokens, or says how long until they are there.
    pub fn take(
        &self,
        settings: &RecoverySettings,
        pressure: f64,
        bytes: u64,
        now: Instant,
    ) -> Result<(), Wait> {
        self.with_bucket(settings, pressure, now, |b| b.take(bytes as f64, now))
    }

    /// The byte budget of a page asked with `max_bytes` and `remaining`
    /// time (see [`page_bytes`]).
    pub fn page_bytes(
        &self,
        settings: &RecoverySettings,
        pressure: f64,
        max_bytes: u32,
        remaining: Duration,
        now: Instant,
    ) -> u64 {
        self.with_bucket(settings, pressure, now, |b| {
            page_bytes(
                max_bytes,
                settings.bytes_burst,
                b.available(now),
                b.rate(),
                remaining,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn settings(bytes_per_sec: u64, bytes_burst: u64) -> RecoverySettings {
        RecoverySettings {
            bytes_per_sec,
            bytes_burst,
            ..RecoverySettings::default()
        }
    }

    #[test]
    fn pressure_slows_the_rate_down_to_the_floor_never_below() {
        let s = settings(1000, 100);
        assert_eq!(effective_rate(&s, 0.0), 1000.0);
        assert!((effective_rate(&s, 0.5) - 500.0).abs() < 1e-9);
        assert!((effective_rate(&s, 1.0) - 100.0).abs() < 1e-9);
        assert!((effective_rate(&s, 0.99) - 100.0).abs() < 1e-9);
        assert!((effective_rate(&s, f64::NAN) - 100.0).abs() < 1e-9);
        assert_eq!(effective_rate(&s, -3.0), 1000.0);
    }

    #[test]
    fn pages_fit_the_ask_the_burst_and_the_time_left() {
        let second = Duration::from_secs(1);
        // The ask is the tightest.
        assert_eq!(page_bytes(1000, 10_000, 10_000.0, 1e6, second), 1000);
        // The burst is.
        assert_eq!(page_bytes(1 << 20, 4096, 1e9, 1e9, second), 4096);
        // The time left at this rate is: 2 s left, half of it at 100 B/s.
        assert_eq!(page_bytes(1 << 20, 1 << 20, 0.0, 100.0, 2 * second), 100);
        // In debt, with no time left: still one record.
        assert_eq!(
            page_bytes(1 << 20, 1 << 20, -50.0, 100.0, Duration::ZERO),
            1
        );
        assert_eq!(page_bytes(0, 0, f64::NAN, f64::NAN, second), 1);
    }

    #[test]
    fn a_raised_rate_applies_to_the_next_take() {
        let budget = SendBudget::default();
        let t0 = Instant::now();
        let slow = settings(100, 100);
        assert!(budget.take(&slow, 0.0, 100, t0).is_ok());
        let Err(Wait(wait)) = budget.take(&slow, 0.0, 100, t0) else {
            panic!("the burst is spent")
        };
        assert!((wait.as_secs_f64() - 1.0).abs() < 1e-6, "{wait:?}");
        // Tokens already earned stay earned at the old rate; the wait for
        // the rest is computed at the new one.
        let fast = settings(10_000, 100);
        let Err(Wait(wait)) = budget.take(&fast, 0.0, 100, t0) else {
            panic!("no tokens were earned in no time")
        };
        assert!((wait.as_secs_f64() - 0.01).abs() < 1e-6, "{wait:?}");
        // And full pressure slows it to the floor (0.1 by default).
        let Err(Wait(wait)) = budget.take(&fast, 1.0, 100, t0) else {
            panic!()
        };
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-6, "{wait:?}");
    }

    #[test]
    fn the_ingest_rate_is_what_the_incoming_moves_may_bring_slowed_by_pressure() {
        let s = RecoverySettings {
            max_moves_per_node: 3,
            ..settings(1000, 100)
        };
        // Three copies, two sources each, 1000 B/s a source.
        assert_eq!(ingest_streams(&s), 6);
        assert_eq!(effective_ingest_rate(&s, 0.0), 6000.0);
        assert!((effective_ingest_rate(&s, 0.5) - 3000.0).abs() < 1e-9);
        let t0 = Instant::now();
        let budget = SendBudget::receiving(&s, t0);
        assert!(budget.take(&s, 0.0, 100, t0).is_ok());
        let Err(Wait(wait)) = budget.take(&s, 0.0, 100, t0) else {
            panic!("the burst is spent")
        };
        // 100 bytes at 6 × 1000 B/s.
        assert!((wait.as_secs_f64() - 0.1 / 6.0).abs() < 1e-6, "{wait:?}");
    }

    proptest! {
        /// The conformance property the benchmark checks end to end: over
        /// any run, bytes granted ≤ bytes_per_sec · t + burst, whatever the
        /// pressure does and however pages are sized (pages ≤ burst).
        #[test]
        fn bytes_granted_never_exceed_rate_times_time_plus_burst(
            rate in 1_000u64..1_000_000,
            burst in 1_000u64..100_000,
            steps in proptest::collection::vec((0u64..50, 0.0f64..1.0, 1u64..100_000), 1..300),
        ) {
            let t0 = Instant::now();
            let budget = SendBudget::default();
            let s = settings(rate, burst);
            let mut now = t0;
            let mut granted = 0u64;
            for (advance_ms, pressure, ask) in steps {
                now += Duration::from_millis(advance_ms);
                let remaining = Duration::from_secs(5);
                let page = budget.page_bytes(&s, pressure, u32::MAX, remaining, now).min(ask);
                prop_assert!(page <= burst);
                if budget.take(&s, pressure, page, now).is_ok() {
                    granted += page;
                }
                let elapsed = now.duration_since(t0).as_secs_f64();
                prop_assert!(granted as f64 <= rate as f64 * elapsed + burst as f64 + 1e-6,
                    "granted {} in {}s at {}/s burst {}", granted, elapsed, rate, burst);
            }
        }
    }
}
