//! The map epochs of the writes this node is coordinating now.
//!
//! A move's copy may only start once no write can still reach the source
//! without also reaching the target (`recovery/transfer.rs`): a write
//! coordinated with a map older than the move's is sent to the source
//! alone, and if it lands there after the copy has read past its key and
//! is acknowledged by the source and one other replica, the move then
//! leaves it on one replica that stays. Having *applied* the move's map is
//! not enough for that: a write that took the older map a moment before is
//! still in flight, for as long as its deadline allows. So a node reports,
//! as the epoch it has settled at, the older of its map's epoch and the
//! oldest epoch any write still in flight was coordinated with
//! ([`WriteEpochs::settled`]), and says when that oldest write ends
//! ([`WriteEpochs::drained`]) so that its heartbeat can carry the news at
//! once.
//!
//! Bounded: one entry per distinct epoch among writes in flight, which
//! admission control bounds.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;

/// The writes in flight on this node, counted by the map epoch each was
/// coordinated with.
#[derive(Debug, Default)]
pub struct WriteEpochs {
    counts: Mutex<BTreeMap<u64, usize>>,
    drained: Notify,
}

impl WriteEpochs {
    /// Takes the map a new write will be coordinated with, from `current`
    /// (which returns the map and its epoch), and counts the write until
    /// the returned guard is dropped. Both happen under one lock with
    /// [`WriteEpochs::settled`], so no report can fall between a write
    /// taking its map and being counted.
    pub fn begin<M>(&self, current: impl FnOnce() -> (M, u64)) -> (M, InFlightWrite<'_>) {
        let mut counts = self.lock();
        let (map, epoch) = current();
        *counts.entry(epoch).or_insert(0) += 1;
        (
            map,
            InFlightWrite {
                epochs: self,
                epoch,
            },
        )
    }

    /// The epoch this node has settled at: `map_epoch()` (its map's), or
    /// older while a write coordinated with an older map is in flight.
    pub fn settled(&self, map_epoch: impl FnOnce() -> u64) -> u64 {
        let counts = self.lock();
        settled_epoch(map_epoch(), counts.keys().next().copied())
    }

    /// Resolves once the oldest epoch among the writes in flight has no
    /// write left (a wake-up, not a guarantee that the settled epoch rose:
    /// compare [`WriteEpochs::settled`]).
    pub async fn drained(&self) {
        self.drained.notified().await;
    }

    /// Writes in flight.
    #[cfg(test)]
    fn in_flight(&self) -> usize {
        self.lock().values().sum()
    }

    fn end(&self, epoch: u64) {
        let mut counts = self.lock();
        let oldest = counts.keys().next().copied();
        if let Some(count) = counts.get_mut(&epoch) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&epoch);
                if oldest == Some(epoch) {
                    drop(counts);
                    self.drained.notify_one();
                }
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, usize>> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One write being coordinated: counted in its epoch until dropped.
#[derive(Debug)]
pub struct InFlightWrite<'a> {
    epochs: &'a WriteEpochs,
    epoch: u64,
}

impl Drop for InFlightWrite<'_> {
    fn drop(&mut self) {
        self.epochs.end(self.epoch);
    }
}

/// The epoch a node has settled at, from its map's epoch and the oldest
/// epoch of a write it still has in flight. Pure.
pub fn settled_epoch(map_epoch: u64, oldest_in_flight: Option<u64>) -> u64 {
    oldest_in_flight.map_or(map_epoch, |oldest| oldest.min(map_epoch))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_write_on_an_older_map_holds_the_settled_epoch_back_until_it_ends() {
        let epochs = WriteEpochs::default();
        assert_eq!(epochs.settled(|| 7), 7, "nothing in flight");
        let ((), old) = epochs.begin(|| ((), 7));
        // The map moves on to 8; a write is still in flight on 7.
        let ((), new) = epochs.begin(|| ((), 8));
        assert_eq!(epochs.settled(|| 8), 7);
        drop(new);
        assert_eq!(epochs.settled(|| 8), 7, "the old write is still out");
        drop(old);
        assert_eq!(epochs.settled(|| 8), 8);
        assert_eq!(epochs.in_flight(), 0);
    }

    #[tokio::test]
    async fn the_end_of_the_oldest_epoch_wakes_the_heartbeat() {
        let epochs = WriteEpochs::default();
        let ((), old) = epochs.begin(|| ((), 3));
        let ((), newer) = epochs.begin(|| ((), 4));
        // A newer write ending says nothing: the oldest is still out.
        drop(newer);
        let early =
            tokio::time::timeout(std::time::Duration::from_millis(20), epochs.drained()).await;
        assert!(early.is_err(), "woken while epoch 3 was still in flight");
        drop(old);
        tokio::time::timeout(std::time::Duration::from_secs(5), epochs.drained())
            .await
            .expect("the last write of the oldest epoch wakes the waiter");
    }

    proptest! {
        /// Against a model (a list of the epochs in flight): the settled
        /// epoch is never newer than any write in flight nor than the map,
        /// and equals the map's once every write has ended.
        #[test]
        fn the_settled_epoch_never_passes_a_write_in_flight(
            steps in proptest::collection::vec((any::<bool>(), 0u64..5, any::<prop::sample::Index>()), 1..200),
        ) {
            let epochs = WriteEpochs::default();
            let mut map_epoch = 1u64;
            let mut guards: Vec<(u64, InFlightWrite<'_>)> = Vec::new();
            for (start, advance, pick) in steps {
                if start || guards.is_empty() {
                    map_epoch += advance;
                    let (epoch, guard) = epochs.begin(|| (map_epoch, map_epoch));
                    guards.push((epoch, guard));
                } else {
                    guards.swap_remove(pick.index(guards.len()));
                }
                let settled = epochs.settled(|| map_epoch);
                prop_assert!(settled <= map_epoch);
                for (epoch, _) in &guards {
                    prop_assert!(settled <= *epoch, "settled {settled} past a write on {epoch}");
                }
                if let Some(oldest) = guards.iter().map(|(e, _)| *e).min() {
                    prop_assert_eq!(settled, oldest);
                }
            }
            guards.clear();
            prop_assert_eq!(epochs.settled(|| map_epoch), map_epoch);
            prop_assert_eq!(epochs.in_flight(), 0);
        }
    }
}
