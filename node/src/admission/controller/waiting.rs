//! The wait for a foreground slot: the wait queue (`queue.rs` decides its
//! order) behind one lock, each freed slot handed straight to the waiter
//! the queue names (a waiter gone by then frees it again), and the
//! [`Ticket`] a waiting request holds.

use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{Admission, Permit};
use crate::admission::queue::{Order, WaitQueue};
use crate::metrics::{Outcome, ShedReason};
use crate::proto::WireError;
use crate::proto::op::{Class, Op};

impl Admission {
    fn waiting(&self) -> MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Puts a request in the wait queue: its place, or `None` if the
    /// queue is full.
    pub(super) fn enqueue(self: &Arc<Self>, received: Instant) -> Option<Place> {
        let (tx, rx) = oneshot::channel();
        let now = Instant::now().into_std();
        let patience_ends = received + self.patience();
        let mut waiting = self.waiting();
        let key = waiting.next_key;
        waiting.next_key += 1;
        if waiting
            .queue
            .push(key, tx, now, patience_ends.into_std())
            .is_err()
        {
            return None;
        }
        self.queued.store(waiting.queue.len(), Ordering::SeqCst);
        // A slot may have freed between the decision and the push, while
        // the queue looked empty to its holder: hand it out now.
        let expired = self.hand_out(&mut waiting);
        drop(waiting);
        drop(expired);
        Some(Place {
            key,
            patience_ends,
            slot: rx,
        })
    }

    /// Gives free foreground slots to waiters, in the queue's order, and
    /// returns the waiters that must not wait any longer (dropping their
    /// senders refuses them: do it after unlocking).
    fn hand_out(self: &Arc<Self>, waiting: &mut Waiting) -> Vec<oneshot::Sender<Slot>> {
        let mut expired = Vec::new();
        let now = Instant::now().into_std();
        while !waiting.queue.is_empty() && self.take_foreground_slot() {
            let lifo = waiting.queue.order(now) == Order::Lifo;
            match waiting.queue.next(now, &mut expired) {
                Some(tx) => {
                    self.metrics.record_queue_grant(lifo);
                    if let Err(slot) = tx.send(Slot::new(self.clone())) {
                        // The waiter gave up meanwhile: the slot is free
                        // again for the next one.
                        slot.give_back();
                    }
                }
                None => {
                    self.inflight[Class::Foreground.index()].fetch_sub(1, Ordering::SeqCst);
                    break;
                }
            }
        }
        // With no slot free, a standing queue still sheds its old waiters
        // now rather than when their own patience ends.
        waiting.queue.expire(now, &mut expired);
        self.queued.store(waiting.queue.len(), Ordering::SeqCst);
        expired
    }

    /// Takes the waiter `key` out of the queue (it gave up or went away).
    fn leave_queue(&self, key: u64) {
        let mut waiting = self.waiting();
        waiting.queue.remove(key, Instant::now().into_std());
        self.queued.store(waiting.queue.len(), Ordering::SeqCst);
    }

    /// Takes a foreground slot if one is free.
    fn take_foreground_slot(&self) -> bool {
        let counter = &self.inflight[Class::Foreground.index()];
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.limit()).then_some(n + 1)
            })
            .is_ok()
    }

    /// Frees a foreground slot: the next waiter, if any, gets it.
    pub(super) fn free_foreground_slot(self: &Arc<Self>) {
        self.inflight[Class::Foreground.index()].fetch_sub(1, Ordering::SeqCst);
        // SeqCst with `enqueue`'s store of `queued` and load of the
        // counter: either this sees the waiter or the waiter sees the
        // free slot.
        if self.queued.load(Ordering::SeqCst) > 0 {
            let mut waiting = self.waiting();
            let expired = self.hand_out(&mut waiting);
            drop(waiting);
            drop(expired);
        }
    }
}

/// The foreground requests waiting for a slot.
#[derive(Debug)]
pub(super) struct Waiting {
    /// Each waiter's sender: a slot is sent through it, and dropping it
    /// refuses the waiter.
    pub(super) queue: WaitQueue<oneshot::Sender<Slot>>,
    /// The key of the next waiter (to take it out if it gives up).
    pub(super) next_key: u64,
}

/// A foreground slot handed to a waiter. If the waiter is gone by the
/// time it arrives, dropping it frees the slot again.
#[derive(Debug)]
pub(super) struct Slot {
    admission: Option<Arc<Admission>>,
}

impl Slot {
    fn new(admission: Arc<Admission>) -> Self {
        Self {
            admission: Some(admission),
        }
    }

    /// The waiter took it: its permit holds the slot from now on.
    fn taken(mut self) {
        self.admission = None;
    }

    /// Undoes the taking without handing it on (called under the queue's
    /// lock, which freeing would take again).
    fn give_back(mut self) {
        if let Some(admission) = self.admission.take() {
            admission.inflight[Class::Foreground.index()].fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(admission) = self.admission.take() {
            admission.free_foreground_slot();
        }
    }
}

/// A request allowed to wait: for a foreground slot (bounded by the queue
/// time and its deadline) or for the control budget. Dropping it gives the
/// reservation back.
#[derive(Debug)]
pub struct Ticket {
    pub(super) admission: Option<Arc<Admission>>,
    pub(super) op: Op,
    pub(super) bytes: u64,
    pub(super) received: Instant,
    /// Its place in the foreground queue and where its slot will come
    /// (otherwise: control).
    pub(super) queued: Option<Place>,
}

/// A waiter's place in the foreground queue.
#[derive(Debug)]
pub(super) struct Place {
    /// Its key in the queue, to leave it.
    key: u64,
    /// The end of its patience, fixed when it joined: the queue refuses
    /// it then at the latest, earlier only if the queue stands.
    patience_ends: Instant,
    /// Where its slot comes.
    slot: oneshot::Receiver<Slot>,
}

impl Ticket {
    /// Waits for the slot. Refused with `Overloaded` past the queue time
    /// (or earlier, once the queue is standing), or `DeadlineExceeded`
    /// (counted as a deadline drop) if the deadline comes first.
    pub async fn wait(mut self, deadline: Instant) -> Result<Permit, WireError> {
        let Some(admission) = self.admission.take() else {
            return Err(WireError::ShuttingDown);
        };
        let (op, bytes, received) = (self.op, self.bytes, self.received);
        let Some(Place {
            key,
            patience_ends,
            mut slot,
        }) = self.queued.take()
        else {
            // Control: waits for the budget, never refused.
            let permit = admission.control.clone().acquire_owned().await.ok();
            admission.inflight[Class::Control.index()].fetch_add(1, Ordering::Relaxed);
            return Ok(admission.permit(op, bytes, received, permit));
        };
        let give_up = deadline.min(patience_ends);
        let granted = match tokio::time::timeout_at(give_up, &mut slot).await {
            Ok(granted) => granted.ok(),
            // Timed out: a slot may have been sent just now.
            Err(_) => slot.try_recv().ok(),
        };
        if let Some(slot) = granted {
            slot.taken();
            return Ok(admission.permit(op, bytes, received, None));
        }
        admission.leave_queue(key);
        admission.bytes.fetch_sub(bytes, Ordering::Relaxed);
        if Instant::now() >= deadline {
            admission.metrics.record_deadline_drop();
            admission
                .metrics
                .record(op, Outcome::DeadlineExceeded, received.elapsed());
            Err(WireError::DeadlineExceeded)
        } else {
            // Let go before its patience ran out: the queue stood.
            let shed = if Instant::now() < give_up {
                ShedReason::QueueStanding
            } else {
                ShedReason::QueueTimeout
            };
            admission.metrics.record_shed(op, shed, None);
            Err(WireError::Overloaded {
                retry_after_ms: admission.retry_after_ms.load(Ordering::Relaxed),
            })
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        // Dropped without waiting (the task was cancelled): undo the
        // reservation.
        if let Some(admission) = self.admission.take() {
            if let Some(place) = self.queued.take() {
                admission.leave_queue(place.key);
            }
            admission.bytes.fetch_sub(self.bytes, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::{AdmissionConfig, Admit, LimitConfig};
    use std::time::Duration;

    /// One running request (limit 1) and room for four waiters; the queue
    /// stands after 20 ms.
    fn one_slot() -> Arc<Admission> {
        Arc::new(Admission::new(AdmissionConfig {
            limit: LimitConfig {
                min: 1,
                max: 1,
                initial: 1,
                ..LimitConfig::default()
            },
            queue_len: 4,
            queue_timeout: Duration::from_millis(5),
            queue_standing_after: Duration::from_millis(20),
            ..AdmissionConfig::default()
        }))
    }

    fn admit_now(admission: &Arc<Admission>) -> Permit {
        match admission.try_admit(Op::Get, 10, Instant::now()) {
            Admit::Now(permit) => permit,
            other => panic!("not admitted at once: {other:?}"),
        }
    }

    fn admit_later(admission: &Arc<Admission>) -> Ticket {
        match admission.try_admit(Op::Get, 10, Instant::now()) {
            Admit::Wait(ticket) => ticket,
            other => panic!("not queued: {other:?}"),
        }
    }

    /// The slot handed to the waiter (`Ok(Some)`), none yet (`Ok(None)`),
    /// or `Err` if it was refused.
    fn handed(ticket: &mut Ticket) -> Result<Option<Slot>, ()> {
        let rx = &mut ticket.queued.as_mut().expect("a queued ticket").slot;
        match rx.try_recv() {
            Ok(slot) => Ok(Some(slot)),
            Err(oneshot::error::TryRecvError::Empty) => Ok(None),
            Err(oneshot::error::TryRecvError::Closed) => Err(()),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_is_served_in_arrival_order() {
        let admission = one_slot();
        let running = admit_now(&admission);
        let mut first = admit_later(&admission);
        tokio::time::advance(Duration::from_millis(1)).await;
        let mut second = admit_later(&admission);
        drop(running);
        let _slot = handed(&mut first).unwrap().expect("the first served");
        assert!(matches!(handed(&mut second), Ok(None)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_standing_queue_serves_the_newest_and_sheds_the_old() {
        let admission = one_slot();
        let running = admit_now(&admission);
        let old = admit_later(&admission);
        // Not empty for 25 ms: standing.
        tokio::time::advance(Duration::from_millis(25)).await;
        let mut newer = admit_later(&admission);
        tokio::time::advance(Duration::from_millis(1)).await;
        let mut newest = admit_later(&admission);
        drop(running);
        let _slot = handed(&mut newest).unwrap().expect("the newest served");
        assert!(matches!(handed(&mut newer), Ok(None)));
        // The old one waited past the standing queue's 5 ms, though its
        // own patience (100 ms before any latency is measured) is longer:
        // it is out of the queue, refused without waiting any more.
        assert_eq!(admission.gauges().queued, 1);
        let now = Instant::now();
        let err = old.wait(now + Duration::from_secs(1)).await;
        assert!(matches!(err, Err(WireError::Overloaded { .. })), "{err:?}");
        assert_eq!(Instant::now(), now, "simulated time did not move");
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_waiter_leaves_the_queue_and_a_slot_sent_to_it_is_freed() {
        let admission = one_slot();
        let running = admit_now(&admission);
        let gone = admit_later(&admission);
        let mut next = admit_later(&admission);
        drop(gone);
        assert_eq!(admission.gauges().queued, 1);
        drop(running);
        let slot = handed(&mut next).unwrap().expect("the next served");
        drop(slot);
        drop(next);
        // A slot handed to a waiter that then went away comes back.
        let running = admit_now(&admission);
        let late = admit_later(&admission);
        drop(running);
        drop(late);
        let g = admission.gauges();
        assert_eq!((g.inflight, g.queued, g.bytes_inflight), ([0, 0, 0], 0, 0));
    }
}
