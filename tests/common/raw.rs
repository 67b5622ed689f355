//! A raw, synchronous protocol connection for sending what a well-behaved
//! client never would: over mutual TLS as the client "root" (the suite's
//! nodes all speak TLS), or plain TCP to show what a peer without a
//! certificate gets.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use levee_node::proto::{RequestFrame, ResponseFrame, codec, handshake};
use levee_node::tls::{self, Transport};
use rustls::{ClientConnection, StreamOwned};

/// The stream under a raw connection.
pub enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP (the TLS handshake runs on first use).
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

/// A connection to a node, driven byte by byte.
pub struct RawConn {
    /// The stream.
    pub stream: Stream,
}

fn tcp(addr: &str) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream
}

fn tls_over(addr: &str, config: Arc<rustls::ClientConfig>) -> RawConn {
    let name = tls::server_name(addr).expect("server name");
    let conn = ClientConnection::new(config, name).expect("TLS client");
    RawConn {
        stream: Stream::Tls(Box::new(StreamOwned::new(conn, tcp(addr)))),
    }
}

impl RawConn {
    /// Connects (TLS as the client "root") without the levee handshake.
    pub fn connect(addr: &str) -> Self {
        Self::connect_with(addr, &super::certs::client_transport())
    }

    /// Connects over `transport` without the levee handshake.
    pub fn connect_with(addr: &str, transport: &Transport) -> Self {
        match transport {
            Transport::Plain => Self::plain(addr),
            Transport::Tls(credentials) => tls_over(addr, credentials.client_config()),
        }
    }

    /// Plain TCP, no TLS at all.
    pub fn plain(addr: &str) -> Self {
        Self {
            stream: Stream::Plain(tcp(addr)),
        }
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

    /// The TCP socket underneath (for its timeouts).
    pub fn tcp(&self) -> &TcpStream {
        match &self.stream {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref(),
        }
    }

    /// Writes bytes as they are.
    pub fn send(&mut self, bytes: &[u8]) {
        self.write_all(bytes).expect("write");
        self.flush().expect("flush");
    }

    /// Sends a well-formed request frame.
    pub fn send_request(&mut self, frame: &RequestFrame) {
        let bytes = codec::encode(frame).expect("encode");
        self.send(&bytes);
    }

    /// Reads the server's 8-byte handshake answer.
    pub fn read_handshake_reply(&mut self) -> [u8; handshake::LEN] {
        let mut reply = [0u8; handshake::LEN];
        self.read_exact(&mut reply).expect("handshake reply");
        reply
    }

    /// Reads one response frame.
    pub fn read_response(&mut self) -> ResponseFrame {
        let mut len = [0u8; 4];
        self.read_exact(&mut len).expect("response length");
        let mut payload = vec![0u8; u32::from_be_bytes(len) as usize];
        self.read_exact(&mut payload).expect("response payload");
        codec::decode_response(&payload).expect("decodable response")
    }

    /// Whether the server has closed the connection (reads end of stream,
    /// or TLS reports the peer gone).
    pub fn is_closed_by_server(&mut self) -> bool {
        let mut buf = [0u8; 1];
        match self.read(&mut buf) {
            Ok(0) => true,
            Err(e) => matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::BrokenPipe
            ),
            Ok(_) => false,
        }
    }
}

impl Read for RawConn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match &mut self.stream {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for RawConn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &mut self.stream {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.stream {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}
