//! Startup timing: when each phase of a node's start was reached, measured
//! from process start, for the startup log lines and `/metrics` (design
//! §9: restart-to-first-served is measured against data size).
//!
//! Recording is a `OnceLock` per phase: the first mark wins, later marks of
//! the same phase are ignored, and readers never block. Time is a
//! parameter of [`Startup::mark_at`], so tests place phases by hand.

use std::fmt::Write;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::admission::Admission;
use crate::metrics::exposition::{Exposition, Kind};
use crate::raft::Cluster;
use crate::storage::Storage;

/// A point in a node's start, in the order they are reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The admin port is bound: `/health/live` answers from here on.
    AdminListening,
    /// Storage is open: its layout read and the hint instance open (sled's
    /// own recovery; levee scans no data) and the hint queue counted. Data
    /// shards open on their first touch or in the background
    /// ([`Phase::StorageWarm`]), so this does not grow with the data.
    StorageOpen,
    /// The protocol port is bound and accepting.
    ProtocolListening,
    /// The cluster map is known: for a restarted node the copy persisted
    /// in its metadata (Raft runs, no election awaited); for a joining
    /// node the first map replicated to it. The node can route.
    MapLoaded,
    /// `/health/ready` answers 200.
    Ready,
    /// This node has applied the Raft log up to the commit index its
    /// leader announced in the first `AppendEntries` it received after
    /// starting (or, leading, has applied an entry of its own term). From
    /// here on it routes with the map the rest of the cluster has.
    MapCurrent,
    /// The first foreground request (a client or replica read or write)
    /// answered successfully.
    FirstServed,
    /// Every storage shard is open, by first touches and the background
    /// warm-up started at ready. Reached after ready, in any order with
    /// the two phases before it.
    StorageWarm,
}

impl Phase {
    /// Every phase, in order.
    pub const ALL: [Phase; 8] = [
        Phase::AdminListening,
        Phase::StorageOpen,
        Phase::ProtocolListening,
        Phase::MapLoaded,
        Phase::Ready,
        Phase::MapCurrent,
        Phase::FirstServed,
        Phase::StorageWarm,
    ];

    /// The label in `/metrics` and the stem of the log field
    /// (`<name>_ms`).
    pub fn name(self) -> &'static str {
        match self {
            Phase::AdminListening => "admin_listening",
            Phase::StorageOpen => "storage_open",
            Phase::ProtocolListening => "protocol_listening",
            Phase::MapLoaded => "map_loaded",
            Phase::Ready => "ready",
            Phase::MapCurrent => "map_current",
            Phase::FirstServed => "first_served",
            Phase::StorageWarm => "storage_warm",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// When each phase of this start was reached.
#[derive(Debug)]
pub struct Startup {
    /// Taken first thing in `main`: the closest the process gets to its
    /// own start (what runs before `main` is the dynamic loader, well
    /// under a millisecond).
    started: Instant,
    /// The same moment on the wall clock, so that a benchmark runner can
    /// line phases up with its own clock (the time it killed or started
    /// the process).
    started_unix: f64,
    /// Whether the data directory already held a node (a restart), as
    /// opposed to a first start.
    restart: bool,
    reached: [OnceLock<Duration>; Phase::ALL.len()],
    /// The node's storage once open, for its shard gauges.
    storage: OnceLock<Storage>,
}

impl Startup {
    /// A start that began at `started` (`started_at` on the wall clock).
    pub fn new(started: Instant, started_at: SystemTime, restart: bool) -> Self {
        Self {
            started,
            started_unix: started_at
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64(),
            restart,
            reached: Default::default(),
            storage: OnceLock::new(),
        }
    }

    /// Adds the storage's shard gauges to [`Startup::render`].
    pub fn attach_storage(&self, storage: Storage) {
        let _ = self.storage.set(storage);
    }

    /// Whether this is a restart on existing data.
    pub fn is_restart(&self) -> bool {
        self.restart
    }

    /// Records that `phase` was reached now; returns its time from start.
    pub fn mark(&self, phase: Phase) -> Duration {
        self.mark_at(phase, Instant::now())
    }

    /// Records that `phase` was reached at `at`. The first mark of a phase
    /// wins; the time recorded is returned.
    pub fn mark_at(&self, phase: Phase, at: Instant) -> Duration {
        *self.reached[phase.index()].get_or_init(|| at.saturating_duration_since(self.started))
    }

    /// When `phase` was reached, if it was.
    pub fn reached(&self, phase: Phase) -> Option<Duration> {
        self.reached[phase.index()].get().copied()
    }

    /// The phases reached so far as `name_ms=12.3` pairs in phase order,
    /// one space apart: the body of the startup log lines.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for phase in Phase::ALL {
            if let Some(at) = self.reached(phase) {
                if !out.is_empty() {
                    out.push(' ');
                }
                let _ = write!(out, "{}_ms={:.1}", phase.name(), millis(at));
            }
        }
        out
    }

    /// Writes the startup timeline for `/metrics`. A phase not reached
    /// yet has no sample, so "absent" means "not yet", never zero.
    pub fn render(&self, text: &mut Exposition) {
        let mut phases = text.family(
            "levee_startup_phase_seconds",
            Kind::Gauge,
            "Seconds from process start until the phase was reached.",
        );
        for phase in Phase::ALL {
            if let Some(at) = self.reached(phase) {
                phases.sample(&[("phase", phase.name())], at.as_secs_f64());
            }
        }
        text.single(
            "levee_startup_restart",
            Kind::Gauge,
            "1 if this process started on a data directory that already held a node.",
            u64::from(self.restart),
        );
        text.single(
            "process_start_time_seconds",
            Kind::Gauge,
            "Start time of the process since the Unix epoch in seconds.",
            self.started_unix,
        );
        if let Some(storage) = self.storage.get() {
            let (open, all) = (storage.shards_open(), storage.shards());
            let mut shards = text.family(
                "levee_storage_shards",
                Kind::Gauge,
                "Storage shards (sled instances) of the data directory, by whether they are open yet.",
            );
            shards.sample(&[("state", "open")], u64::from(open));
            shards.sample(&[("state", "closed")], u64::from(all.saturating_sub(open)));
            text.single(
                "levee_storage_damaged_records_total",
                Kind::Counter,
                "Stored records found damaged (crc or header fails) by a read, a write or a scan; each is treated as absent and replaced from a replica.",
                storage.damaged_records(),
            );
            if let Some(journal) = storage.journal_stats() {
                text.single(
                    "levee_storage_journal_syncs_total",
                    Kind::Counter,
                    "Group commits written (one journal sync each, shared by every write in the batch).",
                    journal.syncs,
                );
                text.single(
                    "levee_storage_journal_bytes_total",
                    Kind::Counter,
                    "Bytes of records appended to the write-ahead journal.",
                    journal.bytes,
                );
                text.single(
                    "levee_storage_journal_closed_segments",
                    Kind::Gauge,
                    "Closed journal segments not yet trimmed (each 8 MiB at most): they wait for a checkpoint, or for a shard not yet open.",
                    journal.closed_segments,
                );
            }
            text.single(
                "levee_storage_shard_open_seconds_total",
                Kind::Counter,
                "Seconds spent opening storage shards since the process started.",
                storage.shard_open_seconds(),
            );
        }
    }
}

/// Records the phases reached after ready (map current, first served)
/// and logs the whole timeline as one line once both are: "levee-node
/// started: admin_listening_ms=… … first_served_ms=…". Each is in
/// `/metrics` as soon as it is reached.
pub async fn watch(startup: Arc<Startup>, cluster: Arc<Cluster>, admission: Arc<Admission>) {
    let current = async {
        let progress = cluster.wait_map_current().await?;
        startup.mark(Phase::MapCurrent);
        Some(progress)
    };
    let served = async {
        let first = admission.first_served().await?;
        startup.mark_at(Phase::FirstServed, first.at);
        Some(first)
    };
    if let (Some(progress), Some(first)) = tokio::join!(current, served) {
        tracing::info!(
            restart = startup.is_restart(),
            first_op = first.op.name(),
            applied = progress.applied,
            announced = progress.announced,
            "levee-node started: {}",
            startup.summary()
        );
    }
}

/// How long after ready the storage warm-up waits for a first request
/// before it starts anyway.
const WARM_UP_AFTER: Duration = Duration::from_millis(250);

/// Opens every storage shard not opened by a request yet, one at a time,
/// and logs when all are: the warm-up after ready (nothing waits for it).
/// It starts once the node has served its first request (or
/// [`WARM_UP_AFTER`] passed), because shards open one at a time and the
/// first requests' shards should not queue behind the warm-up's.
pub async fn warm_storage(startup: Arc<Startup>, storage: Storage, admission: Arc<Admission>) {
    let _ = tokio::time::timeout(WARM_UP_AFTER, admission.first_served()).await;
    match storage.warm_up().await {
        Ok(opened) => {
            let at = startup.mark(Phase::StorageWarm);
            tracing::info!(
                shards = storage.shards(),
                opened_in_background = opened,
                shard_open_ms = format!("{:.1}", storage.shard_open_seconds() * 1000.0),
                "storage warm: every shard open {:.1} ms after process start",
                millis(at)
            );
        }
        Err(e) => tracing::error!(
            error = %e,
            "opening storage shards in the background failed; each opens on its first request"
        ),
    }
}

/// Waits, off the async threads, until a writer opens the FIFO at
/// `path` (the node's hidden `--storage-gate`, for tests).
pub async fn wait_at_gate(path: &Path) -> std::io::Result<()> {
    tracing::info!(gate = %path.display(), "waiting at the storage gate");
    let path = path.to_path_buf();
    // Opening a FIFO for reading blocks until a writer opens it.
    tokio::task::spawn_blocking(move || std::fs::File::open(path).map(drop))
        .await
        .map_err(std::io::Error::other)?
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn startup() -> (Startup, Instant) {
        let t0 = Instant::now();
        (
            Startup::new(t0, UNIX_EPOCH + Duration::from_secs(100), true),
            t0,
        )
    }

    #[test]
    fn phases_are_timed_from_process_start_and_the_first_mark_wins() {
        let (s, t0) = startup();
        let at = s.mark_at(Phase::StorageOpen, t0 + Duration::from_millis(40));
        assert_eq!(at, Duration::from_millis(40));
        let again = s.mark_at(Phase::StorageOpen, t0 + Duration::from_millis(90));
        assert_eq!(again, Duration::from_millis(40), "a second mark is ignored");
        assert_eq!(s.reached(Phase::Ready), None);
    }

    #[test]
    fn the_summary_lists_reached_phases_in_order() {
        let (s, t0) = startup();
        // Marked out of order: the summary still reads in phase order.
        s.mark_at(Phase::Ready, t0 + Duration::from_micros(45_200));
        s.mark_at(Phase::AdminListening, t0 + Duration::from_micros(1_500));
        assert_eq!(s.summary(), "admin_listening_ms=1.5 ready_ms=45.2");
    }

    #[test]
    fn metrics_show_only_reached_phases_and_the_wall_clock_start() {
        let (s, t0) = startup();
        s.mark_at(Phase::FirstServed, t0 + Duration::from_millis(120));
        let mut text = Exposition::new();
        s.render(&mut text);
        let text = text.finish();
        assert!(
            text.contains("levee_startup_phase_seconds{phase=\"first_served\"} 0.12\n"),
            "{text}"
        );
        assert!(!text.contains("phase=\"ready\""), "{text}");
        assert!(text.contains("levee_startup_restart 1\n"), "{text}");
        assert!(text.contains("process_start_time_seconds 100\n"), "{text}");
    }
}
