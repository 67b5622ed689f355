//! Executes one decoded, validated request against the node.

use std::sync::Arc;

use tokio::time::Instant;

use super::Node;
use crate::cluster::map::{Command, NodeState};
use crate::data::{anti_entropy, coordinator};
use crate::failpoint;
use crate::proto::limits::{MAX_SCAN_ENTRIES, MAX_SCAN_EXAMINED};
use crate::proto::{
    AdminCommand, ClientRequest, Found, KeyVersion, NodeRequest, PROTOCOL_VERSION, Request,
    Response, ScanEntry, WireError,
};
use crate::raft::Cluster;
use crate::storage::prefix::PageBound;
use crate::storage::{Applied, StorageError, Version};

/// Most entries one anti-entropy page may carry, whatever the peer asks.
const MAX_PAGE: u32 = 4096;

/// Runs a request, unless its deadline has already passed: an answer the
/// client has stopped waiting for is wasted work on a node that may be
/// busy because of exactly such work.
pub async fn handle(
    node: &Arc<Node>,
    request: Request,
    deadline: Instant,
) -> Result<Response, WireError> {
    if Instant::now() >= deadline {
        node.admission().metrics().record_deadline_drop();
        tracing::debug!("request dropped: deadline passed before it started");
        return Err(WireError::DeadlineExceeded);
    }
    if let Some(key) = request.key()
        && failpoint::fires(failpoint::HANDLER_PANIC, key)
    {
        panic!("failpoint {} fired", failpoint::HANDLER_PANIC);
    }
    if let Some(key) = request.key()
        && failpoint::fires(failpoint::HANDLER_ABORT, key)
    {
        std::process::abort();
    }
    match request {
        Request::Client(request) => handle_client(node, request, deadline).await,
        Request::Node(request) => handle_node(node, request, deadline).await,
    }
}

async fn handle_client(
    node: &Arc<Node>,
    request: ClientRequest,
    deadline: Instant,
) -> Result<Response, WireError> {
    match request {
        ClientRequest::Ping => Ok(Response::Pong {
            protocol: PROTOCOL_VERSION,
        }),
        // The client's map epoch is not checked: this node routes by its
        // own map, and its epoch goes back on the answer.
        ClientRequest::Get { key, epoch: _ } => {
            coordinator::read(node, cluster(node)?, key, deadline).await
        }
        ClientRequest::Put {
            key,
            value,
            version,
            epoch: _,
        } => {
            observe(node, version)?;
            coordinator::write(node, cluster(node)?, key, version, Some(value), deadline).await
        }
        ClientRequest::Delete {
            key,
            version,
            epoch: _,
        } => {
            observe(node, version)?;
            coordinator::write(node, cluster(node)?, key, version, None, deadline).await
        }
        ClientRequest::GetReplica { key } => {
            let map = cluster(node)?.map();
            let partition = crate::partition::partition_of(&key, map.partitions.max(1));
            read_local(node, partition, &key).await
        }
        ClientRequest::GetMap => Ok(Response::Map(Box::new((*cluster(node)?.map()).clone()))),
        ClientRequest::Status => {
            let cluster = cluster(node)?;
            let mut status = cluster.status();
            status.report = Some(crate::recovery::heartbeat::report(node, cluster));
            Ok(Response::Status(Box::new(status)))
        }
        ClientRequest::Admin(command) => {
            let command = match command {
                AdminCommand::Drain { node: id } => Command::SetNodeState {
                    id,
                    state: NodeState::Draining,
                    at_ms: crate::hlc::wall_ms(),
                },
                AdminCommand::Set { key, value } => Command::SetRecovery { key, value },
                AdminCommand::ClearQuarantine => Command::ClearQuarantine,
            };
            let result = cluster(node)?.propose(command, remaining(deadline)).await?;
            Ok(Response::Proposed(result))
        }
        ClientRequest::Scan {
            partition,
            prefix,
            after,
            limit,
            values,
            epoch: _,
        } => {
            let cluster = cluster(node)?;
            coordinator::replica_set(&cluster.map(), cluster.node_id(), partition)?;
            node.storage()
                .open_partition(partition)
                .await
                .map_err(storage_error)?;
            let bound = PageBound {
                entries: limit.clamp(1, MAX_SCAN_ENTRIES) as usize,
                bytes: node.limits().scan_page_bytes(),
                examined: MAX_SCAN_EXAMINED as usize,
            };
            let storage = node.storage().clone();
            let page = blocking(move || {
                storage.prefix_page(partition, &prefix, after.as_deref(), values, bound)
            })
            .await?;
            let entries = page
                .entries
                .into_iter()
                .map(|e| ScanEntry {
                    key: e.key,
                    version: e.version,
                    value: e.value,
                })
                .collect();
            Ok(Response::Scanned {
                entries,
                next: page.next,
            })
        }
    }
}

/// Runs a storage scan off the async threads: it may read a whole page of
/// a partition from disk.
async fn blocking<T: Send + 'static>(
    scan: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, WireError> {
    tokio::task::spawn_blocking(scan)
        .await
        .map_err(|e| WireError::Unavailable {
            detail: e.to_string(),
        })?
        .map_err(storage_error)
}

async fn handle_node(
    node: &Arc<Node>,
    request: NodeRequest,
    deadline: Instant,
) -> Result<Response, WireError> {
    match request {
        NodeRequest::Raft {
            cluster_id,
            target,
            rpc,
            payload,
        } => cluster(node)?
            .handle_raft(cluster_id, target, rpc, &payload)
            .await
            .map(Response::Raft),
        NodeRequest::Join(spec) => cluster(node)?.handle_join(spec).await,
        NodeRequest::Heartbeat(report) => {
            cluster(node)?.handle_heartbeat(report);
            Ok(Response::Ack)
        }
        NodeRequest::Propose(command) => Ok(Response::Proposed(
            cluster(node)?.propose_as_leader(command).await?,
        )),
        NodeRequest::FetchRange {
            partition,
            after,
            max_bytes,
        } => crate::recovery::sender::serve(node, partition, after, max_bytes, deadline).await,
        NodeRequest::Settled => cluster(node)?
            .settled()
            .map(|epoch| Response::Settled { epoch }),
        NodeRequest::Replicate {
            partition,
            key,
            version,
            value,
        } => {
            observe(node, version)?;
            let applied = node
                .storage()
                .apply(partition, &key, version, value.as_deref())
                .await
                .map_err(storage_error)?;
            Ok(written(applied, version))
        }
        NodeRequest::ReadLocal { partition, key } => {
            // Just after a restart, a coordinator's read is not kept
            // waiting for this node to open the partition's storage: it
            // is told at once and asks another replica, and the open
            // starts in the background.
            if !node.storage().is_open_else_start(partition) {
                return Err(WireError::PartitionOpening { partition });
            }
            read_local(node, partition, &key).await
        }
        NodeRequest::PurgeTombstone {
            partition,
            key,
            version,
        } => {
            node.storage()
                .open_partition(partition)
                .await
                .map_err(storage_error)?;
            let purged = node
                .storage()
                .purge_tombstone(partition, &key, version)
                .map_err(storage_error)?;
            Ok(Response::Written {
                applied: purged,
                version,
            })
        }
        NodeRequest::Digest { partition, buckets } => {
            let storage = node.storage().clone();
            let buckets = buckets.clamp(1, anti_entropy::BUCKETS * 16);
            let (digest, _) = blocking(move || storage.digest(partition, buckets)).await?;
            Ok(Response::Digest(digest))
        }
        NodeRequest::BucketEntries {
            partition,
            buckets,
            bucket,
            after,
            limit,
        } => {
            let storage = node.storage().clone();
            let limit = limit.clamp(1, MAX_PAGE) as usize;
            let (entries, more) = blocking(move || {
                storage.bucket_entries(partition, buckets.max(1), bucket, after.as_deref(), limit)
            })
            .await?;
            let entries = entries
                .into_iter()
                .map(|e| KeyVersion {
                    key: e.key,
                    version: e.version,
                    tombstone: e.tombstone,
                })
                .collect();
            Ok(Response::Entries { entries, more })
        }
    }
}

fn remaining(deadline: Instant) -> std::time::Duration {
    deadline.saturating_duration_since(Instant::now())
}

async fn read_local(node: &Node, partition: u32, key: &[u8]) -> Result<Response, WireError> {
    let record = node
        .storage()
        .read(partition, key)
        .await
        .map_err(storage_error)?;
    Ok(Response::Get(record.map(|r| Found {
        version: r.version,
        value: r.value,
    })))
}

fn observe(node: &Node, version: Version) -> Result<(), WireError> {
    node.clock()
        .observe(version.hlc)
        .map_err(|e| WireError::ClockDrift {
            ahead_ms: e.ahead_ms,
            max_drift_ms: e.max_drift_ms,
        })
}

fn written(applied: Applied, version: Version) -> Response {
    match applied {
        Applied::Written => Response::Written {
            applied: true,
            version,
        },
        Applied::Stale { current } => Response::Written {
            applied: false,
            version: current,
        },
    }
}

fn cluster(node: &Node) -> Result<&Cluster, WireError> {
    node.cluster()
        .map(|c| c.as_ref())
        .ok_or_else(|| WireError::Unavailable {
            detail: "this node has not started its cluster membership yet".into(),
        })
}

fn storage_error(e: StorageError) -> WireError {
    tracing::error!(error = %e, "storage error");
    WireError::Storage {
        detail: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[tokio::test]
    async fn a_replica_read_of_a_partition_still_opening_is_refused_at_once_and_opens_it() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: dir.path().to_path_buf(),
            storage_shards: 4,
            ..Config::default()
        };
        let node = Arc::new(Node::open(&config).unwrap());
        let read = || {
            let request = Request::Node(NodeRequest::ReadLocal {
                partition: 2,
                key: b"k".to_vec(),
            });
            handle(
                &node,
                request,
                Instant::now() + std::time::Duration::from_secs(5),
            )
        };
        assert!(!node.storage().is_open(2));
        let refused = read().await.unwrap_err();
        assert_eq!(refused, WireError::PartitionOpening { partition: 2 });
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        while !node.storage().is_open(2) {
            assert!(
                Instant::now() < deadline,
                "the refused read did not start the open"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(read().await.unwrap(), Response::Get(None));
        assert_eq!(
            node.storage().shards_open(),
            1,
            "only that partition's shard"
        );
    }
}
