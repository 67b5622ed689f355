//! The quarantine of requests that crash their handler: the defence
//! against the "query of death" (a request that kills an instance, retried
//! by its client until every instance is down).
//!
//! A node that catches a panic while handling a request reports a
//! *strike* against the request's [`Shape`] (its operation and a hash of
//! its key, or of its whole payload for messages without a key). The
//! strikes are commands in the cluster map, so every node counts them the
//! same way and, once a shape has `strikes` of them within `window_ms`,
//! every node refuses it on arrival, before any work, until `until_ms`.
//! Pure: time comes in as wall-clock milliseconds carried by the command
//! (for strikes) or passed by the caller (for the refusal check), so the
//! rules are tested without a clock.

use serde::{Deserialize, Serialize};

use super::NodeId;

/// Most shapes the quarantine tracks at once. Small on purpose: it travels
/// in the cluster map to every node and is checked on every request; a
/// real query of death is one shape or a handful, and a flood of distinct
/// crashing shapes is better refused by fixing the bug than by a long
/// list. When full, the entry least worth keeping is dropped (see
/// [`Quarantine::strike`]).
pub const MAX_ENTRIES: usize = 64;

/// What identifies "the same request" across retries and nodes: the
/// operation's name and a 64-bit hash (xxh3) of its key, or of its whole
/// payload when it has no key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Shape {
    /// The operation (`put`, `get`, `replicate`, …, as in `/metrics`).
    pub op: String,
    /// xxh3-64 of the key, or of the payload for keyless messages.
    pub hash: u64,
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{:016x}", self.op, self.hash)
    }
}

/// How many strikes quarantine a shape, within what window, for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineSettings {
    /// Strikes (caught panics, on any nodes) within `window_ms` that
    /// quarantine a shape (default 2): one panic may be a fluke of timing,
    /// two of the same request is a pattern, and a third would already be
    /// a third node's (or the same node's third) crash.
    pub strikes: u32,
    /// Strikes older than this are forgotten (default 10 min).
    pub window_ms: u64,
    /// How long a quarantine lasts (default 1 h): long enough for an
    /// operator to see it and ship a fix, short enough that a shape
    /// quarantined by mistake comes back on its own.
    pub duration_ms: u64,
}

impl Default for QuarantineSettings {
    fn default() -> Self {
        Self {
            strikes: 2,
            window_ms: 10 * 60 * 1000,
            duration_ms: 60 * 60 * 1000,
        }
    }
}

/// One strike: which node caught a panic, and when (wall clock, ms).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Strike {
    /// The node that caught the panic.
    pub node: NodeId,
    /// When, in wall-clock milliseconds.
    pub at_ms: u64,
}

/// A shape with recent strikes, quarantined or not yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The request shape.
    pub shape: Shape,
    /// Its most recent strikes within the window, oldest first (at most
    /// `strikes` are kept: older ones cannot change the decision).
    pub strikes: Vec<Strike>,
    /// Quarantined until this wall-clock time (ms), or `None` while it
    /// has fewer strikes than the threshold.
    pub until_ms: Option<u64>,
}

impl Entry {
    /// Whether requests of this shape are refused at `now_ms`.
    pub fn quarantined_at(&self, now_ms: u64) -> bool {
        self.until_ms.is_some_and(|until| now_ms < until)
    }

    fn latest_strike(&self) -> u64 {
        self.strikes.last().map_or(0, |s| s.at_ms)
    }
}

/// The cluster's quarantine list, held in the cluster map.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantine {
    /// The thresholds.
    pub settings: QuarantineSettings,
    /// Shapes with recent strikes; at most [`MAX_ENTRIES`].
    pub entries: Vec<Entry>,
}

impl Quarantine {
    /// Records a strike against `shape` from `node` at `at_ms`; returns
    /// whether this strike quarantined it. A strike for a shape already
    /// quarantined (from a node that had not yet seen the quarantine)
    /// changes nothing: the quarantine does not grow by being hit.
    pub fn strike(&mut self, shape: Shape, node: NodeId, at_ms: u64) -> bool {
        self.forget_expired(at_ms);
        let settings = self.settings;
        let index = match self.entries.iter().position(|e| e.shape == shape) {
            Some(i) => i,
            None => {
                if self.entries.len() >= MAX_ENTRIES {
                    self.evict_one(at_ms);
                }
                self.entries.push(Entry {
                    shape,
                    strikes: Vec::new(),
                    until_ms: None,
                });
                self.entries.len() - 1
            }
        };
        let Some(entry) = self.entries.get_mut(index) else {
            return false;
        };
        if entry.quarantined_at(at_ms) {
            return false;
        }
        entry
            .strikes
            .retain(|s| at_ms.saturating_sub(s.at_ms) <= settings.window_ms);
        entry.strikes.push(Strike { node, at_ms });
        let keep = settings.strikes.max(1) as usize;
        if entry.strikes.len() > keep {
            let extra = entry.strikes.len() - keep;
            entry.strikes.drain(..extra);
        }
        if entry.strikes.len() >= keep {
            entry.until_ms = Some(at_ms.saturating_add(settings.duration_ms));
            return true;
        }
        entry.until_ms = None;
        false
    }

    /// Until when (wall clock, ms) a request of this operation and hash
    /// is refused, if it is at `now_ms`. Costs one comparison when the
    /// list is empty, which is nearly always.
    pub fn refuses(&self, op: &str, hash: u64, now_ms: u64) -> Option<u64> {
        self.entries
            .iter()
            .find(|e| e.shape.hash == hash && e.shape.op == op && e.quarantined_at(now_ms))
            .and_then(|e| e.until_ms)
    }

    /// The shapes refused at `now_ms`.
    pub fn active(&self, now_ms: u64) -> impl Iterator<Item = &Entry> {
        self.entries
            .iter()
            .filter(move |e| e.quarantined_at(now_ms))
    }

    /// Lifts every quarantine and forgets every strike (`levee admin
    /// quarantine clear`, once the bug is fixed or the shape is known to
    /// be harmless).
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// Whether nothing is tracked.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Drops quarantines that have ended and strike lists the window has
    /// emptied.
    fn forget_expired(&mut self, now_ms: u64) {
        let window = self.settings.window_ms;
        self.entries.retain(|e| match e.until_ms {
            Some(until) => now_ms < until,
            None => now_ms.saturating_sub(e.latest_strike()) <= window,
        });
    }

    /// Makes room for one entry: a shape not (yet) quarantined goes first,
    /// the one struck longest ago; if every entry is quarantined, the one
    /// whose quarantine ends soonest.
    fn evict_one(&mut self, now_ms: u64) {
        let victim = self
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| !e.quarantined_at(now_ms))
            .min_by_key(|(_, e)| e.latest_strike())
            .or_else(|| {
                self.entries
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, e)| e.until_ms.unwrap_or(0))
            })
            .map(|(i, _)| i);
        if let Some(i) = victim {
            self.entries.remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn shape(op: &str, hash: u64) -> Shape {
        Shape {
            op: op.into(),
            hash,
        }
    }

    const MIN: u64 = 60_000;

    #[test]
    fn two_strikes_within_the_window_quarantine_a_shape_until_it_expires() {
        let mut q = Quarantine::default();
        assert!(!q.strike(shape("put", 7), 1, 1_000));
        assert_eq!(q.refuses("put", 7, 1_001), None, "one strike is a fluke");
        assert!(
            q.strike(shape("put", 7), 2, 2_000),
            "second strike, other node"
        );
        let until = 2_000 + q.settings.duration_ms;
        assert_eq!(q.refuses("put", 7, 2_001), Some(until));
        assert_eq!(q.refuses("get", 7, 2_001), None, "another op");
        assert_eq!(q.refuses("put", 8, 2_001), None, "another key");
        assert_eq!(q.refuses("put", 7, until), None, "expired");
        assert_eq!(q.active(2_001).count(), 1);
        assert_eq!(q.active(until).count(), 0);
    }

    #[test]
    fn strikes_further_apart_than_the_window_never_quarantine() {
        let mut q = Quarantine::default();
        let window = q.settings.window_ms;
        assert!(!q.strike(shape("put", 7), 1, 0));
        assert!(!q.strike(shape("put", 7), 1, window + 1));
        assert!(!q.strike(shape("put", 7), 1, 2 * window + 2));
        assert_eq!(q.refuses("put", 7, 2 * window + 3), None);
    }

    #[test]
    fn a_strike_on_a_quarantined_shape_does_not_extend_it() {
        let mut q = Quarantine::default();
        q.strike(shape("put", 7), 1, 0);
        q.strike(shape("put", 7), 1, 1);
        let until = q.refuses("put", 7, 2).unwrap();
        assert!(!q.strike(shape("put", 7), 3, 10 * MIN));
        assert_eq!(q.refuses("put", 7, 10 * MIN), Some(until));
    }

    #[test]
    fn clear_lifts_every_quarantine() {
        let mut q = Quarantine::default();
        q.strike(shape("put", 7), 1, 0);
        q.strike(shape("put", 7), 1, 1);
        q.clear();
        assert!(q.is_empty());
        assert_eq!(q.refuses("put", 7, 2), None);
    }

    #[test]
    fn a_full_list_drops_a_shape_that_is_only_struck_before_a_quarantined_one() {
        let mut q = Quarantine::default();
        q.strike(shape("put", 0), 1, 0);
        q.strike(shape("put", 0), 1, 1);
        for h in 1..MAX_ENTRIES as u64 {
            q.strike(shape("put", h), 1, 10 + h);
        }
        assert_eq!(q.entries.len(), MAX_ENTRIES);
        q.strike(shape("put", 999), 1, 1_000);
        assert_eq!(q.entries.len(), MAX_ENTRIES);
        assert!(q.refuses("put", 0, 1_001).is_some(), "kept the quarantined");
        assert!(
            !q.entries.iter().any(|e| e.shape.hash == 1),
            "dropped the oldest mere strike"
        );
    }

    proptest! {
        #[test]
        fn the_list_stays_bounded_and_refusals_match_the_strikes(
            strikes in proptest::collection::vec((0u64..200, 1u64..4, 0u64..5_000), 0..400),
            threshold in 1u32..4,
        ) {
            let mut q = Quarantine {
                settings: QuarantineSettings { strikes: threshold, window_ms: 1_000, duration_ms: 3_000 },
                entries: Vec::new(),
            };
            let mut now = 0;
            for (hash, node, step) in strikes {
                now += step;
                let quarantined = q.strike(shape("put", hash), node, now);
                prop_assert!(q.entries.len() <= MAX_ENTRIES);
                if quarantined {
                    prop_assert_eq!(q.refuses("put", hash, now), Some(now + 3_000));
                }
                for e in &q.entries {
                    prop_assert!(e.strikes.len() <= threshold as usize);
                    // A shape is refused only after `threshold` strikes
                    // inside one window.
                    if e.until_ms.is_some() {
                        let first = e.strikes.first().map_or(0, |s| s.at_ms);
                        let last = e.strikes.last().map_or(0, |s| s.at_ms);
                        prop_assert_eq!(e.strikes.len(), threshold as usize);
                        prop_assert!(last - first <= 1_000);
                    }
                }
            }
        }
    }
}
