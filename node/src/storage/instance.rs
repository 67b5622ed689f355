//! Opening one sled instance (a data shard or the hints), and creating it
//! so that a crash in the middle does not leave it broken.
//!
//! sled 0.34 writes a new instance's `conf` in place, its bytes and then
//! their crc in two writes, and reads a `conf` cut between the two as
//! corrupt: the instance then fails every open ("Read corrupted data").
//! `tests/storage_crash_safety` found it: a process killed while it created
//! a shard left a directory that never opened again. So a creation is
//! announced first by a file beside the instance, `NAME.creating`, which is
//! removed once sled's open has returned: an instance found with that file
//! beside it was cut short in its creation, before any record was written
//! to it (records are written only once this open has returned), and is
//! made again. An instance without it is opened as it is, as are those of
//! levees older than this file.

use std::path::{Path, PathBuf};

use super::StorageError;

/// How one sled instance is configured.
pub(super) struct Settings {
    /// Its share of the page cache.
    pub cache_bytes: u64,
    /// sled's background flush interval; `None`: no background flush (the
    /// journal's checkpoints flush the shard).
    pub flush_every_ms: Option<u64>,
    /// Its log segment size (stored in its `conf`: fixed at creation).
    pub segment_bytes: usize,
}

impl Settings {
    fn sled(&self, path: &Path) -> sled::Config {
        sled::Config::new()
            .path(path)
            .cache_capacity(self.cache_bytes)
            .flush_every_ms(self.flush_every_ms.map(|ms| ms.max(1)))
            .mode(sled::Mode::HighThroughput)
            .segment_size(self.segment_bytes)
    }
}

/// Opens the instance at `path`, creating it first if there is none or
/// its creation was cut short.
pub(super) fn open(path: &Path, settings: &Settings) -> Result<sled::Db, StorageError> {
    open_with(path, |path| settings.sled(path))
}

/// [`open`] with sled's configuration made by `config` (the cluster
/// metadata keeps sled's defaults, which its existing directories were
/// created with).
pub(super) fn open_with(
    path: &Path,
    config: impl Fn(&Path) -> sled::Config,
) -> Result<sled::Db, StorageError> {
    let marker = creating(path);
    let io = |what: &str, at: &Path, e: std::io::Error| {
        StorageError::Layout(format!("cannot {what} {}: {e}", at.display()))
    };
    if marker.exists() && path.exists() {
        // A creation cut short: no record ever reached it.
        std::fs::remove_dir_all(path).map_err(|e| io("remove", path, e))?;
    }
    if path.exists() {
        remove_partial_snapshots(path).map_err(|e| io("clean up", path, e))?;
        return Ok(config(path).open()?);
    }
    std::fs::File::create(&marker)
        .and_then(|_| sync_parent(path))
        .map_err(|e| io("write", &marker, e))?;
    let db = config(path).open()?;
    db.flush()?;
    std::fs::remove_file(&marker)
        .and_then(|()| sync_parent(path))
        .map_err(|e| io("remove", &marker, e))?;
    Ok(db)
}

/// Deletes the snapshots sled began and never finished. sled 0.34 writes
/// a snapshot to `snap.N.generating` and renames it when complete, but
/// its open reads a `.generating` file a kill left behind and fails on it
/// ("Read corrupted data"), every time: `tests/storage_crash_safety`
/// found a shard killed while its snapshot was written that never opened
/// again, and opened with that file gone. The complete snapshot before it
/// and the log are what sled recovers from.
fn remove_partial_snapshots(path: &Path) -> std::io::Result<()> {
    let mut removed = false;
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        let name = entry.file_name();
        let partial = name
            .to_str()
            .is_some_and(|n| n.starts_with("snap.") && n.ends_with(".generating"));
        if partial {
            tracing::warn!(file = %entry.path().display(), "removing a snapshot sled never finished (a crash while it was written)");
            std::fs::remove_file(entry.path())?;
            removed = true;
        }
    }
    if removed {
        std::fs::File::open(path)?.sync_all()?;
    }
    Ok(())
}

/// Makes the entries of `path`'s directory durable.
fn sync_parent(path: &Path) -> std::io::Result<()> {
    std::fs::File::open(path.parent().unwrap_or(Path::new(".")))?.sync_all()
}

/// The file announcing that the instance at `path` is being created.
fn creating(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".creating");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            cache_bytes: 1024 * 1024,
            flush_every_ms: Some(500),
            segment_bytes: 512 * 1024,
        }
    }

    #[test]
    fn an_instance_is_created_and_then_kept_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shard-000");
        {
            let db = open(&path, &settings()).unwrap();
            assert!(!creating(&path).exists(), "announced until created");
            db.insert(b"k", b"v").unwrap();
            db.flush().unwrap();
        }
        let db = open_when_unlocked(&path);
        assert_eq!(db.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
    }

    #[test]
    fn a_snapshot_cut_short_by_a_crash_is_removed_before_the_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shard-005");
        {
            let db = open(&path, &settings()).unwrap();
            db.insert(b"k", b"v".as_slice()).unwrap();
            db.flush().unwrap();
        }
        // Reopened once, so that a complete snapshot is there to copy.
        drop(open(&path, &settings()).unwrap());
        let snapshot = std::fs::read_dir(&path)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("snap.")
            })
            .expect("a snapshot");
        let bytes = std::fs::read(&snapshot).unwrap();
        let partial = path.join("snap.7FFFFFFFFFFFFFFF.generating");
        std::fs::write(&partial, &bytes[..bytes.len() / 2]).unwrap();
        let db = open(&path, &settings()).expect("opens without the partial snapshot");
        assert_eq!(db.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
        assert!(!partial.exists());
    }

    #[test]
    fn a_creation_cut_short_is_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shard-003");
        cut_creation(&path);

        let db = open(&path, &settings()).unwrap();
        db.insert(b"k", b"v").unwrap();
        assert!(!creating(&path).exists());
    }

    #[test]
    fn the_metadata_is_made_again_after_a_creation_cut_short() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta");
        cut_creation(&path);

        let db = super::super::open_metadata(&path).unwrap();
        db.insert(b"k", b"v").unwrap();
        assert!(!creating(&path).exists());
    }

    /// What a kill between sled's two writes of a new `conf` leaves at
    /// `path`: its bytes without their crc, the creation still announced.
    /// sled alone never opens it again.
    fn cut_creation(path: &Path) {
        std::fs::write(creating(path), b"").unwrap();
        {
            sled::Config::new().path(path).open().unwrap();
        }
        let conf = std::fs::read(path.join("conf")).unwrap();
        std::fs::write(path.join("conf"), &conf[..conf.len() - 4]).unwrap();
        assert!(sled::Config::new().path(path).open().is_err());
    }

    /// [`open`] of an instance just closed: sled lets go of its lock
    /// from a background thread, shortly after the last handle is dropped.
    fn open_when_unlocked(path: &Path) -> sled::Db {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match open(path, &settings()) {
                Ok(db) => return db,
                Err(e) if std::time::Instant::now() < deadline => {
                    assert!(e.to_string().contains("lock"), "{e}");
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => panic!("{e}"),
            }
        }
    }
}
