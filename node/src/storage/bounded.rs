//! bincode's standard encoding with a bound on what one decode may
//! allocate, for the values the node reads back from disk (hints, and the
//! Raft log, vote and state machine).
//!
//! Without a bound, a damaged length prefix makes the decoder reserve
//! whatever it claims, up to 2^64 bytes, and the failed allocation aborts
//! the process: one bad byte on disk would stop the node instead of being
//! reported (and the value dropped or the node refusing to start, with a
//! message). The bound changes no byte of the encoding, so what was stored
//! before it was added still decodes.

use bincode::config::{Configuration, Limit, LittleEndian, Varint};

/// Upper bound on what decoding one stored value may allocate. What the
/// node stores arrived in requests that `proto::codec` already bounds to
/// 64 MiB (a hint's value, a Raft entry), or is far smaller (the map's
/// state and snapshot).
pub const DECODE_LIMIT: usize = 64 * 1024 * 1024;

/// The configuration: `standard()` plus [`DECODE_LIMIT`].
pub type Config = Configuration<LittleEndian, Varint, Limit<DECODE_LIMIT>>;

/// The configuration, to encode and decode with.
pub fn config() -> Config {
    bincode::config::standard().with_limit::<DECODE_LIMIT>()
}
