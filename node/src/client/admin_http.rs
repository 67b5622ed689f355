//! `GET` on a node's admin port, over HTTPS with a client certificate when
//! the cluster has certificates: what `levee` tools and tests use to read
//! `/metrics` and the health endpoints. A plain HTTP/1.0 exchange (the
//! server closes the connection after the answer), bounded in size and
//! time.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::tls;

/// Largest answer read.
const MAX_ANSWER: u64 = 16 * 1024 * 1024;

/// An admin-port answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The HTTP status code.
    pub status: u16,
    /// The body.
    pub body: String,
}

/// `GET path` from the admin port at `addr`: plaintext when `tls` is
/// `None`, else HTTPS with that configuration (with or without a client
/// certificate). Everything within `within`.
pub async fn get(
    addr: &str,
    path: &str,
    tls: Option<Arc<rustls::ClientConfig>>,
    within: Duration,
) -> std::io::Result<Answer> {
    let fetch = async {
        let stream = TcpStream::connect(addr).await?;
        match tls {
            None => exchange(stream, addr, path).await,
            Some(config) => {
                let name = tls::server_name(addr).map_err(std::io::Error::other)?;
                let stream = TlsConnector::from(config).connect(name, stream).await?;
                exchange(stream, addr, path).await
            }
        }
    };
    tokio::time::timeout(within, fetch)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer in time"))?
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    addr: &str,
    path: &str,
) -> std::io::Result<Answer> {
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    stream.flush().await?;
    let mut raw = Vec::new();
    match (&mut stream).take(MAX_ANSWER).read_to_end(&mut raw).await {
        Ok(_) => {}
        // A server that closes without TLS's close_notify after a whole
        // answer: the answer is still whole (HTTP/1.0, closed by the server).
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(e) => return Err(e),
    }
    parse(&raw)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP answer"))
}

/// An HTTP answer's status and body (what the `admin_answer` fuzz
/// target feeds).
pub fn parse(raw: &[u8]) -> Option<Answer> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head
        .lines()
        .next()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(Answer {
        status,
        body: body.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_its_status_and_body() {
        let answer = parse(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 3\r\n\r\nno\n").unwrap();
        assert_eq!(answer.status, 403);
        assert_eq!(answer.body, "no\n");
        assert_eq!(parse(b"garbage"), None);
        assert_eq!(parse(b"HTTP/1.1 x\r\n\r\n"), None);
    }
}
