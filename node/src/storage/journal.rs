//! The node's write-ahead journal: one for every shard, so that a group
//! commit costs one fsync however many shards its batch wrote to.
//!
//! With `per_write` durability a write is applied to its shard's sled in
//! memory, then its record is appended here; the group commit
//! (`group_commit.rs`) writes the batch and syncs it once, and only then
//! answers. The shards are flushed lazily: sled's own background flush,
//! and a checkpoint (`shards.rs`) that flushes the shards a closed segment
//! holds records of, then deletes it. After a crash, the segments left are
//! read when storage opens (no shard is opened for it) and each shard's
//! records are applied when the shard opens, newest version winning as
//! for any write, so a record applied twice changes nothing.
//!
//! A segment file, `DATA_DIR/data/journal/<seq as 16 hex digits>.journal`:
//!
//! ```text
//! magic: "levee journal 1\n" (16 bytes) | frame | frame | ...
//! frame: body length u32 BE | crc32c of body u32 BE | body
//! body:  partition u32 BE | key length u32 BE | key | stored record
//! ```
//!
//! The stored record is the shard's own value bytes (`record.rs`), checked
//! again when applied. Frames are appended by one writer and synced
//! before anyone is told, so a crash can only cut the segment's last
//! frames: decoding stops at the first frame that is short or does not
//! check, and nothing acknowledged lies past it.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::StorageError;

/// First bytes of every segment.
pub const MAGIC: &[u8; 16] = b"levee journal 1\n";
/// Bytes of a frame before its body: length and crc.
pub const FRAME_HEADER: usize = 8;
/// Bytes of a body before its key: partition and key length.
const BODY_HEADER: usize = 8;
/// The longest body a frame may announce: a key and value far past the
/// protocol's limits. A longer one is damage, not a record.
pub const MAX_BODY: usize = 128 * 1024 * 1024;
/// A segment is closed once it holds this much, so a checkpoint can trim
/// it and a restart after a crash has at most about two to read.
pub const SEGMENT_BYTES: u64 = 8 * 1024 * 1024;
/// Suffix of a segment's file name.
const SUFFIX: &str = ".journal";

/// One journaled write: the record now stored under `(partition, key)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The record's partition.
    pub partition: u32,
    /// The key within the partition.
    pub key: Vec<u8>,
    /// The stored record (`record::encode`), verified when applied.
    pub record: Vec<u8>,
}

/// Why decoding a segment stopped before its end.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JournalError {
    /// The file does not start with [`MAGIC`].
    #[error("not a levee journal segment (no magic)")]
    NoMagic,
    /// Fewer bytes than a frame header, or than the body it announces.
    #[error("frame at byte {offset} is cut short")]
    Truncated {
        /// Where the frame starts.
        offset: usize,
    },
    /// A body length past [`MAX_BODY`] or too short for its own header.
    #[error("frame at byte {offset} announces an impossible body of {len} bytes")]
    BadLength {
        /// Where the frame starts.
        offset: usize,
        /// The announced length.
        len: u32,
    },
    /// The body does not match its crc.
    #[error("frame at byte {offset} fails its crc32c check")]
    Checksum {
        /// Where the frame starts.
        offset: usize,
    },
}

/// What a segment held.
#[derive(Debug, Default)]
pub struct Decoded {
    /// The frames that checked, in order.
    pub entries: Vec<Entry>,
    /// Bytes up to the end of the last good frame (the magic included).
    pub good_bytes: usize,
    /// Why decoding stopped before the end, if it did: after a crash, the
    /// frames the last batch did not finish writing.
    pub stopped: Option<JournalError>,
}

/// Appends the frame of one entry to `out`.
pub fn encode_frame(out: &mut Vec<u8>, partition: u32, key: &[u8], record: &[u8]) {
    let body_len = BODY_HEADER + key.len() + record.len();
    let start = out.len();
    out.reserve(FRAME_HEADER + body_len);
    out.extend_from_slice(&(body_len as u32).to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&partition.to_be_bytes());
    out.extend_from_slice(&(key.len() as u32).to_be_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(record);
    let crc = crc32c::crc32c(out.get(start + FRAME_HEADER..).unwrap_or_default());
    if let Some(slot) = out.get_mut(start + 4..start + FRAME_HEADER) {
        slot.copy_from_slice(&crc.to_be_bytes());
    }
}

/// Decodes a whole segment. Never panics; an error is only a file that is
/// not a segment at all. A segment shorter than the magic is one whose
/// creation was cut short, and empty.
pub fn decode_segment(bytes: &[u8]) -> Result<Decoded, JournalError> {
    let Some(frames) = bytes.strip_prefix(MAGIC.as_slice()) else {
        if MAGIC.starts_with(bytes) {
            return Ok(Decoded::default());
        }
        return Err(JournalError::NoMagic);
    };
    let mut decoded = Decoded {
        good_bytes: MAGIC.len(),
        ..Decoded::default()
    };
    let mut rest = frames;
    while !rest.is_empty() {
        let offset = bytes.len() - rest.len();
        match decode_frame(rest, offset) {
            Ok((entry, used)) => {
                decoded.entries.push(entry);
                rest = rest.get(used..).unwrap_or_default();
                decoded.good_bytes = bytes.len() - rest.len();
            }
            Err(e) => {
                decoded.stopped = Some(e);
                break;
            }
        }
    }
    Ok(decoded)
}

/// One frame at the start of `bytes` (at `offset` in its segment), and the
/// bytes it took.
fn decode_frame(bytes: &[u8], offset: usize) -> Result<(Entry, usize), JournalError> {
    let truncated = JournalError::Truncated { offset };
    let len = be_u32(bytes, 0).ok_or(truncated.clone())?;
    let crc = be_u32(bytes, 4).ok_or(truncated.clone())?;
    let body_len = len as usize;
    if !(BODY_HEADER..=MAX_BODY).contains(&body_len) {
        return Err(JournalError::BadLength { offset, len });
    }
    let body = bytes
        .get(FRAME_HEADER..FRAME_HEADER + body_len)
        .ok_or(truncated)?;
    if crc32c::crc32c(body) != crc {
        return Err(JournalError::Checksum { offset });
    }
    let bad_length = JournalError::BadLength { offset, len };
    let partition = be_u32(body, 0).ok_or(bad_length.clone())?;
    let key_len = be_u32(body, 4).ok_or(bad_length.clone())? as usize;
    let key = body
        .get(BODY_HEADER..BODY_HEADER.saturating_add(key_len))
        .ok_or(bad_length.clone())?;
    let record = body
        .get(BODY_HEADER + key_len..)
        .ok_or(bad_length.clone())?;
    let entry = Entry {
        partition,
        key: key.to_vec(),
        record: record.to_vec(),
    };
    Ok((entry, FRAME_HEADER + body_len))
}

fn be_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let raw = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes(raw.try_into().ok()?))
}

/// A segment that is no longer written to, waiting for its shards to be
/// flushed before it is deleted.
#[derive(Debug, Clone)]
pub(super) struct Closed {
    /// Its sequence number; segments are trimmed in this order.
    pub seq: u64,
    /// The shards it holds records of.
    pub shards: BTreeSet<usize>,
}

/// The segments found when storage opened, read.
pub(super) struct Recovered {
    /// Each shard's records, in journal order, to apply when it opens.
    pub pending: Vec<Vec<Entry>>,
    /// The segments read, oldest first.
    pub closed: Vec<Closed>,
    /// The sequence number for the next segment.
    pub next_seq: u64,
}

/// The journal's directory inside a storage directory.
pub(super) fn dir(root: &Path) -> PathBuf {
    root.join("journal")
}

/// The file of segment `seq`.
pub(super) fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016x}{SUFFIX}"))
}

/// Reads every segment left in `dir` (creating the directory if there is
/// none) and sorts their records by shard, `shards` of them. Segments that
/// hold no record are deleted at once.
pub(super) fn recover(dir: &Path, shards: usize) -> Result<Recovered, StorageError> {
    let io = |what: &str, at: &Path, e: std::io::Error| {
        StorageError::Layout(format!("cannot {what} {}: {e}", at.display()))
    };
    if !dir.exists() {
        std::fs::create_dir_all(dir).map_err(|e| io("create", dir, e))?;
        sync_dir(dir.parent().unwrap_or(dir)).map_err(|e| io("sync", dir, e))?;
    }
    let mut seqs = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io("list", dir, e))? {
        let entry = entry.map_err(|e| io("list", dir, e))?;
        let name = entry.file_name();
        let Some(seq) = name
            .to_str()
            .and_then(|n| n.strip_suffix(SUFFIX))
            .filter(|n| n.len() == 16)
            .and_then(|n| u64::from_str_radix(n, 16).ok())
        else {
            continue;
        };
        seqs.push(seq);
    }
    seqs.sort_unstable();
    let mut recovered = Recovered {
        pending: vec![Vec::new(); shards.max(1)],
        closed: Vec::new(),
        next_seq: seqs.last().map_or(1, |last| last.saturating_add(1)),
    };
    for seq in seqs {
        let path = segment_path(dir, seq);
        let bytes = std::fs::read(&path).map_err(|e| io("read", &path, e))?;
        let decoded = decode_segment(&bytes).map_err(|e| {
            StorageError::Layout(format!(
                "{}: {e}; move it away only if its records are on the other replicas",
                path.display()
            ))
        })?;
        if let Some(stopped) = &decoded.stopped {
            // After a crash this is the last batch, cut short; its writers
            // were never told their writes were durable.
            tracing::warn!(
                segment = %path.display(),
                records = decoded.entries.len(),
                ignored_bytes = bytes.len() - decoded.good_bytes,
                %stopped,
                "journal segment read up to a frame cut short"
            );
        }
        let mut held = BTreeSet::new();
        for entry in decoded.entries {
            let shard = entry.partition as usize % shards.max(1);
            held.insert(shard);
            if let Some(list) = recovered.pending.get_mut(shard) {
                list.push(entry);
            }
        }
        if held.is_empty() {
            remove_segment(dir, seq)?;
        } else {
            recovered.closed.push(Closed { seq, shards: held });
        }
    }
    Ok(recovered)
}

/// Creates segment `seq`, its magic written and synced, and its name
/// made durable in the directory before any record is written to it.
pub(super) fn create_segment(dir: &Path, seq: u64) -> std::io::Result<std::fs::File> {
    let path = segment_path(dir, seq);
    let mut file = std::fs::OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)?;
    file.write_all(MAGIC)?;
    file.sync_all()?;
    sync_dir(dir)?;
    Ok(file)
}

/// Deletes segment `seq` and makes the deletion durable before the next
/// one, so that the segments left after a crash are always the newest
/// ones: an older record replayed without a newer one of its key that was
/// trimmed could bring back a value whose tombstone was since purged.
pub(super) fn remove_segment(dir: &Path, seq: u64) -> Result<(), StorageError> {
    let path = segment_path(dir, seq);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(StorageError::Flush(format!(
                "cannot remove {}: {e}",
                path.display()
            )));
        }
    }
    sync_dir(dir).map_err(|e| StorageError::Flush(format!("cannot sync {}: {e}", dir.display())))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn segment(entries: &[(u32, &[u8], &[u8])]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        for (partition, key, record) in entries {
            encode_frame(&mut out, *partition, key, record);
        }
        out
    }

    #[test]
    fn frames_decode_to_what_was_encoded() {
        let bytes = segment(&[(3, b"k", b"rec"), (7, b"", b""), (0, b"key2", b"r")]);
        let decoded = decode_segment(&bytes).unwrap();
        assert_eq!(decoded.stopped, None);
        assert_eq!(decoded.good_bytes, bytes.len());
        let got: Vec<_> = decoded
            .entries
            .iter()
            .map(|e| (e.partition, e.key.as_slice(), e.record.as_slice()))
            .collect();
        assert_eq!(
            got,
            vec![
                (3, &b"k"[..], &b"rec"[..]),
                (7, &b""[..], &b""[..]),
                (0, &b"key2"[..], &b"r"[..])
            ]
        );
    }

    #[test]
    fn a_cut_last_frame_stops_decoding_and_keeps_the_frames_before() {
        let whole = segment(&[(1, b"a", b"one"), (2, b"b", b"two")]);
        let first = segment(&[(1, b"a", b"one")]).len();
        for cut in first..whole.len() {
            let decoded = decode_segment(&whole[..cut]).unwrap();
            assert_eq!(decoded.entries.len(), 1, "cut at {cut}");
            assert_eq!(decoded.good_bytes, first);
            assert_eq!(decoded.stopped.is_some(), cut > first, "cut at {cut}");
        }
    }

    #[test]
    fn a_damaged_frame_stops_decoding() {
        let mut bytes = segment(&[(1, b"a", b"one"), (2, b"b", b"two")]);
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let decoded = decode_segment(&bytes).unwrap();
        assert_eq!(decoded.entries.len(), 1);
        assert!(matches!(
            decoded.stopped,
            Some(JournalError::Checksum { .. })
        ));
        // Zeros where a frame should be (a tail the file system extended
        // but never wrote) are no record either.
        let mut zeros = segment(&[(1, b"a", b"one")]);
        zeros.extend_from_slice(&[0; 64]);
        let decoded = decode_segment(&zeros).unwrap();
        assert_eq!(decoded.entries.len(), 1);
        assert!(matches!(
            decoded.stopped,
            Some(JournalError::BadLength { .. })
        ));
    }

    #[test]
    fn a_file_without_the_magic_is_not_a_segment_unless_cut_in_it() {
        assert!(matches!(
            decode_segment(b"something else entirely"),
            Err(JournalError::NoMagic)
        ));
        for cut in 0..MAGIC.len() {
            let decoded = decode_segment(&MAGIC[..cut]).unwrap();
            assert!(decoded.entries.is_empty() && decoded.stopped.is_none());
        }
    }

    #[test]
    fn recovery_sorts_records_by_shard_and_drops_empty_segments() {
        let dir = tempfile::tempdir().unwrap();
        let journal = dir.path().join("journal");
        std::fs::create_dir(&journal).unwrap();
        std::fs::write(
            segment_path(&journal, 4),
            segment(&[(5, b"a", b"x"), (2, b"b", b"y")]),
        )
        .unwrap();
        std::fs::write(segment_path(&journal, 6), segment(&[(9, b"c", b"z")])).unwrap();
        std::fs::write(segment_path(&journal, 7), MAGIC).unwrap();
        std::fs::write(journal.join("not-a-segment"), b"ignored").unwrap();
        let recovered = recover(&journal, 4).unwrap();
        assert_eq!(recovered.next_seq, 8);
        let seqs: Vec<_> = recovered.closed.iter().map(|c| c.seq).collect();
        assert_eq!(seqs, vec![4, 6]);
        assert_eq!(
            recovered.closed[0].shards,
            BTreeSet::from([1, 2]),
            "partitions 5 and 2 of 4 shards"
        );
        let keys = |shard: usize| -> Vec<Vec<u8>> {
            recovered.pending[shard]
                .iter()
                .map(|e| e.key.clone())
                .collect()
        };
        assert_eq!(keys(1), vec![b"a".to_vec(), b"c".to_vec()]);
        assert_eq!(keys(2), vec![b"b".to_vec()]);
        assert!(!segment_path(&journal, 7).exists(), "an empty segment");
        assert!(segment_path(&journal, 4).exists());
    }

    proptest! {
        #[test]
        fn any_bytes_decode_without_panicking_and_good_frames_reencode(
            body in proptest::collection::vec(any::<u8>(), 0..256),
            entries in proptest::collection::vec(
                (any::<u32>(), proptest::collection::vec(any::<u8>(), 0..8),
                 proptest::collection::vec(any::<u8>(), 0..8)), 0..6),
        ) {
            let mut bytes = MAGIC.to_vec();
            for (p, k, r) in &entries {
                encode_frame(&mut bytes, *p, k, r);
            }
            let good = bytes.len();
            bytes.extend_from_slice(&body);
            let decoded = decode_segment(&bytes).unwrap();
            prop_assert!(decoded.entries.len() >= entries.len());
            prop_assert!(decoded.good_bytes >= good);
            let mut again = MAGIC.to_vec();
            for e in &decoded.entries {
                encode_frame(&mut again, e.partition, &e.key, &e.record);
            }
            prop_assert_eq!(&again[..], &bytes[..decoded.good_bytes]);
        }
    }
}
