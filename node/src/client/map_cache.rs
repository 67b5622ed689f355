//! The client's cached cluster map: fetched on first use, refreshed from
//! the node that says it knows a newer epoch (in the background when the
//! epoch came with an answer, `ResponseFrame::epoch`), the newer of two
//! kept; and the replicas of a partition it names.

use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};

use super::{Client, ClientError, Pool, unexpected};
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
        install(&self.map, map)
    }

    /// Fetches the map in the background if a node answered with a newer
    /// epoch than the cached map's, unless a fetch is already running: the
    /// answer was served by the node's map, so the request does not wait,
    /// and however many requests learn of the same change, this client
    /// asks for it once at a time. The fetch goes on while answers report
    /// newer epochs still (up to [`MAX_BACKGROUND_FETCHES`] in a row), so
    /// the news of the last answer before a quiet spell is not lost.
    pub(super) fn learn_epoch(&self) {
        if newer_than_cached(&self.pool, &self.map).is_none()
            || self.refreshing.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let (pool, slot, refreshing) =
            (self.pool.clone(), self.map.clone(), self.refreshing.clone());
        let timeout = self.config.request_timeout;
        tokio::spawn(async move {
            let mut fetches = 0;
            loop {
                while fetches < MAX_BACKGROUND_FETCHES
                    && let Some(addr) = newer_than_cached(&pool, &slot)
                {
                    fetches += 1;
                    let request = Request::Client(ClientRequest::GetMap);
                    match pool.send(&addr, request, timeout).await {
                        Ok(Response::Map(map)) => {
                            install(&slot, Arc::new(*map));
                        }
                        Ok(other) => {
                            tracing::debug!(%addr, error = %unexpected(other), "map refresh");
                            fetches = MAX_BACKGROUND_FETCHES;
                        }
                        Err(e) => {
                            tracing::debug!(%addr, error = %e, "map refresh failed");
                            fetches = MAX_BACKGROUND_FETCHES;
                        }
                    }
                }
                refreshing.store(false, Ordering::Release);
                // An answer may have reported a newer epoch after the last
                // look and found this refresh still running.
                if fetches >= MAX_BACKGROUND_FETCHES
                    || newer_than_cached(&pool, &slot).is_none()
                    || refreshing.swap(true, Ordering::AcqRel)
                {
                    break;
                }
            }
        });
    }
}

/// Most map fetches one background refresh makes in a row.
const MAX_BACKGROUND_FETCHES: usize = 8;

/// The node to fetch the map from, if one answered with a newer epoch than
/// the map in `slot`.
fn newer_than_cached(pool: &Pool, slot: &RwLock<Option<Arc<ClusterMap>>>) -> Option<String> {
    let (epoch, addr) = pool.newest_epoch()?;
    let cached = slot
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .map_or(0, |m| m.epoch);
    (epoch > cached).then_some(addr)
}

/// Keeps `map` in `slot` if it is newer than what is there (concurrent
/// refreshes may finish out of order); returns what `slot` holds.
fn install(slot: &RwLock<Option<Arc<ClusterMap>>>, map: Arc<ClusterMap>) -> Arc<ClusterMap> {
    let mut slot = slot.write().unwrap_or_else(|e| e.into_inner());
    if slot.as_ref().is_none_or(|m| m.epoch <= map.epoch) {
        *slot = Some(map.clone());
    }
    slot.clone().unwrap_or(map)
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
