//! Load-aware replica choice through real processes: a client spreads a
//! key's requests over its replicas instead of sending them all to the
//! first in placement order, and keeps placement order when told to.
//! (How a slow node loses its share is measured by
//! `benches/scenarios/slow-node.toml`; the scoring itself is unit- and
//! property-tested in `client/load.rs`.)

mod common;

use std::sync::Arc;

use common::cluster::{start_cluster, wait_for_members};
use common::{TestNode, runtime};
use levee_node::client::{Client, ClientConfig, Routing};

/// Client gets each node has coordinated so far.
fn gets_coordinated(node: &TestNode) -> u64 {
    let text = common::http_body(&node.admin, "/metrics").expect("metrics");
    text.lines()
        .filter(|l| l.starts_with("levee_requests_total{") && l.contains("op=\"get\""))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Sends `n` gets of one key, 8 at a time (a client with some load on
/// it: what load-aware routing is for), and counts where they went.
fn shares(
    nodes: &[TestNode],
    client: &Arc<Client>,
    rt: &tokio::runtime::Runtime,
    n: u64,
) -> Vec<u64> {
    let before: Vec<u64> = nodes.iter().map(gets_coordinated).collect();
    rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for worker in 0..8 {
            let client = client.clone();
            tasks.spawn(async move {
                for _ in (worker..n).step_by(8) {
                    client.get(b"hot").await.expect("get");
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("worker");
        }
    });
    nodes
        .iter()
        .zip(before)
        .map(|(node, before)| gets_coordinated(node) - before)
        .collect()
}

#[test]
fn a_hot_key_is_spread_over_its_replicas_unless_placement_order_is_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_cluster(dir.path(), 3);
    wait_for_members(&nodes, 3);
    let rt = runtime();
    let client = |routing| {
        Arc::new(Client::new(ClientConfig {
            endpoints: nodes.iter().map(|n| n.addr.clone()).collect(),
            routing,
            ..common::certs::client_config()
        }))
    };
    let placement = client(Routing::PlacementOrder);
    rt.block_on(placement.put(b"hot", b"value")).expect("put");

    // With R = 3 on 3 nodes every node holds the key.
    let fixed = shares(&nodes, &placement, &rt, 150);
    assert_eq!(fixed.iter().sum::<u64>(), 150, "{fixed:?}");
    assert_eq!(
        fixed.iter().filter(|&&n| n > 0).count(),
        1,
        "placement order: one node coordinates every get: {fixed:?}"
    );

    let aware = client(Routing::LoadAware);
    let spread = shares(&nodes, &aware, &rt, 600);
    eprintln!("load-aware shares: {spread:?}");
    assert_eq!(spread.iter().sum::<u64>(), 600, "{spread:?}");
    assert!(
        spread.iter().all(|&n| n >= 60),
        "load-aware: every replica coordinates a share: {spread:?}"
    );
}
