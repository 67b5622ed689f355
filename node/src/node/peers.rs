//! How a node calls its peers on the data path: replica writes and reads,
//! read repair, hint replay, anti-entropy, transfer pages. The connections
//! are the client library's [`Pool`]; in front of it, the decisions of
//! [`super::peer_guard`] (a circuit breaker per peer, one retry budget),
//! so a peer that stopped answering costs its first timeouts and then
//! nothing: calls to it are refused at once, counted, and the caller does
//! what it does for any failed call. When a breaker opens, the connection
//! to that peer is closed: the calls still waiting on it fail at once too
//! (a frozen peer's full socket would hold them until their timeouts),
//! the peer is not handed their backlog when it wakes, and the probe dials
//! afresh rather than queueing behind it.
//!
//! Every call has a timeout, chosen by its caller: a replica write or
//! read gets what is left of the client's request deadline (which a
//! client sets to its attempt timeout, 1 s), read repair and a replayed
//! hint 5 s, anti-entropy and a transfer page 10 s, a heartbeat one
//! heartbeat interval; connecting counts against the same timeout, and
//! gets at most 500 ms of it.
//!
//! Heartbeats go past the breaker ([`Peers::request_past_breaker`]):
//! silence is exactly what the leader's failure detector measures, and a
//! breaker in front of them would make this node's view of the leader its
//! own silence.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::peer_guard::{Admit, Change, GuardConfig, PeerGuard, Verdict, judge};
use crate::admission::Admission;
use crate::client::ClientError;
use crate::client::pool::Pool;
use crate::metrics::PeerEvent;
use crate::proto::{NodeRequest, Response};

/// The node's calls to its peers.
pub struct Peers {
    pool: Pool,
    guard: Mutex<PeerGuard>,
    /// Where the calls are counted (the node's metrics).
    admission: Arc<Admission>,
}

impl Peers {
    /// Calls through `pool`, guarded as `config` says, counted in
    /// `admission`'s metrics.
    pub fn new(pool: Pool, config: GuardConfig, admission: Arc<Admission>) -> Self {
        Self {
            pool,
            guard: Mutex::new(PeerGuard::new(config, Instant::now())),
            admission,
        }
    }

    /// Orders `addrs` best first by load, as the pool has seen each peer
    /// (see [`Pool::rank`]); peers whose breaker refuses calls now go
    /// last, so a read asks them only when no other replica is left.
    pub fn rank(&self, addrs: &mut [String]) {
        self.pool.rank(addrs);
        let now = Instant::now();
        let guard = self.guard();
        // Stable: the ranking holds within each group.
        addrs.sort_by_key(|a| !guard.is_available(a, now));
    }

    /// Whether a call to `addr` would go now (its breaker is not open).
    /// Takes nothing: for work that costs something before its call.
    pub fn is_available(&self, addr: &str) -> bool {
        self.guard().is_available(addr, Instant::now())
    }

    /// Sends `request` to `addr` and waits up to `timeout`, unless the
    /// peer's breaker is open: then it fails at once with
    /// [`ClientError::BreakerOpen`].
    pub async fn request(
        &self,
        addr: &str,
        request: NodeRequest,
        timeout: Duration,
    ) -> Result<Response, ClientError> {
        let probe = match self.guard().admit(addr, Instant::now()) {
            Admit::Go { probe } => probe,
            Admit::Refused { retry_in } => {
                self.count(PeerEvent::Refused);
                return Err(ClientError::BreakerOpen {
                    addr: addr.to_owned(),
                    retry_in,
                });
            }
        };
        let mut out = Outstanding {
            peers: self,
            addr,
            probe,
            done: false,
        };
        let result = self.pool.request(addr, request, timeout).await;
        out.done = true;
        let verdict = judge(&result);
        if verdict == Verdict::TimedOut {
            self.count(PeerEvent::TimedOut);
        }
        let change = self.guard().record(addr, verdict, probe, Instant::now());
        match change {
            Some(Change::Opened) => {
                tracing::warn!(
                    peer = addr,
                    "calls to this peer keep timing out: its circuit breaker is open, calls are refused until a probe is answered"
                );
                // The calls still out on its connection would only wait
                // for their timeouts too; the probe gets a fresh one.
                self.pool.close(addr);
            }
            Some(Change::Closed) => {
                tracing::info!(
                    peer = addr,
                    "peer answers again: its circuit breaker is closed"
                )
            }
            None => {}
        }
        if change.is_some() {
            self.export();
        }
        result
    }

    /// Sends `request` to `addr` past the breaker, without feeding it:
    /// for heartbeats (see the module's comment).
    pub async fn request_past_breaker(
        &self,
        addr: &str,
        request: NodeRequest,
        timeout: Duration,
    ) -> Result<Response, ClientError> {
        self.pool.request(addr, request, timeout).await
    }

    /// Spends one retry token before a retry or a hedge; `false` (counted)
    /// when the budget is spent and the retry must not be made.
    pub fn try_retry(&self) -> bool {
        let granted = self.guard().try_retry(Instant::now());
        self.count(if granted {
            PeerEvent::Retried
        } else {
            PeerEvent::RetryRefused
        });
        granted
    }

    /// Writes the breakers' states into the metrics. Also called every
    /// heartbeat: an open breaker turns half-open with time alone.
    pub fn export(&self) {
        let counts = self.guard().counts(Instant::now());
        self.admission
            .metrics()
            .set_peer_breakers(counts.open, counts.half_open);
    }

    fn count(&self, event: PeerEvent) {
        self.admission.metrics().record_peer(event);
    }

    fn guard(&self) -> std::sync::MutexGuard<'_, PeerGuard> {
        self.guard.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A call admitted and not finished. Dropped before its outcome (the
/// caller stopped waiting: a hedged read answered by others, a transfer
/// cancelled), it releases the probe it may hold.
struct Outstanding<'a> {
    peers: &'a Peers,
    addr: &'a str,
    probe: bool,
    done: bool,
}

impl Drop for Outstanding<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.peers.guard().abandoned(self.addr, self.probe);
        }
    }
}
