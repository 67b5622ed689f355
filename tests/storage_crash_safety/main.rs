//! Crash safety of storage (issue 20): a child process writes to a
//! node's data directory through `Storage` with `per_write` durability
//! and is SIGKILLed at a random moment — while it starts, while its
//! shards open and replay their logs, while it writes — and the directory
//! is reopened after every kill. The same directory carries on from run
//! to run, so whatever a kill leaves behind meets the next one. Every
//! tenth run also kills a writer creating a directory of its own (its
//! layout, hint instance and first shards).
//!
//! After each kill: the directory must open (all its shards); every
//! acknowledged write must read back as written, or as a newer write of
//! the same key's writer; no key may hold a version nobody wrote, bytes
//! its write did not store, or anything older than what an earlier reopen
//! read back; records failing their crc are counted. A directory that
//! does not open is counted and replaced by a fresh one, so a soak counts
//! every failure; when any failed, the test's directory is kept for a look
//! (its path is printed).
//!
//! The writer is `examples/storage_crash`; the checker (`checker.rs`) is
//! pure and tested with a loss of its own. CI runs 40 runs (~30 s in a
//! debug build); the soak (BENCHMARKS.md, "Crash safety of storage"):
//!
//! ```text
//! LEVEE_CRASH_ITERATIONS=1000 cargo test --release --test storage_crash_safety -- --nocapture
//! ```
//!
//! `LEVEE_CRASH_SEED=<seed>` replays a run's choices (its kill moments,
//! keys, operations and values; the timing of the writes is the machine's).

#[path = "../common/mod.rs"]
mod common;
#[path = "../../examples/storage_crash/protocol.rs"]
mod protocol;

mod checker;
mod child;

use std::hash::BuildHasher;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use checker::{History, Verdict, Violation};
use child::{Program, Reopen, WriterRun};
use common::env_or;
use protocol::Line;

/// How long after the first acknowledged write a kill may land: long
/// enough for many group flushes (a debug build acknowledges ~2,000
/// writes a second here), short enough for a thousand runs in minutes.
const WRITE_SPAN_MS: u64 = 400;
/// The earliest kills: within this of the spawn the child is still being
/// loaded, reading `LAYOUT` and opening the hint instance.
const START_SPAN_MS: u64 = 3;
/// Every this many runs, a writer creating a fresh directory is killed too.
const CREATE_EVERY: u64 = 10;
/// Violations listed in a failure message; the count says how many more.
const SHOWN: usize = 20;

#[test]
fn acknowledged_writes_survive_sigkill_at_random_moments() {
    let knobs = Knobs::from_env();
    println!("storage_crash_safety: {knobs:?}");
    let work = tempfile::tempdir().unwrap();
    let program = Program {
        exe: common::example("storage_crash"),
        stderr: work.path().join("child.stderr"),
    };
    let mut soak = Soak::new(knobs.seed, work.path());
    for run in 1..=knobs.iterations {
        soak.run(&program, run);
        if run.is_multiple_of(CREATE_EVERY) {
            soak.create(&program, run);
        }
    }
    let summary = soak.summary();
    println!("{summary}");
    let failures: Vec<String> = soak
        .open_failures
        .iter()
        .chain(&soak.creation_failures)
        .chain(&soak.writer_failures)
        .cloned()
        .chain(soak.verdict.violations.iter().map(Violation::to_string))
        .collect();
    if !failures.is_empty() {
        println!(
            "the directories that failed are kept in {}",
            work.keep().display()
        );
    }
    assert!(
        failures.is_empty(),
        "seed {} (replay with LEVEE_CRASH_SEED={}): {} failures, first {SHOWN}:\n{}\n{summary}",
        knobs.seed,
        knobs.seed,
        failures.len(),
        failures[..failures.len().min(SHOWN)].join("\n"),
    );
    assert!(
        soak.acks > 0 && soak.verdict.acks_checked > 0,
        "nothing was acknowledged and checked: {summary}"
    );
}

/// What the environment asks for; the defaults fit a normal `cargo test`.
#[derive(Debug)]
struct Knobs {
    /// `LEVEE_CRASH_ITERATIONS`: writer runs killed, default 40.
    iterations: u64,
    /// `LEVEE_CRASH_SEED`, default a fresh one.
    seed: u64,
}

impl Knobs {
    fn from_env() -> Self {
        // std's hasher is keyed at random: a fresh seed for every run.
        let fresh = std::hash::RandomState::new().hash_one(std::process::id());
        Self {
            iterations: env_or("LEVEE_CRASH_ITERATIONS", 40),
            seed: env_or("LEVEE_CRASH_SEED", fresh),
        }
    }
}

/// Where in a writer's life a kill lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Moment {
    /// Loading, reading the layout, opening the hint instance.
    Start,
    /// Opening shards (sled replays each one's log) and the first flushes.
    Open,
    /// Writing, with acknowledgements going out.
    Writing,
}

/// When to kill run `run`, and where that falls: 15% of kills in the
/// first few milliseconds, 25% before the first acknowledgement (`open`:
/// how long the previous run took to its first), the rest while writing.
fn kill_moment(seed: u64, run: u64, open: Duration) -> (Duration, Moment) {
    let pick = protocol::draw(&[seed, run, 0x6b69_6c6c]);
    let within = |ms: u64| Duration::from_micros((pick >> 8) % (ms * 1000 + 1));
    match pick % 100 {
        0..15 => (within(START_SPAN_MS), Moment::Start),
        15..40 => (within(open.as_millis() as u64), Moment::Open),
        _ => (open + within(WRITE_SPAN_MS), Moment::Writing),
    }
}

/// The whole run: the directory under test, what it has been told, and
/// the tallies.
struct Soak {
    seed: u64,
    work: PathBuf,
    /// The directory carried from run to run.
    dir: PathBuf,
    history: History,
    /// How long the latest run took from its spawn to its first
    /// acknowledgement: where the next `Open` kill falls.
    open: Duration,
    /// Likewise for a writer creating a directory: the layout, the hint
    /// instance and the first shards are made before its first
    /// acknowledgement, so its kills fall up to half as late again.
    create_first_ack: Duration,
    started: Instant,
    runs: u64,
    creations: u64,
    kills: [u64; 3],
    acks: u64,
    failed_writes: u64,
    verdict: Verdict,
    /// Reopens of the carried directory that failed.
    open_failures: Vec<String>,
    /// Reopens of a fresh directory whose creation was killed that failed.
    creation_failures: Vec<String>,
    writer_failures: Vec<String>,
}

impl Soak {
    fn new(seed: u64, work: &Path) -> Self {
        Self {
            seed,
            work: work.to_path_buf(),
            dir: work.join("dir-0"),
            history: History::default(),
            open: Duration::from_millis(50),
            create_first_ack: Duration::from_millis(30),
            started: Instant::now(),
            runs: 0,
            creations: 0,
            kills: [0; 3],
            acks: 0,
            failed_writes: 0,
            verdict: Verdict::default(),
            open_failures: Vec::new(),
            creation_failures: Vec::new(),
            writer_failures: Vec::new(),
        }
    }

    /// One writer run on the carried directory, killed, then a reopen.
    fn run(&mut self, program: &Program, run: u64) {
        let (kill_after, moment) = kill_moment(self.seed, run, self.open);
        let writer = program.run(&self.dir, run, self.seed, kill_after);
        self.runs += 1;
        self.kills[moment as usize] += 1;
        if let Some(first) = writer.first(|l| matches!(l, Line::Ack { .. })) {
            self.open = first;
        }
        let lines: Vec<Line> = writer.lines.iter().map(|(_, l)| l.clone()).collect();
        let (counts, violations) = self.history.record(&lines);
        self.acks += counts.acks;
        self.failed_writes += counts.failed;
        self.verdict.violations.extend(violations);
        let what = format!("run {run} (killed at {kill_after:?}, {moment:?})");
        if let Some(why) = self.writer_failed(program, &writer) {
            self.fail(&what, &why);
            return;
        }
        let verdict = match program.reopen(&self.dir) {
            Reopen::Opened(lines) => self.history.check(&lines),
            Reopen::Failed(why) => return self.fail(&what, &format!("reopen: {why}")),
        };
        println!(
            "{what}: {} acks, {} failed writes; reopened: {} acks checked, {} lost, \
             {} crc errors, {} violations",
            counts.acks,
            counts.failed,
            verdict.acks_checked,
            verdict.lost,
            verdict.crc_errors,
            verdict.violations.len()
        );
        for violation in &verdict.violations {
            println!("  {what}: {violation}");
        }
        self.verdict.add(verdict);
    }

    /// A writer killed while it creates a directory of its own, which must
    /// then open (and hold no acknowledged write it lost).
    fn create(&mut self, program: &Program, run: u64) {
        let dir = self.work.join(format!("create-{run}"));
        let pick = protocol::draw(&[self.seed, run, 0x6e_6577]);
        let span_us = self.create_first_ack.as_micros() as u64 * 3 / 2;
        let kill_after = Duration::from_micros(pick % (span_us + 1));
        let writer = program.run(&dir, run, self.seed, kill_after);
        self.creations += 1;
        if let Some(first) = writer.first(|l| matches!(l, Line::Ack { .. })) {
            self.create_first_ack = first;
        }
        let what = format!("creation {run} (killed at {kill_after:?})");
        let mut history = History::default();
        let lines: Vec<Line> = writer.lines.iter().map(|(_, l)| l.clone()).collect();
        let (counts, violations) = history.record(&lines);
        self.verdict.violations.extend(violations);
        let failed = self
            .writer_failed(program, &writer)
            .or_else(|| match program.reopen(&dir) {
                Reopen::Opened(lines) => {
                    self.verdict.add(history.check(&lines));
                    None
                }
                Reopen::Failed(why) => Some(format!("reopen: {why}")),
            });
        match failed {
            Some(why) => {
                let failure = format!("{what}: DOES NOT OPEN: {why}; in {}", dir.display());
                println!("{failure}");
                self.creation_failures.push(failure);
            }
            None => {
                println!("{what}: {} acks; reopened", counts.acks);
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
    }

    /// Why a writer run failed by itself, if it did: it could not open the
    /// directory, printed what it must not, or ended without our kill.
    fn writer_failed(&mut self, program: &Program, writer: &WriterRun) -> Option<String> {
        let opened = writer.lines.iter().find_map(|(_, l)| match l {
            Line::OpenFailed { error } => Some(error.clone()),
            _ => None,
        });
        if let Some(error) = opened {
            return Some(format!("the writer could not open it: {error}"));
        }
        if !writer.garbled.is_empty() || writer.exited.is_some() {
            let why = format!(
                "the writer ended by itself ({:?}), garbled lines {:?}; stderr: {}",
                writer.exited,
                writer.garbled,
                program.stderr_text()
            );
            self.writer_failures.push(why);
        }
        None
    }

    /// The carried directory failed to open: counted, set aside, replaced
    /// by a fresh one with a fresh history.
    fn fail(&mut self, what: &str, why: &str) {
        let kept = self
            .work
            .join(format!("failed-{}", self.open_failures.len()));
        let _ = std::fs::rename(&self.dir, &kept);
        let failure = format!("{what}: DOES NOT OPEN: {why}; in {}", kept.display());
        println!("{failure}");
        self.open_failures.push(failure);
        self.dir = self.work.join(format!("dir-{}", self.open_failures.len()));
        self.history = History::default();
    }

    fn summary(&self) -> String {
        let v = &self.verdict;
        format!(
            "storage crash safety, seed {}: {} runs killed (start {}, open {}, writing {}), \
             the directory failed to open {} times; {} fresh directories killed while \
             created, {} failed to open; \
             {} writes acknowledged, {} failed; {} acknowledged writes checked, {} lost; \
             {} crc errors, {} header errors ({} acknowledged writes behind them); \
             {} violations; {} writer failures; {:.1} s",
            self.seed,
            self.runs,
            self.kills[Moment::Start as usize],
            self.kills[Moment::Open as usize],
            self.kills[Moment::Writing as usize],
            self.open_failures.len(),
            self.creations,
            self.creation_failures.len(),
            self.acks,
            self.failed_writes,
            v.acks_checked,
            v.lost,
            v.crc_errors,
            v.header_errors,
            v.acks_behind_corrupt,
            v.violations.len(),
            self.writer_failures.len(),
            self.started.elapsed().as_secs_f64(),
        )
    }
}

#[test]
fn kills_fall_at_start_open_and_writing_alike_for_a_seed() {
    let open = Duration::from_millis(80);
    let moments: Vec<(Duration, Moment)> = (1..=400).map(|run| kill_moment(7, run, open)).collect();
    assert_eq!(
        moments,
        (1..=400)
            .map(|run| kill_moment(7, run, open))
            .collect::<Vec<_>>()
    );
    for moment in [Moment::Start, Moment::Open, Moment::Writing] {
        let share = moments.iter().filter(|(_, m)| *m == moment).count();
        assert!(share > 40, "{moment:?}: {share} of 400");
    }
    for (at, moment) in moments {
        let (lo, hi) = match moment {
            Moment::Start => (0, START_SPAN_MS),
            Moment::Open => (0, 80),
            Moment::Writing => (80, 80 + WRITE_SPAN_MS),
        };
        let ms = at.as_secs_f64() * 1000.0;
        assert!(
            (lo as f64..=hi as f64).contains(&ms),
            "{moment:?} at {ms} ms"
        );
    }
}

#[test]
fn the_protocol_lines_round_trip() {
    let key = protocol::Key {
        writer: 3,
        index: 17,
    };
    let version = protocol::version(5, key, 9);
    let lines = [
        Line::Ready,
        Line::Start { key, version },
        Line::Ack {
            key,
            version,
            stale: Some(protocol::version(6, key, 1)),
        },
        Line::Failed {
            key,
            version,
            error: "flush to disk failed:  two spaces".into(),
        },
        Line::Record {
            key,
            version,
            found: protocol::Found::Value {
                len: 12,
                intact: false,
            },
        },
        Line::Absent { key },
        Line::Corrupt {
            key,
            crc: true,
            error: "record value fails its crc32c check".into(),
        },
        Line::Stray {
            partition: 7,
            key: "\\x00junk".into(),
        },
        Line::OpenFailed {
            error: "one\ntwo".into(),
        },
        Line::Verified,
    ];
    for line in lines {
        let text = line.to_string();
        assert!(!text.contains('\n'), "{text:?}");
        let back: Line = text.parse().unwrap();
        let expected = match line {
            Line::OpenFailed { .. } => Line::OpenFailed {
                error: "one two".into(),
            },
            other => other,
        };
        assert_eq!(back, expected, "{text:?}");
    }
    assert!(
        "ack 9 0 1.1 written".parse::<Line>().is_err(),
        "writer 9 is no writer"
    );
    assert!("ack 0 0 1.1".parse::<Line>().is_err());
}

#[test]
fn every_key_name_parses_back_and_nothing_else_does() {
    for key in protocol::Key::all() {
        assert_eq!(protocol::Key::from_name(&key.name()), Some(key));
        let value = protocol::value_of(key, protocol::version(1, key, 1));
        let found = protocol::Found::of(key, protocol::version(1, key, 1), value.as_deref());
        assert!(found.is_written_by(key, protocol::version(1, key, 1)));
    }
    for junk in [
        "crash/w0/k1",
        "crash/w0/k001",
        "crash/w99/k00",
        "x",
        "crash/w0/k00 ",
    ] {
        assert_eq!(protocol::Key::from_name(junk.as_bytes()), None, "{junk}");
    }
    assert_eq!(
        protocol::PARTITIONS,
        levee_node::config::Config::default().partitions,
        "the workload spreads over the node's default partitions"
    );
}
