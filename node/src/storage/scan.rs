//! Reading a partition in key order: the basis of anti-entropy digests
//! and of partition transfers (recovery).

use super::StorageError;
use super::engine::Storage;
use super::record::{self, Record, Version};

/// Bytes a record costs in a transfer page besides its key and value:
/// the version (16) and a little framing. Counted so that a page of many
/// tiny records is still paced by what it really puts on the wire.
pub const RECORD_OVERHEAD_BYTES: u64 = 24;

/// A page of a partition's records in key order (key, record), and
/// whether more follow it.
pub type RangePage = (Vec<(Vec<u8>, Record)>, bool);

/// The size a record is accounted at in a transfer page.
pub fn record_bytes(key: &[u8], value: Option<&[u8]>) -> u64 {
    key.len() as u64 + value.map_or(0, |v| v.len() as u64) + RECORD_OVERHEAD_BYTES
}

/// One record's identity, without its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The key.
    pub key: Vec<u8>,
    /// Its version.
    pub version: Version,
    /// Whether it is a tombstone.
    pub tombstone: bool,
}

/// The bucket of a key when a partition is split into `buckets` hash
/// buckets for digest comparison.
pub fn bucket_of(key: &[u8], buckets: u32) -> u32 {
    // Seeded differently from partition_of, so that a partition's keys
    // spread over all of its buckets.
    (xxhash_rust::xxh3::xxh3_64_with_seed(key, 0x006c_6576_6565) % u64::from(buckets.max(1))) as u32
}

/// A record's contribution to its bucket's digest. Digests add these up
/// (wrapping), so the digest does not depend on the order of records.
pub fn entry_hash(key: &[u8], version: Version, tombstone: bool) -> u64 {
    let mut buf = Vec::with_capacity(key.len() + 17);
    buf.extend_from_slice(key);
    buf.extend_from_slice(&version.hlc.to_be_bytes());
    buf.extend_from_slice(&version.writer.to_be_bytes());
    buf.push(u8::from(tombstone));
    xxhash_rust::xxh3::xxh3_64(&buf)
}

impl Storage {
    /// Calls `visit` for every record of a partition, in key order. Each
    /// is checked against its crc (no copy of its value); a damaged one is
    /// counted and left out, as if absent, so that anti-entropy's digests
    /// differ from a healthy replica's and its copy comes back to replace
    /// it (a transfer does not carry it either).
    pub fn scan_partition(
        &self,
        partition: u32,
        mut visit: impl FnMut(Entry) -> bool,
    ) -> Result<(), StorageError> {
        for item in self
            .shard(partition)?
            .tree()
            .scan_prefix(partition.to_be_bytes())
        {
            let (k, raw) = item?;
            let key = k.get(4..).unwrap_or_default().to_vec();
            let (version, tombstone) = match record::decode_verified_header(&raw) {
                Ok(header) => header,
                Err(error) => {
                    self.note_damaged(partition, &key, &error);
                    continue;
                }
            };
            if !visit(Entry {
                key,
                version,
                tombstone,
            }) {
                break;
            }
        }
        Ok(())
    }

    /// Tombstones of a partition whose version is older than
    /// `before_ms` (wall-clock milliseconds), at most `limit`.
    pub fn old_tombstones(
        &self,
        partition: u32,
        before_ms: u64,
        limit: usize,
    ) -> Result<Vec<Entry>, StorageError> {
        let mut out = Vec::new();
        self.scan_partition(partition, |e| {
            if e.tombstone && crate::hlc::physical_ms(e.version.hlc) < before_ms {
                out.push(e);
            }
            out.len() < limit
        })?;
        Ok(out)
    }

    /// Per-bucket digests of a partition, and the number of records
    /// (tombstones included) it holds.
    pub fn digest(&self, partition: u32, buckets: u32) -> Result<(Vec<u64>, u64), StorageError> {
        let mut digest = vec![0u64; buckets.max(1) as usize];
        let mut count = 0;
        self.scan_partition(partition, |e| {
            count += 1;
            let b = bucket_of(&e.key, buckets) as usize;
            if let Some(slot) = digest.get_mut(b) {
                *slot = slot.wrapping_add(entry_hash(&e.key, e.version, e.tombstone));
            }
            true
        })?;
        Ok((digest, count))
    }

    /// Full records (values verified against their checksums) of a
    /// partition in key order, strictly after `after`: at least one if any
    /// is left, then more while the page stays within `max_bytes` (as
    /// [`record_bytes`] counts them) and `max_records`. Returns the page
    /// and whether more records follow it.
    ///
    /// Starts at `after` with a range read, so paging through a large
    /// partition costs each record once rather than rescanning the prefix.
    pub fn range_after(
        &self,
        partition: u32,
        after: Option<&[u8]>,
        max_bytes: u64,
        max_records: usize,
    ) -> Result<RangePage, StorageError> {
        let prefix = partition.to_be_bytes();
        let start = match after {
            Some(a) => {
                let mut k = Vec::with_capacity(prefix.len() + a.len());
                k.extend_from_slice(&prefix);
                k.extend_from_slice(a);
                std::ops::Bound::Excluded(k)
            }
            None => std::ops::Bound::Included(prefix.to_vec()),
        };
        let mut out = Vec::new();
        let mut bytes = 0u64;
        for item in self
            .shard(partition)?
            .tree()
            .range::<Vec<u8>, _>((start, std::ops::Bound::Unbounded))
        {
            let (k, raw) = item?;
            let Some(key) = k.strip_prefix(prefix.as_slice()) else {
                // Past the partition's last key.
                return Ok((out, false));
            };
            // A damaged record is not sent on: the target gets it from a
            // healthy replica's anti-entropy instead.
            let record = match record::decode(&raw) {
                Ok(record) => record,
                Err(error) => {
                    self.note_damaged(partition, key, &error);
                    continue;
                }
            };
            let size = record_bytes(key, record.value.as_deref());
            if !out.is_empty() && (out.len() >= max_records || bytes + size > max_bytes) {
                return Ok((out, true));
            }
            bytes += size;
            out.push((key.to_vec(), record));
        }
        Ok((out, false))
    }

    /// The entries of one bucket after `after` (exclusive), at most
    /// `limit`, and whether more follow.
    pub fn bucket_entries(
        &self,
        partition: u32,
        buckets: u32,
        bucket: u32,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<(Vec<Entry>, bool), StorageError> {
        let mut out = Vec::new();
        let mut more = false;
        self.scan_partition(partition, |e| {
            if after.is_some_and(|a| e.key.as_slice() <= a) || bucket_of(&e.key, buckets) != bucket
            {
                return true;
            }
            if out.len() >= limit {
                more = true;
                return false;
            }
            out.push(e);
            true
        })?;
        Ok((out, more))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{Durability, StorageConfig};

    fn open(dir: &tempfile::TempDir) -> Storage {
        let mut config = StorageConfig::new(dir.path());
        config.durability = Durability::Periodic;
        Storage::open(&config).unwrap()
    }

    fn v(hlc: u64) -> Version {
        Version { hlc, writer: 1 }
    }

    #[tokio::test]
    async fn equal_contents_give_equal_digests_in_any_write_order() {
        let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a, b) = (open(&da), open(&db));
        for i in 0..100u32 {
            a.apply(3, &i.to_be_bytes(), v(1), Some(b"x"))
                .await
                .unwrap();
        }
        for i in (0..100u32).rev() {
            b.apply(3, &i.to_be_bytes(), v(1), Some(b"x"))
                .await
                .unwrap();
        }
        assert_eq!(a.digest(3, 16).unwrap(), b.digest(3, 16).unwrap());
        assert_eq!(a.digest(3, 16).unwrap().1, 100);
        b.apply(3, &7u32.to_be_bytes(), v(2), None).await.unwrap();
        let (da_, db_) = (a.digest(3, 16).unwrap().0, b.digest(3, 16).unwrap().0);
        let differing: Vec<_> = (0..16).filter(|i| da_[*i] != db_[*i]).collect();
        assert_eq!(
            differing,
            vec![bucket_of(&7u32.to_be_bytes(), 16) as usize],
            "only the changed key's bucket differs"
        );
    }

    #[tokio::test]
    async fn range_pages_cover_a_partition_once_in_key_order() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(&dir);
        for i in 0..300u32 {
            let value = vec![b'v'; (i % 50) as usize];
            s.apply(5, &i.to_be_bytes(), v(1), Some(&value))
                .await
                .unwrap();
        }
        s.apply(5, &1000u32.to_be_bytes(), v(2), None)
            .await
            .unwrap();
        // Neighbouring partitions must not leak into the page.
        s.apply(4, b"before", v(1), Some(b"x")).await.unwrap();
        s.apply(6, b"after", v(1), Some(b"x")).await.unwrap();
        let mut keys = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let (page, more) = s.range_after(5, after.as_deref(), 500, 17).unwrap();
            assert!(!page.is_empty() && page.len() <= 17);
            let bytes: u64 = page
                .iter()
                .map(|(k, r)| record_bytes(k, r.value.as_deref()))
                .sum();
            assert!(bytes <= 500, "page of {bytes} bytes");
            after = page.last().map(|(k, _)| k.clone());
            keys.extend(page.into_iter().map(|(k, _)| k));
            if !more {
                break;
            }
        }
        let expected: Vec<Vec<u8>> = (0..300u32)
            .chain([1000])
            .map(|i| i.to_be_bytes().to_vec())
            .collect();
        assert_eq!(keys, expected);
        assert_eq!(
            s.range_after(5, Some(&1000u32.to_be_bytes()), 500, 17)
                .unwrap(),
            (Vec::new(), false)
        );
    }

    #[tokio::test]
    async fn a_record_larger_than_the_page_still_comes_alone() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(&dir);
        s.apply(1, b"a", v(1), Some(&[0u8; 4096])).await.unwrap();
        s.apply(1, b"b", v(1), Some(b"small")).await.unwrap();
        let (page, more) = s.range_after(1, None, 100, 10).unwrap();
        assert_eq!(page.len(), 1);
        assert!(more);
        assert_eq!(page[0].1.value.as_deref().map(<[u8]>::len), Some(4096));
    }

    #[tokio::test]
    async fn bucket_entries_page_in_key_order() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(&dir);
        for i in 0..200u32 {
            s.apply(1, &i.to_be_bytes(), v(1), Some(b"x"))
                .await
                .unwrap();
        }
        s.apply(2, b"other partition", v(1), Some(b"x"))
            .await
            .unwrap();
        let mut all = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let (page, more) = s.bucket_entries(1, 4, 2, after.as_deref(), 7).unwrap();
            assert!(page.len() <= 7);
            after = page.last().map(|e| e.key.clone());
            all.extend(page);
            if !more {
                break;
            }
        }
        let expected: Vec<Vec<u8>> = (0..200u32)
            .map(|i| i.to_be_bytes().to_vec())
            .filter(|k| bucket_of(k, 4) == 2)
            .collect();
        assert_eq!(
            all.iter().map(|e| e.key.clone()).collect::<Vec<_>>(),
            expected
        );
    }
}
