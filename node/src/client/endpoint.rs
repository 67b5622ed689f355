//! The calls that go to one endpoint rather than to a key's replicas:
//! the connection to the first endpoint that accepts (moving on after
//! failures), and what is asked through it — ping, the cluster map, the
//! cluster's status (from its leader when it can be reached) and the
//! operator's changes.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{Client, ClientError, Connection, unexpected};

/// How long one endpoint has before the next is dialled beside it.
pub const STAGGER: std::time::Duration = std::time::Duration::from_millis(250);
use crate::proto::{ClientRequest, Request, Response};

impl Client {
    /// Checks that a node answers.
    pub async fn ping(&self) -> Result<(), ClientError> {
        match self.call(ClientRequest::Ping).await? {
            Response::Pong { .. } => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// The cluster map held by the node this client talks to.
    pub async fn map(&self) -> Result<crate::cluster::map::ClusterMap, ClientError> {
        match self.call(ClientRequest::GetMap).await? {
            Response::Map(map) => Ok(*map),
            other => Err(unexpected(other)),
        }
    }

    /// The cluster as the node this client talks to sees it.
    pub async fn status(&self) -> Result<crate::cluster::status::ClusterStatus, ClientError> {
        match self.call(ClientRequest::Status).await? {
            Response::Status(status) => Ok(*status),
            other => Err(unexpected(other)),
        }
    }

    /// The cluster as its leader sees it when the leader can be reached
    /// (only the leader knows replication progress, failures, moves and
    /// recovery rates), otherwise as the answering node sees it.
    pub async fn leader_status(
        &self,
    ) -> Result<crate::cluster::status::ClusterStatus, ClientError> {
        let status = self.status().await?;
        let Some(leader) = status
            .leader
            .filter(|l| *l != status.node_id)
            .and_then(|id| status.map.nodes.get(&id))
        else {
            return Ok(status);
        };
        let request = Request::Client(ClientRequest::Status);
        match self
            .pool
            .send(&leader.spec.addr, request, self.config.request_timeout)
            .await
        {
            Ok(Response::Status(from_leader)) => Ok(*from_leader),
            _ => Ok(status),
        }
    }

    /// An operator's change, committed through the leader; what applying
    /// it did (a refusal says why).
    pub async fn admin(
        &self,
        command: crate::proto::AdminCommand,
    ) -> Result<crate::cluster::map::CommandResult, ClientError> {
        match self.call(ClientRequest::Admin(command)).await? {
            Response::Proposed(result) => Ok(result),
            other => Err(unexpected(other)),
        }
    }

    async fn call(&self, request: ClientRequest) -> Result<Response, ClientError> {
        let conn = self.connection().await?;
        let result = conn
            .request(Request::Client(request), self.config.request_timeout)
            .await;
        if let Err(ClientError::ConnectionClosed { .. }) = &result {
            self.forget(&conn).await;
        }
        result
    }

    /// The current connection, or a new one to the first endpoint that
    /// accepts, starting after the last one that failed. The endpoints are
    /// tried in parallel, staggered (happy eyeballs, RFC 8305): the next
    /// one is dialled when the previous fails or after [`STAGGER`],
    /// whichever comes first, and the first to connect wins; so one hung
    /// seed costs a quarter of a second, not a connect timeout.
    pub async fn connection(&self) -> Result<Arc<Connection>, ClientError> {
        let mut slot = self.conn.lock().await;
        if let Some(conn) = slot.as_ref()
            && !conn.is_closed()
        {
            return Ok(conn.clone());
        }
        let endpoints = &self.config.endpoints;
        if endpoints.is_empty() {
            return Err(ClientError::NoEndpoints);
        }
        let start = self.next_endpoint.load(Ordering::Relaxed);
        let mut order = (0..endpoints.len()).map(|i| {
            let index = (start + i) % endpoints.len();
            (index, endpoints[index].clone())
        });
        let mut attempts = tokio::task::JoinSet::new();
        let dial = |attempts: &mut tokio::task::JoinSet<_>, (index, addr): (usize, String)| {
            let transport = self.config.transport.clone();
            let (timeout, max_frame) = (self.config.connect_timeout, self.config.max_frame_bytes);
            attempts.spawn(async move {
                let result = Connection::connect(&addr, &transport, timeout, max_frame).await;
                (index, addr, result)
            });
        };
        let mut last = None;
        loop {
            // The next endpoint goes out now: first, after a failure, or
            // after a stagger without an answer.
            if let Some(next) = order.next() {
                dial(&mut attempts, next);
            }
            tokio::select! {
                done = attempts.join_next() => match done {
                    Some(Ok((index, _, Ok(conn)))) => {
                        // The others are dropped with the set (aborted).
                        let conn = Arc::new(conn);
                        *slot = Some(conn.clone());
                        self.next_endpoint.store(index, Ordering::Relaxed);
                        return Ok(conn);
                    }
                    Some(Ok((_, addr, Err(e)))) => {
                        tracing::debug!(%addr, error = %e, "endpoint failed");
                        last = Some(e);
                    }
                    Some(Err(e)) => tracing::debug!(error = %e, "endpoint attempt ended"),
                    None => break,
                },
                () = tokio::time::sleep(STAGGER), if order.len() > 0 => {}
            }
        }
        self.next_endpoint
            .store((start + 1) % endpoints.len(), Ordering::Relaxed);
        match last {
            Some(e) if endpoints.len() == 1 => Err(e),
            Some(e) => Err(ClientError::AllEndpointsFailed {
                tried: endpoints.len(),
                last: Box::new(e),
            }),
            None => Err(ClientError::NoEndpoints),
        }
    }

    async fn forget(&self, conn: &Arc<Connection>) {
        let mut slot = self.conn.lock().await;
        if slot.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            *slot = None;
            let len = self.config.endpoints.len().max(1);
            self.next_endpoint.fetch_add(1, Ordering::Relaxed);
            self.next_endpoint
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some(n % len))
                .ok();
        }
    }
}
