//! Defences against slow peers at the accept edge: the cap on connections
//! still in their handshake, and the bound on responses a peer leaves
//! unread.
//!
//! **Handshakes.** A connection holds one of the `max_connections` slots
//! from the moment it is accepted, before its peer has said anything. Left
//! alone, a slowloris (the 8-byte handshake sent a byte a second) or a
//! crowd of silent sockets would hold every slot for the handshake
//! timeout, again and again, and no new client could get in. So at most a
//! few connections may be in their handshake at once, and when a new one
//! arrives with all of those taken, the oldest handshake is ended to make
//! room. A real client sends its 8 bytes with its first packet, so its
//! handshake lasts one round trip: the oldest handshake is the slowest,
//! and to push a real client out an attacker must open that many
//! connections within the client's round trip. The same goes when every
//! connection slot is taken: a handshake in progress gives its slot up to
//! the newcomer. Connections that finished their handshake are not
//! counted here.
//!
//! **Idle connections.** Past its handshake, a connection holds its slot
//! for as long as it stays open, so a client (or a crowd of them) that
//! opens connections and leaves them idle could still take every slot.
//! When no slot is free and no handshake is left to end, [`Idle`] ends
//! the connection that has been idle longest: nothing in flight and no
//! frame received for at least [`IDLE_MIN`]. A connection doing work is
//! never ended for another; an idle one that is ended costs its client a
//! reconnect, which a pooled client makes on its next request.
//!
//! **Unread responses.** A peer that sends requests and never reads the
//! answers is served until its answers stop fitting in the socket; only
//! then does the writer block, the response queue fill, the request slots
//! run out and the reader stop (and the writer's timeout end the
//! connection). With the kernel's send buffer autotuned up to megabytes,
//! that took tens of thousands of small answers per connection: work
//! given away at full speed to a peer that reads nothing.
//! [`bound_unsent`] caps the bytes written but not yet sent, so the
//! writer blocks once the peer's receive window is full and a little more
//! is queued; bytes in flight are not counted, so a reading peer's
//! throughput is not limited.
//!
//! **Refusals.** Under a flood, every new connection may be refused; one
//! log line each would grow the log without bound (a thousand lines a
//! second in `benches/slow_input.rs`), so [`Refusals`] lets one line a
//! second through, with the count since the last.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// Bytes a connection's socket may hold written but not yet sent
/// (`TCP_NOTSENT_LOWAT`). Enough to keep a reading peer's window full
/// between two wake-ups of the writer; a peer that reads nothing gets
/// this much past its receive window.
pub const UNSENT_BYTES: u32 = 64 * 1024;

/// Bounds the answers a peer may leave unread on `stream` (module docs).
/// Where the option does not exist, the kernel's send buffer is the bound.
pub fn bound_unsent(stream: &TcpStream) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_notsent_lowat(UNSENT_BYTES) {
        tracing::debug!(error = %e, "cannot bound the unsent bytes of a connection");
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = stream;
}

/// How long a newcomer waits for the slot of the handshake ended for it:
/// the time that connection's task takes to notice and close, far less
/// unless the node is overloaded.
const GIVE_WAY: Duration = Duration::from_millis(100);

/// The handshakes in progress, oldest first. Owned by the accept loop
/// alone, so it needs no lock.
#[derive(Debug)]
pub struct Handshakes {
    cap: usize,
    /// One token per handshake, cancelled once it has ended (either way)
    /// or has been ended to make room. Ended entries are swept out only
    /// when the list is full, so it never holds more than `cap`.
    waiting: VecDeque<CancellationToken>,
}

/// One connection's place among the handshakes in progress.
#[derive(Debug)]
pub struct HandshakeSlot(CancellationToken);

impl Handshakes {
    /// At most `cap` (at least one) handshakes at once.
    pub fn new(cap: usize) -> Self {
        Self {
            cap: cap.max(1),
            waiting: VecDeque::new(),
        }
    }

    /// One of `slots` (the connection cap) for a new connection: a free
    /// one, or else the slot of the oldest handshake in progress, which is
    /// ended for it. `None` when every slot is held by a connection past
    /// its handshake (or the ended one did not let go in time).
    pub async fn connection_slot(
        &mut self,
        slots: &Arc<Semaphore>,
    ) -> Option<OwnedSemaphorePermit> {
        if let Ok(slot) = slots.clone().try_acquire_owned() {
            return Some(slot);
        }
        if !self.end_oldest() {
            return None;
        }
        tokio::time::timeout(GIVE_WAY, slots.clone().acquire_owned())
            .await
            .ok()?
            .ok()
    }

    /// A place for a new connection's handshake. With `cap` handshakes
    /// already in progress, the oldest is ended first; the flag says so.
    pub fn admit(&mut self) -> (HandshakeSlot, bool) {
        let evicted = self.waiting.len() >= self.cap
            && self.in_progress_swept() >= self.cap
            && self.end_oldest();
        let token = CancellationToken::new();
        self.waiting.push_back(token.clone());
        (HandshakeSlot(token), evicted)
    }

    /// Ends the oldest handshake in progress; false if there is none.
    fn end_oldest(&mut self) -> bool {
        while let Some(oldest) = self.waiting.pop_front() {
            if !oldest.is_cancelled() {
                oldest.cancel();
                return true;
            }
        }
        false
    }

    /// Drops the entries of ended handshakes and counts the others.
    fn in_progress_swept(&mut self) -> usize {
        self.waiting.retain(|t| !t.is_cancelled());
        self.waiting.len()
    }

    /// Handshakes in progress.
    #[cfg(test)]
    pub fn in_progress(&self) -> usize {
        self.waiting.iter().filter(|t| !t.is_cancelled()).count()
    }
}

/// How long a connection must have been idle (nothing in flight, no
/// frame received) before it may be ended for a newcomer: longer than a
/// client's pause between two requests of one burst.
pub const IDLE_MIN: Duration = Duration::from_secs(1);

/// What a connection past its handshake is doing, updated by its reader
/// and read by the accept loop.
#[derive(Debug)]
pub struct Activity {
    /// Milliseconds since the server's epoch at the last frame received.
    last_frame_ms: AtomicU64,
    /// Set once the handshake is over (handshakes are [`Handshakes`]'s):
    /// the connection's request slots and their number, whose permits
    /// taken are its requests in flight.
    requests: std::sync::OnceLock<(Arc<Semaphore>, usize)>,
    /// Cancelled to end the connection, or by the connection as it ends.
    end: CancellationToken,
    epoch: Instant,
}

impl Activity {
    fn millis(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// The handshake is over: from now on the connection may be idle
    /// when none of its `cap` request slots is taken.
    pub fn opened(&self, slots: Arc<Semaphore>, cap: usize) {
        self.touch();
        let _ = self.requests.set((slots, cap));
    }

    /// Past its handshake, and its requests in flight.
    fn in_flight(&self) -> Option<usize> {
        let (slots, cap) = self.requests.get()?;
        Some(cap.saturating_sub(slots.available_permits()))
    }

    /// A frame arrived.
    pub fn touch(&self) {
        self.last_frame_ms
            .store(self.millis(Instant::now()), Ordering::Relaxed);
    }

    /// Ended to make room for a newcomer.
    pub fn ended(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.end.cancelled()
    }
}

/// Marks a connection's [`Activity`] over when the connection ends.
#[derive(Debug)]
pub struct ActivityGuard(pub Arc<Activity>);

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        self.0.end.cancel();
    }
}

/// A connection as [`most_idle`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdleView {
    /// Past its handshake.
    pub open: bool,
    /// Requests in flight.
    pub busy: usize,
    /// Milliseconds since its last frame.
    pub idle_ms: u64,
}

/// The connection to end for a newcomer: among the open ones with nothing
/// in flight and idle for at least `min_idle_ms`, the longest idle. Pure.
pub fn most_idle(views: impl IntoIterator<Item = IdleView>, min_idle_ms: u64) -> Option<usize> {
    views
        .into_iter()
        .enumerate()
        .filter(|(_, v)| v.open && v.busy == 0 && v.idle_ms >= min_idle_ms)
        .max_by_key(|(_, v)| v.idle_ms)
        .map(|(i, _)| i)
}

/// The connections past (or in) their handshake, for ending the idlest
/// when every slot is taken. Owned by the accept loop alone.
#[derive(Debug)]
pub struct Idle {
    epoch: Instant,
    min_idle: Duration,
    /// Ended entries are swept when a slot is looked for, so the list
    /// holds at most about the connection cap.
    connections: Vec<Arc<Activity>>,
}

impl Idle {
    /// Connections idle for `min_idle` may be ended for a newcomer.
    pub fn new(min_idle: Duration) -> Self {
        Self {
            epoch: Instant::now(),
            min_idle,
            connections: Vec::new(),
        }
    }

    /// A new connection's activity record; it is ended through it.
    pub fn register(&mut self) -> ActivityGuard {
        if self.connections.len() >= 64 && self.connections.len().is_power_of_two() {
            self.sweep();
        }
        let activity = Arc::new(Activity {
            last_frame_ms: AtomicU64::new(0),
            requests: std::sync::OnceLock::new(),
            end: CancellationToken::new(),
            epoch: self.epoch,
        });
        self.connections.push(activity.clone());
        ActivityGuard(activity)
    }

    fn sweep(&mut self) {
        self.connections.retain(|a| !a.end.is_cancelled());
    }

    /// A slot for a newcomer when none is free: the idlest connection is
    /// ended and its slot waited for. `None` if none is idle enough (or
    /// it did not let go in time).
    pub async fn take_slot(&mut self, slots: &Arc<Semaphore>) -> Option<OwnedSemaphorePermit> {
        self.sweep();
        let now = Instant::now();
        let at = |a: &Activity| a.millis(now);
        let chosen = most_idle(
            self.connections.iter().map(|a| {
                let in_flight = a.in_flight();
                IdleView {
                    open: in_flight.is_some(),
                    busy: in_flight.unwrap_or(0),
                    idle_ms: at(a).saturating_sub(a.last_frame_ms.load(Ordering::Relaxed)),
                }
            }),
            u64::try_from(self.min_idle.as_millis()).unwrap_or(u64::MAX),
        )?;
        let ended = self.connections.swap_remove(chosen);
        ended.end.cancel();
        tokio::time::timeout(GIVE_WAY, slots.clone().acquire_owned())
            .await
            .ok()?
            .ok()
    }
}

/// How often a refused connection is logged, at most.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(1);

/// Refused connections, counted between two log lines.
#[derive(Debug, Default)]
pub struct Refusals {
    since_line: u64,
    last_line: Option<Instant>,
}

impl Refusals {
    /// Counts a refusal at `now`; `Some(count)` when a line is due, with
    /// the refusals since the last line (this one included).
    pub fn refused(&mut self, now: Instant) -> Option<u64> {
        self.since_line += 1;
        if self
            .last_line
            .is_some_and(|last| now.saturating_duration_since(last) < REFUSAL_LOG_EVERY)
        {
            return None;
        }
        self.last_line = Some(now);
        Some(std::mem::take(&mut self.since_line))
    }
}

impl HandshakeSlot {
    /// Runs the handshake `exchange` unless the slot is taken back first
    /// (`None`). Either way the slot is free once this returns.
    pub async fn hold<F: Future>(self, exchange: F) -> Option<F::Output> {
        tokio::select! {
            biased;
            _ = self.0.cancelled() => None,
            done = exchange => Some(done),
        }
    }
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        // Marks the handshake as over for the accept loop's list.
        self.0.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_handshake_makes_room_for_a_new_one() {
        let mut handshakes = Handshakes::new(2);
        let (first, evicted) = handshakes.admit();
        assert!(!evicted);
        let (second, evicted) = handshakes.admit();
        assert!(!evicted);
        let (third, evicted) = handshakes.admit();
        assert!(evicted);
        assert!(first.0.is_cancelled(), "the oldest was ended");
        assert!(!second.0.is_cancelled() && !third.0.is_cancelled());
        assert_eq!(handshakes.in_progress(), 2);
    }

    #[test]
    fn finished_handshakes_free_their_place() {
        let mut handshakes = Handshakes::new(2);
        let (first, _) = handshakes.admit();
        let (second, _) = handshakes.admit();
        drop(first);
        let (_third, evicted) = handshakes.admit();
        assert!(!evicted, "the finished one made room");
        assert!(!second.0.is_cancelled());
        assert_eq!(handshakes.in_progress(), 2);
        // However many come and finish, the list stays within the cap.
        for _ in 0..100 {
            drop(handshakes.admit());
        }
        assert!(handshakes.waiting.len() <= 2);
    }

    #[tokio::test]
    async fn with_every_slot_taken_a_handshake_gives_its_slot_up() {
        let slots = Arc::new(Semaphore::new(2));
        let mut handshakes = Handshakes::new(2);
        // Two connections in their handshake hold both slots; each task
        // lets its slot go when its handshake ends, as `serve` does.
        let mut tasks = Vec::new();
        for _ in 0..2 {
            let slot = handshakes.connection_slot(&slots).await.expect("free");
            let (handshake, _) = handshakes.admit();
            tasks.push(tokio::spawn(async move {
                handshake.hold(std::future::pending::<()>()).await;
                drop(slot);
            }));
        }
        let newcomer = handshakes.connection_slot(&slots).await;
        assert!(newcomer.is_some(), "the oldest handshake gave way");
        let (_handshake, evicted) = handshakes.admit();
        assert!(!evicted, "its place was freed already");
        assert_eq!(handshakes.in_progress(), 2);

        // Connections past their handshake are never ended for another.
        let mut handshakes = Handshakes::new(2);
        let slots = Arc::new(Semaphore::new(1));
        let _established = handshakes.connection_slot(&slots).await.expect("free");
        let (handshake, _) = handshakes.admit();
        assert_eq!(handshake.hold(async {}).await, Some(()));
        assert!(handshakes.connection_slot(&slots).await.is_none());
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[tokio::test]
    async fn accepted_connections_hold_a_bounded_amount_unsent() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (_client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (stream, _) = accepted.unwrap();
        bound_unsent(&stream);
        let set = socket2::SockRef::from(&stream).tcp_notsent_lowat().unwrap();
        assert_eq!(set, UNSENT_BYTES);
    }

    #[test]
    fn the_idlest_open_connection_with_nothing_in_flight_is_chosen() {
        let view = |open, busy, idle_ms| IdleView {
            open,
            busy,
            idle_ms,
        };
        let views = [
            view(true, 0, 1_500),
            view(true, 3, 90_000),  // working: never
            view(false, 0, 90_000), // in its handshake: Handshakes' own
            view(true, 0, 40_000),
            view(true, 0, 999), // not idle long enough
        ];
        assert_eq!(most_idle(views, 1_000), Some(3));
        assert_eq!(most_idle(views[..3].iter().copied(), 1_000), Some(0));
        assert_eq!(most_idle([views[1], views[2], views[4]], 1_000), None);
        assert_eq!(most_idle([], 1_000), None);
    }

    #[tokio::test]
    async fn an_idle_connection_gives_its_slot_up_and_a_busy_one_never() {
        let slots = Arc::new(Semaphore::new(2));
        let mut idle = Idle::new(Duration::ZERO);
        let mut tasks = Vec::new();
        let mut guards = Vec::new();
        let mut in_flight = Vec::new();
        for busy in [true, false] {
            let slot = slots.clone().try_acquire_owned().unwrap();
            let guard = idle.register();
            let requests = Arc::new(Semaphore::new(4));
            guard.0.opened(requests.clone(), 4);
            if busy {
                in_flight.push(requests.try_acquire_owned().unwrap());
            }
            let activity = guard.0.clone();
            guards.push(activity.clone());
            tasks.push(tokio::spawn(async move {
                activity.ended().await;
                drop(guard);
                drop(slot);
            }));
        }
        assert!(
            idle.take_slot(&slots).await.is_some(),
            "the idle one gave way"
        );
        assert!(guards[1].end.is_cancelled() && !guards[0].end.is_cancelled());
        // The busy one is left alone, however long.
        assert!(idle.take_slot(&slots).await.is_none());
        drop(in_flight);
        assert!(
            idle.take_slot(&slots).await.is_some(),
            "idle now, it gives way"
        );
    }

    #[test]
    fn refusals_are_logged_once_a_second_with_their_count() {
        let mut refusals = Refusals::default();
        let start = Instant::now();
        assert_eq!(refusals.refused(start), Some(1), "the first is logged");
        for ms in [1, 10, 999] {
            assert_eq!(refusals.refused(start + Duration::from_millis(ms)), None);
        }
        let second = start + Duration::from_millis(1000);
        assert_eq!(refusals.refused(second), Some(4));
        assert_eq!(refusals.refused(second), None);
    }

    #[tokio::test]
    async fn an_ended_slot_stops_its_handshake() {
        let mut handshakes = Handshakes::new(1);
        let (slot, _) = handshakes.admit();
        let (_newer, evicted) = handshakes.admit();
        assert!(evicted);
        assert_eq!(slot.hold(std::future::pending::<()>()).await, None);

        let (slot, _) = handshakes.admit();
        assert_eq!(slot.hold(async { 7 }).await, Some(7));
        assert_eq!(
            handshakes.in_progress(),
            0,
            "a finished handshake frees its place"
        );
    }
}
