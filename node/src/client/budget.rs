//! The retry budget: retries may add at most a fixed fraction of load on
//! top of the requests themselves, plus a small floor. Pure: time is a
//! parameter.
//!
//! Per-request retry limits alone do not stop a retry storm: with 3
//! attempts per request, a cluster that is down receives 3× its normal
//! load exactly when it is least able to take it. A budget shared by all
//! requests of a client bounds the total instead (Finagle's `RetryBudget`,
//! gRPC's retry throttling): every request deposits `ratio` tokens, every
//! retry withdraws one, so over any stretch retries are at most
//! `ratio × requests` plus what was saved before it (at most `cap`).
//!
//! The floor is a separate allowance of `floor_per_sec` retries per
//! second (burst: one second's worth). Without it a client that sends
//! few requests (a CLI invocation sends one) could never retry at all.

use std::time::Instant;

use crate::token_bucket::TokenBucket;

/// Slack for the sum of many fractional deposits (ten deposits of 0.1 add
/// up to 0.999…), so 10% really means one retry per ten requests.
const EPSILON: f64 = 1e-9;

/// Why a retry was refused: the budget is spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exhausted;

/// Budget state.
#[derive(Debug, Clone)]
pub struct RetryBudget {
    /// Tokens earned by requests, in `[0, cap]`.
    earned: f64,
    /// Tokens one request earns.
    ratio: f64,
    /// Most tokens that can be saved up.
    cap: f64,
    /// The floor: a few retries per second whatever the request count
    /// (burst: one second's worth, at least one).
    floor: Option<TokenBucket>,
}

impl RetryBudget {
    /// A budget with nothing earned yet and a full floor allowance.
    /// Starting empty means a fresh client cannot turn its first burst of
    /// failures into `max_attempts ×` load; the floor still lets it retry
    /// a little.
    pub fn new(ratio: f64, cap: f64, floor_per_sec: f64, now: Instant) -> Self {
        let sane = |x: f64| if x.is_finite() { x.max(0.0) } else { 0.0 };
        let floor_per_sec = sane(floor_per_sec);
        Self {
            earned: 0.0,
            ratio: sane(ratio),
            cap: sane(cap),
            floor: (floor_per_sec > 0.0)
                .then(|| TokenBucket::new(floor_per_sec, floor_per_sec, now)),
        }
    }

    /// A new logical request: deposits `ratio` tokens.
    pub fn on_request(&mut self) {
        self.earned = (self.earned + self.ratio).min(self.cap);
    }

    /// Whether a retry would be allowed now, without spending anything.
    pub fn can_retry(&mut self, now: Instant) -> bool {
        self.earned >= 1.0 - EPSILON
            || self
                .floor
                .as_mut()
                .is_some_and(|floor| floor.available(now) >= 1.0)
    }

    /// Spends one retry: from the earned tokens first, so the floor stays
    /// for the moments when nothing was earned.
    pub fn try_retry(&mut self, now: Instant) -> Result<(), Exhausted> {
        if self.earned >= 1.0 - EPSILON {
            self.earned = (self.earned - 1.0).max(0.0);
            return Ok(());
        }
        match self.floor.as_mut() {
            Some(floor) => floor.take(1.0, now).map_err(|_| Exhausted),
            None => Err(Exhausted),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    #[test]
    fn ten_percent_earns_one_retry_per_ten_requests() {
        let t0 = Instant::now();
        let mut b = RetryBudget::new(0.1, 100.0, 0.0, t0);
        assert_eq!(b.try_retry(t0), Err(Exhausted), "nothing earned yet");
        for _ in 0..10 {
            b.on_request();
        }
        assert!(b.can_retry(t0));
        assert_eq!(b.try_retry(t0), Ok(()));
        assert_eq!(b.try_retry(t0), Err(Exhausted));
    }

    #[test]
    fn savings_are_capped() {
        let t0 = Instant::now();
        let mut b = RetryBudget::new(1.0, 3.0, 0.0, t0);
        for _ in 0..100 {
            b.on_request();
        }
        let granted = (0..100).filter(|_| b.try_retry(t0).is_ok()).count();
        assert_eq!(granted, 3);
    }

    #[test]
    fn the_floor_allows_a_few_retries_per_second_without_requests() {
        let t0 = Instant::now();
        let mut b = RetryBudget::new(0.1, 10.0, 2.0, t0);
        assert!(b.try_retry(t0).is_ok());
        assert!(b.try_retry(t0).is_ok());
        assert!(!b.can_retry(t0));
        assert_eq!(b.try_retry(t0), Err(Exhausted));
        let later = t0 + Duration::from_millis(500);
        assert!(b.try_retry(later).is_ok(), "refilled at 2 per second");
        assert_eq!(b.try_retry(later), Err(Exhausted));
    }

    #[test]
    fn nonsense_settings_mean_no_retries() {
        let t0 = Instant::now();
        let mut b = RetryBudget::new(f64::NAN, -1.0, f64::INFINITY, t0);
        b.on_request();
        assert_eq!(b.try_retry(t0), Err(Exhausted));
    }

    proptest! {
        /// Over any window, retries ≤ ratio × requests in it + what could
        /// be saved before it (cap) + the floor's burst and refill.
        #[test]
        fn retries_never_exceed_ratio_times_requests_plus_floor(
            ratio in 0.0f64..1.0,
            cap in 0.0f64..50.0,
            floor in 0.0f64..20.0,
            events in proptest::collection::vec((0u64..100, any::<bool>()), 1..400),
            window_start in 0usize..400,
        ) {
            let t0 = Instant::now();
            let mut b = RetryBudget::new(ratio, cap, floor, t0);
            let mut now = t0;
            let start = window_start.min(events.len() - 1);
            let (mut requests, mut retries) = (0u64, 0u64);
            let mut window_t0 = t0;
            for (i, (advance_ms, is_request)) in events.into_iter().enumerate() {
                now += Duration::from_millis(advance_ms);
                if i == start {
                    window_t0 = now;
                }
                let in_window = i >= start;
                if is_request {
                    b.on_request();
                    requests += u64::from(in_window);
                } else if b.try_retry(now).is_ok() {
                    retries += u64::from(in_window);
                }
                if in_window {
                    let secs = now.duration_since(window_t0).as_secs_f64();
                    let burst = if floor > 0.0 { floor.max(1.0) } else { 0.0 };
                    let bound = ratio * requests as f64 + cap + burst + floor * secs;
                    prop_assert!(retries as f64 <= bound + 1e-6,
                        "{} retries for {} requests in {}s (ratio {}, cap {}, floor {})",
                        retries, requests, secs, ratio, cap, floor);
                }
            }
        }
    }
}
