//! The load: `clients` workers, each sending its next put as soon as its
//! last one answered (a closed loop, so `clients` puts are in flight at
//! all times), every put to a key never written before, for a warm-up and
//! then a measured window. A put counts if it was sent after the warm-up
//! and answered before the window closed; the throughput is those puts
//! over the window's length.

use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::systems::Putter;

/// Slowest latency the histogram holds (µs); slower puts are clamped to
/// it. Ten times the request timeout, so nothing real is clamped.
const HISTOGRAM_MAX_US: u64 = 60_000_000;

/// Pause after a failed put before the worker's next: a node that refuses
/// at once would otherwise turn the loop into a spin that measures the
/// refusal path. Failures are counted and reported, never hidden.
const ERROR_PAUSE: Duration = Duration::from_millis(10);

/// What the load does.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Workers, each with one put in flight.
    pub clients: usize,
    /// Bytes of every value.
    pub value_bytes: usize,
    /// Time before the measured window: connections open, leaders and
    /// maps are found, caches warm.
    pub warmup: Duration,
    /// The measured window.
    pub duration: Duration,
}

/// What one worker saw in the window.
struct Tally {
    latencies: Histogram<u64>,
    errors: u64,
    last_error: Option<String>,
}

/// What the whole load saw in the window.
#[derive(Debug)]
pub struct Outcome {
    /// Latencies of the puts that count (µs).
    pub latencies: Histogram<u64>,
    /// Puts that failed in the window.
    pub errors: u64,
    /// One of their messages.
    pub last_error: Option<String>,
}

impl Settings {
    /// The measured window of a load started at `start`: (from, until).
    pub fn window(&self, start: Instant) -> (Instant, Instant) {
        let from = start + self.warmup;
        (from, from + self.duration)
    }
}

/// Runs the load from `start` on `putters` (worker i uses putter
/// i % len); `run_id` keeps this run's keys apart from any earlier run's.
pub async fn run(
    putters: Vec<Putter>,
    settings: Settings,
    start: Instant,
    run_id: u64,
) -> anyhow::Result<Outcome> {
    anyhow::ensure!(!putters.is_empty(), "no client instances");
    let value = value(settings.value_bytes);
    let (from, until) = settings.window(start);
    let mut workers = JoinSet::new();
    for worker in 0..settings.clients {
        let putter = putters[worker % putters.len()].clone();
        let value = value.clone();
        workers.spawn(work(putter, value, run_id, worker, from, until));
    }
    let mut outcome = Outcome {
        latencies: histogram(),
        errors: 0,
        last_error: None,
    };
    while let Some(tally) = workers.join_next().await {
        let tally = tally?;
        outcome.latencies.add(&tally.latencies)?;
        outcome.errors += tally.errors;
        if tally.last_error.is_some() {
            outcome.last_error = tally.last_error;
        }
    }
    Ok(outcome)
}

async fn work(
    mut putter: Putter,
    value: Vec<u8>,
    run_id: u64,
    worker: usize,
    from: Instant,
    until: Instant,
) -> Tally {
    let mut tally = Tally {
        latencies: histogram(),
        errors: 0,
        last_error: None,
    };
    for seq in 0u64.. {
        let sent = Instant::now();
        if sent >= until {
            break;
        }
        let key = key(run_id, worker, seq);
        let result = putter.put(key.as_bytes(), &value).await;
        let answered = Instant::now();
        let counts = sent >= from && answered <= until;
        match result {
            Ok(()) if counts => {
                let us = (answered - sent)
                    .as_micros()
                    .min(u128::from(HISTOGRAM_MAX_US));
                tally.latencies.saturating_record(us as u64);
            }
            Ok(()) => {}
            Err(e) => {
                if counts {
                    tally.errors += 1;
                    tally.last_error = Some(e);
                }
                tokio::time::sleep(ERROR_PAUSE).await;
            }
        }
    }
    tally
}

/// `put-load/RUN/WORKER/SEQ`: 40 bytes, distinct for every put of every
/// run, in order within a worker (neither system gains from the order:
/// levee hashes keys to partitions, etcd appends every put to its log).
pub fn key(run_id: u64, worker: usize, seq: u64) -> String {
    format!("put-load/{run_id:016x}/{worker:03}/{seq:010}")
}

/// `bytes` bytes that do not repeat in any short period (neither system
/// compresses values, but a run should not depend on that).
pub fn value(bytes: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..bytes)
        .map(|_| {
            // xorshift64
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 56) as u8
        })
        .collect()
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_US, 3).expect("constant bounds are valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_distinct_and_of_one_length() {
        let a = key(7, 0, 0);
        assert_eq!(a.len(), 40);
        assert_ne!(a, key(7, 0, 1));
        assert_ne!(a, key(7, 1, 0));
        assert_ne!(a, key(8, 0, 0));
        assert_eq!(key(u64::MAX, 999, 9_999_999_999).len(), 40);
    }

    #[test]
    fn a_value_has_its_size_and_is_not_constant() {
        let v = value(256);
        assert_eq!(v.len(), 256);
        assert!(v.iter().any(|&b| b != v[0]));
    }
}
