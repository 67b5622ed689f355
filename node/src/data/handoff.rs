//! Hint replay: delivers the writes a replica missed once it is back,
//! through a bytes-per-second token bucket so that a returning node is
//! caught up steadily rather than flooded. The pace drops further while
//! this node's foreground is busy (the admission pressure signal).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::coordinator::replicate;
use crate::admission::background_scale;
use crate::cluster::map::NodeState;
use crate::config::Config;
use crate::node::Node;
use crate::raft::Cluster;
use crate::token_bucket::{TokenBucket, Wait};

/// Replay settings.
#[derive(Debug, Clone, Copy)]
pub struct HandoffConfig {
    /// Hint bytes replayed per second, all targets together.
    pub bytes_per_sec: f64,
    /// How often targets with hints are looked at.
    pub interval: Duration,
    /// Hints for writes older than this are dropped, not replayed: the
    /// delete they might predate may have been collected (the tombstone
    /// grace period), and replaying them would bring the value back.
    pub max_age: Duration,
}

impl From<&Config> for HandoffConfig {
    fn from(c: &Config) -> Self {
        Self {
            bytes_per_sec: c.hint_replay_bytes_per_sec as f64,
            interval: Duration::from_millis(500),
            max_age: Duration::from_millis(c.tombstone_grace_ms),
        }
    }
}

/// Longest pause before retrying a target that failed.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Hints read per batch.
const BATCH: usize = 64;
/// Time one replayed hint gets.
const HINT_TIMEOUT: Duration = Duration::from_secs(5);

/// Per-target retry state.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    next_try: std::time::Instant,
    pause: Duration,
}

/// Runs until `shutdown`.
pub async fn run(
    node: Arc<Node>,
    cluster: Arc<Cluster>,
    config: HandoffConfig,
    shutdown: CancellationToken,
) {
    let burst = config.bytes_per_sec.max(1024.0 * 1024.0);
    let mut bucket = TokenBucket::new(config.bytes_per_sec, burst, std::time::Instant::now());
    let max_age_ms = config.max_age.as_millis() as u64;
    let mut backoff: HashMap<u64, Backoff> = HashMap::new();
    let mut tick = tokio::time::interval(config.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        for (target, _) in node.hints().pending() {
            if shutdown.is_cancelled() {
                return;
            }
            let map = cluster.map();
            let addr = match map.nodes.get(&target) {
                None if map.epoch == 0 => continue,
                None => None,
                Some(n) if n.state == NodeState::Removed => None,
                Some(n) if n.state != NodeState::Up => continue,
                Some(n) => Some(n.spec.addr.clone()),
            };
            let Some(addr) = addr else {
                tracing::info!(target, "dropping hints for a node no longer in the cluster");
                if let Err(e) = node.hints().clear(target) {
                    tracing::warn!(target, error = %e, "cannot drop hints");
                }
                continue;
            };
            let now = std::time::Instant::now();
            let retrying = match backoff.get(&target) {
                Some(b) if now < b.next_try => continue,
                Some(_) => true,
                None => false,
            };
            // A target whose replay failed is tried again as a retry, paid
            // from the node's retry budget; without a token, at a later
            // tick. (A target whose breaker is open fails its first call
            // at once and backs off further: no waiting, no spinning.)
            if retrying && !node.peers().try_retry() {
                continue;
            }
            match replay_target(&node, target, &addr, max_age_ms, &mut bucket, &shutdown).await {
                Ok(delivered) => {
                    backoff.remove(&target);
                    if delivered > 0 {
                        tracing::info!(target, delivered, "hints replayed");
                    }
                }
                Err(e) => {
                    let pause = backoff
                        .get(&target)
                        .map_or(Duration::from_secs(1), |b| (b.pause * 2).min(MAX_BACKOFF));
                    tracing::debug!(target, error = %e, ?pause, "hint replay failed; backing off");
                    backoff.insert(
                        target,
                        Backoff {
                            next_try: std::time::Instant::now() + pause,
                            pause,
                        },
                    );
                }
            }
        }
    }
}

/// Delivers a target's hints in order until none are left, one fails, or
/// shutdown.
async fn replay_target(
    node: &Node,
    target: u64,
    addr: &str,
    max_age_ms: u64,
    bucket: &mut TokenBucket,
    shutdown: &CancellationToken,
) -> Result<usize, String> {
    let mut delivered = 0;
    loop {
        let batch = node
            .hints()
            .oldest(target, BATCH)
            .map_err(|e| e.to_string())?;
        if batch.is_empty() {
            return Ok(delivered);
        }
        for stored in batch {
            let age_ms = crate::hlc::wall_ms()
                .saturating_sub(crate::hlc::physical_ms(stored.hint.version.hlc));
            if age_ms > max_age_ms {
                tracing::debug!(
                    target,
                    age_ms,
                    "dropping a hint older than the tombstone grace period"
                );
                node.hints()
                    .remove(target, &stored.id, stored.bytes)
                    .map_err(|e| e.to_string())?;
                continue;
            }
            // Busy foreground: each byte costs more tokens, so replay
            // slows down (never below the background floor).
            let cost = stored.bytes as f64 / background_scale(node.admission().pressure());
            while let Err(Wait(wait)) = bucket.take(cost, std::time::Instant::now()) {
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(delivered),
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            replicate(node, addr, &stored.hint, HINT_TIMEOUT).await?;
            node.hints()
                .remove(target, &stored.id, stored.bytes)
                .map_err(|e| e.to_string())?;
            delivered += 1;
        }
    }
}
