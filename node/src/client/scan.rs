//! Prefix scans: the keys (and values) that start with a prefix, read
//! partition by partition, page by page, from one replica of each.
//!
//! Keys are spread over partitions by their hash, so every partition is
//! visited; each page goes to one replica with the same failover, timeouts
//! and retry policy as a get ([`Client::partition_call`]). One replica's
//! copy is not a quorum read: a scan may miss a write that so far reached
//! only the other replicas, and may show a key deleted there.

use super::requests::RouteBy;
use super::{Client, ClientError, unexpected};
use crate::proto::limits::MAX_SCAN_ENTRIES;
use crate::proto::{ClientRequest, Response, ScanEntry, WireError};

/// Where a scan stands: the partition it reads, the cursor within it and
/// how many entries it may still return. Pure: [`Scan`] asks the nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanCursor {
    partition: u32,
    after: Option<Vec<u8>>,
    left: usize,
    /// The caller's limit cut the scan short (more may match).
    cut: bool,
}

/// The next page a scan asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageAsk<'a> {
    /// The partition.
    pub partition: u32,
    /// Resume strictly after this key.
    pub after: Option<&'a [u8]>,
    /// Most entries wanted.
    pub limit: u32,
}

impl ScanCursor {
    /// A scan that returns at most `limit` entries.
    pub fn new(limit: usize) -> Self {
        Self {
            partition: 0,
            after: None,
            left: limit,
            cut: false,
        }
    }

    /// The next page to ask for among `partitions`, or `None` when the
    /// scan is over (every partition read, or the limit reached).
    pub fn ask(&self, partitions: u32) -> Option<PageAsk<'_>> {
        if self.left == 0 || self.partition >= partitions {
            return None;
        }
        Some(PageAsk {
            partition: self.partition,
            after: self.after.as_deref(),
            limit: u32::try_from(self.left)
                .unwrap_or(u32::MAX)
                .min(MAX_SCAN_ENTRIES),
        })
    }

    /// Takes a page's answer: its entries up to the limit, and the cursor
    /// moved to `next`, or to the next partition once this one is read.
    /// A cursor that does not move forward is refused: a node answering
    /// so would otherwise keep the scan asking for ever.
    pub fn take(
        &mut self,
        mut entries: Vec<ScanEntry>,
        next: Option<Vec<u8>>,
    ) -> Result<Vec<ScanEntry>, WireError> {
        if let (Some(next), Some(after)) = (&next, &self.after)
            && next <= after
        {
            return Err(WireError::Malformed {
                detail: format!(
                    "a scan page of partition {} did not move its cursor forward",
                    self.partition
                ),
            });
        }
        if entries.len() > self.left {
            entries.truncate(self.left);
            self.cut = true;
        }
        self.left -= entries.len();
        match next {
            Some(next) => {
                self.after = Some(next);
                self.cut |= self.left == 0;
            }
            None => {
                self.partition = self.partition.saturating_add(1);
                self.after = None;
            }
        }
        Ok(entries)
    }

    /// Whether the limit ended the scan with keys possibly left unread.
    pub fn cut_short(&self, partitions: u32) -> bool {
        self.cut || (self.left == 0 && self.partition < partitions)
    }
}

/// A scan in progress: call [`Scan::next_page`] until it gives `None`.
pub struct Scan<'a> {
    client: &'a Client,
    prefix: Vec<u8>,
    values: bool,
    cursor: ScanCursor,
    partitions: u32,
}

impl Client {
    /// Scans for the live keys starting with `prefix` (empty: every key),
    /// with their values when `values`, at most `limit` of them, in
    /// partition order, then key order within a partition (not overall key
    /// order). Each partition is read from one replica, not a quorum: a
    /// write that reached only the other replicas may be missing.
    pub fn scan(&self, prefix: &[u8], values: bool, limit: usize) -> Scan<'_> {
        Scan {
            client: self,
            prefix: prefix.to_vec(),
            values,
            cursor: ScanCursor::new(limit),
            partitions: 0,
        }
    }
}

impl Scan<'_> {
    /// The next entries (never an empty page), or `None` when the scan is
    /// over. Each page is one request, with the client's timeout and
    /// failover; an error ends the scan.
    pub async fn next_page(&mut self) -> Result<Option<Vec<ScanEntry>>, ClientError> {
        let limits = &self.client.config.limits;
        limits
            .key_length(&self.prefix)
            .map_err(ClientError::Invalid)?;
        if self.partitions == 0 {
            self.partitions = self.client.cached_map().await?.partitions;
        }
        while let Some(ask) = self.cursor.ask(self.partitions) {
            let request = |epoch| ClientRequest::Scan {
                partition: ask.partition,
                prefix: self.prefix.clone(),
                after: ask.after.map(<[u8]>::to_vec),
                limit: ask.limit,
                values: self.values,
                epoch,
            };
            let response = self
                .client
                .partition_call(RouteBy::Partition(ask.partition), request)
                .await?;
            let Response::Scanned { entries, next } = response else {
                return Err(unexpected(response));
            };
            let entries = self
                .cursor
                .take(entries, next)
                .map_err(ClientError::Server)?;
            if !entries.is_empty() {
                return Ok(Some(entries));
            }
        }
        Ok(None)
    }

    /// Whether the limit stopped the scan while keys may be left.
    pub fn cut_short(&self) -> bool {
        self.cursor.cut_short(self.partitions)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::storage::Version;

    fn entry(key: &[u8]) -> ScanEntry {
        ScanEntry {
            key: key.to_vec(),
            version: Version { hlc: 1, writer: 1 },
            value: None,
        }
    }

    #[test]
    fn a_read_partition_moves_the_scan_to_the_next_from_its_start() {
        let mut cursor = ScanCursor::new(10);
        let ask = cursor.ask(2).unwrap();
        assert_eq!((ask.partition, ask.after, ask.limit), (0, None, 10));
        cursor.take(vec![entry(b"a")], Some(b"a".to_vec())).unwrap();
        let ask = cursor.ask(2).unwrap();
        assert_eq!(
            (ask.partition, ask.after, ask.limit),
            (0, Some(&b"a"[..]), 9)
        );
        cursor.take(vec![entry(b"b")], None).unwrap();
        let ask = cursor.ask(2).unwrap();
        assert_eq!((ask.partition, ask.after), (1, None));
        cursor.take(Vec::new(), None).unwrap();
        assert_eq!(cursor.ask(2), None);
        assert!(!cursor.cut_short(2));
    }

    #[test]
    fn a_cursor_that_does_not_move_is_refused() {
        let mut cursor = ScanCursor::new(10);
        cursor.take(Vec::new(), Some(b"m".to_vec())).unwrap();
        assert!(cursor.take(Vec::new(), Some(b"m".to_vec())).is_err());
        assert!(cursor.take(Vec::new(), Some(b"a".to_vec())).is_err());
    }

    #[test]
    fn the_page_limit_is_capped_by_what_a_node_serves() {
        let cursor = ScanCursor::new(usize::MAX);
        assert_eq!(cursor.ask(1).unwrap().limit, MAX_SCAN_ENTRIES);
    }

    proptest! {
        /// However the nodes cut their pages (even past what was asked),
        /// the scan returns at most the limit, in order, and says it was
        /// cut short exactly when entries were left unreturned.
        #[test]
        fn the_limit_bounds_what_a_scan_returns(
            partitions in proptest::collection::vec(0usize..7, 1..5),
            page in 1usize..4,
            overshoot in 0usize..3,
            limit in 0usize..20,
        ) {
            let count = partitions.len() as u32;
            let mut cursor = ScanCursor::new(limit);
            let mut got = Vec::new();
            let mut asks = 0;
            while let Some(ask) = cursor.ask(count) {
                asks += 1;
                prop_assert!(asks < 1000, "the scan ends");
                let p = ask.partition as usize;
                let keys: Vec<Vec<u8>> =
                    (0..partitions[p]).map(|i| vec![p as u8, i as u8]).collect();
                let start = ask
                    .after
                    .map_or(0, |a| keys.iter().position(|k| k.as_slice() > a).unwrap_or(keys.len()));
                let end = (start + page.min(ask.limit as usize) + overshoot).min(keys.len());
                let entries: Vec<_> = keys[start..end].iter().map(|k| entry(k)).collect();
                let next = (end < keys.len()).then(|| keys[end - 1].clone());
                got.extend(cursor.take(entries, next).unwrap().into_iter().map(|e| e.key));
            }
            let all: Vec<Vec<u8>> = partitions
                .iter()
                .enumerate()
                .flat_map(|(p, n)| (0..*n).map(move |i| vec![p as u8, i as u8]))
                .collect();
            let expected: Vec<_> = all.iter().take(limit).cloned().collect();
            prop_assert_eq!(&got, &expected);
            if all.len() > limit {
                prop_assert!(cursor.cut_short(count), "more matched than the limit");
            }
            if all.len() < limit {
                prop_assert!(!cursor.cut_short(count), "everything was returned");
            }
        }
    }
}
