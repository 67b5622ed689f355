//! Coordinating a key operation across the replicas of its partition.
//!
//! The node a client picked (a replica of the key's partition) fans a write
//! out to every replica and answers once W of them have it; replicas that
//! fail get a hint. A read asks the read quorum, answers the newest
//! version, and repairs the replicas that answered with an older one.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::quorum::{Quorum, Tally};
use crate::client::ClientError;
use crate::cluster::NodeId;
use crate::cluster::map::{ClusterMap, NodeState};
use crate::node::Node;
use crate::partition::partition_of;
use crate::proto::{Found, NodeRequest, Response, WireError};
use crate::raft::Cluster;
use crate::storage::hints::Hint;
use crate::storage::{Applied, Version};

/// One replica of a partition as the coordinator sees it.
#[derive(Debug, Clone)]
struct Replica {
    id: NodeId,
    addr: String,
    /// Down replicas are not sent to (the write goes straight to a hint).
    up: bool,
}

/// The replicas of a key's partition, after checking that this node may
/// coordinate for it (by its own map, whatever the client's).
fn route(map: &ClusterMap, me: NodeId, key: &[u8]) -> Result<(u32, Vec<Replica>), WireError> {
    if map.partitions == 0 {
        return Err(WireError::Unavailable {
            detail: "the cluster map is not initialised yet".into(),
        });
    }
    let partition = partition_of(key, map.partitions);
    let replicas = replica_set(map, me, partition)?
        .iter()
        .filter_map(|id| map.nodes.get(id))
        .map(|n| Replica {
            id: n.id,
            addr: n.spec.addr.clone(),
            up: n.state == NodeState::Up,
        })
        .collect();
    Ok((partition, replicas))
}

/// The replica set of `partition`, after checking that this node is in
/// it. The client's map may be older: this node coordinates by its own,
/// and its epoch goes back with the answer (`ResponseFrame::epoch`), so
/// the client learns the newer map without a second attempt (issue #17:
/// during a recovery the map changes with every move, and refusing every
/// request on an older map cost the recovering second a fifth more
/// attempts). Also what a scan page checks before it reads.
pub fn replica_set(map: &ClusterMap, me: NodeId, partition: u32) -> Result<&[NodeId], WireError> {
    let set = map
        .assignment
        .get(partition as usize)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if !set.contains(&me) {
        return Err(WireError::NotReplica { epoch: map.epoch });
    }
    Ok(set)
}

/// The node receiving a copy of `partition`, if a move is in flight and
/// the target is Up and outside the set (the map only starts such moves;
/// checked again so a write is never sent twice to one node).
fn incoming(map: &ClusterMap, partition: u32, replicas: &[Replica]) -> Option<Replica> {
    let to = map.incoming(partition)?;
    let info = map.nodes.get(&to)?;
    (info.state == NodeState::Up && replicas.iter().all(|r| r.id != to)).then(|| Replica {
        id: to,
        addr: info.spec.addr.clone(),
        up: true,
    })
}

fn remaining(deadline: Instant) -> std::time::Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// What one replica said about a write.
type WriteAnswer = Result<(bool, Version), String>;

/// Writes to every replica; answers after W acknowledgements.
pub async fn write(
    node: &Arc<Node>,
    cluster: &Cluster,
    key: Vec<u8>,
    version: Version,
    value: Option<Vec<u8>>,
    deadline: Instant,
) -> Result<Response, WireError> {
    // Counted in its map's epoch until it answers, so that no move's copy
    // starts while it may still land on the source alone
    // (`node/write_epochs.rs`).
    let (map, _in_flight) = node.write_epochs().begin(|| {
        let map = cluster.map();
        let epoch = map.epoch;
        (map, epoch)
    });
    let (partition, replicas) = route(&map, cluster.node_id(), &key)?;
    let mut quorum = Quorum::new(usize::from(map.settings.write_quorum), replicas.len());
    let hint = Arc::new(Hint {
        partition,
        key,
        version,
        value,
    });
    if let Some(target) = incoming(&map, partition, &replicas) {
        // A move's target gets every write while it copies, so the copy
        // misses nothing written meanwhile (the versions make the two
        // merge safely). It is not a replica yet: its answer does not
        // count toward W and the client never waits for it. A failure is
        // hinted rather than ignored: once the move finishes the target
        // replaces a replica that did get the write, and a missed write
        // there could leave only W - 1 copies of an acknowledged value
        // until anti-entropy ran; the hint closes that gap sooner, at the
        // cost of a harmless replay if the move is cancelled instead.
        let (node, hint) = (node.clone(), hint.clone());
        tokio::spawn(async move {
            if let Err(e) = replicate(&node, &target.addr, &hint, remaining(deadline)).await {
                store_hint(&node, target.id, &hint, &e).await;
            }
        });
    }
    let (tx, mut rx) = mpsc::channel::<(bool, WriteAnswer)>(replicas.len().max(1));
    // When the quorum turns out impossible, the answer still waits for
    // this node's own apply (local, quick): the error then tells the client
    // truly whether the value is on the node it asked.
    let mut local_pending = replicas.iter().any(|r| r.id == cluster.node_id());
    for replica in replicas {
        let (node, hint, tx) = (node.clone(), hint.clone(), tx.clone());
        let me = cluster.node_id();
        // Each replica's write runs to completion even after the quorum
        // is reached, so a slow replica still gets the value (or a hint).
        tokio::spawn(async move {
            let answer = write_one(&node, me, &replica, &hint, deadline).await;
            if let Err(e) = &answer
                && replica.id != me
            {
                store_hint(&node, replica.id, &hint, e).await;
            }
            let _ = tx.send((replica.id == me, answer)).await;
        });
    }
    drop(tx);
    let mut applied = false;
    let mut stored = version;
    let mut first_error = String::new();
    let mut impossible = false;
    loop {
        let Some((local, answer)) = next_answer(&mut rx, deadline, &mut first_error).await else {
            break;
        };
        local_pending &= !local;
        let tally = match answer {
            Ok((was_applied, version)) => {
                applied |= was_applied;
                stored = stored.max(version);
                quorum.ack()
            }
            Err(e) => {
                if first_error.is_empty() {
                    first_error = e;
                }
                quorum.fail()
            }
        };
        match tally {
            Tally::Reached => {
                return Ok(Response::Written {
                    applied,
                    version: stored,
                });
            }
            Tally::Impossible => impossible = true,
            Tally::Pending => {}
        }
        if impossible && !local_pending {
            break;
        }
    }
    Err(quorum_failed(&quorum, map.settings.replicas, first_error))
}

/// The next replica's answer, or `None` when no more can come: every
/// replica has answered, or the deadline passed (which then becomes the
/// reason reported).
async fn next_answer<T>(
    rx: &mut mpsc::Receiver<T>,
    deadline: Instant,
    reason: &mut String,
) -> Option<T> {
    match tokio::time::timeout_at(deadline, rx.recv()).await {
        Ok(answer) => answer,
        Err(_) => {
            *reason = "deadline passed".into();
            None
        }
    }
}

fn quorum_failed(quorum: &Quorum, replicas: u8, detail: String) -> WireError {
    WireError::QuorumFailed {
        acked: quorum.acked() as u32,
        needed: quorum.needed() as u32,
        replicas: u32::from(replicas),
        detail,
    }
}

async fn write_one(
    node: &Node,
    me: NodeId,
    replica: &Replica,
    hint: &Hint,
    deadline: Instant,
) -> WriteAnswer {
    if replica.id == me {
        return apply_locally(node, hint).await;
    }
    if !replica.up {
        return Err(format!("node {} is down", replica.id));
    }
    replicate(node, &replica.addr, hint, remaining(deadline)).await
}

/// Applies a record to this node's own replica (the coordinator is one of
/// the partition's replicas).
async fn apply_locally(node: &Node, hint: &Hint) -> WriteAnswer {
    match node
        .storage()
        .apply(
            hint.partition,
            &hint.key,
            hint.version,
            hint.value.as_deref(),
        )
        .await
    {
        Ok(Applied::Written) => Ok((true, hint.version)),
        Ok(Applied::Stale { current }) => Ok((false, current)),
        Err(e) => Err(format!("local write failed: {e}")),
    }
}

/// Sends one record to one replica.
pub async fn replicate(
    node: &Node,
    addr: &str,
    hint: &Hint,
    timeout: std::time::Duration,
) -> WriteAnswer {
    let request = NodeRequest::Replicate {
        partition: hint.partition,
        key: hint.key.clone(),
        version: hint.version,
        value: hint.value.clone(),
    };
    match node.peers().request(addr, request, timeout).await {
        Ok(Response::Written { applied, version }) => Ok((applied, version)),
        Ok(other) => Err(format!("{addr} answered {other:?}")),
        Err(e) => Err(e.to_string()),
    }
}

async fn store_hint(node: &Node, target: NodeId, hint: &Hint, why: &str) {
    match node.hints().add(target, hint).await {
        Ok(true) => tracing::debug!(target, error = why, "replica missed a write; hint stored"),
        Ok(false) => tracing::warn!(
            target,
            "hint dropped: the bound for this node is reached; anti-entropy will repair"
        ),
        Err(e) => {
            tracing::error!(target, error = %e, "cannot store hint; anti-entropy will repair")
        }
    }
}

/// The order a read asks replicas in: this node first (no network) if
/// its copy is open, then the other up replicas, least loaded first (by
/// `rank`, which orders addresses), then this node if its copy is still
/// opening, then the down ones.
fn read_order(
    replicas: &mut [Replica],
    me: NodeId,
    local_open: bool,
    rank: impl FnOnce(&mut [String]),
) {
    let class = |r: &Replica| match (r.id == me, r.up) {
        (true, _) if local_open => 0,
        (false, true) => 1,
        (true, _) => 2,
        (false, false) => 3,
    };
    replicas.sort_by_key(class);
    let Some(start) = replicas.iter().position(|r| class(r) == 1) else {
        return;
    };
    let count = replicas[start..]
        .iter()
        .take_while(|r| class(r) == 1)
        .count();
    let others = &mut replicas[start..start + count];
    let mut addrs: Vec<String> = others.iter().map(|r| r.addr.clone()).collect();
    rank(&mut addrs);
    others.sort_by_key(|r| addrs.iter().position(|a| *a == r.addr));
}

/// Why a replica gave no answer to a read.
#[derive(Debug)]
enum ReadFailure {
    /// The replica just restarted and is opening the partition's storage:
    /// not a failure, it can answer in a moment.
    Opening,
    /// The replica's storage could not read the key (a damaged record,
    /// most likely): another replica answers in its place, and the
    /// newest record found is written back to it (read repair).
    Unreadable(String),
    /// Anything else.
    Failed(String),
}

/// What one replica said about a read.
type ReadAnswer = (usize, Result<Option<Found>, ReadFailure>);

/// How long a read waits before asking a replica whose copy was still
/// opening again (an open takes milliseconds).
const REASK_OPENING_AFTER: std::time::Duration = std::time::Duration::from_millis(5);

/// Reads from the read quorum and answers the newest version.
pub async fn read(
    node: &Arc<Node>,
    cluster: &Cluster,
    key: Vec<u8>,
    deadline: Instant,
) -> Result<Response, WireError> {
    let map = cluster.map();
    let me = cluster.node_id();
    let (partition, mut replicas) = route(&map, me, &key)?;
    // Ask ourselves first (no network), then the others, up ones first;
    // but just after a restart, while our copy's storage shard is not
    // open yet, ask the others first and open it in the background, so
    // that no read waits for an open it does not need.
    let local_open = node.storage().is_open_else_start(partition);
    read_order(&mut replicas, me, local_open, |addrs| {
        node.peers().rank(addrs)
    });
    let mut quorum = Quorum::new(usize::from(map.settings.read_quorum), replicas.len());
    let key = Arc::new(key);
    let (tx, mut rx) = mpsc::channel::<ReadAnswer>(replicas.len().max(1));
    let mut next = 0;
    let launch_after = |index: usize, delay: std::time::Duration| {
        let (node, key, tx) = (node.clone(), key.clone(), tx.clone());
        let replica = replicas[index].clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if tx.is_closed() {
                // The read is over (a re-ask that is no longer needed).
                return;
            }
            let answer = read_one(&node, me, &replica, partition, &key, deadline).await;
            let _ = tx.send((index, answer)).await;
        });
    };
    let launch = |index: usize| launch_after(index, std::time::Duration::ZERO);
    // Asks past the first `needed` (a failed replica's replacement, a
    // hedge, a copy still opening asked again) are the read's retries:
    // each call to a peer among them is paid from the node's retry
    // budget, or not made, so a struggling cluster is not sent extra
    // reads on top of its load. Its own copy and a Down replica (answered
    // without a call) cost nothing.
    let may_retry = |index: usize| {
        let replica = &replicas[index];
        replica.id == me || !replica.up || node.peers().try_retry()
    };
    while next < quorum.needed() {
        launch(next);
        next += 1;
    }
    let mut answers: Vec<(usize, Option<Found>)> = Vec::new();
    // Replicas that could not read the key: repaired with the rest.
    let mut unreadable: Vec<usize> = Vec::new();
    let mut first_error = String::new();
    let hedge_after = node.hedge_delay();
    let mut hedge_at = Instant::now() + hedge_after;
    // Off once the budget refuses a hedge: the read then waits for the
    // replicas asked.
    let mut hedging = true;
    loop {
        // A replica that is alive in the map but frozen or partitioned
        // answers nothing, and waiting for it would spend the whole
        // deadline: past the hedge delay, one more replica is asked.
        let spare = hedging && next < replicas.len();
        let wait_until = if spare {
            hedge_at.min(deadline)
        } else {
            deadline
        };
        let Some((index, answer)) = next_answer(&mut rx, wait_until, &mut first_error).await else {
            if spare && Instant::now() < deadline {
                first_error.clear();
                if may_retry(next) {
                    launch(next);
                    next += 1;
                    hedge_at = Instant::now() + hedge_after;
                } else {
                    hedging = false;
                }
                continue;
            }
            break;
        };
        let answer = match answer {
            Err(ReadFailure::Unreadable(e)) => {
                unreadable.push(index);
                Err(ReadFailure::Failed(e))
            }
            other => other,
        };
        let tally = match answer {
            Ok(found) => {
                answers.push((index, found));
                quorum.ack()
            }
            Err(ReadFailure::Opening) => {
                // A replica back from a restart, opening its copy: another
                // replica if one is left, and this one again shortly
                // (when every replica restarted at once, they all are).
                if next < replicas.len() && may_retry(next) {
                    launch(next);
                    next += 1;
                }
                if first_error.is_empty() {
                    first_error = format!("node {} is opening its storage", replicas[index].id);
                }
                if may_retry(index) {
                    launch_after(index, REASK_OPENING_AFTER);
                    Tally::Pending
                } else {
                    // Not asked again: it will not answer this read.
                    quorum.fail()
                }
            }
            Err(ReadFailure::Failed(e) | ReadFailure::Unreadable(e)) => {
                if first_error.is_empty() {
                    first_error = e;
                }
                // Ask a replica not asked yet in place of the failed one.
                if next < replicas.len() && may_retry(next) {
                    launch(next);
                    next += 1;
                }
                quorum.fail()
            }
        };
        match tally {
            Tally::Reached => break,
            Tally::Impossible => {
                return Err(quorum_failed(&quorum, map.settings.replicas, first_error));
            }
            Tally::Pending => {}
        }
    }
    if quorum.tally() != Tally::Reached {
        return Err(quorum_failed(&quorum, map.settings.replicas, first_error));
    }
    let newest = answers
        .iter()
        .filter_map(|(_, f)| f.as_ref())
        .max_by_key(|f| f.version)
        .cloned();
    if let Some(newest) = &newest {
        // An unreadable replica counts as one that answered nothing.
        answers.extend(unreadable.into_iter().map(|index| (index, None)));
        repair(node, me, &replicas, &answers, partition, &key, newest);
    }
    Ok(Response::Get(newest))
}

async fn read_one(
    node: &Node,
    me: NodeId,
    replica: &Replica,
    partition: u32,
    key: &[u8],
    deadline: Instant,
) -> Result<Option<Found>, ReadFailure> {
    if replica.id == me {
        return node
            .storage()
            .read(partition, key)
            .await
            .map(|r| {
                r.map(|r| Found {
                    version: r.version,
                    value: r.value,
                })
            })
            .map_err(|e| ReadFailure::Unreadable(format!("local read failed: {e}")));
    }
    if !replica.up {
        return Err(ReadFailure::Failed(format!("node {} is down", replica.id)));
    }
    let request = NodeRequest::ReadLocal {
        partition,
        key: key.to_vec(),
    };
    let sent = Instant::now();
    match node
        .peers()
        .request(&replica.addr, request, remaining(deadline))
        .await
    {
        Ok(Response::Get(found)) => {
            node.record_replica_read(sent.elapsed());
            Ok(found)
        }
        Ok(other) => Err(ReadFailure::Failed(format!(
            "{} answered {other:?}",
            replica.addr
        ))),
        Err(ClientError::Server(WireError::PartitionOpening { .. })) => Err(ReadFailure::Opening),
        Err(ClientError::Server(WireError::Storage { detail })) => Err(ReadFailure::Unreadable(
            format!("{} could not read it: {detail}", replica.addr),
        )),
        Err(e) => Err(ReadFailure::Failed(e.to_string())),
    }
}

/// Read repair: sends the newest record, in the background, to every
/// replica that answered with an older one (or none).
fn repair(
    node: &Arc<Node>,
    me: NodeId,
    replicas: &[Replica],
    answers: &[(usize, Option<Found>)],
    partition: u32,
    key: &[u8],
    newest: &Found,
) {
    for (index, found) in answers {
        if found.as_ref().is_some_and(|f| f.version >= newest.version) {
            continue;
        }
        let Some(replica) = replicas.get(*index).cloned() else {
            continue;
        };
        let node = node.clone();
        let hint = Hint {
            partition,
            key: key.to_vec(),
            version: newest.version,
            value: newest.value.clone(),
        };
        tokio::spawn(async move {
            let result = if replica.id == me {
                apply_locally(&node, &hint).await
            } else {
                replicate(&node, &replica.addr, &hint, REPAIR_TIMEOUT).await
            };
            match result {
                Ok(_) => tracing::debug!(replica = replica.id, "read repair applied"),
                Err(e) => {
                    tracing::debug!(replica = replica.id, error = %e, "read repair failed; anti-entropy will retry")
                }
            }
        });
    }
}

/// Time a background read repair gets.
const REPAIR_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::map::Command;
    use crate::cluster::test_maps::map_with;

    fn map(nodes: u64) -> ClusterMap {
        map_with(nodes, 8)
    }

    #[test]
    fn reads_ask_this_node_first_unless_its_copy_is_still_opening() {
        let replica = |id: NodeId, up: bool| Replica {
            id,
            addr: format!("n{id}"),
            up,
        };
        let ids = |r: &[Replica]| r.iter().map(|r| r.id).collect::<Vec<_>>();
        let keep = |_: &mut [String]| {};
        let mut replicas = vec![replica(1, false), replica(2, true), replica(3, true)];
        read_order(&mut replicas, 3, true, keep);
        assert_eq!(ids(&replicas), [3, 2, 1], "local, up, down");
        read_order(&mut replicas, 3, false, keep);
        assert_eq!(
            ids(&replicas),
            [2, 3, 1],
            "up others before a local copy still opening"
        );
    }

    #[test]
    fn the_other_up_replicas_are_asked_least_loaded_first() {
        let replica = |id: NodeId, up: bool| Replica {
            id,
            addr: format!("n{id}"),
            up,
        };
        let ids = |r: &[Replica]| r.iter().map(|r| r.id).collect::<Vec<_>>();
        // The ranking (the peer pool's load board) says n4 is the least
        // loaded, then n2: only the up others are reordered, and the
        // local copy still goes first.
        let rank = |addrs: &mut [String]| addrs.sort_by_key(|a| a != "n4");
        let mut replicas = vec![
            replica(1, false),
            replica(2, true),
            replica(3, true),
            replica(4, true),
        ];
        read_order(&mut replicas, 3, true, rank);
        assert_eq!(ids(&replicas), [3, 4, 2, 1]);
    }

    #[test]
    fn a_node_outside_the_replica_set_says_so_with_its_epoch() {
        let map = map(4);
        let key = (0..1000u32)
            .map(|i| i.to_be_bytes().to_vec())
            .find(|k| !map.assignment[partition_of(k, 8) as usize].contains(&1))
            .unwrap();
        assert_eq!(
            route(&map, 1, &key).unwrap_err(),
            WireError::NotReplica { epoch: map.epoch }
        );
    }

    #[test]
    fn writes_also_go_to_a_moves_target_and_reads_never_do() {
        use crate::cluster::map::Move;
        let mut map = map(4);
        let p = (0..8)
            .find(|p| !map.assignment[*p as usize].contains(&4))
            .unwrap();
        let set = map.assignment[p as usize].clone();
        let key = (0..1000u32)
            .map(|i| i.to_be_bytes().to_vec())
            .find(|k| partition_of(k, 8) == p)
            .unwrap();
        let (_, replicas) = route(&map, set[0], &key).unwrap();
        assert!(
            incoming(&map, p, &replicas).is_none(),
            "no move, no extra target"
        );
        map.apply(&Command::SetNodeState {
            id: set[0],
            state: NodeState::Draining,
            at_ms: 1,
        });
        map.apply(&Command::StartMoves(vec![(
            p,
            Move {
                from: Some(set[0]),
                to: 4,
                source: set[1],
                started_ms: 1,
            },
        )]));
        let (_, replicas) = route(&map, set[1], &key).unwrap();
        assert_eq!(replicas.len(), 3, "the quorum is over the set alone");
        assert!(
            replicas.iter().all(|r| r.id != 4),
            "reads do not use the target"
        );
        let target = incoming(&map, p, &replicas).expect("the target gets writes");
        assert_eq!((target.id, target.addr.as_str()), (4, "n4"));
    }

    #[test]
    fn a_replica_routes_by_its_own_map() {
        let map = map(3);
        let key = b"k".to_vec();
        let (p, replicas) = route(&map, 1, &key).unwrap();
        assert_eq!(p, partition_of(&key, 8));
        assert_eq!(replicas.len(), 3);
        let ids: Vec<NodeId> = replicas.iter().map(|r| r.id).collect();
        assert_eq!(ids, map.replicas(p));
    }
}
