//! Holding, not closing, the connections ended to make room.
//!
//! A connection ended for a newcomer (its handshake was the oldest, or it
//! sat idle past its handshake without ever sending a request) was closed
//! at once. Its peer saw the close and, if it was one of a crowd keeping N
//! connections open (what slowloris tools and connection floods do),
//! opened a replacement a moment later, which ended another, and so on:
//! in `benches/slow_input.rs` 2000 such peers turned into 1,700
//! connections set up and torn down a second, and that churn, not the
//! node's own work, cost a well-behaved client its latency.
//!
//! So such a connection is closed later instead: its slot and its task
//! are freed at once, but a duplicate of its socket is kept in the
//! [`Pen`] for [`Tarpit`]'s hold (the handshake timeout; a slower peer
//! could not have been served anyway) and only then closed. Its peer sees
//! nothing happen; a crowd that waits for its connections to close waits
//! that long before replacing each one. What is held is a file descriptor
//! and the kernel's socket buffers: no task, no TLS state, no slot. The
//! pen is bounded; when it is full the socket held longest is closed
//! early.
//!
//! A connection that has sent a request is never held: a pooled client
//! whose idle connection was ended must see the close at once and
//! reconnect, not wait on a socket that will never answer.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Items held until their deadline, at most `cap` of them. Pure: the
/// caller says what time it is and how long each item is held.
#[derive(Debug)]
pub struct Pen<T> {
    cap: usize,
    /// Soonest deadline on top; `seq` keeps equal deadlines in arrival
    /// order.
    held: BinaryHeap<Reverse<Entry<T>>>,
    seq: u64,
}

#[derive(Debug)]
struct Entry<T> {
    due: Instant,
    seq: u64,
    item: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl<T> Eq for Entry<T> {}
impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Entry<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

impl<T> Pen<T> {
    /// At most `cap` items.
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            held: BinaryHeap::new(),
            seq: 0,
        }
    }

    /// Holds `item` from `now` for `hold`. Returns what must be let go at
    /// once: the item due soonest if the pen was full, or `item` itself
    /// if the pen holds nothing at all.
    pub fn hold(&mut self, now: Instant, hold: Duration, item: T) -> Option<T> {
        if self.cap == 0 {
            return Some(item);
        }
        let pushed_out = if self.held.len() >= self.cap {
            self.held.pop().map(|Reverse(h)| h.item)
        } else {
            None
        };
        self.seq += 1;
        self.held.push(Reverse(Entry {
            due: now + hold,
            seq: self.seq,
            item,
        }));
        pushed_out
    }

    /// Lets go of every item whose hold is over at `now`.
    pub fn release_due(&mut self, now: Instant) -> Vec<T> {
        let mut due = Vec::new();
        while self.held.peek().is_some_and(|Reverse(h)| h.due <= now) {
            if let Some(Reverse(h)) = self.held.pop() {
                due.push(h.item);
            }
        }
        due
    }

    /// When the next item is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.held.peek().map(|Reverse(h)| h.due)
    }

    /// Items held.
    pub fn len(&self) -> usize {
        self.held.len()
    }
}

/// A hold of `base` spread over ±50%: sockets ended together (a flood
/// arrives at once) are let go at different times, so their peers do not
/// come back together. `unit` is uniform in [0, 1). Pure.
pub fn jittered(base: Duration, unit: f64) -> Duration {
    base.mul_f64(0.5 + unit.clamp(0.0, 1.0))
}

/// A duplicate of a connection's socket, taken before the connection can
/// be ended, so that ending it closes nothing the peer can see while the
/// duplicate is held.
#[derive(Debug)]
pub struct Spare {
    /// Held only to keep the socket open.
    _socket: socket2::Socket,
}

impl Spare {
    /// A duplicate of `stream`'s socket, if the process has a descriptor
    /// to spare (if not, the connection is simply closed when ended).
    pub fn of(stream: &TcpStream) -> Option<Self> {
        socket2::SockRef::from(stream)
            .try_clone()
            .ok()
            .map(|_socket| Self { _socket })
    }
}

/// Sockets waiting in the pen are handed over through a channel this
/// long; past it they are closed at once rather than queue.
const HANDOVER: usize = 256;

/// The handle connections use to have their socket held.
#[derive(Debug, Clone)]
pub struct Tarpit {
    tx: mpsc::Sender<Spare>,
}

impl Tarpit {
    /// Starts the pen's keeper: up to `cap` sockets, each held `hold`,
    /// all closed at `shutdown`. `report` is told of each socket taken
    /// in (`true`) and of how many are held after every change.
    pub fn spawn(
        cap: usize,
        hold: Duration,
        report: impl Fn(Held) + Send + 'static,
        shutdown: CancellationToken,
    ) -> Self {
        let (tx, rx) = mpsc::channel(HANDOVER);
        tokio::spawn(keep(Pen::new(cap), hold, rx, report, shutdown));
        Self { tx }
    }

    /// Holds `spare` (the connection's own socket is about to close);
    /// closes it now if the keeper is behind or gone.
    pub fn hold(&self, spare: Spare) {
        let _ = self.tx.try_send(spare);
    }
}

/// What the keeper reports after each change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// A socket was taken in; this many are held now.
    Taken(u64),
    /// Sockets were let go; this many are held now.
    Released(u64),
}

async fn keep(
    mut pen: Pen<Spare>,
    hold: Duration,
    mut rx: mpsc::Receiver<Spare>,
    report: impl Fn(Held),
    shutdown: CancellationToken,
) {
    loop {
        let next_due = pen.next_due();
        tokio::select! {
            _ = shutdown.cancelled() => break,
            received = rx.recv() => match received {
                Some(spare) => {
                    let hold = jittered(hold, rand::random::<f64>());
                    drop(pen.hold(Instant::now(), hold, spare));
                    report(Held::Taken(pen.len() as u64));
                }
                None => break,
            },
            _ = sleep_until(next_due) => {
                drop(pen.release_due(Instant::now()));
                report(Held::Released(pen.len() as u64));
            }
        }
    }
    drop(pen);
    report(Held::Released(0));
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// How many sockets the pen may hold given the process's descriptor
/// limit: twice the connection cap, less whatever the connections (each
/// with a spare while it may still be held), storage and the rest of the
/// node need. Pure.
pub fn capacity(max_connections: usize, fd_limit: u64) -> usize {
    /// Descriptors kept for everything but connections: storage files,
    /// the listeners, Raft and peer connections, logs.
    const RESERVED: u64 = 512;
    let connections = 2 * max_connections as u64;
    let room = fd_limit.saturating_sub(connections + RESERVED);
    usize::try_from(room)
        .unwrap_or(usize::MAX)
        .min(2 * max_connections)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_are_let_go_in_order_once_their_hold_is_over() {
        let start = Instant::now();
        let hold = Duration::from_secs(5);
        let mut pen = Pen::new(10);
        assert!(pen.hold(start, hold, 1).is_none());
        assert!(pen.hold(start + Duration::from_secs(1), hold, 2).is_none());
        assert_eq!(pen.next_due(), Some(start + hold));
        assert!(
            pen.release_due(start + Duration::from_millis(4999))
                .is_empty()
        );
        assert_eq!(pen.release_due(start + hold), vec![1]);
        assert_eq!(pen.len(), 1);
        assert_eq!(pen.release_due(start + Duration::from_secs(60)), vec![2]);
        assert!(pen.len() == 0 && pen.next_due().is_none());
    }

    #[test]
    fn a_full_pen_lets_the_oldest_go_early() {
        let start = Instant::now();
        let hold = Duration::from_secs(5);
        let mut pen = Pen::new(2);
        assert!(pen.hold(start, hold, 1).is_none());
        assert!(pen.hold(start, hold, 2).is_none());
        assert_eq!(pen.hold(start, hold, 3), Some(1));
        assert_eq!(pen.len(), 2);
        // A pen of nothing holds nothing.
        let mut none = Pen::new(0);
        assert_eq!(none.hold(start, hold, 7), Some(7));
        assert_eq!(none.len(), 0);
    }

    #[test]
    fn holds_of_different_lengths_are_let_go_by_deadline() {
        let start = Instant::now();
        let secs = Duration::from_secs;
        let mut pen = Pen::new(10);
        pen.hold(start, secs(7), "long");
        pen.hold(start, secs(3), "short");
        pen.hold(start + secs(1), secs(3), "later");
        assert_eq!(pen.next_due(), Some(start + secs(3)));
        assert_eq!(pen.release_due(start + secs(4)), vec!["short", "later"]);
        assert_eq!(pen.release_due(start + secs(6)), Vec::<&str>::new());
        assert_eq!(pen.release_due(start + secs(7)), vec!["long"]);
        // Full: the one due soonest goes first, whatever its arrival.
        let mut pen = Pen::new(2);
        pen.hold(start, secs(7), "long");
        pen.hold(start, secs(3), "short");
        assert_eq!(pen.hold(start, secs(5), "new"), Some("short"));
    }

    #[test]
    fn holds_spread_over_half_to_one_and_a_half_times() {
        let base = Duration::from_secs(4);
        assert_eq!(jittered(base, 0.0), Duration::from_secs(2));
        assert_eq!(jittered(base, 0.5), base);
        assert!(jittered(base, 0.999_999) < Duration::from_secs(6));
        // Out-of-range draws stay in range.
        assert_eq!(jittered(base, -1.0), Duration::from_secs(2));
        assert_eq!(jittered(base, 7.0), Duration::from_secs(6));
    }

    #[test]
    fn the_pen_fits_in_what_descriptors_are_left() {
        // Plenty: twice the connection cap.
        assert_eq!(capacity(1024, 1 << 20), 2048);
        // Tight: what is left after the connections and their spares.
        assert_eq!(capacity(1024, 4096), 4096 - 2048 - 512);
        // A soft limit of 1024 leaves nothing to hold with.
        assert_eq!(capacity(1024, 1024), 0);
    }

    #[tokio::test]
    async fn a_held_socket_stays_open_until_its_hold_is_over() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let mut client = client.unwrap();
        let (stream, _) = accepted.unwrap();
        let taken = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let report = {
            let taken = taken.clone();
            move |held| {
                if let Held::Taken(_) = held {
                    taken.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        };
        let shutdown = CancellationToken::new();
        let hold = Duration::from_millis(300);
        let tarpit = Tarpit::spawn(4, hold, report, shutdown.clone());
        let spare = Spare::of(&stream).expect("a descriptor to spare");
        tarpit.hold(spare);
        let ended = Instant::now();
        drop(stream);
        // The peer sees the close only once the hold is over.
        let mut buf = [0u8; 8];
        let read = tokio::io::AsyncReadExt::read(&mut client, &mut buf);
        let n = tokio::time::timeout(Duration::from_secs(30), read)
            .await
            .expect("closed in the end")
            .unwrap_or(0);
        assert_eq!(n, 0);
        assert!(
            ended.elapsed() >= hold / 2,
            "closed before the shortest hold was over"
        );
        assert_eq!(taken.load(std::sync::atomic::Ordering::Relaxed), 1);
        shutdown.cancel();
    }
}
