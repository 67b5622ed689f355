//! bincode 2 (serde) encoding of messages into frames.

use bincode::config::{self, Configuration, Limit, LittleEndian, Varint};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::message::{RequestFrame, ResponseFrame, WireError};

/// Upper bound on what one decode may allocate. Frames are already bounded
/// by `max_frame_bytes`; this stops a small frame that announces a huge
/// collection from reserving memory before the decoder notices the bytes
/// are not there.
const DECODE_LIMIT: usize = 64 * 1024 * 1024;

type Config = Configuration<LittleEndian, Varint, Limit<DECODE_LIMIT>>;

fn config() -> Config {
    config::standard().with_limit::<DECODE_LIMIT>()
}

/// Encodes a message as a frame: 4-byte big-endian length, then payload.
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, WireError> {
    let mut out = vec![0u8; 4];
    bincode::serde::encode_into_std_write(message, &mut out, config()).map_err(|e| {
        WireError::Malformed {
            detail: format!("cannot encode: {e}"),
        }
    })?;
    let len = u32::try_from(out.len() - 4).map_err(|_| WireError::FrameTooLarge {
        len: (out.len() - 4) as u64,
        max: u32::MAX,
    })?;
    out[..4].copy_from_slice(&len.to_be_bytes());
    Ok(out)
}

/// Decodes one whole frame payload (without its length prefix). Trailing
/// bytes are an error: a frame holds exactly one message.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, WireError> {
    let (message, used) =
        bincode::serde::decode_from_slice(payload, config()).map_err(|e| WireError::Malformed {
            detail: e.to_string(),
        })?;
    if used != payload.len() {
        return Err(WireError::Malformed {
            detail: format!("{} trailing bytes after the message", payload.len() - used),
        });
    }
    Ok(message)
}

/// Encodes any value with the same configuration, without a length prefix
/// (for payloads nested inside messages, such as Raft RPCs).
pub fn to_bytes<T: Serialize>(value: &T) -> Result<Vec<u8>, WireError> {
    bincode::serde::encode_to_vec(value, config()).map_err(|e| WireError::Malformed {
        detail: format!("cannot encode: {e}"),
    })
}

/// Decodes a value encoded by [`to_bytes`]; trailing bytes are an error.
pub fn from_bytes<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, WireError> {
    decode(bytes)
}

/// Decodes a request frame.
pub fn decode_request(payload: &[u8]) -> Result<RequestFrame, WireError> {
    decode(payload)
}

/// Decodes a response frame.
pub fn decode_response(payload: &[u8]) -> Result<ResponseFrame, WireError> {
    decode(payload)
}

/// The bytes of a request frame's `request`, past its id and timeout: what
/// stays the same when a client resends the request (with a new id).
pub fn request_body<'a>(payload: &'a [u8], frame: &RequestFrame) -> &'a [u8] {
    let prefix = to_bytes(&(frame.id, frame.timeout_ms)).map_or(0, |b| b.len());
    payload.get(prefix..).unwrap_or(payload)
}

/// The request id at the start of a payload that failed to decode as a
/// whole, so that the error can still be addressed to its request.
pub fn peek_request_id(payload: &[u8]) -> Option<u64> {
    bincode::serde::decode_from_slice::<u64, _>(payload, config())
        .ok()
        .map(|(id, _)| id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::map::{ClusterMap, Command, NodeSpec, Settings};
    use crate::proto::message::*;
    use crate::storage::Version;
    use proptest::prelude::*;

    fn bytes() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..256)
    }

    fn version() -> impl Strategy<Value = Version> {
        (any::<u64>(), any::<u64>()).prop_map(|(hlc, writer)| Version { hlc, writer })
    }

    fn request() -> impl Strategy<Value = Request> {
        prop_oneof![
            Just(Request::Client(ClientRequest::Ping)),
            (bytes(), any::<u64>())
                .prop_map(|(key, epoch)| Request::Client(ClientRequest::Get { key, epoch })),
            bytes().prop_map(|key| Request::Client(ClientRequest::GetReplica { key })),
            (bytes(), bytes(), version(), any::<u64>()).prop_map(|(key, value, version, epoch)| {
                Request::Client(ClientRequest::Put {
                    key,
                    value,
                    version,
                    epoch,
                })
            }),
            (bytes(), version(), any::<u64>()).prop_map(|(key, version, epoch)| {
                Request::Client(ClientRequest::Delete {
                    key,
                    version,
                    epoch,
                })
            }),
            (
                any::<u32>(),
                bytes(),
                version(),
                proptest::option::of(bytes())
            )
                .prop_map(|(partition, key, version, value)| {
                    Request::Node(NodeRequest::Replicate {
                        partition,
                        key,
                        version,
                        value,
                    })
                }),
            (any::<u32>(), bytes()).prop_map(|(partition, key)| Request::Node(
                NodeRequest::ReadLocal { partition, key }
            )),
            (any::<u32>(), bytes(), version()).prop_map(|(partition, key, version)| {
                Request::Node(NodeRequest::PurgeTombstone {
                    partition,
                    key,
                    version,
                })
            }),
            (any::<u32>(), any::<u32>()).prop_map(|(partition, buckets)| Request::Node(
                NodeRequest::Digest { partition, buckets }
            )),
            (
                any::<u32>(),
                any::<u32>(),
                any::<u32>(),
                proptest::option::of(bytes()),
                any::<u32>()
            )
                .prop_map(|(partition, buckets, bucket, after, limit)| {
                    Request::Node(NodeRequest::BucketEntries {
                        partition,
                        buckets,
                        bucket,
                        after,
                        limit,
                    })
                }),
            Just(Request::Client(ClientRequest::GetMap)),
            Just(Request::Client(ClientRequest::Status)),
            (any::<u64>(), any::<u64>(), 0..3u8, bytes()).prop_map(
                |(cluster_id, target, rpc, payload)| {
                    let rpc = [
                        RaftRpc::AppendEntries,
                        RaftRpc::Vote,
                        RaftRpc::InstallSnapshot,
                    ][rpc as usize];
                    Request::Node(NodeRequest::Raft {
                        cluster_id,
                        target,
                        rpc,
                        payload,
                    })
                }
            ),
            (".{0,30}", ".{0,30}", ".{0,10}", any::<u64>(), any::<u64>()).prop_map(
                |(addr, admin, zone, capacity, join_token)| {
                    Request::Node(NodeRequest::Join(NodeSpec {
                        addr,
                        admin,
                        zone,
                        capacity,
                        join_token,
                    }))
                }
            ),
        ]
    }

    fn wire_error() -> impl Strategy<Value = WireError> {
        prop_oneof![
            (any::<u64>(), any::<u32>())
                .prop_map(|(len, max)| WireError::FrameTooLarge { len, max }),
            ".{0,40}".prop_map(|detail| WireError::Malformed { detail }),
            Just(WireError::MissingDeadline),
            Just(WireError::EmptyKey),
            (any::<u64>(), any::<u32>()).prop_map(|(len, max)| WireError::KeyTooLarge { len, max }),
            (any::<u64>(), any::<u32>())
                .prop_map(|(len, max)| WireError::ValueTooLarge { len, max }),
            Just(WireError::DeadlineExceeded),
            any::<u32>().prop_map(|retry_after_ms| WireError::Overloaded { retry_after_ms }),
            (any::<u64>(), any::<u64>()).prop_map(|(ahead_ms, max_drift_ms)| {
                WireError::ClockDrift {
                    ahead_ms,
                    max_drift_ms,
                }
            }),
            ".{0,40}".prop_map(|detail| WireError::Storage { detail }),
            Just(WireError::ShuttingDown),
            (
                proptest::option::of(any::<u64>()),
                proptest::option::of(".{0,30}")
            )
                .prop_map(|(leader, leader_addr)| WireError::NotLeader {
                    leader,
                    leader_addr
                }),
            ".{0,40}".prop_map(|detail| WireError::Unavailable { detail }),
            ".{0,40}".prop_map(|detail| WireError::Refused { detail }),
            any::<u64>().prop_map(|epoch| WireError::NotReplica { epoch }),
            any::<u64>().prop_map(|epoch| WireError::StaleMap { epoch }),
            any::<u32>().prop_map(|partition| WireError::PartitionOpening { partition }),
            (any::<u32>(), any::<u32>(), any::<u32>(), ".{0,20}").prop_map(
                |(acked, needed, replicas, detail)| {
                    WireError::QuorumFailed {
                        acked,
                        needed,
                        replicas,
                        detail,
                    }
                }
            ),
        ]
    }

    /// Maps built by applying random joins, so they have real shapes.
    fn map() -> impl Strategy<Value = ClusterMap> {
        (
            any::<u64>(),
            1u32..64,
            proptest::collection::vec(("[a-z]{1,8}", 0u8..4), 0..6),
        )
            .prop_map(|(cluster_id, partitions, joins)| {
                let mut map = ClusterMap::default();
                let spec = |addr: String, zone: u8| NodeSpec {
                    admin: format!("{addr}-admin"),
                    addr,
                    zone: format!("z{zone}"),
                    capacity: 1,
                    join_token: 7,
                };
                map.apply(&Command::Init {
                    cluster_id: cluster_id.max(1),
                    partitions,
                    settings: Settings::default(),
                    first: spec("first".into(), 0),
                });
                for (addr, zone) in joins {
                    map.apply(&Command::AddNode(spec(addr, zone)));
                }
                map
            })
    }

    fn response() -> impl Strategy<Value = Result<Response, WireError>> {
        prop_oneof![
            any::<u16>().prop_map(|protocol| Ok(Response::Pong { protocol })),
            proptest::option::of((version(), proptest::option::of(bytes()))).prop_map(|f| Ok(
                Response::Get(f.map(|(version, value)| Found { version, value }))
            )),
            (any::<bool>(), version())
                .prop_map(|(applied, version)| Ok(Response::Written { applied, version })),
            wire_error().prop_map(Err),
            bytes().prop_map(|b| Ok(Response::Raft(b))),
            proptest::collection::vec(any::<u64>(), 0..64).prop_map(|d| Ok(Response::Digest(d))),
            (
                proptest::collection::vec((bytes(), version(), any::<bool>()), 0..8),
                any::<bool>()
            )
                .prop_map(|(entries, more)| {
                    let entries = entries
                        .into_iter()
                        .map(|(key, version, tombstone)| KeyVersion {
                            key,
                            version,
                            tombstone,
                        })
                        .collect();
                    Ok(Response::Entries { entries, more })
                }),
            (any::<u64>(), any::<u64>()).prop_map(|(node_id, cluster_id)| Ok(Response::Joined {
                node_id,
                cluster_id
            })),
            map().prop_map(|m| Ok(Response::Map(Box::new(m)))),
        ]
    }

    fn payload(frame: &[u8]) -> &[u8] {
        let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(len, frame.len() - 4, "length prefix must match the payload");
        &frame[4..]
    }

    proptest! {
        #[test]
        fn every_request_round_trips(id: u64, timeout_ms: u32, request in request()) {
            let frame = RequestFrame { id, timeout_ms, request };
            let encoded = encode(&frame).unwrap();
            prop_assert_eq!(peek_request_id(payload(&encoded)), Some(id));
            prop_assert_eq!(decode_request(payload(&encoded)).unwrap(), frame);
        }

        #[test]
        fn every_response_round_trips(id: u64, pressure: u8, epoch: u64, result in response()) {
            let frame = ResponseFrame { id, pressure, epoch, result };
            let encoded = encode(&frame).unwrap();
            prop_assert_eq!(decode_response(payload(&encoded)).unwrap(), frame);
        }

        #[test]
        fn arbitrary_payloads_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_request(&raw);
            let _ = decode_response(&raw);
        }
    }

    #[test]
    fn trailing_bytes_are_malformed() {
        let frame = RequestFrame {
            id: 1,
            timeout_ms: 5,
            request: Request::Client(ClientRequest::Ping),
        };
        let mut encoded = encode(&frame).unwrap();
        encoded.push(0);
        let err = decode_request(&encoded[4..]).unwrap_err();
        assert!(matches!(err, WireError::Malformed { .. }), "{err}");
    }

    #[test]
    fn an_unknown_message_type_is_malformed() {
        // id 1, timeout 5, then a Request variant tag no build defines.
        let err = decode_request(&[1, 5, 200]).unwrap_err();
        assert!(matches!(err, WireError::Malformed { .. }), "{err}");
    }

    #[test]
    fn a_huge_announced_length_does_not_allocate() {
        // A Get whose key claims u64::MAX bytes (varint marker 253, then 8
        // bytes) in a 13-byte payload.
        let err = decode_request(&[
            1, 5, 0, 1, 253, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ])
        .unwrap_err();
        assert!(matches!(err, WireError::Malformed { .. }), "{err}");
    }
}
