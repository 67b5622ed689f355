//! Prefix scans: one bounded page of a partition's live records whose keys
//! start with a prefix, in key order, from this node's own copy (what
//! `levee keys` and `levee scan` read). Tombstones are skipped but still
//! move the cursor, so a page of nothing but deleted keys ends, and the
//! next one starts past them.

use std::ops::Bound;

use super::StorageError;
use super::engine::{Storage, printable};
use super::record::{self, Version};
use super::scan::record_bytes;

/// How much one page may hold and read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageBound {
    /// Most live entries returned (at least 1 is always allowed).
    pub entries: usize,
    /// Bytes of entries (as [`record_bytes`] counts them) the page stays
    /// within; a first entry larger than this still comes, alone.
    pub bytes: u64,
    /// Most records read, tombstones included (at least 1).
    pub examined: usize,
}

/// A live record of a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The key, without the partition.
    pub key: Vec<u8>,
    /// Its version.
    pub version: Version,
    /// The value, when the scan asked for values.
    pub value: Option<Vec<u8>>,
}

/// One page and where the next starts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PrefixPage {
    /// Live records in key order.
    pub entries: Vec<Listed>,
    /// The last key this page read, when a record with the prefix follows
    /// it: the next page starts strictly after it. `None`: the end.
    pub next: Option<Vec<u8>>,
}

/// A record as a page reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The key, without the partition.
    pub key: Vec<u8>,
    /// Its version.
    pub version: Version,
    /// Whether it is a tombstone.
    pub tombstone: bool,
    /// The value, when values are read (never for a tombstone).
    pub value: Option<Vec<u8>>,
}

/// Where a page starts: strictly after the cursor, or at the prefix when
/// there is no cursor or it sorts before the prefix.
pub fn resume_from(prefix: &[u8], after: Option<&[u8]>) -> Bound<Vec<u8>> {
    match after {
        Some(a) if a >= prefix => Bound::Excluded(a.to_vec()),
        _ => Bound::Included(prefix.to_vec()),
    }
}

/// Fills a page from records in key order that all carry the prefix:
/// live ones while the bound allows, tombstones skipped. Pure, so the
/// paging is tested without a disk.
pub fn fill_page<E>(
    records: impl IntoIterator<Item = Result<Seen, E>>,
    bound: PageBound,
) -> Result<PrefixPage, E> {
    let (max_entries, max_examined) = (bound.entries.max(1), bound.examined.max(1));
    let mut page = PrefixPage::default();
    let mut bytes = 0u64;
    // The last record read if it was a tombstone (else the cursor is the
    // last entry's key).
    let mut skipped: Option<Vec<u8>> = None;
    for (examined, record) in records.into_iter().enumerate() {
        let record = record?;
        let size = record_bytes(&record.key, record.value.as_deref());
        let full = examined >= max_examined
            || (!page.entries.is_empty()
                && (page.entries.len() >= max_entries || bytes.saturating_add(size) > bound.bytes));
        if full {
            page.next = skipped.or_else(|| page.entries.last().map(|e| e.key.clone()));
            return Ok(page);
        }
        if record.tombstone {
            skipped = Some(record.key);
            continue;
        }
        skipped = None;
        bytes = bytes.saturating_add(size);
        page.entries.push(Listed {
            key: record.key,
            version: record.version,
            value: record.value,
        });
    }
    Ok(page)
}

impl Storage {
    /// One page of the live records of `partition` whose keys start with
    /// `prefix`, strictly after `after`, within `bound`; with their values
    /// (checksums verified) when `values`, else from the headers alone.
    /// Starts with a range read at the cursor, so paging through a large
    /// partition reads each record once.
    pub fn prefix_page(
        &self,
        partition: u32,
        prefix: &[u8],
        after: Option<&[u8]>,
        values: bool,
        bound: PageBound,
    ) -> Result<PrefixPage, StorageError> {
        let stored = |key: &[u8]| [partition.to_be_bytes().as_slice(), key].concat();
        let start = match resume_from(prefix, after) {
            Bound::Excluded(k) => Bound::Excluded(stored(&k)),
            Bound::Included(k) => Bound::Included(stored(&k)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let wanted = stored(prefix);
        let records = self
            .shard(partition)?
            .tree()
            .range::<Vec<u8>, _>((start, Bound::Unbounded))
            .map_while(|item| {
                let (k, raw) = match item {
                    Ok(kv) => kv,
                    Err(e) => return Some(Err(StorageError::from(e))),
                };
                // Past the prefix (or the partition): the page is done.
                if !k.starts_with(&wanted) {
                    return None;
                }
                let key = k.get(4..).unwrap_or_default().to_vec();
                Some(read_seen(partition, key, &raw, values))
            });
        fill_page(records, bound)
    }
}

fn read_seen(partition: u32, key: Vec<u8>, raw: &[u8], values: bool) -> Result<Seen, StorageError> {
    let corrupt = |error| StorageError::Corrupt {
        partition,
        key: printable(&key),
        error,
    };
    if values {
        let record = record::decode(raw).map_err(corrupt)?;
        Ok(Seen {
            tombstone: record.value.is_none(),
            version: record.version,
            value: record.value,
            key,
        })
    } else {
        let (version, tombstone) = record::decode_header(raw).map_err(corrupt)?;
        Ok(Seen {
            key,
            version,
            tombstone,
            value: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::convert::Infallible;

    use proptest::prelude::*;

    use super::*;
    use crate::storage::{Durability, StorageConfig};

    fn v(hlc: u64) -> Version {
        Version { hlc, writer: 1 }
    }

    /// One page over an in-memory partition, as `prefix_page` reads sled.
    fn page_of(
        data: &BTreeMap<Vec<u8>, Option<Vec<u8>>>,
        prefix: &[u8],
        after: Option<&[u8]>,
        bound: PageBound,
    ) -> PrefixPage {
        let records = data
            .range((resume_from(prefix, after), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, value)| {
                Ok::<_, Infallible>(Seen {
                    key: k.clone(),
                    version: v(1),
                    tombstone: value.is_none(),
                    value: value.clone(),
                })
            });
        match fill_page(records, bound) {
            Ok(page) => page,
            Err(never) => match never {},
        }
    }

    proptest! {
        /// Paging with the cursor returns every live key with the prefix
        /// exactly once, in order, each page within its bound, and ends.
        #[test]
        fn pages_cover_the_live_keys_with_the_prefix_once(
            data in proptest::collection::btree_map(
                proptest::collection::vec(0u8..3, 0..5),
                proptest::option::weighted(0.7, proptest::collection::vec(any::<u8>(), 0..40)),
                0..60,
            ),
            prefix in proptest::collection::vec(0u8..3, 0..3),
            entries in 1usize..6,
            bytes in 1u64..200,
            examined in 1usize..8,
        ) {
            let bound = PageBound { entries, bytes, examined };
            let mut seen = Vec::new();
            let mut after: Option<Vec<u8>> = None;
            for _ in 0..=data.len() {
                let page = page_of(&data, &prefix, after.as_deref(), bound);
                prop_assert!(page.entries.len() <= entries);
                let size: u64 = page
                    .entries
                    .iter()
                    .map(|e| record_bytes(&e.key, e.value.as_deref()))
                    .sum();
                prop_assert!(page.entries.len() <= 1 || size <= bytes, "page of {} bytes", size);
                seen.extend(page.entries.into_iter().map(|e| (e.key, e.value)));
                match page.next {
                    Some(next) => {
                        prop_assert!(after.as_ref().is_none_or(|a| next > *a), "the cursor moves on");
                        after = Some(next);
                    }
                    None => break,
                }
            }
            let expected: Vec<_> = data
                .iter()
                .filter(|(k, value)| k.starts_with(&prefix) && value.is_some())
                .map(|(k, value)| (k.clone(), value.clone()))
                .collect();
            prop_assert_eq!(seen, expected);
        }
    }

    #[test]
    fn a_cursor_before_the_prefix_starts_at_the_prefix() {
        assert_eq!(
            resume_from(b"logs/", Some(b"a")),
            Bound::Included(b"logs/".to_vec())
        );
        assert_eq!(
            resume_from(b"logs/", Some(b"logs/7")),
            Bound::Excluded(b"logs/7".to_vec())
        );
        assert_eq!(resume_from(b"", None), Bound::Included(Vec::new()));
    }

    #[tokio::test]
    async fn a_page_reads_one_partition_and_prefix_and_skips_tombstones() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = StorageConfig::new(dir.path());
        config.durability = Durability::Periodic;
        let s = Storage::open(&config).unwrap();
        for key in ["logs/a", "logs/b", "logs/c", "logz", "log", "other"] {
            s.apply(5, key.as_bytes(), v(1), Some(key.as_bytes()))
                .await
                .unwrap();
        }
        s.apply(5, b"logs/b", v(2), None).await.unwrap();
        // The same prefix in the neighbouring partitions stays out.
        s.apply(4, b"logs/x", v(1), Some(b"x")).await.unwrap();
        s.apply(6, b"logs/y", v(1), Some(b"y")).await.unwrap();
        let wide = PageBound {
            entries: 100,
            bytes: 1 << 20,
            examined: 100,
        };
        let page = s.prefix_page(5, b"logs/", None, true, wide).unwrap();
        let listed: Vec<_> = page
            .entries
            .iter()
            .map(|e| (e.key.as_slice(), e.value.as_deref()))
            .collect();
        assert_eq!(
            listed,
            [
                (&b"logs/a"[..], Some(&b"logs/a"[..])),
                (&b"logs/c"[..], Some(&b"logs/c"[..]))
            ]
        );
        assert_eq!(page.next, None);
        let keys_only = s.prefix_page(5, b"logs/", None, false, wide).unwrap();
        assert!(keys_only.entries.iter().all(|e| e.value.is_none()));
        assert_eq!(keys_only.entries.len(), 2);

        // Two records read: the live one and the tombstone; the cursor
        // is the tombstone, and the next page starts past it.
        let narrow = PageBound {
            examined: 2,
            ..wide
        };
        let first = s.prefix_page(5, b"logs/", None, false, narrow).unwrap();
        assert_eq!(first.entries.len(), 1);
        assert_eq!(first.next.as_deref(), Some(&b"logs/b"[..]));
        let rest = s
            .prefix_page(5, b"logs/", first.next.as_deref(), false, narrow)
            .unwrap();
        assert_eq!(rest.entries.len(), 1);
        assert_eq!(rest.entries[0].key, b"logs/c");
        assert_eq!(rest.next, None);
    }
}
