//! The sending side of a recovery transfer: serves `FetchRange` pages of a
//! partition in key order, paced by this node's recovery byte budget
//! ([`crate::node::send_budget`]: one token bucket per node, slowed by
//! client pressure, pages never larger than its burst).

use std::time::{Duration, Instant};

use crate::cluster::NodeId;
use crate::cluster::map::{ClusterMap, RecoverySettings};
use crate::failpoint;
use crate::node::Node;
use crate::proto::{RangeRecord, Response, WireError};
use crate::storage::scan::record_bytes;
use crate::token_bucket::Wait;

/// Most records in one page, whatever the byte budget: bounds the work
/// and the response of one request when records are tiny.
pub const MAX_PAGE_RECORDS: usize = 4096;

/// Time kept before the request's deadline for encoding and sending the
/// page: a page that would only be ready after it is not worth reading.
const SEND_MARGIN: Duration = Duration::from_millis(50);

/// Longest sleep between two looks at the bucket while waiting for
/// tokens, so that a rate raised meanwhile (operator, pressure gone) takes
/// effect at once instead of after a wait computed at the old rate.
const RECHECK: Duration = Duration::from_millis(250);

/// Whether `me` may serve pages of `partition`: it holds a replica, or it
/// is the replica a move is replacing (a draining node keeps serving what
/// it is handing over until the move finishes).
pub fn may_serve(map: &ClusterMap, me: NodeId, partition: u32) -> bool {
    map.replicas(partition).contains(&me)
        || map
            .moves
            .get(&partition)
            .is_some_and(|m| m.from == Some(me))
}

/// What to do while the bucket says `Wait`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// Sleep this long, then try again.
    Sleep(Duration),
    /// The tokens will not be there before the deadline: refuse the page
    /// now, unsent, and tell the target when to come back.
    Refuse {
        /// The wait the bucket asked for, in ms (at least 1).
        retry_after_ms: u32,
    },
}

/// Decides about a `wait` with `remaining` time before the deadline.
pub fn pace(wait: Duration, remaining: Duration) -> Pace {
    if wait + SEND_MARGIN > remaining {
        let ms = u32::try_from(wait.as_millis()).unwrap_or(u32::MAX).max(1);
        return Pace::Refuse { retry_after_ms: ms };
    }
    Pace::Sleep(wait.min(RECHECK))
}

/// Answers a `FetchRange`: the records of `partition` after `after`, about
/// `max_bytes` of them, once the budget has paid for them, or
/// `Overloaded` (nothing sent) if it cannot before `deadline`.
pub async fn serve(
    node: &Node,
    partition: u32,
    after: Option<Vec<u8>>,
    max_bytes: u32,
    deadline: tokio::time::Instant,
) -> Result<Response, WireError> {
    let cluster = node.cluster().ok_or_else(|| WireError::Unavailable {
        detail: "this node has not started its cluster membership yet".into(),
    })?;
    let map = cluster.map();
    let me = cluster.node_id();
    if !may_serve(&map, me, partition) {
        return Err(WireError::Refused {
            detail: format!(
                "node {me} holds no replica of partition {partition} and is not handing it over \
                 (map epoch {}); fetch it from a node in the partition's replica set",
                map.epoch
            ),
        });
    }
    if failpoint::fires_at(failpoint::TRANSFER_PAGE, u64::from(partition)) {
        return Err(WireError::Unavailable {
            detail: format!(
                "failpoint {} fired for partition {partition}",
                failpoint::TRANSFER_PAGE
            ),
        });
    }
    let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
    let budget = node.send_budget().page_bytes(
        &map.recovery,
        node.admission().pressure(),
        max_bytes,
        remaining,
        Instant::now(),
    );
    let storage = node.storage().clone();
    let (page, more) = tokio::task::spawn_blocking(move || {
        storage.range_after(partition, after.as_deref(), budget, MAX_PAGE_RECORDS)
    })
    .await
    .map_err(|e| WireError::Unavailable {
        detail: format!("reading the partition failed: {e}"),
    })?
    .map_err(|e| {
        tracing::error!(partition, error = %e, "cannot read a partition for a transfer");
        WireError::Storage {
            detail: e.to_string(),
        }
    })?;
    let bytes: u64 = page
        .iter()
        .map(|(key, record)| record_bytes(key, record.value.as_deref()))
        .sum();
    wait_for_tokens(node, bytes, deadline).await?;
    node.admission().metrics().record_recovery_sent(bytes);
    let records = page
        .into_iter()
        .map(|(key, record)| RangeRecord {
            key,
            version: record.version,
            value: record.value,
        })
        .collect();
    Ok(Response::Range { records, more })
}

/// Takes `bytes` from the budget, sleeping as the bucket asks, re-reading
/// the rate each time; `Overloaded` once the deadline cannot be met.
async fn wait_for_tokens(
    node: &Node,
    bytes: u64,
    deadline: tokio::time::Instant,
) -> Result<(), WireError> {
    loop {
        let settings = match node.cluster() {
            Some(cluster) => cluster.map().recovery,
            None => RecoverySettings::default(),
        };
        let pressure = node.admission().pressure();
        let Err(Wait(wait)) = node
            .send_budget()
            .take(&settings, pressure, bytes, Instant::now())
        else {
            return Ok(());
        };
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        match pace(wait, remaining) {
            Pace::Sleep(d) => tokio::time::sleep(d).await,
            Pace::Refuse { retry_after_ms } => {
                tracing::debug!(
                    bytes,
                    retry_after_ms,
                    "transfer page refused: budget exhausted until after its deadline"
                );
                return Err(WireError::Overloaded { retry_after_ms });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::map::{Command, Move, NodeState};

    #[test]
    fn a_wait_past_the_deadline_is_refused_and_a_long_one_rechecked() {
        let ms = Duration::from_millis;
        assert_eq!(pace(ms(10), ms(1000)), Pace::Sleep(ms(10)));
        assert_eq!(pace(ms(900), ms(5000)), Pace::Sleep(RECHECK));
        assert_eq!(
            pace(ms(980), ms(1000)),
            Pace::Refuse {
                retry_after_ms: 980
            }
        );
        assert_eq!(
            pace(Duration::from_micros(10), Duration::ZERO),
            Pace::Refuse { retry_after_ms: 1 }
        );
    }

    fn map() -> ClusterMap {
        crate::cluster::test_maps::map_with(4, 8)
    }

    #[test]
    fn only_replicas_and_the_node_handing_over_may_serve() {
        let mut map = map();
        let p = 0;
        let set = map.replicas(p).to_vec();
        let outsider = (1..=4).find(|n| !set.contains(n)).unwrap();
        assert!(set.iter().all(|n| may_serve(&map, *n, p)));
        assert!(!may_serve(&map, outsider, p));
        assert!(!may_serve(&map, 1, 99), "unknown partition");
        // A draining node is still in the set while its move runs.
        let from = set[0];
        map.apply(&Command::SetNodeState {
            id: from,
            state: NodeState::Draining,
            at_ms: 1,
        });
        map.apply(&Command::StartMoves(vec![(
            p,
            Move {
                from: Some(from),
                to: outsider,
                source: set[1],
                started_ms: 1,
            },
        )]));
        assert!(may_serve(&map, from, p));
        assert!(!may_serve(&map, outsider, p), "the target has nothing yet");
    }
}
