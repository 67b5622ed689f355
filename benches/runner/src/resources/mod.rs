//! The leak soak's sampler: every second of the measured run, each node's
//! `/metrics` is read for the six figures a slow leak grows — resident
//! memory, heap in use, open descriptors, tasks alive on its runtime, protocol
//! connections holding a slot and bytes of hints held — into
//! `result.json` (`resources`), `resources.png` and, through
//! [`flatness`], a figure per node and series: the value at the end
//! against the value after warm-up. Opt-in with a scenario's
//! `[resources]` table (BENCHMARKS.md, "Leak soak").
//!
//! Fetching is [`sample`]; the figures are pure.

pub mod flatness;
pub mod replot;
mod summary;

pub use summary::section;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::prometheus::Scrape;
use super::server_figures::http_get_within;
use levee_node::tls::Transport;

/// Time one node gets to give its `/metrics` each second. Under the
/// sampling interval, so one round never runs into the next; a stopped
/// (SIGSTOP) node, which accepts the connection and never answers, is a
/// gap after it.
const ASK_TIMEOUT: Duration = Duration::from_millis(900);

/// One of the figures sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Series {
    /// `process_resident_memory_bytes`.
    RssBytes,
    /// `levee_heap_allocated_bytes`: bytes in live allocations (the
    /// nodes run on jemalloc), so growth of memory in use shows apart
    /// from pages an allocator kept.
    HeapBytes,
    /// `process_open_fds`.
    OpenFds,
    /// `levee_runtime_alive_tasks`.
    AliveTasks,
    /// `levee_open_connections`.
    OpenConnections,
    /// `levee_hints_pending_bytes`.
    HintBytes,
}

impl Series {
    /// Every series, in the order of the plot's panels and the tables'
    /// columns.
    pub const ALL: [Series; 6] = [
        Series::RssBytes,
        Series::HeapBytes,
        Series::OpenFds,
        Series::AliveTasks,
        Series::OpenConnections,
        Series::HintBytes,
    ];

    /// The node's metric it is read from.
    pub fn metric(self) -> &'static str {
        match self {
            Self::RssBytes => "process_resident_memory_bytes",
            Self::HeapBytes => "levee_heap_allocated_bytes",
            Self::OpenFds => "process_open_fds",
            Self::AliveTasks => "levee_runtime_alive_tasks",
            Self::OpenConnections => "levee_open_connections",
            Self::HintBytes => "levee_hints_pending_bytes",
        }
    }

    /// Its key in `result.json`.
    pub fn key(self) -> &'static str {
        match self {
            Self::RssBytes => "rss_bytes",
            Self::HeapBytes => "heap_bytes",
            Self::OpenFds => "open_fds",
            Self::AliveTasks => "alive_tasks",
            Self::OpenConnections => "open_connections",
            Self::HintBytes => "hint_bytes",
        }
    }

    /// Its name for humans.
    pub fn label(self) -> &'static str {
        match self {
            Self::RssBytes => "RSS",
            Self::HeapBytes => "heap in use",
            Self::OpenFds => "open fds",
            Self::AliveTasks => "tokio tasks",
            Self::OpenConnections => "connections",
            Self::HintBytes => "hint bytes",
        }
    }

    /// A value in the unit the reports use: MiB for memory, KiB for
    /// hints (a few MiB at most), counts as they are.
    pub fn show(self, v: f64) -> String {
        match self {
            Self::RssBytes | Self::HeapBytes => format!("{:.1} MiB", v / f64::from(1u32 << 20)),
            Self::HintBytes => format!("{:.0} KiB", v / 1024.0),
            Self::OpenFds | Self::AliveTasks | Self::OpenConnections => format!("{v:.0}"),
        }
    }
}

/// A scenario's `[resources]` table: sample the nodes every second and
/// judge each series flat or not.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourcesConfig {
    /// Seconds of a process's life before its reference window: caches,
    /// pools and sled's page cache fill, connections open. The reference
    /// ("after warm-up") is the median of `[warmup_s, warmup_s +
    /// window_s)` of the process's life.
    pub warmup_s: u64,
    /// Length of the reference window and of the final one (the last
    /// `window_s` seconds of the run): a median over a window, so one
    /// second of a fault's spike is not the figure.
    pub window_s: u64,
}

/// One node's samples: per series, one value per second of the run
/// (`None`: the node did not answer that second, a gap rather than a 0).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeSamples {
    /// The node (1-based).
    pub node: u8,
    /// Series key → values by second.
    #[serde(flatten)]
    pub series: BTreeMap<&'static str, Vec<Option<f64>>>,
}

impl NodeSamples {
    /// No sample yet: `seconds` gaps in every series.
    pub fn empty(node: u8, seconds: usize) -> Self {
        Self {
            node,
            series: Series::ALL
                .iter()
                .map(|s| (s.key(), vec![None; seconds]))
                .collect(),
        }
    }

    /// The values of `series`, by second.
    pub fn values(&self, series: Series) -> &[Option<f64>] {
        self.series.get(series.key()).map_or(&[], Vec::as_slice)
    }

    /// Records one scrape at `second` (past the end: dropped).
    pub fn record(&mut self, second: usize, scrape: &Scrape) {
        for s in Series::ALL {
            if let Some(slot) = self.series.get_mut(s.key()).and_then(|v| v.get_mut(second)) {
                *slot = value(scrape, s.metric());
            }
        }
    }
}

/// The value of an unlabelled metric in a scrape; `None` when the node
/// does not export it (an older build), never a 0 that would read as flat.
fn value(scrape: &Scrape, name: &str) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.name == name)
        .map(|s| s.value)
}

/// What `result.json` holds of a soak: the settings, the samples and the
/// figures.
#[derive(Debug, Clone, Serialize)]
pub struct Resources {
    /// The scenario's `[resources]`.
    pub config: ResourcesConfig,
    /// Every node's samples.
    pub nodes: Vec<NodeSamples>,
    /// One figure per node and series.
    pub flatness: Vec<flatness::Flatness>,
}

/// Reads every node's `/metrics` (`admin[i]` is node i + 1) once a second
/// from `start` for `seconds`, all nodes at once; returns the samples.
pub async fn sample(
    admin: Vec<String>,
    transport: Transport,
    start: Instant,
    seconds: u64,
) -> Vec<NodeSamples> {
    let len = usize::try_from(seconds).unwrap_or(usize::MAX);
    let mut nodes: Vec<NodeSamples> = (1..=admin.len())
        .map(|i| NodeSamples::empty(u8::try_from(i).unwrap_or(u8::MAX), len))
        .collect();
    let mut tick = tokio::time::interval_at(start, Duration::from_secs(1));
    // A round late past its second is skipped: a gap, not two samples
    // in one second.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let at = tick.tick().await;
        let second = usize::try_from(at.duration_since(start).as_secs()).unwrap_or(usize::MAX);
        if second >= len {
            return nodes;
        }
        let mut asks = JoinSet::new();
        for (i, addr) in admin.iter().enumerate() {
            let (addr, transport) = (addr.clone(), transport.clone());
            asks.spawn(async move {
                let text = http_get_within(&addr, "/metrics", ASK_TIMEOUT, &transport).await;
                (i, text.ok().map(|t| Scrape::parse(&t)))
            });
        }
        while let Some(done) = asks.join_next().await {
            if let Ok((i, Some(scrape))) = done
                && let Some(node) = nodes.get_mut(i)
            {
                node.record(second, &scrape);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scrape_fills_its_second_and_a_missing_metric_stays_a_gap() {
        let mut node = NodeSamples::empty(2, 3);
        let scrape = Scrape::parse(
            "# TYPE process_open_fds gauge\nprocess_open_fds 31\nprocess_resident_memory_bytes 2097152\nlevee_runtime_alive_tasks 120\nlevee_open_connections 9\n",
        );
        node.record(1, &scrape);
        node.record(7, &scrape);
        assert_eq!(node.values(Series::OpenFds), [None, Some(31.0), None]);
        assert_eq!(node.values(Series::AliveTasks)[1], Some(120.0));
        assert_eq!(node.values(Series::HintBytes), [None, None, None]);
        assert_eq!(Series::RssBytes.show(2_097_152.0), "2.0 MiB");
        let json = serde_json::to_value(&node).unwrap();
        assert_eq!(json["node"], 2);
        assert_eq!(json["open_connections"][1], 9.0);
        assert!(json["hint_bytes"][1].is_null());
    }
}
