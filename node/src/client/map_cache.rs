//! The client's cached cluster map: fetched on first use, refreshed from
//! the node that says it knows a newer epoch, the newer of two kept; and
//! the replicas of a partition it names.

use std::sync::Arc;

use super::{Client, ClientError, unexpected};
use crate::cluster::map::{ClusterMap, NodeState};
use crate::proto::{ClientRequest, Request, Response};

impl Client {
    /// The cached map, fetched on first use.
    pub(super) async fn cached_map(&self) -> Result<Arc<ClusterMap>, ClientError> {
        let cached = self.map.read().unwrap_or_else(|e| e.into_inner()).clone();
        match cached {
            Some(map) => Ok(map),
            None => self.refresh_map().await,
        }
    }

    /// Fetches the map from an endpoint and caches it.
    pub async fn refresh_map(&self) -> Result<Arc<ClusterMap>, ClientError> {
        let map = Arc::new(self.map().await?);
        Ok(self.install_map(map))
    }

    /// Fetches the map from `addr` — a node that just said it knows a newer
    /// one than ours, when the node this client usually asks may lag
    /// behind — and keeps it if it is newer.
    pub(super) async fn refresh_map_from(
        &self,
        addr: &str,
    ) -> Result<Arc<ClusterMap>, ClientError> {
        let request = Request::Client(ClientRequest::GetMap);
        match self
            .pool
            .send(addr, request, self.config.request_timeout)
            .await?
        {
            Response::Map(map) => Ok(self.install_map(Arc::new(*map))),
            other => Err(unexpected(other)),
        }
    }

    fn install_map(&self, map: Arc<ClusterMap>) -> Arc<ClusterMap> {
        let mut slot = self.map.write().unwrap_or_else(|e| e.into_inner());
        // Keep whichever is newer: concurrent refreshes may finish out of
        // order.
        if slot.as_ref().is_none_or(|m| m.epoch <= map.epoch) {
            *slot = Some(map.clone());
        }
        slot.clone().unwrap_or(map)
    }
}

/// The addresses of a partition's replicas, Up ones first, in placement
/// order, and how many are Up.
pub(super) fn replica_addrs(map: &ClusterMap, partition: u32) -> (Vec<String>, usize) {
    let mut replicas: Vec<_> = map
        .assignment
        .get(partition as usize)
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|id| map.nodes.get(id))
        .collect();
    replicas.sort_by_key(|n| n.state != NodeState::Up);
    let up = replicas.iter().filter(|n| n.state == NodeState::Up).count();
    (
        replicas.into_iter().map(|n| n.spec.addr.clone()).collect(),
        up,
    )
}
