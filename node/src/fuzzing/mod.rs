//! Fuzz targets for every decoder fed by the network or the disk
//! (feature `fuzzing`).
//!
//! Each target is a plain `fn(&[u8])` so that one body serves two runners:
//! the libFuzzer crate in `fuzz/` (one `fuzz_target!` per function, under
//! `cargo fuzz`, which needs RUSTC_BOOTSTRAP on stable) and
//! `tests/fuzz_corpus.rs`, which replays every corpus file on stable in CI.
//! A target calls the very function the node calls on those bytes, never a
//! copy of it, and then checks what must hold of the result: decoding
//! never panics, whatever decodes re-encodes to bytes that decode to the
//! same thing (so nothing is lost or invented on the way through the node),
//! and a stored record's value is never returned unless its crc matches.
//!
//! [`seeds`] produces the starting corpus through the real encoders.

pub mod seeds;

use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

use openraft::Vote;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::AsyncRead;

use crate::cluster::NodeId;
use crate::config::Config;
use crate::proto::frame::{self, FrameError};
use crate::proto::handshake::{self, HandshakeError, Status};
use crate::proto::op::Op;
use crate::proto::{
    Limits, MAGIC, NodeRequest, PROTOCOL_VERSION, RaftRpc, Request, Response, WireError, codec,
};
use crate::raft::identity;
use crate::raft::log_store::{self, CorruptValue};
use crate::raft::network::{AppendEntriesAnswer, InstallSnapshotAnswer, RaftRequest, VoteAnswer};
use crate::raft::state_machine;
use crate::raft::types::{Entry, LogId, TypeConfig};
use crate::storage::hints;
use crate::storage::journal;
use crate::storage::layout::{self, MAX_SHARDS};
use crate::storage::record::{self, HEADER_LEN, RecordError};

/// A fuzz target: takes any bytes, panics only when a property breaks.
pub type Target = fn(&[u8]);

/// Every target by name: the name of its `fuzz/fuzz_targets/<name>.rs`
/// and of its corpus directory `fuzz/corpus/<name>/`.
pub const TARGETS: &[(&str, Target)] = &[
    ("frame", frame),
    ("handshake", handshake),
    ("request", request),
    ("response", response),
    ("raft_rpc", raft_rpc),
    ("record", record),
    ("journal", journal),
    ("hint", hint),
    ("raft_log", raft_log),
    ("raft_state", raft_state),
    ("layout", layout),
    ("identity", identity),
    ("config", config),
    ("cert", cert),
    ("admin_answer", admin_answer),
    ("last_words", last_words),
];

/// The node's frame body timeout; an in-memory reader never makes it fire.
const FRAME_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs a future to completion on this thread's runtime. The protocol's
/// readers are async and wrap their reads in `tokio::time::timeout`, which
/// needs a runtime with a timer; one per thread, built once, keeps an
/// execution in microseconds.
fn block_on<F: Future>(future: F) -> F::Output {
    thread_local! {
        static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a current-thread runtime");
    }
    RUNTIME.with(|runtime| runtime.block_on(future))
}

/// Checks that a decoded value survives the trip through the node: its
/// encoding decodes, and encodes again to the very same bytes. Bytes, not
/// values, because several decoded types (openraft's) have no `PartialEq`,
/// and because the bytes are what the node stores and sends on.
fn assert_stable<T, EncodeError: Debug, DecodeError: Debug>(
    what: &str,
    value: &T,
    encode: impl Fn(&T) -> Result<Vec<u8>, EncodeError>,
    decode: impl Fn(&[u8]) -> Result<T, DecodeError>,
) {
    let first =
        encode(value).unwrap_or_else(|e| panic!("{what}: a decoded value does not encode: {e:?}"));
    let again = decode(&first).unwrap_or_else(|e| {
        panic!("{what}: the encoding of a decoded value does not decode: {e:?}")
    });
    let second = encode(&again)
        .unwrap_or_else(|e| panic!("{what}: a re-decoded value does not encode: {e:?}"));
    assert!(
        first == second,
        "{what}: decode → encode → decode → encode changed the bytes"
    );
}

/// [`assert_stable`] through the protocol's codec (messages and the
/// payloads nested in them).
fn assert_wire_stable<T: Serialize + DeserializeOwned>(what: &str, value: &T) {
    assert_stable(what, value, codec::to_bytes, codec::from_bytes::<T>);
}

/// [`assert_stable`] through the Raft store's encoding (log, vote, state).
fn assert_store_stable<T: Serialize + DeserializeOwned>(what: &str, value: &T) {
    assert_stable(what, value, log_store::encode, log_store::decode::<T>);
}

/// A protocol decode may fail only as `Malformed`: anything else would be
/// answered to the peer as if the node, not the bytes, were at fault.
fn assert_malformed(what: &str, error: &WireError) {
    assert!(
        matches!(error, WireError::Malformed { .. }),
        "{what}: undecodable bytes answered {error:?}, not Malformed"
    );
}

/// The server's connection reader: frames read off the stream one after
/// another (`proto::frame::read_frame`, at the default frame bound and at a
/// tiny one), each payload then handled as [`request`] handles it.
///
/// Checks: a frame is exactly its 4-byte length and that many bytes of the
/// stream, non-empty and within the bound; a clean end is only at the end
/// of the bytes; the only errors an in-memory stream can cause are a
/// frame over the bound, an empty frame and a stream cut inside a frame;
/// read through the connections' buffer, the same bytes give the same
/// frames and the same end.
pub fn frame(data: &[u8]) {
    for max in [Limits::default().max_frame_bytes, 16] {
        let mut reader = data;
        loop {
            let start = data.len() - reader.len();
            match block_on(frame::read_frame(&mut reader, max, FRAME_TIMEOUT)) {
                Ok(Some(payload)) => {
                    let end = data.len() - reader.len();
                    assert!(!payload.is_empty() && payload.len() <= max as usize);
                    let mut framed = (payload.len() as u32).to_be_bytes().to_vec();
                    framed.extend_from_slice(&payload);
                    assert!(
                        data[start..end] == framed[..],
                        "a frame is not the bytes it consumed"
                    );
                    if max != 16 {
                        request(&payload);
                    }
                }
                Ok(None) => {
                    assert!(reader.is_empty(), "a clean end before the end of the bytes");
                    break;
                }
                Err(FrameError::TooLarge { len, max: bound }) => {
                    assert!(bound == max && len > u64::from(max));
                    break;
                }
                Err(FrameError::Empty) => break,
                Err(FrameError::Truncated) => {
                    assert!(reader.is_empty(), "truncated with bytes left");
                    break;
                }
                Err(e) => panic!("an in-memory stream failed a frame read: {e}"),
            }
        }
        assert_eq!(
            frames_read(data, max),
            frames_read(frame::buffered(data), max),
            "the connections' buffered reader reads other frames than the stream"
        );
    }
}

/// The frames `reader` yields at the frame bound `max`, then how the
/// reading ended: the same for the bytes read straight and through the
/// buffer the connections read through (`frame::buffered`).
fn frames_read<R: AsyncRead + Unpin>(mut reader: R, max: u32) -> (Vec<Vec<u8>>, String) {
    let mut frames = Vec::new();
    loop {
        match block_on(frame::read_frame(&mut reader, max, FRAME_TIMEOUT)) {
            Ok(Some(payload)) => frames.push(payload),
            Ok(None) => return (frames, "end".to_owned()),
            Err(e) => return (frames, e.to_string()),
        }
    }
}

/// Both sides of the handshake (`proto::handshake::accept` and
/// `connect`), the peer's bytes being `data`.
///
/// Checks: the server accepts exactly a hello with this build's magic and
/// version (whatever its status field), answers every complete hello with
/// its own magic, version and the matching status, and answers nothing to
/// an incomplete one; the client sends its hello and accepts exactly a
/// reply with the magic and status `Ok`.
pub fn handshake(data: &[u8]) {
    let hello = data.get(..handshake::LEN);

    let mut wire = tokio::io::join(data, Vec::new());
    let accepted = block_on(handshake::accept(&mut wire, FRAME_TIMEOUT));
    let (_, reply) = wire.into_inner();
    // The server judges magic and version; a client's status field carries
    // nothing (0 by convention) and is not checked.
    let ours = &handshake::client_hello()[..6];
    assert_eq!(
        accepted.is_ok(),
        hello.is_some_and(|h| h.starts_with(ours)),
        "the server's verdict on {hello:02x?}: {accepted:?}"
    );
    match hello {
        Some(_) => {
            let reply: [u8; handshake::LEN] = reply
                .as_slice()
                .try_into()
                .unwrap_or_else(|_| panic!("a reply of {} bytes", reply.len()));
            let (magic_ok, version, status) = handshake::parse_reply(reply);
            assert!(magic_ok && version == PROTOCOL_VERSION);
            let expected = match &accepted {
                Ok(()) => Status::Ok,
                Err(HandshakeError::BadMagic(_)) => Status::BadMagic,
                Err(HandshakeError::UnsupportedVersion { .. }) => Status::UnsupportedVersion,
                Err(e) => panic!("the server failed a complete hello with {e}"),
            };
            assert_eq!(status, Some(expected));
        }
        None => {
            assert!(reply.is_empty(), "a reply to an incomplete hello");
            assert!(matches!(accepted, Err(HandshakeError::Io(_))));
        }
    }

    let mut wire = tokio::io::join(data, Vec::new());
    let connected = block_on(handshake::connect(&mut wire, FRAME_TIMEOUT));
    let (_, sent) = wire.into_inner();
    assert_eq!(sent, handshake::client_hello());
    let accept_reply = hello.is_some_and(|h| h.starts_with(&MAGIC) && h.ends_with(&[0, 0]));
    assert_eq!(
        connected.is_ok(),
        accept_reply,
        "the client's verdict on {hello:02x?}: {connected:?}"
    );
}

/// A request frame's payload as the server decodes it
/// (`codec::decode_request`), then what the server does next with a
/// decoded one: limits, the operation's class, a Raft payload's decode.
///
/// Checks: failures are `Malformed`; a decoded frame's id is what
/// `peek_request_id` finds (so errors reach their request); the frame
/// re-encodes stably (compared as bytes: a map's recovery settings are
/// floats, and a NaN one is not equal to itself).
pub fn request(data: &[u8]) {
    let frame = match codec::decode_request(data) {
        Ok(frame) => frame,
        Err(e) => return assert_malformed("request", &e),
    };
    assert_eq!(codec::peek_request_id(data), Some(frame.id));
    let _ = Limits::default().validate(&frame);
    let _ = Op::of(&frame.request).class();
    if let Request::Node(NodeRequest::Raft { rpc, payload, .. }) = &frame.request {
        raft_request(*rpc, payload);
    }
    assert_stable("request", &frame, codec::encode, |framed| {
        codec::decode_request(&framed[4..])
    });
}

/// A response frame's payload as the client decodes it
/// (`codec::decode_response`); a Raft answer inside it is decoded as each
/// of the three answers a peer client may be waiting for.
///
/// Checks: failures are `Malformed`; the frame re-encodes stably.
pub fn response(data: &[u8]) {
    let frame = match codec::decode_response(data) {
        Ok(frame) => frame,
        Err(e) => return assert_malformed("response", &e),
    };
    if let Ok(Response::Raft(answer)) = &frame.result {
        raft_answers(answer);
    }
    assert_stable("response", &frame, codec::encode, |framed| {
        codec::decode_response(&framed[4..])
    });
}

/// The payloads of Raft RPCs between nodes. The first byte chooses the
/// decoder (0–2: the AppendEntries, Vote and InstallSnapshot requests as
/// `Cluster::handle_raft` decodes them; 3–5: their answers as the peer
/// client decodes them), the rest is the payload.
///
/// Checks: failures are `Malformed`; whatever decodes is stable; the
/// entries of an AppendEntries are stable as the log store keeps them, and
/// a one-chunk snapshot decodes as the state machine installs it.
pub fn raft_rpc(data: &[u8]) {
    let Some((&selector, payload)) = data.split_first() else {
        return;
    };
    match selector % 6 {
        0 => raft_request(RaftRpc::AppendEntries, payload),
        1 => raft_request(RaftRpc::Vote, payload),
        2 => raft_request(RaftRpc::InstallSnapshot, payload),
        3 => raft_answer::<AppendEntriesAnswer>("AppendEntries answer", payload),
        4 => raft_answer::<VoteAnswer>("Vote answer", payload),
        _ => raft_answer::<InstallSnapshotAnswer>("InstallSnapshot answer", payload),
    }
}

fn raft_request(rpc: RaftRpc, payload: &[u8]) {
    match RaftRequest::decode(rpc, payload) {
        Ok(RaftRequest::AppendEntries(request)) => {
            assert_wire_stable::<AppendEntriesRequest<TypeConfig>>("AppendEntries", &request);
            for entry in &request.entries {
                assert_store_stable::<Entry>("an appended entry", entry);
            }
        }
        Ok(RaftRequest::Vote(request)) => {
            assert_wire_stable::<VoteRequest<NodeId>>("Vote", &request);
        }
        Ok(RaftRequest::InstallSnapshot(request)) => {
            assert_wire_stable::<InstallSnapshotRequest<TypeConfig>>("InstallSnapshot", &request);
            if request.offset == 0 && request.done {
                state(&request.data);
            }
        }
        Err(e) => assert_malformed("Raft request", &e),
    }
}

fn raft_answers(answer: &[u8]) {
    raft_answer::<AppendEntriesAnswer>("AppendEntries answer", answer);
    raft_answer::<VoteAnswer>("Vote answer", answer);
    raft_answer::<InstallSnapshotAnswer>("InstallSnapshot answer", answer);
}

fn raft_answer<T: Serialize + DeserializeOwned>(what: &str, answer: &[u8]) {
    match codec::from_bytes::<T>(answer) {
        Ok(decoded) => assert_wire_stable(what, &decoded),
        Err(e) => assert_malformed(what, &e),
    }
}

/// A stored record (`storage::record`: `decode`, the header-only
/// `decode_header` / `decode_version`, and `decode_verified_header`, which
/// writes and scans use).
///
/// Checks: a record decodes only if its value matches its crc, computed
/// here independently of the decoder; one flipped bit anywhere in the
/// value or the crc makes it fail; it re-encodes to exactly the input; the
/// header readers agree with the full decode.
pub fn record(data: &[u8]) {
    let header = record::decode_header(data);
    let version = record::decode_version(data);
    assert_eq!(header.clone().map(|h| h.0), version);
    // The verified header is the full decode without the copy.
    let verified = record::decode_verified_header(data);
    let full = record::decode(data);
    assert_eq!(
        verified.clone(),
        full.clone().map(|r| (r.version, r.value.is_none()))
    );
    let decoded = match full {
        Ok(decoded) => decoded,
        Err(e) => {
            match &header {
                // Past a valid header only the value can be wrong: its crc,
                // or bytes under a tombstone.
                Ok((_, tombstone)) => assert!(
                    matches!(e, RecordError::Checksum { .. })
                        || *tombstone && matches!(e, RecordError::BadFlags(_)),
                    "a valid header, then {e}"
                ),
                Err(header_error) => assert_eq!(&e, header_error),
            }
            return;
        }
    };
    // The layout is fixed (see `storage::record`): the crc is the last 4
    // bytes of the header, the value all that follows.
    const CRC_AT: usize = HEADER_LEN - 4;
    let (body, stored) = (&data[HEADER_LEN..], &data[CRC_AT..HEADER_LEN]);
    assert_eq!(
        crc32c::crc32c(body).to_be_bytes(),
        stored,
        "a value returned without a matching crc"
    );
    assert_eq!(
        header.ok(),
        Some((decoded.version, decoded.value.is_none()))
    );
    assert_eq!(
        record::encode(decoded.version, decoded.value.as_deref()),
        data,
        "a record that does not re-encode to itself"
    );
    // Any single flipped bit of the value or the crc must be caught; which
    // one is taken from the version, so that the fuzzer walks them all.
    let span = (data.len() - CRC_AT) as u64;
    let at = CRC_AT + (decoded.version.hlc % span) as usize;
    let bit = decoded.version.writer % 8;
    let mut damaged = data.to_vec();
    damaged[at] ^= 1 << bit;
    assert!(
        matches!(record::decode(&damaged), Err(RecordError::Checksum { .. })),
        "a record with bit {bit} of byte {at} flipped still decodes"
    );
}

/// A stored hint (`storage::hints::decode_hint`, what replay reads).
///
/// Checks: whatever decodes re-encodes to a hint equal to it, through
/// stable bytes.
pub fn hint(data: &[u8]) {
    let Ok(decoded) = hints::decode_hint(data) else {
        return;
    };
    let encoded = hints::encode_hint(&decoded).expect("a decoded hint encodes");
    assert_eq!(hints::decode_hint(&encoded).ok(), Some(decoded.clone()));
    assert_stable("hint", &decoded, hints::encode_hint, hints::decode_hint);
}

/// The Raft log store's values (`raft::log_store::decode`): the first byte
/// chooses what the rest is read as (0: a log entry of `raft_log`; 1: the
/// vote; 2: `committed`; 3: `last_purged`, of `raft_meta`).
///
/// Checks: whatever decodes is stable.
pub fn raft_log(data: &[u8]) {
    let Some((&selector, value)) = data.split_first() else {
        return;
    };
    match selector % 4 {
        0 => stored::<Entry>("log entry", value),
        1 => stored::<Vote<NodeId>>("vote", value),
        2 => stored::<Option<LogId>>("committed", value),
        _ => stored::<LogId>("last purged", value),
    }
}

fn stored<T: Serialize + DeserializeOwned>(what: &str, value: &[u8]) {
    let decoded: Result<T, CorruptValue> = log_store::decode(value);
    if let Ok(decoded) = decoded {
        assert_store_stable(what, &decoded);
    }
}

/// The state machine's values (`raft::state_machine`): the first byte
/// chooses (even: the applied state, also every snapshot's contents; odd:
/// the stored snapshot, whose contents are then read as a follower
/// installing it would).
///
/// Checks: whatever decodes is stable.
pub fn raft_state(data: &[u8]) {
    let Some((&selector, value)) = data.split_first() else {
        return;
    };
    if selector % 2 == 0 {
        state(value);
    } else if let Ok(snapshot) = state_machine::decode_snapshot(value) {
        assert_stable(
            "stored snapshot",
            &snapshot,
            log_store::encode,
            state_machine::decode_snapshot,
        );
        state(&snapshot.data);
    }
}

fn state(value: &[u8]) {
    if let Ok(applied) = state_machine::decode_state(value) {
        assert_stable(
            "applied state",
            &applied,
            log_store::encode,
            state_machine::decode_state,
        );
    }
}

/// A journal segment (`storage::journal::decode_segment`), read from disk
/// when storage opens after a crash.
///
/// Checks: decoding stops at the first frame that does not check and
/// never panics; the frames it kept re-encode to exactly the bytes they
/// were read from (nothing invented, nothing dropped before the stop).
pub fn journal(data: &[u8]) {
    let Ok(decoded) = journal::decode_segment(data) else {
        assert!(!data.starts_with(journal::MAGIC));
        return;
    };
    if data.len() < journal::MAGIC.len() {
        // A segment whose creation was cut short.
        assert!(decoded.entries.is_empty() && decoded.stopped.is_none());
        return;
    }
    let good = data
        .get(..decoded.good_bytes)
        .expect("good bytes within the data");
    assert_eq!(decoded.stopped.is_none(), good.len() == data.len());
    let mut again = journal::MAGIC.to_vec();
    for entry in &decoded.entries {
        journal::encode_frame(&mut again, entry.partition, &entry.key, &entry.record);
    }
    assert_eq!(again.as_slice(), good);
}

/// A storage directory's `LAYOUT` file (`storage::layout::parse_layout`,
/// after the UTF-8 check `read_to_string` makes).
///
/// Checks: a parsed count is one a directory may have, and the file the
/// node would write for it parses back to it.
pub fn layout(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(shards) = layout::parse_layout(text) {
        assert!((1..=MAX_SHARDS).contains(&shards));
        assert_eq!(
            layout::parse_layout(&layout::render_layout(shards)),
            Ok(shards)
        );
    }
}

/// The identity tree's two values (`raft::identity::decode_identity` and
/// `decode_join_token`), both read from the same bytes.
///
/// Checks: a decoded identity is stable and equal after the trip; a join
/// token decodes exactly from 8 bytes, to their big-endian value.
pub fn identity(data: &[u8]) {
    if let Ok(decoded) = identity::decode_identity(data) {
        let encoded = codec::to_bytes(&decoded).expect("a decoded identity encodes");
        assert_eq!(identity::decode_identity(&encoded).ok(), Some(decoded));
        assert_wire_stable("identity", &decoded);
    }
    match identity::decode_join_token(data) {
        Ok(token) => assert_eq!(token.to_be_bytes()[..], data[..]),
        Err(_) => assert_ne!(data.len(), 8),
    }
}

/// The last-words file a node reads at startup
/// (`server/last_words.rs`: the shape it was running when it aborted).
///
/// Checks: a shape read back encodes to the very bytes it was read from.
pub fn last_words(data: &[u8]) {
    use crate::server::last_words;
    if let Ok(Some(shape)) = last_words::decode(data) {
        let op = Op::ALL
            .iter()
            .find(|op| op.name() == shape.op)
            .expect("a decoded operation exists");
        assert_eq!(last_words::encode(*op, shape.hash)[..], data[..]);
    }
}

/// The node's configuration file, read as `Config::from_file` reads it
/// (UTF-8, then TOML into [`Config`]), then checked and turned into the
/// options it gives the floors below, as startup does.
///
/// Checks: a parsed configuration prints (`--print-config`) as TOML that
/// parses to one printing the same.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = toml::from_str::<Config>(text) else {
        return;
    };
    if config.check().is_ok() {
        let _ = (
            config.limits(),
            config.storage(),
            config.cluster(&crate::tls::Transport::Plain),
            config.security().is_ok(),
        );
        let _ = (config.admission(), config.admission_after_restart());
    }
    let printed = config.to_toml();
    let again: Config = toml::from_str(&printed)
        .unwrap_or_else(|e| panic!("the printed configuration does not parse: {e}\n{printed}"));
    assert_eq!(
        again.to_toml(),
        printed,
        "printing a configuration is unstable"
    );
}

/// A holder's certificate files as a node reads them from its
/// certificates directory (`tls::check_pair`, what loading and reloading
/// run): the input is three length-prefixed parts (u16 big-endian
/// lengths), the CA certificate, the holder's certificate and its key,
/// and its first byte picks the role asked for.
///
/// Checks: a pair that loads carries the role asked for and has not
/// expired.
pub fn cert(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let role = if pick & 1 == 0 {
        crate::tls::Role::Node
    } else {
        crate::tls::Role::Client
    };
    let mut parts = Vec::with_capacity(3);
    let mut rest = rest;
    for _ in 0..2 {
        let Some((len, tail)) = rest.split_first_chunk::<2>() else {
            return;
        };
        let len = usize::from(u16::from_be_bytes(*len)).min(tail.len());
        let (part, tail) = tail.split_at(len);
        parts.push(part);
        rest = tail;
    }
    parts.push(rest);
    let now = std::time::SystemTime::now();
    if let Ok((loaded_role, not_after)) =
        crate::tls::check_pair(role, parts[0], parts[1], parts[2], now)
    {
        assert_eq!(loaded_role, Some(role), "a pair loads only with its role");
        assert!(not_after > now, "an expired pair never loads");
    }
}

/// An admin port's answer as `client::admin_http` reads it (what the bench
/// runner and tools read from `/metrics` and health).
///
/// Checks: an answer's body is the end of what was received.
pub fn admin_answer(data: &[u8]) {
    if let Some(answer) = crate::client::admin_http::parse(data) {
        let text = String::from_utf8_lossy(data);
        assert!(
            text.ends_with(&answer.body),
            "the body is what follows the headers"
        );
    }
}
