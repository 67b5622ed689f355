//! Node self-protection under a flood (design §7): a node pushed far past
//! its capacity refuses the excess at once with `Overloaded`, stays live,
//! completes every request it admitted, keeps its Raft leadership, and
//! serves normally as soon as the flood stops.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::cluster::{start_cluster_with, status};
use common::raw::RawConn;
use common::{TestNode, http_status, runtime};
use levee_node::proto::{ClientRequest, Request, RequestFrame, Response, WireError};
use levee_node::storage::Version;

/// Small limits so that a flood from one test process on a 2-core machine
/// is far past capacity.
const SMALL_LIMITS: [&str; 10] = [
    "--admission-limit-min",
    "2",
    "--admission-limit-max",
    "4",
    "--admission-queue-len",
    "4",
    "--admission-queue-timeout-ms",
    "2",
    "--log",
    "warn",
];
/// Flooding connections, each keeping `WINDOW` writes in flight.
const CONNECTIONS: usize = 16;
const WINDOW: usize = 32;
const FLOOD_FOR: Duration = Duration::from_secs(3);
/// Each flood request's own deadline: generous, so an admitted request
/// that fails to finish shows up as a test failure, not as noise.
const REQUEST_TIMEOUT_MS: u32 = 5_000;

#[derive(Debug, Default)]
struct Tally {
    ok: AtomicU64,
    overloaded: AtomicU64,
    deadline: AtomicU64,
    other: AtomicU64,
}

fn put(id: u64, writer: u64) -> RequestFrame {
    RequestFrame {
        id,
        timeout_ms: REQUEST_TIMEOUT_MS,
        request: Request::Client(ClientRequest::Put {
            key: format!("flood-{writer}-{id}").into_bytes(),
            value: vec![7u8; 1024],
            version: Version {
                hlc: levee_node::hlc::compose(levee_node::hlc::wall_ms(), 0),
                writer,
            },
            epoch: 0,
        }),
    }
}

/// Floods `addr` from many connections until `FLOOD_FOR` passes.
fn flood(addr: &str, tally: &Arc<Tally>) {
    let threads: Vec<_> = (0..CONNECTIONS)
        .map(|c| {
            let (addr, tally) = (addr.to_owned(), tally.clone());
            thread::spawn(move || {
                let mut conn = RawConn::handshaken(&addr);
                let end = Instant::now() + FLOOD_FOR;
                let mut id = 1;
                while Instant::now() < end {
                    for _ in 0..WINDOW {
                        conn.send_request(&put(id, c as u64 + 1));
                        id += 1;
                    }
                    for _ in 0..WINDOW {
                        let counter = match conn.read_response().result {
                            Ok(Response::Written { .. }) => &tally.ok,
                            Err(WireError::Overloaded { .. }) => &tally.overloaded,
                            Err(WireError::DeadlineExceeded) => &tally.deadline,
                            _ => &tally.other,
                        };
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("flood thread");
    }
}

/// Polls `/health/live` until `stop`; returns how many polls failed.
fn watch_liveness(admin: String, stop: Arc<AtomicBool>) -> thread::JoinHandle<(u64, u64)> {
    thread::spawn(move || {
        let (mut polls, mut failed) = (0, 0);
        while !stop.load(Ordering::Relaxed) {
            polls += 1;
            if http_status(&admin, "/health/live") != Some(200) {
                failed += 1;
            }
            thread::sleep(Duration::from_millis(50));
        }
        (polls, failed)
    })
}

/// The body of `GET /metrics`.
fn metrics(admin: &str) -> String {
    common::http_body(admin, "/metrics").expect("/metrics answers 200")
}

/// The value of one unlabelled or fully labelled sample.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{text}"))
}

/// Upper bound (seconds) of the refusal-time bucket holding quantile `q`.
fn refusal_quantile(text: &str, q: f64) -> f64 {
    let total = sample(text, "levee_refusal_duration_seconds_count");
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("levee_refusal_duration_seconds_bucket{le=\"")?;
            let (bound, count) = rest.split_once("\"} ")?;
            Some((
                bound.parse::<f64>().unwrap_or(f64::INFINITY),
                count.parse::<f64>().ok()?,
            ))
        })
        .find(|(_, count)| *count >= q * total)
        .map_or(f64::INFINITY, |(bound, _)| bound)
}

fn a_normal_write_and_read_succeed(node: &TestNode) {
    let rt = runtime();
    rt.block_on(async {
        let client = node.client();
        client
            .put(b"after-flood", b"v")
            .await
            .expect("write after the flood");
        let got = client
            .get(b"after-flood")
            .await
            .expect("read after the flood");
        assert_eq!(got.map(|v| v.value), Some(b"v".to_vec()));
    });
}

#[test]
fn a_flooded_node_sheds_fast_stays_live_and_completes_what_it_admits() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &SMALL_LIMITS);
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let liveness = watch_liveness(node.admin.clone(), stop.clone());

    // Control traffic during the flood: pings are never shed.
    let pinger = {
        let (addr, stop) = (node.addr.clone(), stop.clone());
        thread::spawn(move || {
            let mut conn = RawConn::handshaken(&addr);
            let mut answered = 0u64;
            for id in 1.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                conn.send_request(&RequestFrame {
                    id,
                    timeout_ms: 5_000,
                    request: Request::Client(ClientRequest::Ping),
                });
                let r = conn.read_response();
                assert!(matches!(r.result, Ok(Response::Pong { .. })), "{r:?}");
                answered += 1;
                thread::sleep(Duration::from_millis(20));
            }
            answered
        })
    };

    flood(&node.addr, &tally);
    stop.store(true, Ordering::Relaxed);
    let (polls, failed) = liveness.join().unwrap();
    let pings = pinger.join().unwrap();

    let (ok, overloaded, deadline, other) = (
        tally.ok.load(Ordering::Relaxed),
        tally.overloaded.load(Ordering::Relaxed),
        tally.deadline.load(Ordering::Relaxed),
        tally.other.load(Ordering::Relaxed),
    );
    let text = metrics(&node.admin);
    let (p90, p99) = (refusal_quantile(&text, 0.9), refusal_quantile(&text, 0.99));
    eprintln!(
        "flood: ok={ok} overloaded={overloaded} deadline={deadline} other={other} \
         pings={pings} liveness {failed}/{polls} failed, server refusal p90 <= {p90}s p99 <= {p99}s"
    );
    assert!(overloaded > 0, "the flood was never refused");
    assert!(ok > 0, "nothing was admitted");
    assert_eq!(deadline, 0, "admitted requests ran out of time");
    assert_eq!(other, 0, "unexpected answers");
    assert_eq!(failed, 0, "/health/live failed during the flood");
    assert!(polls > 10 && pings > 10);
    assert!(sample(&text, "levee_shed_requests_total{reason=\"queue_full\"}") > 0.0);
    // Refusing costs microseconds. Only p90 is asserted: this test runs 16
    // flood threads beside the node on as few as 2 cores, so OS preemption
    // lands in the last percent; the benchmark, with its load on other
    // cores, reports p99.
    assert!(p90 <= 0.001, "refusal p90 {p90}s (p99 {p99}s)");
    assert!(sample(&text, "levee_concurrency_limit_requests") <= 4.0);

    // The flood is over: the node serves normally at once.
    a_normal_write_and_read_succeed(&node);
    let text = metrics(&node.admin);
    assert_eq!(
        sample(&text, "levee_inflight_requests{class=\"foreground\"}"),
        0.0
    );
    assert_eq!(sample(&text, "levee_queued_requests"), 0.0);
    assert_eq!(sample(&text, "levee_inflight_bytes"), 0.0);
}

/// Under a lasting flood the node's wait queue stands, and freed slots go
/// to the newest waiter (adaptive LIFO), so admitted requests have barely
/// waited; the old waiters are refused.
#[test]
fn a_lasting_flood_serves_the_newest_waiter_first() {
    let dir = tempfile::tempdir().unwrap();
    // Standing after 10 ms rather than 100: the flood's connections send
    // in batches, and the queue must stay busy across a batch's gap.
    let flags: Vec<&str> = SMALL_LIMITS
        .iter()
        .copied()
        .chain(["--admission-queue-standing-ms", "10"])
        .collect();
    let node = TestNode::start(dir.path(), &flags);
    let tally = Arc::new(Tally::default());
    flood(&node.addr, &tally);
    let text = metrics(&node.admin);
    let (fifo, lifo) = (
        sample(&text, "levee_queue_granted_requests_total{order=\"fifo\"}"),
        sample(&text, "levee_queue_granted_requests_total{order=\"lifo\"}"),
    );
    eprintln!("queue grants: fifo {fifo}, lifo {lifo}");
    assert!(lifo > 0.0, "the standing queue never served newest first");
    assert_eq!(tally.other.load(Ordering::Relaxed), 0, "unexpected answers");
    a_normal_write_and_read_succeed(&node);
}

#[test]
fn flooding_the_leader_causes_no_election() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_cluster_with(dir.path(), 3, &SMALL_LIMITS);
    let before = status(&nodes[0]).expect("status before");
    let leader = before.leader.expect("a leader");
    let target = common::cluster::by_id(&nodes, &before, leader);

    let tally = Arc::new(Tally::default());
    flood(&nodes[target].addr, &tally);
    assert!(tally.overloaded.load(Ordering::Relaxed) > 0, "{tally:?}");
    assert_eq!(tally.deadline.load(Ordering::Relaxed), 0, "{tally:?}");

    for node in &nodes {
        let after = status(node).expect("status after");
        assert_eq!(after.leader, Some(leader), "leadership moved");
        assert_eq!(after.term, before.term, "an election happened");
    }
    a_normal_write_and_read_succeed(&nodes[target]);
}
