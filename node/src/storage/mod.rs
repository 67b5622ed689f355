//! Versioned record storage on sled.
//!
//! Everything that touches sled lives in this module, so the engine could be
//! swapped if measurements demand it. Records are keyed by
//! `(partition, key)`; each holds a [`Version`] and a checksummed value or a
//! tombstone ([`record`]). Writes apply only if newer ([`Storage::apply`]),
//! and with [`Durability::PerWrite`] the acknowledgement waits for the
//! write's record to be synced to the node's one write-ahead journal
//! ([`journal`]), a sync shared by every concurrent writer
//! ([`group_commit`]); the shards are flushed lazily.

pub mod bounded;
mod engine;
pub mod group_commit;
pub mod hints;
mod instance;
pub mod journal;
pub mod layout;
pub mod prefix;
pub mod record;
pub mod scan;
mod shards;

pub use engine::{Applied, Storage, Unflushed};
pub use layout::MAX_SHARDS;
pub use record::{Record, RecordError, Version};
pub use shards::{JournalStats, StorageConfig};

use serde::{Deserialize, Serialize};

/// Opens the node's cluster metadata (the Raft log, vote and state
/// machine, `DATA_DIR/meta`), creating it so that a kill in the middle of
/// its creation does not leave a directory sled never opens again (the
/// shards' protection, `instance.rs`). Raft owns what is written in it;
/// this floor only opens it, with sled's defaults, which every existing
/// metadata directory was created with.
pub fn open_metadata(path: &std::path::Path) -> Result<sled::Db, StorageError> {
    instance::open_with(path, |path| sled::Config::new().path(path))
}

/// When a write reaches the disk relative to its acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum Durability {
    /// The acknowledgement waits for a flush to disk; concurrent writes
    /// share one flush (group commit). The default: an acknowledged write
    /// survives a crash of this node, which is what "acked" means to a
    /// user, and group commit keeps the cost per write small under load.
    #[default]
    PerWrite,
    /// Acknowledge once the write is in sled's page cache and let sled
    /// flush on its own interval (`flush_every_ms`). Faster; a crash loses
    /// up to one interval of acknowledged writes on this node, which only
    /// replication can cover.
    Periodic,
}

/// Storage failures. Every message names what failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// sled reported an error (I/O, or corruption it detected itself).
    #[error("storage engine error: {0}")]
    Engine(#[from] sled::Error),
    /// A stored record failed to decode or verify; it is never returned as
    /// data.
    #[error("corrupt record for key {key} in partition {partition}: {error}")]
    Corrupt {
        /// Partition of the record.
        partition: u32,
        /// The key, escaped for printing.
        key: String,
        /// What was wrong with it.
        error: RecordError,
    },
    /// Flushing to disk failed; the write may not be durable.
    #[error("flush to disk failed: {0}")]
    Flush(String),
    /// The storage directory's layout is missing, unreadable or not one
    /// this version reads.
    #[error("storage layout: {0}")]
    Layout(String),
    /// The storage is shutting down.
    #[error("storage is closed")]
    Closed,
    /// A failpoint fired (`crate::failpoint`): a test broke this on
    /// purpose. Never produced by a build without the `failpoints` feature.
    #[error("failpoint {0} fired")]
    Injected(&'static str),
}
