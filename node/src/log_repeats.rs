//! Repeated warnings and errors, logged once per interval with a count.
//!
//! A dead peer makes openraft log the same `Unreachable` error every
//! 500 ms, and a flood of bad connections the same refusal: during an
//! incident such lines bury the few that say something new, and they fill
//! disks. An event at WARN or ERROR whose text (target and fields) was
//! seen less than an interval before is dropped and counted, and once an
//! interval the node logs a summary per such line ("N more like this"):
//! a line that keeps coming is one line per interval, never silence, and
//! one that stopped for an interval is logged again as new.
//!
//! [`Repeats`] is the pure decision (time passed in); [`RepeatLimit`]
//! applies it to `tracing` events as a layer whose verdict holds for every
//! layer of the subscriber.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// Distinct lines remembered; a flood of ever-new texts past this is
/// logged, not tracked (the limit saves memory, never hides a new line).
pub const MAX_TRACKED: usize = 1024;
/// A line's text is kept (for its summary) up to this many bytes.
const SAMPLE_BYTES: usize = 300;
/// The target of the summary lines, which are never limited themselves.
pub const SUMMARY_TARGET: &str = "levee_node::log_repeats";

/// What was dropped of one line since its last summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The line's level.
    pub level: Level,
    /// The line as first logged (target and fields, shortened).
    pub sample: String,
    /// How many times it came again and was dropped.
    pub dropped: u64,
}

#[derive(Debug)]
struct Entry {
    seen_at: Instant,
    level: Level,
    sample: String,
    dropped: u64,
}

/// The pure decision: which repeats to log, which to count.
#[derive(Debug)]
pub struct Repeats {
    interval: Duration,
    entries: HashMap<u64, Entry>,
}

impl Repeats {
    /// Lines repeated within `interval` dropped and counted.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            entries: HashMap::new(),
        }
    }

    /// Whether the line keyed `key` is logged now: not if it was seen
    /// less than an interval ago. `sample` describes it and is only called
    /// for a line not tracked yet.
    pub fn admit(
        &mut self,
        key: u64,
        level: Level,
        sample: impl FnOnce() -> String,
        now: Instant,
    ) -> bool {
        if let Some(entry) = self.entries.get_mut(&key) {
            let quiet = now.saturating_duration_since(entry.seen_at) >= self.interval;
            entry.seen_at = now;
            if quiet {
                return true;
            }
            entry.dropped += 1;
            return false;
        }
        if self.entries.len() >= MAX_TRACKED {
            self.forget_idle(now);
            if self.entries.len() >= MAX_TRACKED {
                return true;
            }
        }
        self.entries.insert(
            key,
            Entry {
                seen_at: now,
                level,
                sample: sample(),
                dropped: 0,
            },
        );
        true
    }

    /// What was dropped since the last call, a summary per line; lines
    /// quiet for two intervals with nothing dropped are forgotten.
    pub fn summaries(&mut self, now: Instant) -> Vec<Summary> {
        let mut out = Vec::new();
        for entry in self.entries.values_mut() {
            if entry.dropped > 0 {
                out.push(Summary {
                    level: entry.level,
                    sample: entry.sample.clone(),
                    dropped: std::mem::take(&mut entry.dropped),
                });
            }
        }
        self.forget_idle(now);
        out
    }

    fn forget_idle(&mut self, now: Instant) {
        let idle = self.interval.saturating_mul(2);
        self.entries
            .retain(|_, e| e.dropped > 0 || now.saturating_duration_since(e.seen_at) < idle);
    }

    /// Lines tracked now.
    pub fn tracked(&self) -> usize {
        self.entries.len()
    }
}

/// The `tracing` layer: drops a WARN or ERROR event repeated within the
/// interval (for every layer, the formatter included). Clones share state.
#[derive(Debug, Clone)]
pub struct RepeatLimit {
    repeats: Arc<Mutex<Repeats>>,
}

impl RepeatLimit {
    /// Warnings and errors repeated within `interval` dropped and counted.
    pub fn new(interval: Duration) -> Self {
        Self {
            repeats: Arc::new(Mutex::new(Repeats::new(interval))),
        }
    }

    /// What was dropped since the last call (see [`Repeats::summaries`]).
    pub fn summaries(&self) -> Vec<Summary> {
        match self.repeats.lock() {
            Ok(mut repeats) => repeats.summaries(Instant::now()),
            Err(_) => Vec::new(),
        }
    }

    /// Logs the summaries, each at its line's level; called once an
    /// interval.
    pub fn log_summaries(&self, interval: Duration) {
        for s in self.summaries() {
            let every = humantime::format_duration(interval);
            if s.level == Level::ERROR {
                tracing::error!(target: SUMMARY_TARGET, dropped = s.dropped, "{} more like this in the last {every}: {}", s.dropped, s.sample);
            } else {
                tracing::warn!(target: SUMMARY_TARGET, dropped = s.dropped, "{} more like this in the last {every}: {}", s.dropped, s.sample);
            }
        }
    }
}

impl<S: Subscriber> Layer<S> for RepeatLimit {
    fn event_enabled(&self, event: &Event<'_>, _ctx: Context<'_, S>) -> bool {
        let meta = event.metadata();
        // Levels order from ERROR (most severe) up: INFO and finer pass.
        if *meta.level() > Level::WARN || meta.target() == SUMMARY_TARGET {
            return true;
        }
        let mut text = Text(String::with_capacity(128));
        let _ = write!(text.0, "{}:", meta.target());
        event.record(&mut text);
        let key = xxhash_rust::xxh3::xxh3_64(text.0.as_bytes());
        let Ok(mut repeats) = self.repeats.lock() else {
            return true;
        };
        repeats.admit(key, *meta.level(), || shorten(text.0), Instant::now())
    }
}

/// An event's fields as text: what makes two lines the same.
struct Text(String);

impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value}");
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}

fn shorten(mut text: String) -> String {
    if text.len() > SAMPLE_BYTES {
        let mut cut = SAMPLE_BYTES;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn a_line_repeated_every_half_second_is_one_line_per_interval() {
        let start = Instant::now();
        let interval = Duration::from_secs(30);
        let mut repeats = Repeats::new(interval);
        let mut lines = 0;
        let mut dropped = 0;
        // A dead peer: the same error every 500 ms for 35 s (the 72 lines
        // the issue counted), with the summaries logged every interval.
        for i in 0..70u32 {
            let now = start + Duration::from_millis(500) * i;
            if repeats.admit(1, Level::ERROR, || "peer 3 unreachable".into(), now) {
                lines += 1;
            }
            if i > 0
                && (Duration::from_millis(500) * i)
                    .as_millis()
                    .is_multiple_of(interval.as_millis())
            {
                for s in repeats.summaries(now) {
                    assert_eq!(s.sample, "peer 3 unreachable");
                    assert_eq!(s.level, Level::ERROR);
                    lines += 1;
                    dropped += s.dropped;
                }
            }
        }
        assert_eq!(lines, 2, "the first, and a summary at 30 s");
        assert_eq!(dropped, 60);
        let rest = repeats.summaries(start + Duration::from_secs(35));
        assert_eq!(rest.iter().map(|s| s.dropped).sum::<u64>(), 9);
        // Counted once: the next summary has nothing new.
        assert!(
            repeats
                .summaries(start + Duration::from_secs(36))
                .is_empty()
        );
        // Quiet for an interval: the next one is news, logged again.
        assert!(repeats.admit(
            1,
            Level::ERROR,
            String::new,
            start + Duration::from_secs(70)
        ));
    }

    #[test]
    fn different_lines_are_limited_separately() {
        let now = Instant::now();
        let mut repeats = Repeats::new(SECOND);
        assert!(repeats.admit(1, Level::WARN, || "peer 2".into(), now));
        assert!(repeats.admit(2, Level::WARN, || "peer 3".into(), now));
        assert!(!repeats.admit(1, Level::WARN, || "peer 2".into(), now));
        assert!(!repeats.admit(2, Level::WARN, || "peer 3".into(), now));
        assert_eq!(repeats.summaries(now).len(), 2);
    }

    #[test]
    fn quiet_lines_are_forgotten_and_the_table_is_bounded() {
        let start = Instant::now();
        let mut repeats = Repeats::new(SECOND);
        for key in 0..MAX_TRACKED as u64 {
            assert!(repeats.admit(key, Level::WARN, String::new, start));
        }
        // Full: a new line is still logged, just not tracked.
        let new = MAX_TRACKED as u64;
        assert!(repeats.admit(new, Level::WARN, String::new, start));
        assert!(repeats.admit(new, Level::WARN, String::new, start));
        assert_eq!(repeats.tracked(), MAX_TRACKED);
        // Two intervals later the quiet ones are gone.
        assert!(repeats.summaries(start + 3 * SECOND).is_empty());
        assert_eq!(repeats.tracked(), 0);
    }

    #[test]
    fn samples_are_cut_on_a_character_boundary() {
        let long = "é".repeat(SAMPLE_BYTES);
        let cut = shorten(long);
        assert!(cut.len() <= SAMPLE_BYTES + '…'.len_utf8());
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn the_layer_drops_repeats_for_every_layer_and_passes_info() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tracing_subscriber::layer::SubscriberExt;

        #[derive(Clone, Default)]
        struct Count(Arc<AtomicUsize>);
        impl<S: Subscriber> Layer<S> for Count {
            fn on_event(&self, _: &Event<'_>, _: Context<'_, S>) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        let count = Count::default();
        let limit = RepeatLimit::new(Duration::from_secs(3600));
        let subscriber = tracing_subscriber::registry()
            .with(limit.clone())
            .with(count.clone());
        tracing::subscriber::with_default(subscriber, || {
            for _ in 0..5 {
                tracing::error!(peer = 3, "unreachable");
                tracing::error!(peer = 4, "unreachable");
                tracing::info!("progress");
            }
        });
        // Two distinct errors once each, five infos.
        assert_eq!(count.0.load(Ordering::Relaxed), 2 + 5);
        let mut summaries = limit.summaries();
        summaries.sort_by(|a, b| a.sample.cmp(&b.sample));
        assert_eq!(summaries.len(), 2);
        assert_eq!(summaries[0].dropped, 4);
        assert!(summaries[0].sample.contains("peer=3"), "{:?}", summaries[0]);
    }
}
