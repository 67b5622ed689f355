//! Anti-entropy: replicas of a partition compare per-bucket digests and
//! exchange only the records of buckets that differ, newest version
//! winning. Catches whatever hints missed (dropped hints, a crashed
//! coordinator, a replica that was down for a long time).
//!
//! A round runs after the node starts (a restarted node catches up with
//! every peer) and then periodically, where each pair of replicas is
//! compared by the lower-id node only. The keys compared go through a token
//! bucket, so a round never competes hard with clients.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::coordinator::replicate;
use crate::admission::background_scale;
use crate::cluster::NodeId;
use crate::cluster::map::NodeState;
use crate::config::Config;
use crate::node::Node;
use crate::proto::{KeyVersion, NodeRequest, Response};
use crate::raft::Cluster;
use crate::storage::hints::Hint;
use crate::storage::scan::Entry;
use crate::token_bucket::{TokenBucket, Wait};

/// Anti-entropy settings.
#[derive(Debug, Clone, Copy)]
pub struct AntiEntropyConfig {
    /// Time between periodic rounds.
    pub interval: Duration,
    /// Delay before the first round after start, so a restarted node serves
    /// first and catches up after.
    pub startup_delay: Duration,
    /// Keys compared per second.
    pub keys_per_sec: f64,
    /// Tombstones older than this, held by every replica, are deleted.
    pub tombstone_grace: Duration,
}

impl From<&Config> for AntiEntropyConfig {
    fn from(c: &Config) -> Self {
        Self {
            interval: Duration::from_millis(c.anti_entropy_interval_ms),
            startup_delay: Duration::from_millis(c.anti_entropy_startup_delay_ms),
            keys_per_sec: c.anti_entropy_keys_per_sec as f64,
            tombstone_grace: Duration::from_millis(c.tombstone_grace_ms),
        }
    }
}

/// Hash buckets per partition.
pub const BUCKETS: u32 = 64;
/// Entries per page when a bucket is exchanged.
const PAGE: u32 = 512;
/// Time one anti-entropy request gets.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What a round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RoundStats {
    /// Partition pairs compared.
    pub pairs: u64,
    /// Buckets whose digests differed.
    pub buckets: u64,
    /// Records sent to a peer.
    pub pushed: u64,
    /// Records taken from a peer.
    pub pulled: u64,
    /// Pairs that failed (peer unreachable...).
    pub failed: u64,
    /// Tombstones deleted on every replica.
    pub purged: u64,
}

/// Runs rounds until `shutdown`.
pub async fn run(
    node: Arc<Node>,
    cluster: Arc<Cluster>,
    config: AntiEntropyConfig,
    shutdown: CancellationToken,
) {
    let mut bucket = TokenBucket::new(
        config.keys_per_sec,
        config.keys_per_sec.max(1.0),
        std::time::Instant::now(),
    );
    let mut all_peers = true;
    let mut delay = config.startup_delay;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        let mut stats = round(&node, &cluster, all_peers, &mut bucket, &shutdown).await;
        stats.purged = collect_tombstones(&node, &cluster, config.tombstone_grace, &shutdown).await;
        if stats != RoundStats::default() {
            tracing::info!(?stats, startup = all_peers, "anti-entropy round done");
        }
        // The first round after start catches up with every peer; later
        // ones split the pairs between the two sides.
        all_peers = stats.failed > 0 && all_peers;
        delay = config.interval;
    }
}

/// One pass over this node's partitions.
pub async fn round(
    node: &Node,
    cluster: &Cluster,
    all_peers: bool,
    bucket: &mut TokenBucket,
    shutdown: &CancellationToken,
) -> RoundStats {
    let mut stats = RoundStats::default();
    let map = cluster.map();
    let me = cluster.node_id();
    for (partition, set) in map.assignment.iter().enumerate() {
        if !set.contains(&me) {
            continue;
        }
        for peer in set.iter().filter(|p| **p != me && (all_peers || me < **p)) {
            if shutdown.is_cancelled() {
                return stats;
            }
            let Some(info) = map.nodes.get(peer).filter(|n| n.state == NodeState::Up) else {
                continue;
            };
            stats.pairs += 1;
            if let Err(e) = sync_pair(
                node,
                partition as u32,
                *peer,
                &info.spec.addr,
                bucket,
                &mut stats,
            )
            .await
            {
                stats.failed += 1;
                tracing::debug!(partition, peer, error = %e, "anti-entropy with peer failed");
            }
        }
    }
    stats
}

/// Tombstones collected per partition per round, bounding one round's
/// work.
const PURGE_LIMIT: usize = 1000;

/// Deletes tombstones older than the grace period from every replica, for
/// the partitions this node is first replica of, and only once every
/// replica is up and holds exactly that tombstone. Returns how many went.
pub async fn collect_tombstones(
    node: &Node,
    cluster: &Cluster,
    grace: Duration,
    shutdown: &CancellationToken,
) -> u64 {
    let map = cluster.map();
    let me = cluster.node_id();
    let before_ms = crate::hlc::wall_ms().saturating_sub(grace.as_millis() as u64);
    let mut purged = 0;
    for (partition, set) in map.assignment.iter().enumerate() {
        if set.first() != Some(&me) || shutdown.is_cancelled() {
            continue;
        }
        let peers: Option<Vec<String>> = set
            .iter()
            .filter(|id| **id != me)
            .map(|id| {
                map.nodes
                    .get(id)
                    .filter(|n| n.state == NodeState::Up)
                    .map(|n| n.spec.addr.clone())
            })
            .collect();
        // A replica that is not up might hold an older value: collecting
        // now could let it come back. Wait for it.
        let Some(peers) = peers else { continue };
        let partition = partition as u32;
        // A shard not yet opened since the restart opens off the async
        // threads; the scan below then runs on an open one.
        if let Err(e) = node.storage().open_partition(partition).await {
            tracing::warn!(partition, error = %e, "cannot open storage for tombstone collection");
            continue;
        }
        let old = match node
            .storage()
            .old_tombstones(partition, before_ms, PURGE_LIMIT)
        {
            Ok(old) => old,
            Err(e) => {
                tracing::warn!(partition, error = %e, "cannot list tombstones");
                continue;
            }
        };
        for tombstone in old {
            if purge_everywhere(node, partition, &tombstone, &peers).await {
                purged += 1;
            }
        }
    }
    purged
}

async fn purge_everywhere(
    node: &Node,
    partition: u32,
    tombstone: &Entry,
    peers: &[String],
) -> bool {
    for addr in peers {
        let request = NodeRequest::ReadLocal {
            partition,
            key: tombstone.key.clone(),
        };
        match node.peers().request(addr, request, REQUEST_TIMEOUT).await {
            Ok(Response::Get(Some(found)))
                if found.version == tombstone.version && found.value.is_none() => {}
            _ => return false,
        }
    }
    for addr in peers {
        let request = NodeRequest::PurgeTombstone {
            partition,
            key: tombstone.key.clone(),
            version: tombstone.version,
        };
        if node
            .peers()
            .request(addr, request, REQUEST_TIMEOUT)
            .await
            .is_err()
        {
            // The others keep theirs for now; the next round finishes.
            return false;
        }
    }
    node.storage()
        .purge_tombstone(partition, &tombstone.key, tombstone.version)
        .unwrap_or(false)
}

/// Waits for `n` keys' worth of tokens. While foreground is busy each key
/// costs more, so anti-entropy yields to clients (down to the background
/// floor, so it still finishes).
async fn throttle(node: &Node, bucket: &mut TokenBucket, n: u64) {
    let cost = n as f64 / background_scale(node.admission().pressure());
    while let Err(Wait(wait)) = bucket.take(cost, std::time::Instant::now()) {
        tokio::time::sleep(wait).await;
    }
}

async fn sync_pair(
    node: &Node,
    partition: u32,
    peer: NodeId,
    addr: &str,
    bucket: &mut TokenBucket,
    stats: &mut RoundStats,
) -> Result<(), String> {
    // A peer whose breaker is open would refuse the digest request: skip
    // the scan of this node's own copy that comes before it. The pair is
    // counted failed and compared again next round.
    if !node.peers().is_available(addr) {
        return Err(format!("peer {peer}'s circuit breaker is open"));
    }
    let storage = node.storage().clone();
    let (local, scanned) = tokio::task::spawn_blocking(move || storage.digest(partition, BUCKETS))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    throttle(node, bucket, scanned.max(1)).await;
    let remote = match node
        .peers()
        .request(
            addr,
            NodeRequest::Digest {
                partition,
                buckets: BUCKETS,
            },
            REQUEST_TIMEOUT,
        )
        .await
    {
        Ok(Response::Digest(d)) => d,
        Ok(other) => return Err(format!("peer {peer} answered {other:?}")),
        Err(e) => return Err(e.to_string()),
    };
    for b in 0..BUCKETS {
        let (l, r) = (local.get(b as usize), remote.get(b as usize));
        if l == r {
            continue;
        }
        stats.buckets += 1;
        sync_bucket(node, partition, b, addr, bucket, stats).await?;
    }
    Ok(())
}

/// Exchanges one bucket: both sides' entries are merged in key order and
/// each record goes where it is missing or older.
async fn sync_bucket(
    node: &Node,
    partition: u32,
    b: u32,
    addr: &str,
    bucket: &mut TokenBucket,
    stats: &mut RoundStats,
) -> Result<(), String> {
    let remote = remote_entries(node, partition, b, addr).await?;
    let (local, _) = node
        .storage()
        .bucket_entries(partition, BUCKETS, b, None, usize::MAX)
        .map_err(|e| e.to_string())?;
    throttle(node, bucket, (remote.len() + local.len()) as u64).await;
    let remote_by_key: std::collections::BTreeMap<&[u8], &KeyVersion> =
        remote.iter().map(|e| (e.key.as_slice(), e)).collect();
    let local_by_key: std::collections::BTreeMap<&[u8], &Entry> =
        local.iter().map(|e| (e.key.as_slice(), e)).collect();
    for entry in &local {
        if remote_by_key
            .get(entry.key.as_slice())
            .is_none_or(|r| r.version < entry.version)
        {
            push(node, partition, &entry.key, addr).await?;
            stats.pushed += 1;
        }
    }
    for entry in &remote {
        if local_by_key
            .get(entry.key.as_slice())
            .is_none_or(|l| l.version < entry.version)
        {
            pull(node, partition, &entry.key, addr).await?;
            stats.pulled += 1;
        }
    }
    Ok(())
}

async fn remote_entries(
    node: &Node,
    partition: u32,
    b: u32,
    addr: &str,
) -> Result<Vec<KeyVersion>, String> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let request = NodeRequest::BucketEntries {
            partition,
            buckets: BUCKETS,
            bucket: b,
            after: after.clone(),
            limit: PAGE,
        };
        match node.peers().request(addr, request, REQUEST_TIMEOUT).await {
            Ok(Response::Entries { entries, more }) => {
                after = entries.last().map(|e| e.key.clone());
                let done = !more || entries.is_empty();
                all.extend(entries);
                if done {
                    return Ok(all);
                }
            }
            Ok(other) => return Err(format!("{addr} answered {other:?}")),
            Err(e) => return Err(e.to_string()),
        }
    }
}

async fn push(node: &Node, partition: u32, key: &[u8], addr: &str) -> Result<(), String> {
    let Some(record) = node
        .storage()
        .read(partition, key)
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(());
    };
    let hint = Hint {
        partition,
        key: key.to_vec(),
        version: record.version,
        value: record.value,
    };
    replicate(node, addr, &hint, REQUEST_TIMEOUT)
        .await
        .map(|_| ())
}

async fn pull(node: &Node, partition: u32, key: &[u8], addr: &str) -> Result<(), String> {
    let request = NodeRequest::ReadLocal {
        partition,
        key: key.to_vec(),
    };
    let found = match node.peers().request(addr, request, REQUEST_TIMEOUT).await {
        Ok(Response::Get(found)) => found,
        Ok(other) => return Err(format!("{addr} answered {other:?}")),
        Err(e) => return Err(e.to_string()),
    };
    if let Some(found) = found {
        node.storage()
            .apply(partition, key, found.version, found.value.as_deref())
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}
