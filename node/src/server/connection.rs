//! One client connection: handshake, then a reader that decodes frames,
//! passes each request through admission control, and starts a task per
//! admitted (or briefly queued) request, and a writer that sends responses
//! in whatever order they finish. Refused requests are answered by the
//! reader itself, without a task.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::{Duration, Instant};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::authority::Authority;
use super::contain::{self, Containment};
use super::slow_peers::{Activity, HandshakeSlot, Refusals};
use super::tarpit::{Spare, Tarpit};
use super::{Node, ServerOptions, handler};
use crate::admission::Admit;
use crate::metrics::Outcome;
use crate::proto::frame::{self, FrameError};
use crate::proto::op::Op;
use crate::proto::{RequestFrame, Response, ResponseFrame, WireError, codec, handshake};
use crate::tls;

/// What every connection of a server shares.
pub struct Context {
    /// The node's state and services.
    pub node: Arc<Node>,
    /// Connection-handling settings.
    pub options: Arc<ServerOptions>,
    /// Panic containment and the quarantine check.
    pub containment: Arc<Containment>,
    /// Connections that failed to open (a TLS handshake refused, a
    /// plaintext or foreign peer), logged at most once a second.
    pub failed_opens: Arc<std::sync::Mutex<Refusals>>,
    /// Where connections ended to make room are held before closing.
    pub tarpit: Tarpit,
}

/// Serves a connection until the peer leaves, the stream becomes
/// untrustworthy, or shutdown; in-flight requests finish before it returns.
/// The TLS and levee handshakes run in `handshake_slot`, which the accept
/// loop may take back for a newer connection, and within the handshake
/// timeout together. A connection whose handshake is ended or times out
/// is held open a while longer in the tarpit (`server/tarpit.rs`).
pub async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    context: Context,
    handshake_slot: HandshakeSlot,
    activity: &Activity,
    shutdown: CancellationToken,
) {
    let timeout = context.options.handshake_timeout;
    let spare = Spare::of(&stream);
    let Some(credentials) = context.options.tls.clone() else {
        let mut stream = stream;
        let opened = handshake_slot
            .hold(handshake::accept(&mut stream, timeout))
            .await;
        let opened = opened.map(|r| r.map_err(OpenError::Levee));
        match held_or_logged(peer, opened, spare, &context) {
            Some(spare) => {
                serve_open(
                    stream,
                    peer,
                    context,
                    Authority::Insecure,
                    activity,
                    spare,
                    shutdown,
                )
                .await;
            }
            None => drop(stream),
        }
        return;
    };
    // The configuration as of now: a renewed certificate serves new
    // connections, and this one keeps the pair it started with.
    let acceptor = TlsAcceptor::from(credentials.server_config());
    let open = async {
        let mut stream = acceptor.accept(stream).await.map_err(OpenError::Tls)?;
        let identity = tls::peer_identity(stream.get_ref().1.peer_certificates());
        handshake::accept(&mut stream, timeout)
            .await
            .map_err(OpenError::Levee)?;
        Ok((stream, identity))
    };
    let open = async {
        tokio::time::timeout(timeout, open)
            .await
            .unwrap_or(Err(OpenError::Levee(handshake::HandshakeError::Timeout(
                timeout,
            ))))
    };
    let opened = handshake_slot.hold(open).await;
    let (stream, identity) = match opened {
        Some(Ok(opened)) => opened,
        other => {
            held_or_logged(peer, other.map(|r| r.map(|_| ())), spare, &context);
            return;
        }
    };
    serve_open(
        stream,
        peer,
        context,
        Authority::of(identity),
        activity,
        spare,
        shutdown,
    )
    .await;
}

/// Why a connection did not open.
#[derive(Debug, thiserror::Error)]
enum OpenError {
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    #[error("{0}")]
    Levee(handshake::HandshakeError),
}

/// What becomes of a connection's opening: `Some` with its spare socket
/// if it opened; else the connection closes, logged, and its spare goes
/// to the tarpit if the peer was merely slow (its handshake was ended for
/// a newer one or timed out), since a peer that was refused outright
/// (a bad handshake, a foreign certificate) should know at once.
fn held_or_logged(
    peer: SocketAddr,
    opened: Option<Result<(), OpenError>>,
    spare: Option<Spare>,
    context: &Context,
) -> Option<Option<Spare>> {
    let slow = matches!(
        opened,
        None | Some(Err(OpenError::Levee(handshake::HandshakeError::Timeout(_))))
    );
    if opened_or_logged(peer, opened, &context.failed_opens) {
        return Some(spare);
    }
    if let Some(spare) = spare.filter(|_| slow) {
        context.tarpit.hold(spare);
    }
    None
}

/// Logs a failed or ended opening; whether the connection opened.
fn opened_or_logged(
    peer: SocketAddr,
    opened: Option<Result<(), OpenError>>,
    failed: &std::sync::Mutex<Refusals>,
) -> bool {
    match opened {
        Some(Ok(())) => true,
        Some(Err(e)) => {
            // An expired or foreign certificate, or a plaintext client,
            // lands here: worth a warning, but a scan of the port must not
            // flood the log, so one line a second with the count.
            let due = failed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .refused(std::time::Instant::now());
            match due {
                Some(count) => {
                    tracing::warn!(%peer, error = %e, count, "connection not opened; closing (`count`: failed openings since the last such line)")
                }
                None => tracing::debug!(%peer, error = %e, "connection not opened; closing"),
            }
            false
        }
        None => {
            tracing::debug!(%peer, "handshake ended for a newer connection; closing");
            false
        }
    }
}

/// Serves an opened connection, each request checked against what the
/// caller's certificate allows. `spare` (a duplicate of its socket) is
/// kept until the first request: a connection ended for a newcomer before
/// it ever sent one goes to the tarpit.
async fn serve_open<S>(
    stream: S,
    peer: SocketAddr,
    context: Context,
    authority: Authority,
    activity: &Activity,
    mut spare: Option<Spare>,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Context {
        node,
        options,
        containment,
        tarpit,
        ..
    } = context;
    let (reader, writer) = tokio::io::split(stream);
    let mut reader = frame::buffered(reader);
    let inflight = options.max_inflight_per_connection;
    // Bounded: at most one queued response per in-flight request, plus
    // room for connection-level errors.
    let (tx, rx) = mpsc::channel::<Vec<u8>>(inflight + 4);
    let writer = tokio::spawn(write_responses(writer, rx, peer, options.frame_timeout));
    let permits = Arc::new(Semaphore::new(inflight));
    activity.opened(permits.clone(), inflight);

    loop {
        let read = tokio::select! {
            _ = shutdown.cancelled() => break,
            // Idle while every slot is taken: ended for a newcomer.
            _ = activity.ended() => {
                tracing::debug!(%peer, "idle connection ended for a newer one");
                if let Some(spare) = spare.take() {
                    // Never used: held, not closed. Nothing is in flight
                    // (it was idle), so the writer has nothing to send,
                    // and stopping it keeps it from ending the stream
                    // (a FIN the peer would see).
                    writer.abort();
                    tarpit.hold(spare);
                    return;
                }
                break;
            }
            // The writer gave up on this peer (it stopped reading): stop
            // doing work whose answers cannot be delivered.
            _ = tx.closed() => break,
            read = frame::read_frame(&mut reader, options.limits.max_frame_bytes, options.frame_timeout) => read,
        };
        let payload = match read {
            Ok(Some(payload)) => payload,
            Ok(None) => break,
            Err(e) => {
                reply_to_broken_stream(&tx, peer, e).await;
                break;
            }
        };
        let received = Instant::now();
        activity.touch();
        // A connection that has made a request is closed, never held,
        // when ended: its client must see it go and reconnect.
        spare = None;
        let request = match codec::decode_request(&payload) {
            Ok(request) => request,
            Err(e) => {
                // The framing is intact, so the connection can go on; the
                // error goes to the request id if one can be read.
                let id = codec::peek_request_id(&payload).unwrap_or(0);
                tracing::warn!(%peer, id, error = %e, "undecodable request");
                answer(&tx, &node, id, Err(e)).await;
                continue;
            }
        };
        // Refused before anything more is spent on it: a request the
        // limits reject, or one whose shape is quarantined (it crashed
        // handlers, and running it again would crash this one).
        let op = Op::of(&request.request);
        let addr_of = |id| {
            let cluster = node.cluster()?;
            Some(cluster.map().nodes.get(&id)?.spec.addr.clone())
        };
        let refused = authority
            .permits(&request.request, addr_of)
            .and_then(|()| options.limits.validate(&request))
            .and_then(|()| {
                let shape = contain::shape_of(op, &request.request, || {
                    codec::request_body(&payload, &request)
                });
                containment.refuse(&node, op, &shape).map(|()| shape)
            });
        let shape = match refused {
            Ok(shape) => shape,
            Err(e) => {
                tracing::debug!(%peer, id = request.id, error = %e, "request refused");
                let id = request.id;
                answer(&tx, &node, id, Err(e)).await;
                continue;
            }
        };
        // Backpressure: with every slot taken, stop reading this peer.
        let permit = tokio::select! {
            _ = shutdown.cancelled() => {
                answer(&tx, &node, request.id, Err(WireError::ShuttingDown)).await;
                break;
            }
            permit = permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let RequestFrame {
            id,
            timeout_ms,
            request,
        } = request;
        let deadline = received + Duration::from_millis(u64::from(timeout_ms));
        // Admission before spawning: a refusal costs a few atomic loads and
        // one small encoded answer, never a task or an admission slot.
        let admission = node.admission().clone();
        let admitted = match admission.try_admit(op, payload.len() as u64, received) {
            Admit::Now(slot) => Ok(slot),
            Admit::Wait(ticket) => Err(ticket),
            Admit::Refused {
                reason,
                retry_after_ms,
            } => {
                drop(permit);
                let result = Err(WireError::Overloaded { retry_after_ms });
                let pressure = admission.load_percent();
                let encoded = codec::encode(&ResponseFrame {
                    id,
                    pressure,
                    epoch: map_epoch(&node),
                    result,
                });
                // Refusal time: receipt to an encoded answer. Waiting for
                // room in the writer queue afterwards is this client's own
                // backpressure (it is not reading), not the node's cost.
                admission
                    .metrics()
                    .record_shed(op, reason, Some(received.elapsed()));
                match encoded {
                    Ok(bytes) => {
                        let _ = tx.send(bytes).await;
                    }
                    Err(e) => tracing::error!(error = %e, "cannot encode response"),
                }
                continue;
            }
        };
        let (node, tx, containment) = (node.clone(), tx.clone(), containment.clone());
        tokio::spawn(async move {
            let slot = match admitted {
                Ok(slot) => Ok(slot),
                Err(ticket) => ticket.wait(deadline).await,
            };
            let result = match slot {
                Ok(mut slot) => {
                    // A panic in here is this request's alone: it is
                    // answered, and the node and this connection go on.
                    let result = match contain::contained_as(
                        handler::handle(&node, request, deadline),
                        op,
                        &shape,
                    )
                    .await
                    {
                        Ok(result) => result,
                        Err(caught) => Err(containment.panicked(&node, op, &shape, caught)),
                    };
                    // Frees the slot before the answer queues for the
                    // writer: a slow reader must not hold node capacity.
                    slot.finish(Outcome::of(&result));
                    result
                }
                Err(e) => Err(e),
            };
            // After the slot is freed: the pressure is what the node has
            // on its hands as this answer leaves.
            answer(&tx, &node, id, result).await;
            drop(permit);
        });
    }
    // The writer ends once every request task has sent its response and
    // dropped its sender.
    drop(tx);
    if let Err(e) = writer.await {
        tracing::error!(%peer, error = %e, "response writer failed");
    }
}

async fn reply_to_broken_stream(tx: &mpsc::Sender<Vec<u8>>, peer: SocketAddr, e: FrameError) {
    let error = match e {
        FrameError::TooLarge { len, max } => WireError::FrameTooLarge { len, max },
        FrameError::Empty => WireError::Malformed {
            detail: "empty frame".into(),
        },
        FrameError::Timeout(after) => WireError::Malformed {
            detail: format!("frame body not received within {after:?}"),
        },
        FrameError::Truncated | FrameError::Io(_) => {
            tracing::debug!(%peer, error = %e, "connection ended mid-frame");
            return;
        }
    };
    tracing::warn!(%peer, error = %error, "closing connection after a bad frame");
    send(
        tx,
        ResponseFrame {
            id: 0,
            pressure: 0,
            epoch: 0,
            result: Err(error),
        },
    )
    .await;
}

/// Queues the answer to request `id` for the writer, with the node's
/// pressure as it leaves (clients rank replicas by it) and its map epoch
/// (clients refresh an older map by it).
async fn answer(
    tx: &mpsc::Sender<Vec<u8>>,
    node: &Node,
    id: u64,
    result: Result<Response, WireError>,
) {
    let pressure = node.admission().load_percent();
    send(
        tx,
        ResponseFrame {
            id,
            pressure,
            epoch: map_epoch(node),
            result,
        },
    )
    .await;
}

/// The node's map epoch, 0 before its cluster membership has started.
fn map_epoch(node: &Node) -> u64 {
    node.cluster().map_or(0, |c| c.epoch())
}

async fn send(tx: &mpsc::Sender<Vec<u8>>, response: ResponseFrame) {
    match codec::encode(&response) {
        // A closed channel means the writer died with the connection;
        // there is no one left to tell.
        Ok(bytes) => {
            let _ = tx.send(bytes).await;
        }
        Err(e) => tracing::error!(error = %e, "cannot encode response"),
    }
}

/// Writes responses until every sender is gone. Each write and flush must
/// finish within `timeout` (the frame timeout, as for reads): a peer that
/// stops reading would otherwise hold this connection, its queued
/// responses and its request slots for ever.
async fn write_responses<W: AsyncWrite + Unpin>(
    writer: W,
    mut rx: mpsc::Receiver<Vec<u8>>,
    peer: SocketAddr,
    timeout: Duration,
) {
    let mut writer = BufWriter::new(writer);
    while let Some(bytes) = rx.recv().await {
        let written = tokio::time::timeout(timeout, async {
            // Bursts of answers share a send.
            frame::write_batched(&mut writer, &bytes, || !rx.is_empty()).await
        })
        .await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "write failed; dropping connection");
                return;
            }
            Err(_) => {
                tracing::warn!(%peer, after = ?timeout, "peer is not reading its responses; dropping connection");
                return;
            }
        }
    }
    let _ = tokio::time::timeout(timeout, writer.shutdown()).await;
}
