//! Raft RPCs over the levee protocol.
//!
//! Each peer gets its own multiplexed connection, separate from client
//! traffic, opened lazily and replaced when it fails. A peer that cannot be
//! reached, or that turns out not to be the node we meant (another cluster,
//! a wiped node at an old address), is reported to openraft as
//! `Unreachable`, which backs off instead of retrying hot.

use crate::tls::Transport;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::types::{Member, TypeConfig};
use crate::client::{ClientError, Connection};
use crate::cluster::NodeId;
use crate::proto::{NodeRequest, RaftRpc, Request, Response, WireError, codec};

/// A peer's Raft RPC, decoded from the payload of a
/// [`NodeRequest::Raft`].
#[derive(Debug)]
pub enum RaftRequest {
    /// AppendEntries (also the heartbeat).
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    /// RequestVote.
    Vote(VoteRequest<NodeId>),
    /// One chunk of a snapshot.
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
}

impl RaftRequest {
    /// Decodes the payload of a `rpc` request; bytes that are not one are
    /// `Malformed`.
    pub fn decode(rpc: RaftRpc, payload: &[u8]) -> Result<Self, WireError> {
        Ok(match rpc {
            RaftRpc::AppendEntries => Self::AppendEntries(codec::from_bytes(payload)?),
            RaftRpc::Vote => Self::Vote(codec::from_bytes(payload)?),
            RaftRpc::InstallSnapshot => Self::InstallSnapshot(codec::from_bytes(payload)?),
        })
    }
}

/// A peer's answer to AppendEntries, as carried in [`Response::Raft`].
pub type AppendEntriesAnswer = Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>;
/// A peer's answer to RequestVote, as carried in [`Response::Raft`].
pub type VoteAnswer = Result<VoteResponse<NodeId>, RaftError<NodeId>>;
/// A peer's answer to InstallSnapshot, as carried in [`Response::Raft`].
pub type InstallSnapshotAnswer =
    Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>;

/// Time allowed to open a connection to a peer. Short: Raft retries, and a
/// slow connect to a dead peer must not hold up heartbeats to live ones.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Largest response frame from a peer (snapshot chunks are smaller).
const MAX_FRAME: u32 = 16 * 1024 * 1024;

/// Makes a [`PeerClient`] per target.
#[derive(Debug, Clone)]
pub struct Network {
    cluster_id: u64,
    transport: Transport,
}

impl Network {
    /// A network for members of `cluster_id`, reached over `transport`.
    pub fn new(cluster_id: u64, transport: Transport) -> Self {
        Self {
            cluster_id,
            transport,
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> PeerClient {
        PeerClient {
            cluster_id: self.cluster_id,
            target,
            addr: node.addr.clone(),
            transport: self.transport.clone(),
            conn: None,
        }
    }
}

/// The connection to one peer.
pub struct PeerClient {
    cluster_id: u64,
    target: NodeId,
    addr: String,
    transport: Transport,
    conn: Option<Arc<Connection>>,
}

/// Why an RPC did not get an answer from the peer's Raft.
#[derive(Debug, thiserror::Error)]
enum PeerError {
    /// The peer could not be reached or did not answer in time.
    #[error("peer {target} at {addr}: {error}")]
    Transport {
        target: NodeId,
        addr: String,
        error: ClientError,
    },
    /// The peer answered something we cannot use.
    #[error("peer {target} at {addr} sent a bad answer: {detail}")]
    BadAnswer {
        target: NodeId,
        addr: String,
        detail: String,
    },
}

impl PeerClient {
    async fn connection(&mut self) -> Result<Arc<Connection>, ClientError> {
        if let Some(conn) = &self.conn
            && !conn.is_closed()
        {
            return Ok(conn.clone());
        }
        let conn = Connection::connect(&self.addr, &self.transport, CONNECT_TIMEOUT, MAX_FRAME);
        let conn = Arc::new(conn.await?);
        self.conn = Some(conn.clone());
        Ok(conn)
    }

    /// Sends one RPC and decodes the peer's `Result<Resp, RaftError<E>>`.
    async fn call<Req, Resp, E>(
        &mut self,
        rpc: RaftRpc,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, RPCError<NodeId, Member, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let payload =
            codec::to_bytes(request).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let (target, addr) = (self.target, self.addr.clone());
        let transport = move |error| PeerError::Transport {
            target,
            addr: addr.clone(),
            error,
        };
        let conn = self
            .connection()
            .await
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&transport(e))))?;
        let request = Request::Node(NodeRequest::Raft {
            cluster_id: self.cluster_id,
            target: self.target,
            rpc,
            payload,
        });
        let answer = match conn.request(request, timeout).await {
            Ok(Response::Raft(bytes)) => bytes,
            Ok(other) => {
                return Err(self.bad_answer(format!("unexpected response {other:?}")));
            }
            Err(e) => {
                if conn.is_closed() {
                    self.conn = None;
                }
                // Timeouts, closed connections, and a peer that says it is
                // not the node we mean all look alike to Raft: back off.
                return Err(RPCError::Unreachable(Unreachable::new(&transport(e))));
            }
        };
        let result: Result<Resp, RaftError<NodeId, E>> =
            codec::from_bytes(&answer).map_err(|e| self.bad_answer(e.to_string()))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    fn bad_answer<E: std::error::Error>(
        &self,
        detail: String,
    ) -> RPCError<NodeId, Member, RaftError<NodeId, E>> {
        RPCError::Network(NetworkError::new(&PeerError::BadAnswer {
            target: self.target,
            addr: self.addr.clone(),
            detail,
        }))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        self.call(RaftRpc::AppendEntries, &rpc, option.hard_ttl())
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Member, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(RaftRpc::InstallSnapshot, &rpc, option.hard_ttl())
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        self.call(RaftRpc::Vote, &rpc, option.hard_ttl()).await
    }
}
