//! Adaptive client-side throttling, as in Google's SRE book ("Handling
//! Overload"): each client remembers, over a short sliding window, how many
//! requests it made and how many the cluster accepted (answered with
//! anything but `Overloaded`), and refuses new requests itself with
//! probability `max(0, (requests − k·accepts) / (requests + 1))`.
//!
//! Why: a refusal that never leaves the client costs the cluster nothing,
//! while even a cheap `Overloaded` costs a node a read, a decode and a
//! write. When the cluster is asked for three times what it can do, the
//! nodes should spend their cycles on the third they can serve, not on
//! saying no to the rest. With `k` = 2 the cluster still sees up to twice
//! what it accepts, so it is always probed and the throttle lets go as
//! soon as capacity returns. Pure: time and the random draw are inputs.

use std::time::{Duration, Instant};

/// Buckets of the sliding window.
const BUCKETS: usize = 10;

/// The throttle's counts over a sliding window.
#[derive(Debug, Clone)]
pub struct Throttle {
    k: f64,
    bucket_len: Duration,
    /// (requests, accepts) per bucket, a ring.
    counts: [(u64, u64); BUCKETS],
    /// The bucket index `counts[current]` holds, counted from `origin`.
    current_epoch: u64,
    origin: Instant,
}

impl Throttle {
    /// A throttle over `window` with multiplier `k`; `k` ≤ 0 disables it.
    pub fn new(k: f64, window: Duration, now: Instant) -> Self {
        Self {
            k,
            bucket_len: (window / BUCKETS as u32).max(Duration::from_millis(1)),
            counts: [(0, 0); BUCKETS],
            current_epoch: 0,
            origin: now,
        }
    }

    fn advance(&mut self, now: Instant) {
        let epoch = (now.saturating_duration_since(self.origin).as_nanos()
            / self.bucket_len.as_nanos()) as u64;
        if epoch <= self.current_epoch {
            return;
        }
        let stale = (epoch - self.current_epoch).min(BUCKETS as u64);
        for i in 1..=stale {
            let index = ((self.current_epoch + i) % BUCKETS as u64) as usize;
            self.counts[index] = (0, 0);
        }
        self.current_epoch = epoch;
    }

    fn totals(&self) -> (u64, u64) {
        self.counts
            .iter()
            .fold((0, 0), |(r, a), (br, ba)| (r + br, a + ba))
    }

    /// The probability of refusing a request now.
    pub fn reject_probability(&mut self, now: Instant) -> f64 {
        if self.k <= 0.0 {
            return 0.0;
        }
        self.advance(now);
        let (requests, accepts) = self.totals();
        ((requests as f64 - self.k * accepts as f64) / (requests as f64 + 1.0)).max(0.0)
    }

    /// The share of the window's requests that ended refused as
    /// overloaded, by a node or by this throttle; 0 when none was made.
    /// Counted whether or not the throttle itself is on (`k` ≤ 0): the
    /// client's retries read it too (`ClientConfig::overload_retry_below`).
    pub fn refused_share(&mut self, now: Instant) -> f64 {
        self.advance(now);
        let (requests, accepts) = self.totals();
        if requests == 0 {
            return 0.0;
        }
        requests.saturating_sub(accepts) as f64 / requests as f64
    }

    /// Decides for one request, given a uniform draw in `[0, 1)`. A
    /// request refused here must be [`record`](Self::record)ed as not
    /// accepted, so the throttle keeps seeing the demand it turns away.
    pub fn admit(&mut self, random: f64, now: Instant) -> bool {
        random >= self.reject_probability(now)
    }

    fn slot(&mut self, now: Instant) -> &mut (u64, u64) {
        self.advance(now);
        &mut self.counts[(self.current_epoch % BUCKETS as u64) as usize]
    }

    /// Records a request's fate: accepted by the cluster (answered
    /// without `Overloaded`) or not (refused as overloaded, by a node or by
    /// this throttle). Requests that got no answer at all (a dead or
    /// unreachable cluster) are not recorded: the retry budget and the
    /// breakers handle those, and counting them would keep the throttle
    /// shut for long after the cluster is back.
    pub fn record(&mut self, accepted: bool, now: Instant) {
        let slot = self.slot(now);
        slot.0 += 1;
        if accepted {
            slot.1 += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const WINDOW: Duration = Duration::from_secs(10);

    #[test]
    fn a_healthy_cluster_is_never_throttled() {
        let t0 = Instant::now();
        let mut t = Throttle::new(2.0, WINDOW, t0);
        for i in 0..10_000u64 {
            let now = t0 + Duration::from_millis(i);
            assert!(t.admit(0.0, now), "request {i} refused");
            t.record(true, now);
        }
    }

    #[test]
    fn the_refused_share_counts_the_window_only_and_ignores_k() {
        let t0 = Instant::now();
        let mut t = Throttle::new(0.0, WINDOW, t0);
        assert_eq!(t.refused_share(t0), 0.0);
        for i in 0..1_000u64 {
            t.record(i % 4 != 0, t0 + Duration::from_millis(i));
        }
        let share = t.refused_share(t0 + Duration::from_secs(1));
        assert!((share - 0.25).abs() < 1e-9, "{share}");
        // Off (k = 0) it refuses nothing itself, but still counts.
        assert!(t.admit(0.0, t0 + Duration::from_secs(1)));
        assert_eq!(t.refused_share(t0 + WINDOW * 3), 0.0, "forgotten");
    }

    #[test]
    fn when_a_third_is_accepted_about_a_third_is_refused_locally() {
        let t0 = Instant::now();
        let mut t = Throttle::new(2.0, WINDOW, t0);
        for i in 0..3_000u64 {
            t.record(i % 3 == 0, t0 + Duration::from_millis(i));
        }
        let p = t.reject_probability(t0 + Duration::from_secs(3));
        // (3000 − 2·1000) / 3001.
        assert!((p - 1000.0 / 3001.0).abs() < 1e-9, "{p}");
    }

    #[test]
    fn the_throttle_forgets_an_overload_after_its_window() {
        let t0 = Instant::now();
        let mut t = Throttle::new(2.0, WINDOW, t0);
        for i in 0..1_000u64 {
            t.record(false, t0 + Duration::from_millis(i));
        }
        assert!(t.reject_probability(t0 + Duration::from_secs(1)) > 0.9);
        assert_eq!(
            t.reject_probability(t0 + WINDOW + Duration::from_secs(2)),
            0.0
        );
    }

    #[test]
    fn k_zero_disables_it() {
        let t0 = Instant::now();
        let mut t = Throttle::new(0.0, WINDOW, t0);
        for i in 0..100u64 {
            assert!(t.admit(0.999, t0 + Duration::from_millis(i)));
        }
    }

    proptest! {
        /// The probability stays in [0, 1), and with every request
        /// accepted it is 0.
        #[test]
        fn probability_is_bounded(
            events in prop::collection::vec((0u64..30_000, any::<bool>()), 1..500),
            k in 1.0f64..4.0,
        ) {
            let t0 = Instant::now();
            let mut t = Throttle::new(k, WINDOW, t0);
            let mut events = events;
            events.sort();
            for (ms, accepted) in events {
                let now = t0 + Duration::from_millis(ms);
                t.record(accepted, now);
                let p = t.reject_probability(now);
                prop_assert!((0.0..1.0).contains(&p), "{}", p);
            }
        }
    }
}
