//! Group commit: one journal sync acknowledges every write that came
//! before it, whatever shards they went to.
//!
//! Writers apply their change to their shard's sled in memory, then hand
//! the records' journal frames (`journal.rs`) to the writer thread and
//! wait. The writer takes every request queued at that moment, appends all
//! their frames to the journal's current segment, syncs it once, and
//! answers them all. A writer that arrives while a sync is running waits
//! for the next one. Under load a sync therefore covers many writes, and
//! since every shard shares the journal, a burst spread over 16 shards
//! costs one sync, not 16 (BENCHMARKS.md, "Storage").
//!
//! The hint instance is not journaled (its records are deleted as they are
//! delivered, which a journal replay would undo): a hint waits for a flush
//! of its sled instance, run by a second thread, the flusher, in batches of
//! its own. It used to run inside the journal's batch, beside the sync, so
//! every write on the node waited for the slower of the two: while a
//! replica was down (a hint for each write it missed) each batch waited for
//! a whole sled flush of the hints (`cargo bench --bench storage`,
//! `put_beside_hints/c64`: 5–7k puts/s then, 25–27k since, 43–51k with no
//! hints at all; BENCHMARKS.md, "Node loss").
//!
//! The writer and the flusher are OS threads: their work is blocking file
//! I/O, one batch at a time, and threads of their own keep it off the async
//! workers without handing each batch to the blocking pool.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, mpsc, oneshot};

use super::StorageError;
use super::journal::{self, Closed};
use crate::failpoint;

/// Requests waiting for the writer; past this, new writers wait for a slot
/// (backpressure rather than unbounded memory).
const QUEUE_BOUND: usize = 4096;

type Done = oneshot::Sender<Result<(), String>>;

enum Job {
    /// Journal frames of records already applied to their shards.
    Append {
        frames: Vec<u8>,
        shards: Vec<usize>,
        done: Done,
    },
    /// Close the current segment: every frame appended before is then in
    /// a closed one (a checkpoint's first step).
    Rotate { done: Done },
}

/// What the writer thread and the storage share.
struct Shared {
    /// Batches written so far.
    flushes: AtomicU64,
    /// Journal bytes written so far.
    bytes: AtomicU64,
    /// Segments no longer written to and not yet trimmed, oldest first.
    closed: Mutex<Vec<Closed>>,
    /// Woken when a segment fills up (a checkpoint is due), and when the
    /// writer ends.
    checkpoint: Notify,
}

/// A sled instance to flush whole (the hints). It carries the handle so
/// that the flusher holds none between batches: dropping the last
/// [`super::Storage`] then closes sled at once.
struct Flush {
    shard: usize,
    db: sled::Db,
    done: Done,
}

/// Handle to the writer and flusher threads; they end when the last clone
/// is dropped.
#[derive(Clone)]
pub struct GroupCommit {
    tx: mpsc::Sender<Job>,
    flush_tx: mpsc::Sender<Flush>,
    shared: Arc<Shared>,
    dir: PathBuf,
}

impl GroupCommit {
    /// Starts the writer thread of the journal in `dir`, whose next
    /// segment is `next_seq` and whose segments `closed` were left by an
    /// earlier run.
    pub(super) fn start(
        dir: PathBuf,
        next_seq: u64,
        closed: Vec<Closed>,
        segment_bytes: u64,
    ) -> Result<Self, StorageError> {
        let (tx, rx) = mpsc::channel(QUEUE_BOUND);
        let shared = Arc::new(Shared {
            flushes: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            closed: Mutex::new(closed),
            checkpoint: Notify::new(),
        });
        let writer = Writer {
            dir: dir.clone(),
            file: None,
            seq: next_seq,
            written: 0,
            segment_bytes,
            shards: BTreeSet::new(),
            shared: shared.clone(),
        };
        let (flush_tx, flush_rx) = mpsc::channel(QUEUE_BOUND);
        std::thread::Builder::new()
            .name("levee-hints-flush".into())
            .spawn(move || flush_batches(flush_rx))
            .map_err(|e| StorageError::Flush(format!("cannot start the hints flusher: {e}")))?;
        std::thread::Builder::new()
            .name("levee-journal".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| StorageError::Flush(format!("cannot start the journal writer: {e}")))?;
        Ok(Self {
            tx,
            flush_tx,
            shared,
            dir,
        })
    }

    /// Appends `frames` (records of `shards`, already applied to them) to
    /// the journal and waits until they are on disk.
    pub(super) async fn append(
        &self,
        frames: Vec<u8>,
        shards: Vec<usize>,
    ) -> Result<(), StorageError> {
        self.call(|done| Job::Append {
            frames,
            shards,
            done,
        })
        .await
    }

    /// Waits until every write applied to `db` (shard number `shard`)
    /// before this call is on disk, by flushing it whole (on the flusher,
    /// so the journal's batches do not wait for it).
    pub(super) async fn wait(&self, shard: usize, db: &sled::Db) -> Result<(), StorageError> {
        let (done, done_rx) = oneshot::channel();
        let db = db.clone();
        self.flush_tx
            .send(Flush { shard, db, done })
            .await
            .map_err(|_| StorageError::Closed)?;
        answer(done_rx).await
    }

    /// Closes the current segment.
    pub(super) async fn rotate(&self) -> Result<(), StorageError> {
        self.call(|done| Job::Rotate { done }).await
    }

    async fn call(&self, job: impl FnOnce(Done) -> Job) -> Result<(), StorageError> {
        let (done, done_rx) = oneshot::channel();
        self.tx
            .send(job(done))
            .await
            .map_err(|_| StorageError::Closed)?;
        answer(done_rx).await
    }

    /// The closed segments not yet trimmed, oldest first.
    pub(super) fn closed(&self) -> Vec<Closed> {
        lock(&self.shared.closed).clone()
    }

    /// Deletes the closed segments up to and including `seq`, oldest first.
    pub(super) fn trim_through(&self, seq: u64) -> Result<usize, StorageError> {
        let doomed: Vec<u64> = self
            .closed()
            .iter()
            .map(|c| c.seq)
            .filter(|s| *s <= seq)
            .collect();
        for s in &doomed {
            journal::remove_segment(&self.dir, *s)?;
            lock(&self.shared.closed).retain(|c| c.seq != *s);
        }
        Ok(doomed.len())
    }

    /// A future that resolves when a checkpoint is due, holding no handle
    /// that keeps the writer alive.
    pub(super) fn checkpoint_signal(&self) -> CheckpointSignal {
        CheckpointSignal(self.shared.clone())
    }

    /// Batches written so far.
    pub fn flushes(&self) -> u64 {
        self.shared.flushes.load(Ordering::Relaxed)
    }

    /// Journal bytes written so far (frames, not counting segment magic).
    pub fn journal_bytes(&self) -> u64 {
        self.shared.bytes.load(Ordering::Relaxed)
    }
}

/// Wakes the checkpoint task; see [`GroupCommit::checkpoint_signal`].
pub(super) struct CheckpointSignal(Arc<Shared>);

impl CheckpointSignal {
    /// Waits until a segment fills up or the writer ends.
    pub async fn due(&self) {
        self.0.checkpoint.notified().await;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn answer(done: oneshot::Receiver<Result<(), String>>) -> Result<(), StorageError> {
    match done.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(StorageError::Flush(e)),
        Err(_) => Err(StorageError::Closed),
    }
}

/// Waits for the next request, then takes every one queued behind it (up
/// to the queue's bound) into `batch`; `false` once every sender is gone.
fn next_batch<T>(rx: &mut mpsc::Receiver<T>, batch: &mut Vec<T>) -> bool {
    let Some(first) = rx.blocking_recv() else {
        return false;
    };
    batch.push(first);
    while batch.len() < QUEUE_BOUND {
        match rx.try_recv() {
            Ok(next) => batch.push(next),
            Err(_) => break,
        }
    }
    true
}

/// The flusher thread: every flush asked for while the last one ran is
/// served by one flush of each instance named (a hint is inserted before
/// its flush is asked for, so a flush started after the ask covers it).
fn flush_batches(mut rx: mpsc::Receiver<Flush>) {
    let mut jobs: Vec<Flush> = Vec::new();
    while next_batch(&mut rx, &mut jobs) {
        let mut flushed: BTreeMap<usize, Result<(), String>> = BTreeMap::new();
        for job in &jobs {
            flushed.entry(job.shard).or_insert_with(|| flush(job));
        }
        for Flush { shard, db, done } in jobs.drain(..) {
            // The handle goes before the answer (see `Flush`).
            drop(db);
            let result = flushed.get(&shard).cloned();
            let _ = done.send(result.unwrap_or_else(|| Err("not flushed".into())));
        }
    }
}

/// Flushes one job's instance (the failpoints first).
fn flush(job: &Flush) -> Result<(), String> {
    failpoint::hold(failpoint::HINTS_FLUSH);
    let result = if injected(job.shard) {
        Err(injected_message(job.shard))
    } else {
        job.db.flush().map(drop).map_err(|e| e.to_string())
    };
    if let Err(e) = &result {
        tracing::error!(error = %e, "hints flush failed");
    }
    result
}

/// The writer thread's state.
struct Writer {
    dir: PathBuf,
    /// The segment being written, created on the first append after a
    /// rotation.
    file: Option<std::fs::File>,
    /// Its sequence number.
    seq: u64,
    /// Frame bytes in it.
    written: u64,
    /// Past this, it is closed.
    segment_bytes: u64,
    /// The shards it holds records of.
    shards: BTreeSet<usize>,
    shared: Arc<Shared>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        let mut jobs = Vec::new();
        let mut frames = Vec::new();
        while next_batch(&mut rx, &mut jobs) {
            self.batch(&mut jobs, &mut frames);
        }
        // The storage is gone: its checkpoint task ends on this.
        self.shared.checkpoint.notify_one();
    }

    /// Writes and syncs one batch, then answers it.
    fn batch(&mut self, jobs: &mut Vec<Job>, frames: &mut Vec<u8>) {
        frames.clear();
        let mut appended: Vec<Done> = Vec::new();
        let mut refused: Vec<(Done, String)> = Vec::new();
        let mut rotations: Vec<Done> = Vec::new();
        for job in jobs.drain(..) {
            match job {
                Job::Append {
                    frames: more,
                    shards,
                    done,
                } => {
                    if let Some(shard) = shards.iter().find(|s| injected(**s)) {
                        refused.push((done, injected_message(*shard)));
                        continue;
                    }
                    frames.extend_from_slice(&more);
                    self.shards.extend(shards);
                    appended.push(done);
                }
                Job::Rotate { done } => rotations.push(done),
            }
        }
        let journal = if frames.is_empty() {
            Ok(())
        } else {
            self.append(frames)
        };
        self.shared.flushes.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = &journal {
            tracing::error!(error = %e, waiters = appended.len(), "journal write failed");
        }
        for done in appended {
            // A writer that gave up (its request timed out) is not an error.
            let _ = done.send(journal.clone());
        }
        for (done, e) in refused {
            tracing::error!(error = %e, "group commit failed a writer");
            let _ = done.send(Err(e));
        }
        // A failed write may have left a frame cut short: later frames go
        // to a new segment, never after it.
        let full = self.written >= self.segment_bytes;
        if full || journal.is_err() || !rotations.is_empty() {
            self.rotate();
        }
        for done in rotations {
            let _ = done.send(Ok(()));
        }
        if full {
            self.shared.checkpoint.notify_one();
        }
    }

    /// Appends `frames` to the current segment and syncs it.
    fn append(&mut self, frames: &[u8]) -> Result<(), String> {
        let file = match &mut self.file {
            Some(file) => file,
            None => {
                let file = journal::create_segment(&self.dir, self.seq).map_err(|e| {
                    format!(
                        "cannot create {}: {e}",
                        journal::segment_path(&self.dir, self.seq).display()
                    )
                })?;
                self.file.insert(file)
            }
        };
        file.write_all(frames)
            .and_then(|()| file.sync_data())
            .map_err(|e| format!("journal segment {}: {e}", self.seq))?;
        self.written += frames.len() as u64;
        self.shared
            .bytes
            .fetch_add(frames.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Closes the current segment, if one was begun.
    fn rotate(&mut self) {
        if self.file.is_none() && self.shards.is_empty() {
            return;
        }
        let closed = Closed {
            seq: self.seq,
            shards: std::mem::take(&mut self.shards),
        };
        lock(&self.shared.closed).push(closed);
        self.file = None;
        self.written = 0;
        self.seq = self.seq.saturating_add(1);
    }
}

fn injected(shard: usize) -> bool {
    failpoint::fires_at(failpoint::GROUP_COMMIT_FLUSH, shard as u64)
}

fn injected_message(shard: usize) -> String {
    format!(
        "failpoint {} fired for shard {shard}",
        failpoint::GROUP_COMMIT_FLUSH
    )
}
