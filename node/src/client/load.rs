//! Load-aware replica choice: which replica of a key a request goes to
//! first, from what this client has seen of each node.
//!
//! After C3 (Suresh et al., "C3: Cutting Tail Latency in Cloud Data Stores
//! via Adaptive Replica Selection", NSDI'15): each node gets a score from
//! its smoothed response time and its queue, where the queue counts this
//! client's own requests still out at the node and the pressure the node
//! reported with its latest answer, and the queue is penalised by its cube
//! (a node with twice the queue looks eight times worse, so load leaves a
//! node well before it is full rather than once it is). Two replicas are
//! drawn at random and the better one goes first (power of two choices,
//! Mitzenmacher): clients sharing the same view then do not all pile onto
//! the single best node, which is how one node's loss becomes its
//! neighbour's overload.
//!
//! What a client knows of a node it stopped sending to ages: its latency
//! drifts back toward the best of the candidates and its pressure toward
//! zero (half-life [`LoadConfig::stale_half_life`]), so a node that was
//! slow is tried again now and then and wins its share back once it
//! recovers. C3's per-server rate control is not here: a node that sheds
//! says so with `Overloaded` and the client's breaker holds it off for the
//! time it asks, and the adaptive throttle bounds what the client sends
//! in all.
//!
//! Pure: time and randomness come in as arguments; the pool feeds it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How scores are made.
#[derive(Debug, Clone, Copy)]
pub struct LoadConfig {
    /// Weight of a new latency sample in the moving average (default 0.2:
    /// about the last ten answers count, so one slow answer does not send
    /// a node's load elsewhere but a run of them does within milliseconds
    /// at the rates where it matters).
    pub alpha: f64,
    /// Queue length a node reporting a pressure of 100% (at its limit)
    /// counts for (default 4): the cube then makes a node at its limit 125
    /// times costlier than an idle one of the same latency.
    pub pressure_queue: f64,
    /// How fast what is known of a node with nothing in flight fades
    /// (default 1 s): long enough that a slow node is not retried on
    /// every request, short enough that a recovered one wins its share
    /// back within seconds.
    pub stale_half_life: Duration,
    /// The latency sample a failed attempt counts as, at least (default
    /// 500 ms): a timeout or refused connect says the node is much worse
    /// than its answers did; how quickly it failed says nothing good.
    pub failure_latency: Duration,
    /// Added to every latency before it is compared (default 1 ms): on a
    /// LAN, answers a fraction of a millisecond apart are the same speed,
    /// and a quiet client should not send all its requests to whichever
    /// node answered a few microseconds faster. A slow node (milliseconds
    /// more) or a queue still tells.
    pub latency_allowance: Duration,
}

impl Default for LoadConfig {
    fn default() -> Self {
        Self {
            alpha: 0.2,
            pressure_queue: 4.0,
            stale_half_life: Duration::from_secs(1),
            failure_latency: Duration::from_millis(500),
            latency_allowance: Duration::from_millis(1),
        }
    }
}

/// How an attempt to a node ended, as the load board counts it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    /// The node answered (a result or an error about the request) after
    /// `latency`, reporting `pressure` (percent of its limit).
    Answered {
        /// From the request's send to its answer.
        latency: Duration,
        /// The `pressure` of the answer's frame.
        pressure: u8,
    },
    /// The node refused it as overloaded: its pressure counts, the quick
    /// refusal is not a latency sample (it would make the node look fast).
    Refused {
        /// The `pressure` of the answer's frame.
        pressure: u8,
    },
    /// No answer: unreachable, timed out, connection lost, after `after`.
    Failed {
        /// How long the attempt took to fail.
        after: Duration,
    },
}

/// What this client knows of one node.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct NodeLoad {
    /// Smoothed response time (seconds); `None` before any answer.
    latency: Option<f64>,
    /// The pressure of the latest answer, as a fraction of the limit.
    pressure: f64,
    /// Requests from this client the node has not answered yet.
    outstanding: u32,
    /// When the latest outcome arrived.
    last: Option<Instant>,
}

impl NodeLoad {
    /// An attempt leaves for this node.
    pub fn started(&mut self) {
        self.outstanding = self.outstanding.saturating_add(1);
    }

    /// An attempt to this node ended with `outcome` at `now`.
    pub fn finished(&mut self, config: &LoadConfig, outcome: Outcome, now: Instant) {
        self.outstanding = self.outstanding.saturating_sub(1);
        let sample = match outcome {
            Outcome::Answered { latency, pressure } => {
                self.pressure = f64::from(pressure) / 100.0;
                Some(latency.as_secs_f64())
            }
            Outcome::Refused { pressure } => {
                self.pressure = f64::from(pressure) / 100.0;
                None
            }
            Outcome::Failed { after } => Some(after.max(config.failure_latency).as_secs_f64()),
        };
        if let Some(sample) = sample {
            let alpha = config.alpha.clamp(0.0, 1.0);
            self.latency = Some(match self.latency {
                Some(old) => old + alpha * (sample - old),
                None => sample,
            });
        }
        self.last = Some(now);
    }

    /// Requests from this client still out at the node.
    pub fn outstanding(&self) -> u32 {
        self.outstanding
    }
}

/// The C3 score of a node (lower is better): `(latency + allowance) ×
/// queue³`, where
/// `queue = 1 + outstanding + pressure × pressure_queue`, and where a node
/// with nothing in flight has its latency's excess over `floor` (the best
/// latency among the candidates) and its pressure faded by how long ago it
/// last answered. A node never heard from scores as `floor` with an empty
/// queue: it is worth trying.
pub fn score(config: &LoadConfig, load: &NodeLoad, floor: f64, now: Instant) -> f64 {
    let fade = match (load.outstanding, load.last) {
        (0, Some(last)) => {
            let age = now.saturating_duration_since(last).as_secs_f64();
            let half_life = config.stale_half_life.as_secs_f64().max(1e-3);
            0.5f64.powf(age / half_life)
        }
        _ => 1.0,
    };
    let latency = load
        .latency
        .map_or(floor, |l| floor + (l - floor).max(0.0) * fade);
    let queue =
        1.0 + f64::from(load.outstanding) + load.pressure * config.pressure_queue.max(0.0) * fade;
    // The allowance also keeps a zero latency (an answer within the
    // clock's resolution) from making every queue equal.
    (latency + config.latency_allowance.as_secs_f64().max(1e-6)) * queue.powi(3)
}

/// How much better (as a fraction of its score) one of the two drawn
/// replicas must be to lead: closer scores are a tie.
pub const TIE_MARGIN: f64 = 0.2;

/// Orders `candidates` (indexes into `loads`) best first: two drawn at
/// random by `random`, the clearly better of them first (the first drawn
/// on a tie, see [`TIE_MARGIN`]), then the rest by score. With fewer than
/// two, the order is unchanged.
pub fn rank(config: &LoadConfig, loads: &[NodeLoad], random: u64, now: Instant) -> Vec<usize> {
    let n = loads.len();
    let mut order: Vec<usize> = (0..n).collect();
    if n < 2 {
        return order;
    }
    let floor = loads
        .iter()
        .filter_map(|l| l.latency)
        .fold(f64::INFINITY, f64::min);
    let floor = if floor.is_finite() { floor } else { 0.0 };
    let scores: Vec<f64> = loads.iter().map(|l| score(config, l, floor, now)).collect();
    // Two distinct candidates from one random number.
    let a = (random % n as u64) as usize;
    let b = (a + 1 + ((random / n as u64) % (n as u64 - 1)) as usize) % n;
    // Within the margin the two count as equal and the first drawn
    // leads: a few microseconds of noise on idle nodes would otherwise
    // send a quiet client's every request to whichever node was lucky.
    let first = if scores[b] < scores[a] * (1.0 - TIE_MARGIN) {
        b
    } else {
        a
    };
    order.retain(|&i| i != first);
    order.sort_by(|&x, &y| scores[x].total_cmp(&scores[y]));
    order.insert(0, first);
    order
}

/// Most nodes one board remembers; past it, the least recently heard
/// from are forgotten (a client of a cluster of a few thousand nodes
/// never gets there; a bound all the same).
const MAX_NODES: usize = 4096;

/// What a client (or a node's peer pool) knows of every node it sends to,
/// by address.
#[derive(Debug, Default)]
pub struct LoadBoard {
    config: LoadConfig,
    nodes: HashMap<String, NodeLoad>,
}

impl LoadBoard {
    /// An empty board.
    pub fn new(config: LoadConfig) -> Self {
        Self {
            config,
            nodes: HashMap::new(),
        }
    }

    /// An attempt leaves for `addr`.
    pub fn started(&mut self, addr: &str) {
        // Looked up by `&str` first: only a node seen for the first time
        // costs an allocation, not every request.
        if let Some(load) = self.nodes.get_mut(addr) {
            load.started();
            return;
        }
        if self.nodes.len() >= MAX_NODES {
            self.forget_oldest();
        }
        self.nodes.entry(addr.to_owned()).or_default().started();
    }

    /// An attempt to `addr` ended.
    pub fn finished(&mut self, addr: &str, outcome: Outcome, now: Instant) {
        if let Some(load) = self.nodes.get_mut(addr) {
            load.finished(&self.config, outcome, now);
        }
    }

    /// An attempt to `addr` was given up before it ended: no longer out,
    /// and no sample.
    pub fn abandoned(&mut self, addr: &str) {
        if let Some(load) = self.nodes.get_mut(addr) {
            load.outstanding = load.outstanding.saturating_sub(1);
        }
    }

    /// What is known of `addr`.
    pub fn get(&self, addr: &str) -> NodeLoad {
        self.nodes.get(addr).copied().unwrap_or_default()
    }

    /// Orders `addrs` best first (see [`rank`]).
    pub fn rank(&self, addrs: &mut [String], random: u64, now: Instant) {
        let loads: Vec<NodeLoad> = addrs.iter().map(|a| self.get(a)).collect();
        let order = rank(&self.config, &loads, random, now);
        let ranked: Vec<String> = order.iter().map(|&i| addrs[i].clone()).collect();
        for (slot, addr) in addrs.iter_mut().zip(ranked) {
            *slot = addr;
        }
    }

    fn forget_oldest(&mut self) {
        let oldest = self
            .nodes
            .iter()
            .filter(|(_, l)| l.outstanding == 0)
            .min_by_key(|(_, l)| l.last)
            .map(|(a, _)| a.clone());
        if let Some(addr) = oldest {
            self.nodes.remove(&addr);
        }
    }
}

/// The delay after which a coordinator's read asks one more replica: the
/// 95th percentile of its recent replica reads ("The Tail at Scale": a
/// hedge at the p95 costs about 5% more reads and cuts the tail that one
/// slow replica makes), within `[MIN_HEDGE, MAX_HEDGE]`, and `MAX_HEDGE`
/// until enough reads have been seen.
#[derive(Debug, Clone)]
pub struct HedgeDelay {
    /// The latest samples (µs), a ring of at most `HEDGE_SAMPLES`.
    samples: Vec<u32>,
    next: usize,
    since_update: usize,
    current: Duration,
}

/// Replica reads a hedge delay is computed from.
const HEDGE_SAMPLES: usize = 256;
/// Samples before the measured delay replaces `MAX_HEDGE`.
const HEDGE_MIN_SAMPLES: usize = 32;
/// Samples between recomputations (a sort of 256 numbers).
const HEDGE_EVERY: usize = 16;
/// The shortest hedge delay: below it a loopback cluster's jitter alone
/// would send extra reads.
pub const MIN_HEDGE: Duration = Duration::from_millis(1);
/// The longest, and the delay before any measurement: a replica that has
/// said nothing for this long is frozen or cut off, not slow.
pub const MAX_HEDGE: Duration = Duration::from_millis(200);

impl Default for HedgeDelay {
    fn default() -> Self {
        Self {
            samples: Vec::with_capacity(HEDGE_SAMPLES),
            next: 0,
            since_update: 0,
            current: MAX_HEDGE,
        }
    }
}

impl HedgeDelay {
    /// A replica read answered after `latency`.
    pub fn record(&mut self, latency: Duration) {
        let micros = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX);
        if self.samples.len() < HEDGE_SAMPLES {
            self.samples.push(micros);
        } else if let Some(slot) = self.samples.get_mut(self.next) {
            *slot = micros;
        }
        self.next = (self.next + 1) % HEDGE_SAMPLES;
        self.since_update += 1;
        if self.samples.len() >= HEDGE_MIN_SAMPLES && self.since_update >= HEDGE_EVERY {
            self.since_update = 0;
            let mut sorted = self.samples.clone();
            let at = (sorted.len() * 95 / 100).min(sorted.len() - 1);
            let (_, p95, _) = sorted.select_nth_unstable(at);
            self.current = Duration::from_micros(u64::from(*p95)).clamp(MIN_HEDGE, MAX_HEDGE);
        }
    }

    /// How long to wait for a replica before asking one more.
    pub fn delay(&self) -> Duration {
        self.current
    }
}

#[cfg(test)]
mod tests;
