//! The sled-backed engine.

use std::path::PathBuf;
use std::sync::Arc;

use super::group_commit::GroupCommit;
use super::record::{self, Record, Version};
use super::{Durability, StorageError};

/// How to open storage.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// Directory holding sled's files.
    pub path: PathBuf,
    /// When an acknowledged write is on disk.
    pub durability: Durability,
    /// sled's background flush interval. With `periodic` durability this is
    /// the window of acknowledged writes a crash can lose.
    pub flush_every_ms: u64,
    /// sled's page cache size in bytes.
    pub cache_bytes: u64,
}

impl StorageConfig {
    /// Defaults for a data directory.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            durability: Durability::default(),
            flush_every_ms: 500,
            cache_bytes: 256 * 1024 * 1024,
        }
    }
}

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
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    data: sled::Tree,
    durability: Durability,
    commit: Option<GroupCommit>,
}

impl Storage {
    /// Opens (or creates) storage. Opening does not scan the data. With
    /// `per_write` durability this must run inside a tokio runtime, which
    /// hosts the group-commit task.
    pub fn open(config: &StorageConfig) -> Result<Self, StorageError> {
        let db = sled::Config::new()
            .path(&config.path)
            .cache_capacity(config.cache_bytes)
            .flush_every_ms(Some(config.flush_every_ms.max(1)))
            .mode(sled::Mode::HighThroughput)
            .open()?;
        let data = db.open_tree("data")?;
        let commit = match config.durability {
            Durability::PerWrite => Some(GroupCommit::start()),
            Durability::Periodic => None,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                data,
                durability: config.durability,
                commit,
            }),
        })
    }

    /// The durability this storage was opened with.
    pub fn durability(&self) -> Durability {
        self.inner.durability
    }

    /// Stores `value` (or a tombstone when `None`) under `(partition, key)`
    /// if `version` is newer than the stored version. Returns once the
    /// write is as durable as the configured [`Durability`] promises.
    pub async fn apply(
        &self,
        partition: u32,
        key: &[u8],
        version: Version,
        value: Option<&[u8]>,
    ) -> Result<Applied, StorageError> {
        let outcome = self.apply_unflushed(partition, key, version, value)?;
        // A stale write is acknowledged as durable too: a retry must not
        // report success before the original write's flush has happened.
        self.commit().await?;
        Ok(outcome)
    }

    /// The apply-if-newer step without waiting for durability.
    pub fn apply_unflushed(
        &self,
        partition: u32,
        key: &[u8],
        version: Version,
        value: Option<&[u8]>,
    ) -> Result<Applied, StorageError> {
        let storage_key = storage_key(partition, key);
        let encoded = record::encode(version, value);
        loop {
            let current = self.inner.data.get(&storage_key)?;
            if let Some(raw) = &current {
                let stored =
                    record::decode_version(raw).map_err(|error| StorageError::Corrupt {
                        partition,
                        key: printable(key),
                        error,
                    })?;
                if version <= stored {
                    return Ok(Applied::Stale { current: stored });
                }
            }
            // Compare-and-swap so that two concurrent writers of one key
            // cannot both "win": the loser re-reads and compares again.
            match self.inner.data.compare_and_swap(
                &storage_key,
                current,
                Some(encoded.as_slice()),
            )? {
                Ok(()) => return Ok(Applied::Written),
                Err(_) => continue,
            }
        }
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
        let storage_key = storage_key(partition, key);
        let Some(current) = self.inner.data.get(&storage_key)? else {
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
        Ok(self
            .inner
            .data
            .compare_and_swap(&storage_key, Some(current), None::<&[u8]>)?
            .is_ok())
    }

    /// The stored record (a tombstone included), verified against its
    /// checksum.
    pub fn get(&self, partition: u32, key: &[u8]) -> Result<Option<Record>, StorageError> {
        let Some(raw) = self.inner.data.get(storage_key(partition, key))? else {
            return Ok(None);
        };
        record::decode(&raw)
            .map(Some)
            .map_err(|error| StorageError::Corrupt {
                partition,
                key: printable(key),
                error,
            })
    }

    /// Waits until every write applied before this call is on disk, if the
    /// durability asks for it.
    pub(crate) async fn commit(&self) -> Result<(), StorageError> {
        match &self.inner.commit {
            Some(commit) => commit.wait(&self.inner.db).await,
            None => Ok(()),
        }
    }

    /// Flushes everything to disk now (used at shutdown).
    pub async fn flush(&self) -> Result<(), StorageError> {
        let db = self.inner.db.clone();
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|e| StorageError::Flush(e.to_string()))??;
        Ok(())
    }

    /// How many flushes the group-commit task has run (0 with `periodic`).
    pub fn flushes(&self) -> u64 {
        self.inner.commit.as_ref().map_or(0, GroupCommit::flushes)
    }

    pub(super) fn data_tree(&self) -> &sled::Tree {
        &self.inner.data
    }

    /// The sled database, for modules that keep their own trees beside the
    /// data (hints).
    pub(super) fn db(&self) -> &sled::Db {
        &self.inner.db
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
        self.inner.data.insert(storage_key(partition, key), raw)?;
        Ok(())
    }
}

/// Partition first (big-endian) so a partition's keys are contiguous and in
/// key order, ready to be streamed as one range.
fn storage_key(partition: u32, key: &[u8]) -> Vec<u8> {
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
