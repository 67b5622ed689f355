//! Partition groups ("shards"), each its own sled instance, opened when
//! first touched; this file opens storage and finds, opens and warms up
//! its shards (the record operations on them are in `engine.rs`).
//!
//! sled 0.34's open grows with the pages it holds (it rebuilds its page
//! table and reads every segment's header), so a single instance makes a
//! restart as slow as the node is big. Split into shards, a restarted node
//! opens only the shard its first request needs and serves from it; the
//! rest open on their own first touch or in the background
//! ([`Storage::warm_up`]). Partition `p` lives in shard `p % shards`, the
//! count being fixed when the directory is created (`LAYOUT`). Hints live
//! in an instance of their own, small and bounded, opened eagerly.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Instant;

use super::engine::{Storage, storage_key, store_if_newer};
use super::group_commit::GroupCommit;
use super::journal::{self, Entry};
use super::{Durability, StorageError, instance, record};

/// How to open storage.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// Directory holding the shards.
    pub path: PathBuf,
    /// When an acknowledged write is on disk.
    pub durability: Durability,
    /// sled's background flush interval. With `periodic` durability this is
    /// the window of acknowledged writes a crash can lose.
    pub flush_every_ms: u64,
    /// Page cache in bytes, shared out evenly over the shards.
    pub cache_bytes: u64,
    /// Shards of a new directory. An existing directory keeps the count
    /// it was created with.
    pub shards: u32,
    /// Bytes after which the journal's segment is closed and a checkpoint
    /// runs ([`journal::SEGMENT_BYTES`]; tests make it small so that
    /// checkpoints happen often).
    pub journal_segment_bytes: u64,
}

impl StorageConfig {
    /// Defaults for a data directory.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            durability: Durability::default(),
            flush_every_ms: 500,
            cache_bytes: 256 * 1024 * 1024,
            shards: 16,
            journal_segment_bytes: journal::SEGMENT_BYTES,
        }
    }
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("path", &self.inner.root)
            .field("shards", &self.shards())
            .field("shards_open", &self.shards_open())
            .finish()
    }
}

/// What a [`Storage`] holds: its shards and what opening one needs.
pub(super) struct Inner {
    root: PathBuf,
    durability: Durability,
    flush_every_ms: u64,
    cache_per_shard: u64,
    /// The journal's writer, which every shard shares (`per_write` only).
    pub(super) commit: Option<GroupCommit>,
    /// Records a crash left in the journal, by shard, applied when the
    /// shard opens (then emptied).
    pending: Mutex<Vec<Vec<Entry>>>,
    /// Held by a checkpoint, so two never trim at once.
    checkpointing: tokio::sync::Mutex<()>,
    slots: Box<[Slot]>,
    hints: Shard,
    /// Held while a shard opens: one open at a time. An open writes a
    /// snapshot and syncs it, and a dozen at once right after a restart
    /// contend with the requests' own flushes for the disk. Holding it is
    /// also what keeps two threads from opening one shard (sled locks its
    /// directory: a second open would fail).
    opening: Mutex<()>,
    /// Nanoseconds spent opening data shards, summed.
    open_nanos: AtomicU64,
    /// Records found damaged (a crc or header that does not check) by a
    /// read, a write or a scan.
    pub(super) damaged: AtomicU64,
}

/// What the journal has done so far ([`Storage::journal_stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalStats {
    /// Group commits written, one sync each.
    pub syncs: u64,
    /// Record bytes appended.
    pub bytes: u64,
    /// Closed segments not yet trimmed.
    pub closed_segments: u64,
}

/// A shard that may not be open yet.
#[derive(Default)]
struct Slot {
    shard: OnceLock<Shard>,
    /// A background open is under way ([`Storage::is_open_else_start`]).
    requested: AtomicBool,
}

/// The shard holding `partition` among `shards`.
fn shard_of(partition: u32, shards: usize) -> usize {
    partition as usize % shards.max(1)
}

/// sled's log segment size in a data shard. sled's open reads the header
/// of every segment, which on a cold page cache is one random read each:
/// with sled's default (512 KiB) a 256 MiB shard has 512 of them and its
/// cold open took ~45 ms, with 2 MiB ~27 ms (BENCHMARKS.md, "Restart").
/// Larger segments cost every open more up front (8 MiB: ~20 ms more),
/// which a small shard feels.
const DATA_SEGMENT_BYTES: usize = 2 * 1024 * 1024;
/// The hint instance is small and opened at every start: sled's default.
const HINTS_SEGMENT_BYTES: usize = 512 * 1024;

/// The id of the hint instance among the shards (for the group commit).
const HINTS_SHARD: usize = usize::MAX;

/// One sled instance.
pub(super) struct Shard {
    /// Its number (the hint instance is [`HINTS_SHARD`]).
    id: usize,
    db: sled::Db,
    tree: sled::Tree,
    commit: Option<GroupCommit>,
}

impl Shard {
    /// The instance's one tree of records.
    pub(super) fn tree(&self) -> &sled::Tree {
        &self.tree
    }

    /// The sled database (hints use its id generator).
    pub(super) fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Waits until every write applied to this shard before the call is
    /// on disk, if the durability asks for it.
    pub(super) async fn commit(&self) -> Result<(), StorageError> {
        match &self.commit {
            Some(commit) => commit.wait(self.id, &self.db).await,
            None => Ok(()),
        }
    }
}

impl Storage {
    /// Opens (or creates) storage: reads the layout and opens the hint
    /// instance; data shards open when first touched. Opening does not
    /// scan the data. With `per_write` durability this must run inside a
    /// tokio runtime (a blocking thread of one is fine), which hosts the
    /// group-commit tasks.
    pub fn open(config: &StorageConfig) -> Result<Self, StorageError> {
        let shards = super::layout::read_or_create(&config.path, config.shards)?;
        // Read even with `periodic`: records a `per_write` run left must
        // still reach their shards.
        let journal_dir = journal::dir(&config.path);
        let mut recovered = journal::recover(&journal_dir, shards as usize)?;
        let left: usize = recovered.pending.iter().map(Vec::len).sum();
        if left > 0 {
            tracing::info!(
                records = left,
                segments = recovered.closed.len(),
                "journal holds records not yet flushed to their shards: each shard applies its own when it opens"
            );
        }
        let (commit, runtime) = match config.durability {
            Durability::PerWrite => {
                let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
                    StorageError::Layout("per_write durability needs a tokio runtime".into())
                })?;
                let commit = GroupCommit::start(
                    journal_dir,
                    recovered.next_seq,
                    std::mem::take(&mut recovered.closed),
                    config.journal_segment_bytes.max(1),
                )?;
                (Some(commit), Some(runtime))
            }
            Durability::Periodic => (None, None),
        };
        let orphans = match &commit {
            Some(_) => Vec::new(),
            None => recovered.closed,
        };
        let cache_per_shard = (config.cache_bytes / u64::from(shards + 1)).max(1024 * 1024);
        let hints = open_shard(
            &config.path.join("hints"),
            "hints",
            cache_per_shard,
            Some(config.flush_every_ms),
            HINTS_SHARD,
            HINTS_SEGMENT_BYTES,
            commit.clone(),
        )?;
        let slots = (0..shards).map(|_| Slot::default()).collect();
        let storage = Self {
            inner: Arc::new(Inner {
                root: config.path.clone(),
                durability: config.durability,
                flush_every_ms: config.flush_every_ms,
                cache_per_shard,
                commit,
                pending: Mutex::new(recovered.pending),
                checkpointing: tokio::sync::Mutex::new(()),
                slots,
                hints,
                opening: Mutex::new(()),
                open_nanos: AtomicU64::new(0),
                damaged: AtomicU64::new(0),
            }),
        };
        match (runtime, &storage.inner.commit) {
            (Some(runtime), Some(commit)) => {
                runtime.spawn(checkpoints(
                    Arc::downgrade(&storage.inner),
                    commit.checkpoint_signal(),
                ));
            }
            // Nothing will write or trim the journal: what an earlier
            // `per_write` run left in it goes to its shards now.
            _ if !orphans.is_empty() => storage.drain_journal(&orphans)?,
            _ => {}
        }
        Ok(storage)
    }

    /// The durability this storage was opened with.
    pub fn durability(&self) -> Durability {
        self.inner.durability
    }

    /// Shards in this directory.
    pub fn shards(&self) -> u32 {
        self.inner.slots.len() as u32
    }

    /// Bytes the data directory takes on disk, every shard (open or not),
    /// the hints and whatever else lives there; files that vanish while
    /// counted are skipped. A few dozen `stat`s: cheap enough for every
    /// heartbeat.
    pub fn bytes_on_disk(&self) -> u64 {
        fn walk(dir: &std::path::Path, depth: u8) -> u64 {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return 0;
            };
            entries
                .flatten()
                .map(|entry| match entry.metadata() {
                    Ok(m) if m.is_dir() && depth > 0 => walk(&entry.path(), depth - 1),
                    Ok(m) if m.is_file() => m.len(),
                    _ => 0,
                })
                .sum()
        }
        // sled keeps a directory per instance with one level below it
        // (blobs/); shards are one level below the root.
        walk(&self.inner.root, 3)
    }

    /// Shards open so far.
    pub fn shards_open(&self) -> u32 {
        self.open_shards().count() as u32
    }

    /// Damaged records found so far (each time one is met: a record
    /// read twice before its repair counts twice).
    pub fn damaged_records(&self) -> u64 {
        self.inner.damaged.load(Ordering::Relaxed)
    }

    /// Counts a damaged record met at `partition`/`key` and logs it.
    pub(super) fn note_damaged(
        &self,
        partition: u32,
        key: &[u8],
        error: &super::record::RecordError,
    ) {
        self.inner.damaged.fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            partition,
            key = %super::engine::printable(key),
            %error,
            "damaged record: treated as absent, so a replica's copy replaces it (read repair, anti-entropy)"
        );
    }

    /// Seconds spent opening data shards so far, summed.
    pub fn shard_open_seconds(&self) -> f64 {
        self.inner.open_nanos.load(Ordering::Relaxed) as f64 / 1e9
    }

    /// The shard holding `partition`, opened now if it is not yet. This
    /// blocks for the open; async callers go through
    /// [`Storage::open_partition`] first so that the open runs off the
    /// async threads.
    pub(super) fn shard(&self, partition: u32) -> Result<&Shard, StorageError> {
        self.shard_at(partition).map(|(_, shard)| shard)
    }

    /// [`Storage::shard`], with the shard's number.
    pub(super) fn shard_at(&self, partition: u32) -> Result<(usize, &Shard), StorageError> {
        let Some((index, slot)) = self.slot(partition) else {
            return Err(StorageError::Layout("storage has no shards".into()));
        };
        if let Some(shard) = slot.shard.get() {
            return Ok((index, shard));
        }
        let _opening = self.inner.opening.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(shard) = slot.shard.get() {
            return Ok((index, shard));
        }
        let started = Instant::now();
        // With a journal, a shard's writes are durable before sled writes
        // them: sled's own timed flush would only add fsyncs (16 shards, 2
        // each a second) beside the journal's, so the checkpoints flush it.
        let flush_every_ms = match self.inner.commit {
            Some(_) => None,
            None => Some(self.inner.flush_every_ms),
        };
        let shard = open_shard(
            &self.inner.root.join(format!("shard-{index:03}")),
            "data",
            self.inner.cache_per_shard,
            flush_every_ms,
            index,
            DATA_SEGMENT_BYTES,
            None,
        )?;
        self.replay(index, &shard)?;
        let took = started.elapsed();
        self.inner
            .open_nanos
            .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
        tracing::debug!(
            shard = index,
            ms = took.as_secs_f64() * 1000.0,
            "storage shard open"
        );
        Ok((index, slot.shard.get_or_init(|| shard)))
    }

    /// Applies the records the journal holds for shard `index` to it,
    /// before anyone else sees it: those a crash kept from its own flush.
    /// Each is applied if newer, so one already there changes nothing.
    fn replay(&self, index: usize, shard: &Shard) -> Result<(), StorageError> {
        let mut pending = self.inner.pending.lock().unwrap_or_else(|p| p.into_inner());
        let Some(entries) = pending.get_mut(index) else {
            return Ok(());
        };
        if entries.is_empty() {
            return Ok(());
        }
        let mut written = 0usize;
        for entry in entries.iter() {
            let version = match record::decode_verified_header(&entry.record) {
                Ok((version, _)) => version,
                Err(error) => {
                    self.note_damaged(entry.partition, &entry.key, &error);
                    continue;
                }
            };
            let key = storage_key(entry.partition, &entry.key);
            let stored = store_if_newer(shard.tree(), &key, version, &entry.record, |error| {
                self.note_damaged(entry.partition, &entry.key, error)
            })?;
            written += usize::from(stored.is_written());
        }
        tracing::info!(
            shard = index,
            records = entries.len(),
            newer = written,
            "journal records applied to the shard"
        );
        *entries = Vec::new();
        Ok(())
    }

    /// Makes the closed journal segments' records durable in their shards
    /// (a flush of each shard they name) and deletes the segments, oldest
    /// first, stopping at one that names a shard not open yet (its records
    /// wait there until the shard opens). Returns the segments deleted.
    pub(super) async fn checkpoint(&self) -> Result<usize, StorageError> {
        let Some(commit) = self.inner.commit.clone() else {
            return Ok(0);
        };
        let _one = self.inner.checkpointing.lock().await;
        let closed = commit.closed();
        if closed.is_empty() {
            return Ok(0);
        }
        let storage = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut flushed = BTreeSet::new();
            let mut through = None;
            'segments: for segment in &closed {
                for &index in &segment.shards {
                    if flushed.contains(&index) {
                        continue;
                    }
                    let Some(shard) = storage.inner.slots.get(index).and_then(|s| s.shard.get())
                    else {
                        break 'segments;
                    };
                    shard.db().flush()?;
                    flushed.insert(index);
                }
                through = Some(segment.seq);
            }
            match through {
                Some(seq) => commit.trim_through(seq),
                None => Ok(0),
            }
        })
        .await
        .map_err(|e| StorageError::Flush(format!("checkpoint task failed: {e}")))?
    }

    /// Opens every shard the `segments` name (each applies its records),
    /// flushes it and deletes the segments: with `periodic` durability
    /// nothing else would.
    fn drain_journal(&self, segments: &[journal::Closed]) -> Result<(), StorageError> {
        let shards: BTreeSet<usize> = segments.iter().flat_map(|s| s.shards.clone()).collect();
        for index in shards {
            // Partition `index` lives in shard `index` (index < shards).
            self.shard(index as u32)?.db().flush()?;
        }
        let dir = journal::dir(&self.inner.root);
        for segment in segments {
            journal::remove_segment(&dir, segment.seq)?;
        }
        Ok(())
    }

    /// Closes the journal's current segment and checkpoints (at shutdown:
    /// a clean stop leaves the journal empty).
    pub(super) async fn checkpoint_all(&self) -> Result<usize, StorageError> {
        if let Some(commit) = &self.inner.commit {
            commit.rotate().await?;
        }
        self.checkpoint().await
    }

    fn slot(&self, partition: u32) -> Option<(usize, &Slot)> {
        let index = shard_of(partition, self.inner.slots.len());
        self.inner.slots.get(index).map(|slot| (index, slot))
    }

    /// Makes sure the shard of `partition` is open, opening it on a
    /// blocking thread if not: the request path calls this before touching
    /// a partition, so that a first touch does not stall an async worker.
    pub async fn open_partition(&self, partition: u32) -> Result<(), StorageError> {
        if self.is_open(partition) {
            return Ok(());
        }
        let storage = self.clone();
        tokio::task::spawn_blocking(move || storage.shard(partition).map(drop))
            .await
            .map_err(|e| StorageError::Layout(format!("shard open task failed: {e}")))?
    }

    /// Whether the shard holding `partition` is open.
    pub fn is_open(&self, partition: u32) -> bool {
        self.slot(partition)
            .is_some_and(|(_, slot)| slot.shard.get().is_some())
    }

    /// Whether the shard of `partition` is open; if it is not, starts
    /// opening it without waiting (once, however often it is asked), so
    /// that a caller that goes elsewhere meanwhile still gets it ready.
    pub fn is_open_else_start(&self, partition: u32) -> bool {
        let Some((_, slot)) = self.slot(partition) else {
            return false;
        };
        if slot.shard.get().is_some() {
            return true;
        }
        if slot.requested.swap(true, Ordering::AcqRel) {
            return false;
        }
        let storage = self.clone();
        tokio::spawn(async move {
            if let Err(e) = storage.open_partition(partition).await {
                tracing::warn!(partition, error = %e, "opening a storage shard failed");
                // The next request that finds it closed asks again.
                if let Some((_, slot)) = storage.slot(partition) {
                    slot.requested.store(false, Ordering::Release);
                }
            }
        });
        false
    }

    /// Opens every shard not yet open, one at a time on a blocking thread
    /// (one at a time so that warming competes little with requests for
    /// the disk); returns how many it opened. Run in the background after
    /// the node is ready.
    pub async fn warm_up(&self) -> Result<u32, StorageError> {
        let mut opened = 0;
        // Partition i < shards lives in shard i.
        for partition in 0..self.shards() {
            if !self.is_open(partition) {
                self.open_partition(partition).await?;
                opened += 1;
            }
        }
        // Segments a crash left can go now that every shard has its records.
        self.checkpoint().await?;
        Ok(opened)
    }

    /// The data shards open so far.
    pub(super) fn open_shards(&self) -> impl Iterator<Item = &Shard> {
        self.inner.slots.iter().filter_map(|slot| slot.shard.get())
    }

    /// The hint instance.
    pub(super) fn hints_shard(&self) -> &Shard {
        &self.inner.hints
    }

    /// The journal's counters (`None` with `periodic`: no journal).
    pub fn journal_stats(&self) -> Option<JournalStats> {
        self.inner.commit.as_ref().map(|commit| JournalStats {
            syncs: commit.flushes(),
            bytes: commit.journal_bytes(),
            closed_segments: commit.closed().len() as u64,
        })
    }

    /// How many group flushes have run (0 with `periodic`); one covers
    /// every shard written in its batch.
    pub fn flushes(&self) -> u64 {
        self.inner.commit.as_ref().map_or(0, GroupCommit::flushes)
    }
}

/// Runs a checkpoint each time the journal's writer closes a full
/// segment, for as long as the storage exists.
async fn checkpoints(storage: Weak<Inner>, signal: super::group_commit::CheckpointSignal) {
    loop {
        signal.due().await;
        let Some(inner) = storage.upgrade() else {
            return;
        };
        let storage = Storage { inner };
        match storage.checkpoint().await {
            Ok(trimmed) => tracing::debug!(trimmed, "journal checkpoint"),
            Err(e) => {
                tracing::warn!(error = %e, "journal checkpoint failed: its segments stay, and the next one tries again")
            }
        }
    }
}

fn open_shard(
    path: &Path,
    tree: &str,
    cache_bytes: u64,
    flush_every_ms: Option<u64>,
    id: usize,
    segment_bytes: usize,
    commit: Option<GroupCommit>,
) -> Result<Shard, StorageError> {
    let settings = instance::Settings {
        cache_bytes,
        flush_every_ms,
        segment_bytes,
    };
    let db = instance::open(path, &settings)?;
    let tree = db.open_tree(tree)?;
    Ok(Shard {
        db,
        tree,
        id,
        commit,
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::storage::Version;

    fn v(hlc: u64) -> Version {
        Version { hlc, writer: 1 }
    }

    /// Storage with `shards` shards in a new directory (an existing one
    /// keeps its count).
    pub(in crate::storage) fn open_sharded(dir: &tempfile::TempDir, shards: u32) -> Storage {
        let mut config = StorageConfig::new(dir.path());
        config.shards = shards;
        Storage::open(&config).unwrap()
    }

    #[tokio::test]
    async fn shards_open_on_first_touch_and_in_the_warm_up() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = open_sharded(&dir, 4);
            assert_eq!((s.shards(), s.shards_open()), (4, 0), "open reads no shard");
            s.apply(1, b"a", v(1), Some(b"one")).await.unwrap();
            assert_eq!(s.shards_open(), 1);
            s.apply(5, b"b", v(1), Some(b"five")).await.unwrap();
            assert_eq!(s.shards_open(), 1, "partitions 1 and 5 share shard 1 of 4");
            assert_eq!(s.get(2, b"nothing").unwrap(), None);
            assert_eq!(s.shards_open(), 2, "a sync read opens its shard too");
            assert_eq!(s.warm_up().await.unwrap(), 2, "the two others");
            assert_eq!(s.shards_open(), 4);
            assert_eq!(s.warm_up().await.unwrap(), 0);
        }
        let s = open_sharded(&dir, 4);
        assert_eq!(s.shards_open(), 0);
        let five = s.read(5, b"b").await.unwrap().unwrap();
        assert_eq!(five.value.as_deref(), Some(&b"five"[..]));
        assert_eq!(s.shards_open(), 1, "only the shard read from is open");
        assert!(s.shard_open_seconds() > 0.0);
    }

    fn per_write(dir: &tempfile::TempDir, shards: u32, durability: Durability) -> Storage {
        let mut config = StorageConfig::new(dir.path());
        config.shards = shards;
        config.durability = durability;
        // Far beyond the test: only the journal and explicit flushes write.
        config.flush_every_ms = 3_600_000;
        Storage::open(&config).unwrap()
    }

    /// Removes every shard's sled instance: what a crash leaves of the
    /// writes the journal acknowledged and the shards never flushed, at
    /// its worst.
    fn lose_the_shards(dir: &tempfile::TempDir) {
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with("shard-") {
                std::fs::remove_dir_all(&path).unwrap();
            }
        }
    }

    fn segments(dir: &tempfile::TempDir) -> usize {
        std::fs::read_dir(journal::dir(dir.path())).unwrap().count()
    }

    #[tokio::test]
    async fn acknowledged_writes_come_back_from_the_journal_when_their_shard_opens() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = per_write(&dir, 4, Durability::PerWrite);
            for p in 0..8u32 {
                s.apply(p, b"k", v(1), Some(&p.to_be_bytes()))
                    .await
                    .unwrap();
            }
            s.apply(3, b"k", v(2), None).await.unwrap();
            // A retry of an older version is stale and changes nothing.
            s.apply(5, b"k", v(1), Some(b"other")).await.unwrap();
        }
        lose_the_shards(&dir);
        let s = per_write(&dir, 4, Durability::PerWrite);
        assert_eq!(
            s.shards_open(),
            0,
            "the journal is read without opening shards"
        );
        for p in 0..8u32 {
            let r = s.read(p, b"k").await.unwrap().expect("replayed");
            let want = (p != 3).then(|| p.to_be_bytes().to_vec());
            assert_eq!(r.value, want, "partition {p}");
        }
        assert_eq!(s.read(3, b"k").await.unwrap().unwrap().version, v(2));
    }

    #[tokio::test]
    async fn one_journal_sync_serves_writes_to_many_shards() {
        let dir = tempfile::tempdir().unwrap();
        let s = per_write(&dir, 16, Durability::PerWrite);
        let tasks: Vec<_> = (0..64u32)
            .map(|p| {
                let s = s.clone();
                tokio::spawn(async move { s.apply(p, b"k", v(1), Some(b"x")).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(s.shards_open(), 16);
        assert!(
            s.flushes() < 64,
            "64 writes over 16 shards took {} syncs",
            s.flushes()
        );
    }

    #[tokio::test]
    async fn a_segment_is_trimmed_once_every_shard_it_names_is_flushed() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = per_write(&dir, 4, Durability::PerWrite);
            s.apply(1, b"a", v(1), Some(b"one")).await.unwrap();
            s.apply(2, b"b", v(1), Some(b"two")).await.unwrap();
        }
        assert_eq!(segments(&dir), 1);
        lose_the_shards(&dir);
        let s = per_write(&dir, 4, Durability::PerWrite);
        s.read(1, b"a").await.unwrap().expect("replayed");
        assert_eq!(s.checkpoint_all().await.unwrap(), 0, "shard 2 is not open");
        assert_eq!(segments(&dir), 1, "its records wait for it");
        s.warm_up().await.unwrap();
        assert_eq!(segments(&dir), 0, "every shard has its records, flushed");
        s.apply(3, b"c", v(1), Some(b"three")).await.unwrap();
        s.flush().await.unwrap();
        assert_eq!(segments(&dir), 0, "a clean stop leaves the journal empty");
        drop(s);
        lose_the_shards(&dir);
        let s = per_write(&dir, 4, Durability::PerWrite);
        assert_eq!(
            s.read(3, b"c").await.unwrap(),
            None,
            "trimmed: not replayed"
        );
    }

    #[tokio::test]
    async fn periodic_durability_takes_in_what_a_per_write_run_left() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = per_write(&dir, 4, Durability::PerWrite);
            s.apply(2, b"k", v(1), Some(b"kept")).await.unwrap();
        }
        lose_the_shards(&dir);
        let s = per_write(&dir, 4, Durability::Periodic);
        assert_eq!(segments(&dir), 0);
        let r = s.read(2, b"k").await.unwrap().expect("replayed");
        assert_eq!(r.value.as_deref(), Some(&b"kept"[..]));
    }

    #[tokio::test]
    async fn a_directory_keeps_the_shard_count_it_was_created_with() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = open_sharded(&dir, 3);
            for p in 0..12 {
                s.apply(p, b"k", v(1), Some(&p.to_be_bytes()))
                    .await
                    .unwrap();
            }
        }
        let s = open_sharded(&dir, 16);
        assert_eq!(s.shards(), 3);
        for p in 0..12u32 {
            let r = s.read(p, b"k").await.unwrap().unwrap();
            assert_eq!(
                r.value.as_deref(),
                Some(&p.to_be_bytes()[..]),
                "partition {p}"
            );
        }
    }

    #[tokio::test]
    async fn a_directory_of_the_old_single_instance_layout_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("conf"), b"segment_size: 524288").unwrap();
        let Err(err) = Storage::open(&StorageConfig::new(dir.path())) else {
            panic!("a directory without LAYOUT but with files opened");
        };
        assert!(matches!(err, StorageError::Layout(_)), "{err}");
        assert!(err.to_string().contains("older levee"), "{err}");
    }
}
