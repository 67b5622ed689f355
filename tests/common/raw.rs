//! A raw, synchronous protocol connection for sending what a well-behaved
//! client never would.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use levee_node::proto::{RequestFrame, ResponseFrame, codec, handshake};

/// A TCP connection to a node, driven byte by byte.
pub struct RawConn {
    /// The socket.
    pub stream: TcpStream,
}

impl RawConn {
    /// Connects without handshaking.
    pub fn connect(addr: &str) -> Self {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        Self { stream }
    }

    /// Connects and completes a valid handshake.
    pub fn handshaken(addr: &str) -> Self {
        let mut conn = Self::connect(addr);
        conn.send(&handshake::client_hello());
        let reply = conn.read_handshake_reply();
        assert_eq!(
            handshake::parse_reply(reply),
            (
                true,
                levee_node::proto::PROTOCOL_VERSION,
                Some(handshake::Status::Ok)
            )
        );
        conn
    }

    /// Writes bytes as they are.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// Sends a well-formed request frame.
    pub fn send_request(&mut self, frame: &RequestFrame) {
        let bytes = codec::encode(frame).expect("encode");
        self.send(&bytes);
    }

    /// Reads the server's 8-byte handshake answer.
    pub fn read_handshake_reply(&mut self) -> [u8; handshake::LEN] {
        let mut reply = [0u8; handshake::LEN];
        self.stream.read_exact(&mut reply).expect("handshake reply");
        reply
    }

    /// Reads one response frame.
    pub fn read_response(&mut self) -> ResponseFrame {
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).expect("response length");
        let mut payload = vec![0u8; u32::from_be_bytes(len) as usize];
        self.stream
            .read_exact(&mut payload)
            .expect("response payload");
        codec::decode_response(&payload).expect("decodable response")
    }

    /// Whether the server has closed the connection (reads end of stream).
    pub fn is_closed_by_server(&mut self) -> bool {
        let mut buf = [0u8; 1];
        match self.stream.read(&mut buf) {
            Ok(0) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
            Ok(_) => false,
        }
    }
}
