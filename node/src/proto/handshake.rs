//! The connection handshake.
//!
//! Each side sends 8 bytes: the magic `LEVE`, its protocol version (u16
//! big-endian) and a status (u16 big-endian; 0 from a client). The server
//! answers with its own magic and version and a [`Status`]; on anything but
//! `Ok` it closes the connection. A fixed, bincode-independent layout means
//! any future version can still recognise and refuse an old peer clearly.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{MAGIC, PROTOCOL_VERSION};

/// Handshake length in bytes.
pub const LEN: usize = 8;

/// The server's verdict on a client's handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Status {
    /// Accepted; frames follow.
    Ok = 0,
    /// The first four bytes were not `LEVE`: not a levee client.
    BadMagic = 1,
    /// A levee client speaking a version this server does not.
    UnsupportedVersion = 2,
}

impl Status {
    fn from_u16(v: u16) -> Option<Self> {
        match v {
            0 => Some(Self::Ok),
            1 => Some(Self::BadMagic),
            2 => Some(Self::UnsupportedVersion),
            _ => None,
        }
    }
}

/// A failed handshake.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The peer is not speaking levee.
    #[error("peer is not a levee endpoint (bad magic {0:02x?})")]
    BadMagic([u8; 4]),
    /// The peer speaks another protocol version.
    #[error("peer speaks levee protocol version {theirs}; this build speaks {ours}")]
    UnsupportedVersion {
        /// The peer's version.
        theirs: u16,
        /// Ours.
        ours: u16,
    },
    /// The server refused us with a status we do not know.
    #[error("server refused the handshake with unknown status {0}")]
    UnknownStatus(u16),
    /// No complete handshake in time.
    #[error("no handshake within {0:?}")]
    Timeout(Duration),
    /// The stream failed.
    #[error("i/o error during handshake: {0}")]
    Io(#[from] std::io::Error),
}

fn encode(version: u16, status: u16) -> [u8; LEN] {
    let mut out = [0u8; LEN];
    out[..4].copy_from_slice(&MAGIC);
    out[4..6].copy_from_slice(&version.to_be_bytes());
    out[6..].copy_from_slice(&status.to_be_bytes());
    out
}

fn decode(raw: [u8; LEN]) -> ([u8; 4], u16, u16) {
    let [m0, m1, m2, m3, v0, v1, s0, s1] = raw;
    (
        [m0, m1, m2, m3],
        u16::from_be_bytes([v0, v1]),
        u16::from_be_bytes([s0, s1]),
    )
}

/// Server side: reads the client's handshake, answers it, and says whether
/// frames may follow.
pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    timeout: Duration,
) -> Result<(), HandshakeError> {
    let exchange = async {
        let mut raw = [0u8; LEN];
        stream.read_exact(&mut raw).await?;
        let (magic, version, _) = decode(raw);
        let (status, result) = if magic != MAGIC {
            (Status::BadMagic, Err(HandshakeError::BadMagic(magic)))
        } else if version != PROTOCOL_VERSION {
            (
                Status::UnsupportedVersion,
                Err(HandshakeError::UnsupportedVersion {
                    theirs: version,
                    ours: PROTOCOL_VERSION,
                }),
            )
        } else {
            (Status::Ok, Ok(()))
        };
        stream
            .write_all(&encode(PROTOCOL_VERSION, status as u16))
            .await?;
        stream.flush().await?;
        result
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| HandshakeError::Timeout(timeout))?
}

/// Client side: sends our handshake and checks the server's answer.
pub async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    timeout: Duration,
) -> Result<(), HandshakeError> {
    let exchange = async {
        stream.write_all(&encode(PROTOCOL_VERSION, 0)).await?;
        stream.flush().await?;
        let mut raw = [0u8; LEN];
        stream.read_exact(&mut raw).await?;
        let (magic, version, status) = decode(raw);
        if magic != MAGIC {
            return Err(HandshakeError::BadMagic(magic));
        }
        match Status::from_u16(status) {
            Some(Status::Ok) => Ok(()),
            Some(Status::UnsupportedVersion) => Err(HandshakeError::UnsupportedVersion {
                theirs: version,
                ours: PROTOCOL_VERSION,
            }),
            // The server thought we were not levee: our bytes were damaged.
            Some(Status::BadMagic) => Err(HandshakeError::BadMagic(MAGIC)),
            None => Err(HandshakeError::UnknownStatus(status)),
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| HandshakeError::Timeout(timeout))?
}

/// Parses a server's handshake reply: `(magic ok, version, status)`. For
/// tests and tools that speak raw bytes.
pub fn parse_reply(raw: [u8; LEN]) -> (bool, u16, Option<Status>) {
    let (magic, version, status) = decode(raw);
    (magic == MAGIC, version, Status::from_u16(status))
}

/// The handshake a client of this build sends.
pub fn client_hello() -> [u8; LEN] {
    encode(PROTOCOL_VERSION, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn matching_peers_agree() {
        let (mut c, mut s) = tokio::io::duplex(64);
        let (a, b) = tokio::join!(connect(&mut c, T), accept(&mut s, T));
        a.unwrap();
        b.unwrap();
    }

    #[tokio::test]
    async fn a_non_levee_peer_is_told_and_refused() {
        let (mut c, mut s) = tokio::io::duplex(64);
        c.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let err = accept(&mut s, T).await.unwrap_err();
        assert!(matches!(err, HandshakeError::BadMagic(_)), "{err}");
        let mut reply = [0u8; LEN];
        c.read_exact(&mut reply).await.unwrap();
        assert_eq!(
            parse_reply(reply),
            (true, PROTOCOL_VERSION, Some(Status::BadMagic))
        );
    }

    #[tokio::test]
    async fn another_version_is_refused_by_name() {
        let (mut c, mut s) = tokio::io::duplex(64);
        c.write_all(&encode(PROTOCOL_VERSION + 1, 0)).await.unwrap();
        let err = accept(&mut s, T).await.unwrap_err();
        assert!(
            err.to_string()
                .contains(&format!("version {}", PROTOCOL_VERSION + 1)),
            "{err}"
        );
    }
}
