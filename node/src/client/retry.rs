//! The retry policy a client's requests share: the retry budget, one
//! circuit breaker per node, the backoff between rounds, and counters.
//!
//! The decisions are made here, with the time passed in; `Client::key_call`
//! only sends, sleeps and reports outcomes. Locks are held for a few
//! arithmetic steps, never across an await.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::backoff::Backoff;
use super::breaker::{Breaker, BreakerConfig, BreakerState};
use super::budget::RetryBudget;
use super::{ClientConfig, ClientError};
use crate::proto::{Response, WireError};

/// What an attempt's outcome says about the node that answered it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// The node works (it answered, even if with a refusal about the
    /// request itself or about other replicas).
    Healthy,
    /// The node is unreachable, too slow, or not serving.
    Failed,
    /// The node is alive but shedding load; keep away for this long.
    Overloaded(Duration),
}

/// Judges a node by one attempt's outcome.
pub(super) fn verdict(result: &Result<Response, ClientError>) -> Verdict {
    match result {
        Ok(_) => Verdict::Healthy,
        Err(ClientError::Server(WireError::Overloaded { retry_after_ms })) => {
            Verdict::Overloaded(Duration::from_millis(u64::from(*retry_after_ms)))
        }
        // Not running requests in time, or not serving at all: the node
        // is the problem, another replica may do better.
        Err(ClientError::Server(
            WireError::DeadlineExceeded | WireError::ShuttingDown | WireError::Unavailable { .. },
        )) => Verdict::Failed,
        // Any other answer (a stale map, a quorum the other replicas did
        // not reach, a refused key) shows the node itself is working.
        Err(ClientError::Server(_)) => Verdict::Healthy,
        Err(
            ClientError::Connect { .. }
            | ClientError::ConnectTimeout { .. }
            | ClientError::HeldOff { .. }
            | ClientError::Handshake { .. }
            | ClientError::Tls { .. }
            | ClientError::Timeout { .. }
            | ClientError::ConnectionClosed { .. },
        ) => Verdict::Failed,
        Err(_) => Verdict::Healthy,
    }
}

/// Where the next round of attempts goes.
/// Replicas a request may crash before it is sent to no other: one crash
/// may be that node's own trouble, two of the same request is the query
/// of death, and a third attempt would only spread it.
pub(super) const MAX_CRASHES: u32 = 2;

/// Whether an attempt ended as if the request crashed the handler: the
/// node answered `Internal` (it caught a panic), or the connection closed
/// with the request in flight (the process may have died of it).
pub(super) fn crashed_handler(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::ConnectionClosed { .. } | ClientError::Server(WireError::Internal { .. })
    )
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Route {
    /// Try these, in order.
    Try(Vec<String>),
    /// No replica is available now, but one will be at this instant
    /// (a cool-down or an overload hold-off ends): wait rather than
    /// send to a node that asked not to be sent to.
    WaitUntil(Instant),
    /// No replica is available now, the first to be is one held off for
    /// its `Overloaded` answer (its breaker closed), and the overload is
    /// the cluster's ([`retries_overloaded`]): refuse the request here;
    /// that replica is back at this instant.
    Refuse(Instant),
}

/// Whether a request goes on after an `Overloaded` answer (to the next
/// replica, or waiting for a held-off one), given the share of the
/// client's recent requests that ended refused as overloaded and
/// `ClientConfig::overload_retry_below`: only while that share is below
/// it (one node short of room, not the cluster); always at 1 or more.
pub(super) fn retries_overloaded(refused_share: f64, below: f64) -> bool {
    below >= 1.0 || refused_share < below
}

/// Why a logical request stops retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stop {
    /// It has made `max_attempts` attempts.
    MaxAttempts,
    /// The client's retry budget is spent.
    Budget,
}

/// Counters over the client's lifetime.
#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    attempts: AtomicU64,
    budget_exhausted: AtomicU64,
}

/// Budget, breakers and counters of one client.
pub(super) struct Retry {
    max_attempts: u32,
    backoff: Backoff,
    breaker: BreakerConfig,
    budget: Mutex<RetryBudget>,
    breakers: Mutex<HashMap<String, Breaker>>,
    counters: Counters,
}

impl Retry {
    pub(super) fn new(config: &ClientConfig, now: Instant) -> Self {
        Self {
            max_attempts: config.max_attempts.max(1),
            backoff: Backoff {
                base: config.backoff_base,
                cap: config.backoff_cap,
            },
            breaker: BreakerConfig {
                threshold: config.breaker_failures,
                cooldown: config.breaker_cooldown,
                max_cooldown: config.breaker_max_cooldown,
            },
            budget: Mutex::new(RetryBudget::new(
                config.retry_budget_ratio,
                config.retry_budget_cap,
                config.retry_budget_floor_per_sec,
                now,
            )),
            breakers: Mutex::default(),
            counters: Counters::default(),
        }
    }

    /// A new logical request: counts it and earns budget.
    pub(super) fn begin(&self) -> Attempts<'_> {
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        lock(&self.budget).on_request();
        Attempts {
            retry: self,
            sent: 0,
            free_resends: 0,
            crashes: 0,
        }
    }

    /// The replicas to try this round: those available now, in the given
    /// order. When none is: refuse, if the first to be available is held
    /// off for overload and `retry_overloaded` is false; else wait for it,
    /// if that is before `deadline`; otherwise try them all, soonest
    /// available first (the breaker skips a node only when another can
    /// take the request).
    pub(super) fn route(
        &self,
        replicas: &[String],
        now: Instant,
        deadline: Instant,
        retry_overloaded: bool,
    ) -> Route {
        let breakers = lock(&self.breakers);
        let available_at = |addr: &String| {
            breakers
                .get(addr)
                .and_then(|b| b.available_at(now))
                .unwrap_or(now)
        };
        let ready: Vec<String> = replicas
            .iter()
            .filter(|a| available_at(a) <= now)
            .cloned()
            .collect();
        if !ready.is_empty() || replicas.is_empty() {
            return Route::Try(ready);
        }
        let mut all: Vec<(Instant, String)> = replicas
            .iter()
            .map(|a| (available_at(a), a.clone()))
            .collect();
        all.sort_by_key(|(at, _)| *at);
        let held_off_only =
            |addr: &String| breakers.get(addr).is_some_and(|b| b.held_off_only(now));
        match all.first() {
            Some((at, addr)) if !retry_overloaded && held_off_only(addr) => Route::Refuse(*at),
            Some((at, _)) if *at < deadline => Route::WaitUntil(*at),
            _ => Route::Try(all.into_iter().map(|(_, a)| a).collect()),
        }
    }

    /// Marks an attempt to `addr` as started (the probe, if its breaker is
    /// half-open).
    pub(super) fn acquire(&self, addr: &str, now: Instant) {
        // A forced attempt to an unavailable node changes nothing.
        let _ = self.breaker_mut(addr, |b| b.acquire(now));
    }

    /// Records what an attempt says about its node.
    pub(super) fn record(&self, addr: &str, verdict: Verdict, now: Instant) {
        self.breaker_mut(addr, |b| match verdict {
            Verdict::Healthy => b.on_success(),
            Verdict::Failed => b.on_failure(now),
            Verdict::Overloaded(after) => b.hold_off_until(now + after),
        });
    }

    /// The wait before retry round `round` (0 = the first retry round).
    pub(super) fn backoff(&self, round: u32) -> Duration {
        self.backoff.delay(round, rand::random::<f64>())
    }

    /// The longest a wait for an unavailable replica lasts before the
    /// routes are looked at again (a probe by another request may have
    /// closed a breaker meanwhile).
    pub(super) fn max_wait(&self) -> Duration {
        self.backoff.cap.max(Duration::from_millis(1))
    }

    /// The breaker state for a node (closed if it was never used).
    pub(super) fn breaker_state(&self, addr: &str, now: Instant) -> BreakerState {
        lock(&self.breakers)
            .get(addr)
            .map_or(BreakerState::Closed, |b| b.state(now))
    }

    pub(super) fn requests(&self) -> u64 {
        self.counters.requests.load(Ordering::Relaxed)
    }

    pub(super) fn attempts(&self) -> u64 {
        self.counters.attempts.load(Ordering::Relaxed)
    }

    pub(super) fn budget_exhausted(&self) -> u64 {
        self.counters.budget_exhausted.load(Ordering::Relaxed)
    }

    fn breaker_mut<T>(&self, addr: &str, f: impl FnOnce(&mut Breaker) -> T) -> T {
        let mut breakers = lock(&self.breakers);
        let breaker = breakers
            .entry(addr.to_owned())
            .or_insert_with(|| Breaker::new(self.breaker));
        f(breaker)
    }
}

/// The attempts of one logical request.
pub(super) struct Attempts<'a> {
    retry: &'a Retry,
    /// Attempts sent so far.
    sent: u32,
    /// Resends that neither count against `max_attempts` nor spend budget.
    free_resends: u32,
    /// Attempts that ended in [`crashed_handler`].
    crashes: u32,
}

impl Attempts<'_> {
    /// Allows the next attempt, or says why there is none. The first is
    /// always allowed; each later one is a retry and spends budget.
    pub(super) fn next(&mut self, now: Instant) -> Result<(), Stop> {
        if self.sent > 0 {
            if self.free_resends > 0 {
                self.free_resends -= 1;
            } else if self.sent >= self.retry.max_attempts {
                return Err(Stop::MaxAttempts);
            } else if lock(&self.retry.budget).try_retry(now).is_err() {
                self.give_up(Stop::Budget);
                return Err(Stop::Budget);
            }
        }
        self.sent += 1;
        self.retry.counters.attempts.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// The next attempt resends after a map refresh: it corrects the
    /// routing rather than repeating a failure, and happens at most once
    /// per request, so it is not charged as a retry.
    /// Counts an attempt that crashed its handler; `Some(crashes)` once no
    /// replica should be tried again ([`MAX_CRASHES`]).
    pub(super) fn crashed(&mut self) -> Option<u32> {
        self.crashes += 1;
        (self.crashes >= MAX_CRASHES).then_some(self.crashes)
    }

    pub(super) fn grant_resend(&mut self) {
        self.free_resends += 1;
    }

    /// Why no attempt can follow the ones made so far, if none can. Spends
    /// nothing: a caller asks before sleeping through a backoff that no
    /// retry would follow.
    pub(super) fn stop_reason(&self, now: Instant) -> Option<Stop> {
        if self.free_resends > 0 {
            None
        } else if self.sent >= self.retry.max_attempts {
            Some(Stop::MaxAttempts)
        } else if !lock(&self.retry.budget).can_retry(now) {
            Some(Stop::Budget)
        } else {
            None
        }
    }

    /// Ends the request's retries for `stop` (counted if it is the budget).
    pub(super) fn give_up(&self, stop: Stop) {
        if stop == Stop::Budget {
            self.retry
                .counters
                .budget_exhausted
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether no attempt can follow the one just allowed: then it gets
    /// all the time left instead of the per-attempt timeout.
    pub(super) fn is_last(&self, now: Instant) -> bool {
        self.stop_reason(now).is_some()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ClientConfig {
        ClientConfig {
            max_attempts: 3,
            retry_budget_ratio: 0.5,
            retry_budget_cap: 10.0,
            retry_budget_floor_per_sec: 0.0,
            breaker_failures: 1,
            breaker_cooldown: Duration::from_secs(1),
            breaker_max_cooldown: Duration::from_secs(4),
            ..ClientConfig::default()
        }
    }

    fn addrs(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn attempts_stop_at_max_attempts() {
        let t0 = Instant::now();
        let retry = Retry::new(&config(), t0);
        for _ in 0..10 {
            let _ = retry.begin();
        }
        let mut call = retry.begin();
        assert_eq!(call.next(t0), Ok(()));
        assert_eq!(call.next(t0), Ok(()));
        assert_eq!(call.next(t0), Ok(()));
        assert!(call.is_last(t0));
        assert_eq!(call.next(t0), Err(Stop::MaxAttempts));
        assert_eq!(retry.attempts(), 3);
    }

    #[test]
    fn retries_stop_when_the_budget_is_spent() {
        let t0 = Instant::now();
        let retry = Retry::new(&config(), t0);
        let mut first = retry.begin();
        assert_eq!(first.next(t0), Ok(()), "the first attempt is free");
        assert!(first.is_last(t0), "half a token earned: no retry possible");
        assert_eq!(first.stop_reason(t0), Some(Stop::Budget));
        assert_eq!(first.next(t0), Err(Stop::Budget));
        assert_eq!(retry.budget_exhausted(), 1);
    }

    #[test]
    fn a_second_crashed_handler_stops_the_request() {
        let retry = Retry::new(&config(), Instant::now());
        let internal = ClientError::Server(WireError::Internal {
            incident: "0badf00d".into(),
        });
        let closed = ClientError::ConnectionClosed {
            addr: "a".into(),
            reason: None,
        };
        assert!(crashed_handler(&internal));
        assert!(crashed_handler(&closed));
        assert!(!crashed_handler(&ClientError::Server(
            WireError::DeadlineExceeded
        )));
        assert!(!crashed_handler(&ClientError::Timeout {
            addr: "a".into(),
            after: Duration::from_secs(1),
        }));
        let mut call = retry.begin();
        assert_eq!(call.crashed(), None, "one crash: one more replica");
        assert_eq!(call.crashed(), Some(MAX_CRASHES), "two: no third");
    }

    #[test]
    fn a_resend_after_a_map_refresh_is_not_charged() {
        let t0 = Instant::now();
        let retry = Retry::new(&config(), t0);
        let mut call = retry.begin();
        assert_eq!(call.next(t0), Ok(()));
        call.grant_resend();
        assert!(!call.is_last(t0));
        assert_eq!(call.next(t0), Ok(()));
        assert_eq!(call.next(t0), Err(Stop::Budget));
        assert_eq!(retry.attempts(), 2);
    }

    #[test]
    fn routes_skip_open_nodes_while_another_is_available() {
        let t0 = Instant::now();
        let retry = Retry::new(&config(), t0);
        let deadline = t0 + Duration::from_secs(5);
        let all = addrs(&["a", "b", "c"]);
        retry.record("a", Verdict::Failed, t0);
        assert_eq!(retry.breaker_state("a", t0), BreakerState::Open);
        assert_eq!(
            retry.route(&all, t0, deadline, true),
            Route::Try(addrs(&["b", "c"]))
        );
        retry.record("b", Verdict::Overloaded(Duration::from_millis(100)), t0);
        assert_eq!(retry.breaker_state("b", t0), BreakerState::Closed);
        assert_eq!(
            retry.route(&all, t0, deadline, true),
            Route::Try(addrs(&["c"]))
        );
    }

    #[test]
    fn with_no_node_available_a_route_waits_or_tries_all() {
        let t0 = Instant::now();
        let retry = Retry::new(&config(), t0);
        let all = addrs(&["a", "b"]);
        retry.record("a", Verdict::Failed, t0);
        retry.record("b", Verdict::Overloaded(Duration::from_millis(100)), t0);
        let soon = t0 + Duration::from_millis(100);
        let later = t0 + Duration::from_secs(5);
        assert_eq!(retry.route(&all, t0, later, true), Route::WaitUntil(soon));
        // Past the deadline, waiting is useless: try all, soonest first.
        assert_eq!(
            retry.route(&all, t0, soon, true),
            Route::Try(addrs(&["b", "a"]))
        );
        // The first available is b, held off for its `Overloaded`: when
        // the overload is the cluster's, refused, deadline or not.
        assert_eq!(retry.route(&all, t0, later, false), Route::Refuse(soon));
        assert_eq!(retry.route(&all, t0, soon, false), Route::Refuse(soon));
        // Held off longer than a's cool-down (1 s): a's probe comes first,
        // and a is not refusing, it failed: wait for it.
        retry.record("b", Verdict::Overloaded(Duration::from_secs(2)), t0);
        assert_eq!(
            retry.route(&all, t0, later, false),
            Route::WaitUntil(t0 + Duration::from_secs(1))
        );
    }

    #[test]
    fn overloaded_answers_are_retried_only_while_the_cluster_mostly_accepts() {
        assert!(retries_overloaded(0.0, 0.1));
        assert!(retries_overloaded(0.09, 0.1));
        assert!(!retries_overloaded(0.1, 0.1));
        assert!(!retries_overloaded(0.6, 0.1));
        assert!(retries_overloaded(1.0, 1.0), "1 retries always");
        assert!(!retries_overloaded(0.0, 0.0), "0 never");
    }

    #[test]
    fn verdicts_blame_only_the_node_itself() {
        let server = |e| Err(ClientError::Server(e));
        assert_eq!(
            verdict(&Ok(Response::Pong { protocol: 1 })),
            Verdict::Healthy
        );
        assert_eq!(
            verdict(&server(WireError::Overloaded { retry_after_ms: 20 })),
            Verdict::Overloaded(Duration::from_millis(20))
        );
        assert_eq!(verdict(&server(WireError::ShuttingDown)), Verdict::Failed);
        assert_eq!(
            verdict(&server(WireError::StaleMap { epoch: 3 })),
            Verdict::Healthy
        );
        assert_eq!(verdict(&server(WireError::EmptyKey)), Verdict::Healthy);
        assert_eq!(
            verdict(&Err(ClientError::Timeout {
                addr: "a".into(),
                after: Duration::from_secs(1)
            })),
            Verdict::Failed
        );
    }
}
