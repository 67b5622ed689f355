//! A pool of connections, one per node address.
//!
//! Used by clients to reach the replicas of each key, and by nodes for the
//! data path (separate from Raft's connections, so bulk data never queues
//! in front of heartbeats). A node whose connect just failed is not dialled
//! again for a short while: requests to it fail at once (a client moves to
//! the next replica, a coordinator writes a hint) instead of each paying a
//! connect timeout.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::{ClientError, Connection};
use crate::proto::{NodeRequest, Request, Response};
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
        }
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
        let conn = self.connection(addr, timeout).await?;
        let result = conn.request(request, timeout).await;
        if result.is_err() && conn.is_closed() {
            self.lock().remove(addr);
        }
        result
    }

    async fn connection(
        &self,
        addr: &str,
        timeout: Duration,
    ) -> Result<Arc<Connection>, ClientError> {
        match self.lock().get(addr) {
            Some(Slot::Open(conn)) if !conn.is_closed() => return Ok(conn.clone()),
            Some(Slot::FailedUntil(until)) if Instant::now() < *until => {
                return Err(ClientError::ConnectTimeout {
                    addr: addr.to_owned(),
                    after: Duration::ZERO,
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
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }
}
