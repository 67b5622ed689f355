//! The Raft state machine: the applied cluster map, kept in sled and
//! published to the rest of the node.
//!
//! One tree, `raft_sm`, holds two values:
//!
//! - `state`: bincode of the last applied log id, the membership and the
//!   map, rewritten as one value after every apply batch, so it is never
//!   half-updated;
//! - `snapshot`: the current snapshot (meta and bytes), so that a restarted
//!   node can still send it to a lagging follower.
//!
//! Applying does not flush: the log is the source of truth, and a node that
//! loses its last applies in a crash re-applies them from the log. Building
//! and installing a snapshot do flush, because after them openraft may purge
//! the log the snapshot replaces.

// Every fallible function here ends in an openraft trait method, whose
// error type is openraft's (large) StorageError; boxing it on the way
// would only be unboxed again at the trait boundary.
#![allow(
    clippy::result_large_err,
    reason = "openraft's StorageError is the required error type"
)]

use std::convert::Infallible;
use std::io::Cursor;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot};
use openraft::{EntryPayload, OptionalSend, StorageIOError};
use serde::{Deserialize, Serialize};
use sled::transaction::ConflictableTransactionResult;
use tokio::sync::watch;

use super::log_store::{CorruptValue, decode, encode};
use super::types::{Entry, LogId, SnapshotMeta, StorageError, StoredMembership, TypeConfig};
use crate::cluster::map::{ClusterMap, CommandResult};

const SM_TREE: &str = "raft_sm";
const STATE_KEY: &[u8] = b"state";
const SNAPSHOT_KEY: &[u8] = b"snapshot";

/// Everything applied so far. Also the snapshot format: a snapshot is this
/// value, encoded. Public (its fields are not) only so that the fuzz
/// targets can decode and re-encode what the node stores.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    map: ClusterMap,
}

/// A snapshot as kept on disk.
#[derive(Debug, Serialize, Deserialize)]
pub struct StoredSnapshot {
    /// What the snapshot covers.
    pub meta: SnapshotMeta,
    /// The snapshot: an encoded [`Applied`].
    pub data: Vec<u8>,
}

/// Decodes the stored state (`raft_sm`/`state`), which is also the
/// contents of every snapshot, sent or received.
pub fn decode_state(bytes: &[u8]) -> Result<Applied, CorruptValue> {
    decode(bytes)
}

/// Decodes the stored snapshot (`raft_sm`/`snapshot`).
pub fn decode_snapshot(bytes: &[u8]) -> Result<StoredSnapshot, CorruptValue> {
    decode(bytes)
}

/// A snapshot that does not match what it claims to be.
#[derive(Debug, thiserror::Error)]
#[error(
    "snapshot {snapshot_id} says it covers the log up to {claimed} but its contents end at \
     {found}, so it is damaged; Raft stops on this node rather than install it: restart the node \
     to receive the snapshot again"
)]
struct SnapshotMismatch {
    snapshot_id: String,
    claimed: String,
    found: String,
}

/// The replicated cluster map as this node has applied it.
pub struct StateMachine {
    /// Kept for `flush_async`.
    db: sled::Db,
    /// `raft_sm`.
    tree: sled::Tree,
    applied: Applied,
    /// Every node component watches the map through this; it always holds
    /// the map of `applied`.
    publisher: watch::Sender<Arc<ClusterMap>>,
    /// Makes snapshot ids unique when two snapshots end at the same entry.
    snapshots_built: Arc<AtomicU64>,
}

impl StateMachine {
    /// Opens (or creates) the state machine tree in `db` and loads what was
    /// applied before the last shutdown.
    pub fn open(db: &sled::Db) -> Result<Self, StorageError> {
        let tree = db
            .open_tree(SM_TREE)
            .map_err(|e| StorageIOError::read_state_machine(&e))?;
        let stored = tree
            .get(STATE_KEY)
            .map_err(|e| StorageIOError::read_state_machine(&e))?;
        let applied: Applied = match stored {
            Some(bytes) => {
                decode_state(&bytes).map_err(|e| StorageIOError::read_state_machine(&e))?
            }
            None => Applied::default(),
        };
        tracing::debug!(
            last_applied = ?applied.last_applied,
            epoch = applied.map.epoch,
            "loaded the cluster map"
        );
        let (publisher, _) = watch::channel(Arc::new(applied.map.clone()));
        Ok(Self {
            db: db.clone(),
            tree,
            applied,
            publisher,
            snapshots_built: Arc::new(AtomicU64::new(0)),
        })
    }

    /// A receiver holding the current map, marked changed each time new
    /// entries or a snapshot are applied.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ClusterMap>> {
        self.publisher.subscribe()
    }

    fn publish(&self) {
        // `send_replace`, not `send`: it stores the map even while nobody
        // is subscribed, so a later subscriber starts from the current map.
        self.publisher
            .send_replace(Arc::new(self.applied.map.clone()));
    }
}

/// Builds snapshots from a copy of the state machine taken when openraft
/// asked for the builder, so building runs beside further applies.
pub struct SnapshotBuilder {
    db: sled::Db,
    tree: sled::Tree,
    applied: Applied,
    snapshots_built: Arc<AtomicU64>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let data = encode(&self.applied).map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        let counter = self.snapshots_built.fetch_add(1, Ordering::Relaxed) + 1;
        let snapshot_id = match self.applied.last_applied {
            Some(id) => format!("{}-{}-{counter}", id.leader_id.term, id.index),
            None => format!("0-0-{counter}"),
        };
        let meta = SnapshotMeta {
            last_log_id: self.applied.last_applied,
            last_membership: self.applied.membership.clone(),
            snapshot_id,
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        store_unless_older(&self.tree, &stored)?;
        self.db
            .flush_async()
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        tracing::info!(
            snapshot = %meta,
            bytes = stored.data.len(),
            "built a snapshot of the cluster map"
        );
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        })
    }
}

/// Saves `snapshot` as the current one unless the stored one is newer.
/// Building runs beside the state machine, so a snapshot installed from
/// the leader meanwhile must not be replaced by an older local one.
fn store_unless_older(tree: &sled::Tree, snapshot: &StoredSnapshot) -> Result<(), StorageError> {
    let signature = || Some(snapshot.meta.signature());
    let bytes = encode(snapshot).map_err(|e| StorageIOError::write_snapshot(signature(), &e))?;
    let stored = tree
        .transaction(|tx| -> ConflictableTransactionResult<bool, Infallible> {
            let current = tx.get(SNAPSHOT_KEY)?;
            let current_end = match current.as_deref().map(decode_snapshot) {
                Some(Ok(current)) => current.meta.last_log_id,
                // A damaged current snapshot is worth nothing: replace it.
                Some(Err(_)) | None => None,
            };
            if current_end > snapshot.meta.last_log_id {
                return Ok(false);
            }
            tx.insert(SNAPSHOT_KEY, bytes.as_slice())?;
            Ok(true)
        })
        .map_err(|e| StorageIOError::write_snapshot(signature(), &e))?;
    if !stored {
        tracing::debug!(snapshot = %snapshot.meta, "kept the newer snapshot already stored");
    }
    Ok(())
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.applied.last_applied, self.applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut results = Vec::new();
        for entry in entries {
            self.applied.last_applied = Some(entry.log_id);
            let result = match entry.payload {
                EntryPayload::Blank => CommandResult::default(),
                EntryPayload::Normal(command) => self.applied.map.apply(&command),
                EntryPayload::Membership(membership) => {
                    self.applied.membership = StoredMembership::new(Some(entry.log_id), membership);
                    CommandResult::default()
                }
            };
            results.push(result);
        }
        if results.is_empty() {
            return Ok(results);
        }
        let bytes = encode(&self.applied).map_err(|e| StorageIOError::write_state_machine(&e))?;
        self.tree
            .insert(STATE_KEY, bytes)
            .map_err(|e| StorageIOError::write_state_machine(&e))?;
        self.publish();
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            db: self.db.clone(),
            tree: self.tree.clone(),
            applied: self.applied.clone(),
            snapshots_built: self.snapshots_built.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let signature = || Some(meta.signature());
        let data = snapshot.into_inner();
        let applied =
            decode_state(&data).map_err(|e| StorageIOError::read_snapshot(signature(), &e))?;
        if applied.last_applied != meta.last_log_id || applied.membership != meta.last_membership {
            let mismatch = SnapshotMismatch {
                snapshot_id: meta.snapshot_id.clone(),
                claimed: format!("{:?}", meta.last_log_id),
                found: format!("{:?}", applied.last_applied),
            };
            return Err(StorageIOError::read_snapshot(signature(), &mismatch).into());
        }
        let state =
            encode(&applied).map_err(|e| StorageIOError::write_snapshot(signature(), &e))?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        let stored =
            encode(&stored).map_err(|e| StorageIOError::write_snapshot(signature(), &e))?;
        // State and snapshot in one batch: a restart must never pair the
        // new snapshot with the old state or the other way round.
        let mut batch = sled::Batch::default();
        batch.insert(STATE_KEY, state);
        batch.insert(SNAPSHOT_KEY, stored);
        self.tree
            .apply_batch(batch)
            .map_err(|e| StorageIOError::write_snapshot(signature(), &e))?;
        self.db
            .flush_async()
            .await
            .map_err(|e| StorageIOError::write_snapshot(signature(), &e))?;
        tracing::info!(
            snapshot = %meta,
            epoch = applied.map.epoch,
            "installed a snapshot of the cluster map"
        );
        self.applied = applied;
        self.publish();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let stored = self
            .tree
            .get(SNAPSHOT_KEY)
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        let Some(bytes) = stored else {
            return Ok(None);
        };
        let stored =
            decode_snapshot(&bytes).map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        Ok(Some(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use openraft::testing::{StoreBuilder, Suite};
    use openraft::{CommittedLeaderId, Membership};
    use tempfile::TempDir;

    use super::*;
    use crate::cluster::map::{Command, NodeSpec, Settings};
    use crate::raft::log_store::LogStore;

    /// Each suite case gets a fresh on-disk database; the directory lives
    /// as long as the case.
    struct OnDisk;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for OnDisk {
        async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError> {
            let dir = tempfile::tempdir().map_err(|e| StorageIOError::write(&e))?;
            let db = sled::open(dir.path()).map_err(|e| StorageIOError::write(&e))?;
            Ok((dir, LogStore::open(&db)?, StateMachine::open(&db)?))
        }
    }

    #[test]
    fn passes_the_openraft_storage_suite() {
        Suite::test_all(OnDisk).expect("openraft storage suite");
    }

    fn log_id(term: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn entry(index: u64, payload: EntryPayload<TypeConfig>) -> Entry {
        Entry {
            log_id: log_id(1, index),
            payload,
        }
    }

    fn spec(addr: &str, token: u64) -> NodeSpec {
        NodeSpec {
            addr: addr.into(),
            admin: format!("{addr}-admin"),
            zone: addr.into(),
            capacity: 1,
            join_token: token,
        }
    }

    /// Membership, init, a blank and a join: one of each payload.
    fn history() -> Vec<Entry> {
        let voters = BTreeSet::from([1]);
        vec![
            entry(
                1,
                EntryPayload::Membership(Membership::new(vec![voters], None)),
            ),
            entry(
                2,
                EntryPayload::Normal(Command::Init {
                    cluster_id: 9,
                    partitions: 8,
                    settings: Settings::majority(1, 1),
                    first: spec("a:1", 1),
                }),
            ),
            entry(3, EntryPayload::Blank),
            entry(4, EntryPayload::Normal(Command::AddNode(spec("b:1", 2)))),
        ]
    }

    #[tokio::test]
    async fn applies_one_result_per_entry_and_publishes_the_map() {
        let db = sled::Config::new()
            .temporary(true)
            .open()
            .expect("open sled");
        let mut sm = StateMachine::open(&db).expect("open state machine");
        let mut maps = sm.subscribe();
        let results = sm.apply(history()).await.expect("apply");
        assert_eq!(results.len(), 4);
        assert_eq!(results[3], CommandResult::NodeAdded { id: 2, epoch: 2 });
        assert!(maps.has_changed().expect("publisher alive"));
        let map = maps.borrow_and_update().clone();
        assert_eq!((map.cluster_id, map.epoch, map.nodes.len()), (9, 2, 2));
    }

    #[tokio::test]
    async fn the_map_and_snapshot_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (map, snapshot_meta) = {
            let db = sled::open(dir.path()).expect("open sled");
            let mut sm = StateMachine::open(&db).expect("open state machine");
            sm.apply(history()).await.expect("apply");
            let snapshot = sm
                .get_snapshot_builder()
                .await
                .build_snapshot()
                .await
                .expect("build");
            let map = sm.subscribe().borrow().clone();
            (map, snapshot.meta)
        };
        let db = crate::raft::identity::tests::reopen(dir.path());
        let mut sm = StateMachine::open(&db).expect("reopen state machine");
        assert_eq!(*sm.subscribe().borrow().clone(), *map);
        let (applied, membership) = sm.applied_state().await.expect("applied state");
        assert_eq!(applied, Some(log_id(1, 4)));
        assert_eq!(membership.log_id(), &Some(log_id(1, 1)));
        let current = sm
            .get_current_snapshot()
            .await
            .expect("read snapshot")
            .expect("a snapshot");
        assert_eq!(current.meta, snapshot_meta);
    }

    #[tokio::test]
    async fn an_installed_snapshot_replaces_the_map_and_survives_reopen() {
        let leader_db = sled::Config::new()
            .temporary(true)
            .open()
            .expect("open sled");
        let mut leader = StateMachine::open(&leader_db).expect("open leader");
        leader.apply(history()).await.expect("apply");
        let snapshot = leader
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("build");

        let dir = tempfile::tempdir().expect("tempdir");
        {
            let db = sled::open(dir.path()).expect("open sled");
            let mut follower = StateMachine::open(&db).expect("open follower");
            let mut maps = follower.subscribe();
            follower
                .install_snapshot(&snapshot.meta, snapshot.snapshot)
                .await
                .expect("install");
            assert!(maps.has_changed().expect("publisher alive"));
            assert_eq!(maps.borrow_and_update().epoch, 2);
        }
        let db = crate::raft::identity::tests::reopen(dir.path());
        let mut follower = StateMachine::open(&db).expect("reopen follower");
        assert_eq!(follower.subscribe().borrow().epoch, 2);
        let current = follower
            .get_current_snapshot()
            .await
            .expect("read")
            .expect("a snapshot");
        assert_eq!(current.meta, snapshot.meta);
    }

    #[tokio::test]
    async fn a_snapshot_that_disagrees_with_its_meta_is_refused() {
        let db = sled::Config::new()
            .temporary(true)
            .open()
            .expect("open sled");
        let mut sm = StateMachine::open(&db).expect("open state machine");
        sm.apply(history()).await.expect("apply");
        let mut snapshot = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("build");
        snapshot.meta.last_log_id = Some(log_id(1, 99));
        let mut other = StateMachine::open(
            &sled::Config::new()
                .temporary(true)
                .open()
                .expect("open sled"),
        )
        .expect("open state machine");
        assert!(
            other
                .install_snapshot(&snapshot.meta, snapshot.snapshot)
                .await
                .is_err()
        );
        let garbage = Box::new(Cursor::new(vec![0xff; 5]));
        assert!(
            other
                .install_snapshot(&snapshot.meta, garbage)
                .await
                .is_err()
        );
        assert_eq!(other.subscribe().borrow().epoch, 0);
    }

    #[tokio::test]
    async fn an_older_build_does_not_replace_a_newer_installed_snapshot() {
        let db = sled::Config::new()
            .temporary(true)
            .open()
            .expect("open sled");
        let mut sm = StateMachine::open(&db).expect("open state machine");
        let mut stale = sm.get_snapshot_builder().await;

        let leader_db = sled::Config::new()
            .temporary(true)
            .open()
            .expect("open sled");
        let mut leader = StateMachine::open(&leader_db).expect("open leader");
        leader.apply(history()).await.expect("apply");
        let newer = leader
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("build");
        sm.install_snapshot(&newer.meta, newer.snapshot)
            .await
            .expect("install");

        stale
            .build_snapshot()
            .await
            .expect("build the stale snapshot");
        let current = sm
            .get_current_snapshot()
            .await
            .expect("read")
            .expect("a snapshot");
        assert_eq!(current.meta, newer.meta);
    }

    #[test]
    fn damaged_state_is_an_error_not_a_panic() {
        let db = sled::Config::new()
            .temporary(true)
            .open()
            .expect("open sled");
        db.open_tree(SM_TREE)
            .and_then(|tree| tree.insert(STATE_KEY, &[0xff, 0x00][..]))
            .expect("damage the state");
        assert!(StateMachine::open(&db).is_err());
    }
}
