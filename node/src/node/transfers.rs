//! The copies this node is receiving, with their progress: written by the
//! pullers of [`crate::recovery::transfer`], read by the heartbeat that
//! reports them to the leader (and so to `levee status`). Part of the
//! node's shared state, so that both can reach it through [`super::Node`].

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::cluster::status::TransferProgress;

/// Pullers at once, whatever `max_moves_per_node` says: a hard bound on
/// tasks and pages in memory if that setting is raised carelessly.
pub const MAX_PULLERS: usize = 64;

/// The copies this node is receiving, for its heartbeat and `levee
/// status`. Bounded: one entry per running puller, at most
/// [`MAX_PULLERS`].
#[derive(Debug, Default)]
pub struct Transfers {
    progress: Mutex<BTreeMap<u32, TransferProgress>>,
}

impl Transfers {
    /// Every copy in progress, by partition.
    pub fn progress(&self) -> Vec<TransferProgress> {
        self.lock().values().cloned().collect()
    }

    pub(crate) fn set(&self, progress: TransferProgress) {
        let mut map = self.lock();
        if map.len() < MAX_PULLERS || map.contains_key(&progress.partition) {
            map.insert(progress.partition, progress);
        }
    }

    pub(crate) fn remove(&self, partition: u32) {
        self.lock().remove(&partition);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u32, TransferProgress>> {
        self.progress.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_is_bounded_and_forgets_finished_copies() {
        let transfers = Transfers::default();
        for p in 0..(MAX_PULLERS as u32 + 10) {
            transfers.set(TransferProgress {
                partition: p,
                source: 1,
                keys: 0,
                bytes: 0,
            });
        }
        assert_eq!(transfers.progress().len(), MAX_PULLERS);
        transfers.set(TransferProgress {
            partition: 0,
            source: 2,
            keys: 5,
            bytes: 50,
        });
        assert_eq!(transfers.progress()[0].keys, 5);
        transfers.remove(0);
        assert_eq!(transfers.progress().len(), MAX_PULLERS - 1);
    }
}
