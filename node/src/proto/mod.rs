//! The levee wire protocol.
//!
//! A connection opens with a fixed 8-byte handshake each way
//! ([`handshake`]), then carries length-prefixed frames ([`frame`]) whose
//! payloads are bincode-2-encoded messages ([`message`], [`codec`]). Every
//! request carries an id, so many requests share one connection and
//! responses return in any order, and a timeout, so the server knows the
//! deadline past which the answer is useless. [`limits`] bounds frames,
//! keys and values. [`op`] names each request's operation and the class
//! (control / foreground / background) it competes in.
//!
//! The code is generic over `AsyncRead + AsyncWrite` so that TLS can wrap
//! the stream later without touching it.

pub mod codec;
pub mod frame;
pub mod handshake;
pub mod limits;
pub mod message;
pub mod op;

pub use limits::Limits;
pub use message::{
    AdminCommand, ClientRequest, Found, KeyVersion, NodeRequest, RaftRpc, RangeRecord, Request,
    RequestFrame, Response, ResponseFrame, ScanEntry, WireError,
};

/// First bytes of every levee connection, both ways.
pub const MAGIC: [u8; 4] = *b"LEVE";

/// The protocol version this build speaks. A peer with another version is
/// refused at the handshake with a message naming both.
pub const PROTOCOL_VERSION: u16 = 5;
