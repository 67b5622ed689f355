//! Hinted handoff storage: writes a replica missed, kept on the
//! coordinator until the replica is back.
//!
//! Hints live in their own sled tree beside the data, keyed by
//! `target node (u64 BE) ‖ sequence (u64 BE)` so each target's hints replay
//! in the order they were written. Each target's hints are bounded in
//! bytes: past the bound a hint is dropped and counted, and anti-entropy
//! repairs what it would have carried. A stale hint is harmless: replicas
//! apply only newer versions.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::StorageError;
use super::bounded::config;
use super::engine::Storage;
use super::record::Version;

/// One missed write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hint {
    /// The key's partition.
    pub partition: u32,
    /// The key.
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// The write's version.
    pub version: Version,
    /// The value, or `None` for a tombstone.
    #[serde(with = "serde_bytes")]
    pub value: Option<Vec<u8>>,
}

/// A stored hint and what is needed to delete it.
#[derive(Debug, Clone)]
pub struct StoredHint {
    /// Its key in the hints tree.
    pub id: Vec<u8>,
    /// Its encoded size.
    pub bytes: u64,
    /// The hint.
    pub hint: Hint,
}

/// The durable hint queue of this node.
pub struct HintStore {
    storage: Storage,
    tree: sled::Tree,
    /// Bytes held per target.
    bytes: Mutex<BTreeMap<u64, u64>>,
    max_bytes_per_target: u64,
    dropped: AtomicU64,
}

/// A stored hint that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum HintError {
    /// The bytes are not the encoding of a hint.
    #[error("undecodable hint: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    /// A hint decoded with bytes left over: it was cut or overwritten.
    #[error("hint has {0} unexpected trailing bytes")]
    TrailingBytes(usize),
}

/// Encodes a hint as the hints tree stores it.
pub fn encode_hint(hint: &Hint) -> Result<Vec<u8>, StorageError> {
    bincode::serde::encode_to_vec(hint, config())
        .map_err(|e| StorageError::Flush(format!("cannot encode hint: {e}")))
}

/// Decodes a stored hint, refusing leftovers so that damage is reported
/// (and the hint dropped) rather than half-read.
pub fn decode_hint(raw: &[u8]) -> Result<Hint, HintError> {
    let (hint, read) = bincode::serde::decode_from_slice::<Hint, _>(raw, config())?;
    match raw.len().saturating_sub(read) {
        0 => Ok(hint),
        extra => Err(HintError::TrailingBytes(extra)),
    }
}

impl HintStore {
    /// Opens the hints tree. Counting the bytes held scans only the hints,
    /// which are bounded by `max_bytes_per_target` per target.
    pub fn open(storage: &Storage, max_bytes_per_target: u64) -> Result<Self, StorageError> {
        let tree = storage.hints_shard().tree().clone();
        let mut bytes = BTreeMap::new();
        for item in tree.iter() {
            let (k, v) = item?;
            if let Some(target) = target_of(&k) {
                *bytes.entry(target).or_insert(0) += v.len() as u64;
            }
        }
        Ok(Self {
            storage: storage.clone(),
            tree,
            bytes: Mutex::new(bytes),
            max_bytes_per_target,
            dropped: AtomicU64::new(0),
        })
    }

    /// Stores a hint for `target` durably, unless the target's bound is
    /// reached; returns whether it was stored.
    pub async fn add(&self, target: u64, hint: &Hint) -> Result<bool, StorageError> {
        let encoded = encode_hint(hint)?;
        let size = encoded.len() as u64;
        {
            let mut bytes = lock(&self.bytes);
            let held = bytes.entry(target).or_insert(0);
            if *held + size > self.max_bytes_per_target {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return Ok(false);
            }
            *held += size;
        }
        let mut id = target.to_be_bytes().to_vec();
        id.extend_from_slice(&self.storage.hints_shard().db().generate_id()?.to_be_bytes());
        if let Err(e) = self.tree.insert(id, encoded) {
            self.release(target, size);
            return Err(e.into());
        }
        self.storage.hints_shard().commit().await?;
        Ok(true)
    }

    /// Targets with hints, and the bytes held for each.
    pub fn pending(&self) -> Vec<(u64, u64)> {
        lock(&self.bytes)
            .iter()
            .filter(|(_, b)| **b > 0)
            .map(|(t, b)| (*t, *b))
            .collect()
    }

    /// Up to `limit` of a target's oldest hints. A hint that fails to
    /// decode is deleted and skipped (anti-entropy covers it).
    pub fn oldest(&self, target: u64, limit: usize) -> Result<Vec<StoredHint>, StorageError> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(target.to_be_bytes()) {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item?;
            match decode_hint(&v) {
                Ok(hint) => out.push(StoredHint {
                    id: k.to_vec(),
                    bytes: v.len() as u64,
                    hint,
                }),
                Err(e) => {
                    tracing::warn!(target, error = %e, "dropping an undecodable hint");
                    self.remove(target, &k, v.len() as u64)?;
                }
            }
        }
        Ok(out)
    }

    /// Deletes a delivered (or obsolete) hint.
    pub fn remove(&self, target: u64, id: &[u8], bytes: u64) -> Result<(), StorageError> {
        if self.tree.remove(id)?.is_some() {
            self.release(target, bytes);
        }
        Ok(())
    }

    /// Deletes every hint for a target (it left the cluster).
    pub fn clear(&self, target: u64) -> Result<(), StorageError> {
        for item in self.tree.scan_prefix(target.to_be_bytes()) {
            let (k, _) = item?;
            self.tree.remove(k)?;
        }
        lock(&self.bytes).remove(&target);
        Ok(())
    }

    /// Hints dropped because a target's bound was reached.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn release(&self, target: u64, size: u64) {
        if let Some(held) = lock(&self.bytes).get_mut(&target) {
            *held = held.saturating_sub(size);
        }
    }
}

fn target_of(id: &[u8]) -> Option<u64> {
    id.get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StorageConfig;

    fn hint(key: &str, size: usize) -> Hint {
        Hint {
            partition: 1,
            key: key.as_bytes().to_vec(),
            version: Version { hlc: 1, writer: 1 },
            value: Some(vec![0; size]),
        }
    }

    #[tokio::test]
    async fn hints_replay_in_order_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let storage = Storage::open(&StorageConfig::new(dir.path())).unwrap();
            let hints = HintStore::open(&storage, 1 << 20).unwrap();
            for k in ["a", "b", "c"] {
                assert!(hints.add(7, &hint(k, 10)).await.unwrap());
            }
            assert!(hints.add(8, &hint("other", 10)).await.unwrap());
        }
        let storage = Storage::open(&StorageConfig::new(dir.path())).unwrap();
        let hints = HintStore::open(&storage, 1 << 20).unwrap();
        let pending = hints.pending();
        assert_eq!(
            pending.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
            vec![7, 8]
        );
        let oldest = hints.oldest(7, 10).unwrap();
        let keys: Vec<_> = oldest.iter().map(|h| h.hint.key.clone()).collect();
        assert_eq!(keys, vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
        for h in &oldest {
            hints.remove(7, &h.id, h.bytes).unwrap();
        }
        assert_eq!(
            hints.pending().iter().map(|(t, _)| *t).collect::<Vec<_>>(),
            vec![8]
        );
    }

    #[test]
    fn a_damaged_hint_is_an_error_not_an_abort() {
        let raw = encode_hint(&hint("k", 10)).unwrap();
        assert_eq!(decode_hint(&raw).unwrap(), hint("k", 10));
        // Partition 1, then a key claiming 2^40 bytes: decoded without a
        // bound, this reserved a terabyte and aborted the node.
        let huge = [1, 253, 0, 0, 0, 0, 0, 1, 0, 0];
        assert!(matches!(decode_hint(&huge), Err(HintError::Decode(_))));
        let mut trailing = raw;
        trailing.push(0);
        assert!(matches!(
            decode_hint(&trailing),
            Err(HintError::TrailingBytes(1))
        ));
    }

    /// A hint's flush runs on a thread of its own: held there (as a slow
    /// sled flush of the hints holds it), no write of the node waits for
    /// it. It used to run inside the journal's batch, so while a replica
    /// was down every write waited for a flush of the hints.
    #[cfg(feature = "failpoints")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_held_hints_flush_holds_no_write() {
        use crate::failpoint;
        use std::sync::atomic::AtomicBool;
        use std::sync::{Arc, Condvar};
        use std::time::{Duration, Instant};

        const BOUND: Duration = Duration::from_secs(10);
        /// Whether the flusher reached the failpoint, and whether it may go.
        type Gate = Arc<(AtomicBool, Mutex<bool>, Condvar)>;
        /// Opens the gate however the test ends (the failpoint registry is
        /// the test process's).
        struct Release(Gate);
        impl Drop for Release {
            fn drop(&mut self) {
                fail::remove(failpoint::HINTS_FLUSH);
                *lock(&self.0.1) = true;
                self.0.2.notify_all();
            }
        }
        let gate: Gate = Arc::new((AtomicBool::new(false), Mutex::new(false), Condvar::new()));
        let release = Release(gate.clone());
        fail::cfg_callback(failpoint::HINTS_FLUSH, move || {
            gate.0.store(true, Ordering::SeqCst);
            let mut open = lock(&gate.1);
            let until = Instant::now() + BOUND;
            while !*open && Instant::now() < until {
                open = gate
                    .2
                    .wait_timeout(open, BOUND)
                    .map_or_else(|e| e.into_inner().0, |r| r.0);
            }
        })
        .unwrap();

        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(&StorageConfig::new(dir.path())).unwrap();
        let hints = Arc::new(HintStore::open(&storage, 1 << 20).unwrap());
        let held = tokio::spawn({
            let hints = hints.clone();
            async move { hints.add(7, &hint("missed", 10)).await }
        });
        let deadline = Instant::now() + BOUND;
        while !release.0.0.load(Ordering::SeqCst) {
            assert!(Instant::now() < deadline, "the hints flush never began");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for hlc in 1..=2 {
            let version = Version { hlc, writer: 1 };
            let write =
                tokio::time::timeout(BOUND, storage.apply(3, b"k", version, Some(b"v"))).await;
            assert!(
                matches!(write, Ok(Ok(_))),
                "a write waited for the held hints flush: {write:?}"
            );
        }
        assert!(!held.is_finished(), "the hint waits for its flush");
        drop(release);
        let stored = tokio::time::timeout(BOUND, held).await;
        assert!(matches!(stored, Ok(Ok(Ok(true)))), "{stored:?}");
    }

    #[tokio::test]
    async fn hints_past_the_bound_are_dropped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(&StorageConfig::new(dir.path())).unwrap();
        let hints = HintStore::open(&storage, 1000).unwrap();
        let mut stored = 0;
        for i in 0..20 {
            if hints.add(1, &hint(&format!("k{i}"), 100)).await.unwrap() {
                stored += 1;
            }
        }
        assert!(stored > 0 && stored < 20, "{stored}");
        assert_eq!(hints.dropped(), 20 - stored);
        assert!(hints.pending()[0].1 <= 1000);
        assert!(
            hints.add(2, &hint("other target", 100)).await.unwrap(),
            "the bound is per target"
        );
    }
}
