//! Hybrid logical clock.
//!
//! A timestamp is one `u64`: the high 48 bits are wall-clock milliseconds
//! since the Unix epoch, the low 16 bits a logical counter that orders
//! events within the same millisecond. It is monotonic on one clock, never
//! behind any timestamp the clock has observed, and within `max_drift_ms`
//! of wall time, because a remote timestamp further ahead is refused rather
//! than adopted (one peer with a clock in the future must not drag every
//! version in the cluster along with it).
//!
//! [`Hlc`] is pure: wall time comes in as a parameter. [`Clock`] wraps it
//! with the system clock and a mutex for use by the node and the client.

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

const LOGICAL_BITS: u32 = 16;
const LOGICAL_MASK: u64 = (1 << LOGICAL_BITS) - 1;

/// The wall-clock milliseconds part of a timestamp.
pub fn physical_ms(ts: u64) -> u64 {
    ts >> LOGICAL_BITS
}

/// The logical counter part of a timestamp.
pub fn logical(ts: u64) -> u64 {
    ts & LOGICAL_MASK
}

/// Builds a timestamp from its parts; `logical` is truncated to 16 bits.
pub fn compose(physical_ms: u64, logical: u64) -> u64 {
    (physical_ms << LOGICAL_BITS) | (logical & LOGICAL_MASK)
}

/// A remote timestamp too far ahead of local wall time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "timestamp is {ahead_ms} ms ahead of this clock; at most {max_drift_ms} ms is accepted \
     (check the clocks of the writer and this node, or raise max_clock_drift_ms)"
)]
pub struct ClockDriftError {
    /// How far ahead of local wall time the timestamp was.
    pub ahead_ms: u64,
    /// The configured bound.
    pub max_drift_ms: u64,
}

/// Pure hybrid logical clock state.
#[derive(Debug, Clone)]
pub struct Hlc {
    last: u64,
    max_drift_ms: u64,
}

impl Hlc {
    /// A clock that refuses remote timestamps more than `max_drift_ms`
    /// ahead of its wall time.
    pub fn new(max_drift_ms: u64) -> Self {
        Self {
            last: 0,
            max_drift_ms,
        }
    }

    /// The last timestamp issued or observed.
    pub fn last(&self) -> u64 {
        self.last
    }

    /// A new timestamp, strictly greater than every one before it.
    pub fn now(&mut self, wall_ms: u64) -> u64 {
        let wall = compose(wall_ms, 0);
        self.last = if wall > self.last {
            wall
        } else {
            // Wall time stood still or went backwards: advance logically.
            // Overflowing the counter carries into the millisecond bits,
            // which keeps the clock monotonic at the cost of running a
            // millisecond ahead for a moment.
            self.last.saturating_add(1)
        };
        self.last
    }

    /// Takes a timestamp received from elsewhere into account, so that
    /// every later [`Hlc::now`] is greater than it.
    pub fn observe(&mut self, remote: u64, wall_ms: u64) -> Result<(), ClockDriftError> {
        let remote_ms = physical_ms(remote);
        if remote_ms > wall_ms.saturating_add(self.max_drift_ms) {
            return Err(ClockDriftError {
                ahead_ms: remote_ms - wall_ms,
                max_drift_ms: self.max_drift_ms,
            });
        }
        self.last = self.last.max(remote);
        Ok(())
    }
}

/// Milliseconds added to the system clock by [`wall_ms`]: 0, unless a
/// test skews this process's clock on purpose (`clock_skew_ms`).
static SKEW_MS: AtomicI64 = AtomicI64::new(0);

/// Skews this process's wall clock by `ms` (fault injection: a node whose
/// clock is wrong).
pub fn set_skew_ms(ms: i64) {
    SKEW_MS.store(ms, Ordering::Relaxed);
}

/// Milliseconds since the Unix epoch from the system clock (plus the
/// skew, if one was set).
pub fn wall_ms() -> u64 {
    let system = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    system.saturating_add_signed(SKEW_MS.load(Ordering::Relaxed))
}

/// A thread-safe [`Hlc`] on the system clock.
#[derive(Debug)]
pub struct Clock {
    inner: Mutex<Hlc>,
}

impl Clock {
    /// A system clock with the given drift bound.
    pub fn new(max_drift_ms: u64) -> Self {
        Self {
            inner: Mutex::new(Hlc::new(max_drift_ms)),
        }
    }

    /// A new timestamp.
    pub fn now(&self) -> u64 {
        let mut hlc = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        hlc.now(wall_ms())
    }

    /// Observes a remote timestamp; see [`Hlc::observe`].
    pub fn observe(&self, remote: u64) -> Result<(), ClockDriftError> {
        let mut hlc = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        hlc.observe(remote, wall_ms())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn follows_wall_time_when_it_advances() {
        let mut c = Hlc::new(1000);
        assert_eq!(c.now(5), compose(5, 0));
        assert_eq!(c.now(9), compose(9, 0));
    }

    #[test]
    fn counts_logically_when_wall_time_stalls_or_goes_back() {
        let mut c = Hlc::new(1000);
        let a = c.now(100);
        let b = c.now(100);
        let d = c.now(50);
        assert_eq!(b, compose(100, 1));
        assert_eq!(d, compose(100, 2));
        assert!(a < b && b < d);
    }

    #[test]
    fn never_behind_an_observed_timestamp() {
        let mut c = Hlc::new(1000);
        c.now(100);
        let remote = compose(600, 7);
        c.observe(remote, 100).unwrap();
        assert!(c.now(100) > remote);
    }

    #[test]
    fn refuses_timestamps_beyond_the_drift_bound() {
        let mut c = Hlc::new(1000);
        let before = c.now(100);
        let err = c.observe(compose(1101, 0), 100).unwrap_err();
        assert_eq!(err.ahead_ms, 1001);
        assert_eq!(
            c.last(),
            before,
            "a refused timestamp must not move the clock"
        );
        assert!(c.observe(compose(1100, 0), 100).is_ok());
    }

    #[test]
    fn logical_overflow_carries_into_milliseconds() {
        let mut c = Hlc::new(1000);
        c.observe(compose(10, LOGICAL_MASK), 10).unwrap();
        assert_eq!(c.now(10), compose(11, 0));
    }

    proptest! {
        #[test]
        fn monotonic_and_bounded(events in proptest::collection::vec((0u64..10_000, any::<bool>(), 0u64..20_000, 0u64..100), 1..200)) {
            let max_drift = 1_000;
            let mut c = Hlc::new(max_drift);
            let mut prev = 0;
            let mut max_wall = 0;
            for (wall, is_remote, remote_ms, remote_logical) in events {
                max_wall = max_wall.max(wall);
                if is_remote {
                    let remote = compose(remote_ms, remote_logical);
                    if c.observe(remote, wall).is_ok() {
                        prop_assert!(c.last() >= remote);
                    }
                }
                let ts = c.now(wall);
                prop_assert!(ts > prev, "not monotonic: {} then {}", prev, ts);
                prop_assert!(ts >= compose(wall, 0));
                // Bounded: never further ahead of the largest wall time seen
                // than the drift bound plus logical spill-over.
                prop_assert!(physical_ms(ts) <= max_wall + max_drift + 1);
                prev = ts;
            }
        }
    }
}
