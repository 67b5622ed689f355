//! The layout of a storage directory: how many shards it has, fixed when
//! it is created, in a small text file beside them (`LAYOUT`).

use std::path::Path;

use super::StorageError;

/// The file naming the layout of a storage directory.
const LAYOUT_FILE: &str = "LAYOUT";
/// First line of [`LAYOUT_FILE`]; the second is `shards N`.
const LAYOUT_MAGIC: &str = "levee storage layout 2";
/// Most shards a directory may have: each is a sled instance with its own
/// flusher thread and files.
pub const MAX_SHARDS: u32 = 256;

/// Reads the shard count of the directory at `path`, or creates the
/// directory with `shards` of them.
pub(super) fn read_or_create(path: &Path, shards: u32) -> Result<u32, StorageError> {
    let layout = path.join(LAYOUT_FILE);
    let io = |what: &str, e: std::io::Error| {
        StorageError::Layout(format!("cannot {what} {}: {e}", layout.display()))
    };
    match std::fs::read_to_string(&layout) {
        Ok(text) => {
            let stored = parse_layout(&text).map_err(|e| {
                StorageError::Layout(format!("{} is not a levee layout: {e}", layout.display()))
            })?;
            if stored != shards {
                tracing::info!(
                    stored,
                    asked = shards,
                    "the data directory keeps the shard count it was created with"
                );
            }
            return Ok(stored);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("read", e)),
    }
    if !(1..=MAX_SHARDS).contains(&shards) {
        return Err(StorageError::Layout(format!(
            "storage shards must be between 1 and {MAX_SHARDS}, not {shards}"
        )));
    }
    std::fs::create_dir_all(path).map_err(|e| io("create the directory of", e))?;
    // Written whole and renamed into place, so a crash leaves no layout
    // or a complete one. No layout but the partial file means a crash
    // came between the two, in an empty directory: it is created again
    // (the partial file rewritten). Seen by tests/storage_crash_safety: a
    // node killed in its first start then never started again.
    let partial_name = format!("{LAYOUT_FILE}.tmp");
    let partial = path.join(&partial_name);
    let occupied = std::fs::read_dir(path)
        .map_err(|e| io("list the directory of", e))?
        .any(|entry| !entry.is_ok_and(|e| e.file_name() == partial_name.as_str()));
    if occupied {
        return Err(StorageError::Layout(format!(
            "{} holds files but no {LAYOUT_FILE}: it was written by an older levee \
             (one sled instance) or by something else; move it away and the node \
             starts empty and is refilled from its replicas",
            path.display()
        )));
    }
    let text = render_layout(shards);
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&partial)?;
        std::io::Write::write_all(&mut file, text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&partial, &layout)?;
        std::fs::File::open(path)?.sync_all()
    };
    write().map_err(|e| io("write", e))?;
    Ok(shards)
}

/// The text of a layout file for `shards` shards.
pub fn render_layout(shards: u32) -> String {
    format!("{LAYOUT_MAGIC}\nshards {shards}\n")
}

/// The shard count in a layout file's text.
pub fn parse_layout(text: &str) -> Result<u32, String> {
    let mut lines = text.lines();
    if lines.next() != Some(LAYOUT_MAGIC) {
        return Err(format!("the first line is not {LAYOUT_MAGIC:?}"));
    }
    let count = lines
        .next()
        .and_then(|line| line.strip_prefix("shards "))
        .ok_or("no `shards N` line")?;
    match count.trim().parse::<u32>() {
        Ok(n) if (1..=MAX_SHARDS).contains(&n) => Ok(n),
        _ => Err(format!("bad shard count {count:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_layout_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        assert_eq!(read_or_create(&path, 7).unwrap(), 7);
        assert_eq!(
            read_or_create(&path, 16).unwrap(),
            7,
            "the stored count wins"
        );
        assert!(!path.join("LAYOUT.tmp").exists());
    }

    #[test]
    fn a_creation_cut_short_before_its_rename_is_created_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        std::fs::create_dir_all(&path).unwrap();
        std::fs::write(path.join("LAYOUT.tmp"), b"levee stor").unwrap();
        assert_eq!(read_or_create(&path, 5).unwrap(), 5);
        assert_eq!(read_or_create(&path, 9).unwrap(), 5);
        assert!(!path.join("LAYOUT.tmp").exists());
        // Beside anything else, it is no creation of ours cut short.
        let other = dir.path().join("other");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(other.join("LAYOUT.tmp"), b"levee stor").unwrap();
        std::fs::write(other.join("conf"), b"segment_size: 524288").unwrap();
        let err = read_or_create(&other, 5).unwrap_err();
        assert!(err.to_string().contains("older levee"), "{err}");
    }

    #[test]
    fn bad_layouts_are_refused_with_the_reason() {
        assert_eq!(parse_layout("levee storage layout 2\nshards 16\n"), Ok(16));
        for (text, reason) in [
            ("", "first line"),
            ("levee storage layout 1\nshards 4\n", "first line"),
            ("levee storage layout 2\n", "no `shards N`"),
            ("levee storage layout 2\nshards 0\n", "bad shard count"),
            ("levee storage layout 2\nshards 9999\n", "bad shard count"),
            ("levee storage layout 2\nshards x\n", "bad shard count"),
        ] {
            let err = parse_layout(text).unwrap_err();
            assert!(err.contains(reason), "{text:?}: {err}");
        }
    }

    #[test]
    fn a_corrupt_layout_file_is_an_error_not_a_new_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LAYOUT_FILE), b"\xff\xfe garbage").unwrap();
        let err = read_or_create(dir.path(), 4).unwrap_err();
        assert!(matches!(err, StorageError::Layout(_)), "{err}");
    }

    #[test]
    fn the_shard_count_of_a_new_directory_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_or_create(&dir.path().join("a"), 0).is_err());
        assert!(read_or_create(&dir.path().join("b"), MAX_SHARDS + 1).is_err());
        assert!(
            !dir.path().join("a").exists(),
            "nothing is created for a bad count"
        );
    }
}
