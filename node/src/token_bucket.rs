//! A token bucket: at most `rate` units per second on average, with bursts
//! up to `burst`. Pure: time is a parameter.
//!
//! Used wherever failure creates work (hint replay, anti-entropy, and later
//! re-replication) so that the work proceeds at a bounded, configured pace
//! instead of as fast as the failure allows.

use std::time::{Duration, Instant};

/// How long to wait before the requested tokens are available.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wait(pub Duration);

/// Token bucket state.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket refilling at `rate` per second, holding at most
    /// `burst`. A rate of 0 is treated as a tiny positive rate, so a
    /// bucket never stops forever.
    pub fn new(rate: f64, burst: f64, now: Instant) -> Self {
        let burst = burst.max(1.0);
        Self {
            rate: sane_rate(rate),
            burst,
            tokens: burst,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = self.last.max(now);
    }

    /// Takes `n` tokens, or says how long until they are there. A request
    /// larger than the burst is granted when the bucket is full and leaves
    /// it in debt, so large items are slowed, never starved.
    pub fn take(&mut self, n: f64, now: Instant) -> Result<(), Wait> {
        self.refill(now);
        let needed = n.min(self.burst);
        if self.tokens >= needed {
            self.tokens -= n;
            return Ok(());
        }
        let missing = needed - self.tokens;
        Err(Wait(Duration::from_secs_f64(missing / self.rate)))
    }

    /// Tokens available now (negative while in debt).
    pub fn available(&mut self, now: Instant) -> f64 {
        self.refill(now);
        self.tokens
    }

    /// Changes the rate and burst, keeping the tokens accumulated so far
    /// (capped at the new burst).
    pub fn set_rate(&mut self, rate: f64, burst: f64, now: Instant) {
        self.refill(now);
        self.rate = sane_rate(rate);
        self.burst = burst.max(1.0);
        self.tokens = self.tokens.min(self.burst);
    }

    /// The current rate per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Settles a reservation: `taken` tokens were taken up front for
    /// something that turned out to cost `used`. Unused tokens go back
    /// (never above the burst); an overrun is charged, into debt if need
    /// be, since it has already happened.
    pub fn settle(&mut self, taken: f64, used: f64, now: Instant) {
        self.refill(now);
        self.tokens = (self.tokens + taken - used).min(self.burst);
    }
}

fn sane_rate(rate: f64) -> f64 {
    if rate.is_finite() && rate > 1e-6 {
        rate
    } else {
        1e-6
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_full_bucket_grants_its_burst_then_paces() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 5.0, t0);
        for _ in 0..5 {
            assert!(b.take(1.0, t0).is_ok());
        }
        let Err(Wait(wait)) = b.take(1.0, t0) else {
            panic!("burst exceeded")
        };
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-9, "{wait:?}");
        assert!(b.take(1.0, t0 + Duration::from_millis(100)).is_ok());
    }

    #[test]
    fn large_requests_go_into_debt_instead_of_starving() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100.0, 10.0, t0);
        assert!(
            b.take(50.0, t0).is_ok(),
            "a full bucket grants an oversized request"
        );
        assert!((b.available(t0) + 40.0).abs() < 1e-9);
        // The debt is paid back at the rate before anything else passes.
        let Err(Wait(wait)) = b.take(1.0, t0) else {
            panic!()
        };
        assert!((wait.as_secs_f64() - 0.41).abs() < 1e-9, "{wait:?}");
    }

    #[test]
    fn changing_the_rate_keeps_tokens_but_caps_them() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1.0, 100.0, t0);
        b.set_rate(1000.0, 10.0, t0);
        assert!((b.available(t0) - 10.0).abs() < 1e-9);
        assert_eq!(b.rate(), 1000.0);
    }

    #[test]
    fn a_reservation_gives_back_what_it_did_not_use_and_pays_an_overrun() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1.0, 10.0, t0);
        assert!(b.take(8.0, t0).is_ok());
        b.settle(8.0, 3.0, t0);
        assert!((b.available(t0) - 7.0).abs() < 1e-9);
        b.settle(2.0, 12.0, t0);
        assert!((b.available(t0) + 3.0).abs() < 1e-9, "an overrun is debt");
        b.settle(100.0, 0.0, t0);
        assert!(
            (b.available(t0) - 10.0).abs() < 1e-9,
            "never above the burst"
        );
    }

    proptest! {
        #[test]
        fn never_exceeds_rate_times_time_plus_burst(
            rate in 1.0f64..1000.0,
            burst in 1.0f64..100.0,
            steps in proptest::collection::vec((0u64..50, 0.1f64..5.0), 1..300),
        ) {
            let t0 = Instant::now();
            let mut b = TokenBucket::new(rate, burst, t0);
            let mut now = t0;
            let mut granted = 0.0;
            for (advance_ms, n) in steps {
                now += Duration::from_millis(advance_ms);
                match b.take(n, now) {
                    Ok(()) => granted += n,
                    Err(Wait(w)) => prop_assert!(w > Duration::ZERO),
                }
                let elapsed = now.duration_since(t0).as_secs_f64();
                // Debt lets one request overshoot by at most its own size.
                prop_assert!(granted <= rate * elapsed + burst + 5.0 + 1e-6,
                    "granted {} in {}s at {}/s burst {}", granted, elapsed, rate, burst);
            }
        }

        /// The conformance the replica checker relies on (one token per
        /// move): with requests no larger than the burst there is never
        /// debt, and any window, not only one starting at creation, gets
        /// at most `rate · window + burst`.
        #[test]
        fn any_window_gets_at_most_rate_times_window_plus_burst(
            rate in 0.1f64..1000.0,
            burst in 1.0f64..100.0,
            steps in proptest::collection::vec((0u64..2_000, 0.01f64..=1.0), 1..200),
        ) {
            let t0 = Instant::now();
            let mut b = TokenBucket::new(rate, burst, t0);
            let mut now = t0;
            let mut grants: Vec<(Instant, f64)> = Vec::new();
            for (advance_ms, fraction) in steps {
                now += Duration::from_millis(advance_ms);
                let n = fraction * burst;
                if b.take(n, now).is_ok() {
                    grants.push((now, n));
                }
            }
            for (i, (start, _)) in grants.iter().enumerate() {
                let mut granted = 0.0;
                for (end, n) in &grants[i..] {
                    granted += n;
                    let window = end.duration_since(*start).as_secs_f64();
                    prop_assert!(granted <= rate * window + burst + 1e-6,
                        "granted {} in {}s at {}/s burst {}", granted, window, rate, burst);
                }
            }
        }
    }
}
