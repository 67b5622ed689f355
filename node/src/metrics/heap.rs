//! `levee_heap_*`: what the allocator holds, when `levee-node` runs on
//! jemalloc (its `main.rs` declares it the global allocator and calls
//! [`jemalloc_installed`]). RSS alone cannot tell a leak from freed
//! memory an allocator kept: the bytes in live allocations can. In any
//! other process (the tests, the CLI, the fuzz targets) jemalloc is not
//! the allocator, its counters describe nothing, and the family is left
//! out.

use std::sync::atomic::{AtomicBool, Ordering};

use super::exposition::{Exposition, Kind};

static JEMALLOC: AtomicBool = AtomicBool::new(false);

/// Says this process allocates through jemalloc, so its statistics are
/// the process's own. Called once by `levee-node`'s `main`.
pub fn jemalloc_installed() {
    JEMALLOC.store(true, Ordering::Relaxed);
}

/// One reading of jemalloc's statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeapSample {
    /// Bytes in live allocations: what the node is using. It counts
    /// zeroed allocations never touched, which are not resident (sled
    /// allocates its page tables so, megabytes per shard), so it can
    /// exceed the RSS; it is the figure a leak grows.
    pub allocated: u64,
    /// Bytes in the data pages the allocator maps, counted as resident:
    /// live allocations, its metadata and freed pages not yet returned.
    /// An upper bound (jemalloc counts demand-zeroed pages never touched),
    /// so above the RSS when sled's page tables are; its gap to
    /// `allocated` is what the allocator keeps.
    pub resident: u64,
    /// Bytes of virtual memory the allocator keeps mapped but returned
    /// to the system (no longer resident).
    pub retained: u64,
}

impl HeapSample {
    /// Reads jemalloc's statistics (refreshing them first: they are
    /// cached per epoch); `None` when jemalloc is not this process's
    /// allocator or a read fails.
    pub fn read() -> Option<Self> {
        if !JEMALLOC.load(Ordering::Relaxed) {
            return None;
        }
        use tikv_jemalloc_ctl::{epoch, stats};
        epoch::advance().ok()?;
        let bytes = |v: usize| u64::try_from(v).unwrap_or(u64::MAX);
        Some(Self {
            allocated: bytes(stats::allocated::read().ok()?),
            resident: bytes(stats::resident::read().ok()?),
            retained: bytes(stats::retained::read().ok()?),
        })
    }

    /// Writes the three gauges.
    pub fn render(&self, text: &mut Exposition) {
        text.single(
            "levee_heap_allocated_bytes",
            Kind::Gauge,
            "Bytes in live heap allocations (jemalloc), zeroed ones never touched included: memory the node is using.",
            self.allocated,
        );
        text.single(
            "levee_heap_resident_bytes",
            Kind::Gauge,
            "Bytes in data pages the allocator maps (an upper bound of its resident memory): live allocations, metadata and freed pages not yet returned.",
            self.resident,
        );
        text.single(
            "levee_heap_retained_bytes",
            Kind::Gauge,
            "Bytes of address space the allocator keeps mapped after returning its pages to the system.",
            self.retained,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn left_out_where_jemalloc_is_not_the_allocator() {
        // The unit tests run on the system allocator and never call
        // `jemalloc_installed`.
        assert_eq!(HeapSample::read(), None);
    }

    #[test]
    fn renders_three_gauges() {
        let mut text = Exposition::new();
        HeapSample {
            allocated: 10,
            resident: 20,
            retained: 30,
        }
        .render(&mut text);
        let page = text.finish();
        for line in [
            "levee_heap_allocated_bytes 10",
            "levee_heap_resident_bytes 20",
            "levee_heap_retained_bytes 30",
        ] {
            assert!(page.contains(line), "{line} in {page}");
        }
    }
}
