//! A history check under a nemesis: concurrent clients put unique values
//! and read them back over a small, contended key set while one node at a
//! time is SIGKILLed and restarted, paused (SIGSTOP, the Raft leader half
//! the time, then SIGCONT), or restarted with its clock skewed, within
//! `max_clock_drift_ms` or beyond it, until its next restart or the end
//! of the schedule. Afterwards
//! every successful read and a final read of every key are checked
//! against what was written and what was acknowledged.
//!
//! The checker is pure (a history in, violations out) and has its own test
//! below, so a checker that can never fail would be noticed.

mod common;

use std::collections::HashMap;
use std::fmt::Display;
use std::time::{Duration, Instant, SystemTime};

use common::cluster::{FAST_RAFT, start_cluster, start_zoned, status, wait_for_members};
use common::netns::Hosts;
use common::{TestNode, env_or, runtime, wait_for};
use levee_node::client::{Client, ClientConfig};
use levee_node::cluster::map::NodeState;
use levee_node::storage::Version;
use levee_node::tls::Transport;

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
/// How long a paused node stays frozen (ms): from a GC-like hiccup to
/// past the Raft election timeout of the suite (a paused leader is
/// replaced, then comes back as a follower with a stale view).
const NEMESIS_PAUSE_MS: (u64, u64) = (100, 1500);
/// Clock skews a node is restarted with (ms; the node's
/// `max_clock_drift_ms` is 30 s): a few seconds either way, as an NTP
/// hiccup; and past the bound either way, so that writes carrying
/// correct clients' versions look 45 s in the future to it (refused) or
/// its own timestamps lead everyone's by 45 s.
const NEMESIS_SKEWS_MS: [i64; 4] = [2_000, -2_000, 45_000, -45_000];
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
fn acknowledged_writes_survive_kills_pauses_and_skewed_clocks() {
    let knobs = Knobs::from_env();
    println!("data_history: {knobs:?}");
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start_cluster(dir.path(), 3);
    let rt = runtime();
    for schedule in 0..knobs.schedules {
        let seed = knobs.base_seed.wrapping_add(schedule as u64);
        println!("schedule {schedule}: seed {seed}");
        let run = run_schedule(&rt, &mut nodes, schedule, seed, knobs.duration);
        assert_clean(schedule, seed, &run, "LEVEE_HISTORY");
    }
}

/// Prints the schedule's figures and fails with its violations, if any.
fn assert_clean(schedule: usize, seed: u64, run: &Run, knob: &str) {
    let stats = Stats::of(&run.history.events);
    println!("schedule {schedule}: {stats}; {}", outages(&run.outages));
    let violations = check(&run.history, &run.finals);
    assert!(
        violations.is_empty(),
        "schedule {schedule} (seed {seed}; replay with {knob}_SEED={seed} \
         {knob}_SCHEDULES=1): {} violations, first {SHOWN}:\n{}\n{stats}\n{}",
        violations.len(),
        violations[..violations.len().min(SHOWN)].join("\n"),
        outages(&run.outages),
    );
    assert!(
        stats.acked > 0 && stats.reads_ok > 0,
        "schedule {schedule} (seed {seed}): too little succeeded to check anything: {stats}"
    );
}

/// How long a partition lasts (ms): from shorter than the suite's Raft
/// election timeout to several heartbeats past the failure detector's
/// suspicion.
const NEMESIS_PARTITION_MS: (u64, u64) = (200, 2500);

/// Soak with `LEVEE_PARTITION_SCHEDULES=50 cargo test --release --test
/// data_history partitions -- --nocapture` (`LEVEE_PARTITION_SECS`, default
/// 4; `LEVEE_PARTITION_SEED` replays a schedule's choices). Needs root:
/// each of the 3 nodes runs in its own network namespace, bridged to the
/// test's, and the nemesis cuts a node off from the others (a minority of
/// one, the Raft leader half the time) or from one other node only (the
/// third bridges them), with nftables rules inside the namespaces, then
/// heals. The clients reach every node throughout.
#[test]
fn acknowledged_writes_survive_network_partitions() {
    let schedules: usize = env_or("LEVEE_PARTITION_SCHEDULES", 3);
    let duration = Duration::from_secs_f64(env_or("LEVEE_PARTITION_SECS", 4.0));
    let base_seed: u64 = env_or("LEVEE_PARTITION_SEED", Knobs::from_env().base_seed);
    let hosts = Hosts::create(3);
    let dir = tempfile::tempdir().unwrap();
    let first = Hosts::ip(1);
    let seed_addr = format!("{first}:7400");
    let nodes: Vec<TestNode> = (1..=3)
        .map(|i| {
            let zone = format!("z{i}");
            let mut args = if i == 1 {
                vec!["--init", "--zone", zone.as_str()]
            } else {
                vec!["--join", seed_addr.as_str(), "--zone", zone.as_str()]
            };
            args.push("--insecure");
            args.extend(FAST_RAFT);
            TestNode::start_in_netns(
                dir.path(),
                &format!("n{i}"),
                &args,
                &hosts.netns(i),
                &Hosts::ip(i),
            )
        })
        .collect();
    let _logs = LogsOnPanic(&nodes);
    wait_for_members(&nodes, 3);
    let reach = Reach {
        endpoints: nodes.iter().map(|n| n.addr.clone()).collect(),
        transport: Transport::Plain,
    };
    let rt = runtime();
    for schedule in 0..schedules {
        let seed = base_seed.wrapping_add(schedule as u64);
        println!("partition schedule {schedule}: seed {seed}");
        let run = run_with(&rt, &reach, schedule, seed, duration, |start, end| {
            partition_nemesis(&nodes, &hosts, seed, start, end)
        });
        assert_clean(schedule, seed, &run, "LEVEE_PARTITION");
        wait_for_members(&nodes, 3);
    }
}

/// Prints the end of every node's log if the test fails (its directory
/// goes with it).
struct LogsOnPanic<'a>(&'a [TestNode]);

impl Drop for LogsOnPanic<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for (i, node) in self.0.iter().enumerate() {
            let log = node.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(40)..].join("\n");
            eprintln!("--- n{} log (last 40 lines) ---\n{tail}", i + 1);
        }
    }
}

/// Until `end`, one partition at a time: isolates a node (the leader
/// half the time) or cuts two nodes apart, waits, heals.
fn partition_nemesis(
    nodes: &[TestNode],
    hosts: &Hosts,
    seed: u64,
    start: Instant,
    end: Instant,
) -> Vec<Outage> {
    let mut rng = Rng::new(seed, CLIENTS as u64);
    let mut outages = Vec::new();
    while quiet_spell(&mut rng, end) {
        let random = rng.below(nodes.len());
        let kind = match rng.below(3) {
            0 => Fault::Isolate { leader: false },
            1 => Fault::Isolate { leader: true },
            _ => Fault::Cut {
                with: (random + 1 + rng.below(nodes.len() - 1)) % nodes.len(),
            },
        };
        let node = match kind {
            Fault::Isolate { leader: true } => leader_index(nodes).unwrap_or(random),
            _ => random,
        };
        let down_ms = start.elapsed().as_millis();
        match kind {
            Fault::Cut { with } => hosts.cut(node + 1, with + 1),
            _ => {
                for other in (0..nodes.len()).filter(|&o| o != node) {
                    hosts.cut(node + 1, other + 1);
                }
            }
        }
        std::thread::sleep(rng.millis(NEMESIS_PARTITION_MS));
        hosts.heal();
        outages.push(Outage {
            node,
            kind,
            down_ms,
            up_ms: start.elapsed().as_millis(),
        });
    }
    outages
}

/// Settings of the membership check's cluster: 24 partitions, fast
/// heartbeats, moves quick enough to drain and fill a node within a
/// schedule, and a down-out interval longer than the test, so that only
/// the drain and the join move data (a killed node is back before it).
const MEMBERSHIP_FLAGS: [&str; 6] = [
    "--heartbeat-ms",
    "200",
    "--partitions",
    "24",
    "--recovery",
    "down_out_interval=600000,recovery.moves_per_sec=20,recovery.moves_burst=8,\
     recovery.max_moves=8,recovery.max_moves_per_node=4",
];

/// Soak with `LEVEE_MEMBERSHIP_SCHEDULES=20 cargo test --release --test
/// data_history drain -- --nocapture` (`LEVEE_MEMBERSHIP_SECS`, default
/// 12; `LEVEE_MEMBERSHIP_SEED` replays a schedule's choices). Each
/// schedule is a fresh 4-node cluster in 4 zones: node 4 is drained
/// while the clients run, then a node 5 joins in its zone; whenever
/// partitions are being copied, the nemesis kills a move's source or
/// target and brings it back.
#[test]
fn acknowledged_writes_survive_a_drain_and_a_join_with_kills_mid_transfer() {
    let schedules: usize = env_or("LEVEE_MEMBERSHIP_SCHEDULES", 1);
    let duration = Duration::from_secs_f64(env_or("LEVEE_MEMBERSHIP_SECS", 12.0));
    let base_seed: u64 = env_or("LEVEE_MEMBERSHIP_SEED", Knobs::from_env().base_seed);
    let rt = runtime();
    for schedule in 0..schedules {
        let seed = base_seed.wrapping_add(schedule as u64);
        println!("membership schedule {schedule}: seed {seed}");
        let dir = tempfile::tempdir().unwrap();
        let mut nodes = start_zoned(dir.path(), &["z1", "z2", "z3", "z4"], &MEMBERSHIP_FLAGS);
        let endpoints = Reach::tls(&nodes);
        let run = run_with(&rt, &endpoints, schedule, seed, duration, |start, end| {
            membership_nemesis(&mut nodes, dir.path(), seed, start, end)
        });
        assert_clean(schedule, seed, &run, "LEVEE_MEMBERSHIP");
        let mid_transfer = run
            .outages
            .iter()
            .filter(|o| o.kind == Fault::KillMidTransfer)
            .count();
        assert!(
            mid_transfer > 0,
            "no kill landed while partitions were being copied: {}",
            outages(&run.outages)
        );
        // Only the drain copies through moves: a join gives node 5 its
        // share of replica slots at once (the map's rebalance on
        // `AddNode`; ARCHITECTURE.md) and anti-entropy fills them, so a
        // kill after the join finds no move to hit (0 in 4 schedules of
        // 40 s). Say which the kills hit, for the soak's figures.
        let joined = run.outages.iter().find(|o| o.kind == Fault::Join);
        let after_join = run
            .outages
            .iter()
            .filter(|o| o.kind == Fault::KillMidTransfer)
            .filter(|o| joined.is_some_and(|j| o.down_ms >= j.up_ms))
            .count();
        println!(
            "membership schedule {schedule}: {} kills mid-transfer during the drain, {after_join} after the join",
            mid_transfer - after_join
        );
        // Despite the kills, the drain and the join complete: node 4
        // holds nothing and is removed, node 5 holds its share, and every
        // partition has its replicas.
        for node in &mut nodes {
            assert!(node.is_running());
        }
        wait_for(
            "the drain and the join to finish",
            Duration::from_secs(120),
            || {
                let view = nodes
                    .iter()
                    .filter_map(status)
                    .find(|s| s.recovery.is_some())?;
                let map = &view.map;
                let removed = map
                    .nodes
                    .get(&4)
                    .is_some_and(|n| n.state == NodeState::Removed);
                (removed
                    && map.moves.is_empty()
                    && map.under_replicated() == 0
                    && map.partitions_held(4) == 0
                    && map.partitions_held(5) > 0)
                    .then_some(())
            },
        );
    }
}

/// Drains node 4, then has a node 5 join in its zone; meanwhile, each
/// time moves are in flight, kills one move's source or target and
/// restarts it.
fn membership_nemesis(
    nodes: &mut Vec<TestNode>,
    dir: &std::path::Path,
    seed: u64,
    start: Instant,
    end: Instant,
) -> Vec<Outage> {
    let mut rng = Rng::new(seed, CLIENTS as u64);
    let mut outages = Vec::new();
    let at = || start.elapsed().as_millis();
    std::thread::sleep(rng.millis(NEMESIS_UP_MS));
    let drain = nodes[0].cli(&["admin", "drain", "4"], None);
    assert!(
        drain.status.success(),
        "{}",
        String::from_utf8_lossy(&drain.stderr)
    );
    outages.push(Outage {
        node: 3,
        kind: Fault::Drain,
        down_ms: at(),
        up_ms: at(),
    });
    let halfway = start + (end - start) / 2;
    kill_mid_transfers(nodes, &mut rng, &mut outages, start, halfway);
    let mut args = vec!["--join", nodes[0].addr.as_str(), "--zone", "z4"];
    args.extend(FAST_RAFT);
    args.extend(MEMBERSHIP_FLAGS);
    let joined = at();
    let fifth = TestNode::start_named(dir, "n5", &args);
    nodes.push(fifth);
    outages.push(Outage {
        node: 4,
        kind: Fault::Join,
        down_ms: joined,
        up_ms: at(),
    });
    kill_mid_transfers(nodes, &mut rng, &mut outages, start, end);
    outages
}

/// Until `until`: whenever the map shows moves in flight, kills the
/// source or the target of one of them, then restarts it.
fn kill_mid_transfers(
    nodes: &mut [TestNode],
    rng: &mut Rng,
    outages: &mut Vec<Outage>,
    start: Instant,
    until: Instant,
) {
    while Instant::now() < until {
        let Some(view) = nodes.iter().find_map(status) else {
            std::thread::sleep(POLL);
            continue;
        };
        let moving: Vec<u64> = view
            .map
            .moves
            .values()
            .flat_map(|m| [m.source, m.to])
            .collect();
        let victim = (!moving.is_empty())
            .then(|| moving[rng.below(moving.len())])
            .and_then(|id| view.map.nodes.get(&id))
            .and_then(|info| nodes.iter().position(|n| n.addr == info.spec.addr));
        let Some(victim) = victim else {
            std::thread::sleep(POLL);
            continue;
        };
        let down_ms = start.elapsed().as_millis();
        nodes[victim].kill();
        std::thread::sleep(rng.millis(NEMESIS_DOWN_MS));
        nodes[victim].restart();
        outages.push(Outage {
            node: victim,
            kind: Fault::KillMidTransfer,
            down_ms,
            up_ms: start.elapsed().as_millis(),
        });
        // Let the copy make progress before the next kill.
        std::thread::sleep(rng.millis(NEMESIS_UP_MS));
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

/// What the nemesis did to a node, in ms since the schedule started.
struct Outage {
    node: usize,
    kind: Fault,
    down_ms: u128,
    up_ms: u128,
}

/// A nemesis action.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    /// SIGKILL, then a restart.
    Kill,
    /// SIGSTOP, then SIGCONT; `leader` if the node was the Raft leader.
    Pause { leader: bool },
    /// SIGKILL, then a restart with the clock this many ms off, until the
    /// node's next restart.
    Skew(i64),
    /// SIGKILL of a move's source or target while partitions are being
    /// copied, then a restart.
    KillMidTransfer,
    /// `levee admin drain` of the node.
    Drain,
    /// The node joined the cluster.
    Join,
    /// The node cut off from every other node (a minority of one; the
    /// clients still reach it); `leader` if it was the Raft leader.
    Isolate { leader: bool },
    /// The node cut off from node `with` only; the third node still
    /// sees both (a bridge).
    Cut { with: usize },
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
    let endpoints = Reach::tls(nodes);
    let run = run_with(rt, &endpoints, schedule, seed, duration, |start, end| {
        nemesis(nodes, seed, start, end)
    });
    for (i, node) in nodes.iter_mut().enumerate() {
        assert!(node.is_running(), "n{} is down after the schedule", i + 1);
    }
    wait_for_members(nodes, 3);
    run
}

/// Runs the workload through `endpoints` while `nemesis` acts (on its
/// own thread, from the start to the end it is given), then reads every
/// key back once the cluster has settled.
fn run_with(
    rt: &tokio::runtime::Runtime,
    endpoints: &Reach,
    schedule: usize,
    seed: u64,
    duration: Duration,
    nemesis: impl FnOnce(Instant, Instant) -> Vec<Outage> + Send,
) -> Run {
    let start = Instant::now();
    let end = start + duration;
    let (events, outages) = std::thread::scope(|s| {
        let nemesis = s.spawn(move || nemesis(start, end));
        let events = rt.block_on(workload(endpoints, schedule, seed, end));
        let outages = nemesis
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (events, outages)
    });
    let history = History { start, events };
    let floors: Vec<Option<Version>> = (0..KEYS)
        .map(|key| highest_acked(&history.events, key))
        .collect();
    let finals = rt.block_on(final_reads(endpoints, schedule, &floors));
    Run {
        history,
        outages,
        finals,
    }
}

/// Until `end`, one node at a time: kills a random node and restarts it,
/// pauses one (the leader half the time) and resumes it, or restarts one
/// with its clock skewed. A restarted node is ready before the next
/// action; a skewed node stays skewed until it is next killed or skewed,
/// or the schedule ends.
fn nemesis(nodes: &mut [TestNode], seed: u64, start: Instant, end: Instant) -> Vec<Outage> {
    let mut rng = Rng::new(seed, CLIENTS as u64);
    let mut outages = Vec::new();
    // Nodes running with a skewed clock: set right when the schedule
    // ends, so that one schedule's skew is not the next one's second
    // fault (a node 45 s behind refuses every write, and with another
    // node killed no write could be acknowledged at all).
    let mut skewed = vec![false; nodes.len()];
    while quiet_spell(&mut rng, end) {
        let kind = match rng.below(4) {
            0 | 1 => Fault::Kill,
            2 => Fault::Pause {
                leader: rng.below(2) == 0,
            },
            _ => Fault::Skew(NEMESIS_SKEWS_MS[rng.below(NEMESIS_SKEWS_MS.len())]),
        };
        let random = rng.below(nodes.len());
        let node = match kind {
            Fault::Pause { leader: true } => leader_index(nodes).unwrap_or(random),
            _ => random,
        };
        let down_ms = start.elapsed().as_millis();
        match kind {
            Fault::Kill => {
                skewed[node] = false;
                nodes[node].kill();
                std::thread::sleep(rng.millis(NEMESIS_DOWN_MS));
                nodes[node].restart();
            }
            Fault::Pause { .. } => {
                let paused = nodes[node].stop();
                std::thread::sleep(rng.millis(NEMESIS_PAUSE_MS));
                paused.resume();
            }
            Fault::Skew(ms) => {
                skewed[node] = true;
                nodes[node].respawn_with(&["--clock-skew-ms", &ms.to_string()]);
                nodes[node].wait_ready();
            }
            // The membership check's own (membership_nemesis).
            Fault::KillMidTransfer
            | Fault::Drain
            | Fault::Join
            | Fault::Isolate { .. }
            | Fault::Cut { .. } => unreachable!("not drawn here"),
        }
        outages.push(Outage {
            node,
            kind,
            down_ms,
            up_ms: start.elapsed().as_millis(),
        });
    }
    for (node, _) in skewed.iter().enumerate().filter(|(_, s)| **s) {
        nodes[node].restart();
    }
    outages
}

/// Waits a random spell between two nemesis actions; false (without
/// waiting) if the spell would end past `end`.
fn quiet_spell(rng: &mut Rng, end: Instant) -> bool {
    let up = rng.millis(NEMESIS_UP_MS);
    if Instant::now() + up >= end {
        return false;
    }
    std::thread::sleep(up);
    true
}

/// The index of the node the cluster names its Raft leader, if one
/// answers.
fn leader_index(nodes: &[TestNode]) -> Option<usize> {
    let view = nodes.iter().find_map(status)?;
    let leader = view.leader?;
    let addr = &view.map.nodes.get(&leader)?.spec.addr;
    nodes.iter().position(|n| &n.addr == addr)
}

fn outages(outages: &[Outage]) -> String {
    let list: Vec<String> = outages
        .iter()
        .map(|o| {
            let what = match o.kind {
                Fault::Kill => "killed".to_string(),
                Fault::Pause { leader: true } => "paused (leader)".to_string(),
                Fault::Pause { leader: false } => "paused".to_string(),
                Fault::Skew(ms) => format!("restarted with clock {ms:+} ms"),
                Fault::KillMidTransfer => "killed mid-transfer".to_string(),
                Fault::Drain => "drain started".to_string(),
                Fault::Join => "joined".to_string(),
                Fault::Isolate { leader: true } => "isolated (leader)".to_string(),
                Fault::Isolate { leader: false } => "isolated".to_string(),
                Fault::Cut { with } => format!("cut from n{}", with + 1),
            };
            format!("n{} {what} +{}..+{} ms", o.node + 1, o.down_ms, o.up_ms)
        })
        .collect();
    format!("nemesis: [{}]", list.join(", "))
}

fn key_name(schedule: usize, key: usize) -> String {
    format!("s{schedule}-k{key}")
}

/// A client over every node, listed from a different one per client so
/// that the clients do not all start on the same node.
fn client(reach: &Reach, first: usize) -> Client {
    let mut endpoints = reach.endpoints.clone();
    let first = first % endpoints.len();
    endpoints.rotate_left(first);
    Client::new(ClientConfig {
        endpoints,
        transport: reach.transport.clone(),
        ..common::certs::client_config()
    })
}

/// How the clients reach the cluster.
struct Reach {
    endpoints: Vec<String>,
    /// The suite's mutual TLS, or plaintext for nodes in namespaces
    /// (their certificates do not name those addresses).
    transport: Transport,
}

impl Reach {
    /// The suite's TLS nodes.
    fn tls(nodes: &[TestNode]) -> Self {
        Self {
            endpoints: nodes.iter().map(|n| n.addr.clone()).collect(),
            transport: common::certs::client_transport(),
        }
    }
}

async fn workload(endpoints: &Reach, schedule: usize, seed: u64, end: Instant) -> Vec<Event> {
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
    endpoints: &Reach,
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
