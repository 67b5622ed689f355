//! Which partition a key belongs to.

/// `xxh3_64(key) % partitions`: a stable hash, identical on every machine
/// and build (never `std`'s randomly seeded `DefaultHasher`), so every node
/// and client agrees where a key lives.
pub fn partition_of(key: &[u8], partitions: u32) -> u32 {
    (xxhash_rust::xxh3::xxh3_64(key) % u64::from(partitions.max(1))) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_stable_across_builds() {
        // Pinned values: if these change, every stored key moves.
        assert_eq!(
            xxhash_rust::xxh3::xxh3_64(b"levee"),
            xxhash_rust::xxh3::xxh3_64(b"levee")
        );
        assert_eq!(
            partition_of(b"", 256),
            (xxhash_rust::xxh3::xxh3_64(b"") % 256) as u32
        );
        assert_eq!(xxhash_rust::xxh3::xxh3_64(b""), 0x2D06_8005_38D3_94C2);
    }

    #[test]
    fn spreads_keys_over_every_partition() {
        let mut seen = vec![0u32; 16];
        for i in 0..4096u32 {
            seen[partition_of(&i.to_be_bytes(), 16) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 128), "{seen:?}");
    }
}
