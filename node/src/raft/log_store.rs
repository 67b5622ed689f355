//! The Raft log and vote, persisted in sled.
//!
//! Two trees of the node's metadata database:
//!
//! - `raft_log`: log index (u64, big-endian so that sled's byte order is
//!   index order) → bincode of the [`Entry`];
//! - `raft_meta`: `vote`, `committed` and `last_purged` → bincode of the
//!   value.
//!
//! Openraft counts an entry towards a commit quorum as soon as the append
//! callback fires, and a granted vote as soon as `save_vote` returns. If a
//! crash could then lose either, a node could vote twice in one term or
//! forget an entry a quorum was counted on. So both wait for sled's fsync
//! (`flush_async`) first; openraft's own examples skip it.

// Every fallible function here ends in an openraft trait method, whose
// error type is openraft's (large) StorageError; boxing it on the way
// would only be unboxed again at the trait boundary.
#![allow(
    clippy::result_large_err,
    reason = "openraft's StorageError is the required error type"
)]

use std::convert::Infallible;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, StorageIOError, Vote};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::Transactional;
use sled::transaction::ConflictableTransactionResult;

use super::types::{Entry, LogId, StorageError, TypeConfig};
use crate::cluster::NodeId;
use crate::storage::bounded::config;

const LOG_TREE: &str = "raft_log";
const META_TREE: &str = "raft_meta";
const VOTE_KEY: &[u8] = b"vote";
const COMMITTED_KEY: &[u8] = b"committed";
const PURGED_KEY: &[u8] = b"last_purged";

/// A value read from the Raft store that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CorruptValue {
    /// The bytes are not a bincode encoding of the expected type.
    #[error(
        "a stored Raft value does not decode ({0}); the node's metadata database is damaged: \
         restore its data directory, or replace the node"
    )]
    Decode(#[from] bincode::error::DecodeError),
    /// A value decoded but bytes were left over: it was cut or overwritten.
    #[error(
        "a stored Raft value has {0} unexpected trailing bytes; the node's metadata database is \
         damaged: restore its data directory, or replace the node"
    )]
    TrailingBytes(usize),
}

/// Encodes a value the way the Raft store keeps it on disk.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, bincode::error::EncodeError> {
    bincode::serde::encode_to_vec(value, config())
}

/// Decodes a value written by [`encode`], refusing leftovers so that a
/// damaged value is reported rather than half-read.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CorruptValue> {
    let (value, read) = bincode::serde::decode_from_slice(bytes, config())?;
    match bytes.len().saturating_sub(read) {
        0 => Ok(value),
        extra => Err(CorruptValue::TrailingBytes(extra)),
    }
}

/// The sled key of the entry at `index`.
fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// The Raft log and vote of this node. Clones share the same trees, which
/// is how openraft's replication tasks read the log while the Raft core
/// appends to it.
#[derive(Debug, Clone)]
pub struct LogStore {
    /// Kept for `flush_async`, which syncs every tree of the database.
    db: sled::Db,
    /// `raft_log`: index → entry.
    log: sled::Tree,
    /// `raft_meta`: vote, committed and last purged log ids.
    meta: sled::Tree,
}

impl LogStore {
    /// Opens (or creates) the log trees in `db`, the node's metadata
    /// database.
    pub fn open(db: &sled::Db) -> Result<Self, StorageError> {
        let tree = |name: &str| {
            db.open_tree(name)
                .map_err(|e| StorageIOError::new(ErrorSubject::Store, ErrorVerb::Read, &e))
        };
        Ok(Self {
            db: db.clone(),
            log: tree(LOG_TREE)?,
            meta: tree(META_TREE)?,
        })
    }

    fn read_meta<T: DeserializeOwned>(
        &self,
        key: &[u8],
        subject: ErrorSubject<NodeId>,
    ) -> Result<Option<T>, StorageError> {
        let bytes = self
            .meta
            .get(key)
            .map_err(|e| StorageIOError::new(subject.clone(), ErrorVerb::Read, &e))?;
        let Some(bytes) = bytes else {
            return Ok(None);
        };
        let value =
            decode(&bytes).map_err(|e| StorageIOError::new(subject, ErrorVerb::Read, &e))?;
        Ok(Some(value))
    }

    fn write_meta<T: Serialize>(
        &self,
        key: &[u8],
        value: &T,
        subject: ErrorSubject<NodeId>,
    ) -> Result<(), StorageError> {
        let bytes = encode(value)
            .map_err(|e| StorageIOError::new(subject.clone(), ErrorVerb::Write, &e))?;
        self.meta
            .insert(key, bytes)
            .map_err(|e| StorageIOError::new(subject, ErrorVerb::Write, &e))?;
        Ok(())
    }

    /// Waits until everything written so far is on disk.
    async fn flush(&self, subject: ErrorSubject<NodeId>) -> Result<(), StorageError> {
        self.db
            .flush_async()
            .await
            .map_err(|e| StorageIOError::new(subject, ErrorVerb::Write, &e))?;
        Ok(())
    }

    /// Removes every entry whose key is in `range`, in one atomic batch.
    fn remove_range(&self, range: impl RangeBounds<[u8; 8]>) -> Result<sled::Batch, StorageError> {
        let mut batch = sled::Batch::default();
        for key in self.log.range(range).keys() {
            batch.remove(key.map_err(|e| StorageIOError::read_logs(&e))?);
        }
        Ok(batch)
    }
}

/// Decodes one stored entry.
fn decode_entry(bytes: &[u8]) -> Result<Entry, StorageError> {
    Ok(decode(bytes).map_err(|e| StorageIOError::read_logs(&e))?)
}

/// Turns any range of indexes into `[start, end)` with `end = None` for
/// unbounded; `None` when the range is empty. Done by hand because sled,
/// like `BTreeMap`, does not promise to accept a reversed range.
fn index_range(range: &impl RangeBounds<u64>) -> Option<(u64, Option<u64>)> {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.checked_add(1)?,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.checked_add(1),
        Bound::Excluded(&e) => Some(e),
        Bound::Unbounded => None,
    };
    match end {
        Some(end) if start >= end => None,
        _ => Some((start, end)),
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let Some((start, end)) = index_range(&range) else {
            return Ok(Vec::new());
        };
        let entries = match end {
            Some(end) => self.log.range(index_key(start)..index_key(end)),
            None => self.log.range(index_key(start)..),
        };
        entries
            .values()
            .map(|value| decode_entry(&value.map_err(|e| StorageIOError::read_logs(&e))?))
            .collect()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id: Option<LogId> = self.read_meta(PURGED_KEY, ErrorSubject::Logs)?;
        let last = self.log.last().map_err(|e| StorageIOError::read_logs(&e))?;
        let last_log_id = match last {
            Some((_, bytes)) => Some(decode_entry(&bytes)?.log_id),
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        self.write_meta(VOTE_KEY, vote, ErrorSubject::Vote)?;
        self.flush(ErrorSubject::Vote).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.read_meta(VOTE_KEY, ErrorSubject::Vote)
    }

    /// Not flushed: `committed` only tells a restarting node how far it may
    /// re-apply its own log at once. Losing the latest value delays that
    /// until the leader repeats it; it cannot get ahead of the log, because
    /// every entry it covers was flushed by `append` before this call.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.write_meta(COMMITTED_KEY, &committed, ErrorSubject::Logs)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self
            .read_meta::<Option<LogId>>(COMMITTED_KEY, ErrorSubject::Logs)?
            .flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = sled::Batch::default();
        for entry in entries {
            let bytes =
                encode(&entry).map_err(|e| StorageIOError::write_log_entry(entry.log_id, &e))?;
            batch.insert(&index_key(entry.log_id.index), bytes);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| StorageIOError::write_logs(&e))?;
        match self.db.flush_async().await {
            Ok(_) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot flush appended Raft entries to disk");
                let failure = StorageIOError::write_logs(&e);
                callback.log_io_completed(Err(io::Error::from(e)));
                Err(failure.into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "truncating the Raft log");
        let batch = self.remove_range(index_key(log_id.index)..)?;
        self.log
            .apply_batch(batch)
            .map_err(|e| StorageIOError::write_logs(&e))?;
        // Rare (only after a leader change), so flushing costs nothing and
        // saves reasoning about which later flush would cover it.
        self.flush(ErrorSubject::Logs).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "purging the Raft log");
        let removals = self.remove_range(..=index_key(log_id.index))?;
        let purged = encode(&log_id).map_err(|e| StorageIOError::write_logs(&e))?;
        // One transaction over both trees: a crash must never leave entries
        // removed while `last_purged` still points before them, or the log
        // would look like it has a hole.
        (&self.log, &self.meta)
            .transaction(
                |(log, meta)| -> ConflictableTransactionResult<(), Infallible> {
                    log.apply_batch(&removals)?;
                    meta.insert(PURGED_KEY, purged.as_slice())?;
                    Ok(())
                },
            )
            .map_err(|e| StorageIOError::write_logs(&e))?;
        self.flush(ErrorSubject::Logs).await
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use openraft::storage::RaftLogStorageExt;
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;
    use crate::cluster::map::{Command, NodeState};

    fn log_id(term: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn entries(indexes: std::ops::RangeInclusive<u64>) -> Vec<Entry> {
        indexes
            .map(|index| Entry {
                log_id: log_id(2, index),
                payload: EntryPayload::Normal(Command::SetNodeState {
                    id: index,
                    state: NodeState::Down,
                    at_ms: 0,
                }),
            })
            .collect()
    }

    /// A database that never flushes on its own, so only the store's own
    /// flushes put data on disk.
    fn open_without_background_flush(path: &Path) -> sled::Db {
        sled::Config::new()
            .path(path)
            .flush_every_ms(None)
            .open()
            .expect("open sled")
    }

    /// What a crash at this instant would leave: the database's files as
    /// they are on disk now, copied while the database is still open.
    fn copy_files(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).expect("create copy dir");
        for item in std::fs::read_dir(from).expect("read db dir") {
            let item = item.expect("dir entry");
            let target = to.join(item.file_name());
            if item.file_type().expect("file type").is_dir() {
                copy_files(&item.path(), &target);
            } else {
                std::fs::copy(item.path(), target).expect("copy file");
            }
        }
    }

    #[tokio::test]
    async fn entries_and_vote_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let vote = Vote::new(2, 1);
        {
            let db = sled::open(dir.path()).expect("open sled");
            let mut store = LogStore::open(&db).expect("open store");
            store.save_vote(&vote).await.expect("save vote");
            store.blocking_append(entries(1..=3)).await.expect("append");
            store.blocking_append(entries(4..=5)).await.expect("append");
        }
        let db = crate::raft::identity::tests::reopen(dir.path());
        let mut store = LogStore::open(&db).expect("reopen store");
        assert_eq!(store.read_vote().await.expect("read vote"), Some(vote));
        let read = store.try_get_log_entries(..).await.expect("read entries");
        assert_eq!(read, entries(1..=5));
        let state = store.get_log_state().await.expect("log state");
        assert_eq!(state.last_log_id, Some(log_id(2, 5)));
    }

    #[tokio::test]
    async fn entries_and_vote_are_on_disk_when_acknowledged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let crashed = tempfile::tempdir().expect("tempdir");
        let vote = Vote::new(7, 1);
        let db = open_without_background_flush(dir.path());
        let mut store = LogStore::open(&db).expect("open store");
        store.blocking_append(entries(1..=4)).await.expect("append");
        store.save_vote(&vote).await.expect("save vote");
        copy_files(dir.path(), crashed.path());

        let db = sled::open(crashed.path()).expect("open the crashed copy");
        let mut recovered = LogStore::open(&db).expect("open store");
        assert_eq!(recovered.read_vote().await.expect("read vote"), Some(vote));
        let read = recovered
            .try_get_log_entries(..)
            .await
            .expect("read entries");
        assert_eq!(read, entries(1..=4));
    }

    #[tokio::test]
    async fn purge_and_truncate_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let db = sled::open(dir.path()).expect("open sled");
            let mut store = LogStore::open(&db).expect("open store");
            store.blocking_append(entries(1..=9)).await.expect("append");
            store.purge(log_id(2, 3)).await.expect("purge");
            store.truncate(log_id(2, 8)).await.expect("truncate");
            store
                .save_committed(Some(log_id(2, 6)))
                .await
                .expect("save committed");
        }
        let db = crate::raft::identity::tests::reopen(dir.path());
        let mut store = LogStore::open(&db).expect("reopen store");
        let read = store.try_get_log_entries(..).await.expect("read entries");
        assert_eq!(read, entries(4..=7));
        let state = store.get_log_state().await.expect("log state");
        assert_eq!(state.last_purged_log_id, Some(log_id(2, 3)));
        assert_eq!(state.last_log_id, Some(log_id(2, 7)));
        assert_eq!(
            store.read_committed().await.expect("committed"),
            Some(log_id(2, 6))
        );
    }

    #[tokio::test]
    async fn a_damaged_entry_is_an_error_not_a_panic() {
        let db = sled::Config::new()
            .temporary(true)
            .open()
            .expect("open sled");
        let mut store = LogStore::open(&db).expect("open store");
        store.blocking_append(entries(1..=3)).await.expect("append");
        store
            .log
            .insert(index_key(2), &[0xff, 0xff, 0xff][..])
            .expect("damage entry 2");
        store
            .meta
            .insert(VOTE_KEY, &[0x01][..])
            .expect("damage the vote");

        assert!(store.try_get_log_entries(1..4).await.is_err());
        assert!(store.try_get_log_entries(3..4).await.is_ok());
        assert!(store.read_vote().await.is_err());
    }

    #[test]
    fn a_huge_claimed_length_is_an_error_not_an_abort() {
        // A string claiming 2^40 bytes: decoded without a bound, this
        // reserved a terabyte and aborted the node at startup.
        let huge = [253, 0, 0, 0, 0, 0, 1, 0, 0];
        assert!(matches!(
            decode::<String>(&huge),
            Err(CorruptValue::Decode(_))
        ));
    }

    #[test]
    fn reversed_and_overflowing_ranges_are_empty() {
        assert_eq!(index_range(&(5..5)), None);
        assert_eq!(index_range(&(Bound::Included(6), Bound::Excluded(3))), None);
        assert_eq!(index_range(&(..)), Some((0, None)));
        assert_eq!(index_range(&(3..=u64::MAX)), Some((3, None)));
        let after_max = (Bound::Excluded(u64::MAX), Bound::Unbounded);
        assert_eq!(index_range(&after_max), None);
    }
}
