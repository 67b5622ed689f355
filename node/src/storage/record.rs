//! The on-disk form of one stored record and its version.
//!
//! Layout of a record value in sled (all integers big-endian):
//!
//! ```text
//! format: u8 (=1) | flags: u8 (bit 0 = tombstone) | hlc: u64 | writer: u64 | crc32c: u32 | value bytes
//! ```
//!
//! The crc covers the value bytes only; the header is small and any damage
//! to it shows up as an impossible format or flag byte. Decoding never
//! panics: a short or unknown record is a [`RecordError`].

use serde::{Deserialize, Serialize};

/// A write's identity and position in the total order of writes to a key:
/// hybrid-logical-clock timestamp first, writer id to break ties. Two writes
/// with the same version are the same write (a retry), which is what makes
/// writes idempotent.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Version {
    /// Hybrid logical clock timestamp (see [`crate::hlc`]).
    pub hlc: u64,
    /// Identifies the writer (a client instance), so that two writers in
    /// the same clock tick never collide.
    pub writer: u64,
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.hlc, self.writer)
    }
}

/// One stored key: its current version, and its value unless deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The version of the write that produced this record.
    pub version: Version,
    /// `None` for a tombstone left by a delete.
    pub value: Option<Vec<u8>>,
}

const FORMAT: u8 = 1;
const FLAG_TOMBSTONE: u8 = 1;
/// Bytes before the value: format, flags, hlc, writer, crc.
pub const HEADER_LEN: usize = 1 + 1 + 8 + 8 + 4;

/// A stored record that cannot be decoded or fails its checksum.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Fewer bytes than a header.
    #[error("record is {len} bytes, shorter than its {HEADER_LEN}-byte header")]
    Truncated {
        /// Bytes present.
        len: usize,
    },
    /// A format byte this build does not know.
    #[error("record has format {0}; this build reads format {FORMAT}")]
    UnknownFormat(u8),
    /// Flag bits this build does not know, or a tombstone carrying a value.
    #[error("record has invalid flags {0:#04x}")]
    BadFlags(u8),
    /// The value does not match its checksum.
    #[error(
        "record value fails its crc32c check (stored {stored:#010x}, computed {computed:#010x})"
    )]
    Checksum {
        /// Checksum in the header.
        stored: u32,
        /// Checksum of the bytes read.
        computed: u32,
    },
}

/// Encodes a record for storage.
pub fn encode(version: Version, value: Option<&[u8]>) -> Vec<u8> {
    let body = value.unwrap_or(&[]);
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.push(FORMAT);
    out.push(if value.is_none() { FLAG_TOMBSTONE } else { 0 });
    out.extend_from_slice(&version.hlc.to_be_bytes());
    out.extend_from_slice(&version.writer.to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(body).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Reads only the version, without checking the value (used to decide
/// whether a write is newer; the checksum is verified when data is read).
pub fn decode_version(raw: &[u8]) -> Result<Version, RecordError> {
    let header = Header::parse(raw)?;
    Ok(header.version)
}

/// Reads the version and tombstone flag without checking the value.
pub fn decode_header(raw: &[u8]) -> Result<(Version, bool), RecordError> {
    let header = Header::parse(raw)?;
    Ok((header.version, header.tombstone))
}

/// Reads the version and tombstone flag of a record whose value checks
/// against its crc (no copy of the value): what decides whether a write
/// is newer, and what a scan reports. A record that fails is damaged.
pub fn decode_verified_header(raw: &[u8]) -> Result<(Version, bool), RecordError> {
    let (header, _) = verified(raw)?;
    Ok((header.version, header.tombstone))
}

/// Decodes and verifies a stored record.
pub fn decode(raw: &[u8]) -> Result<Record, RecordError> {
    let (header, body) = verified(raw)?;
    Ok(Record {
        version: header.version,
        value: (!header.tombstone).then(|| body.to_vec()),
    })
}

/// The header and the value of a record whose value matches its crc (and
/// is empty under a tombstone).
fn verified(raw: &[u8]) -> Result<(Header, &[u8]), RecordError> {
    let header = Header::parse(raw)?;
    let body = raw.get(HEADER_LEN..).unwrap_or(&[]);
    let computed = crc32c::crc32c(body);
    if computed != header.crc {
        return Err(RecordError::Checksum {
            stored: header.crc,
            computed,
        });
    }
    if header.tombstone && !body.is_empty() {
        return Err(RecordError::BadFlags(FLAG_TOMBSTONE));
    }
    Ok((header, body))
}

struct Header {
    version: Version,
    tombstone: bool,
    crc: u32,
}

impl Header {
    fn parse(raw: &[u8]) -> Result<Self, RecordError> {
        let Some(head) = raw.get(..HEADER_LEN) else {
            return Err(RecordError::Truncated { len: raw.len() });
        };
        let (format, flags) = (head[0], head[1]);
        if format != FORMAT {
            return Err(RecordError::UnknownFormat(format));
        }
        if flags & !FLAG_TOMBSTONE != 0 {
            return Err(RecordError::BadFlags(flags));
        }
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&head[at..at + 8]);
            u64::from_be_bytes(b)
        };
        let mut crc = [0u8; 4];
        crc.copy_from_slice(&head[18..22]);
        Ok(Self {
            version: Version {
                hlc: u64_at(2),
                writer: u64_at(10),
            },
            tombstone: flags & FLAG_TOMBSTONE != 0,
            crc: u32::from_be_bytes(crc),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_flipped_value_bit_fails_the_checksum() {
        let mut raw = encode(Version { hlc: 1, writer: 2 }, Some(b"hello"));
        let last = raw.len() - 1;
        raw[last] ^= 0x01;
        assert!(matches!(decode(&raw), Err(RecordError::Checksum { .. })));
    }

    #[test]
    fn short_and_unknown_records_are_errors() {
        assert_eq!(decode(&[1, 0, 3]), Err(RecordError::Truncated { len: 3 }));
        let mut raw = encode(Version::default(), Some(b"x"));
        raw[0] = 9;
        assert_eq!(decode(&raw), Err(RecordError::UnknownFormat(9)));
        raw[0] = FORMAT;
        raw[1] = 0x80;
        assert_eq!(decode(&raw), Err(RecordError::BadFlags(0x80)));
    }

    proptest! {
        #[test]
        fn records_round_trip(hlc: u64, writer: u64, value in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..512))) {
            let v = Version { hlc, writer };
            let raw = encode(v, value.as_deref());
            prop_assert_eq!(decode_version(&raw).unwrap(), v);
            prop_assert_eq!(decode(&raw).unwrap(), Record { version: v, value });
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&raw);
        }

        #[test]
        fn versions_order_by_clock_then_writer(a: (u64, u64), b: (u64, u64)) {
            let va = Version { hlc: a.0, writer: a.1 };
            let vb = Version { hlc: b.0, writer: b.1 };
            prop_assert_eq!(va.cmp(&vb), a.cmp(&b));
        }
    }
}
