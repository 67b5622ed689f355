//! Size limits on what a peer may send.

use serde::{Deserialize, Serialize};

use super::message::{AdminCommand, ClientRequest, Request, RequestFrame, WireError};

/// Longest setting name or value `levee admin set` may send.
const MAX_SETTING_BYTES: usize = 256;

/// Bounds on frames, keys and values. The frame bound is checked before a
/// frame's body is read, so a peer cannot make the node allocate more than
/// `max_frame_bytes` per connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Largest frame accepted, length prefix excluded. Must leave room for
    /// the largest key and value plus the message envelope.
    pub max_frame_bytes: u32,
    /// Largest key (default 1 KiB: keys are names, not data; long keys
    /// bloat every index and digest that holds them).
    pub max_key_bytes: u32,
    /// Largest value (default 4 MiB: a block; bigger objects are split by
    /// the caller, so that one request never monopolises a node).
    pub max_value_bytes: u32,
}

/// Bytes a frame needs beyond its key and value: ids, versions, tags and
/// length prefixes, with room to spare.
pub const ENVELOPE_BYTES: u32 = 1024;

/// Most entries one scan page carries, whatever the client asks: enough
/// that paging costs little next to the entries, few enough that a page
/// of keys is a few hundred KiB at the 1 KiB key limit.
pub const MAX_SCAN_ENTRIES: u32 = 1000;

/// Records (tombstones included) one scan page may read before it
/// answers: a partition of many deleted keys is then paged through like
/// any other instead of holding one request for the whole of it.
pub const MAX_SCAN_EXAMINED: u32 = 10_000;

/// Bytes of keys and values one scan page aims at (1 MiB): a quarter of
/// the default frame, so a page never comes near the frame limit, while
/// one record alone (which always fits, see [`Limits::check`]) may exceed
/// it.
const SCAN_PAGE_BYTES: u64 = 1 << 20;

impl Default for Limits {
    fn default() -> Self {
        let max_key_bytes = 1024;
        let max_value_bytes = 4 * 1024 * 1024;
        Self {
            max_frame_bytes: max_value_bytes + max_key_bytes + ENVELOPE_BYTES,
            max_key_bytes,
            max_value_bytes,
        }
    }
}

impl Limits {
    /// Checks that the largest legal request fits in a frame.
    pub fn check(&self) -> Result<(), String> {
        let needed = self
            .max_value_bytes
            .saturating_add(self.max_key_bytes)
            .saturating_add(ENVELOPE_BYTES);
        if self.max_frame_bytes < needed {
            return Err(format!(
                "max_frame_bytes is {} but a request with the largest key and value needs {needed} \
                 (max_value_bytes + max_key_bytes + {ENVELOPE_BYTES}); raise max_frame_bytes",
                self.max_frame_bytes
            ));
        }
        if self.max_key_bytes == 0 {
            return Err("max_key_bytes must be at least 1".into());
        }
        Ok(())
    }

    /// Rejects a decoded request that breaks a limit or lacks a deadline.
    /// Admin settings are short words and numbers: anything longer is
    /// refused before it reaches the Raft log.
    pub fn validate(&self, frame: &RequestFrame) -> Result<(), WireError> {
        if frame.timeout_ms == 0 {
            return Err(WireError::MissingDeadline);
        }
        match &frame.request {
            Request::Client(
                ClientRequest::Ping | ClientRequest::GetMap | ClientRequest::Status,
            ) => Ok(()),
            // Bounded by the frame limit; their contents are checked by the
            // cluster module that decodes them.
            Request::Node(_) => Ok(()),
            Request::Client(ClientRequest::Get { key, .. } | ClientRequest::GetReplica { key }) => {
                self.key(key)
            }
            Request::Client(ClientRequest::Delete { key, .. }) => self.key(key),
            Request::Client(ClientRequest::Admin(
                AdminCommand::Drain { .. } | AdminCommand::ClearQuarantine,
            )) => Ok(()),
            Request::Client(ClientRequest::Admin(AdminCommand::Set { key, value })) => {
                if key.len() > MAX_SETTING_BYTES || value.len() > MAX_SETTING_BYTES {
                    return Err(WireError::Malformed {
                        detail: format!(
                            "a setting's name and value are at most {MAX_SETTING_BYTES} bytes each"
                        ),
                    });
                }
                Ok(())
            }
            Request::Client(ClientRequest::Put { key, value, .. }) => {
                self.key(key)?;
                self.value(value)
            }
            // An empty prefix is every key; neither may be longer than a key.
            Request::Client(ClientRequest::Scan { prefix, after, .. }) => {
                self.key_length(prefix)?;
                after.as_deref().map_or(Ok(()), |a| self.key_length(a))
            }
        }
    }

    /// The bytes of keys and values a scan page aims at: at most a quarter
    /// of the frame (so it stays well under the frame limit, whatever
    /// `max_frame_bytes` is), and at most 1 MiB.
    pub fn scan_page_bytes(&self) -> u64 {
        SCAN_PAGE_BYTES.min(u64::from(self.max_frame_bytes) / 4)
    }

    /// A key within the limits: not empty, at most `max_key_bytes`.
    pub fn key(&self, key: &[u8]) -> Result<(), WireError> {
        if key.is_empty() {
            return Err(WireError::EmptyKey);
        }
        self.key_length(key)
    }

    /// At most `max_key_bytes` (empty allowed: a scan's prefix).
    pub fn key_length(&self, key: &[u8]) -> Result<(), WireError> {
        if key.len() > self.max_key_bytes as usize {
            return Err(WireError::KeyTooLarge {
                len: key.len() as u64,
                max: self.max_key_bytes,
            });
        }
        Ok(())
    }

    /// A value of at most `max_value_bytes`.
    pub fn value(&self, value: &[u8]) -> Result<(), WireError> {
        if value.len() > self.max_value_bytes as usize {
            return Err(WireError::ValueTooLarge {
                len: value.len() as u64,
                max: self.max_value_bytes,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(prefix: &[u8], after: Option<&[u8]>) -> RequestFrame {
        RequestFrame {
            id: 1,
            timeout_ms: 1000,
            request: Request::Client(ClientRequest::Scan {
                partition: 0,
                prefix: prefix.to_vec(),
                after: after.map(<[u8]>::to_vec),
                limit: 10,
                values: false,
                epoch: 0,
            }),
        }
    }

    #[test]
    fn a_scan_prefix_may_be_empty_but_neither_it_nor_its_cursor_longer_than_a_key() {
        let limits = Limits::default();
        assert_eq!(limits.validate(&scan(b"", None)), Ok(()));
        let long = vec![b'k'; 1025];
        assert!(matches!(
            limits.validate(&scan(&long, None)),
            Err(WireError::KeyTooLarge { len: 1025, .. })
        ));
        assert!(matches!(
            limits.validate(&scan(b"k", Some(&long))),
            Err(WireError::KeyTooLarge { len: 1025, .. })
        ));
    }

    #[test]
    fn a_scan_page_stays_well_under_the_frame() {
        let limits = Limits::default();
        assert_eq!(limits.scan_page_bytes(), 1 << 20);
        let small = Limits {
            max_frame_bytes: 64 * 1024,
            ..limits
        };
        assert_eq!(small.scan_page_bytes(), 16 * 1024);
    }
}
