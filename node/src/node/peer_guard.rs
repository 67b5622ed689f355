//! The decisions behind a node's calls to its peers (replica writes and
//! reads, hints, anti-entropy, transfer pages): one circuit breaker per
//! peer and one retry budget for the node, the client's own types
//! ([`crate::client::breaker`], [`crate::client::budget`]) with the
//! client's defaults. Pure: time is a parameter; `node/peers.rs` sends.
//!
//! **What opens a peer's breaker.** A call's outcome is judged by what it
//! cost ([`judge`]), which is narrower than a client's verdict:
//!
//! - *Answered* (any answer, `Overloaded` included) closes it. An
//!   overloaded peer is alive and refusing on purpose, and every caller
//!   already handles the refusal its own way (a write's hint, a transfer
//!   page's `retry_after`, the hint replay's backoff); opening the breaker
//!   on it would turn a short overload into a cool-down of refusals longer
//!   than the peer asked for.
//! - *Timed out* (no answer within the call's timeout, a connect or
//!   handshake that timed out, or `DeadlineExceeded`: the peer held the
//!   request until it no longer mattered) counts toward opening it: each
//!   such call cost its caller the whole wait, and a stopped, hung or
//!   partitioned peer costs exactly that, once per call, until the breaker
//!   opens.
//! - *Failed fast* (a refused connection, a connection closed under the
//!   call, a TLS or handshake refusal, the pool's hold-off after a failed
//!   connect, `Unavailable`, `ShuttingDown`) neither opens nor closes it:
//!   such a call cost nothing, so there is nothing to save, and counting
//!   it would keep a restarted peer, which refuses connections until it
//!   listens, behind a cool-down after it is back (a restart's first
//!   request served comes from the coordinators' replica writes within
//!   tens of milliseconds; BENCHMARKS.md, "Restart"). A probe that ends so
//!   is released: the next call probes at once.
//!
//! **Retries.** Every call sent earns the budget `ratio` tokens; a retry
//! (a call that repeats or replaces one that failed, or a hedge) spends
//! one, or is not made. So retries stay within about `ratio` of the calls
//! plus the floor, whatever fails.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::client::breaker::{Breaker, BreakerConfig, BreakerState};
use crate::client::budget::RetryBudget;
use crate::client::{ClientConfig, ClientError};
use crate::proto::{Response, WireError};

/// The longest cool-down of a peer's breaker, shorter than a client's
/// (30 s). A client skips a node while another replica serves its request,
/// at no cost, and thousands of clients may be probing it; a coordinator
/// has no other replica to send a write to: while a peer's breaker is open
/// its writes become hints to replay later, so a peer back from a freeze
/// must be found within seconds (with 30 s, the peer-stop benchmark's node
/// frozen for 20 s was kept out for 12 s after it woke). A few
/// coordinators probing every 4 s cost a dead peer nothing: each probe
/// dials afresh and waits at most a connect timeout, 500 ms.
pub const MAX_COOLDOWN: Duration = Duration::from_secs(4);

/// Most peers whose breaker is remembered. A breaker back to closed is
/// forgotten (a fresh one is the same), so this only bounds the peers
/// failing at once; peers come from the cluster map, far fewer than this.
const MAX_TRACKED: usize = 4096;

/// The guard's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GuardConfig {
    /// Breakers on (calls to an open one are refused) or off (every call
    /// goes, as before breakers existed; for measuring what they buy).
    pub breakers: bool,
    /// Consecutive timeouts that open a peer's breaker, and its cool-down.
    pub breaker: BreakerConfig,
    /// Retry tokens each call sent earns.
    pub retry_ratio: f64,
    /// Most retry tokens saved up.
    pub retry_cap: f64,
    /// Retries per second allowed whatever the call count.
    pub retry_floor_per_sec: f64,
}

impl GuardConfig {
    /// A client's settings, so a node treats its peers as a client treats
    /// the nodes (`ClientConfig`'s defaults: 5 timeouts open a breaker for
    /// 1 s, doubling; retries ≤ 10% of calls plus 10/s, 20 saved), but
    /// with cool-downs of at most [`MAX_COOLDOWN`].
    pub fn of(client: &ClientConfig, breakers: bool) -> Self {
        Self {
            breakers,
            breaker: BreakerConfig {
                threshold: client.breaker_failures,
                cooldown: client.breaker_cooldown.min(MAX_COOLDOWN),
                max_cooldown: client.breaker_max_cooldown.min(MAX_COOLDOWN),
            },
            retry_ratio: client.retry_budget_ratio,
            retry_cap: client.retry_budget_cap,
            retry_floor_per_sec: client.retry_budget_floor_per_sec,
        }
    }
}

/// What a call's outcome says about its peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The peer answered (whatever it said).
    Answered,
    /// The call cost its caller a timeout.
    TimedOut,
    /// The call failed at once; it says nothing the breaker needs.
    FailedFast,
}

/// Judges a peer by one call's outcome (see the module's comment).
pub fn judge(result: &Result<Response, ClientError>) -> Verdict {
    match result {
        Ok(_) => Verdict::Answered,
        Err(ClientError::Server(WireError::DeadlineExceeded)) => Verdict::TimedOut,
        Err(ClientError::Server(WireError::Unavailable { .. } | WireError::ShuttingDown)) => {
            Verdict::FailedFast
        }
        Err(ClientError::Server(_)) => Verdict::Answered,
        Err(ClientError::Timeout { .. }) => Verdict::TimedOut,
        Err(ClientError::Handshake {
            error: crate::proto::handshake::HandshakeError::Timeout(_),
            ..
        }) => Verdict::TimedOut,
        Err(ClientError::ConnectTimeout { .. }) => Verdict::TimedOut,
        // The pool's hold-off after a failed connect (`HeldOff`) cost
        // nothing, like a refused connect: fast failures, below.
        Err(_) => Verdict::FailedFast,
    }
}

/// Whether a call may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Send it; `probe` when it is the one call a half-open breaker lets
    /// through (its outcome decides the breaker).
    Go {
        /// This call is the half-open breaker's probe.
        probe: bool,
    },
    /// Refuse it at once: the peer's breaker is open.
    Refused {
        /// When the next probe may go.
        retry_in: Duration,
    },
}

/// A breaker that changed state, worth a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Closed → open: the peer's calls are refused from now on.
    Opened,
    /// Back to closed: the peer answered.
    Closed,
}

/// Peers whose breaker is not closed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Calls refused until the cool-down ends.
    pub open: u64,
    /// Cool-down over: the next call (or the one out) is the probe.
    pub half_open: u64,
}

/// Breakers by peer address, and the retry budget.
#[derive(Debug, Clone)]
pub struct PeerGuard {
    config: GuardConfig,
    /// Only peers whose breaker is not fresh: a closed breaker with no
    /// failure counted is dropped (a new one is the same).
    breakers: HashMap<String, Breaker>,
    budget: RetryBudget,
}

impl PeerGuard {
    /// Every breaker closed, nothing earned yet (the floor still allows a
    /// few retries a second).
    pub fn new(config: GuardConfig, now: Instant) -> Self {
        Self {
            config,
            breakers: HashMap::new(),
            budget: RetryBudget::new(
                config.retry_ratio,
                config.retry_cap,
                config.retry_floor_per_sec,
                now,
            ),
        }
    }

    /// Whether a call to `addr` may go now; a call that may is counted as
    /// sent (it earns retry budget) and, past a cool-down, becomes the
    /// probe.
    pub fn admit(&mut self, addr: &str, now: Instant) -> Admit {
        let breakers = self.config.breakers;
        let admit = match self.breakers.get_mut(addr) {
            Some(b) if breakers => {
                let probe = b.state(now) != BreakerState::Closed;
                if b.acquire(now) {
                    Admit::Go { probe }
                } else {
                    let at = b.available_at(now).unwrap_or(now);
                    Admit::Refused {
                        retry_in: at.saturating_duration_since(now),
                    }
                }
            }
            _ => Admit::Go { probe: false },
        };
        if matches!(admit, Admit::Go { .. }) {
            self.budget.on_request();
        }
        admit
    }

    /// Whether a call to `addr` would go now, without taking the probe or
    /// counting anything: for work that costs something before its call
    /// (anti-entropy scans its own copy first).
    pub fn is_available(&self, addr: &str, now: Instant) -> bool {
        !self.config.breakers || self.breakers.get(addr).is_none_or(|b| b.is_available(now))
    }

    /// Records what a call admitted by [`PeerGuard::admit`] said about
    /// `addr` (`probe` as `admit` answered).
    pub fn record(
        &mut self,
        addr: &str,
        verdict: Verdict,
        probe: bool,
        now: Instant,
    ) -> Option<Change> {
        if !self.config.breakers {
            return None;
        }
        match verdict {
            Verdict::Answered => {
                let was = self.breakers.remove(addr)?.state(now);
                (was != BreakerState::Closed).then_some(Change::Closed)
            }
            Verdict::TimedOut => {
                let breaker = self.breaker_mut(addr)?;
                let before = breaker.state(now);
                breaker.on_failure(now);
                (before == BreakerState::Closed && breaker.state(now) == BreakerState::Open)
                    .then_some(Change::Opened)
            }
            Verdict::FailedFast => {
                self.abandoned(addr, probe);
                None
            }
        }
    }

    /// A call admitted by [`PeerGuard::admit`] was dropped before its
    /// outcome (its caller stopped waiting): if it was the probe, the next
    /// call probes instead.
    pub fn abandoned(&mut self, addr: &str, probe: bool) {
        if probe && let Some(breaker) = self.breakers.get_mut(addr) {
            breaker.release_probe();
        }
    }

    /// Spends one retry token, or says no: a caller about to repeat or
    /// replace a failed call (or to hedge) asks first.
    pub fn try_retry(&mut self, now: Instant) -> bool {
        self.budget.try_retry(now).is_ok()
    }

    /// Peers whose breaker is open or half-open at `now`.
    pub fn counts(&self, now: Instant) -> Counts {
        let mut counts = Counts::default();
        for breaker in self.breakers.values() {
            match breaker.state(now) {
                BreakerState::Open => counts.open += 1,
                BreakerState::HalfOpen => counts.half_open += 1,
                BreakerState::Closed => {}
            }
        }
        counts
    }

    /// The breaker of `addr`, made if needed; `None` when `MAX_TRACKED`
    /// peers are failing at once and this one is new (it then stays
    /// closed: never refusing is the safe side).
    fn breaker_mut(&mut self, addr: &str) -> Option<&mut Breaker> {
        if !self.breakers.contains_key(addr) && self.breakers.len() >= MAX_TRACKED {
            return None;
        }
        let config = self.config.breaker;
        Some(
            self.breakers
                .entry(addr.to_owned())
                .or_insert_with(|| Breaker::new(config)),
        )
    }
}

#[cfg(test)]
mod tests;
