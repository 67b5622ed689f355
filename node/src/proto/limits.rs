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
        }
    }

    /// A key within the limits: not empty, at most `max_key_bytes`.
    pub fn key(&self, key: &[u8]) -> Result<(), WireError> {
        if key.is_empty() {
            return Err(WireError::EmptyKey);
        }
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
