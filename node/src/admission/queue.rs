//! The order in which foreground requests waiting for a slot get one, and
//! how long each may wait: CoDel-style with adaptive LIFO, as Facebook's
//! "Fail at Scale" (ACM Queue, 2015) describes for its servers.
//!
//! - While the queue is absorbing bursts, waiters are served first come,
//!   first served, each for up to its own patience (given at
//!   [`WaitQueue::push`]).
//! - Once it is a *standing* queue, the node is overloaded and waiting
//!   only adds latency. Then the newest waiter is served first (it is the
//!   one whose client is still most likely to be waiting, and it has
//!   waited least), and nobody waits longer than
//!   [`QueueConfig::standing_wait`]: older waiters are refused, and their
//!   clients try another replica or give up.
//!
//! A queue stands when for [`QueueConfig::standing_after`] it has not been
//! empty, or every waiter that left it (served or refused) had waited at
//! least `standing_wait` (CoDel's test: the shortest wait over an interval
//! above its target). The second test finds an overload whose queue still
//! empties for an instant now and then (slots free one by one, waiters
//! are refused at their patience): by emptiness alone such a queue never
//! stood, and every waiter it admitted had waited up to its patience, one
//! service time. It stops standing only once it has been empty for
//! [`CALM_SHARE`] of `standing_after`, not at the first instant it is
//! empty: LIFO with a short wait empties the queue often without the
//! overload having ended.
//!
//! Under FIFO in a standing queue every request that runs has first waited
//! about the whole queue time, so an admitted request's latency is queue
//! time plus service time; under LIFO most run at once and the wait falls
//! on the few that are refused anyway.
//!
//! Pure: the time is a parameter, and waiters are opaque payloads the
//! controller (`controller.rs`) wakes or refuses.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The queue's bounds and timings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueueConfig {
    /// Waiters at most; past that a request is refused at once.
    pub capacity: usize,
    /// A queue that has not been empty for this long, or whose waiters
    /// have all waited at least `standing_wait` for this long, is
    /// standing. 100 ms as Facebook's N and CoDel's interval: much longer
    /// than a burst (a burst drains within a few service times), short
    /// enough that an overload switches to LIFO within a tenth of a
    /// second.
    pub standing_after: Duration,
    /// Longest wait in a standing queue. Facebook's M is 5 ms; ours is the
    /// node's `admission_queue_timeout_ms` (1 ms): with LIFO most admitted
    /// waiters have waited far less, and the ones refused at this age are
    /// refused within a fraction of an unloaded request's latency.
    pub standing_wait: Duration,
}

/// The share of [`QueueConfig::standing_after`] a standing queue must stay
/// empty to stop standing: 10 ms of the default 100. Under overload
/// arrivals refill it within a fraction of a millisecond (tens of them
/// arrive in 10 ms at a few thousand a second); a load below capacity
/// leaves it empty far longer.
pub const CALM_SHARE: f64 = 0.1;

/// How the next free slot is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// To the oldest waiter: the queue is absorbing a burst.
    Fifo,
    /// To the newest: the queue is standing.
    Lifo,
}

#[derive(Debug)]
struct Waiter<T> {
    key: u64,
    arrived: Instant,
    /// Past this it is refused whatever the queue's state.
    give_up: Instant,
    payload: T,
}

/// The waiters, in arrival order, and what decides whether the queue
/// stands.
#[derive(Debug)]
pub struct WaitQueue<T> {
    config: QueueConfig,
    waiters: VecDeque<Waiter<T>>,
    /// When the queue last went from empty to not empty; `None` while
    /// empty.
    busy_since: Option<Instant>,
    /// Since when every waiter that left (served or refused) had waited at
    /// least `standing_wait`; `None` after one that waited less.
    slow_since: Option<Instant>,
    /// When the queue last became empty; `None` while it holds waiters
    /// (and before it ever held any).
    empty_since: Option<Instant>,
    /// The standing state as of the last change to the queue: once
    /// standing it stays so until calm (see [`WaitQueue::standing`]).
    stood: bool,
}

impl<T> WaitQueue<T> {
    /// An empty queue.
    pub fn new(config: QueueConfig) -> Self {
        Self {
            config,
            waiters: VecDeque::new(),
            busy_since: None,
            slow_since: None,
            empty_since: None,
            stood: false,
        }
    }

    /// Waiters held (refused ones leave at the next [`WaitQueue::expire`]).
    pub fn len(&self) -> usize {
        self.waiters.len()
    }

    /// Whether no one waits.
    pub fn is_empty(&self) -> bool {
        self.waiters.is_empty()
    }

    /// Whether the queue is standing at `now`: it was, and has not been
    /// empty for the calm time since; or for `standing_after` it has not
    /// been empty, or every waiter that left had waited `standing_wait`.
    pub fn standing(&self, now: Instant) -> bool {
        if self.calm(now) {
            return false;
        }
        let after = self.config.standing_after;
        let lasted = |since: Option<Instant>| {
            since.is_some_and(|since| now.saturating_duration_since(since) >= after)
        };
        self.stood || lasted(self.busy_since) || lasted(self.slow_since)
    }

    /// Whether the queue has been empty long enough that an overload,
    /// if there was one, is over.
    fn calm(&self, now: Instant) -> bool {
        let calm = self.config.standing_after.mul_f64(CALM_SHARE);
        self.empty_since
            .is_some_and(|since| now.saturating_duration_since(since) >= calm)
    }

    /// Brings the standing state and its clocks up to `now`; called first
    /// by everything that changes the queue.
    fn update(&mut self, now: Instant) {
        if self.calm(now) {
            self.slow_since = None;
        }
        self.stood = self.standing(now);
    }

    /// Notes how long a leaving waiter waited.
    fn note_wait(&mut self, arrived: Instant, now: Instant) {
        self.slow_since =
            slow_since_after(self.slow_since, arrived, now, self.config.standing_wait);
    }

    /// The order the next slot is given in.
    pub fn order(&self, now: Instant) -> Order {
        if self.standing(now) {
            Order::Lifo
        } else {
            Order::Fifo
        }
    }

    /// Adds a waiter that arrived `now` and gives up at `give_up`; `Err`
    /// gives the payload back when the queue is full.
    pub fn push(&mut self, key: u64, payload: T, now: Instant, give_up: Instant) -> Result<(), T> {
        self.update(now);
        if self.waiters.len() >= self.config.capacity {
            return Err(payload);
        }
        self.busy_since.get_or_insert(now);
        self.empty_since = None;
        self.waiters.push_back(Waiter {
            key,
            arrived: now,
            give_up,
            payload,
        });
        Ok(())
    }

    /// Moves every waiter that must not wait any longer at `now` into
    /// `expired`: past its own give-up time, or, in a standing queue,
    /// older than `standing_wait`.
    pub fn expire(&mut self, now: Instant, expired: &mut Vec<T>) {
        self.update(now);
        let standing = self.stood;
        let max_wait = self.config.standing_wait;
        let must_leave = |w: &Waiter<T>| {
            now >= w.give_up || (standing && now.saturating_duration_since(w.arrived) >= max_wait)
        };
        // Called for every freed slot, under the admission lock: nothing
        // is rebuilt unless someone leaves.
        if self.waiters.iter().any(must_leave) {
            let mut kept = VecDeque::with_capacity(self.waiters.len());
            let mut slow_since = self.slow_since;
            for w in self.waiters.drain(..) {
                if must_leave(&w) {
                    slow_since = slow_since_after(slow_since, w.arrived, now, max_wait);
                    expired.push(w.payload);
                } else {
                    kept.push_back(w);
                }
            }
            self.waiters = kept;
            self.slow_since = slow_since;
        }
        self.note_if_empty(now);
    }

    /// The waiter the next free slot goes to at `now`, after expiring
    /// those that must not wait (into `expired`).
    pub fn next(&mut self, now: Instant, expired: &mut Vec<T>) -> Option<T> {
        self.expire(now, expired);
        let next = match self.order(now) {
            Order::Fifo => self.waiters.pop_front(),
            Order::Lifo => self.waiters.pop_back(),
        };
        if let Some(w) = &next {
            self.note_wait(w.arrived, now);
        }
        self.note_if_empty(now);
        next.map(|w| w.payload)
    }

    /// Takes out the waiter `key` at `now` (it gave up or was
    /// cancelled). Its wait says nothing about the queue: it left on its
    /// own.
    pub fn remove(&mut self, key: u64, now: Instant) -> Option<T> {
        self.update(now);
        let at = self.waiters.iter().position(|w| w.key == key)?;
        let removed = self.waiters.remove(at).map(|w| w.payload);
        self.note_if_empty(now);
        removed
    }

    fn note_if_empty(&mut self, now: Instant) {
        if self.waiters.is_empty() {
            self.busy_since = None;
            self.empty_since.get_or_insert(now);
        }
    }
}

/// Since when every waiter that left had waited at least `target`, after
/// one that arrived at `arrived` leaves at `now`: unchanged (or starting
/// now) if it waited that long, cleared if it did not.
fn slow_since_after(
    slow_since: Option<Instant>,
    arrived: Instant,
    now: Instant,
    target: Duration,
) -> Option<Instant> {
    if now.saturating_duration_since(arrived) >= target {
        slow_since.or(Some(now))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn config() -> QueueConfig {
        QueueConfig {
            capacity: 4,
            standing_after: ms(100),
            standing_wait: ms(5),
        }
    }

    #[test]
    fn a_queue_that_empties_serves_first_come_first_served() {
        let t0 = Instant::now();
        let mut q = WaitQueue::new(config());
        for key in 0..3 {
            q.push(key, key, t0, t0 + ms(50)).unwrap();
        }
        let mut expired = Vec::new();
        assert_eq!(q.order(t0 + ms(10)), Order::Fifo);
        assert_eq!(q.next(t0 + ms(10), &mut expired), Some(0));
        assert_eq!(q.next(t0 + ms(10), &mut expired), Some(1));
        assert!(expired.is_empty());
    }

    #[test]
    fn a_standing_queue_serves_the_newest_and_refuses_the_old() {
        let t0 = Instant::now();
        let mut q = WaitQueue::new(config());
        let mut expired = Vec::new();
        // Never empty for 100 ms: one waiter leaves as another comes.
        q.push(0, 0, t0, t0 + ms(500)).unwrap();
        for key in 1..100 {
            let now = t0 + ms(key);
            q.push(key, key, now, now + ms(500)).unwrap();
            assert_eq!(q.next(now, &mut expired), Some(key - 1));
        }
        assert!(q.standing(t0 + ms(100)));
        q.push(100, 100, t0 + ms(100), t0 + ms(600)).unwrap();
        q.push(101, 101, t0 + ms(101), t0 + ms(600)).unwrap();
        assert_eq!(q.next(t0 + ms(101), &mut expired), Some(101));
        // Waiter 99 arrived at 99 ms: at 104 ms it has waited the standing
        // wait and is refused, though its own patience is longer.
        assert_eq!(q.next(t0 + ms(104), &mut expired), Some(100));
        assert_eq!(expired, vec![99]);
        // The queue emptied, and stayed empty for the calm time (10 ms):
        // it absorbs the next burst in arrival order.
        q.push(102, 102, t0 + ms(114), t0 + ms(600)).unwrap();
        q.push(103, 103, t0 + ms(114), t0 + ms(600)).unwrap();
        assert_eq!(q.next(t0 + ms(115), &mut expired), Some(102));
    }

    /// Two waiters every 10 ms from `from_ms`, both leaving 6 ms later
    /// (past the 5 ms standing wait: served, or refused once the queue
    /// stands): the queue is empty 4 ms in every 10, yet it is overloaded.
    fn overloaded_with_gaps(q: &mut WaitQueue<u64>, t0: Instant, from_ms: u64, until_ms: u64) {
        let mut expired = Vec::new();
        for cycle in from_ms / 10..until_ms / 10 {
            let at = t0 + ms(cycle * 10);
            q.push(2 * cycle, 2 * cycle, at, at + ms(50)).unwrap();
            q.push(2 * cycle + 1, 2 * cycle + 1, at, at + ms(50))
                .unwrap();
            q.next(at + ms(6), &mut expired);
            q.next(at + ms(6), &mut expired);
            assert!(q.is_empty());
        }
    }

    #[test]
    fn a_queue_whose_waiters_all_wait_long_stands_though_it_empties_now_and_then() {
        let t0 = Instant::now();
        let mut q = WaitQueue::new(config());
        overloaded_with_gaps(&mut q, t0, 0, 60);
        assert!(
            !q.standing(t0 + ms(60)),
            "60 ms of it is not yet an overload"
        );
        overloaded_with_gaps(&mut q, t0, 60, 200);
        q.push(500, 500, t0 + ms(200), t0 + ms(250)).unwrap();
        q.push(501, 501, t0 + ms(201), t0 + ms(250)).unwrap();
        assert_eq!(q.order(t0 + ms(201)), Order::Lifo);
        let mut expired = Vec::new();
        assert_eq!(q.next(t0 + ms(201), &mut expired), Some(501));
        // Waiter 500 has waited the standing wait: refused, not served.
        assert_eq!(q.next(t0 + ms(205), &mut expired), None);
        assert_eq!(expired, vec![500]);
    }

    #[test]
    fn a_standing_queue_stands_down_only_once_empty_for_the_calm_time() {
        let t0 = Instant::now();
        let mut q = WaitQueue::new(config());
        overloaded_with_gaps(&mut q, t0, 0, 200);
        // Emptied at 196 ms; 5 ms later it still stands.
        q.push(900, 900, t0 + ms(201), t0 + ms(300)).unwrap();
        assert!(q.standing(t0 + ms(201)));
        let mut expired = Vec::new();
        assert_eq!(q.next(t0 + ms(202), &mut expired), Some(900));
        // Empty from 202 to 212 ms: calm.
        assert!(q.standing(t0 + ms(211)));
        assert!(!q.standing(t0 + ms(212)));
        q.push(901, 901, t0 + ms(212), t0 + ms(300)).unwrap();
        q.push(902, 902, t0 + ms(212), t0 + ms(300)).unwrap();
        assert_eq!(
            q.next(t0 + ms(219), &mut expired),
            Some(901),
            "first come, first served"
        );
    }

    #[test]
    fn short_waits_in_a_queue_that_empties_are_bursts_not_overload() {
        let t0 = Instant::now();
        let mut q = WaitQueue::new(config());
        let mut expired = Vec::new();
        for cycle in 0..100u64 {
            let at = t0 + ms(cycle * 10);
            q.push(cycle, cycle, at, at + ms(50)).unwrap();
            // One in ten waits long, the rest briefly.
            let served = at + ms(if cycle % 10 == 0 { 8 } else { 1 });
            assert_eq!(q.next(served, &mut expired), Some(cycle));
            assert!(!q.standing(served));
        }
    }

    #[test]
    fn a_full_queue_gives_the_payload_back() {
        let t0 = Instant::now();
        let mut q = WaitQueue::new(config());
        for key in 0..4 {
            q.push(key, key, t0, t0 + ms(50)).unwrap();
        }
        assert_eq!(q.push(9, 9, t0, t0 + ms(50)), Err(9));
    }

    #[test]
    fn a_removed_waiter_is_gone_and_a_queue_empty_for_the_calm_time_stops_standing() {
        let t0 = Instant::now();
        let mut q = WaitQueue::new(config());
        q.push(7, 'a', t0, t0 + ms(500)).unwrap();
        assert!(q.standing(t0 + ms(100)));
        assert_eq!(q.remove(7, t0 + ms(100)), Some('a'));
        assert_eq!(q.remove(7, t0 + ms(100)), None);
        // Empty for less than the calm time: still standing.
        assert!(q.standing(t0 + ms(105)));
        q.push(8, 'b', t0 + ms(110), t0 + ms(500)).unwrap();
        assert!(!q.standing(t0 + ms(150)));
    }

    /// One step of a simulated run.
    #[derive(Debug, Clone)]
    enum Step {
        Push { patience_ms: u64 },
        Next,
        Remove { key: u64 },
        Wait { ms: u64 },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0u64..300).prop_map(|patience_ms| Step::Push { patience_ms }),
            Just(Step::Next),
            (0u64..64).prop_map(|key| Step::Remove { key }),
            (0u64..40).prop_map(|ms| Step::Wait { ms }),
        ]
    }

    proptest! {
        /// Whatever happens: the queue stays within its capacity; every
        /// waiter leaves at most once; none is served past its patience,
        /// nor past the standing wait while the queue is standing; and a
        /// queue that is not standing serves in arrival order.
        #[test]
        fn every_waiter_leaves_once_and_none_is_served_too_late(
            capacity in 1usize..8,
            steps in proptest::collection::vec(step(), 1..200),
        ) {
            let config = QueueConfig { capacity, ..config() };
            let t0 = Instant::now();
            let mut now = t0;
            let mut q = WaitQueue::new(config);
            // Payload: (key, arrived, give_up).
            let mut left = std::collections::HashSet::new();
            let mut key = 0u64;
            let mut expired = Vec::new();
            for s in steps {
                match s {
                    Step::Push { patience_ms } => {
                        let give_up = now + ms(patience_ms);
                        let full = q.len() >= capacity;
                        let pushed = q.push(key, (key, now, give_up), now, give_up);
                        prop_assert_eq!(pushed.is_err(), full);
                        key += 1;
                    }
                    Step::Next => {
                        let order = q.order(now);
                        let standing = q.standing(now);
                        let oldest = q.waiters.iter()
                            .filter(|w| now < w.give_up
                                && !(standing && now - w.arrived >= config.standing_wait))
                            .map(|w| w.key)
                            .next();
                        if let Some((k, arrived, give_up)) = q.next(now, &mut expired) {
                            prop_assert!(now < give_up, "served past its patience");
                            if standing {
                                prop_assert!(now - arrived < config.standing_wait);
                            }
                            if order == Order::Fifo {
                                prop_assert_eq!(Some(k), oldest);
                            }
                            prop_assert!(left.insert(k), "{} left twice", k);
                        }
                    }
                    Step::Remove { key } => {
                        if let Some((k, _, _)) = q.remove(key, now) {
                            prop_assert!(left.insert(k), "{} left twice", k);
                        }
                    }
                    Step::Wait { ms: d } => now += ms(d),
                }
                for (k, _, _) in expired.drain(..) {
                    prop_assert!(left.insert(k), "{} left twice", k);
                }
                prop_assert!(q.len() <= capacity);
            }
        }
    }
}
