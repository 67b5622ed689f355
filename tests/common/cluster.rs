//! Several real nodes forming one cluster.

use std::path::Path;
use std::time::Duration;

use levee_node::cluster::status::ClusterStatus;

use super::{TestNode, wait_for};

/// Fast Raft timings so elections in tests take well under a second.
pub const FAST_RAFT: [&str; 4] = [
    "--raft-heartbeat-ms",
    "100",
    "--raft-election-timeout-ms",
    "500",
];

/// How long a cluster gets to form or heal.
pub const CLUSTER_DEADLINE: Duration = Duration::from_secs(60);

/// Starts node 1 with `--init`, then `n - 1` nodes joining it, each in its
/// own zone, and waits until all are Raft members and a leader is known.
pub fn start_cluster(dir: &Path, n: usize) -> Vec<TestNode> {
    start_cluster_with(dir, n, &[])
}

/// [`start_cluster`] with extra flags for every node.
pub fn start_cluster_with(dir: &Path, n: usize, extra: &[&str]) -> Vec<TestNode> {
    start_cluster_failing(dir, n, extra, None)
}

/// [`start_cluster_with`], every node with `FAILPOINTS` set to
/// `failpoints` (if any).
pub fn start_cluster_failing(
    dir: &Path,
    n: usize,
    extra: &[&str],
    failpoints: Option<&str>,
) -> Vec<TestNode> {
    let mut init_args = vec!["--init", "--zone", "z1"];
    init_args.extend(FAST_RAFT);
    init_args.extend(extra);
    let first = TestNode::start_named_with_failpoints(dir, "n1", &init_args, failpoints);
    let seed = first.addr.clone();
    let mut nodes = vec![first];
    for i in 2..=n {
        let zone = format!("z{i}");
        let mut args = vec!["--join", seed.as_str(), "--zone", zone.as_str()];
        args.extend(FAST_RAFT);
        args.extend(extra);
        nodes.push(TestNode::start_named_with_failpoints(
            dir,
            &format!("n{i}"),
            &args,
            failpoints,
        ));
    }
    wait_for_members(&nodes, n);
    nodes
}

/// Starts node 1 with `--init` in `zones[0]`, then one joining node per
/// further zone entry, and waits until all are members.
pub fn start_zoned(dir: &Path, zones: &[&str], extra: &[&str]) -> Vec<TestNode> {
    let mut init_args = vec!["--init", "--zone", zones[0]];
    init_args.extend(FAST_RAFT);
    init_args.extend(extra);
    let first = TestNode::start_named(dir, "n1", &init_args);
    let seed = first.addr.clone();
    let mut nodes = vec![first];
    for (i, zone) in zones.iter().enumerate().skip(1) {
        let mut args = vec!["--join", seed.as_str(), "--zone", zone];
        args.extend(FAST_RAFT);
        args.extend(extra);
        nodes.push(TestNode::start_named(dir, &format!("n{}", i + 1), &args));
    }
    wait_for_members(&nodes, zones.len());
    nodes
}

/// The status as one node sees it, if it answers.
pub fn status(node: &TestNode) -> Option<ClusterStatus> {
    let rt = super::runtime();
    rt.block_on(async { node.client().status().await.ok() })
}

/// Waits until some node reports a leader, `n` nodes in the map, `n`
/// Raft members with the expected number of voters, and every live node in `nodes` agrees on leader and
/// epoch. Returns the leader's view.
pub fn wait_for_members(nodes: &[TestNode], n: usize) -> ClusterStatus {
    wait_for("cluster members to agree", CLUSTER_DEADLINE, || {
        let views: Vec<ClusterStatus> = nodes.iter().filter_map(status).collect();
        let first = views.first()?.clone();
        let leader = first.leader?;
        let agreed = views.len() == nodes.len()
            && views
                .iter()
                .all(|v| v.leader == Some(leader) && v.map.epoch == first.map.epoch);
        // Voters are promoted in pairs once caught up (see voters.rs):
        // with the default target of 3, one voter below 3 nodes.
        let voters = if n >= 3 { 3 } else { 1 };
        let complete = first.map.nodes.len() >= n
            && first.voters.len() + first.learners.len() >= n
            && first.voters.len() == voters;
        (agreed && complete).then_some(first)
    })
}

/// Waits until the nodes in `live` agree on a leader other than
/// `not`, and returns the status they agree on.
pub fn wait_for_new_leader(live: &[&TestNode], not: u64) -> ClusterStatus {
    wait_for("a new leader", CLUSTER_DEADLINE, || {
        let views: Vec<ClusterStatus> = live.iter().filter_map(|n| status(n)).collect();
        let first = views.first()?.clone();
        let leader = first.leader.filter(|l| *l != not)?;
        (views.len() == live.len() && views.iter().all(|v| v.leader == Some(leader)))
            .then_some(first)
    })
}

/// The node whose Raft id is `id`.
pub fn by_id(nodes: &[TestNode], status: &ClusterStatus, id: u64) -> usize {
    let addr = &status.map.nodes.get(&id).expect("node in map").spec.addr;
    nodes
        .iter()
        .position(|n| &n.addr == addr)
        .expect("node by address")
}
