//! The receiving side of a recovery transfer: for every move whose target
//! is this node, a puller copies the partition in key order, page by page,
//! from up to [`SOURCES_PER_MOVE`] live replicas, then asks the leader to
//! commit the new replica set.
//!
//! - The pace is set by the senders' byte budgets ([`super::sender`]) and
//!   this node's ingest budget (`Node::recv_budget`, paid before each page
//!   is asked, sized to what it can pay); the puller only asks for the
//!   next page.
//! - Several sources: each page is asked of the replica that has
//!   presumably saved the most budget since this puller last emptied it
//!   ([`next_source`]), so a target that is the only possible home of
//!   many partitions (the last node of a zone) draws on every surviving
//!   replica's rate, not on one sender per copy. A sender that refuses a
//!   page (its budget, or its clients, come first) is left alone until
//!   the time it gave, while the others serve.
//! - Resumable: the puller remembers the last key it applied. The next
//!   page, from whichever source, continues after that key; a source that
//!   fails mid-copy is replaced by another live replica the same way.
//! - Merge-safe: each record is applied if newer, and the coordinators send
//!   live writes to the target while the move is in flight (see
//!   `data::coordinator::write`), so a key written during the copy ends at
//!   its newest version whichever arrives first.
//! - Bounded: at most `max_moves_per_node` pullers at once, one page in
//!   memory each; a puller whose move leaves the map (cancelled, finished,
//!   replaced) is stopped.
//!
//! Progress is not persisted: a target that restarts copies the partition
//! again from the start, which apply-if-newer makes harmless.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::heartbeat::epoch_beat_gap_of;
use super::sender;
use crate::client::ClientError;
use crate::client::backoff::Backoff;
use crate::cluster::NodeId;
use crate::cluster::map::{ClusterMap, Command, CommandResult, Move, NodeState, RecoverySettings};
use crate::cluster::status::TransferProgress;
use crate::node::Node;
pub use crate::node::send_budget::SOURCES_PER_MOVE;
use crate::node::transfers::MAX_PULLERS;
use crate::partition::partition_of;
use crate::proto::{NodeRequest, RangeRecord, Response, WireError};
use crate::raft::Cluster;
use crate::storage::Unflushed;
use crate::storage::scan::record_bytes;
use crate::token_bucket::Wait;

/// Bytes asked per page. Large enough that the round trip is small next
/// to the transfer time at the default 32 MiB/s; small enough that a page
/// is well under the default burst (4 MiB) and a retried page wastes
/// little. The sender shrinks it further to fit its budget and deadline.
pub const PAGE_BYTES: u32 = 1024 * 1024;

/// Time one page request gets. The sender sizes the page so that its
/// budget can pay for it within half of this, so a slow configured rate
/// means smaller pages, not timeouts.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Time one `FinishMove` proposal gets (one hop to the leader, one Raft
/// commit).
const PROPOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest wait between seeing a move and reading its first page. A
/// write whose coordinator has not applied the move's map yet is not sent
/// to the target; it reaches the source instead, and must land there
/// before the copy reads past its key. So the puller waits until every
/// node that may coordinate has reported (in its heartbeats) an epoch at
/// least the move's ([`NodeRequest::Settled`], asked of the leader as
/// often as the nodes beat for a new epoch, see [`settle_step`]). A node reports an epoch only once it has applied it
/// and the last write it coordinated with an older map has ended
/// (`node/write_epochs.rs`), and beats as soon as that happens: a few
/// milliseconds, or a write's deadline at worst. This is the fallback
/// when that cannot be learned (no leader, a peer that does not report): the fixed pause the
/// puller used to take for every move, one second, which covers the map
/// reaching every node (a Raft heartbeat or two) for writes already in
/// flight. What slips through then (a write on an older map still in
/// flight a second after the move's epoch) is repaired by read repair and
/// anti-entropy once the target is a replica.
pub const SETTLE: Duration = Duration::from_secs(1);

/// Longest wait for one answer to [`NodeRequest::Settled`]: a late
/// answer is no better than the next question.
const SETTLED_TIMEOUT: Duration = Duration::from_millis(200);

/// Longest sleep while waiting for ingest tokens, so that a rate raised
/// meanwhile (operator, pressure gone) takes effect at once.
const INGEST_RECHECK: Duration = Duration::from_millis(250);

/// What a puller does next while its move's epoch settles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// Every coordinator has applied the move's epoch: copy.
    Go,
    /// Ask again after this long.
    Poll(Duration),
    /// [`SETTLE`] has passed without the answer: copy anyway, as the
    /// fixed pause used to.
    TimedOut,
}

/// Decides, with the `settled` epoch the leader last gave (if any), the
/// move's `epoch` and the time `waited` so far. `gap` is how often the
/// nodes beat for a new epoch ([`super::heartbeat::epoch_beat_gap`]): the leader's
/// answer can change no faster, so the puller asks that often at first;
/// past four gaps it asks every quarter of the time waited, so that a
/// node that never reports costs a move tens of questions before the
/// fallback, not hundreds. Pure.
pub fn settle_step(settled: Option<u64>, epoch: u64, waited: Duration, gap: Duration) -> Settle {
    if settled.is_some_and(|s| s >= epoch) {
        return Settle::Go;
    }
    match SETTLE.checked_sub(waited) {
        Some(left) if !left.is_zero() => Settle::Poll(gap.max(waited / 4).min(left)),
        _ => Settle::TimedOut,
    }
}

/// How long a source that failed is skipped before it is tried again:
/// long enough not to alternate between a dead source and a live one, short
/// enough that the source the checker chose (to spread the load) is back in
/// use soon after a transient failure.
pub const FAILED_HOLD: Duration = Duration::from_secs(30);

/// Retry pacing after errors: full jitter, so the pullers of many targets
/// whose source died together do not come back in lockstep.
const BACKOFF: Backoff = Backoff {
    base: Duration::from_millis(100),
    cap: Duration::from_secs(10),
};

/// How often finished pullers are reaped when the map does not change.
const REAP_EVERY: Duration = Duration::from_secs(1);

/// What the puller supervisor should change, given the map.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Moves to start pulling, in partition order.
    pub start: Vec<(u32, Move)>,
    /// Partitions whose puller must stop: their move left the map or was
    /// replaced by another.
    pub stop: Vec<u32>,
}

/// Pullers to start and stop so that exactly the map's moves into `me`
/// run, at most `min(max_moves_per_node, MAX_PULLERS)` at once. Pure.
pub fn plan(map: &ClusterMap, me: NodeId, running: &BTreeMap<u32, Move>) -> Plan {
    let cap = usize::try_from(map.recovery.max_moves_per_node)
        .unwrap_or(MAX_PULLERS)
        .clamp(1, MAX_PULLERS);
    let wanted = |p: &u32, m: &Move| m.to == me && map.moves.get(p) == Some(m);
    let stop: Vec<u32> = running
        .iter()
        .filter(|(p, m)| !wanted(p, m))
        .map(|(p, _)| *p)
        .collect();
    let kept = running.len() - stop.len();
    let start = map
        .moves
        .iter()
        .filter(|(p, m)| m.to == me && running.get(p) != Some(m))
        .take(cap.saturating_sub(kept))
        .map(|(p, m)| (*p, m.clone()))
        .collect();
    Plan { start, stop }
}

/// The replicas to copy `partition` from, best first, skipping `me` and
/// the nodes in `failed`.
///
/// While the replaced node runs (Up, or Draining: a drain, a move for
/// placement), it alone, whether it failed lately or not (the puller's
/// pauses pace the retries): it holds every write it acknowledged, and
/// another replica may lack some of them (W of R acknowledged each), so a
/// copy from that replica would leave such a write on one replica once
/// the move ends, where it was on W.
///
/// Otherwise (the replaced node is down or out: a failure, which W of R
/// survives): the move's chosen source if it can serve, then the other
/// Up replicas of the set (from a partition-dependent position, so the
/// load of many moves spreads out), at most [`SOURCES_PER_MOVE`]. Pure.
pub fn sources(
    map: &ClusterMap,
    partition: u32,
    m: &Move,
    me: NodeId,
    failed: &BTreeSet<NodeId>,
) -> Vec<NodeId> {
    let running = |id: NodeId| {
        map.state_of(id)
            .is_some_and(|s| matches!(s, NodeState::Up | NodeState::Draining))
    };
    if let Some(from) = m
        .from
        .filter(|f| *f != me && running(*f) && sender::may_serve(map, *f, partition))
    {
        return vec![from];
    }
    let can = |id: NodeId, states: &[NodeState]| {
        id != me
            && !failed.contains(&id)
            && sender::may_serve(map, id, partition)
            && map.state_of(id).is_some_and(|s| states.contains(&s))
    };
    let mut found = Vec::with_capacity(SOURCES_PER_MOVE);
    if can(m.source, &[NodeState::Up, NodeState::Draining]) {
        found.push(m.source);
    }
    let set = map.replicas(partition);
    let offset = partition as usize % set.len().max(1);
    for id in set.iter().cycle().skip(offset).take(set.len()) {
        if found.len() >= SOURCES_PER_MOVE {
            break;
        }
        if !found.contains(id) && can(*id, &[NodeState::Up]) {
            found.push(*id);
        }
    }
    found
}

/// The first of [`sources`]: the replica a puller with no history asks
/// first (the simulator's copies, one stream each, use it alone).
pub fn choose_source(
    map: &ClusterMap,
    partition: u32,
    m: &Move,
    me: NodeId,
    failed: &BTreeSet<NodeId>,
) -> Option<NodeId> {
    sources(map, partition, m, me, failed).first().copied()
}

/// Where a puller asks its next page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Ask this source for about this many bytes.
    Ask(NodeId, u64),
    /// Every source refused and said when to come back: wait this long.
    Wait(Duration),
}

/// How many of the map's moves draw pages from each node: every node in
/// each move's [`sources`]. A sender's budget is shared by all of them, so
/// a puller counts on `1 / draws` of its rate. Pure.
pub fn draws(map: &ClusterMap) -> BTreeMap<NodeId, u32> {
    let none = BTreeSet::new();
    let mut draws = BTreeMap::new();
    for (p, m) in &map.moves {
        for id in sources(map, *p, m, m.to, &none) {
            *draws.entry(id).or_insert(0u32) += 1;
        }
    }
    draws
}

/// Picks the source of the next page among `sources` (best first), given
/// when this puller last emptied each one's budget (`drained`: the
/// arrival of its last page; a time still to come is a source that
/// refused and said when to come back), how many moves draw on each
/// ([`draws`]), and the configured rate and burst:
///
/// - one source: a full page, which its sender paces;
/// - several: the one that has presumably saved the most for this puller
///   since (its rate shared evenly by the moves drawing on it; ties to
///   the earlier in `sources`), asked for that much but at least half a
///   burst, so pages are neither tiny nor left waiting at one sender
///   while another's budget fills up to its burst and stops saving;
/// - every one refused: wait until the first comes back.
///
/// The guess ignores the sender's pressure; a page asked for more than
/// its sender has simply waits there for the rest. `None` without
/// sources. Pure.
pub fn next_source(
    sources: &[NodeId],
    drained: &BTreeMap<NodeId, Instant>,
    draws: &BTreeMap<NodeId, u32>,
    settings: &RecoverySettings,
    now: Instant,
) -> Option<Next> {
    let burst = settings.bytes_burst.max(1) as f64;
    let rate = settings.bytes_per_sec as f64;
    let share = |id: &NodeId| f64::from(draws.get(id).copied().unwrap_or(1).max(1));
    // Saved budget, or `Err` with the wait of a source that refused.
    let saved = |id: &NodeId| match drained.get(id) {
        None => Ok(burst / share(id)),
        Some(at) if *at > now => Err(*at - now),
        Some(at) => {
            let since = now.duration_since(*at).as_secs_f64();
            Ok((rate * since).min(burst) / share(id))
        }
    };
    let mut best: Option<(NodeId, f64)> = None;
    let mut soonest: Option<Duration> = None;
    for id in sources {
        match saved(id) {
            Ok(bytes) if best.is_none_or(|(_, b)| bytes > b) => best = Some((*id, bytes)),
            Ok(_) => {}
            Err(wait) => soonest = Some(soonest.map_or(wait, |s| s.min(wait))),
        }
    }
    let full = u64::from(PAGE_BYTES);
    match (best, soonest) {
        (Some((id, _)), _) if sources.len() == 1 => Some(Next::Ask(id, full)),
        (Some((id, bytes)), _) => {
            // `as` saturates; NaN (no rate) becomes 0, then half a burst.
            let ask = (bytes.max(burst / 2.0) as u64).clamp(1, full);
            Some(Next::Ask(id, ask))
        }
        (None, Some(wait)) => Some(Next::Wait(wait)),
        (None, None) => None,
    }
}

/// Checks a page from the network before anything of it is applied:
/// non-empty keys of this partition, strictly increasing after `after`,
/// and no empty page that claims more follow (which would loop forever).
pub fn check_page(
    records: &[RangeRecord],
    after: Option<&[u8]>,
    more: bool,
    partition: u32,
    partitions: u32,
) -> Result<(), String> {
    if more && records.is_empty() {
        return Err("an empty page that says more records follow".into());
    }
    let mut previous = after;
    for record in records {
        if record.key.is_empty() {
            return Err("a record with an empty key".into());
        }
        if previous.is_some_and(|p| record.key.as_slice() <= p) {
            return Err("records out of key order, or before the resume point".into());
        }
        if partition_of(&record.key, partitions) != partition {
            return Err(format!(
                "a record whose key belongs to partition {}, not {partition}",
                partition_of(&record.key, partitions)
            ));
        }
        previous = Some(record.key.as_slice());
    }
    Ok(())
}

/// One running puller.
struct Puller {
    mv: Move,
    cancel: CancellationToken,
    handle: JoinHandle<()>,
}

/// Runs the pullers for moves into this node until `shutdown`.
pub async fn run(node: Arc<Node>, cluster: Arc<Cluster>, shutdown: CancellationToken) {
    let me = cluster.node_id();
    let mut maps = cluster.subscribe();
    let mut running: BTreeMap<u32, Puller> = BTreeMap::new();
    let mut reap = tokio::time::interval(REAP_EVERY);
    reap.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        running.retain(|_, p| !p.handle.is_finished());
        let map = maps.borrow_and_update().clone();
        let current = running.iter().map(|(p, r)| (*p, r.mv.clone())).collect();
        let Plan { start, stop } = plan(&map, me, &current);
        for partition in stop {
            if let Some(puller) = running.remove(&partition) {
                puller.cancel.cancel();
            }
        }
        for (partition, mv) in start {
            let cancel = shutdown.child_token();
            let handle = tokio::spawn(pull(
                node.clone(),
                cluster.clone(),
                partition,
                mv.clone(),
                map.epoch,
                cancel.clone(),
            ));
            running.insert(partition, Puller { mv, cancel, handle });
        }
        tokio::select! {
            // Child tokens: every puller stops with the node.
            _ = shutdown.cancelled() => return,
            changed = maps.changed() => if changed.is_err() { return },
            _ = reap.tick() => {}
        }
    }
}

/// What a puller has done so far.
#[derive(Debug, Clone, Default)]
struct Copied {
    /// The last key applied: the copy resumes after it.
    after: Option<Vec<u8>>,
    keys: u64,
    bytes: u64,
    /// The replica being copied from now.
    source: NodeId,
    /// How long the copy waited for the move's epoch to settle (ms).
    settle_ms: u64,
}

impl Copied {
    fn progress(&self, partition: u32) -> TransferProgress {
        TransferProgress {
            partition,
            source: self.source,
            keys: self.keys,
            bytes: self.bytes,
        }
    }
}

/// Copies one partition and finishes its move, or stops when `cancel`
/// fires (the move left the map, or shutdown). Logs the start and the end.
async fn pull(
    node: Arc<Node>,
    cluster: Arc<Cluster>,
    partition: u32,
    mv: Move,
    epoch: u64,
    cancel: CancellationToken,
) {
    let me = cluster.node_id();
    let started = Instant::now();
    tracing::info!(partition, source = mv.source, from = ?mv.from, "move started: copying partition");
    let mut copied = Copied {
        source: mv.source,
        ..Copied::default()
    };
    node.transfers().set(copied.progress(partition));
    let outcome = tokio::select! {
        _ = cancel.cancelled() => None,
        outcome = copy_then_finish(&node, &cluster, partition, &mv, epoch, &mut copied) => Some(outcome),
    };
    node.transfers().remove(partition);
    let seconds = started.elapsed().as_secs_f64();
    let (keys, bytes, source) = (copied.keys, copied.bytes, copied.source);
    let settle_ms = copied.settle_ms;
    // The map, not the path taken, says how it ended: a finish committed
    // just as the watch fired looks like a cancellation from here.
    if cluster.map().replicas(partition).contains(&me) {
        tracing::info!(
            partition,
            source,
            keys,
            bytes,
            seconds,
            settle_ms,
            "move finished: this node now holds the partition"
        );
        return;
    }
    match outcome {
        None => tracing::info!(
            partition,
            source,
            keys,
            bytes,
            seconds,
            "move ended before finishing (cancelled, replaced, or shutdown)"
        ),
        Some(Ok(())) => tracing::info!(
            partition,
            source,
            keys,
            bytes,
            seconds,
            "move finished; the new replica set is not in this node's map yet"
        ),
        Some(Err(why)) => tracing::warn!(
            partition,
            source,
            keys,
            bytes,
            seconds,
            %why,
            "move not finished: the leader refused it"
        ),
    }
}

async fn copy_then_finish(
    node: &Node,
    cluster: &Cluster,
    partition: u32,
    mv: &Move,
    epoch: u64,
    copied: &mut Copied,
) -> Result<(), String> {
    let started = Instant::now();
    let outcome = settle(node, cluster, epoch).await;
    copied.settle_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    if outcome == Settle::TimedOut {
        tracing::debug!(
            partition,
            epoch,
            "no word that every coordinator applied the move's epoch; copying after the fixed pause"
        );
    }
    copy(node, cluster, partition, mv, copied).await;
    finish(cluster, partition, mv).await
}

/// Waits until every node that may coordinate has applied `epoch` (as
/// the leader's heartbeats show), or [`SETTLE`]. Returns how it ended.
async fn settle(node: &Node, cluster: &Cluster, epoch: u64) -> Settle {
    let started = Instant::now();
    loop {
        let settled = match settled_epoch(node, cluster).await {
            Ok(e) => Some(e),
            Err(why) => {
                tracing::trace!(error = %why, "asking the leader for the settled epoch failed");
                None
            }
        };
        let gap = epoch_beat_gap_of(&cluster.map());
        match settle_step(settled, epoch, started.elapsed(), gap) {
            Settle::Poll(wait) => tokio::time::sleep(wait).await,
            done => return done,
        }
    }
}

/// The epoch every coordinator has applied, from the leader (this node's
/// own tables if it leads), within [`SETTLED_TIMEOUT`].
async fn settled_epoch(node: &Node, cluster: &Cluster) -> Result<u64, String> {
    if cluster.is_leader() {
        return cluster.settled().map_err(|e| e.to_string());
    }
    let (_, addr) = cluster.leader().ok_or("no leader known")?;
    match node
        .peers()
        .request(&addr, NodeRequest::Settled, SETTLED_TIMEOUT)
        .await
    {
        Ok(Response::Settled { epoch }) => Ok(epoch),
        Ok(_) => Err(format!("{addr} answered Settled with something else")),
        Err(e) => Err(e.to_string()),
    }
}

/// Pages through the partition until a page says nothing more follows.
/// Never gives up: errors change the source or back off, and the move
/// leaving the map (the caller's `cancel`) is what stops a hopeless copy.
async fn copy(node: &Node, cluster: &Cluster, partition: u32, mv: &Move, copied: &mut Copied) {
    let me = cluster.node_id();
    let mut failed: BTreeMap<NodeId, Instant> = BTreeMap::new();
    // Per source, when this puller last emptied its budget (see
    // `next_source`).
    let mut drained: BTreeMap<NodeId, Instant> = BTreeMap::new();
    // The map epoch `draws` was counted at, and the counts.
    let mut shared: (Option<u64>, BTreeMap<NodeId, u32>) = (None, BTreeMap::new());
    let mut attempt = 0u32;
    // The last page request failed: the next one is a retry.
    let mut retrying = false;
    loop {
        let map = cluster.map();
        let now = Instant::now();
        failed.retain(|_, at| now.duration_since(*at) < FAILED_HOLD);
        let skip: BTreeSet<NodeId> = failed.keys().copied().collect();
        let candidates = sources(&map, partition, mv, me, &skip);
        // Counted once per map epoch, not per page: every move's sources.
        if candidates.len() > 1 && shared.0 != Some(map.epoch) {
            shared = (Some(map.epoch), draws(&map));
        }
        let chosen = match next_source(&candidates, &drained, &shared.1, &map.recovery, now) {
            Some(Next::Wait(wait)) => {
                busy_sleep(wait).await;
                continue;
            }
            Some(Next::Ask(id, want)) => {
                map.nodes.get(&id).map(|n| (id, n.spec.addr.clone(), want))
            }
            None => None,
        };
        let Some((source, addr, want)) = chosen else {
            if attempt == 0 {
                tracing::warn!(
                    partition,
                    "no live replica to copy from; retrying every candidate after a pause"
                );
            }
            failed.clear();
            pause(attempt).await;
            attempt = attempt.saturating_add(1);
            continue;
        };
        if source != copied.source {
            // Taking turns between healthy sources is the normal pace;
            // leaving one that failed is worth an operator's eye.
            if failed.contains_key(&copied.source) {
                tracing::info!(
                    partition,
                    previous = copied.source,
                    source,
                    keys = copied.keys,
                    "transfer source changed; resuming after the last key copied"
                );
            }
            copied.source = source;
            node.transfers().set(copied.progress(partition));
        }
        // A page asked again after a failure is paid from the node's
        // retry budget; without a token, another pause (the copy never
        // gives up, it slows down).
        if retrying && !node.peers().try_retry() {
            pause(attempt).await;
            attempt = attempt.saturating_add(1);
            continue;
        }
        // This node's ingest: the page is paid for before it is asked
        // (sized to what the bucket can pay), and what it did not use is
        // given back once it is in.
        let ask = take_ingest(node, &map.recovery, want).await;
        let before = copied.bytes;
        let step = step(node, partition, map.partitions, &addr, ask, copied).await;
        node.recv_budget().settle(
            &cluster.map().recovery,
            node.admission().pressure(),
            ask,
            copied.bytes - before,
            Instant::now(),
        );
        retrying = matches!(step, Step::SourceFailed(_) | Step::LocalFailed);
        match step {
            Step::Done => return,
            Step::Next => {
                attempt = 0;
                drained.insert(source, Instant::now());
            }
            // Not a failure: ask another source meanwhile, if there is
            // one; `next_source` says when every one has refused. The
            // wait is the sender's word: never longer than a backoff's.
            Step::Busy(wait) if candidates.len() > 1 => {
                drained.insert(source, Instant::now() + wait.min(BACKOFF.cap));
            }
            Step::Busy(wait) => busy_sleep(wait).await,
            Step::SourceFailed(why) => {
                tracing::debug!(partition, source, error = %why, "transfer page failed; trying another source");
                failed.insert(source, Instant::now());
                pause(attempt).await;
                attempt = attempt.saturating_add(1);
            }
            Step::LocalFailed => {
                pause(attempt).await;
                attempt = attempt.saturating_add(1);
            }
        }
    }
}

/// What one page request came to.
enum Step {
    /// The last page is applied.
    Done,
    /// A page is applied and more follow.
    Next,
    /// The source is pacing itself, or shedding background work for its
    /// clients, and asked to come back after this long.
    Busy(Duration),
    /// The source failed or sent a page that does not check out; another
    /// source may do better.
    SourceFailed(String),
    /// This node could not apply the page (its own disk): another source
    /// would not help.
    LocalFailed,
}

/// Waits `wait` for a source that asked to come back later, never less
/// than the base pause, so a busy source gets a few requests a second
/// from this puller, not a stream.
async fn busy_sleep(wait: Duration) {
    let wait = wait.max(BACKOFF.base);
    let jitter = wait.mul_f64(rand::random::<f64>() / 2.0);
    tokio::time::sleep((wait + jitter).min(BACKOFF.cap)).await;
}

/// Takes the bytes of the next page from this node's ingest budget,
/// waiting for them as the bucket asks: at most `want` (and
/// [`PAGE_BYTES`]), the burst, and what the bucket pays for within half a
/// fetch's timeout.
async fn take_ingest(node: &Node, settings: &RecoverySettings, want: u64) -> u64 {
    let pressure = node.admission().pressure();
    let budget = node.recv_budget();
    let ask = budget.page_bytes(
        settings,
        pressure,
        u32::try_from(want).unwrap_or(PAGE_BYTES).min(PAGE_BYTES),
        FETCH_TIMEOUT,
        Instant::now(),
    );
    loop {
        let pressure = node.admission().pressure();
        match budget.take(settings, pressure, ask, Instant::now()) {
            Ok(()) => return ask,
            Err(Wait(wait)) => tokio::time::sleep(wait.min(INGEST_RECHECK)).await,
        }
    }
}

/// Fetches (about `max_bytes`), checks and applies the page after
/// `copied.after`.
async fn step(
    node: &Node,
    partition: u32,
    partitions: u32,
    addr: &str,
    max_bytes: u64,
    copied: &mut Copied,
) -> Step {
    let max_bytes = u32::try_from(max_bytes).unwrap_or(PAGE_BYTES);
    let (records, more) = match fetch(node, addr, partition, copied.after.clone(), max_bytes).await
    {
        Ok(page) => page,
        Err(Fetch::Busy(wait)) => return Step::Busy(wait),
        Err(Fetch::Failed(why)) => return Step::SourceFailed(why),
    };
    if let Err(why) = check_page(
        &records,
        copied.after.as_deref(),
        more,
        partition,
        partitions,
    ) {
        return Step::SourceFailed(format!("bad page: {why}"));
    }
    match apply(node, partition, records, copied).await {
        Ok(()) if more => Step::Next,
        Ok(()) => Step::Done,
        Err(e) => {
            tracing::error!(partition, error = %e, "cannot apply a transfer page; retrying");
            Step::LocalFailed
        }
    }
}

/// Why a page did not come.
enum Fetch {
    /// The source asked to come back after this long.
    Busy(Duration),
    /// Anything else; another source may do better.
    Failed(String),
}

async fn fetch(
    node: &Node,
    addr: &str,
    partition: u32,
    after: Option<Vec<u8>>,
    max_bytes: u32,
) -> Result<(Vec<RangeRecord>, bool), Fetch> {
    let request = NodeRequest::FetchRange {
        partition,
        after,
        max_bytes,
    };
    match node.peers().request(addr, request, FETCH_TIMEOUT).await {
        Ok(Response::Range { records, more }) => Ok((records, more)),
        Ok(_) => Err(Fetch::Failed(format!(
            "{addr} answered a page request with something else"
        ))),
        Err(ClientError::Server(WireError::Overloaded { retry_after_ms })) => Err(Fetch::Busy(
            Duration::from_millis(u64::from(retry_after_ms.max(1))),
        )),
        Err(e) => Err(Fetch::Failed(e.to_string())),
    }
}

/// Applies a checked page if newer, record by record, then waits for it to
/// be durable before the resume point moves past it.
async fn apply(
    node: &Node,
    partition: u32,
    records: Vec<RangeRecord>,
    copied: &mut Copied,
) -> Result<(), String> {
    let Some(last) = records.last().map(|r| r.key.clone()) else {
        return Ok(());
    };
    let keys = records.len() as u64;
    let storage = node.storage().clone();
    let (bytes, unflushed) = tokio::task::spawn_blocking(move || {
        let mut bytes = 0u64;
        let mut unflushed = Unflushed::default();
        for r in &records {
            storage
                .apply_unflushed(
                    partition,
                    &r.key,
                    r.version,
                    r.value.as_deref(),
                    &mut unflushed,
                )
                .map_err(|e| e.to_string())?;
            bytes += record_bytes(&r.key, r.value.as_deref());
        }
        Ok::<_, String>((bytes, unflushed))
    })
    .await
    .map_err(|e| e.to_string())??;
    // One journal sync for the page rather than one per record.
    node.storage()
        .commit(unflushed)
        .await
        .map_err(|e| e.to_string())?;
    node.admission().metrics().record_recovery_received(bytes);
    copied.after = Some(last);
    copied.keys += keys;
    copied.bytes += bytes;
    node.transfers().set(copied.progress(partition));
    Ok(())
}

/// Asks the leader to make this node a replica, until it is applied or
/// refused (the move was cancelled, or an earlier attempt whose answer was
/// lost already finished it).
async fn finish(cluster: &Cluster, partition: u32, mv: &Move) -> Result<(), String> {
    let me = cluster.node_id();
    let mut attempt = 0u32;
    loop {
        let command = Command::FinishMove { partition, to: me };
        match cluster.propose(command, PROPOSE_TIMEOUT).await {
            Ok(CommandResult::Rejected(why)) => return Err(why),
            Ok(_) => {
                // Return once this node's own map shows it, so the
                // supervisor does not restart a puller for a move that
                // is already done.
                let mut maps = cluster.subscribe();
                let done = maps.wait_for(|m| m.moves.get(&partition) != Some(mv));
                let _ =
                    tokio::time::timeout(PROPOSE_TIMEOUT, async { done.await.map(|_| ()) }).await;
                return Ok(());
            }
            Err(e) => {
                tracing::debug!(partition, error = %e, "finishing the move failed; retrying");
                pause(attempt).await;
                attempt = attempt.saturating_add(1);
            }
        }
    }
}

async fn pause(attempt: u32) {
    tokio::time::sleep(BACKOFF.delay(attempt, rand::random::<f64>())).await;
}

#[cfg(test)]
mod tests;
