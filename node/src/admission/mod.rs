//! Node self-protection (design §7): every request is classified, foreground
//! work is capped by an adaptive concurrency limit with a short bounded
//! queue, everything past that is refused at once with `Overloaded`, and
//! background work slows down when foreground is busy.
//!
//! - [`limit`]: the adaptive limit (pure, Gradient2-class).
//! - [`shed`]: the pure admission decision.
//! - [`queue`]: the pure wait-queue discipline (CoDel-style, adaptive
//!   LIFO): which waiter gets a freed slot, and how long each may wait.
//! - `controller.rs`: the admission controller ([`Admission`]) that
//!   applies it, its tickets and its permits.
//!
//! Which class a request is in (control / foreground / background) is
//! decided by its message type, in [`crate::proto::op`].

mod controller;
pub mod limit;
pub mod queue;
pub mod shed;

use std::time::Duration;

pub use controller::{Admission, Admit, FirstServed, Permit, Ticket};
pub use limit::{GradientLimit, LimitConfig};

/// Settings of the admission controller (built from the node `Config`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdmissionConfig {
    /// Whether foreground and background requests are limited at all. Off,
    /// every request runs at once (metrics still count them): the baseline
    /// an overload benchmark compares against.
    pub enabled: bool,
    /// The adaptive limit's bounds and tuning.
    pub limit: LimitConfig,
    /// Foreground requests that may wait for a slot.
    pub queue_len: usize,
    /// Least time a foreground request may wait for a slot before
    /// `Overloaded`; it may wait up to one current service time if that is
    /// longer (see `Admission::patience`). Default 1 ms: the overload
    /// benchmark measured 100 ms giving 20% of peak goodput at 1× peak
    /// (requests waited, timed out at the client, and were retried) and
    /// 5 ms 88% — a short wait absorbs a burst, a long one only turns
    /// overload into latency; then 1 ms against 5 ms gave the same
    /// goodput at 1×–4× and about 15% less admitted p99 under overload
    /// (BENCHMARKS.md, "Overload"). Once the queue is standing, it is also
    /// the longest anyone waits (`queue.rs`); in a burst a waiter still
    /// waits up to one service time, which under load is milliseconds.
    pub queue_timeout: Duration,
    /// A wait queue that has not been empty for this long, or whose
    /// leaving waiters all waited `queue_timeout` for this long, is
    /// standing: the newest waiter is served first and nobody waits past
    /// `queue_timeout` (`queue.rs`, Facebook's N: 100 ms).
    pub queue_standing_after: Duration,
    /// Request bytes admitted requests may hold in total.
    pub max_inflight_bytes: u64,
    /// Control requests executing at once; more wait (never refused).
    pub control_budget: usize,
    /// Background requests run only while foreground occupies less than
    /// this share of the limit.
    pub background_share: f64,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            limit: LimitConfig::default(),
            queue_len: 256,
            queue_timeout: Duration::from_millis(1),
            queue_standing_after: Duration::from_millis(100),
            max_inflight_bytes: 256 * 1024 * 1024,
            control_budget: 64,
            background_share: 0.5,
        }
    }
}

/// Background work never slows below this fraction of its configured
/// rate: under lasting overload, hints and repairs must still progress.
pub const BACKGROUND_FLOOR: f64 = 0.1;

/// The fraction of its configured rate background work may use at a given
/// foreground `pressure` (0 idle .. 1 saturated): full speed when idle,
/// linearly less as foreground fills up, never below [`BACKGROUND_FLOOR`].
pub fn background_scale(pressure: f64) -> f64 {
    if !pressure.is_finite() {
        return BACKGROUND_FLOOR;
    }
    (1.0 - pressure).clamp(BACKGROUND_FLOOR, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn background_runs_at_full_speed_when_idle_and_never_below_the_floor() {
        assert_eq!(background_scale(0.0), 1.0);
        assert!((background_scale(0.5) - 0.5).abs() < 1e-9);
        assert_eq!(background_scale(1.0), BACKGROUND_FLOOR);
        assert_eq!(background_scale(7.0), BACKGROUND_FLOOR);
        assert_eq!(background_scale(-1.0), 1.0);
        assert_eq!(background_scale(f64::NAN), BACKGROUND_FLOOR);
    }
}
