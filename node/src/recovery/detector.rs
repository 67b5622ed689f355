//! The failure detector: from heartbeats and the cluster map to the node
//! state changes the leader should commit. Pure: time is a parameter.
//!
//! Silence walks a node through three thresholds (design §6): suspected
//! (shown, not acted on), Down (routing avoids it, nothing is copied), and
//! only after `down_out_interval` Out, which is what starts re-replication.
//! Out is the expensive decision, so three guards can hold it back: the
//! operator's `noout`, `min_in_ratio`, and the zone guard.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::cluster::NodeId;
use crate::cluster::map::{ClusterMap, NodeState};

/// A state change the leader should commit (`Command::SetNodeState`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The node.
    pub node: NodeId,
    /// Its new state.
    pub to: NodeState,
    /// Why, for the log and `levee status`.
    pub reason: String,
}

/// Guard names reported by [`Detector::held_by_guard`].
pub mod guard {
    /// The operator switched `noout` on.
    pub const NOOUT: &str = "noout";
    /// No other node of the zone is Up: the whole zone is gone.
    pub const ZONE: &str = "zone";
    /// Too few nodes would stay in.
    pub const MIN_IN_RATIO: &str = "min_in_ratio";
}

/// When each node last showed a sign of life.
#[derive(Debug, Clone, Copy)]
struct Heard {
    /// The instant of the sign of life.
    at: Instant,
    /// Silence the node had already accumulated at `at`: non-zero only for
    /// a node that was Down or Out when this detector started leading, so
    /// that a leader change does not restart its Out timer.
    before: Duration,
    /// When the node's current unbroken run of heartbeats began, if it
    /// began with a beat that ended a silence of `down_after` or more
    /// (the node came back); `None` for a node heard without such a gap
    /// since this detector learned of it. The zone guard asks it: a
    /// zone-mate that came back after a node fell silent was dark with it.
    back_since: Option<Instant>,
}

/// Last sign of life of every node, on the leader.
#[derive(Debug, Clone)]
pub struct Detector {
    /// A heartbeat, or the moment this detector first learned of the node
    /// (a grace period: a new leader has heard nobody yet, and marking the
    /// whole cluster Down on a leader change would be absurd).
    heard: BTreeMap<NodeId, Heard>,
    /// `down_after` as of the last evaluation (the map's default before
    /// the first): a beat after a silence this long starts a new run.
    down_after: Duration,
}

/// What one look at the map decides.
struct Judgement {
    /// What to commit: Down and Up first, then Out, longest silent first.
    transitions: Vec<Transition>,
    /// Ripe for Out but held, with the guard that holds each.
    held: Vec<(NodeId, &'static str)>,
}

impl Default for Detector {
    fn default() -> Self {
        Self {
            heard: BTreeMap::new(),
            down_after: Duration::from_millis(
                crate::cluster::map::RecoverySettings::default().down_after_ms,
            ),
        }
    }
}

impl Detector {
    /// An empty detector; call [`Detector::start_leading`] before judging.
    pub fn new() -> Self {
        Self::default()
    }

    /// Called when this node becomes leader (and at start). Forgets what
    /// it heard in an earlier term (those nodes may since have beaten
    /// another leader) and gives every node a fresh grace period, except
    /// nodes already Down or Out in the map: their silence is carried over
    /// from `since_ms` (`now_ms - since_ms`), so a leader change does not
    /// reset their Out timer. For a Down node this counts from when it was
    /// marked Down, so Out may come up to `down_after` later than on the
    /// old leader — late rather than early.
    pub fn start_leading(&mut self, map: &ClusterMap, now: Instant, now_ms: u64) {
        self.heard.clear();
        for node in map.nodes.values() {
            let before = match node.state {
                NodeState::Down | NodeState::Out => {
                    Duration::from_millis(now_ms.saturating_sub(node.since_ms))
                }
                NodeState::Up | NodeState::Draining => Duration::ZERO,
                NodeState::Removed => continue,
            };
            self.heard.insert(
                node.id,
                Heard {
                    at: now,
                    before,
                    back_since: None,
                },
            );
        }
        self.down_after = Duration::from_millis(map.recovery.down_after_ms);
    }

    /// Records a heartbeat from `node`.
    pub fn beat(&mut self, node: NodeId, now: Instant) {
        let previous = self.heard.get(&node).copied();
        let at = previous.map_or(now, |h| h.at.max(now));
        // `max`: heartbeats may be handled out of order, and an older one
        // must not make the node look more silent than it is.
        let gap = previous.map_or(Duration::ZERO, |h| {
            h.before + now.saturating_duration_since(h.at)
        });
        let back_since = if gap >= self.down_after {
            Some(now)
        } else {
            previous.and_then(|h| h.back_since)
        };
        self.heard.insert(
            node,
            Heard {
                at,
                before: Duration::ZERO,
                back_since,
            },
        );
    }

    /// How long `node` has been silent, or `None` if this detector has
    /// neither heard from it nor learned of it yet.
    pub fn silence(&self, node: NodeId, now: Instant) -> Option<Duration> {
        self.heard
            .get(&node)
            .map(|h| h.before + now.saturating_duration_since(h.at))
    }

    /// Up nodes silent for at least `suspect_after` but less than
    /// `down_after` (shown in status only: nothing acts on suspicion).
    pub fn suspects(&self, map: &ClusterMap, now: Instant) -> Vec<NodeId> {
        let suspect = Duration::from_millis(map.recovery.suspect_after_ms);
        let down = Duration::from_millis(map.recovery.down_after_ms);
        map.nodes
            .values()
            .filter(|n| n.state == NodeState::Up)
            .filter(|n| {
                self.silence(n.id, now)
                    .is_some_and(|s| s >= suspect && s < down)
            })
            .map(|n| n.id)
            .collect()
    }

    /// The state changes to commit now, with a reason each. At most one
    /// per node: an Up node that has been silent past `down_out_interval`
    /// goes Down now and Out on a later call, once Down is committed.
    ///
    /// Takes `&mut self` because it learns of nodes it has never heard of
    /// (joined since [`Detector::start_leading`], or `start_leading` was
    /// never called): their silence counts from this call, the same grace
    /// a new leader gives everybody. Counting it from `start_leading`
    /// instead would mark a node that joins an hour into a leader's term
    /// Out before its first heartbeat arrived.
    pub fn evaluate(&mut self, map: &ClusterMap, now: Instant) -> Vec<Transition> {
        self.heard.retain(|id, _| {
            map.state_of(*id)
                .is_some_and(|state| state != NodeState::Removed)
        });
        self.down_after = Duration::from_millis(map.recovery.down_after_ms);
        for node in map.nodes.values() {
            if node.state != NodeState::Removed {
                self.heard.entry(node.id).or_insert(Heard {
                    at: now,
                    before: Duration::ZERO,
                    back_since: None,
                });
            }
        }
        self.judge(map, now).transitions
    }

    /// Nodes silent long enough to be Out that a guard holds Down, with
    /// the first guard that holds each (see [`guard`]).
    pub fn held_by_guard(&self, map: &ClusterMap, now: Instant) -> Vec<(NodeId, &'static str)> {
        self.judge(map, now).held
    }

    fn judge(&self, map: &ClusterMap, now: Instant) -> Judgement {
        let settings = &map.recovery;
        let suspect = Duration::from_millis(settings.suspect_after_ms);
        let down = Duration::from_millis(settings.down_after_ms);
        let out = Duration::from_millis(settings.down_out_interval_ms);
        let mut transitions = Vec::new();
        // States as they will be once `transitions` are committed, so the
        // guards below see a zone-mate going Down in this same round.
        let mut states: BTreeMap<NodeId, NodeState> = BTreeMap::new();
        let mut ripe = Vec::new();
        for node in map.nodes.values() {
            if node.state == NodeState::Removed {
                continue;
            }
            states.insert(node.id, node.state);
            let Some(silence) = self.silence(node.id, now) else {
                continue;
            };
            let to = match node.state {
                NodeState::Up if silence >= down => NodeState::Down,
                NodeState::Down | NodeState::Out if silence < suspect => NodeState::Up,
                NodeState::Down if silence >= out => {
                    ripe.push((silence, node.id));
                    continue;
                }
                _ => continue,
            };
            let reason = match to {
                NodeState::Down => format!(
                    "no heartbeat for {:.1} s (down_after {:.1} s)",
                    silence.as_secs_f64(),
                    down.as_secs_f64()
                ),
                _ => format!(
                    "heartbeat again while {} (last {:.1} s ago)",
                    node.state,
                    silence.as_secs_f64()
                ),
            };
            states.insert(node.id, to);
            transitions.push(Transition {
                node: node.id,
                to,
                reason,
            });
        }
        // Longest silent first: the order the transitions are listed in.
        ripe.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let enough_in = enough_stay_in(&states, settings.min_in_ratio);
        let mut held = Vec::new();
        for (silence, id) in ripe {
            let guard = holding_guard(map, &states, id, enough_in, |mate| {
                self.stayed_up_through(mate, id, now, out)
            });
            match guard {
                Some(guard) => held.push((id, guard)),
                None => transitions.push(Transition {
                    node: id,
                    to: NodeState::Out,
                    reason: format!(
                        "silent for {:.1} s (down_out_interval {:.1} s)",
                        silence.as_secs_f64(),
                        out.as_secs_f64()
                    ),
                }),
            }
        }
        Judgement { transitions, held }
    }

    /// Whether `mate` shows that `silent`'s zone stayed up: it has beaten
    /// without a break since before `silent` fell silent, or, if it came
    /// back after that (its zone was dark with `silent`), for as long as
    /// `down_out_interval` since. A zone returns over seconds (minutes when
    /// machines boot one by one): without this, its first nodes heard
    /// would release the guard for the rest, marking them Out a moment
    /// before they are heard too.
    fn stayed_up_through(&self, mate: NodeId, silent: NodeId, now: Instant, out: Duration) -> bool {
        let Some(back) = self.heard.get(&mate).and_then(|h| h.back_since) else {
            return true;
        };
        let silent_since = self
            .heard
            .get(&silent)
            .and_then(|h| h.at.checked_sub(h.before));
        silent_since.is_some_and(|since| back <= since)
            || now.saturating_duration_since(back) >= out
    }
}

/// The first guard that keeps `id` from going Out, if any; `states` are
/// the nodes' states after this round's other transitions.
fn holding_guard(
    map: &ClusterMap,
    states: &BTreeMap<NodeId, NodeState>,
    id: NodeId,
    enough_in: bool,
    stayed_up: impl Fn(NodeId) -> bool,
) -> Option<&'static str> {
    if map.recovery.noout {
        Some(guard::NOOUT)
    } else if map.recovery.zone_guard && !zone_keeps_a_node_up(map, states, id, stayed_up) {
        Some(guard::ZONE)
    } else if !enough_in {
        Some(guard::MIN_IN_RATIO)
    } else {
        None
    }
}

/// Whether at least `min_in_ratio` of the (non-Removed) nodes stay in if
/// every node that is Down now goes Out.
///
/// Down nodes count as gone, not as in (Ceph counts them in until each is
/// marked): when several nodes vanish together the cause is more likely
/// the network than the nodes, and marking them Out one at a time would
/// still let one of two simultaneous losses in a 5-node cluster go Out at
/// 0.75 (4/5 stay in). Counted this way, losing 2 of 5 marks nothing Out
/// and losing 1 of 5 marks it Out. The check does not change as nodes are
/// marked (a Down node is already counted gone), so it holds all or none.
fn enough_stay_in(states: &BTreeMap<NodeId, NodeState>, min_in_ratio: f64) -> bool {
    let total = states.len();
    let staying = states
        .values()
        .filter(|s| !matches!(s, NodeState::Down | NodeState::Out))
        .count();
    total > 0 && staying as f64 / total as f64 >= min_in_ratio
}

/// Whether some other node of `id`'s zone is Up and stayed up while `id`
/// fell silent (the domino guard): a zone whose nodes are all silent has
/// most likely lost its network or power, and rebuilding the whole zone's
/// replicas onto the survivors would overload them for a failure that is
/// usually repaired as a whole; nor does the first node of such a zone to
/// come back show that the rest are gone. A node alone in its zone is
/// therefore never marked Out automatically.
fn zone_keeps_a_node_up(
    map: &ClusterMap,
    states: &BTreeMap<NodeId, NodeState>,
    id: NodeId,
    stayed_up: impl Fn(NodeId) -> bool,
) -> bool {
    let Some(zone) = map.nodes.get(&id).map(|n| &n.spec.zone) else {
        return false;
    };
    states.iter().any(|(other, state)| {
        *other != id
            && *state == NodeState::Up
            && map.nodes.get(other).is_some_and(|n| &n.spec.zone == zone)
            && stayed_up(*other)
    })
}

#[cfg(test)]
pub(crate) mod tests;
