//! A node's calls to its peers behind circuit breakers, with real
//! processes: a frozen replica costs its coordinators their first timeouts,
//! then their calls to it are refused at once (and its writes hinted),
//! and its breakers close once it is back; a killed replica, whose
//! connections are refused at once anyway, opens no breaker, so it is
//! written to again as soon as it listens. Everything is read from the
//! nodes' counters, never from how long something took.

mod common;

use std::time::Duration;

use common::cluster::{start_cluster_with, wait_for_members};
use common::{TestNode, metric, runtime, wait_for};
use levee_node::client::{Client, ClientConfig};

/// Long enough that no node is marked Down during a test: a Down replica
/// is not called at all (its writes go straight to hints), and the
/// breaker is what is tested here.
const NEVER_DOWN: [&str; 2] = ["--recovery", "down_after=120000"];

/// How long a condition polled below may take.
const DEADLINE: Duration = Duration::from_secs(90);

/// A client of the nodes that keep running (it learns the victim's
/// address from their map). A frozen node answers nothing, so its
/// attempts give up quickly.
fn client_for(nodes: &[&TestNode]) -> Client {
    Client::new(ClientConfig {
        endpoints: nodes.iter().map(|n| n.addr.clone()).collect(),
        attempt_timeout: Duration::from_millis(300),
        ..common::certs::client_config()
    })
}

/// `name`'s value on `node`'s `/metrics`, summed over its labels (0 if
/// absent or unreadable).
fn counter(node: &TestNode, name: &str) -> f64 {
    node.admin_get("/metrics")
        .and_then(|a| metric(&a.body, name))
        .unwrap_or(0.0)
}

/// `name` summed over `nodes`.
fn sum(nodes: &[&TestNode], name: &str) -> f64 {
    nodes.iter().map(|n| counter(n, name)).sum()
}

const REFUSED: &str = "levee_peer_breaker_refused_requests_total";
const TIMED_OUT: &str = "levee_peer_timed_out_requests_total";
const NOT_CLOSED: &str = "levee_peer_breaker_nodes";

#[test]
fn a_frozen_replica_costs_its_first_timeouts_then_its_calls_are_refused_until_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_cluster_with(dir.path(), 3, &NEVER_DOWN);
    wait_for_members(&nodes, 3);
    // R = 3 on three nodes: every write's coordinator (node 1 or 2, the
    // client keeps away from the frozen one) also calls node 3.
    let (victim, live) = (&nodes[2], [&nodes[0], &nodes[1]]);
    let victim_id = runtime()
        .block_on(live[0].client().map())
        .unwrap()
        .node_by_addr(&victim.addr)
        .unwrap()
        .id;
    let rt = runtime();
    let client = client_for(&live);
    let put = |key: String, value: &str| {
        rt.block_on(client.put(key.as_bytes(), value.as_bytes()))
            .unwrap_or_else(|e| panic!("put {key} with one replica frozen: {e}"))
    };
    for i in 0..20 {
        put(format!("warm{i}"), "before");
    }
    assert_eq!(sum(&live, REFUSED), 0.0, "nothing refused while all answer");

    let stopped = victim.stop();
    // The first calls to the frozen replica wait for their timeouts (each
    // write still succeeds: W = 2 of 3); once five in a row have, the
    // coordinator's breaker opens and its calls are refused at once.
    let mut written = 0;
    wait_for("calls to the frozen replica refused", DEADLINE, || {
        put(format!("k{written}"), "during");
        written += 1;
        (sum(&live, REFUSED) >= 20.0).then_some(())
    });
    assert!(
        sum(&live, NOT_CLOSED) >= 1.0,
        "a coordinator holds the frozen peer's breaker open or half-open"
    );
    // From here on, the frozen replica costs (nearly) nothing: of 200 more
    // writes, each calling it once, almost all are refused rather than
    // sent to wait for a timeout (what does go out are the probes, one per
    // cool-down of 1 s or more).
    let (refused, timed_out) = (sum(&live, REFUSED), sum(&live, TIMED_OUT));
    for _ in 0..200 {
        put(format!("k{written}"), "during");
        written += 1;
    }
    let refused = sum(&live, REFUSED) - refused;
    let timed_out = sum(&live, TIMED_OUT) - timed_out;
    assert!(
        refused >= 150.0 && timed_out <= 50.0,
        "of 200 calls to the frozen replica {refused} were refused and {timed_out} timed out"
    );

    stopped.resume();
    // Back: the next probe of each coordinator is answered and its breaker
    // closes (writes go on meanwhile: probes ride on them).
    wait_for("every breaker closed again", DEADLINE, || {
        put(format!("k{written}"), "during");
        written += 1;
        (sum(&live, NOT_CLOSED) == 0.0).then_some(())
    });
    // The writes refused meanwhile were hinted, and the hints reach it.
    wait_for("the frozen replica has every write", DEADLINE, || {
        let missing = (0..written).find(|i| {
            let key = format!("k{i}");
            let got = rt
                .block_on(client.get_from(victim_id, key.as_bytes()))
                .ok()
                .flatten();
            got.is_none_or(|v| v.value != b"during")
        });
        missing.is_none().then_some(())
    });
}

#[test]
fn a_killed_replica_opens_no_breaker_and_is_written_to_once_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start_cluster_with(dir.path(), 3, &NEVER_DOWN);
    wait_for_members(&nodes, 3);
    let rt = runtime();
    let client = {
        let live = [&nodes[0], &nodes[1]];
        client_for(&live)
    };
    let put = |key: String| {
        rt.block_on(client.put(key.as_bytes(), b"v"))
            .unwrap_or_else(|e| panic!("put {key} with one replica killed: {e}"))
    };
    nodes[2].kill();
    // Its connections are refused at once: nothing to save, no breaker.
    for i in 0..200 {
        put(format!("k{i}"));
    }
    let live = [&nodes[0], &nodes[1]];
    assert_eq!(sum(&live, REFUSED), 0.0);
    assert_eq!(sum(&live, NOT_CLOSED), 0.0);
    nodes[2].restart();
    // Written to as soon as it listens: replica writes reach it (counted
    // in its own requests) while the clients still avoid it.
    let replicated = |node: &TestNode| {
        node.admin_get("/metrics")
            .map(|a| {
                a.body
                    .lines()
                    .filter(|l| {
                        l.starts_with("levee_requests_total{") && l.contains("op=\"replicate\"")
                    })
                    .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
                    .sum::<f64>()
            })
            .unwrap_or(0.0)
    };
    let mut i = 200;
    wait_for(
        "replica writes reaching the restarted node",
        DEADLINE,
        || {
            put(format!("k{i}"));
            i += 1;
            (replicated(&nodes[2]) > 0.0).then_some(())
        },
    );
}
