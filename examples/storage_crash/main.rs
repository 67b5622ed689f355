//! The child process of the storage crash-safety suite
//! (`tests/storage_crash_safety/`, issue 20): it opens a node's data
//! directory directly through `Storage`, with `per_write` durability and
//! the node's default layout, and either writes until it is killed or
//! reports what the directory holds.
//!
//! ```text
//! # WRITERS tasks put and delete their own keys, each write printed
//! # before it is applied (start) and once Storage::apply returned (ack)
//! storage_crash write DIR RUN SEED
//! # open every shard, read every key, scan every partition, print it all
//! storage_crash verify DIR
//! ```
//!
//! Every line goes to stdout whole and flushed before the next step, so
//! what the parent read before a SIGKILL is exactly what happened before
//! it: an `ack` line was printed only after its write was acknowledged.
//! The lines are `protocol::Line`. A `write` run that nobody kills stops
//! by itself after [`WRITE_FOR`]; `verify` exits 2 when the directory or
//! one of its shards does not open.

mod protocol;

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use levee_node::config::Config;
use levee_node::storage::{Applied, Durability, RecordError, Storage, StorageConfig, StorageError};

use protocol::{Found, KEYS_PER_WRITER, Key, Line, PARTITIONS, WRITERS};

/// How long a `write` run lasts if nobody kills it: far past any kill
/// the suite schedules, so it only bounds a run whose parent died.
const WRITE_FOR: Duration = Duration::from_secs(60);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["write", dir, run, seed] => match (run.parse(), seed.parse()) {
            (Ok(run), Ok(seed)) => write(Path::new(dir), run, seed),
            _ => Err(format!(
                "RUN and SEED are whole numbers, not {run:?} {seed:?}"
            )),
        },
        ["verify", dir] => verify(Path::new(dir)),
        _ => Err("usage: storage_crash write DIR RUN SEED | storage_crash verify DIR".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("storage_crash: {e}");
            ExitCode::from(2)
        }
    }
}

/// The node's storage settings for a data directory: its default shards
/// and `per_write` durability; journal segments of 64 KiB instead of
/// 8 MiB, so that segments close, checkpoints flush shards and trim
/// segments many times in a run, and kills fall in them too.
fn storage_config(dir: &Path) -> StorageConfig {
    let config = Config {
        data_dir: dir.to_path_buf(),
        durability: Durability::PerWrite,
        ..Config::default()
    };
    StorageConfig {
        journal_segment_bytes: 64 * 1024,
        ..config.storage()
    }
}

/// Prints one line whole and flushed: a line the parent has is a thing
/// that happened.
fn emit(line: &Line) {
    let mut out = std::io::stdout().lock();
    // The parent gone is the only way these fail; the run is over then.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))
}

/// Opens the directory as a node does (`per_write` starts the group
/// commit on the runtime entered here).
fn open(runtime: &tokio::runtime::Runtime, dir: &Path) -> Result<Storage, String> {
    let _entered = runtime.enter();
    Storage::open(&storage_config(dir)).map_err(|e| {
        let error = format!("{}: {e}", storage_config(dir).path.display());
        emit(&Line::OpenFailed {
            error: error.clone(),
        });
        error
    })
}

fn write(dir: &Path, run: u64, seed: u64) -> Result<(), String> {
    let runtime = runtime()?;
    let storage = open(&runtime, dir)?;
    emit(&Line::Ready);
    let until = Instant::now() + WRITE_FOR;
    runtime.block_on(async {
        let writers: Vec<_> = (0..WRITERS)
            .map(|writer| tokio::spawn(write_keys(storage.clone(), run, seed, writer, until)))
            .collect();
        for writer in writers {
            writer.await.map_err(|e| format!("writer task: {e}"))?;
        }
        Ok(())
    })
}

/// One writer: its own keys, chosen at random, one write at a time, each
/// printed before it is applied and again once acknowledged.
async fn write_keys(storage: Storage, run: u64, seed: u64, writer: u32, until: Instant) {
    let mut seq = 0;
    while Instant::now() < until {
        seq += 1;
        let pick = protocol::draw(&[seed, run, u64::from(writer), seq]);
        let key = Key {
            writer,
            index: (pick % u64::from(KEYS_PER_WRITER)) as u32,
        };
        let version = protocol::version(run, key, seq);
        let value = protocol::value_of(key, version);
        emit(&Line::Start { key, version });
        let applied = storage
            .apply(key.partition(), &key.name(), version, value.as_deref())
            .await;
        emit(&match applied {
            Ok(Applied::Written) => Line::Ack {
                key,
                version,
                stale: None,
            },
            Ok(Applied::Stale { current }) => Line::Ack {
                key,
                version,
                stale: Some(current),
            },
            Err(e) => Line::Failed {
                key,
                version,
                error: e.to_string(),
            },
        });
    }
}

fn verify(dir: &Path) -> Result<(), String> {
    let runtime = runtime()?;
    let storage = open(&runtime, dir)?;
    runtime.block_on(async {
        // Shards open on first touch: every one opens here, so a shard
        // that does not is an open failure, not a few unreadable keys.
        if let Err(e) = storage.warm_up().await {
            let error = format!("a shard of {}: {e}", storage_config(dir).path.display());
            emit(&Line::OpenFailed {
                error: error.clone(),
            });
            return Err(error);
        }
        for key in Key::all() {
            emit(&read(&storage, key).await);
        }
        for partition in 0..PARTITIONS {
            scan(&storage, partition);
        }
        emit(&Line::Verified);
        Ok(())
    })
}

/// What `key` reads as: its record (judged against what its version's
/// write stored), nothing, or why it cannot be read.
async fn read(storage: &Storage, key: Key) -> Line {
    match storage.read(key.partition(), &key.name()).await {
        Ok(None) => Line::Absent { key },
        Ok(Some(record)) => Line::Record {
            key,
            version: record.version,
            found: Found::of(key, record.version, record.value.as_deref()),
        },
        Err(StorageError::Corrupt { error, .. }) => Line::Corrupt {
            key,
            crc: matches!(error, RecordError::Checksum { .. }),
            error: error.to_string(),
        },
        Err(e) => Line::Unreadable {
            key,
            error: e.to_string(),
        },
    }
}

/// Every key stored in `partition` that no writer writes (what a damaged
/// page could leave), read the way anti-entropy reads a partition.
fn scan(storage: &Storage, partition: u32) {
    let mut strays = Vec::new();
    let scanned = storage.scan_partition(partition, |entry| {
        if Key::from_name(&entry.key).is_none_or(|key| key.partition() != partition) {
            strays.push(entry.key.escape_ascii().to_string());
        }
        true
    });
    for key in strays {
        emit(&Line::Stray { partition, key });
    }
    if let Err(e) = scanned {
        emit(&Line::ScanFailed {
            partition,
            error: e.to_string(),
        });
    }
}
