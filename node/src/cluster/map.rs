//! The cluster map: the replicated state machine's contents, and the pure
//! rules by which commands change it.
//!
//! Every node holds a copy; every change goes through Raft and increases
//! the epoch, so two copies with the same epoch are the same map and a
//! client or node can tell at a glance which of two maps is newer.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::NodeId;
use super::placement::{self, Assignment, Candidate};

/// A node's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeState {
    /// Serving.
    Up,
    /// Missed heartbeats for `down_after`: routing avoids it, nothing is
    /// copied yet (it is probably restarting).
    Down,
    /// Gone long enough that its replicas are being rebuilt elsewhere.
    Out,
    /// Being emptied by an operator; receives no new replicas.
    Draining,
    /// No longer part of the cluster.
    Removed,
}

impl NodeState {
    /// Whether placement may put replicas on a node in this state. Down
    /// nodes keep theirs: failures are usually transient, and moving data
    /// off a node that comes back a minute later is wasted work.
    pub fn holds_replicas(self) -> bool {
        matches!(self, Self::Up | Self::Down)
    }
}

impl std::fmt::Display for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Self::Up => "up",
            Self::Down => "down",
            Self::Out => "out",
            Self::Draining => "draining",
            Self::Removed => "removed",
        };
        f.write_str(s)
    }
}

/// What a node says about itself when it joins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSpec {
    /// Protocol address other nodes and clients use.
    pub addr: String,
    /// HTTP admin address.
    pub admin: String,
    /// Failure domain (rack, zone); replicas of a partition go to
    /// distinct zones while enough zones exist.
    pub zone: String,
    /// Relative weight for placement (e.g. disk size in GiB).
    pub capacity: u64,
    /// Random, chosen once per data directory. A retried join carries the
    /// same token and gets the same id back; a node whose data directory
    /// was wiped has a new token and is refused instead of being confused
    /// with its former self.
    pub join_token: u64,
}

/// A member of the cluster map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Node id.
    pub id: NodeId,
    /// What it said when it joined.
    pub spec: NodeSpec,
    /// Lifecycle state.
    pub state: NodeState,
    /// When the state last changed (Unix ms, the leader's clock when it
    /// proposed the change), so `levee status` can say how long a node has
    /// been down.
    pub since_ms: u64,
}

/// Replication settings, fixed at init and changeable through Raft later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// Replicas per partition (R).
    pub replicas: u8,
    /// Acks a write needs (W).
    pub write_quorum: u8,
    /// Replicas a read asks.
    pub read_quorum: u8,
    /// Raft voters wanted (1, 3 or 5); later nodes are learners.
    pub voters: u8,
}

impl Settings {
    /// R replicas with majority quorums for reads and writes.
    pub fn majority(replicas: u8, voters: u8) -> Self {
        let majority = replicas / 2 + 1;
        Self {
            replicas,
            write_quorum: majority,
            read_quorum: majority,
            voters,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self::majority(3, 3)
    }
}

/// One replica being rebuilt or relocated: `to` copies the partition from
/// a live replica, receiving live writes meanwhile, and replaces `from`
/// in the replica set when the copy is complete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    /// The replica being replaced (an Out, Draining or Removed node), or
    /// `None` when the set is short of R and the move only adds one.
    pub from: Option<NodeId>,
    /// The node receiving the copy.
    pub to: NodeId,
    /// The replica it copies from, chosen by the checker so that no node
    /// sends more than its share; the target falls back to another live
    /// replica if this one fails mid-copy.
    pub source: NodeId,
    /// When the leader started it (Unix ms).
    pub started_ms: u64,
}

/// The replicated cluster map.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMap {
    /// Random id fixed at init; every Raft message carries it so that a
    /// node of another cluster can never take part.
    pub cluster_id: u64,
    /// Increases with every change.
    pub epoch: u64,
    /// Partition count, fixed at init.
    pub partitions: u32,
    /// Replication settings.
    pub settings: Settings,
    /// Every node ever added, by id (removed ones stay, marked Removed, so
    /// ids are never reused).
    pub nodes: BTreeMap<NodeId, NodeInfo>,
    /// `assignment[p]`: the nodes holding partition `p`.
    pub assignment: Assignment,
    /// The id the next joining node gets.
    pub next_node_id: NodeId,
    /// Failure detection and re-replication settings, changeable at run
    /// time (`levee admin set`).
    pub recovery: RecoverySettings,
    /// Moves in flight, by partition (at most one per partition).
    pub moves: BTreeMap<u32, Move>,
}

/// How the cluster detects failures and rebuilds lost replicas. Every
/// field is changed through Raft, so all nodes agree on it and a change
/// takes effect everywhere within a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RecoverySettings {
    /// Bytes per second each node may send for recovery (the sender's
    /// token bucket). Per node rather than per cluster: a node's disk and
    /// network are what a transfer competes with clients for. Default
    /// 32 MiB/s.
    pub bytes_per_sec: u64,
    /// Burst of the bytes bucket (default 4 MiB, a few chunks).
    pub bytes_burst: u64,
    /// Moves the replica checker may start per second, cluster-wide
    /// (default 1).
    pub moves_per_sec: f64,
    /// Burst of the moves bucket (default 4).
    pub moves_burst: u32,
    /// Moves in flight at once, cluster-wide (default 8).
    pub max_moves: u32,
    /// Moves in flight into, and out of, any one node (default 2).
    pub max_moves_per_node: u32,
    /// Fraction of the normal rate a sender keeps when its node is under
    /// full client pressure (default 0.1): recovery yields to clients but
    /// never stops.
    pub pressure_floor: f64,
    /// Silence after which a node is suspected (default 3 s; shown, not
    /// acted on).
    pub suspect_after_ms: u64,
    /// Silence after which a node is marked Down (default 10 s): routing
    /// avoids it, nothing is copied.
    pub down_after_ms: u64,
    /// Silence after which a Down node is marked Out and its replicas are
    /// rebuilt elsewhere (default 600 s: most failures are restarts).
    pub down_out_interval_ms: u64,
    /// Nodes marked Out never leave fewer than this fraction of the
    /// cluster in (default 0.75): when many nodes vanish at once, the
    /// cause is more likely the network than the nodes, and copying their
    /// data onto the rest would only overload the survivors.
    pub min_in_ratio: f64,
    /// Operator switch: while on, no node is marked Out (maintenance).
    pub noout: bool,
    /// Never mark a node Out while every other node of its zone is down
    /// too (default on): a zone that went dark together usually comes
    /// back together, and rebuilding it onto the other zones is the
    /// domino the guard exists for. Off only to measure what it prevents.
    pub zone_guard: bool,
}

// The floats are checked finite on every way in (defaults, `with`), so
// equality is an equivalence and the map can stay `Eq`.
impl Eq for RecoverySettings {}

impl Default for RecoverySettings {
    fn default() -> Self {
        Self {
            bytes_per_sec: 32 * 1024 * 1024,
            bytes_burst: 4 * 1024 * 1024,
            moves_per_sec: 1.0,
            moves_burst: 4,
            max_moves: 8,
            max_moves_per_node: 2,
            pressure_floor: 0.1,
            suspect_after_ms: 3_000,
            down_after_ms: 10_000,
            down_out_interval_ms: 600_000,
            min_in_ratio: 0.75,
            noout: false,
            zone_guard: true,
        }
    }
}

/// The keys `levee admin set` accepts, with what each one means.
pub const RECOVERY_KEYS: &[(&str, &str)] = &[
    (
        "recovery.bytes_per_sec",
        "bytes per second each node may send for recovery",
    ),
    (
        "recovery.bytes_burst",
        "burst of each sender's bytes bucket",
    ),
    (
        "recovery.moves_per_sec",
        "moves started per second, cluster-wide",
    ),
    ("recovery.moves_burst", "burst of the moves bucket"),
    (
        "recovery.max_moves",
        "moves in flight at once, cluster-wide",
    ),
    (
        "recovery.max_moves_per_node",
        "moves in flight into or out of one node",
    ),
    (
        "recovery.pressure_floor",
        "fraction of the rate kept under full client pressure (0..1]",
    ),
    ("suspect_after", "silence before a node is suspected (ms)"),
    ("down_after", "silence before a node is marked down (ms)"),
    (
        "down_out_interval",
        "silence before a down node is marked out (ms)",
    ),
    ("min_in_ratio", "fraction of nodes that must stay in (0..1]"),
    ("noout", "on: never mark nodes out"),
    (
        "zone_guard",
        "on: never mark out a node whose whole zone is down",
    ),
];

impl RecoverySettings {
    /// A copy with `key` set to `value`, or why not. Checks ranges, so a
    /// typo cannot stop recovery (a rate of 0) or make it unbounded.
    pub fn with(&self, key: &str, value: &str) -> Result<Self, String> {
        let mut next = *self;
        next.assign(key, value)?;
        next.checked()?;
        Ok(next)
    }

    /// Sets one field from text, checking only its own range; call
    /// [`checked`](Self::checked) once all are set (several settings may
    /// only make sense together).
    pub fn assign(&mut self, key: &str, value: &str) -> Result<(), String> {
        fn int(key: &str, value: &str, min: u64) -> Result<u64, String> {
            let v: u64 = value
                .parse()
                .map_err(|_| format!("{key} takes a whole number, not {value:?}"))?;
            if v < min {
                return Err(format!("{key} must be at least {min}"));
            }
            Ok(v)
        }
        fn fraction(key: &str, value: &str) -> Result<f64, String> {
            let v: f64 = value
                .parse()
                .map_err(|_| format!("{key} takes a number, not {value:?}"))?;
            if !(v > 0.0 && v <= 1.0) {
                return Err(format!("{key} must be in (0, 1], not {v}"));
            }
            Ok(v)
        }
        fn switch(key: &str, value: &str) -> Result<bool, String> {
            match value {
                "on" | "true" | "1" => Ok(true),
                "off" | "false" | "0" => Ok(false),
                _ => Err(format!("{key} takes on or off, not {value:?}")),
            }
        }
        let small = |v: u64| u32::try_from(v).map_err(|_| format!("{key} is too large"));
        let next = self;
        match key {
            "recovery.bytes_per_sec" => next.bytes_per_sec = int(key, value, 1)?,
            "recovery.bytes_burst" => next.bytes_burst = int(key, value, 1)?,
            "recovery.moves_per_sec" => {
                let v: f64 = value
                    .parse()
                    .map_err(|_| format!("{key} takes a number, not {value:?}"))?;
                if !(v.is_finite() && v > 0.0) {
                    return Err(format!("{key} must be a positive number, not {v}"));
                }
                next.moves_per_sec = v;
            }
            "recovery.moves_burst" => next.moves_burst = small(int(key, value, 1)?)?,
            "recovery.max_moves" => next.max_moves = small(int(key, value, 1)?)?,
            "recovery.max_moves_per_node" => next.max_moves_per_node = small(int(key, value, 1)?)?,
            "recovery.pressure_floor" => next.pressure_floor = fraction(key, value)?,
            "suspect_after" => next.suspect_after_ms = int(key, value, 1)?,
            "down_after" => next.down_after_ms = int(key, value, 1)?,
            "down_out_interval" => next.down_out_interval_ms = int(key, value, 1)?,
            "min_in_ratio" => next.min_in_ratio = fraction(key, value)?,
            "noout" => next.noout = switch(key, value)?,
            "zone_guard" => next.zone_guard = switch(key, value)?,
            _ => {
                let known: Vec<&str> = RECOVERY_KEYS.iter().map(|(k, _)| *k).collect();
                return Err(format!(
                    "unknown setting {key:?}; known: {}",
                    known.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// Checks the settings against each other and their ranges.
    pub fn checked(&self) -> Result<(), String> {
        let next = self;
        let positive = next.bytes_per_sec > 0
            && next.bytes_burst > 0
            && next.moves_per_sec.is_finite()
            && next.moves_per_sec > 0.0
            && next.moves_burst > 0
            && next.max_moves > 0
            && next.max_moves_per_node > 0;
        let fractions = [next.pressure_floor, next.min_in_ratio]
            .iter()
            .all(|f| *f > 0.0 && *f <= 1.0);
        if !positive || !fractions {
            return Err(format!("recovery settings out of range: {next:?}"));
        }
        if next.down_after_ms < next.suspect_after_ms {
            return Err(format!(
                "down_after ({} ms) must not be shorter than suspect_after ({} ms)",
                next.down_after_ms, next.suspect_after_ms
            ));
        }
        if next.down_out_interval_ms < next.down_after_ms {
            return Err(format!(
                "down_out_interval ({} ms) must not be shorter than down_after ({} ms)",
                next.down_out_interval_ms, next.down_after_ms
            ));
        }
        Ok(())
    }
}

/// A change to the map, replicated through Raft.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Creates the map with its first node (id 1).
    Init {
        /// Random cluster id.
        cluster_id: u64,
        /// Partition count.
        partitions: u32,
        /// Replication settings.
        settings: Settings,
        /// The initialising node.
        first: NodeSpec,
    },
    /// Adds a node (or finds it again, for a retried join).
    AddNode(NodeSpec),
    /// Changes a node's state. Down and Out change no replica set (the
    /// replica checker moves data, throttled); Removed drops the node from
    /// every set at once.
    SetNodeState {
        /// The node.
        id: NodeId,
        /// Its new state.
        state: NodeState,
        /// The leader's clock (Unix ms).
        at_ms: u64,
    },
    /// Starts moves; each is skipped if its partition already has one or
    /// it no longer makes sense (the map changed since it was planned).
    StartMoves(Vec<(u32, Move)>),
    /// A move's copy is complete: `to` replaces `from` in the set.
    FinishMove {
        /// The partition.
        partition: u32,
        /// The node that copied it (must match the move in flight).
        to: NodeId,
    },
    /// Abandons moves (their target died, or the node they replace came
    /// back); the replica sets stay as they are.
    CancelMoves(Vec<u32>),
    /// Replaces every recovery setting (a new cluster's configured ones).
    SetRecoveryAll(RecoverySettings),
    /// Changes one recovery setting (`levee admin set KEY=VALUE`).
    SetRecovery {
        /// The setting's name (see [`RECOVERY_KEYS`]).
        key: String,
        /// Its new value, as the operator typed it.
        value: String,
    },
}

/// What applying a command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    /// Applied; the map is now at `epoch`.
    Applied {
        /// The new epoch.
        epoch: u64,
    },
    /// A node was added (or was already there with the same join token).
    NodeAdded {
        /// Its id.
        id: NodeId,
        /// The map's epoch after the command.
        epoch: u64,
    },
    /// Refused; the map is unchanged. The message says why and what to do.
    Rejected(String),
}

impl Default for CommandResult {
    fn default() -> Self {
        Self::Applied { epoch: 0 }
    }
}

impl ClusterMap {
    /// Applies a command. Pure and deterministic: every replica computes
    /// the same map from the same log.
    pub fn apply(&mut self, command: &Command) -> CommandResult {
        match command {
            Command::Init {
                cluster_id,
                partitions,
                settings,
                first,
            } => {
                if self.cluster_id != 0 {
                    return CommandResult::Rejected("cluster is already initialised".into());
                }
                *self = Self {
                    cluster_id: *cluster_id,
                    epoch: 0,
                    partitions: *partitions,
                    settings: *settings,
                    nodes: BTreeMap::new(),
                    assignment: Vec::new(),
                    next_node_id: 1,
                    recovery: RecoverySettings::default(),
                    moves: BTreeMap::new(),
                };
                self.add_node(first)
            }
            Command::AddNode(spec) => self.add_node(spec),
            Command::SetNodeState { id, state, at_ms } => self.set_node_state(*id, *state, *at_ms),
            Command::StartMoves(moves) => {
                let mut started = 0;
                for (partition, m) in moves {
                    if self.can_start(*partition, m) {
                        self.moves.insert(*partition, m.clone());
                        started += 1;
                    }
                }
                if started == 0 {
                    return CommandResult::Applied { epoch: self.epoch };
                }
                self.bump()
            }
            Command::FinishMove { partition, to } => self.finish_move(*partition, *to),
            Command::CancelMoves(partitions) => {
                let before = self.moves.len();
                for p in partitions {
                    self.moves.remove(p);
                }
                if self.moves.len() == before {
                    return CommandResult::Applied { epoch: self.epoch };
                }
                self.bump()
            }
            Command::SetRecoveryAll(settings) => match settings.checked() {
                Ok(()) => {
                    self.recovery = *settings;
                    self.bump()
                }
                Err(why) => CommandResult::Rejected(why),
            },
            Command::SetRecovery { key, value } => match self.recovery.with(key, value) {
                Ok(next) => {
                    self.recovery = next;
                    self.bump()
                }
                Err(why) => CommandResult::Rejected(why),
            },
        }
    }

    fn set_node_state(&mut self, id: NodeId, state: NodeState, at_ms: u64) -> CommandResult {
        let Some(node) = self.nodes.get_mut(&id) else {
            return CommandResult::Rejected(format!("no node {id} in the cluster"));
        };
        if node.state == state {
            return CommandResult::Applied { epoch: self.epoch };
        }
        if node.state == NodeState::Removed {
            return CommandResult::Rejected(format!(
                "node {id} was removed; a removed node never comes back (start it with an empty data directory to join as a new node)"
            ));
        }
        node.state = state;
        node.since_ms = at_ms;
        match state {
            // Only an operator's removal changes the sets at once: the
            // node is gone for good and its replicas must be rebuilt (by
            // the next rebalance's placement, then anti-entropy).
            NodeState::Removed => {
                self.moves.retain(|_, m| m.to != id && m.from != Some(id));
                for set in &mut self.assignment {
                    set.retain(|n| *n != id);
                }
            }
            // A node that is back keeps its replicas; moves replacing it
            // are pointless now.
            NodeState::Up => {
                self.moves.retain(|_, m| m.from != Some(id));
            }
            // Nothing is copied to a node that is not Up.
            NodeState::Down | NodeState::Out => {
                self.moves.retain(|_, m| m.to != id);
            }
            NodeState::Draining => {
                self.moves.retain(|_, m| m.to != id);
            }
        }
        self.bump()
    }

    /// Whether a planned move still fits the map: no other move on the
    /// partition, `from` in the set, `to` Up and not in it.
    fn can_start(&self, partition: u32, m: &Move) -> bool {
        let Some(set) = self.assignment.get(partition as usize) else {
            return false;
        };
        let to_up = self
            .nodes
            .get(&m.to)
            .is_some_and(|n| n.state == NodeState::Up);
        let from_ok = match m.from {
            Some(from) => set.contains(&from),
            None => set.len() < usize::from(self.settings.replicas),
        };
        !self.moves.contains_key(&partition) && to_up && from_ok && !set.contains(&m.to)
    }

    fn finish_move(&mut self, partition: u32, to: NodeId) -> CommandResult {
        let Some(m) = self.moves.get(&partition).filter(|m| m.to == to) else {
            return CommandResult::Rejected(format!(
                "no move of partition {partition} to node {to} is in flight (it was cancelled or already finished)"
            ));
        };
        let from = m.from;
        self.moves.remove(&partition);
        let Some(set) = self.assignment.get_mut(partition as usize) else {
            return CommandResult::Rejected(format!("no partition {partition}"));
        };
        match from.and_then(|f| set.iter().position(|n| *n == f)) {
            Some(i) => set[i] = to,
            None if !set.contains(&to) => set.push(to),
            None => {}
        }
        self.bump()
    }

    fn add_node(&mut self, spec: &NodeSpec) -> CommandResult {
        let existing = self
            .nodes
            .values()
            .find(|n| n.spec.addr == spec.addr && n.state != NodeState::Removed);
        if let Some(node) = existing {
            if node.spec.join_token == spec.join_token {
                return CommandResult::NodeAdded {
                    id: node.id,
                    epoch: self.epoch,
                };
            }
            return CommandResult::Rejected(format!(
                "address {} already belongs to node {} of this cluster, and the joining node is not it \
                 (its data directory was probably wiped). Restart node {} with its original data \
                 directory, or join with a different address to become a new node",
                spec.addr, node.id, node.id
            ));
        }
        let id = self.next_node_id.max(1);
        self.next_node_id = id + 1;
        self.nodes.insert(
            id,
            NodeInfo {
                id,
                spec: spec.clone(),
                state: NodeState::Up,
                since_ms: 0,
            },
        );
        self.rebalance();
        self.epoch += 1;
        CommandResult::NodeAdded {
            id,
            epoch: self.epoch,
        }
    }

    fn bump(&mut self) -> CommandResult {
        self.epoch += 1;
        CommandResult::Applied { epoch: self.epoch }
    }

    /// Recomputes replica sets with placement, moving as little as
    /// possible.
    fn rebalance(&mut self) {
        let candidates: Vec<Candidate> = self
            .nodes
            .values()
            .filter(|n| n.state.holds_replicas())
            .map(|n| Candidate {
                id: n.id,
                zone: n.spec.zone.clone(),
                capacity: n.spec.capacity,
            })
            .collect();
        self.assignment = placement::place(
            &candidates,
            self.partitions,
            usize::from(self.settings.replicas),
            &self.assignment,
        );
        // Placement may have changed sets under moves in flight; keep only
        // the moves that still make sense.
        let moves = std::mem::take(&mut self.moves);
        for (partition, m) in moves {
            if self.can_start(partition, &m) {
                self.moves.insert(partition, m);
            }
        }
    }

    /// The nodes holding partition `p` (empty for an unknown partition).
    pub fn replicas(&self, partition: u32) -> &[NodeId] {
        self.assignment
            .get(partition as usize)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// Replicas of partition `p` on Up nodes.
    pub fn live_replicas(&self, partition: u32) -> usize {
        self.replicas(partition)
            .iter()
            .filter(|id| self.state_of(**id) == Some(NodeState::Up))
            .count()
    }

    /// A node's state, if it is in the map.
    pub fn state_of(&self, id: NodeId) -> Option<NodeState> {
        self.nodes.get(&id).map(|n| n.state)
    }

    /// The node receiving a copy of partition `p`, if a move is in flight:
    /// writes go to it too, so the copy misses nothing written meanwhile.
    pub fn incoming(&self, partition: u32) -> Option<NodeId> {
        self.moves.get(&partition).map(|m| m.to)
    }

    /// Number of partitions a node holds a replica of.
    pub fn partitions_held(&self, id: NodeId) -> usize {
        self.assignment
            .iter()
            .filter(|set| set.contains(&id))
            .count()
    }

    /// Partitions with fewer replicas than R.
    pub fn under_replicated(&self) -> usize {
        let want = usize::from(self.settings.replicas);
        self.assignment
            .iter()
            .filter(|set| {
                set.iter()
                    .filter(|id| self.nodes.get(id).is_some_and(|n| n.state == NodeState::Up))
                    .count()
                    < want
            })
            .count()
    }

    /// Under-replicated partitions grouped by how many live replicas they
    /// have left: `{1: 4, 2: 30}` means 4 partitions have one, 30 have two.
    pub fn under_replicated_by_live(&self) -> BTreeMap<usize, usize> {
        let want = usize::from(self.settings.replicas);
        let mut groups = BTreeMap::new();
        for p in 0..self.partitions {
            let live = self.live_replicas(p);
            if live < want {
                *groups.entry(live).or_insert(0) += 1;
            }
        }
        groups
    }

    /// The node with this address, if any.
    pub fn node_by_addr(&self, addr: &str) -> Option<&NodeInfo> {
        self.nodes
            .values()
            .find(|n| n.spec.addr == addr && n.state != NodeState::Removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(addr: &str, zone: &str, token: u64) -> NodeSpec {
        NodeSpec {
            addr: addr.into(),
            admin: format!("{addr}-admin"),
            zone: zone.into(),
            capacity: 1,
            join_token: token,
        }
    }

    fn init() -> ClusterMap {
        let mut map = ClusterMap::default();
        let result = map.apply(&Command::Init {
            cluster_id: 42,
            partitions: 16,
            settings: Settings::default(),
            first: spec("a:1", "z1", 1),
        });
        assert_eq!(result, CommandResult::NodeAdded { id: 1, epoch: 1 });
        map
    }

    #[test]
    fn every_change_increases_the_epoch() {
        let mut map = init();
        let before = map.epoch;
        assert!(matches!(
            map.apply(&Command::AddNode(spec("b:1", "z2", 2))),
            CommandResult::NodeAdded { id: 2, .. }
        ));
        assert!(map.epoch > before);
        let before = map.epoch;
        map.apply(&Command::SetNodeState {
            id: 2,
            state: NodeState::Down,
            at_ms: 1,
        });
        assert!(map.epoch > before);
    }

    #[test]
    fn a_retried_join_gets_the_same_id_and_changes_nothing() {
        let mut map = init();
        let first = map.apply(&Command::AddNode(spec("b:1", "z2", 7)));
        let epoch = map.epoch;
        let again = map.apply(&Command::AddNode(spec("b:1", "z2", 7)));
        assert_eq!(first, again);
        assert_eq!(map.epoch, epoch);
    }

    #[test]
    fn a_wiped_node_reusing_an_address_is_refused_with_a_remedy() {
        let mut map = init();
        map.apply(&Command::AddNode(spec("b:1", "z2", 7)));
        let before = map.clone();
        let CommandResult::Rejected(message) = map.apply(&Command::AddNode(spec("b:1", "z2", 8)))
        else {
            panic!("a new token on a known address must be refused");
        };
        assert!(
            message.contains("node 2") && message.contains("different address"),
            "{message}"
        );
        assert_eq!(map, before);
    }

    #[test]
    fn ids_are_never_reused() {
        let mut map = init();
        map.apply(&Command::AddNode(spec("b:1", "z2", 2)));
        map.apply(&Command::SetNodeState {
            id: 2,
            state: NodeState::Removed,
            at_ms: 1,
        });
        let result = map.apply(&Command::AddNode(spec("b:1", "z2", 3)));
        assert!(
            matches!(result, CommandResult::NodeAdded { id: 3, .. }),
            "{result:?}"
        );
    }

    #[test]
    fn joining_nodes_get_partitions_and_replicas_reach_r() {
        let mut map = init();
        map.apply(&Command::AddNode(spec("b:1", "z2", 2)));
        map.apply(&Command::AddNode(spec("c:1", "z3", 3)));
        assert_eq!(map.assignment.len(), 16);
        assert!(map.assignment.iter().all(|set| set.len() == 3));
        assert_eq!(map.under_replicated(), 0);
        for id in 1..=3 {
            assert_eq!(map.partitions_held(id), 16);
        }
    }

    fn five_nodes() -> ClusterMap {
        let mut map = init();
        for (i, zone) in [(2, "z2"), (3, "z3"), (4, "z1"), (5, "z2")] {
            map.apply(&Command::AddNode(spec(&format!("n{i}:1"), zone, i)));
        }
        map
    }

    fn set_state(map: &mut ClusterMap, id: NodeId, state: NodeState) -> CommandResult {
        map.apply(&Command::SetNodeState {
            id,
            state,
            at_ms: 1_000,
        })
    }

    /// A partition holding `from` but not `to`, and a move between them.
    fn a_move(map: &ClusterMap, from: NodeId, to: NodeId) -> (u32, Move) {
        let p = (0..map.partitions)
            .find(|p| map.replicas(*p).contains(&from) && !map.replicas(*p).contains(&to))
            .expect("some partition holds `from` and not `to`");
        let source = *map.replicas(p).iter().find(|n| **n != from).unwrap();
        (
            p,
            Move {
                from: Some(from),
                to,
                source,
                started_ms: 5,
            },
        )
    }

    #[test]
    fn down_and_out_change_no_replica_set() {
        let mut map = five_nodes();
        let before = map.assignment.clone();
        set_state(&mut map, 2, NodeState::Down);
        assert_eq!(map.assignment, before);
        assert_eq!(map.nodes[&2].since_ms, 1_000);
        assert!(map.under_replicated() > 0);
        set_state(&mut map, 2, NodeState::Out);
        assert_eq!(
            map.assignment, before,
            "only the checker's moves change sets"
        );
        let groups = map.under_replicated_by_live();
        assert_eq!(groups.get(&2).copied(), Some(map.partitions_held(2)));
    }

    #[test]
    fn a_finished_move_replaces_the_lost_replica() {
        let mut map = five_nodes();
        set_state(&mut map, 2, NodeState::Out);
        let (p, m) = a_move(&map, 2, 4);
        map.apply(&Command::StartMoves(vec![(p, m.clone())]));
        assert_eq!(map.incoming(p), Some(4));
        let epoch = map.epoch;
        assert!(matches!(
            map.apply(&Command::FinishMove {
                partition: p,
                to: 5
            }),
            CommandResult::Rejected(_)
        ));
        assert_eq!(map.epoch, epoch);
        map.apply(&Command::FinishMove {
            partition: p,
            to: 4,
        });
        assert!(map.replicas(p).contains(&4) && !map.replicas(p).contains(&2));
        assert_eq!(map.replicas(p).len(), 3);
        assert!(map.moves.is_empty());
    }

    #[test]
    fn moves_that_no_longer_fit_are_skipped_or_dropped() {
        let mut map = five_nodes();
        set_state(&mut map, 2, NodeState::Out);
        let (p, m) = a_move(&map, 2, 4);
        // Twice on one partition: the second is skipped.
        map.apply(&Command::StartMoves(vec![(p, m.clone()), (p, m.clone())]));
        assert_eq!(map.moves.len(), 1);
        // The node being replaced comes back: the move is pointless.
        set_state(&mut map, 2, NodeState::Up);
        assert!(map.moves.is_empty());
        // A target that is not Up is never started, and one that goes
        // down loses its move.
        set_state(&mut map, 2, NodeState::Out);
        set_state(&mut map, 4, NodeState::Down);
        map.apply(&Command::StartMoves(vec![(p, m.clone())]));
        assert!(map.moves.is_empty());
        set_state(&mut map, 4, NodeState::Up);
        map.apply(&Command::StartMoves(vec![(p, m)]));
        assert_eq!(map.moves.len(), 1);
        set_state(&mut map, 4, NodeState::Down);
        assert!(map.moves.is_empty());
    }

    #[test]
    fn cancelled_moves_leave_the_sets_alone() {
        let mut map = five_nodes();
        set_state(&mut map, 2, NodeState::Out);
        let before = map.assignment.clone();
        let (p, m) = a_move(&map, 2, 4);
        map.apply(&Command::StartMoves(vec![(p, m)]));
        map.apply(&Command::CancelMoves(vec![p]));
        assert!(map.moves.is_empty());
        assert_eq!(map.assignment, before);
    }

    #[test]
    fn removal_drops_the_node_from_every_set_and_is_final() {
        let mut map = five_nodes();
        set_state(&mut map, 2, NodeState::Removed);
        assert_eq!(map.partitions_held(2), 0);
        assert!(matches!(
            set_state(&mut map, 2, NodeState::Up),
            CommandResult::Rejected(_)
        ));
    }

    #[test]
    fn recovery_settings_are_checked_before_they_are_applied() {
        let mut map = init();
        let set = |map: &mut ClusterMap, k: &str, v: &str| {
            map.apply(&Command::SetRecovery {
                key: k.into(),
                value: v.into(),
            })
        };
        assert!(matches!(
            set(&mut map, "recovery.bytes_per_sec", "1048576"),
            CommandResult::Applied { .. }
        ));
        assert_eq!(map.recovery.bytes_per_sec, 1 << 20);
        set(&mut map, "noout", "on");
        assert!(map.recovery.noout);
        set(&mut map, "min_in_ratio", "0.5");
        assert_eq!(map.recovery.min_in_ratio, 0.5);
        let before = map.clone();
        for (k, v) in [
            ("recovery.bytes_per_sec", "0"),
            ("recovery.bytes_per_sec", "fast"),
            ("recovery.moves_per_sec", "NaN"),
            ("min_in_ratio", "1.5"),
            ("down_after", "1"),
            ("nonsense", "1"),
        ] {
            let result = set(&mut map, k, v);
            assert!(
                matches!(result, CommandResult::Rejected(_)),
                "{k}={v}: {result:?}"
            );
        }
        assert_eq!(map, before);
        // Every key listed for operators is accepted by the map.
        for (key, _) in RECOVERY_KEYS {
            let value = match *key {
                "noout" | "zone_guard" => "off",
                "min_in_ratio" | "recovery.pressure_floor" => "0.9",
                "suspect_after" => "1000",
                "down_out_interval" => "900000",
                _ => "20000",
            };
            assert!(
                map.recovery.with(key, value).is_ok(),
                "{key}={value} refused"
            );
        }
    }
}
