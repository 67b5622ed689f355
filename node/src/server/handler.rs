//! Executes one decoded, validated request against the node.

use tokio::time::Instant;

use super::Node;
use crate::cluster::Cluster;
use crate::partition::partition_of;
use crate::proto::{
    ClientRequest, Found, NodeRequest, PROTOCOL_VERSION, Request, Response, WireError,
};
use crate::storage::{Applied, StorageError, Version};

/// Runs a request, unless its deadline has already passed: an answer the
/// client has stopped waiting for is wasted work on a node that may be
/// busy because of exactly such work.
pub async fn handle(
    node: &Node,
    request: Request,
    deadline: Instant,
) -> Result<Response, WireError> {
    if Instant::now() >= deadline {
        tracing::debug!("request dropped: deadline passed before it started");
        return Err(WireError::DeadlineExceeded);
    }
    let request = match request {
        Request::Client(request) => request,
        Request::Node(request) => return handle_node(node, request).await,
    };
    match request {
        ClientRequest::Ping => Ok(Response::Pong {
            protocol: PROTOCOL_VERSION,
        }),
        ClientRequest::Get { key } => {
            let partition = partition_of(&key, node.partitions);
            let record = node.storage.get(partition, &key).map_err(storage_error)?;
            Ok(Response::Get(record.map(|r| Found {
                version: r.version,
                value: r.value,
            })))
        }
        ClientRequest::Put {
            key,
            value,
            version,
        } => write(node, &key, version, Some(&value)).await,
        ClientRequest::Delete { key, version } => write(node, &key, version, None).await,
        ClientRequest::GetMap => Ok(Response::Map(Box::new((*cluster(node)?.map()).clone()))),
        ClientRequest::Status => Ok(Response::Status(Box::new(cluster(node)?.status()))),
    }
}

async fn handle_node(node: &Node, request: NodeRequest) -> Result<Response, WireError> {
    let cluster = cluster(node)?;
    match request {
        NodeRequest::Raft {
            cluster_id,
            target,
            rpc,
            payload,
        } => cluster
            .handle_raft(cluster_id, target, rpc, &payload)
            .await
            .map(Response::Raft),
        NodeRequest::Join(spec) => cluster.handle_join(spec).await,
    }
}

fn cluster(node: &Node) -> Result<&Cluster, WireError> {
    node.cluster()
        .map(|c| c.as_ref())
        .ok_or_else(|| WireError::Unavailable {
            detail: "this node has not started its cluster membership yet".into(),
        })
}

async fn write(
    node: &Node,
    key: &[u8],
    version: Version,
    value: Option<&[u8]>,
) -> Result<Response, WireError> {
    node.clock
        .observe(version.hlc)
        .map_err(|e| WireError::ClockDrift {
            ahead_ms: e.ahead_ms,
            max_drift_ms: e.max_drift_ms,
        })?;
    let partition = partition_of(key, node.partitions);
    let applied = node
        .storage
        .apply(partition, key, version, value)
        .await
        .map_err(storage_error)?;
    Ok(match applied {
        Applied::Written => Response::Written {
            applied: true,
            version,
        },
        Applied::Stale { current } => Response::Written {
            applied: false,
            version: current,
        },
    })
}

fn storage_error(e: StorageError) -> WireError {
    tracing::error!(error = %e, "storage error");
    WireError::Storage {
        detail: e.to_string(),
    }
}
