//! The record operations of [`Storage`]: apply-if-newer by
//! compare-and-swap, the verified get, the tombstone purge, waiting for
//! durability, flush. Which shard holds a partition, and when it opens,
//! is `shards.rs`.

use std::sync::Arc;

use super::StorageError;
use super::journal;
use super::record::{self, Record, Version};
use super::shards::Inner;
use crate::failpoint;

/// The outcome of [`Storage::apply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The write was newer than what was stored and is now stored.
    Written,
    /// The store already holds this version or a newer one; nothing
    /// changed. A retry of an applied write lands here.
    Stale {
        /// The version that is stored.
        current: Version,
    },
}

/// Versioned records in sled. Cheap to clone.
#[derive(Clone)]
pub struct Storage {
    pub(super) inner: Arc<Inner>,
}

impl Storage {
    /// Stores `value` (or a tombstone when `None`) under `(partition, key)`
    /// if `version` is newer than the stored version. Returns once the
    /// write is as durable as the configured [`Durability`](super::Durability) promises.
    pub async fn apply(
        &self,
        partition: u32,
        key: &[u8],
        version: Version,
        value: Option<&[u8]>,
    ) -> Result<Applied, StorageError> {
        self.open_partition(partition).await?;
        if failpoint::fires(failpoint::STORAGE_APPLY_BEFORE, key) {
            return Err(StorageError::Injected(failpoint::STORAGE_APPLY_BEFORE));
        }
        let mut unflushed = Unflushed::default();
        let outcome = self.apply_unflushed(partition, key, version, value, &mut unflushed)?;
        self.commit(unflushed).await?;
        if failpoint::fires(failpoint::STORAGE_APPLY_AFTER, key) {
            return Err(StorageError::Injected(failpoint::STORAGE_APPLY_AFTER));
        }
        Ok(outcome)
    }

    /// The apply-if-newer step without waiting for durability: the record
    /// now stored is added to `unflushed`, which [`Storage::commit`] makes
    /// durable (several writes may share one). A stale write adds the
    /// record it found: a retry must not be acknowledged before the
    /// original write it lost to is durable, and the original's writer may
    /// not have reached the journal yet.
    pub fn apply_unflushed(
        &self,
        partition: u32,
        key: &[u8],
        version: Version,
        value: Option<&[u8]>,
        unflushed: &mut Unflushed,
    ) -> Result<Applied, StorageError> {
        let (index, shard) = self.shard_at(partition)?;
        let mut encoded = record::encode(version, value);
        if failpoint::fires(failpoint::STORAGE_DAMAGE, key)
            && let Some(last) = encoded.last_mut()
        {
            *last ^= 0xff;
        }
        let stored = store_if_newer(
            shard.tree(),
            &storage_key(partition, key),
            version,
            &encoded,
            |error| self.note_damaged(partition, key, error),
        )?;
        if self.inner.commit.is_some() {
            let raw = match &stored {
                Stored::Written => encoded.as_slice(),
                Stored::Stale { raw, .. } => raw.as_ref(),
            };
            unflushed.add(index, partition, key, raw);
        }
        Ok(match stored {
            Stored::Written => Applied::Written,
            Stored::Stale { current, .. } => Applied::Stale { current },
        })
    }

    /// Deletes the record of a key if it is still the tombstone with
    /// exactly `version`; returns whether it did. A newer write that landed
    /// meanwhile is kept.
    pub fn purge_tombstone(
        &self,
        partition: u32,
        key: &[u8],
        version: Version,
    ) -> Result<bool, StorageError> {
        let tree = self.shard(partition)?.tree();
        let storage_key = storage_key(partition, key);
        let Some(current) = tree.get(&storage_key)? else {
            return Ok(false);
        };
        let (stored, tombstone) =
            record::decode_header(&current).map_err(|error| StorageError::Corrupt {
                partition,
                key: printable(key),
                error,
            })?;
        if !tombstone || stored != version {
            return Ok(false);
        }
        Ok(tree
            .compare_and_swap(&storage_key, Some(current), None::<&[u8]>)?
            .is_ok())
    }

    /// The stored record (a tombstone included), verified against its
    /// checksum. Opens the partition's shard in place if it is not open;
    /// async callers use [`Storage::read`].
    pub fn get(&self, partition: u32, key: &[u8]) -> Result<Option<Record>, StorageError> {
        let Some(raw) = self
            .shard(partition)?
            .tree()
            .get(storage_key(partition, key))?
        else {
            return Ok(None);
        };
        record::decode(&raw).map(Some).map_err(|error| {
            self.note_damaged(partition, key, &error);
            StorageError::Corrupt {
                partition,
                key: printable(key),
                error,
            }
        })
    }

    /// [`Storage::get`] for async callers: the shard is opened off the
    /// async threads if this is its first touch.
    pub async fn read(&self, partition: u32, key: &[u8]) -> Result<Option<Record>, StorageError> {
        self.open_partition(partition).await?;
        self.get(partition, key)
    }

    /// Waits until the writes in `unflushed` are durable, if the
    /// durability asks for it: one journal sync, shared with every writer
    /// waiting at the same moment.
    pub async fn commit(&self, unflushed: Unflushed) -> Result<(), StorageError> {
        match &self.inner.commit {
            Some(commit) if !unflushed.frames.is_empty() => {
                commit.append(unflushed.frames, unflushed.shards).await
            }
            _ => Ok(()),
        }
    }

    /// Flushes every open shard and the hints to disk now (used at
    /// shutdown).
    pub async fn flush(&self) -> Result<(), StorageError> {
        let storage = self.clone();
        tokio::task::spawn_blocking(move || -> Result<(), StorageError> {
            for shard in storage.open_shards() {
                shard.db().flush()?;
            }
            storage.hints_shard().db().flush()?;
            Ok(())
        })
        .await
        .map_err(|e| StorageError::Flush(e.to_string()))??;
        self.checkpoint_all().await.map(drop)
    }

    /// Writes a raw, unverified value under a key: for tests that need a
    /// corrupt record on disk.
    #[doc(hidden)]
    pub fn insert_raw_for_test(
        &self,
        partition: u32,
        key: &[u8],
        raw: &[u8],
    ) -> Result<(), StorageError> {
        self.shard(partition)?
            .tree()
            .insert(storage_key(partition, key), raw)?;
        Ok(())
    }
}

/// Writes applied to their shards, not yet durable: their journal frames.
#[derive(Debug, Default)]
pub struct Unflushed {
    frames: Vec<u8>,
    /// The shards written to, each once.
    shards: Vec<usize>,
}

impl Unflushed {
    fn add(&mut self, shard: usize, partition: u32, key: &[u8], record: &[u8]) {
        journal::encode_frame(&mut self.frames, partition, key, record);
        if !self.shards.contains(&shard) {
            self.shards.push(shard);
        }
    }
}

/// What [`store_if_newer`] did.
pub(super) enum Stored {
    Written,
    Stale {
        current: Version,
        /// The record found.
        raw: sled::IVec,
    },
}

impl Stored {
    pub(super) fn is_written(&self) -> bool {
        matches!(self, Stored::Written)
    }
}

/// Stores `encoded` (a record of `version`) under `storage_key` unless the
/// tree holds this version or a newer one. `damaged` hears of a stored
/// record that does not verify, which any write replaces.
pub(super) fn store_if_newer(
    tree: &sled::Tree,
    storage_key: &[u8],
    version: Version,
    encoded: &[u8],
    mut damaged: impl FnMut(&record::RecordError),
) -> Result<Stored, StorageError> {
    loop {
        let current = tree.get(storage_key)?;
        if let Some(raw) = &current {
            match record::decode_verified_header(raw) {
                Ok((stored, _)) if version <= stored => {
                    return Ok(Stored::Stale {
                        current: stored,
                        raw: raw.clone(),
                    });
                }
                Ok(_) => {}
                // A damaged record holds nothing worth keeping, not even
                // its version: any write replaces it, the same version sent
                // back by a repair included.
                Err(error) => damaged(&error),
            }
        }
        // Compare-and-swap so that two concurrent writers of one key cannot
        // both "win": the loser re-reads and compares again.
        match tree.compare_and_swap(storage_key, current, Some(encoded))? {
            Ok(()) => return Ok(Stored::Written),
            Err(_) => continue,
        }
    }
}

/// Partition first (big-endian) so a partition's keys are contiguous and in
/// key order, ready to be streamed as one range.
pub(super) fn storage_key(partition: u32, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + key.len());
    k.extend_from_slice(&partition.to_be_bytes());
    k.extend_from_slice(key);
    k
}

/// A key for an error message: escaped, and cut short if long.
pub(crate) fn printable(key: &[u8]) -> String {
    const SHOWN: usize = 64;
    let shown = key.get(..SHOWN).unwrap_or(key);
    let mut s = shown.escape_ascii().to_string();
    if key.len() > SHOWN {
        s.push_str(&format!("… ({} bytes)", key.len()));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::shards::tests::open_sharded;
    use crate::storage::{Durability, StorageConfig};

    fn open(dir: &tempfile::TempDir, durability: Durability) -> Storage {
        let mut config = StorageConfig::new(dir.path());
        config.durability = durability;
        Storage::open(&config).unwrap()
    }

    fn v(hlc: u64) -> Version {
        Version { hlc, writer: 1 }
    }

    #[tokio::test]
    async fn applies_only_newer_versions() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(&dir, Durability::Periodic);
        assert_eq!(
            s.apply(0, b"k", v(5), Some(b"five")).await.unwrap(),
            Applied::Written
        );
        assert_eq!(
            s.apply(0, b"k", v(5), Some(b"five again")).await.unwrap(),
            Applied::Stale { current: v(5) },
            "the same version twice is a no-op (idempotent retry)"
        );
        assert_eq!(
            s.apply(0, b"k", v(3), Some(b"three")).await.unwrap(),
            Applied::Stale { current: v(5) }
        );
        assert_eq!(
            s.get(0, b"k").unwrap().unwrap().value.as_deref(),
            Some(&b"five"[..])
        );
        assert_eq!(
            s.apply(0, b"k", v(6), None).await.unwrap(),
            Applied::Written
        );
        assert_eq!(
            s.get(0, b"k").unwrap(),
            Some(Record {
                version: v(6),
                value: None
            })
        );
        assert_eq!(
            s.apply(0, b"k", v(4), Some(b"resurrect")).await.unwrap(),
            Applied::Stale { current: v(6) },
            "an older write must not resurrect a deleted key"
        );
    }

    #[tokio::test]
    async fn partitions_are_separate_namespaces() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(&dir, Durability::Periodic);
        s.apply(1, b"k", v(1), Some(b"one")).await.unwrap();
        assert_eq!(s.get(2, b"k").unwrap(), None);
        assert!(s.get(1, b"k").unwrap().is_some());
    }

    #[tokio::test]
    async fn a_corrupt_record_is_an_error_not_data() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(&dir, Durability::Periodic);
        let mut raw = record::encode(v(1), Some(b"payload"));
        let last = raw.len() - 1;
        raw[last] ^= 0xff;
        s.insert_raw_for_test(0, b"bad", &raw).unwrap();
        let err = s.get(0, b"bad").unwrap_err();
        assert!(matches!(err, StorageError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("crc32c"), "{err}");
    }

    #[tokio::test]
    async fn a_damaged_record_is_counted_left_out_of_scans_and_replaced_by_any_write() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(&dir, Durability::Periodic);
        s.apply(0, b"good", v(5), Some(b"fine")).await.unwrap();
        let mut raw = record::encode(v(5), Some(b"payload"));
        let last = raw.len() - 1;
        raw[last] ^= 0xff;
        s.insert_raw_for_test(0, b"bad", &raw).unwrap();
        // A scan (digests, transfers, listings) goes on past it, without it.
        let mut seen = Vec::new();
        s.scan_partition(0, |e| {
            seen.push(e.key);
            true
        })
        .unwrap();
        assert_eq!(seen, vec![b"good".to_vec()]);
        assert_eq!(s.damaged_records(), 1);
        // The same version sent back by a repair replaces it; a healthy
        // record still refuses a version not newer than its own.
        let repaired = s.apply(0, b"bad", v(5), Some(b"payload")).await.unwrap();
        assert_eq!(repaired, Applied::Written);
        let found = s.get(0, b"bad").unwrap().expect("repaired");
        assert_eq!(found.value.as_deref(), Some(&b"payload"[..]));
        let stale = s.apply(0, b"good", v(5), Some(b"other")).await.unwrap();
        assert_eq!(stale, Applied::Stale { current: v(5) });
        assert_eq!(
            s.damaged_records(),
            2,
            "counted again by the repairing write"
        );
    }

    #[tokio::test]
    async fn concurrent_per_write_puts_share_flushes() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(&dir, Durability::PerWrite);
        let writes = 64u64;
        let tasks: Vec<_> = (0..writes)
            .map(|i| {
                let s = s.clone();
                tokio::spawn(async move { s.apply(0, &i.to_be_bytes(), v(1), Some(b"x")).await })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap(), Applied::Written);
        }
        let flushes = s.flushes();
        assert!(flushes >= 1, "per_write must flush");
        assert!(
            flushes < writes,
            "{writes} concurrent writes took {flushes} flushes: no group commit"
        );
    }

    #[tokio::test]
    async fn flush_covers_every_open_shard() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut config = StorageConfig::new(dir.path());
            config.shards = 4;
            config.durability = Durability::Periodic;
            // Far beyond the test: only the explicit flush writes.
            config.flush_every_ms = 3_600_000;
            let s = Storage::open(&config).unwrap();
            for p in 0..4 {
                s.apply(p, b"k", v(1), Some(b"x")).await.unwrap();
            }
            s.flush().await.unwrap();
        }
        let s = open_sharded(&dir, 4);
        for p in 0..4 {
            assert!(s.read(p, b"k").await.unwrap().is_some(), "partition {p}");
        }
    }

    #[tokio::test]
    async fn reopened_storage_keeps_flushed_writes() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = open(&dir, Durability::PerWrite);
            s.apply(7, b"kept", v(9), Some(b"value")).await.unwrap();
        }
        let s = open(&dir, Durability::PerWrite);
        assert_eq!(
            s.get(7, b"kept").unwrap().unwrap().value.as_deref(),
            Some(&b"value"[..])
        );
    }
}
