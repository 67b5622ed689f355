//! The running Raft group that replicates the cluster map (the model is
//! [`crate::cluster`], a floor below).
//!
//! Raft holds decisions, never data blocks: membership, node states, where
//! each partition lives and the replication settings. [`Cluster`] is the
//! running piece: it starts Raft (initialising a new cluster, joining one,
//! or restarting as itself), answers Raft RPCs and joins, promotes caught-up
//! learners to voters, and publishes the current map.

pub mod identity;
pub mod log_store;
pub mod network;
pub mod progress;
pub mod state_machine;
pub mod types;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, SnapshotPolicy};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use self::identity::Identity;
use self::network::RaftRequest;
use self::progress::MapProgress;
use self::types::{LogId, Member, Raft};
use crate::client::{ClientConfig, Connection};
use crate::cluster::map::{self, ClusterMap, Command, CommandResult, NodeSpec, Settings};
use crate::cluster::status::{self, ClusterStatus, NodeReport};
use crate::cluster::{NodeId, voters};
use crate::proto::{NodeRequest, RaftRpc, Request, Response, WireError, codec};
use crate::tls::Transport;

/// How a node without an identity enters a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bootstrap {
    /// Start a new cluster with this node as node 1.
    Init,
    /// Join the cluster one of these nodes belongs to.
    Join(Vec<String>),
}

/// Everything [`Cluster::start`] needs.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Used only when the node has no identity yet.
    pub bootstrap: Bootstrap,
    /// What this node tells the cluster about itself (the join token is
    /// filled in from the data directory).
    pub addr: String,
    /// HTTP admin address.
    pub admin: String,
    /// Failure domain.
    pub zone: String,
    /// Placement weight.
    pub capacity: u64,
    /// For a new cluster: partition count.
    pub partitions: u32,
    /// For a new cluster: replication settings.
    pub settings: Settings,
    /// Raft heartbeat interval.
    pub heartbeat: Duration,
    /// Raft election timeout (minimum; the maximum is twice it).
    pub election_timeout: Duration,
    /// How long a join keeps trying before giving up.
    pub join_timeout: Duration,
    /// For a new cluster: its recovery settings.
    pub recovery: map::RecoverySettings,
    /// How this node reaches the others (Raft RPCs, joins, proposals).
    pub transport: Transport,
}

/// Cluster failures at startup.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The persisted identity could not be used.
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
    /// Raft's own storage failed to open.
    #[error("cannot open the Raft storage: {0}")]
    Storage(Box<types::StorageError>),
    /// Raft refused its configuration or failed to start.
    #[error("cannot start Raft: {0}")]
    Raft(String),
    /// The cluster refused to let this node join.
    #[error("join refused: {0}")]
    JoinRefused(String),
    /// No seed answered the join in time.
    #[error("could not join through {seeds:?} within {after:?}; last error: {last}")]
    JoinTimeout {
        /// The seeds tried.
        seeds: Vec<String>,
        /// The time allowed.
        after: Duration,
        /// The last failure.
        last: String,
    },
}

/// Entries a learner may lag and still be promoted to voter.
const PROMOTION_MAX_LAG: u64 = 16;
/// How often the leader looks for learners to promote.
const MEMBERSHIP_TICK: Duration = Duration::from_millis(500);

/// Heartbeats kept by the leader: most recent report per node.
type Reports = BTreeMap<NodeId, (tokio::time::Instant, NodeReport)>;

/// The running cluster membership of this node.
pub struct Cluster {
    identity: Identity,
    /// How proposals reach the leader.
    transport: Transport,
    raft: Raft,
    map: watch::Receiver<Arc<ClusterMap>>,
    /// Reports received as leader (cleared on no path: stale ones simply
    /// age, and the failure detector judges by their arrival time).
    reports: std::sync::Mutex<Reports>,
    /// What the leader's recovery loop last published for `levee status`.
    recovery: std::sync::Mutex<Option<status::RecoveryStatus>>,
    /// The leader's commit (in entries) from the first `AppendEntries`
    /// since this process started: what "the map is current" is judged
    /// against (see [`MapProgress`]).
    announced: watch::Sender<Option<u64>>,
}

impl Cluster {
    /// Starts Raft on `db` (the node's metadata database): restarts as
    /// itself if the node has an identity, otherwise initialises or joins
    /// as `options.bootstrap` says. Returns once Raft runs; the map may
    /// still be catching up.
    pub async fn start(
        db: sled::Db,
        options: ClusterOptions,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, ClusterError> {
        let identity = match identity::load(&db)? {
            Some(identity) => {
                tracing::info!(
                    node_id = identity.node_id,
                    cluster_id = identity.cluster_id,
                    "restarting as a known member"
                );
                identity
            }
            None => match &options.bootstrap {
                Bootstrap::Init => {
                    let identity = Identity {
                        node_id: 1,
                        cluster_id: new_cluster_id(),
                    };
                    // Saved before Raft is initialised: a crash in between
                    // restarts as node 1 and finishes the job below.
                    identity::save(&db, identity).await?;
                    tracing::info!(
                        cluster_id = identity.cluster_id,
                        "initialising a new cluster"
                    );
                    identity
                }
                Bootstrap::Join(seeds) => {
                    let token = identity::join_token(&db).await?;
                    let identity = join(
                        seeds,
                        &spec(&options, token),
                        options.join_timeout,
                        &options.transport,
                    )
                    .await?;
                    identity::save(&db, identity).await?;
                    tracing::info!(
                        node_id = identity.node_id,
                        cluster_id = identity.cluster_id,
                        "joined the cluster"
                    );
                    identity
                }
            },
        };
        let log_store =
            log_store::LogStore::open(&db).map_err(|e| ClusterError::Storage(Box::new(e)))?;
        let state_machine = state_machine::StateMachine::open(&db)
            .map_err(|e| ClusterError::Storage(Box::new(e)))?;
        let map = state_machine.subscribe();
        let config = raft_config(&options)?;
        let raft = Raft::new(
            identity.node_id,
            config,
            network::Network::new(identity.cluster_id, options.transport.clone()),
            log_store,
            state_machine,
        )
        .await
        .map_err(|e| ClusterError::Raft(e.to_string()))?;
        let cluster = Arc::new(Self {
            identity,
            transport: options.transport.clone(),
            raft,
            map,
            reports: Default::default(),
            recovery: Default::default(),
            announced: watch::Sender::new(None),
        });
        if identity.node_id == 1 && cluster.map.borrow().cluster_id == 0 {
            cluster.initialise(&db, &options).await?;
        }
        tokio::spawn(cluster.clone().maintain(shutdown));
        Ok(cluster)
    }

    /// Node 1's first start: makes itself the only voter and writes the
    /// first map. Both steps are safe to repeat after a crash.
    async fn initialise(
        &self,
        db: &sled::Db,
        options: &ClusterOptions,
    ) -> Result<(), ClusterError> {
        let me = BTreeMap::from([(self.identity.node_id, member(options))]);
        if !self
            .raft
            .is_initialized()
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))?
        {
            self.raft
                .initialize(me)
                .await
                .map_err(|e| ClusterError::Raft(e.to_string()))?;
        }
        let token = identity::join_token(db).await?;
        let init = Command::Init {
            cluster_id: self.identity.cluster_id,
            partitions: options.partitions,
            settings: options.settings,
            first: spec(options, token),
        };
        // A single voter elects itself within an election timeout.
        let deadline = tokio::time::Instant::now() + options.join_timeout;
        loop {
            match self.raft.client_write(init.clone()).await {
                Ok(_) => break,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(error = %e, "waiting to become leader of the new cluster");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => {
                    return Err(ClusterError::Raft(format!(
                        "cannot write the first map: {e}"
                    )));
                }
            }
        }
        // One command: every setting lands together, checked again by the
        // map (which refuses nonsense even if it got past the config).
        if options.recovery != map::RecoverySettings::default() {
            self.raft
                .client_write(Command::SetRecoveryAll(options.recovery))
                .await
                .map_err(|e| ClusterError::Raft(format!("cannot write recovery settings: {e}")))?;
        }
        Ok(())
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.identity.node_id
    }

    /// The cluster's id.
    pub fn cluster_id(&self) -> u64 {
        self.identity.cluster_id
    }

    /// The current map (this node's copy).
    pub fn map(&self) -> Arc<ClusterMap> {
        self.map.borrow().clone()
    }

    /// The current map's epoch, read without taking a handle on the map:
    /// every answer a node sends carries it.
    pub fn epoch(&self) -> u64 {
        self.map.borrow().epoch
    }

    /// A receiver that sees every new map as it is applied.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ClusterMap>> {
        self.map.clone()
    }

    /// Waits until this node has a cluster map it can route with: at once
    /// for a restarted node (its persisted copy) and for a new cluster's
    /// first node; for a node that just joined, once the leader has
    /// replicated the map to it. `false` if Raft stopped first.
    pub async fn wait_map_loaded(&self) -> bool {
        let mut map = self.map.clone();
        map.wait_for(|m| m.cluster_id != 0).await.is_ok()
    }

    /// Waits until this node's map is current (see [`MapProgress`]) and
    /// returns the progress that showed it; `None` if Raft stopped first.
    pub async fn wait_map_current(&self) -> Option<MapProgress> {
        let mut metrics = self.raft.metrics();
        let mut announced = self.announced.subscribe();
        loop {
            let progress = {
                let m = metrics.borrow_and_update();
                MapProgress {
                    announced: *announced.borrow_and_update(),
                    applied: entries(m.last_applied),
                    leading_own_term: m.current_leader == Some(self.identity.node_id)
                        && m.last_applied
                            .is_some_and(|l| l.leader_id.term == m.current_term),
                }
            };
            if progress.is_current() {
                return Some(progress);
            }
            tokio::select! {
                changed = metrics.changed() => changed.ok()?,
                changed = announced.changed() => changed.ok()?,
            }
        }
    }

    /// Keeps the leader's commit from the first `AppendEntries`; later
    /// ones cost one read.
    fn note_announced(&self, leader_commit: Option<LogId>) {
        if self.announced.borrow().is_some() {
            return;
        }
        self.announced.send_if_modified(|seen| {
            let first = seen.is_none();
            if first {
                *seen = Some(entries(leader_commit));
            }
            first
        });
    }

    /// This node's view of the cluster.
    pub fn status(&self) -> ClusterStatus {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: Vec<NodeId> = membership.voter_ids().collect();
        let learners: Vec<NodeId> = membership.learner_ids().collect();
        ClusterStatus {
            node_id: self.identity.node_id,
            leader: metrics.current_leader,
            term: metrics.current_term,
            voters,
            learners,
            last_log_index: metrics.last_log_index,
            last_applied: metrics.last_applied.map(|l| l.index),
            replication: metrics.replication.map(|r| {
                r.into_iter()
                    .map(|(id, l)| (id, l.map(|l| l.index)))
                    .collect()
            }),
            map: (*self.map()).clone(),
            recovery: self
                .recovery
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            // Filled in by the request handler, which can reach the
            // node's storage and admission.
            report: None,
        }
    }

    /// Answers a Raft RPC from a peer.
    pub async fn handle_raft(
        &self,
        cluster_id: u64,
        target: NodeId,
        rpc: RaftRpc,
        payload: &[u8],
    ) -> Result<Vec<u8>, WireError> {
        if cluster_id != self.identity.cluster_id || target != self.identity.node_id {
            return Err(WireError::Refused {
                detail: format!(
                    "Raft message for node {target} of cluster {cluster_id:x}, but this is node {} of cluster {:x}",
                    self.identity.node_id, self.identity.cluster_id
                ),
            });
        }
        match RaftRequest::decode(rpc, payload)? {
            RaftRequest::AppendEntries(request) => {
                self.note_announced(request.leader_commit);
                codec::to_bytes(&self.raft.append_entries(request).await)
            }
            RaftRequest::Vote(request) => codec::to_bytes(&self.raft.vote(request).await),
            RaftRequest::InstallSnapshot(request) => {
                codec::to_bytes(&self.raft.install_snapshot(request).await)
            }
        }
    }

    /// Adds a joining node: records it in the map (or finds it again, for
    /// a retried join), then adds it to Raft as a learner. Leader only.
    pub async fn handle_join(&self, spec: NodeSpec) -> Result<Response, WireError> {
        let member = Member {
            addr: spec.addr.clone(),
            admin: spec.admin.clone(),
        };
        let response = self
            .raft
            .client_write(Command::AddNode(spec))
            .await
            .map_err(|e| self.write_error(e))?;
        let id = match response.data {
            CommandResult::NodeAdded { id, .. } => id,
            CommandResult::Rejected(detail) => return Err(WireError::Refused { detail }),
            CommandResult::Applied { .. } => {
                return Err(WireError::Unavailable {
                    detail: "join was not recorded; retry".into(),
                });
            }
        };
        let known = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .nodes()
            .any(|(n, _)| *n == id);
        if !known {
            // Not blocking: the joiner starts Raft only after this answer,
            // and replication to it retries until it does.
            self.raft
                .add_learner(id, member, false)
                .await
                .map_err(|e| self.write_error(e))?;
        }
        Ok(Response::Joined {
            node_id: id,
            cluster_id: self.identity.cluster_id,
        })
    }

    /// Whether this node is the Raft leader now.
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.identity.node_id)
    }

    /// The leader's id and protocol address, if known.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let metrics = self.raft.metrics().borrow().clone();
        let leader = metrics.current_leader?;
        let addr = metrics
            .membership_config
            .nodes()
            .find(|(id, _)| **id == leader)
            .map(|(_, m)| m.addr.clone())?;
        Some((leader, addr))
    }

    /// Records a heartbeat (any node may receive one; only the leader's
    /// recovery loop reads them).
    pub fn handle_heartbeat(&self, report: NodeReport) {
        let now = tokio::time::Instant::now();
        let mut reports = self.reports.lock().unwrap_or_else(|e| e.into_inner());
        // Bounded by the map: reports from nodes it does not know are not
        // kept, so a stream of made-up ids cannot grow the table.
        if self.map().nodes.contains_key(&report.node) {
            reports.insert(report.node, (now, report));
        }
    }

    /// On the leader, the epoch every node that may coordinate has
    /// reported applying ([`status::settled_epoch`]); elsewhere
    /// `NotLeader`, since only the leader receives the heartbeats.
    pub fn settled(&self) -> Result<u64, WireError> {
        if !self.is_leader() {
            let leader = self.leader();
            return Err(WireError::NotLeader {
                leader: leader.as_ref().map(|(id, _)| *id),
                leader_addr: leader.map(|(_, addr)| addr),
            });
        }
        let map = self.map();
        let reports = self.reports.lock().unwrap_or_else(|e| e.into_inner());
        Ok(status::settled_epoch(
            &map,
            reports.iter().map(|(id, (_, r))| (*id, r)),
        ))
    }

    /// The heartbeats received so far (the latest per node).
    pub fn reports(&self) -> Reports {
        self.reports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The leader's recovery view, if this node leads.
    pub fn status_recovery(&self) -> Option<status::RecoveryStatus> {
        self.recovery
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Publishes the leader's recovery view for `levee status`.
    pub fn publish_recovery(&self, view: Option<status::RecoveryStatus>) {
        *self.recovery.lock().unwrap_or_else(|e| e.into_inner()) = view;
    }

    /// Commits a command if this node is the leader; otherwise says who is.
    pub async fn propose_as_leader(&self, command: Command) -> Result<CommandResult, WireError> {
        let response = self
            .raft
            .client_write(command)
            .await
            .map_err(|e| self.write_error(e))?;
        Ok(response.data)
    }

    /// Commits a command through the leader, wherever it is: locally if
    /// this node leads, else by asking the leader (one hop, within
    /// `timeout`).
    pub async fn propose(
        &self,
        command: Command,
        timeout: Duration,
    ) -> Result<CommandResult, WireError> {
        let unavailable = |detail: String| WireError::Unavailable { detail };
        match tokio::time::timeout(timeout, async {
            if self.is_leader() {
                return self.propose_as_leader(command).await;
            }
            let Some((leader, addr)) = self.leader() else {
                return Err(unavailable("no Raft leader is known; retry shortly".into()));
            };
            let config = ClientConfig::default();
            let conn = Connection::connect(
                &addr,
                &self.transport,
                config.connect_timeout,
                config.max_frame_bytes,
            )
            .await
            .map_err(|e| unavailable(format!("cannot reach leader {leader} at {addr}: {e}")))?;
            match conn
                .request(Request::Node(NodeRequest::Propose(command)), timeout)
                .await
            {
                Ok(Response::Proposed(result)) => Ok(result),
                Ok(other) => Err(WireError::Malformed {
                    detail: format!("unexpected answer to a proposal: {other:?}"),
                }),
                Err(crate::client::ClientError::Server(e)) => Err(e),
                Err(e) => Err(unavailable(format!("leader {leader} at {addr}: {e}"))),
            }
        })
        .await
        {
            Ok(result) => result,
            Err(_) => Err(WireError::DeadlineExceeded),
        }
    }

    fn write_error(&self, e: RaftError<NodeId, ClientWriteError<NodeId, Member>>) -> WireError {
        match e.forward_to_leader() {
            Some(forward) => WireError::NotLeader {
                leader: forward.leader_id,
                leader_addr: forward.leader_node.as_ref().map(|n| n.addr.clone()),
            },
            None => WireError::Unavailable {
                detail: format!("cluster change failed: {e}"),
            },
        }
    }

    /// Leader housekeeping: promote caught-up learners to voters, and
    /// replace voters whose node is out or removed.
    async fn maintain(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(MEMBERSHIP_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            if let Err(e) = self.promote_learners().await {
                tracing::warn!(error = %e, "promoting learners failed; will retry");
            }
        }
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown failed");
        }
    }

    async fn promote_learners(&self) -> Result<(), String> {
        let metrics = self.raft.metrics().borrow().clone();
        if metrics.current_leader != Some(self.identity.node_id) {
            return Ok(());
        }
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let replication = metrics.replication.unwrap_or_default();
        let map = self.map();
        let learners: Vec<voters::Learner> = membership
            .learner_ids()
            .filter(|id| {
                map.nodes
                    .get(id)
                    .is_some_and(|n| n.state == map::NodeState::Up)
            })
            .map(|id| voters::Learner {
                id,
                matched: replication.get(&id).copied().flatten().map(|l| l.index),
            })
            .collect();
        // A voter the cluster has given up on (out, or removed) still
        // counts toward Raft's quorum; left in place, losing one more voter
        // stops every cluster decision, however many nodes are up.
        let gone: BTreeSet<NodeId> = voters
            .iter()
            .copied()
            .filter(|id| {
                map.nodes.get(id).is_none_or(|n| {
                    matches!(n.state, map::NodeState::Out | map::NodeState::Removed)
                })
            })
            .collect();
        let Some(next) = voters::next_voters(
            &voters,
            &gone,
            &learners,
            metrics.last_log_index,
            usize::from(map.settings.voters),
            PROMOTION_MAX_LAG,
        ) else {
            return Ok(());
        };
        tracing::info!(from = ?voters, to = ?next, "changing the Raft voters");
        // Voters replaced stay learners: a node that comes back is caught
        // up and can be promoted again.
        self.raft
            .change_membership(ChangeMembers::ReplaceAllVoters(next), true)
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// Log entries up to and including `log_id` (index + 1; none is 0).
fn entries(log_id: Option<LogId>) -> u64 {
    log_id.map_or(0, |l| l.index + 1)
}

fn new_cluster_id() -> u64 {
    // Never 0: 0 marks an uninitialised map.
    rand::random::<u64>().max(1)
}

fn member(options: &ClusterOptions) -> Member {
    Member {
        addr: options.addr.clone(),
        admin: options.admin.clone(),
    }
}

fn spec(options: &ClusterOptions, join_token: u64) -> NodeSpec {
    NodeSpec {
        addr: options.addr.clone(),
        admin: options.admin.clone(),
        zone: options.zone.clone(),
        capacity: options.capacity.max(1),
        join_token,
    }
}

fn raft_config(options: &ClusterOptions) -> Result<Arc<openraft::Config>, ClusterError> {
    let heartbeat = options.heartbeat.as_millis() as u64;
    let election = options.election_timeout.as_millis() as u64;
    let config = openraft::Config {
        cluster_name: "levee".into(),
        heartbeat_interval: heartbeat,
        election_timeout_min: election,
        election_timeout_max: election * 2,
        // The map is small; snapshot often so a new or returning member
        // catches up from one snapshot rather than a long log.
        snapshot_policy: SnapshotPolicy::LogsSinceLast(500),
        max_in_snapshot_log_to_keep: 100,
        ..Default::default()
    };
    config
        .validate()
        .map(Arc::new)
        .map_err(|e| ClusterError::Raft(e.to_string()))
}

/// Asks the seeds (and whatever leader they point at) to add this node,
/// until one answers or `timeout` passes.
async fn join(
    seeds: &[String],
    spec: &NodeSpec,
    timeout: Duration,
    transport: &Transport,
) -> Result<Identity, ClusterError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let client = ClientConfig {
        transport: transport.clone(),
        ..ClientConfig::default()
    };
    let mut targets: Vec<String> = seeds.to_vec();
    let mut last = String::from("no seed given");
    let mut attempt = 0u32;
    while tokio::time::Instant::now() < deadline {
        let Some(addr) = targets
            .get(attempt as usize % targets.len().max(1))
            .cloned()
        else {
            break;
        };
        attempt += 1;
        match ask_to_join(&addr, spec, &client).await {
            Ok(identity) => return Ok(identity),
            Err(WireOrClient::Wire(WireError::Refused { detail })) => {
                return Err(ClusterError::JoinRefused(detail));
            }
            Err(WireOrClient::Wire(WireError::NotLeader {
                leader_addr: Some(leader),
                ..
            })) if leader != addr => {
                // Ask the leader next, after the usual short pause.
                targets.retain(|t| t != &leader);
                targets.insert(0, leader);
                attempt = 0;
                last = format!("{addr} is not the leader");
            }
            Err(e) => last = format!("{addr}: {e}"),
        }
        // Capped exponential backoff with full jitter, so that many nodes
        // joining at once do not hammer the seeds in lockstep.
        let cap = Duration::from_millis(100u64 << attempt.min(4));
        tokio::time::sleep(cap.mul_f64(rand::random::<f64>())).await;
    }
    Err(ClusterError::JoinTimeout {
        seeds: seeds.to_vec(),
        after: timeout,
        last,
    })
}

#[derive(Debug, thiserror::Error)]
enum WireOrClient {
    #[error("{0}")]
    Wire(WireError),
    #[error("{0}")]
    Client(crate::client::ClientError),
}

async fn ask_to_join(
    addr: &str,
    spec: &NodeSpec,
    config: &ClientConfig,
) -> Result<Identity, WireOrClient> {
    let conn = Connection::connect(
        addr,
        &config.transport,
        config.connect_timeout,
        config.max_frame_bytes,
    )
    .await
    .map_err(WireOrClient::Client)?;
    match conn
        .request(
            Request::Node(NodeRequest::Join(spec.clone())),
            config.request_timeout,
        )
        .await
    {
        Ok(Response::Joined {
            node_id,
            cluster_id,
        }) => Ok(Identity {
            node_id,
            cluster_id,
        }),
        Ok(other) => Err(WireOrClient::Wire(WireError::Malformed {
            detail: format!("unexpected answer to join: {other:?}"),
        })),
        Err(crate::client::ClientError::Server(e)) => Err(WireOrClient::Wire(e)),
        Err(e) => Err(WireOrClient::Client(e)),
    }
}
