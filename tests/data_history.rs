//! A history check under a nemesis: concurrent clients put unique values
//! and read them back over a small, contended key set while one node at a
//! time is SIGKILLed and restarted. Afterwards every successful read and a
//! final read of every key are checked against what was written and what
//! was acknowledged.
//!
//! The checker is pure (a history in, violations out) and has its own test
//! below, so a checker that can never fail would be noticed.

mod common;

use std::collections::HashMap;
use std::fmt::Display;
use std::time::{Duration, Instant, SystemTime};

use common::cluster::{start_cluster, wait_for_members};
use common::{TestNode, env_or, runtime};
use levee_node::client::{Client, ClientConfig};
use levee_node::storage::Version;

/// Concurrent clients per schedule: enough that writes to one key race.
const CLIENTS: usize = 4;
/// Keys per schedule. Few, so that keys are contended and every key sees
/// several writes and reads within a 2 s schedule.
const KEYS: usize = 16;
/// How long a node stays up between kills (ms). Short, to fit several kills
/// in a schedule; not zero, so the restarted node serves a while first.
const NEMESIS_UP_MS: (u64, u64) = (100, 600);
/// How long a killed node stays down (ms): short outages, as a crashing
/// process restarted by its supervisor.
const NEMESIS_DOWN_MS: (u64, u64) = (100, 800);
/// Pause of a client after a failed request, so a client whose node just
/// died does not spin on errors (and flood the node logs) meanwhile.
const ERROR_PAUSE: Duration = Duration::from_millis(10);
/// How long the final reads may take to see every acknowledged write once
/// all nodes are back: read repair and hints need a moment, not minutes.
const SETTLE_DEADLINE: Duration = Duration::from_secs(30);
/// Interval between polls of the final reads.
const POLL: Duration = Duration::from_millis(50);
/// Violations listed in a failure message; the count says how many more.
const SHOWN: usize = 20;

/// Soak with `LEVEE_HISTORY_SCHEDULES=200 LEVEE_HISTORY_SECS=10 cargo test
/// --release --test data_history -- --nocapture`. A failure names its
/// schedule's seed; `LEVEE_HISTORY_SEED=<seed> LEVEE_HISTORY_SCHEDULES=1`
/// replays that schedule's choices (keys, operations, victims, pauses; the
/// timing is the machine's).
#[test]
fn acknowledged_writes_survive_random_node_kills() {
    let knobs = Knobs::from_env();
    println!("data_history: {knobs:?}");
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start_cluster(dir.path(), 3);
    let rt = runtime();
    for schedule in 0..knobs.schedules {
        let seed = knobs.base_seed.wrapping_add(schedule as u64);
        println!("schedule {schedule}: seed {seed}");
        let run = run_schedule(&rt, &mut nodes, schedule, seed, knobs.duration);
        let stats = Stats::of(&run.history.events);
        println!("schedule {schedule}: {stats}; {}", outages(&run.outages));
        let violations = check(&run.history, &run.finals);
        assert!(
            violations.is_empty(),
            "schedule {schedule} (seed {seed}; replay with LEVEE_HISTORY_SEED={seed} \
             LEVEE_HISTORY_SCHEDULES=1): {} violations, first {SHOWN}:\n{}\n{stats}\n{}",
            violations.len(),
            violations[..violations.len().min(SHOWN)].join("\n"),
            outages(&run.outages),
        );
        assert!(
            stats.acked > 0 && stats.reads_ok > 0,
            "schedule {schedule} (seed {seed}): too little succeeded to check anything: {stats}"
        );
    }
}

/// What the environment asks for; defaults fit a normal `cargo test`.
#[derive(Debug)]
struct Knobs {
    /// `LEVEE_HISTORY_SCHEDULES`, default 20.
    schedules: usize,
    /// `LEVEE_HISTORY_SECS` (may be fractional), default 2.
    duration: Duration,
    /// `LEVEE_HISTORY_SEED`, default from the clock; schedule `i` uses
    /// `base_seed + i`.
    base_seed: u64,
}

impl Knobs {
    fn from_env() -> Self {
        let clock = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Self {
            schedules: env_or("LEVEE_HISTORY_SCHEDULES", 20),
            duration: Duration::from_secs_f64(env_or("LEVEE_HISTORY_SECS", 2.0)),
            base_seed: env_or(
                "LEVEE_HISTORY_SEED",
                mix(clock ^ u64::from(std::process::id())),
            ),
        }
    }
}

/// splitmix64: tiny, and good enough to pick keys, operations and pauses.
struct Rng(u64);

impl Rng {
    /// Stream `stream` of `seed`: each client and the nemesis draw from
    /// their own, so one's choices do not shift another's.
    fn new(seed: u64, stream: u64) -> Self {
        Self(mix(seed ^ mix(stream.wrapping_add(1))))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn millis(&mut self, (lo, hi): (u64, u64)) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo + 1))
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A value read back with its version.
#[derive(Debug, Clone)]
struct Seen {
    value: String,
    version: Version,
}

/// One client operation and what came of it. Errors are kept as text.
#[derive(Debug)]
enum Op {
    Put {
        value: String,
        outcome: Result<Version, String>,
    },
    Get {
        outcome: Result<Option<Seen>, String>,
    },
}

#[derive(Debug)]
struct Event {
    client: usize,
    key: usize,
    /// When the request was sent.
    invoked: Instant,
    /// When its answer (or error) came back.
    completed: Instant,
    op: Op,
}

/// Every operation of one schedule.
struct History {
    start: Instant,
    events: Vec<Event>,
}

/// A node the nemesis took down, in ms since the schedule started.
struct Outage {
    node: usize,
    down_ms: u128,
    up_ms: u128,
}

struct Run {
    history: History,
    outages: Vec<Outage>,
    /// The final read of each key, once the cluster has settled.
    finals: Vec<Result<Option<Seen>, String>>,
}

fn run_schedule(
    rt: &tokio::runtime::Runtime,
    nodes: &mut [TestNode],
    schedule: usize,
    seed: u64,
    duration: Duration,
) -> Run {
    let endpoints: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    let start = Instant::now();
    let end = start + duration;
    let (events, outages) = std::thread::scope(|s| {
        let nemesis = s.spawn(|| nemesis(nodes, seed, start, end));
        let events = rt.block_on(workload(&endpoints, schedule, seed, end));
        let outages = nemesis
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (events, outages)
    });
    for (i, node) in nodes.iter_mut().enumerate() {
        assert!(node.is_running(), "n{} is down after the schedule", i + 1);
    }
    wait_for_members(nodes, 3);
    let history = History { start, events };
    let floors: Vec<Option<Version>> = (0..KEYS)
        .map(|key| highest_acked(&history.events, key))
        .collect();
    let finals = rt.block_on(final_reads(&endpoints, schedule, &floors));
    Run {
        history,
        outages,
        finals,
    }
}

/// Kills a random node, waits, restarts it (waiting until it is ready),
/// until `end`. One node at a time: a restarted node is ready before the
/// next kill.
fn nemesis(nodes: &mut [TestNode], seed: u64, start: Instant, end: Instant) -> Vec<Outage> {
    let mut rng = Rng::new(seed, CLIENTS as u64);
    let mut outages = Vec::new();
    loop {
        let up = rng.millis(NEMESIS_UP_MS);
        if Instant::now() + up >= end {
            return outages;
        }
        std::thread::sleep(up);
        let node = rng.below(nodes.len());
        let down_ms = start.elapsed().as_millis();
        nodes[node].kill();
        std::thread::sleep(rng.millis(NEMESIS_DOWN_MS));
        nodes[node].restart();
        outages.push(Outage {
            node,
            down_ms,
            up_ms: start.elapsed().as_millis(),
        });
    }
}

fn outages(outages: &[Outage]) -> String {
    let list: Vec<String> = outages
        .iter()
        .map(|o| format!("n{} down +{}..+{} ms", o.node + 1, o.down_ms, o.up_ms))
        .collect();
    format!("nemesis: [{}]", list.join(", "))
}

fn key_name(schedule: usize, key: usize) -> String {
    format!("s{schedule}-k{key}")
}

/// A client over every node, listed from a different one per client so
/// that the clients do not all start on the same node.
fn client(endpoints: &[String], first: usize) -> Client {
    let mut endpoints = endpoints.to_vec();
    let first = first % endpoints.len();
    endpoints.rotate_left(first);
    Client::new(ClientConfig {
        endpoints,
        ..common::certs::client_config()
    })
}

async fn workload(endpoints: &[String], schedule: usize, seed: u64, end: Instant) -> Vec<Event> {
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let db = client(endpoints, c);
            tokio::spawn(client_loop(db, schedule, c, Rng::new(seed, c as u64), end))
        })
        .collect();
    let mut events = Vec::new();
    for task in tasks {
        events.extend(task.await.expect("client task"));
    }
    // In the order sent, so that violations read as a timeline.
    events.sort_by_key(|e| e.invoked);
    events
}

/// Half puts of values no one else writes, half gets, on random keys.
async fn client_loop(
    db: Client,
    schedule: usize,
    client: usize,
    mut rng: Rng,
    end: Instant,
) -> Vec<Event> {
    let mut events = Vec::new();
    let mut n = 0;
    while Instant::now() < end {
        let key = rng.below(KEYS);
        let name = key_name(schedule, key);
        let invoked = Instant::now();
        let op = if rng.below(2) == 0 {
            let value = format!("s{schedule}-c{client}-op{n}");
            let outcome = db.put(name.as_bytes(), value.as_bytes()).await;
            Op::Put {
                value,
                outcome: outcome.map(|w| w.version).map_err(|e| e.to_string()),
            }
        } else {
            Op::Get {
                outcome: read(&db, &name).await,
            }
        };
        n += 1;
        let failed = matches!(
            op,
            Op::Put {
                outcome: Err(_),
                ..
            } | Op::Get { outcome: Err(_) }
        );
        events.push(Event {
            client,
            key,
            invoked,
            completed: Instant::now(),
            op,
        });
        if failed {
            tokio::time::sleep(ERROR_PAUSE).await;
        }
    }
    events
}

async fn read(db: &Client, key: &str) -> Result<Option<Seen>, String> {
    let found = db.get(key.as_bytes()).await.map_err(|e| e.to_string())?;
    Ok(found.map(|v| Seen {
        value: String::from_utf8_lossy(&v.value).into_owned(),
        version: v.version,
    }))
}

/// Reads every key through a fresh client until each shows at least its
/// highest acknowledged version, or the deadline passes; returns the last
/// read of each key either way, for the checker to judge.
async fn final_reads(
    endpoints: &[String],
    schedule: usize,
    floors: &[Option<Version>],
) -> Vec<Result<Option<Seen>, String>> {
    let db = client(endpoints, 0);
    let reaches = |r: &Result<Option<Seen>, String>, floor: Option<Version>| matches!(r, Ok(found) if found.as_ref().map(|s| s.version) >= floor);
    let mut results: Vec<_> = (0..KEYS).map(|_| Err("not read".to_string())).collect();
    let end = Instant::now() + SETTLE_DEADLINE;
    loop {
        for key in 0..KEYS {
            if !reaches(&results[key], floors[key]) {
                results[key] = read(&db, &key_name(schedule, key)).await;
            }
        }
        let settled = (0..KEYS).all(|key| reaches(&results[key], floors[key]));
        if settled || Instant::now() >= end {
            return results;
        }
        tokio::time::sleep(POLL).await;
    }
}

fn highest_acked(events: &[Event], key: usize) -> Option<Version> {
    events
        .iter()
        .filter(|e| e.key == key)
        .filter_map(|e| match &e.op {
            Op::Put { outcome: Ok(v), .. } => Some(*v),
            _ => None,
        })
        .max()
}

/// Counts for the progress line and the "enough succeeded" check.
struct Stats {
    puts: usize,
    acked: usize,
    gets: usize,
    reads_ok: usize,
    first_error: Option<String>,
}

impl Stats {
    fn of(events: &[Event]) -> Self {
        let mut stats = Self {
            puts: 0,
            acked: 0,
            gets: 0,
            reads_ok: 0,
            first_error: None,
        };
        for e in events {
            let error = match &e.op {
                Op::Put { outcome, .. } => {
                    stats.puts += 1;
                    stats.acked += usize::from(outcome.is_ok());
                    outcome.as_ref().err()
                }
                Op::Get { outcome } => {
                    stats.gets += 1;
                    stats.reads_ok += usize::from(outcome.is_ok());
                    outcome.as_ref().err()
                }
            };
            if stats.first_error.is_none() {
                stats.first_error = error.cloned();
            }
        }
        stats
    }
}

impl Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{} puts acknowledged, {}/{} gets answered",
            self.acked, self.puts, self.reads_ok, self.gets
        )?;
        if let Some(error) = &self.first_error {
            write!(f, "; first error: {error}")?;
        }
        Ok(())
    }
}

/// What the writes of a history establish, indexed for the read checks.
struct Writes<'a> {
    /// The key each attempted value was written to (values are unique).
    attempted: HashMap<&'a str, usize>,
    /// The version each acknowledged value was written under.
    version_of: HashMap<&'a str, Version>,
    /// Per key, the value acknowledged under each version.
    value_at: Vec<HashMap<Version, &'a str>>,
    /// Per key, acknowledgements by completion time, each with the highest
    /// version acknowledged up to then.
    acks: Vec<Vec<(Instant, Version)>>,
}

impl<'a> Writes<'a> {
    fn new(events: &'a [Event], violations: &mut Vec<String>) -> Self {
        let mut writes = Writes {
            attempted: HashMap::new(),
            version_of: HashMap::new(),
            value_at: vec![HashMap::new(); KEYS],
            acks: vec![Vec::new(); KEYS],
        };
        for e in events {
            let Op::Put { value, outcome } = &e.op else {
                continue;
            };
            writes.attempted.insert(value, e.key);
            let Ok(version) = outcome else { continue };
            writes.version_of.insert(value, *version);
            if let Some(other) = writes.value_at[e.key].insert(*version, value) {
                violations.push(format!(
                    "key {}: {other:?} and {value:?} were both acknowledged as version {version}",
                    e.key
                ));
            }
            writes.acks[e.key].push((e.completed, *version));
        }
        for acks in &mut writes.acks {
            acks.sort_by_key(|(at, _)| *at);
            let mut highest = None;
            for (_, version) in acks.iter_mut() {
                highest = highest.max(Some(*version));
                *version = highest.expect("just set");
            }
        }
        writes
    }

    /// The highest version of `key` acknowledged before `at`.
    fn acked_before(&self, key: usize, at: Instant) -> Option<Version> {
        let acks = &self.acks[key];
        let n = acks.partition_point(|(done, _)| *done < at);
        n.checked_sub(1).map(|i| acks[i].1)
    }

    fn highest(&self, key: usize) -> Option<Version> {
        self.acks[key].last().map(|(_, v)| *v)
    }

    /// Checks one read of `key` that must show at least `floor`.
    fn check_read(
        &self,
        key: usize,
        found: Option<&Seen>,
        floor: Option<Version>,
        what: &str,
    ) -> Vec<String> {
        let mut out = Vec::new();
        let floor_value = |v: Version| self.value_at[key].get(&v).copied().unwrap_or("?");
        let Some(seen) = found else {
            if let Some(floor) = floor {
                out.push(format!(
                    "key {key}: {what} found nothing, but version {floor} ({:?}) was acknowledged before it",
                    floor_value(floor)
                ));
            }
            return out;
        };
        let (value, version) = (seen.value.as_str(), seen.version);
        match self.attempted.get(value) {
            None => out.push(format!(
                "key {key}: {what} returned {value:?} (version {version}), which no client wrote"
            )),
            Some(&other) if other != key => out.push(format!(
                "key {key}: {what} returned {value:?}, which was written to key {other}"
            )),
            Some(_) => {}
        }
        if let Some(&acked) = self.version_of.get(value)
            && acked != version
        {
            out.push(format!("key {key}: {what} returned {value:?} as version {version}, but it was acknowledged as version {acked}"));
        }
        if let Some(&acked) = self.value_at[key].get(&version)
            && acked != value
        {
            out.push(format!("key {key}: {what} returned {value:?} as version {version}, which was acknowledged for {acked:?}"));
        }
        if let Some(floor) = floor
            && version < floor
        {
            out.push(format!(
                "key {key}: {what} returned version {version} ({value:?}), older than version {floor} ({:?}) acknowledged before it",
                floor_value(floor)
            ));
        }
        out
    }
}

/// Every violation in a history and its final reads:
/// - a read (during the schedule or final) returns only a value some client
///   attempted to write to that key, under the version it was acknowledged
///   with if it was, and a version acknowledged for another value never;
/// - a read returns at least the highest version acknowledged before the
///   read was sent (with W = 2 of 3 and majority reads the quorums overlap),
///   so in particular nothing only if no write to the key was acknowledged;
/// - the final read of a key shows at least its highest acknowledged version;
/// - no two acknowledged writes share a version.
fn check(history: &History, finals: &[Result<Option<Seen>, String>]) -> Vec<String> {
    let mut violations = Vec::new();
    let writes = Writes::new(&history.events, &mut violations);
    for e in &history.events {
        if let Op::Get { outcome: Ok(found) } = &e.op {
            let what = format!(
                "the read by client {} sent at +{} ms",
                e.client,
                (e.invoked - history.start).as_millis()
            );
            let floor = writes.acked_before(e.key, e.invoked);
            violations.extend(writes.check_read(e.key, found.as_ref(), floor, &what));
        }
    }
    for (key, result) in finals.iter().enumerate() {
        match result {
            Err(error) => violations.push(format!("key {key}: the final read failed: {error}")),
            Ok(found) => {
                let floor = writes.highest(key);
                violations.extend(writes.check_read(key, found.as_ref(), floor, "the final read"));
            }
        }
    }
    violations
}

#[test]
fn the_history_checker_flags_invented_stale_and_lost_values() {
    let start = Instant::now();
    let at = |ms: u64| start + Duration::from_millis(ms);
    let v = |hlc: u64| Version { hlc, writer: 1 };
    let seen = |value: &str, hlc: u64| {
        Some(Seen {
            value: value.into(),
            version: v(hlc),
        })
    };
    let put = |key, ms, value: &str, outcome: Result<Version, String>| Event {
        client: 0,
        key,
        invoked: at(ms),
        completed: at(ms + 5),
        op: Op::Put {
            value: value.into(),
            outcome,
        },
    };
    let get = |key, ms, found: Option<Seen>| Event {
        client: 1,
        key,
        invoked: at(ms),
        completed: at(ms + 5),
        op: Op::Get { outcome: Ok(found) },
    };
    let finals = |f: Vec<Option<Seen>>| -> Vec<Result<Option<Seen>, String>> {
        let mut all: Vec<_> = f.into_iter().map(Ok).collect();
        all.resize_with(KEYS, || Ok(None));
        all
    };
    let events = vec![
        put(0, 0, "a", Ok(v(1))),
        // Sent before "a" was acknowledged: nothing is a fine answer.
        get(0, 2, None),
        // An unacknowledged write may land and be read.
        put(0, 10, "b", Err("timed out".into())),
        get(0, 20, seen("b", 2)),
        put(1, 30, "c", Ok(v(3))),
    ];
    let clean = History { start, events };
    let good = finals(vec![seen("b", 2), seen("c", 3)]);
    assert_eq!(check(&clean, &good), Vec::<String>::new());

    let mut bad = History {
        start,
        events: clean.events,
    };
    bad.events.push(get(0, 40, seen("zzz", 9)));
    bad.events.push(get(0, 50, None));
    bad.events.push(get(1, 60, seen("a", 1)));
    bad.events.push(get(1, 70, seen("c", 4)));
    let mut lost = finals(vec![None, None]);
    lost[0] = Err("unreachable".into());
    let violations = check(&bad, &lost);
    let expect = [
        "which no client wrote",
        "found nothing, but version",
        "which was written to key 0",
        "but it was acknowledged as version",
        "older than version",
    ];
    for needle in expect {
        assert!(
            violations.iter().any(|v| v.contains(needle)),
            "no violation mentions {needle:?}: {violations:#?}"
        );
    }
    let finals_flagged = violations
        .iter()
        .filter(|v| v.contains("the final read"))
        .count();
    assert_eq!(
        finals_flagged, 2,
        "both lost keys are flagged: {violations:#?}"
    );
}
