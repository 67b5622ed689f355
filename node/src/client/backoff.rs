//! Capped exponential backoff with full jitter. Pure: the random draw is a
//! parameter.
//!
//! Full jitter (Brooker, "Exponential Backoff And Jitter", AWS
//! Architecture Blog, 2015): the wait is drawn uniformly from
//! `[0, min(cap, base * 2^attempt))`. Compared with a fixed exponential
//! delay, or "equal jitter", it spreads the retries of many clients that
//! failed at the same moment over the whole interval, so they do not come
//! back as one synchronized wave, and it does the least total work of the
//! variants measured there.

use std::time::Duration;

/// Backoff settings: the first ceiling and the largest one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Ceiling of the wait before the first retry round.
    pub base: Duration,
    /// No wait is ever longer than this.
    pub cap: Duration,
}

impl Backoff {
    /// The ceiling for `attempt` (0 for the first retry round):
    /// `min(cap, base * 2^attempt)`, without overflow.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The wait before retry round `attempt`, given a uniform draw `random`
    /// in `[0, 1)`. A draw outside that range (or NaN) is clamped, so the
    /// result always lies in `[0, ceiling(attempt)]`.
    pub fn delay(&self, attempt: u32, random: f64) -> Duration {
        let random = if random.is_nan() {
            0.0
        } else {
            random.clamp(0.0, 1.0)
        };
        // `mul_f64` cannot overflow here: the factor is at most 1.
        self.ceiling(attempt).mul_f64(random)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_ceiling_doubles_until_the_cap() {
        let b = Backoff {
            base: 10 * MS,
            cap: 100 * MS,
        };
        let ceilings: Vec<_> = (0..6).map(|a| b.ceiling(a)).collect();
        assert_eq!(
            ceilings,
            [10 * MS, 20 * MS, 40 * MS, 80 * MS, 100 * MS, 100 * MS]
        );
    }

    #[test]
    fn a_huge_attempt_number_stays_at_the_cap() {
        let b = Backoff {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(30),
        };
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(30));
        assert_eq!(b.delay(u32::MAX, 0.5), Duration::from_secs(15));
    }

    #[test]
    fn the_draw_scales_the_whole_interval() {
        let b = Backoff {
            base: 100 * MS,
            cap: Duration::from_secs(1),
        };
        assert_eq!(b.delay(0, 0.0), Duration::ZERO);
        assert_eq!(b.delay(1, 0.5), 100 * MS);
        assert_eq!(b.delay(0, f64::NAN), Duration::ZERO);
        assert_eq!(b.delay(0, 7.0), 100 * MS, "clamped to the ceiling");
        assert_eq!(b.delay(0, -1.0), Duration::ZERO);
    }

    proptest! {
        #[test]
        fn the_delay_is_always_within_zero_and_the_capped_ceiling(
            base_ms in 0u64..10_000,
            cap_ms in 0u64..100_000,
            attempt in 0u32..200,
            random in 0.0f64..1.0,
        ) {
            let b = Backoff { base: Duration::from_millis(base_ms), cap: Duration::from_millis(cap_ms) };
            let d = b.delay(attempt, random);
            let exact = (base_ms as f64) * 2f64.powi(attempt.min(1000) as i32);
            let ceiling = exact.min(cap_ms as f64);
            prop_assert!(d.as_secs_f64() * 1000.0 <= ceiling + 1e-6,
                "{:?} above min({} ms, {} ms)", d, cap_ms, exact);
            prop_assert!(d <= b.cap);
        }
    }
}
