//! Containment of the query of death: a panic while handling one request
//! is caught at the request's edge, answered `Internal` with a short
//! incident id, logged once (with the operation and the key's hash, never
//! the key), counted, and reported to the cluster as a strike against the
//! request's shape; shapes struck often enough are refused on arrival on
//! every node ([`crate::cluster::quarantine`]). The node and the
//! connection's other requests are untouched.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::{Mutex, Once};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::cluster::map::Command;
use crate::cluster::quarantine::Shape;
use crate::node::Node;
use crate::proto::op::Op;
use crate::proto::{Request, WireError};
use crate::token_bucket::TokenBucket;

thread_local! {
    /// How many contained polls are running on this thread: a panic inside
    /// one is stashed for its catcher instead of printed by the default
    /// hook, so it is logged once, with the request's context.
    static CONTAINING: Cell<u32> = const { Cell::new(0) };
    /// The message and place of the last contained panic on this thread.
    static CAUGHT: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Installs (once per process) the panic hook that hands contained panics
/// to their catcher; any other panic goes to the hook that was there.
pub fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if CONTAINING.with(Cell::get) > 0 {
                let place = info
                    .location()
                    .map(|l| format!(" at {}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                let message = payload_text(info.payload());
                CAUGHT.with(|c| *c.borrow_mut() = Some(format!("{message}{place}")));
            } else {
                previous(info);
            }
        }));
    });
}

fn payload_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

/// What a contained future's panic said.
#[derive(Debug)]
pub struct Caught {
    /// The panic's message and where it was raised.
    pub message: String,
}

/// A future whose panics become [`Caught`] instead of unwinding into the
/// task that polls it. After a panic it is never polled again (it answers
/// `Ready` with the error), so no half-run state is resumed.
pub struct Contained<F> {
    inner: Pin<Box<F>>,
    /// The request's operation and shape hash, noted while it is polled
    /// for the last words an abort leaves ([`super::last_words`]).
    shape: Option<(Op, u64)>,
}

/// Wraps `future` so its panics are contained.
pub fn contained<F: Future>(future: F) -> Contained<F> {
    Contained {
        inner: Box::pin(future),
        shape: None,
    }
}

/// Wraps a request's `future` so its panics are contained, and an abort
/// while it runs is struck against `shape` when the node restarts.
pub fn contained_as<F: Future>(future: F, op: Op, shape: &Shape) -> Contained<F> {
    Contained {
        inner: Box::pin(future),
        shape: Some((op, shape.hash)),
    }
}

impl<F: Future> Future for Contained<F> {
    type Output = Result<F::Output, Caught>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let _noted = self
            .shape
            .map(|(op, hash)| super::last_words::running(op, hash));
        let inner = self.inner.as_mut();
        CONTAINING.with(|c| c.set(c.get() + 1));
        // Unwind safety: after a panic the future is dropped, never polled
        // again; shared state it touched is behind locks that recover from
        // poisoning or atomics.
        let polled = catch_unwind(AssertUnwindSafe(|| inner.poll(cx)));
        CONTAINING.with(|c| c.set(c.get().saturating_sub(1)));
        match polled {
            Ok(Poll::Ready(value)) => Poll::Ready(Ok(value)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => {
                let message = CAUGHT
                    .with(|c| c.borrow_mut().take())
                    .unwrap_or_else(|| payload_text(payload.as_ref()));
                Poll::Ready(Err(Caught { message }))
            }
        }
    }
}

/// The shape of a request, for the quarantine: its operation and the
/// hash of its key, or, when it has none, of its encoded body (`body` is
/// asked only then).
pub fn shape_of<'a>(op: Op, request: &Request, body: impl FnOnce() -> &'a [u8]) -> Shape {
    let hash = match request.key() {
        Some(key) => xxhash_rust::xxh3::xxh3_64(key),
        None => xxhash_rust::xxh3::xxh3_64(body()),
    };
    Shape {
        op: op.name().to_owned(),
        hash,
    }
}

/// Strikes a node may report per second (burst: [`STRIKE_BURST`]). A
/// query of death is quarantined after two strikes, so a handful a second
/// is plenty; the bound keeps a flood of distinct crashing requests from
/// becoming a flood of Raft proposals.
const STRIKES_PER_SEC: f64 = 5.0;
/// Burst of the strike bucket.
const STRIKE_BURST: f64 = 10.0;
/// Time a strike's proposal may take before it is given up (it is
/// best-effort: the next panic reports again).
const STRIKE_TIMEOUT: Duration = Duration::from_secs(2);

/// The per-node side of containment: refusal of quarantined shapes, and
/// the reporting of panics.
pub struct Containment {
    strikes: Mutex<TokenBucket>,
}

impl Default for Containment {
    fn default() -> Self {
        Self {
            strikes: Mutex::new(TokenBucket::new(
                STRIKES_PER_SEC,
                STRIKE_BURST,
                Instant::now(),
            )),
        }
    }
}

impl Containment {
    /// `Quarantined` if the cluster map quarantines this request's shape.
    /// Nearly free while the list is empty, which is nearly always.
    pub fn refuse(&self, node: &Node, op: Op, shape: &Shape) -> Result<(), WireError> {
        let Some(cluster) = node.cluster() else {
            return Ok(());
        };
        let map = cluster.map();
        if map.quarantine.is_empty() {
            return Ok(());
        }
        let now = crate::hlc::wall_ms();
        match map.quarantine.refuses(&shape.op, shape.hash, now) {
            Some(until) => {
                node.admission().metrics().record_quarantined(op);
                Err(WireError::Quarantined {
                    shape: shape.to_string(),
                    remaining_ms: until.saturating_sub(now),
                })
            }
            None => Ok(()),
        }
    }

    /// Handles a caught panic: logs it once, counts it, reports a strike
    /// to the cluster, and returns the answer the request gets.
    pub fn panicked(&self, node: &Node, op: Op, shape: &Shape, caught: Caught) -> WireError {
        let incident = format!("{:08x}", rand::random::<u32>());
        tracing::error!(
            op = op.name(),
            shape = %shape,
            incident,
            panic = caught.message,
            "request handler panicked; answered Internal, the node keeps serving"
        );
        node.admission().metrics().record_panic(op);
        self.report_strike(node, shape.clone());
        WireError::Internal { incident }
    }

    fn report_strike(&self, node: &Node, shape: Shape) {
        let Some(cluster) = node.cluster().cloned() else {
            return;
        };
        let allowed = self
            .strikes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(1.0, Instant::now())
            .is_ok();
        if !allowed {
            tracing::warn!(%shape, "strike not reported: too many panics this second");
            return;
        }
        propose_strike(cluster, shape);
    }
}

/// Reports a strike against `shape`, which the last run of this node was
/// running when it aborted (its last words, read at startup: see
/// [`super::last_words`]). Call once the node has the cluster map. A
/// node that restarts after a crash may find no leader for a while (its
/// peers may have crashed on the same request), so the proposal is
/// retried for up to [`ABORT_STRIKE_PATIENCE`].
pub fn report_abort(node: &Node, shape: Shape) {
    tracing::error!(
        %shape,
        "the last run of this node aborted while handling a request of this shape; reporting a strike"
    );
    let Some(cluster) = node.cluster().cloned() else {
        tracing::warn!(%shape, "strike not reported: no cluster");
        return;
    };
    let command = Command::Strike {
        shape,
        node: cluster.node_id(),
        at_ms: crate::hlc::wall_ms(),
    };
    tokio::spawn(async move {
        let deadline = Instant::now() + ABORT_STRIKE_PATIENCE;
        loop {
            match cluster.propose(command.clone(), STRIKE_TIMEOUT).await {
                Ok(_) => return,
                Err(e) if Instant::now() >= deadline => {
                    tracing::warn!(error = %e, "could not report the abort's strike to the cluster");
                    return;
                }
                // Pace the retries: no leader yet is usually seconds.
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    });
}

/// How long a restarted node keeps trying to report the strike of the
/// abort that ended its last run.
pub const ABORT_STRIKE_PATIENCE: Duration = Duration::from_secs(60);

fn propose_strike(cluster: std::sync::Arc<crate::raft::Cluster>, shape: Shape) {
    let command = Command::Strike {
        shape,
        node: cluster.node_id(),
        at_ms: crate::hlc::wall_ms(),
    };
    tokio::spawn(async move {
        if let Err(e) = cluster.propose(command, STRIKE_TIMEOUT).await {
            tracing::warn!(error = %e, "could not report a strike to the cluster");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_future_is_caught_with_its_message_and_others_run_on() {
        install_panic_hook();
        let caught = contained(async { panic!("boom {}", 7) }).await.unwrap_err();
        assert!(
            caught.message.starts_with("boom 7 at "),
            "{}",
            caught.message
        );
        assert!(caught.message.contains("contain.rs"));
        assert_eq!(contained(async { 5 }).await.unwrap(), 5);
    }

    #[tokio::test]
    async fn a_panic_after_a_pending_poll_is_caught_too() {
        install_panic_hook();
        let caught = contained(async {
            tokio::task::yield_now().await;
            panic!("later");
        })
        .await
        .unwrap_err();
        assert!(caught.message.starts_with("later"));
    }

    #[test]
    fn shapes_hash_the_key_or_else_the_payload() {
        use crate::proto::{ClientRequest, NodeRequest};
        let get = Request::Client(ClientRequest::Get {
            key: b"k".to_vec(),
            epoch: 1,
        });
        let a = shape_of(Op::Get, &get, || b"payload one");
        let b = shape_of(Op::Get, &get, || b"payload two");
        assert_eq!(a, b, "same key, same shape, whatever the rest");
        assert_eq!(a.op, "get");
        let digest = Request::Node(NodeRequest::Digest {
            partition: 1,
            buckets: 2,
        });
        assert_ne!(
            shape_of(Op::Digest, &digest, || b"one"),
            shape_of(Op::Digest, &digest, || b"two")
        );
    }
}
