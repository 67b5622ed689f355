//! One multiplexed connection to a node.
//!
//! Requests get increasing ids and go through a bounded queue to a writer
//! task; a reader task hands each response to whoever waits for its id, in
//! whatever order they come back. Every request has a timeout, which also
//! travels to the server as the request's deadline.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

use super::ClientError;
use crate::proto::frame;
use crate::proto::{Request, RequestFrame, Response, ResponseFrame, WireError, codec, handshake};
use crate::tls::{self, Transport};

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Response, WireError>>>>>;

/// Frames waiting for the writer. A full queue makes callers wait (their
/// own timeout still applies) rather than buffering without bound.
const SEND_QUEUE: usize = 1024;

/// How long the reader waits for the rest of a response frame.
const FRAME_TIMEOUT: Duration = Duration::from_secs(30);

/// A live, multiplexed connection. Dropping the last handle closes it.
pub struct Connection {
    addr: String,
    tx: mpsc::Sender<Vec<u8>>,
    pending: Pending,
    next_id: AtomicU64,
    state: Arc<ConnState>,
}

#[derive(Default)]
struct ConnState {
    /// Cancelled when either loop ends or the last handle is dropped.
    closed: CancellationToken,
    /// The last connection-level error the server sent, reported to
    /// requests that were cut off by the close that follows it.
    reason: Mutex<Option<WireError>>,
    /// The pressure the node reported with its latest answer.
    pressure: AtomicU8,
    /// The newest map epoch the node reported with an answer.
    epoch: AtomicU64,
}

impl Connection {
    /// Connects (over TLS when `transport` says so) and handshakes, all
    /// within `connect_timeout`.
    pub async fn connect(
        addr: &str,
        transport: &Transport,
        connect_timeout: Duration,
        max_frame_bytes: u32,
    ) -> Result<Self, ClientError> {
        let connect = async {
            let stream = TcpStream::connect(addr)
                .await
                .map_err(|error| ClientError::Connect {
                    addr: addr.to_owned(),
                    error,
                })?;
            let _ = stream.set_nodelay(true);
            match transport {
                Transport::Plain => finish(addr, stream, connect_timeout, max_frame_bytes).await,
                Transport::Tls(credentials) => {
                    let tls_error = |detail: String| ClientError::Tls {
                        addr: addr.to_owned(),
                        detail,
                    };
                    let name = tls::server_name(addr).map_err(tls_error)?;
                    let stream = TlsConnector::from(credentials.client_config())
                        .connect(name, stream)
                        .await
                        .map_err(|e| tls_error(e.to_string()))?;
                    finish(addr, stream, connect_timeout, max_frame_bytes).await
                }
            }
        };
        tokio::time::timeout(connect_timeout, connect)
            .await
            .map_err(|_| ClientError::ConnectTimeout {
                addr: addr.to_owned(),
                after: connect_timeout,
            })?
    }

    /// The address this connection goes to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Whether the connection has failed or been closed by the server.
    pub fn is_closed(&self) -> bool {
        self.state.closed.is_cancelled() || self.tx.is_closed()
    }

    /// Closes the connection now: the writer stops, mid-frame if it must
    /// (a peer that stopped reading would hold it forever), and requests
    /// still waiting on it fail at once as closed.
    pub fn close(&self) {
        self.state.closed.cancel();
    }

    /// The node's pressure as its latest answer on this connection said
    /// (see [`ResponseFrame::pressure`]); 0 before any answer.
    pub fn pressure(&self) -> u8 {
        self.state.pressure.load(Ordering::Relaxed)
    }

    /// The newest map epoch the node reported with its answers on this
    /// connection (see [`ResponseFrame::epoch`]); 0 before any answer.
    pub fn epoch(&self) -> u64 {
        self.state.epoch.load(Ordering::Relaxed)
    }

    /// Sends a request and waits up to `timeout` for its response.
    pub async fn request(
        &self,
        request: Request,
        timeout: Duration,
    ) -> Result<Response, ClientError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let timeout_ms = u32::try_from(timeout.as_millis())
            .unwrap_or(u32::MAX)
            .max(1);
        let bytes = codec::encode(&RequestFrame {
            id,
            timeout_ms,
            request,
        })
        .map_err(ClientError::Server)?;
        let (done_tx, done_rx) = oneshot::channel();
        lock(&self.pending).insert(id, done_tx);
        let _guard = Forget {
            pending: &self.pending,
            id,
        };
        let exchange = async {
            self.tx.send(bytes).await.map_err(|_| self.closed_error())?;
            match done_rx.await {
                Ok(Ok(response)) => Ok(response),
                Ok(Err(e)) => Err(ClientError::Server(e)),
                Err(_) => Err(self.closed_error()),
            }
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| ClientError::Timeout {
                addr: self.addr.clone(),
                after: timeout,
            })?
    }

    fn closed_error(&self) -> ClientError {
        ClientError::ConnectionClosed {
            addr: self.addr.clone(),
            reason: lock(&self.state.reason).clone(),
        }
    }
}

/// The levee handshake on an open stream, then the reader and writer tasks.
async fn finish<S>(
    addr: &str,
    mut stream: S,
    connect_timeout: Duration,
    max_frame_bytes: u32,
) -> Result<Connection, ClientError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    handshake::connect(&mut stream, connect_timeout)
        .await
        .map_err(|error| ClientError::Handshake {
            addr: addr.to_owned(),
            error,
        })?;
    let (reader, writer) = tokio::io::split(stream);
    let (tx, rx) = mpsc::channel(SEND_QUEUE);
    let pending: Pending = Arc::default();
    let state = Arc::new(ConnState::default());
    tokio::spawn(write_loop(writer, rx, state.clone()));
    tokio::spawn(read_loop(
        frame::buffered(reader),
        pending.clone(),
        state.clone(),
        max_frame_bytes,
    ));
    Ok(Connection {
        addr: addr.to_owned(),
        tx,
        pending,
        next_id: AtomicU64::new(1),
        state,
    })
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.state.closed.cancel();
    }
}

/// Removes a request's entry however its wait ends (answer, timeout or
/// cancellation), so abandoned ids never accumulate.
struct Forget<'a> {
    pending: &'a Pending,
    id: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        lock(self.pending).remove(&self.id);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn write_loop<W: AsyncWrite + Unpin>(
    writer: W,
    mut rx: mpsc::Receiver<Vec<u8>>,
    state: Arc<ConnState>,
) {
    let mut writer = BufWriter::new(writer);
    loop {
        let bytes = tokio::select! {
            bytes = rx.recv() => match bytes {
                Some(b) => b,
                None => break,
            },
            _ = state.closed.cancelled() => break,
        };
        // A peer that stops reading (a frozen process) fills the socket and
        // would hold this write forever: closing must not wait for it.
        let written = tokio::select! {
            biased;
            _ = state.closed.cancelled() => break,
            // Bursts of requests share a send.
            written = frame::write_batched(&mut writer, &bytes, || !rx.is_empty()) => written,
        };
        if written.is_err() {
            break;
        }
    }
    state.closed.cancel();
    let _ = writer.shutdown().await;
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut reader: R,
    pending: Pending,
    state: Arc<ConnState>,
    max_frame_bytes: u32,
) {
    loop {
        let payload = tokio::select! {
            read = frame::read_frame(&mut reader, max_frame_bytes, FRAME_TIMEOUT) => match read {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "connection read failed");
                    break;
                }
            },
            // Stop promptly once the last handle is gone.
            _ = state.closed.cancelled() => break,
        };
        let ResponseFrame {
            id,
            pressure,
            epoch,
            result,
        } = match codec::decode_response(&payload) {
            Ok(frame) => frame,
            Err(e) => {
                tracing::warn!(error = %e, "undecodable response; closing connection");
                *lock(&state.reason) = Some(e);
                break;
            }
        };
        if id != 0 {
            state.pressure.store(pressure, Ordering::Relaxed);
            state.epoch.fetch_max(epoch, Ordering::Relaxed);
        }
        if id == 0 {
            if let Err(e) = result {
                tracing::warn!(error = %e, "server reported a connection error");
                *lock(&state.reason) = Some(e);
            }
            continue;
        }
        if let Some(waiter) = lock(&pending).remove(&id) {
            let _ = waiter.send(result);
        }
    }
    state.closed.cancel();
    // Dropping the senders fails every waiting request with "closed".
    lock(&pending).clear();
}
