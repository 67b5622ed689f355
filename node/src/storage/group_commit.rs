//! Group commit: one flush acknowledges every write that came before it.
//!
//! Writers apply their change to sled, then ask the flusher task to make it
//! durable and wait. The flusher takes every request queued at that moment,
//! runs one `flush`, and answers them all. A writer that arrives while a
//! flush is running waits for the next one, since its bytes may have missed
//! the current one. Under load, a flush therefore covers many writes, and
//! the cost of an fsync is shared.
//!
//! One flusher serves every shard of a node: a batch flushes each shard
//! that has a waiter in it, in parallel, and answers everyone once all are
//! done. Per-shard flushers would split a burst of writes into as many
//! small batches as there are shards; one batch per moment keeps the
//! fsyncs of a burst together.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{mpsc, oneshot};

use super::StorageError;
use crate::failpoint;

/// Writers waiting for a flush; past this, new writers wait for a slot
/// (backpressure rather than unbounded memory).
const QUEUE_BOUND: usize = 4096;

/// A writer waiting for a flush. It carries a handle to the database so
/// that the flusher task holds none between flushes: dropping the last
/// [`super::Storage`] then closes sled at once.
struct Waiter {
    /// Which shard `db` is, so a batch flushes each shard once.
    shard: usize,
    db: sled::Db,
    done: oneshot::Sender<Result<(), String>>,
}

/// Handle to the flusher task; the task ends when the last clone is
/// dropped.
#[derive(Clone)]
pub struct GroupCommit {
    tx: mpsc::Sender<Waiter>,
    flushes: Arc<AtomicU64>,
}

impl GroupCommit {
    /// Starts the flusher task on `runtime`.
    pub fn start(runtime: &tokio::runtime::Handle) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_BOUND);
        let flushes = Arc::new(AtomicU64::new(0));
        runtime.spawn(run(rx, flushes.clone()));
        Self { tx, flushes }
    }

    /// Waits until every write applied to `db` (shard number `shard`)
    /// before this call is on disk.
    pub async fn wait(&self, shard: usize, db: &sled::Db) -> Result<(), StorageError> {
        let (done, done_rx) = oneshot::channel();
        let waiter = Waiter {
            shard,
            db: db.clone(),
            done,
        };
        self.tx
            .send(waiter)
            .await
            .map_err(|_| StorageError::Closed)?;
        match done_rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StorageError::Flush(e)),
            Err(_) => Err(StorageError::Closed),
        }
    }

    /// Flushes run so far.
    pub fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }
}

async fn run(mut rx: mpsc::Receiver<Waiter>, flushes: Arc<AtomicU64>) {
    let mut batch = Vec::new();
    let mut dbs: Vec<(usize, sled::Db)> = Vec::new();
    while let Some(first) = rx.recv().await {
        dbs.push((first.shard, first.db));
        batch.push(first.done);
        while let Ok(next) = rx.try_recv() {
            if !dbs.iter().any(|(shard, _)| *shard == next.shard) {
                dbs.push((next.shard, next.db));
            }
            batch.push(next.done);
        }
        // Only the senders are kept past the flush: every database handle
        // is gone by the time a waiter is answered, so a caller may close
        // and reopen.
        let running: Vec<_> = dbs
            .drain(..)
            .map(|(shard, db)| {
                let injected = failpoint::fires_at(failpoint::GROUP_COMMIT_FLUSH, shard as u64);
                tokio::task::spawn_blocking(move || {
                    if injected {
                        return Err(format!(
                            "failpoint {} fired for shard {shard}",
                            failpoint::GROUP_COMMIT_FLUSH
                        ));
                    }
                    db.flush().map(drop).map_err(|e| e.to_string())
                })
            })
            .collect();
        let mut result = Ok(());
        for flush in running {
            let outcome = match flush.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(format!("flush task failed: {e}")),
            };
            if result.is_ok() {
                result = outcome;
            }
        }
        flushes.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = &result {
            tracing::error!(error = %e, waiters = batch.len(), "group flush failed");
        }
        for done in batch.drain(..) {
            // A writer that gave up (its request timed out) is not an error.
            let _ = done.send(result.clone());
        }
    }
}
