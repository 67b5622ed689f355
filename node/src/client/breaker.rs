//! A circuit breaker for one node. Pure: time is a parameter.
//!
//! **Closed** (normal): requests go through; `threshold` failures in a row
//! open it. Consecutive failures rather than a failure rate over a window:
//! a client may send a node a handful of requests a minute or thousands a
//! second, and a count needs no window size that suits both; a node that
//! is down fails every request, so a short run of failures detects it as
//! fast as a rate would, and one success in between (a flaky but working
//! node) keeps it closed.
//!
//! **Open**: the node is skipped while another replica can take the
//! request, for a cool-down. **Half-open** after the cool-down: one probe
//! request goes through; success closes the breaker, failure opens it
//! again for twice the previous cool-down, up to `max_cooldown`, so a node
//! that stays down costs ever fewer probes.
//!
//! Separately, [`Breaker::hold_off_until`] keeps requests away from a node
//! that answered `Overloaded` until its `retry_after`. That is not a
//! failure: the node is alive and protecting itself, and opening the
//! breaker would keep it out of rotation longer than it asked.

use std::time::{Duration, Instant};

/// Breaker settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker (at least 1).
    pub threshold: u32,
    /// The first cool-down after opening.
    pub cooldown: Duration,
    /// The longest cool-down after repeated failed probes.
    pub max_cooldown: Duration,
}

/// The state of a breaker, as reported to callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Requests go through.
    Closed,
    /// The node is skipped until the cool-down ends.
    Open,
    /// The cool-down is over; one probe may go (or is out).
    HalfOpen,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// `probe`: when the current probe was let through, if one is out.
    HalfOpen {
        probe: Option<Instant>,
    },
}

/// Breaker state for one node.
#[derive(Debug, Clone)]
pub struct Breaker {
    config: BreakerConfig,
    state: State,
    /// The cool-down used the last time the breaker opened; doubles on
    /// each failed probe.
    cooldown: Duration,
    /// No request before this instant: the node said it is overloaded.
    held_until: Option<Instant>,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            state: State::Closed { failures: 0 },
            cooldown: config.cooldown,
            held_until: None,
        }
    }

    /// The state at `now` (an open breaker whose cool-down has passed is
    /// reported half-open: the next request to it is the probe).
    pub fn state(&self, now: Instant) -> BreakerState {
        match self.state {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { until } if now < until => BreakerState::Open,
            State::Open { .. } | State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Whether a request could go to this node now. Changes nothing, so a
    /// caller can look at every replica before choosing one.
    pub fn is_available(&self, now: Instant) -> bool {
        !self.held_off(now) && self.lets_through(now)
    }

    /// Whether the breaker itself would let a request go, hold-off aside.
    fn lets_through(&self, now: Instant) -> bool {
        match self.state {
            State::Closed { .. } => true,
            State::Open { until } => now >= until,
            State::HalfOpen { probe } => self.probe_expired(probe, now),
        }
    }

    /// Whether the node asked, with `Overloaded`, to be sent nothing yet.
    fn held_off(&self, now: Instant) -> bool {
        self.held_until.is_some_and(|until| now < until)
    }

    /// When the node becomes available again, if it is not now.
    pub fn available_at(&self, now: Instant) -> Option<Instant> {
        if self.is_available(now) {
            return None;
        }
        let held = self.held_until.filter(|until| now < *until);
        let state = match self.state {
            State::Closed { .. } => None,
            State::Open { until } => Some(until),
            State::HalfOpen { probe } => probe.map(|p| p + self.cooldown),
        };
        held.max(state)
    }

    /// Whether the node is unavailable now only because it answered
    /// `Overloaded`: held off, while its breaker would let a request go.
    pub fn held_off_only(&self, now: Instant) -> bool {
        self.held_off(now) && self.lets_through(now)
    }

    /// Takes the way through for one request. In half-open, this request
    /// becomes the probe and no other goes until it reports or its
    /// cool-down passes. Returns `false` if the request should not go.
    pub fn acquire(&mut self, now: Instant) -> bool {
        if !self.is_available(now) {
            return false;
        }
        if matches!(self.state, State::Open { .. } | State::HalfOpen { .. }) {
            self.state = State::HalfOpen { probe: Some(now) };
        }
        true
    }

    /// The node answered: the breaker closes and the cool-down resets.
    pub fn on_success(&mut self) {
        self.state = State::Closed { failures: 0 };
        self.cooldown = self.config.cooldown;
    }

    /// The node failed a request (unreachable, timed out, unavailable).
    pub fn on_failure(&mut self, now: Instant) {
        match self.state {
            State::Closed { failures } => {
                let failures = failures.saturating_add(1);
                self.state = if failures >= self.config.threshold.max(1) {
                    self.cooldown = self.config.cooldown;
                    State::Open {
                        until: now + self.cooldown,
                    }
                } else {
                    State::Closed { failures }
                };
            }
            State::HalfOpen { .. } => {
                self.cooldown = self
                    .cooldown
                    .saturating_mul(2)
                    .min(self.config.max_cooldown)
                    .max(self.config.cooldown.min(self.config.max_cooldown));
                self.state = State::Open {
                    until: now + self.cooldown,
                };
            }
            // A late failure of a request sent before the breaker opened
            // says nothing new; the cool-down is not extended.
            State::Open { .. } => {}
        }
    }

    /// The probe let through by [`Breaker::acquire`] ended without saying
    /// anything about the node (it was abandoned, or failed in a way that
    /// cost nothing, such as a refused connection): the next request may
    /// probe at once, rather than after the probe's cool-down. Only the
    /// caller knows whether its request was the probe, so only it calls
    /// this; a breaker in any other state is left as it is.
    pub fn release_probe(&mut self) {
        if let State::HalfOpen { probe: Some(_) } = self.state {
            self.state = State::HalfOpen { probe: None };
        }
    }

    /// The node answered `Overloaded`: send it nothing before `until`.
    /// A later hold-off replaces an earlier one, never shortens it.
    pub fn hold_off_until(&mut self, until: Instant) {
        self.held_until = self.held_until.max(Some(until));
    }

    /// A probe that never reported (its request was abandoned) stops
    /// blocking the next one after a cool-down, so the breaker cannot stay
    /// half-open forever.
    fn probe_expired(&self, probe: Option<Instant>, now: Instant) -> bool {
        probe.is_none_or(|started| now >= started + self.cooldown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn breaker() -> Breaker {
        Breaker::new(BreakerConfig {
            threshold: 3,
            cooldown: S,
            max_cooldown: 4 * S,
        })
    }

    /// A breaker opened at `t0` by three failures.
    fn opened(t0: Instant) -> Breaker {
        let mut b = breaker();
        for _ in 0..3 {
            b.on_failure(t0);
        }
        b
    }

    #[test]
    fn closed_stays_closed_below_the_threshold() {
        let t0 = Instant::now();
        let mut b = breaker();
        b.on_failure(t0);
        b.on_failure(t0);
        assert_eq!(b.state(t0), BreakerState::Closed);
        assert!(b.acquire(t0));
    }

    #[test]
    fn a_success_resets_the_consecutive_count() {
        let t0 = Instant::now();
        let mut b = breaker();
        b.on_failure(t0);
        b.on_failure(t0);
        b.on_success();
        b.on_failure(t0);
        b.on_failure(t0);
        assert_eq!(b.state(t0), BreakerState::Closed);
    }

    #[test]
    fn closed_opens_after_threshold_consecutive_failures() {
        let t0 = Instant::now();
        let mut b = opened(t0);
        assert_eq!(b.state(t0), BreakerState::Open);
        assert!(!b.is_available(t0));
        assert!(!b.acquire(t0 + S / 2));
        assert_eq!(b.available_at(t0), Some(t0 + S));
    }

    #[test]
    fn open_becomes_half_open_after_the_cooldown_and_lets_one_probe() {
        let t0 = Instant::now();
        let mut b = opened(t0);
        let t1 = t0 + S;
        assert_eq!(b.state(t1), BreakerState::HalfOpen);
        assert!(b.acquire(t1), "the probe");
        assert!(!b.acquire(t1), "only one probe at a time");
        assert_eq!(b.state(t1), BreakerState::HalfOpen);
    }

    #[test]
    fn a_successful_probe_closes() {
        let t0 = Instant::now();
        let mut b = opened(t0);
        assert!(b.acquire(t0 + S));
        b.on_success();
        assert_eq!(b.state(t0 + S), BreakerState::Closed);
        assert!(b.acquire(t0 + S));
        assert!(b.acquire(t0 + S), "closed lets everything through");
    }

    #[test]
    fn a_failed_probe_reopens_with_a_doubled_capped_cooldown() {
        let t0 = Instant::now();
        let mut b = opened(t0);
        let mut now = t0 + S;
        for expected in [2 * S, 4 * S, 4 * S] {
            assert!(b.acquire(now));
            b.on_failure(now);
            assert_eq!(b.state(now), BreakerState::Open);
            assert_eq!(b.available_at(now), Some(now + expected));
            assert!(!b.acquire(now + expected - Duration::from_millis(1)));
            now += expected;
        }
        // Closing resets the cool-down for the next time it opens.
        assert!(b.acquire(now));
        b.on_success();
        for _ in 0..3 {
            b.on_failure(now);
        }
        assert_eq!(b.available_at(now), Some(now + S));
    }

    #[test]
    fn an_abandoned_probe_frees_the_way_after_a_cooldown() {
        let t0 = Instant::now();
        let mut b = opened(t0);
        assert!(b.acquire(t0 + S));
        assert_eq!(b.available_at(t0 + S), Some(t0 + 2 * S));
        assert!(
            b.acquire(t0 + 2 * S),
            "a second probe once the first is stale"
        );
    }

    #[test]
    fn a_released_probe_lets_the_next_request_probe_at_once() {
        let t0 = Instant::now();
        let mut b = opened(t0);
        assert!(b.acquire(t0 + S), "the probe");
        assert!(!b.acquire(t0 + S), "one probe at a time");
        b.release_probe();
        assert_eq!(b.state(t0 + S), BreakerState::HalfOpen);
        assert!(b.acquire(t0 + S), "the next probe, without waiting");
        // Releasing is only for the probe: a closed or open breaker stays.
        let mut closed = breaker();
        closed.on_failure(t0);
        closed.release_probe();
        closed.on_failure(t0);
        closed.on_failure(t0);
        assert_eq!(closed.state(t0), BreakerState::Open, "the count kept");
        let mut open = opened(t0);
        open.release_probe();
        assert!(!open.is_available(t0));
    }

    #[test]
    fn late_failures_while_open_do_not_extend_the_cooldown() {
        let t0 = Instant::now();
        let mut b = opened(t0);
        b.on_failure(t0 + S / 2);
        assert_eq!(b.available_at(t0 + S / 2), Some(t0 + S));
    }

    #[test]
    fn hold_off_keeps_a_closed_node_away_until_retry_after() {
        let t0 = Instant::now();
        let mut b = breaker();
        b.hold_off_until(t0 + S);
        assert_eq!(b.state(t0), BreakerState::Closed, "overload is no failure");
        assert!(!b.is_available(t0));
        assert!(!b.acquire(t0));
        assert_eq!(b.available_at(t0), Some(t0 + S));
        b.hold_off_until(t0 + S / 2);
        assert!(
            !b.acquire(t0 + S / 2),
            "a shorter hold-off does not shorten"
        );
        assert!(b.acquire(t0 + S));
    }

    #[test]
    fn hold_off_and_open_wait_for_the_later_of_the_two() {
        let t0 = Instant::now();
        let mut b = opened(t0);
        b.hold_off_until(t0 + 3 * S);
        assert_eq!(b.available_at(t0), Some(t0 + 3 * S));
        assert!(!b.acquire(t0 + S));
        assert!(b.acquire(t0 + 3 * S));
    }

    #[test]
    fn a_zero_threshold_behaves_as_one() {
        let t0 = Instant::now();
        let mut b = Breaker::new(BreakerConfig {
            threshold: 0,
            cooldown: S,
            max_cooldown: S,
        });
        b.on_failure(t0);
        assert_eq!(b.state(t0), BreakerState::Open);
    }
}
