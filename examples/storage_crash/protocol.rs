//! What the crash-safety writer (`examples/storage_crash/main.rs`) and its
//! driver (`tests/storage_crash_safety/`) agree on: the keys, the versions
//! and values written to them, and the lines the writer prints. Both
//! compile this one file (the test through `#[path]`), so the two ends
//! cannot drift apart.
//!
//! Everything a write stores follows from its key and version: whether it
//! is a put or a delete, and the value's length and bytes. The writer
//! writes by these functions and the verifier judges by them, so a record
//! that nobody wrote, or that was damaged behind its crc's back, shows as
//! such without values going through the pipe.

// The writer and the driver each use their own half of this file.
#![allow(dead_code)]

use std::fmt;
use std::str::FromStr;

use levee_node::partition::partition_of;
use levee_node::storage::Version;

/// Concurrent writers in a run: several, so that one group flush answers
/// writes of several writers, as under load on a node.
pub const WRITERS: u32 = 6;
/// Keys each writer owns. Few, so that each is overwritten (and deleted)
/// several times in a run and an acknowledged write is often followed by
/// a newer one; each key has one writer, so "newer" is that writer's order.
pub const KEYS_PER_WRITER: u32 = 24;
/// Partitions the keys spread over: the node's default, so the keys land
/// in every shard of the node's default layout.
pub const PARTITIONS: u32 = 256;

/// Bits of a version's hlc that count one writer's writes within a run.
/// The run's number sits above them, so a run's versions are newer than
/// every earlier run's whatever the wall clock does between runs.
const SEQ_BITS: u32 = 32;

/// One key of the workload: `index` of the keys owned by `writer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    /// The only writer that writes it (0-based).
    pub writer: u32,
    /// Which of its keys.
    pub index: u32,
}

impl Key {
    /// Every key of the workload, in order.
    pub fn all() -> impl Iterator<Item = Key> {
        (0..WRITERS).flat_map(|writer| (0..KEYS_PER_WRITER).map(move |index| Key { writer, index }))
    }

    /// The stored key.
    pub fn name(self) -> Vec<u8> {
        format!("crash/w{}/k{:02}", self.writer, self.index).into_bytes()
    }

    /// The key of a stored name, if it is one of the workload's.
    pub fn from_name(name: &[u8]) -> Option<Key> {
        let text = std::str::from_utf8(name).ok()?;
        let (writer, index) = text.strip_prefix("crash/w")?.split_once("/k")?;
        let key = Key {
            writer: writer.parse().ok()?,
            index: index.parse().ok()?,
        };
        let known = key.writer < WRITERS && key.index < KEYS_PER_WRITER;
        (known && key.name() == name).then_some(key)
    }

    /// Its partition among [`PARTITIONS`].
    pub fn partition(self) -> u32 {
        partition_of(&self.name(), PARTITIONS)
    }

    /// The writer id its versions carry (never 0, which no client uses).
    pub fn writer_id(self) -> u64 {
        u64::from(self.writer) + 1
    }
}

/// The version of write number `seq` (from 1) of `key`'s writer in run
/// `run`.
pub fn version(run: u64, key: Key, seq: u64) -> Version {
    Version {
        hlc: (run << SEQ_BITS) | (seq & ((1 << SEQ_BITS) - 1)),
        writer: key.writer_id(),
    }
}

/// What a write stores: a tombstone, or a value of this length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A delete.
    Tombstone,
    /// A put of `len` bytes.
    Value {
        /// Bytes of the value.
        len: usize,
    },
}

/// What the write of `version` to `key` stores: one write in eight is a
/// delete; values are mostly small (16 B to 0.5 KiB), a quarter span
/// several 4 KiB pages (1 to 16 KiB), and one in fifty is large enough
/// (64 KiB to 1 MiB) that sled may write it as a blob file of its own
/// (past a quarter of a data shard's 2 MiB segment).
pub fn shape_of(key: Key, version: Version) -> Shape {
    let h = draw(&[
        u64::from(key.writer),
        u64::from(key.index),
        version.hlc,
        version.writer,
    ]);
    if h.is_multiple_of(8) {
        return Shape::Tombstone;
    }
    let within = |lo: u64, hi: u64| (lo + (h >> 16) % (hi - lo + 1)) as usize;
    let len = match (h >> 8) % 100 {
        0..=72 => within(16, 512),
        73..=97 => within(1024, 16 * 1024),
        _ => within(64 * 1024, 1024 * 1024),
    };
    Shape::Value { len }
}

/// The value the write of `version` to `key` stores (`None`: a delete):
/// [`shape_of`]'s length of bytes drawn from the key and version, so a
/// value found under another key or version does not match.
pub fn value_of(key: Key, version: Version) -> Option<Vec<u8>> {
    let Shape::Value { len } = shape_of(key, version) else {
        return None;
    };
    let start = draw(&[u64::from(key.index), version.hlc, u64::from(key.writer)]);
    let mut value = Vec::with_capacity(len + 8);
    let mut word = 0u64;
    while value.len() < len {
        word += 1;
        value.extend_from_slice(&mix(start ^ word).to_le_bytes());
    }
    value.truncate(len);
    Some(value)
}

/// What a stored record holds, as the verifier reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// A tombstone.
    Tombstone,
    /// A value of `len` bytes, and whether they are exactly [`value_of`]
    /// its key and version.
    Value {
        /// Bytes of the value.
        len: usize,
        /// Whether the bytes are the ones that write stored.
        intact: bool,
    },
}

impl Found {
    /// What a record with `value` at `key` and `version` holds.
    pub fn of(key: Key, version: Version, value: Option<&[u8]>) -> Found {
        match value {
            None => Found::Tombstone,
            Some(bytes) => Found::Value {
                len: bytes.len(),
                intact: value_of(key, version).as_deref() == Some(bytes),
            },
        }
    }

    /// Whether this is exactly what the write of `version` to `key`
    /// stored.
    pub fn is_written_by(self, key: Key, version: Version) -> bool {
        match (self, shape_of(key, version)) {
            (Found::Tombstone, Shape::Tombstone) => true,
            (Found::Value { len, intact }, Shape::Value { len: written }) => {
                intact && len == written
            }
            _ => false,
        }
    }
}

/// A number drawn from `parts` (splitmix64 folded over them): the
/// workload's every choice, so a seed replays the same choices.
pub fn draw(parts: &[u64]) -> u64 {
    parts
        .iter()
        .fold(0x6c65_7665_6521_u64, |acc, &part| mix(acc ^ mix(part)))
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One line of the writer's or the verifier's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// `write`: storage is open; the writers start.
    Ready,
    /// `write`: the write of `version` to `key` is about to be applied.
    Start { key: Key, version: Version },
    /// `write`: the write returned from `Storage::apply` with
    /// `per_write` durability: acknowledged. `stale` is the newer version
    /// the store said it already held, if it said so.
    Ack {
        key: Key,
        version: Version,
        stale: Option<Version>,
    },
    /// `write`: the write failed with `error` (not acknowledged).
    Failed {
        key: Key,
        version: Version,
        error: String,
    },
    /// `verify`: the record stored for `key`.
    Record {
        key: Key,
        version: Version,
        found: Found,
    },
    /// `verify`: nothing is stored for `key`.
    Absent { key: Key },
    /// `verify`: `key`'s record fails to decode: its crc (`crc`), or its
    /// header.
    Corrupt { key: Key, crc: bool, error: String },
    /// `verify`: reading `key` failed otherwise.
    Unreadable { key: Key, error: String },
    /// `verify`: a key no writer writes, found by a scan of `partition`
    /// (escaped).
    Stray { partition: u32, key: String },
    /// `verify`: scanning `partition` failed.
    ScanFailed { partition: u32, error: String },
    /// `verify` or `write`: opening the directory (or one of its shards)
    /// failed.
    OpenFailed { error: String },
    /// `verify`: done; every key was reported.
    Verified,
}

fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = |k: &Key| format!("{} {}", k.writer, k.index);
        let version = |v: &Version| format!("{}.{}", v.hlc, v.writer);
        match self {
            Line::Ready => write!(f, "ready"),
            Line::Start { key: k, version: v } => write!(f, "start {} {}", key(k), version(v)),
            Line::Ack {
                key: k,
                version: v,
                stale,
            } => match stale {
                None => write!(f, "ack {} {} written", key(k), version(v)),
                Some(s) => write!(f, "ack {} {} stale {}", key(k), version(v), version(s)),
            },
            Line::Failed {
                key: k,
                version: v,
                error,
            } => write!(f, "failed {} {} {}", key(k), version(v), one_line(error)),
            Line::Record {
                key: k,
                version: v,
                found,
            } => match found {
                Found::Tombstone => write!(f, "record {} {} tombstone", key(k), version(v)),
                Found::Value { len, intact } => {
                    let state = if *intact { "intact" } else { "damaged" };
                    write!(f, "record {} {} value {len} {state}", key(k), version(v))
                }
            },
            Line::Absent { key: k } => write!(f, "absent {}", key(k)),
            Line::Corrupt { key: k, crc, error } => {
                let kind = if *crc { "crc" } else { "header" };
                write!(f, "corrupt {} {kind} {}", key(k), one_line(error))
            }
            Line::Unreadable { key: k, error } => {
                write!(f, "unreadable {} {}", key(k), one_line(error))
            }
            Line::Stray { partition, key } => write!(f, "stray {partition} {}", one_line(key)),
            Line::ScanFailed { partition, error } => {
                write!(f, "scan-failed {partition} {}", one_line(error))
            }
            Line::OpenFailed { error } => write!(f, "open-failed {}", one_line(error)),
            Line::Verified => write!(f, "verified"),
        }
    }
}

impl FromStr for Line {
    type Err = String;

    fn from_str(line: &str) -> Result<Self, String> {
        let mut words = Words(line.split(' '));
        let line = match words.text()?.as_str() {
            "ready" => Line::Ready,
            "start" => Line::Start {
                key: words.key()?,
                version: words.version()?,
            },
            "ack" => {
                let (key, version) = (words.key()?, words.version()?);
                let stale = match words.text()?.as_str() {
                    "written" => None,
                    "stale" => Some(words.version()?),
                    other => return Err(format!("an ack is written or stale, not {other:?}")),
                };
                Line::Ack {
                    key,
                    version,
                    stale,
                }
            }
            "failed" => Line::Failed {
                key: words.key()?,
                version: words.version()?,
                error: words.rest(),
            },
            "record" => {
                let (key, version) = (words.key()?, words.version()?);
                let found = match words.text()?.as_str() {
                    "tombstone" => Found::Tombstone,
                    "value" => Found::Value {
                        len: words.number()?,
                        intact: words.text()? == "intact",
                    },
                    other => {
                        return Err(format!("a record is a tombstone or a value, not {other:?}"));
                    }
                };
                Line::Record {
                    key,
                    version,
                    found,
                }
            }
            "absent" => Line::Absent { key: words.key()? },
            "corrupt" => Line::Corrupt {
                key: words.key()?,
                crc: words.text()? == "crc",
                error: words.rest(),
            },
            "unreadable" => Line::Unreadable {
                key: words.key()?,
                error: words.rest(),
            },
            "stray" => Line::Stray {
                partition: words.number()?,
                key: words.rest(),
            },
            "scan-failed" => Line::ScanFailed {
                partition: words.number()?,
                error: words.rest(),
            },
            "open-failed" => Line::OpenFailed {
                error: words.rest(),
            },
            "verified" => Line::Verified,
            other => return Err(format!("unknown line kind {other:?}")),
        };
        Ok(line)
    }
}

/// The space-separated words of a line, the last of which may hold
/// spaces (an error message).
struct Words<'a>(std::str::Split<'a, char>);

impl Words<'_> {
    fn text(&mut self) -> Result<String, String> {
        self.0
            .next()
            .map(str::to_string)
            .ok_or_else(|| "the line ends early".to_string())
    }

    fn number<T: FromStr>(&mut self) -> Result<T, String> {
        let word = self.text()?;
        word.parse()
            .map_err(|_| format!("{word:?} is not a number"))
    }

    fn key(&mut self) -> Result<Key, String> {
        let key = Key {
            writer: self.number()?,
            index: self.number()?,
        };
        if key.writer < WRITERS && key.index < KEYS_PER_WRITER {
            Ok(key)
        } else {
            Err(format!("no key {key:?} in the workload"))
        }
    }

    fn version(&mut self) -> Result<Version, String> {
        let word = self.text()?;
        let parsed = word
            .split_once('.')
            .and_then(|(hlc, writer)| Some((hlc.parse().ok()?, writer.parse().ok()?)));
        let (hlc, writer) =
            parsed.ok_or_else(|| format!("{word:?} is not a version HLC.WRITER"))?;
        Ok(Version { hlc, writer })
    }

    fn rest(&mut self) -> String {
        self.0.by_ref().collect::<Vec<_>>().join(" ")
    }
}
