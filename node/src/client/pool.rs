//! A pool of connections, one per node address.
//!
//! Used by clients to reach the replicas of each key, and by nodes for the
//! data path (separate from Raft's connections, so bulk data never queues
//! in front of heartbeats; a node calls through `node/peers.rs`, which
//! adds a circuit breaker per peer). A node whose connect just failed is not dialled
//! again for a short while: requests to it fail at once (a client moves to
//! the next replica, a coordinator writes a hint) instead of each paying a
//! connect timeout.
//!
//! The pool also keeps the load board ([`super::load`]): every attempt
//! through it is counted out and back with its latency and the pressure
//! the node reported, so [`Pool::rank`] can order a key's replicas by how
//! loaded each looks, for a client and for a coordinator alike.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::load::{LoadBoard, LoadConfig, Outcome};
use super::{ClientError, Connection};
use crate::proto::{NodeRequest, Request, Response, WireError};
use crate::tls::Transport;

/// How long a node whose connect failed is not dialled again. Short: a
/// connect to a dead node fails fast on a LAN, so retrying a few times a
/// second costs little, while a longer hold-off keeps a restarted node
/// (ready in tens of milliseconds) without its replica writes for that
/// long — the restart benchmark measured 1 s to first served with 1 s.
const FAILED_CONNECT_HOLDOFF: Duration = Duration::from_millis(250);

/// Connections by address.
pub struct Pool {
    conns: Mutex<HashMap<String, Slot>>,
    connect_timeout: Duration,
    max_frame_bytes: u32,
    transport: Transport,
    loads: Mutex<LoadBoard>,
    /// The newest map epoch any node reported with an answer, and that
    /// node's address (it can serve that map).
    newest: Mutex<Option<(u64, String)>>,
    /// The epoch in `newest`, read without the lock: almost every answer
    /// names an epoch already known.
    newest_epoch: AtomicU64,
}

impl Default for Pool {
    fn default() -> Self {
        // Nodes talk to nodes: a short connect timeout, and frames as large
        // as any value a node accepts.
        Self::new(
            Duration::from_millis(500),
            64 * 1024 * 1024,
            Transport::Plain,
        )
    }
}

enum Slot {
    Open(Arc<Connection>),
    FailedUntil(Instant),
}

impl Pool {
    /// An empty pool.
    pub fn new(connect_timeout: Duration, max_frame_bytes: u32, transport: Transport) -> Self {
        Self {
            conns: Mutex::default(),
            connect_timeout,
            max_frame_bytes,
            transport,
            loads: Mutex::new(LoadBoard::new(LoadConfig::default())),
            newest: Mutex::new(None),
            newest_epoch: AtomicU64::new(0),
        }
    }

    /// The newest map epoch any node has reported with an answer, and the
    /// address of the node that reported it.
    pub fn newest_epoch(&self) -> Option<(u64, String)> {
        lock(&self.newest).clone()
    }

    /// Orders `addrs` best first by what this pool has seen of each node
    /// (latency, requests still out, reported pressure): two drawn at
    /// random, the better first, then the rest by score.
    pub fn rank(&self, addrs: &mut [String]) {
        let now = std::time::Instant::now();
        lock(&self.loads).rank(addrs, rand::random::<u64>(), now);
    }

    /// Sends a node-to-node request to `addr` and waits up to `timeout`.
    pub async fn request(
        &self,
        addr: &str,
        request: NodeRequest,
        timeout: Duration,
    ) -> Result<Response, ClientError> {
        self.send(addr, Request::Node(request), timeout).await
    }

    /// Sends any request to `addr` and waits up to `timeout`.
    pub async fn send(
        &self,
        addr: &str,
        request: Request,
        timeout: Duration,
    ) -> Result<Response, ClientError> {
        let started = std::time::Instant::now();
        lock(&self.loads).started(addr);
        let mut tally = Tally {
            loads: &self.loads,
            addr,
            outcome: None,
        };
        let conn = match self.connection(addr, timeout).await {
            Ok(conn) => conn,
            Err(e) => {
                tally.outcome = Some(Outcome::Failed {
                    after: started.elapsed(),
                });
                return Err(e);
            }
        };
        // Timed from here: opening a connection (a TLS handshake) says
        // nothing of how loaded the node is.
        let sent = std::time::Instant::now();
        let result = conn.request(request, timeout).await;
        if result.is_err() && conn.is_closed() {
            self.lock().remove(addr);
        }
        tally.outcome = Some(outcome(&result, sent.elapsed(), conn.pressure()));
        let epoch = conn.epoch();
        if epoch > self.newest_epoch.load(Ordering::Relaxed) {
            let mut newest = lock(&self.newest);
            if newest.as_ref().is_none_or(|(e, _)| *e < epoch) {
                *newest = Some((epoch, addr.to_owned()));
                self.newest_epoch.store(epoch, Ordering::Relaxed);
            }
        }
        result
    }

    /// Closes the connection to `addr`, if one is open: the requests still
    /// on it fail at once, and the next request dials afresh. A node does
    /// this when a peer's breaker opens, so calls queued behind a frozen
    /// peer's full socket are released (a write's hint is stored now, not
    /// at its timeout), the frozen peer is not handed that backlog when it
    /// wakes, and the probe that follows does not wait behind it.
    pub fn close(&self, addr: &str) {
        if let Some(Slot::Open(conn)) = self.lock().remove(addr) {
            conn.close();
        }
    }

    async fn connection(
        &self,
        addr: &str,
        timeout: Duration,
    ) -> Result<Arc<Connection>, ClientError> {
        match self.lock().get(addr) {
            Some(Slot::Open(conn)) if !conn.is_closed() => return Ok(conn.clone()),
            Some(Slot::FailedUntil(until)) if Instant::now() < *until => {
                return Err(ClientError::HeldOff {
                    addr: addr.to_owned(),
                    remaining: until.saturating_duration_since(Instant::now()),
                });
            }
            _ => {}
        }
        match Connection::connect(
            addr,
            &self.transport,
            self.connect_timeout.min(timeout),
            self.max_frame_bytes,
        )
        .await
        {
            Ok(conn) => {
                let conn = Arc::new(conn);
                self.lock()
                    .insert(addr.to_owned(), Slot::Open(conn.clone()));
                Ok(conn)
            }
            Err(e) => {
                self.lock().insert(
                    addr.to_owned(),
                    Slot::FailedUntil(Instant::now() + FAILED_CONNECT_HOLDOFF),
                );
                Err(e)
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        lock(&self.conns)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What an attempt says about its node's load.
fn outcome(result: &Result<Response, ClientError>, latency: Duration, pressure: u8) -> Outcome {
    match result {
        Ok(_) => Outcome::Answered { latency, pressure },
        Err(ClientError::Server(WireError::Overloaded { .. })) => Outcome::Refused { pressure },
        // Not serving: as bad as no answer.
        Err(ClientError::Server(WireError::ShuttingDown | WireError::Unavailable { .. })) => {
            Outcome::Failed { after: latency }
        }
        // Any other answer came from a working node, in this long.
        Err(ClientError::Server(_)) => Outcome::Answered { latency, pressure },
        Err(_) => Outcome::Failed { after: latency },
    }
}

/// Counts an attempt back in however it ends. One dropped before its
/// outcome (the caller stopped waiting: a hedged read answered by
/// others) is no longer out, and says nothing of the node.
struct Tally<'a> {
    loads: &'a Mutex<LoadBoard>,
    addr: &'a str,
    outcome: Option<Outcome>,
}

impl Drop for Tally<'_> {
    fn drop(&mut self) {
        let mut loads = lock(self.loads);
        match self.outcome {
            Some(outcome) => loads.finished(self.addr, outcome, std::time::Instant::now()),
            None => loads.abandoned(self.addr),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::handshake;
    use crate::storage::Version;
    use tokio::io::AsyncReadExt;

    /// Bounds every wait of the test below.
    const BOUND: Duration = Duration::from_secs(10);

    fn replicate(value_bytes: usize) -> NodeRequest {
        NodeRequest::Replicate {
            partition: 0,
            key: b"k".to_vec(),
            version: Version { hlc: 1, writer: 1 },
            value: Some(vec![7; value_bytes]),
        }
    }

    /// A failed connect holds the address off for a moment, and the
    /// error says so (it used to read "timed out after 0ns").
    #[tokio::test]
    async fn a_failed_connect_holds_the_address_off_and_says_so() {
        // A port nobody listens on: bound, then closed.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .to_string();
        let pool = Pool::new(BOUND, 1 << 20, Transport::Plain);
        let first = pool.request(&addr, replicate(1), BOUND).await;
        assert!(
            matches!(first, Err(ClientError::Connect { .. })),
            "{first:?}"
        );
        let second = pool.request(&addr, replicate(1), BOUND).await;
        match &second {
            Err(e @ ClientError::HeldOff { remaining, .. }) => {
                assert!(*remaining <= FAILED_CONNECT_HOLDOFF, "{remaining:?}");
                assert!(e.to_string().contains("its last connect failed"), "{e}");
            }
            other => panic!("{other:?}"),
        }
    }

    /// A peer that handshakes and then reads nothing (a frozen process):
    /// a request too big for the socket's buffers holds the writer, a
    /// second waits behind it. Closing fails both at once, and the peer
    /// is not sent the rest of the big frame.
    #[tokio::test]
    async fn closing_a_connection_to_a_peer_that_reads_nothing_frees_its_requests() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (read_now, wait_to_read) = tokio::sync::oneshot::channel::<()>();
        let peer = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            handshake::accept(&mut stream, BOUND).await.unwrap();
            let _ = wait_to_read.await;
            let mut received = Vec::new();
            let _ = tokio::time::timeout(BOUND, stream.read_to_end(&mut received)).await;
            received.len()
        });
        let pool = Arc::new(Pool::new(BOUND, 64 << 20, Transport::Plain));
        let conn = pool.connection(&addr, BOUND).await.unwrap();
        let big = 32 << 20;
        let calls: Vec<_> = [big, 16]
            .into_iter()
            .map(|bytes| {
                let (pool, addr) = (pool.clone(), addr.clone());
                tokio::spawn(async move {
                    let an_hour = Duration::from_secs(3600);
                    pool.request(&addr, replicate(bytes), an_hour).await
                })
            })
            .collect();
        // Both calls hold the connection (the pool's slot, this test, and
        // one each).
        tokio::time::timeout(BOUND, async {
            while Arc::strong_count(&conn) < 4 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("both calls on the connection");
        pool.close(&addr);
        for call in calls {
            let result = tokio::time::timeout(BOUND, call)
                .await
                .expect("freed by the close, not by its hour-long timeout")
                .unwrap();
            assert!(
                matches!(result, Err(ClientError::ConnectionClosed { .. })),
                "{result:?}"
            );
        }
        let _ = read_now.send(());
        let received = peer.await.unwrap();
        assert!(received < big, "the peer got {received} bytes");
    }
}
