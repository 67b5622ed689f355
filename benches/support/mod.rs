//! Workload shared by the storage and e2e benches, so that the in-process
//! baseline printed by e2e is the very workload the storage bench measures.

use std::future::Future;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::BenchmarkGroup;
use criterion::measurement::WallTime;
use levee_node::config::Config;
use levee_node::partition::partition_of;
use levee_node::storage::{Durability, Storage, Version};
use tempfile::TempDir;
use tokio::runtime::Runtime;
use tokio::task::JoinSet;

/// Size of every value written.
pub const VALUE_BYTES: usize = 1024;

/// Keys the workload cycles through: enough that concurrent writers rarely
/// meet on one key, few enough (4 MiB of values) to stay in sled's cache,
/// so gets measure the engine rather than the disk.
pub const KEYS: u64 = 4096;

/// Concurrency of the "many requests at once" figures.
pub const CONCURRENCY: u64 = 64;

/// A multi-threaded runtime like the node's own (one worker per core).
pub fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("cannot build a tokio runtime")
}

/// The `i`-th key of the workload, wrapping at [`KEYS`].
pub fn key(i: u64) -> Vec<u8> {
    format!("bench-key-{:06}", i % KEYS).into_bytes()
}

/// A 1 KiB value; not all zeros, so nothing along the way can shortcut it.
pub fn value() -> Vec<u8> {
    (0..VALUE_BYTES).map(|i| (i % 251) as u8).collect()
}

/// Storage opened directly, with no protocol in front of it.
pub struct Direct {
    /// The storage (a benchmark may open the node's hints on it).
    pub storage: Storage,
    /// (partition, key) computed once, as the node would per request; the
    /// hash is cheap next to sled, and precomputing keeps it out of the
    /// figure either way.
    keys: Vec<(u32, Vec<u8>)>,
    value: Vec<u8>,
    /// Source of ever-newer versions, so that every put really writes.
    seq: AtomicU64,
    _dir: TempDir,
}

/// The storage shards of every benchmarked node: the default, or
/// `LEVEE_BENCH_STORAGE_SHARDS` to compare what the count costs writes.
pub fn storage_shards() -> u32 {
    std::env::var("LEVEE_BENCH_STORAGE_SHARDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(Config::default().storage_shards)
}

impl Direct {
    /// Opens storage in a fresh temporary directory with the node's
    /// default settings (cache, flush interval, shards; the shard count
    /// can be set with `LEVEE_BENCH_STORAGE_SHARDS` to compare its cost)
    /// and the given durability.
    pub fn open(rt: &Runtime, durability: Durability) -> Arc<Self> {
        let dir = tempfile::tempdir().expect("cannot create a temporary directory");
        let defaults = Config::default();
        let config = Config {
            data_dir: dir.path().to_owned(),
            durability,
            storage_shards: storage_shards(),
            ..defaults
        };
        // per_write starts its group-commit task on the ambient runtime.
        let _enter = rt.enter();
        let storage = Storage::open(&config.storage()).expect("cannot open storage");
        let keys = (0..KEYS)
            .map(|i| {
                let key = key(i);
                (partition_of(&key, config.partitions), key)
            })
            .collect();
        Arc::new(Self {
            storage,
            keys,
            value: value(),
            seq: AtomicU64::new(0),
            _dir: dir,
        })
    }

    /// Writes every key once, so that gets find data.
    pub async fn fill(self: &Arc<Self>) {
        let this = self.clone();
        drive(CONCURRENCY, KEYS, Duration::MAX, move |_| {
            this.clone().put()
        })
        .await;
    }

    /// Puts the next key under a version newer than any before it.
    pub async fn put(self: Arc<Self>) {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let (partition, key) = &self.keys[(n % KEYS) as usize];
        let version = Version {
            hlc: n + 1,
            writer: 1,
        };
        // The outcome is not checked: a rare stale write (a slow writer
        // overtaken on its key) costs the same read and flush wait.
        let applied = self
            .storage
            .apply(*partition, key, version, Some(&self.value))
            .await
            .expect("storage put failed");
        black_box(applied);
    }

    /// Gets the `i`-th key.
    pub async fn get(self: Arc<Self>, i: u64) {
        let (partition, key) = &self.keys[(i % KEYS) as usize];
        let record = self
            .storage
            .get(*partition, key)
            .expect("storage get failed");
        assert!(record.is_some(), "the workload reads only keys it filled");
        black_box(record);
    }
}

/// Runs `op(0)`, `op(1)`, … on `concurrency` tasks, each starting its next
/// op as soon as its last one finished (a closed loop: at most
/// `concurrency` ops in flight, and never fewer while work remains), until
/// `ops` have run or `limit` has passed. Returns the ops run and the time
/// they took.
///
/// A closed loop rather than rounds of `concurrency` joined ops: rounds
/// leave the pipeline draining at the end of each, which would understate
/// what group commit and a multiplexed connection can do.
pub async fn drive<F, Fut>(concurrency: u64, ops: u64, limit: Duration, op: F) -> (u64, Duration)
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut workers = JoinSet::new();
    for _ in 0..concurrency.min(ops) {
        let (op, next) = (op.clone(), next.clone());
        workers.spawn(async move {
            let mut done = 0u64;
            while start.elapsed() < limit {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= ops {
                    break;
                }
                op(i).await;
                done += 1;
            }
            done
        });
    }
    let mut done = 0;
    while let Some(worker) = workers.join_next().await {
        done += worker.expect("a benchmark worker panicked");
    }
    (done, start.elapsed())
}

/// Benchmarks `op` at the given concurrency. Criterion's iteration count
/// becomes the number of ops, so with `Throughput::Elements(1)` on the
/// group its rate is ops/s whatever the concurrency.
pub fn bench_ops<F, Fut>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    id: &str,
    rt: &Runtime,
    concurrency: u64,
    op: F,
) where
    F: Fn(u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    group.bench_function(id, |b| {
        b.to_async(rt).iter_custom(|iters| {
            let op = op.clone();
            async move { drive(concurrency, iters, Duration::MAX, op).await.1 }
        })
    });
}
