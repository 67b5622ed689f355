//! How long opening a node's storage takes against the amount of data in
//! it (issue 8: restart-to-first-served must not grow with data size).
//!
//! ```text
//! # write GB gibibytes of 1 KiB values into DIR/data, the node's layout
//! cargo run --release --example storage_open -- fill DIR GB
//! # open it as the node does and print the time of each step
//! cargo run --release --example storage_open -- open DIR
//! ```
//!
//! `open` prints the storage open (layout and hints), the first read (which
//! opens that key's shard), their sum — the storage part of a restart to
//! first served — and then the node's background warm-up: the time to open
//! every other shard.
//!
//! `fill` writes the bench runner's key names (`bench-0000000000`, ...)
//! into their partitions (256, the default count), versioned at the time of
//! the fill, so a stopped node's data directory can be preloaded with it:
//! with as many replicas as nodes every node holds every partition, and a
//! node started on the directory serves the keys. To measure a cold open,
//! drop the files from the page cache first (GNU dd):
//! `find DIR/data -type f -exec dd if={} iflag=nocache count=0 status=none \;`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use levee_node::config::Config;
use levee_node::partition::partition_of;
use levee_node::storage::hints::HintStore;
use levee_node::storage::{Durability, Storage, Unflushed, Version};

/// Bytes in every value: the size the benchmarks use.
const VALUE_BYTES: usize = 1024;
/// Writer id stamped on the preloaded versions (no real client has 0).
const WRITER: u64 = 0;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["fill", dir, gib] => match gib.parse::<f64>() {
            Ok(gib) if gib > 0.0 => fill(Path::new(dir), gib),
            _ => Err(format!("GB must be a positive number, not {gib:?}")),
        },
        ["open", dir] => open(Path::new(dir)),
        _ => Err("usage: storage_open fill DIR GB | storage_open open DIR".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("storage_open: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The node's storage settings for a data directory.
fn node_config(dir: &Path) -> Config {
    Config {
        data_dir: dir.to_path_buf(),
        ..Config::default()
    }
}

fn fill(dir: &Path, gib: f64) -> Result<(), String> {
    let mut config = node_config(dir);
    // Periodic: the fill is one bulk load, flushed once at the end; a
    // flush per write would only make it slower.
    config.durability = Durability::Periodic;
    let storage = Storage::open(&config.storage()).map_err(|e| e.to_string())?;
    let keys = (gib * 1024.0 * 1024.0 * 1024.0 / VALUE_BYTES as f64) as u64;
    let partitions = config.partitions;
    let hlc = levee_node::hlc::compose(levee_node::hlc::wall_ms(), 0);
    let value: Arc<Vec<u8>> = Arc::new((0..VALUE_BYTES).map(|i| (i % 251) as u8).collect());
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let (storage, value, next) = (storage.clone(), value.clone(), next.clone());
            std::thread::spawn(move || -> Result<(), String> {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= keys {
                        return Ok(());
                    }
                    let key = format!("bench-{i:010}");
                    let version = Version {
                        hlc,
                        writer: WRITER,
                    };
                    storage
                        .apply_unflushed(
                            partition_of(key.as_bytes(), partitions),
                            key.as_bytes(),
                            version,
                            Some(&value),
                            // Periodic: nothing is journaled.
                            &mut Unflushed::default(),
                        )
                        .map_err(|e| e.to_string())?;
                    if i > 0 && i % 1_000_000 == 0 {
                        eprintln!("{i} keys in {:.1} s", started.elapsed().as_secs_f64());
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().map_err(|_| "a fill thread panicked")??;
    }
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    runtime
        .block_on(storage.flush())
        .map_err(|e| e.to_string())?;
    drop(storage);
    println!(
        "filled {} with {keys} keys of {VALUE_BYTES} bytes in {:.1} s; on disk {:.2} GiB",
        config.storage().path.display(),
        started.elapsed().as_secs_f64(),
        dir_bytes(&config.storage().path) as f64 / (1u64 << 30) as f64,
    );
    Ok(())
}

fn open(dir: &Path) -> Result<(), String> {
    let config = node_config(dir);
    let path = config.storage().path;
    if !path.exists() {
        return Err(format!("{} does not exist; fill it first", path.display()));
    }
    // `per_write` (the node's default) starts the group-commit task, which
    // needs a runtime, exactly as in the node.
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let _guard = runtime.enter();
    let started = Instant::now();
    let storage = Storage::open(&config.storage()).map_err(|e| e.to_string())?;
    let storage_ms = ms(started);
    let hints = Instant::now();
    HintStore::open(&storage, config.hint_max_bytes_per_node).map_err(|e| e.to_string())?;
    let hints_ms = ms(hints);
    // One read of a key that is surely on disk and not yet cached, as the
    // node's request path does it: its shard opens first. What a first
    // request pays on top of the open.
    let first = Instant::now();
    let key = b"bench-0000000007";
    let found = runtime
        .block_on(storage.read(partition_of(key, config.partitions), key))
        .map_err(|e| e.to_string())?
        .is_some();
    let first_get_ms = ms(first);
    let total_ms = ms(started);
    // The node's background warm-up after ready: every other shard.
    let warm = Instant::now();
    runtime
        .block_on(storage.warm_up())
        .map_err(|e| e.to_string())?;
    println!(
        "dir_gib={:.2} shards={} storage_open_ms={storage_ms:.1} hints_open_ms={hints_ms:.1} \
         first_get_ms={first_get_ms:.1} found={found} total_ms={total_ms:.1} \
         warm_rest_ms={:.1} all_shards_open_ms={:.1}",
        dir_bytes(&path) as f64 / (1u64 << 30) as f64,
        storage.shards(),
        ms(warm),
        storage.shard_open_seconds() * 1000.0,
    );
    Ok(())
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

/// Bytes of the files under `path` (sled keeps a few, in subdirectories).
fn dir_bytes(path: &Path) -> u64 {
    let mut total = 0;
    let mut pending: Vec<PathBuf> = vec![path.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.metadata() {
                Ok(m) if m.is_dir() => pending.push(entry.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}
