//! The admission controller: decides, per request and before any task is
//! spawned, whether it runs now, waits briefly, or is refused.
//!
//! The decision ([`decide`]) is pure. [`Admission`] applies it with atomic
//! compare-and-swap on the in-flight and queue counters, so refusing costs
//! a few atomic loads: no lock, no allocation, no permit to wait for. The
//! wait for a slot is in `controller/waiting.rs`.

mod waiting;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;

pub use waiting::Ticket;
use waiting::{Place, Waiting};

use super::AdmissionConfig;
use super::limit::GradientLimit;
use super::queue::{QueueConfig, WaitQueue};
use super::shed::{Decision, Snapshot, decide};
use crate::metrics::{Gauges, Metrics, Outcome, ShedReason};
use crate::proto::op::{Class, Op};

/// The result of [`Admission::try_admit`].
#[derive(Debug)]
pub enum Admit {
    /// Run now.
    Now(Permit),
    /// Wait with [`Ticket::wait`] (in the request's own task).
    Wait(Ticket),
    /// Refuse at once.
    Refused {
        /// Why.
        reason: ShedReason,
        /// The hint to send with `Overloaded`.
        retry_after_ms: u32,
    },
}

/// The first foreground request this node answered successfully.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirstServed {
    /// When its answer was ready.
    pub at: std::time::Instant,
    /// What it was.
    pub op: Op,
}

/// The node's admission controller. Shared as `Arc<Admission>`; its
/// [`pressure`](Admission::pressure) is readable from anywhere.
#[derive(Debug)]
pub struct Admission {
    config: AdmissionConfig,
    /// Executing requests, per class.
    inflight: [AtomicUsize; 3],
    /// Waiters in `waiting`, published for the lock-free fast path.
    queued: AtomicUsize,
    bytes: AtomicU64,
    /// The limit as last computed, published for the lock-free fast path.
    limit: AtomicUsize,
    retry_after_ms: AtomicU32,
    /// Current short-term foreground latency (µs), for the queue's
    /// patience.
    rtt_micros: AtomicU64,
    gradient: Mutex<GradientLimit>,
    /// Foreground requests waiting for a slot, in the order they get one
    /// (`queue.rs`); a freed slot is handed to the next of them directly.
    waiting: Mutex<Waiting>,
    control: Arc<Semaphore>,
    metrics: Metrics,
    /// Set by the first foreground request answered successfully; checked
    /// with one relaxed load per request so the watch below is touched
    /// once in the node's life.
    served: AtomicBool,
    /// The startup timeline waits on this for its last phase.
    first_served: watch::Sender<Option<FirstServed>>,
}

impl Admission {
    /// A controller with nothing in flight.
    pub fn new(config: AdmissionConfig) -> Self {
        let gradient = GradientLimit::new(config.limit);
        Self {
            limit: AtomicUsize::new(gradient.limit()),
            gradient: Mutex::new(gradient),
            inflight: Default::default(),
            queued: AtomicUsize::new(0),
            bytes: AtomicU64::new(0),
            retry_after_ms: AtomicU32::new(1),
            // Until measured, assume a slow service time, so a fresh node's
            // first burst waits for slots rather than being refused.
            rtt_micros: AtomicU64::new(100_000),
            waiting: Mutex::new(Waiting {
                queue: WaitQueue::new(QueueConfig {
                    capacity: config.queue_len,
                    standing_after: config.queue_standing_after,
                    standing_wait: config.queue_timeout,
                }),
                next_key: 0,
            }),
            control: Arc::new(Semaphore::new(config.control_budget.max(1))),
            metrics: Metrics::default(),
            served: AtomicBool::new(false),
            first_served: watch::Sender::new(None),
            config,
        }
    }

    /// Waits for the first foreground request (client or replica read or
    /// write) answered successfully, and returns it.
    pub async fn first_served(&self) -> Option<FirstServed> {
        let mut served = self.first_served.subscribe();
        let first = served.wait_for(Option::is_some).await.ok()?;
        *first
    }

    fn note_served(&self, op: Op) {
        if !self.served.swap(true, Ordering::AcqRel) {
            self.first_served.send_replace(Some(FirstServed {
                at: std::time::Instant::now(),
                op,
            }));
        }
    }

    /// The node's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The current foreground limit.
    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// Foreground saturation in [0, 1]: executing plus waiting foreground
    /// requests over the limit. Background work slows down as it rises.
    pub fn pressure(&self) -> f64 {
        (self.busy() as f64 / self.limit().max(1) as f64).min(1.0)
    }

    /// Foreground requests executing plus those waiting.
    fn busy(&self) -> usize {
        self.inflight[Class::Foreground.index()].load(Ordering::Relaxed)
            + self.queued.load(Ordering::Relaxed)
    }

    /// Foreground requests executing and waiting as a percentage of the
    /// limit, saturating at 255: the `pressure` every answer carries to
    /// clients. Unlike [`Admission::pressure`] it goes past 100, so a
    /// client can tell a node at its limit from one queueing behind it.
    pub fn load_percent(&self) -> u8 {
        load_percent(self.busy(), self.limit())
    }

    /// The current values for `/metrics`.
    pub fn gauges(&self) -> Gauges {
        Gauges {
            inflight: self
                .inflight
                .each_ref()
                .map(|c| c.load(Ordering::Relaxed) as u64),
            limit: self.limit() as u64,
            queued: self.queued.load(Ordering::Relaxed) as u64,
            bytes_inflight: self.bytes.load(Ordering::Relaxed),
            pressure: self.pressure(),
            enabled: self.config.enabled,
        }
    }

    /// Decides for a request of `request_bytes` that arrived at `received`.
    /// Cheap and synchronous: call it before spawning anything.
    pub fn try_admit(self: &Arc<Self>, op: Op, request_bytes: u64, received: Instant) -> Admit {
        let class = op.class();
        if !self.config.enabled {
            self.inflight[class.index()].fetch_add(1, Ordering::Relaxed);
            self.bytes.fetch_add(request_bytes, Ordering::Relaxed);
            return Admit::Now(self.permit(op, request_bytes, received, None));
        }
        loop {
            let snapshot = self.snapshot(class, request_bytes, op.in_progress());
            match decide(&snapshot) {
                Decision::Refuse(reason) => {
                    return Admit::Refused {
                        reason,
                        retry_after_ms: self.retry_after_ms.load(Ordering::Relaxed),
                    };
                }
                Decision::Control => {
                    self.bytes.fetch_add(request_bytes, Ordering::Relaxed);
                    return Admit::Wait(self.ticket(op, request_bytes, received, None));
                }
                Decision::Admit => {
                    let counter = &self.inflight[class.index()];
                    let current = match class {
                        Class::Foreground => snapshot.foreground,
                        _ => snapshot.background,
                    };
                    if counter
                        .compare_exchange(current, current + 1, Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok()
                    {
                        self.bytes.fetch_add(request_bytes, Ordering::Relaxed);
                        return Admit::Now(self.permit(op, request_bytes, received, None));
                    }
                }
                Decision::Queue => {
                    return match self.enqueue(received) {
                        Some(place) => {
                            self.bytes.fetch_add(request_bytes, Ordering::Relaxed);
                            Admit::Wait(self.ticket(op, request_bytes, received, Some(place)))
                        }
                        None => Admit::Refused {
                            reason: ShedReason::QueueFull,
                            retry_after_ms: self.retry_after_ms.load(Ordering::Relaxed),
                        },
                    };
                }
            }
            // Another request changed a counter between the load and the
            // swap: decide again on fresh values.
        }
    }

    fn snapshot(&self, class: Class, request_bytes: u64, in_progress: bool) -> Snapshot {
        Snapshot {
            class,
            foreground: self.inflight[Class::Foreground.index()].load(Ordering::Acquire),
            background: self.inflight[Class::Background.index()].load(Ordering::Acquire),
            queued: self.queued.load(Ordering::Acquire),
            limit: self.limit(),
            queue_len: self.config.queue_len,
            bytes: self.bytes.load(Ordering::Relaxed),
            request_bytes,
            max_bytes: self.config.max_inflight_bytes,
            background_share: self.config.background_share,
            in_progress,
        }
    }

    fn permit(
        self: &Arc<Self>,
        op: Op,
        bytes: u64,
        received: Instant,
        control: Option<OwnedSemaphorePermit>,
    ) -> Permit {
        Permit {
            admission: self.clone(),
            op,
            bytes,
            received,
            started: Instant::now(),
            sample: false,
            _control: control,
        }
    }

    fn ticket(
        self: &Arc<Self>,
        op: Op,
        bytes: u64,
        received: Instant,
        queued: Option<Place>,
    ) -> Ticket {
        Ticket {
            admission: Some(self.clone()),
            op,
            bytes,
            received,
            queued,
        }
    }

    /// How long a queued request may wait while the queue is not standing
    /// (a standing one cuts it to `queue_timeout`, see `queue.rs`): the
    /// configured queue time, or one current service time if that is
    /// longer (capped at 1 s). With anything in flight a slot frees within
    /// about one service time, so a shorter wait would refuse requests that
    /// were about to run (with 25 ms group-committed writes, a 5 ms queue
    /// would never admit anyone).
    fn patience(&self) -> std::time::Duration {
        let rtt = std::time::Duration::from_micros(self.rtt_micros.load(Ordering::Relaxed));
        self.config
            .queue_timeout
            .max(rtt)
            .min(std::time::Duration::from_secs(1))
    }

    fn release(self: &Arc<Self>, class: Class, bytes: u64, sample: Option<std::time::Duration>) {
        self.bytes.fetch_sub(bytes, Ordering::Relaxed);
        if class != Class::Foreground {
            self.inflight[class.index()].fetch_sub(1, Ordering::AcqRel);
            return;
        }
        if let Some(rtt) = sample {
            let inflight = self.inflight[class.index()].load(Ordering::Relaxed);
            let mut gradient = self.gradient.lock().unwrap_or_else(|e| e.into_inner());
            let limit = gradient.on_sample(rtt, inflight, std::time::Instant::now());
            // A slot frees within about one service time: that is the
            // soonest a retry here can succeed.
            let rtt = gradient.rtt().unwrap_or_default();
            drop(gradient);
            let hint = (rtt.as_millis() as u32).saturating_add(1).min(1000);
            self.rtt_micros
                .store(rtt.as_micros() as u64, Ordering::Relaxed);
            self.limit.store(limit, Ordering::Relaxed);
            self.retry_after_ms.store(hint, Ordering::Relaxed);
        }
        self.free_foreground_slot();
    }
}

/// An admitted request's slot. Dropping it frees the slot and, for
/// foreground work that ran, feeds its latency to the adaptive limit.
#[derive(Debug)]
pub struct Permit {
    admission: Arc<Admission>,
    op: Op,
    bytes: u64,
    received: Instant,
    started: Instant,
    /// Whether the run is a fair latency sample for the limit.
    sample: bool,
    _control: Option<OwnedSemaphorePermit>,
}

impl Permit {
    /// Records how the request ended. Work dropped for its deadline says
    /// little about service time, so only answered requests feed the
    /// limit. (Deadline drops are counted where the drop happens.)
    pub fn finish(&mut self, outcome: Outcome) {
        self.admission
            .metrics
            .record(self.op, outcome, self.received.elapsed());
        self.sample = matches!(outcome, Outcome::Ok | Outcome::Error);
        if outcome == Outcome::Ok
            && self.op.class() == Class::Foreground
            && !self.admission.served.load(Ordering::Relaxed)
        {
            self.admission.note_served(self.op);
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let sample = self.sample.then(|| self.started.elapsed());
        self.admission.release(self.op.class(), self.bytes, sample);
    }
}

/// `busy` as a percentage of `limit`, saturating at 255.
fn load_percent(busy: usize, limit: usize) -> u8 {
    let percent = busy.saturating_mul(100) / limit.max(1);
    u8::try_from(percent).unwrap_or(u8::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::LimitConfig;
    use crate::proto::WireError;
    use std::time::Duration;

    #[test]
    fn load_percent_passes_the_limit_and_saturates() {
        assert_eq!(load_percent(0, 10), 0);
        assert_eq!(load_percent(5, 10), 50);
        assert_eq!(load_percent(10, 10), 100);
        assert_eq!(load_percent(15, 10), 150);
        assert_eq!(load_percent(1000, 10), 255);
        assert_eq!(load_percent(3, 0), 255, "a zero limit is treated as one");
    }

    fn small() -> Arc<Admission> {
        Arc::new(Admission::new(AdmissionConfig {
            limit: LimitConfig {
                min: 2,
                max: 2,
                initial: 2,
                ..LimitConfig::default()
            },
            queue_len: 1,
            queue_timeout: Duration::from_millis(5),
            ..AdmissionConfig::default()
        }))
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_limit_one_waits_and_the_next_is_refused_at_once() {
        let admission = small();
        let now = Instant::now();
        let Admit::Now(mut a) = admission.try_admit(Op::Get, 10, now) else {
            panic!("first admitted")
        };
        let Admit::Now(_b) = admission.try_admit(Op::Put, 10, now) else {
            panic!("second admitted")
        };
        let Admit::Wait(ticket) = admission.try_admit(Op::Get, 10, now) else {
            panic!("third queued")
        };
        assert!(matches!(
            admission.try_admit(Op::Get, 10, now),
            Admit::Refused {
                reason: ShedReason::QueueFull,
                ..
            }
        ));
        assert_eq!(admission.pressure(), 1.0);
        // A slot frees: the waiter gets it.
        a.finish(Outcome::Ok);
        drop(a);
        let permit = ticket.wait(now + Duration::from_secs(1)).await.unwrap();
        drop(permit);
        assert_eq!(admission.gauges().queued, 0);
    }

    /// A full controller (two running) and a third request's ticket.
    fn full_with_waiter(now: Instant) -> (Arc<Admission>, Vec<Admit>, Ticket) {
        let admission = small();
        let held = vec![
            admission.try_admit(Op::Get, 10, now),
            admission.try_admit(Op::Get, 10, now),
        ];
        let Admit::Wait(ticket) = admission.try_admit(Op::Get, 10, now) else {
            panic!("queued")
        };
        (admission, held, ticket)
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_is_refused_after_the_queue_time_and_counted() {
        let now = Instant::now();
        let (admission, _held, ticket) = full_with_waiter(now);
        let err = ticket.wait(now + Duration::from_secs(1)).await.unwrap_err();
        assert!(matches!(err, WireError::Overloaded { .. }), "{err}");
        assert_eq!(admission.metrics().shed_total(), 1);
        assert_eq!(admission.gauges().queued, 0);
        assert_eq!(admission.gauges().bytes_inflight, 20);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_whose_deadline_passes_is_dropped_and_counted() {
        let now = Instant::now();
        let (admission, _held, ticket) = full_with_waiter(now);
        let err = ticket
            .wait(now + Duration::from_millis(1))
            .await
            .unwrap_err();
        assert!(matches!(err, WireError::DeadlineExceeded), "{err}");
        assert_eq!(admission.metrics().deadline_drops(), 1);
    }

    #[test]
    fn control_and_disabled_admission_never_refuse() {
        let admission = small();
        let now = Instant::now();
        let _held: Vec<_> = (0..3)
            .map(|_| admission.try_admit(Op::Get, 1, now))
            .collect();
        assert!(matches!(
            admission.try_admit(Op::Raft, 1, now),
            Admit::Wait(_)
        ));
        let off = Arc::new(Admission::new(AdmissionConfig {
            enabled: false,
            ..AdmissionConfig::default()
        }));
        let held: Vec<_> = (0..5000).map(|_| off.try_admit(Op::Put, 1, now)).collect();
        assert!(held.iter().all(|a| matches!(a, Admit::Now(_))));
    }

    #[tokio::test]
    async fn the_first_successful_foreground_answer_is_the_first_served() {
        let admission = small();
        let now = Instant::now();
        // Control work and failed answers do not count: a node answering
        // pings or errors has not served anyone yet.
        for (op, outcome) in [(Op::Ping, Outcome::Ok), (Op::Get, Outcome::Error)] {
            match admission.try_admit(op, 1, now) {
                Admit::Now(mut permit) => permit.finish(outcome),
                Admit::Wait(ticket) => ticket
                    .wait(now + Duration::from_secs(1))
                    .await
                    .unwrap()
                    .finish(outcome),
                Admit::Refused { .. } => panic!("{op:?} refused"),
            }
        }
        assert!(!admission.served.load(Ordering::Relaxed));
        let Admit::Now(mut put) = admission.try_admit(Op::Put, 1, now) else {
            panic!("put admitted")
        };
        put.finish(Outcome::Ok);
        let first = admission.first_served().await.unwrap();
        assert_eq!(first.op, Op::Put);
    }

    #[test]
    fn dropping_every_permit_returns_every_counter_to_zero() {
        let admission = small();
        let now = Instant::now();
        let held: Vec<_> = (0..10)
            .map(|i| admission.try_admit(if i % 2 == 0 { Op::Get } else { Op::Digest }, 7, now))
            .collect();
        drop(held);
        let g = admission.gauges();
        assert_eq!((g.inflight, g.queued, g.bytes_inflight), ([0, 0, 0], 0, 0));
    }
}
