//! The adaptive concurrency limit for foreground requests: a Gradient2-class
//! algorithm (after Netflix's `concurrency-limits`). Pure: time and
//! latencies are parameters, so tests drive it with simulated ones.
//!
//! The idea: while short-term latency stays near the node's no-load
//! latency, requests are not waiting on each other and the limit may grow;
//! once it rises above `tolerance ×` that, requests queue inside the node
//! (disk, CPU, locks) and the limit shrinks in proportion.
//!
//! The no-load estimate (`base`) is the lowest short-term latency seen,
//! allowed to drift upwards slowly (`base_drift_per_sec`). Two choices
//! there, each against a failure seen in practice:
//! - It is a minimum of the *smoothed* latency, not of single samples: in a
//!   mix of 50 µs cached reads and 2 ms synced writes one lucky read would
//!   otherwise set a base no mix can meet, and pin the limit to its floor.
//! - It is a minimum, not Gradient2's long exponential average: under
//!   lasting overload an average follows the queueing latency up, and the
//!   limit climbs back to the ceiling while requests still queue. It rises
//!   (slowly) only while the latency cannot be queueing (few requests in
//!   flight, or the limit already at its floor), so a real change of
//!   workload (larger values, slower disk) still becomes the new normal.

use std::time::{Duration, Instant};

/// Bounds and tuning of the limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LimitConfig {
    /// The limit never goes below this: with too small a floor, one slow
    /// disk hiccup could throttle a node to a trickle.
    pub min: usize,
    /// The limit never goes above this: beyond it, memory and scheduler
    /// cost grow without adding throughput.
    pub max: usize,
    /// Where the limit starts, clamped into `[min, max]`. 256, the
    /// per-connection in-flight cap: group-committed writes make high
    /// concurrency cheap, and a fresh node should take one client's burst
    /// before it has measured anything.
    pub initial: usize,
    /// Short-term latency above `tolerance ×` the no-load latency starts
    /// shrinking the limit. 1.5 as in Gradient2: ordinary jitter is not
    /// mistaken for queueing, and a node at its limit runs at most about
    /// 1.5× its unloaded latency.
    pub tolerance: f64,
    /// Weight of a new limit against the old one (0..1]. Smaller reacts
    /// more slowly but oscillates less; 0.2 as in Gradient2.
    pub smoothing: f64,
    /// Samples averaged by the short-term latency (an EWMA over about this
    /// many samples): enough to smooth a mix of fast and slow operations.
    pub short_window: f64,
    /// How fast (fraction per second) the no-load estimate may rise
    /// towards latencies above it, while they cannot be queueing. 2 %/s:
    /// doubling takes ~35 s, far longer than a burst, short enough to
    /// adopt a slower workload within a minute or two.
    pub base_drift_per_sec: f64,
}

impl Default for LimitConfig {
    fn default() -> Self {
        Self {
            min: 32,
            max: 1000,
            initial: 256,
            tolerance: 1.5,
            smoothing: 0.2,
            short_window: 10.0,
            base_drift_per_sec: 0.02,
        }
    }
}

/// The state of the limit.
#[derive(Debug, Clone)]
pub struct GradientLimit {
    config: LimitConfig,
    limit: f64,
    /// Short-term latency (seconds); `None` until the first sample.
    short_rtt: Option<f64>,
    /// No-load latency estimate (seconds) and when it was last updated.
    base: Option<(f64, Instant)>,
    /// The limit reached its floor and latency is still above tolerance:
    /// the base may rise until latency is within tolerance again.
    recovering: bool,
}

impl GradientLimit {
    /// A limit at `config.initial` (clamped into its bounds).
    pub fn new(config: LimitConfig) -> Self {
        let min = config.min.max(1);
        let config = LimitConfig {
            min,
            max: config.max.max(min),
            ..config
        };
        let limit = config.initial.clamp(config.min, config.max) as f64;
        Self {
            config,
            limit,
            short_rtt: None,
            base: None,
            recovering: false,
        }
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.limit as usize
    }

    /// The short-term latency, once there is one.
    pub fn rtt(&self) -> Option<Duration> {
        self.short_rtt.map(Duration::from_secs_f64)
    }

    /// The no-load latency estimate, once there is one.
    pub fn base_rtt(&self) -> Option<Duration> {
        self.base.map(|(b, _)| Duration::from_secs_f64(b))
    }

    /// Takes one completed request's latency, the number of requests in
    /// flight when it completed, and the time; returns the new limit.
    pub fn on_sample(&mut self, rtt: Duration, inflight: usize, now: Instant) -> usize {
        let rtt = rtt.as_secs_f64().max(1e-6);
        let short = match self.short_rtt {
            None => rtt,
            Some(p) => p + 2.0 / (self.config.short_window.max(1.0) + 1.0) * (rtt - p),
        };
        self.short_rtt = Some(short);
        // The base may only rise on evidence that the latency is not
        // queueing: few requests in flight, or the limit pushed down to its
        // floor without the latency coming down (backing off further is not
        // allowed, so this is the latency the node has; it then rises until
        // the limit may grow again). Under queueing at a higher limit it
        // stays, so a lasting overload keeps the limit down.
        if self.limit() <= self.config.min {
            self.recovering = true;
        }
        let unqueued = (inflight as f64) < self.limit / 2.0 || self.recovering;
        let base = match self.base {
            None => short,
            Some((b, at)) if unqueued => {
                let dt = now.saturating_duration_since(at).as_secs_f64();
                short.min(b * (1.0 + self.config.base_drift_per_sec * dt))
            }
            Some((b, _)) => short.min(b),
        };
        self.base = Some((base, now));
        if self.config.tolerance * base >= short {
            self.recovering = false;
        }

        // Too few requests to tell whether the limit is right: an idle node
        // must not grow its limit to the ceiling on the strength of nothing.
        if (inflight as f64) < self.limit / 2.0 {
            return self.limit();
        }
        let gradient = (self.config.tolerance * base / short).clamp(0.5, 1.0);
        // Headroom so the limit can probe upwards while latency is steady.
        let queue = self.limit.sqrt();
        let target = self.limit * gradient + queue;
        let smoothed = self.limit * (1.0 - self.config.smoothing) + target * self.config.smoothing;
        self.limit = smoothed.clamp(self.config.min as f64, self.config.max as f64);
        self.limit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Simulated time: 1000 samples a second.
    struct Clock(Instant);

    impl Clock {
        fn tick(&mut self) -> Instant {
            self.0 += Duration::from_millis(1);
            self.0
        }
    }

    /// Feeds `n` samples of `rtt`, each with the pool saturated.
    fn feed(limit: &mut GradientLimit, clock: &mut Clock, rtt: Duration, n: usize) -> usize {
        for _ in 0..n {
            let inflight = limit.limit();
            limit.on_sample(rtt, inflight, clock.tick());
        }
        limit.limit()
    }

    #[test]
    fn steady_latency_lets_the_limit_grow_to_the_ceiling() {
        let mut limit = GradientLimit::new(LimitConfig::default());
        let mut clock = Clock(Instant::now());
        assert_eq!(feed(&mut limit, &mut clock, ms(1), 2_000), 1000);
    }

    #[test]
    fn a_latency_rise_shrinks_the_limit_and_a_fall_restores_it() {
        let mut limit = GradientLimit::new(LimitConfig::default());
        let mut clock = Clock(Instant::now());
        let before = feed(&mut limit, &mut clock, ms(1), 500);
        // Queueing: latency ten times higher.
        let during = feed(&mut limit, &mut clock, ms(10), 40);
        assert!(
            during * 4 < before,
            "limit {before} should fall well below a quarter, got {during}"
        );
        let after = feed(&mut limit, &mut clock, ms(1), 500);
        assert!(
            after > during * 4,
            "limit should recover: {during} -> {after}"
        );
    }

    #[test]
    fn an_idle_node_does_not_grow_its_limit() {
        let mut limit = GradientLimit::new(LimitConfig::default());
        let mut clock = Clock(Instant::now());
        for _ in 0..1_000 {
            limit.on_sample(ms(1), 1, clock.tick());
        }
        assert_eq!(limit.limit(), 256);
    }

    #[test]
    fn a_queueing_server_settles_near_its_capacity() {
        // A server with 20 workers: beyond 20 in flight, latency grows in
        // proportion (requests queue). The limit should end up near 20,
        // not at the floor or the ceiling.
        let mut limit = GradientLimit::new(LimitConfig::default());
        let mut clock = Clock(Instant::now());
        // The node starts quiet, as a real one does, and learns its
        // no-load latency.
        for _ in 0..100 {
            limit.on_sample(ms(2), 1, clock.tick());
        }
        for _ in 0..20_000 {
            let inflight = limit.limit();
            let rtt = ms(2).mul_f64((inflight as f64 / 20.0).max(1.0));
            limit.on_sample(rtt, inflight, clock.tick());
        }
        let settled = limit.limit();
        assert!((20..=60).contains(&settled), "settled at {settled}");
    }

    #[test]
    fn a_lasting_slower_workload_becomes_the_new_normal() {
        // Latency doubles for good without queueing (bigger values): the
        // limit first shrinks, then the base drifts up and it regrows.
        let mut limit = GradientLimit::new(LimitConfig::default());
        let mut clock = Clock(Instant::now());
        feed(&mut limit, &mut clock, ms(1), 2_000);
        let shrunk = feed(&mut limit, &mut clock, ms(4), 50);
        assert!(shrunk < 500, "{shrunk}");
        let regrown = feed(&mut limit, &mut clock, ms(4), 120_000);
        assert_eq!(regrown, 1000);
    }

    #[test]
    fn a_restarted_node_starting_at_the_floor_grows_only_while_latency_holds() {
        // Gentle rejoin: a restarted node starts at the floor. Healthy
        // latency under load earns the default initial limit back within
        // a couple of hundred requests; queueing latency keeps it down.
        let at_floor = LimitConfig {
            initial: LimitConfig::default().min,
            ..LimitConfig::default()
        };
        let mut healthy = GradientLimit::new(at_floor);
        let mut clock = Clock(Instant::now());
        assert_eq!(healthy.limit(), 32);
        let grown = feed(&mut healthy, &mut clock, ms(1), 200);
        assert!(grown >= 256, "healthy: {grown} after 200 requests");

        let mut slow = GradientLimit::new(at_floor);
        for _ in 0..50 {
            slow.on_sample(ms(1), 1, clock.tick());
        }
        // Every request now waits ten times its no-load latency.
        let held = feed(&mut slow, &mut clock, ms(10), 200);
        assert!(held < 48, "queueing: {held} after 200 requests");
    }

    #[test]
    fn the_initial_limit_is_clamped_into_the_bounds() {
        let config = LimitConfig {
            min: 2,
            max: 8,
            initial: 64,
            ..LimitConfig::default()
        };
        assert_eq!(GradientLimit::new(config).limit(), 8);
    }

    proptest! {
        #[test]
        fn the_limit_never_leaves_its_bounds(
            min in 1usize..50,
            span in 0usize..500,
            samples in proptest::collection::vec((1u64..100_000, 0usize..2_000), 1..400),
        ) {
            let config = LimitConfig { min, max: min + span, initial: min + span / 2, ..LimitConfig::default() };
            let mut limit = GradientLimit::new(config);
            let mut clock = Clock(Instant::now());
            for (micros, inflight) in samples {
                let l = limit.on_sample(Duration::from_micros(micros), inflight, clock.tick());
                prop_assert!(l >= min && l <= min + span, "limit {l} outside [{min}, {}]", min + span);
            }
        }
    }
}
