//! Cluster formation, leader failover, restarts and wiped nodes, with real
//! processes.

mod common;

use std::time::Duration;

use common::cluster::{
    FAST_RAFT, by_id, start_cluster, status, wait_for_members, wait_for_new_leader,
};
use common::{TestNode, wait_for};

#[test]
fn three_nodes_form_a_cluster_with_one_leader_and_zone_spread_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_cluster(dir.path(), 3);
    let view = wait_for_members(&nodes, 3);
    assert_eq!(view.voters.len(), 3, "the first three nodes are voters");
    let leaders: Vec<_> = nodes.iter().filter_map(status).map(|s| s.leader).collect();
    assert!(
        leaders.windows(2).all(|w| w[0] == w[1]),
        "one leader: {leaders:?}"
    );
    let map = &view.map;
    assert_eq!(map.partitions, 256);
    for (p, set) in map.assignment.iter().enumerate() {
        let mut zones: Vec<_> = set
            .iter()
            .map(|id| map.nodes[id].spec.zone.clone())
            .collect();
        zones.sort();
        zones.dedup();
        assert_eq!(
            zones.len(),
            3,
            "partition {p} has replicas in zones {zones:?}"
        );
    }
    assert_eq!(map.under_replicated(), 0);
}

#[test]
fn killing_the_leader_elects_a_new_one_and_map_changes_still_commit() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start_cluster(dir.path(), 3);
    let before = wait_for_members(&nodes, 3);
    let old_leader = before.leader.unwrap();
    let index = by_id(&nodes, &before, old_leader);
    nodes[index].kill();

    let live: Vec<&TestNode> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != index)
        .map(|(_, n)| n)
        .collect();
    let after = wait_for_new_leader(&live, old_leader);
    assert!(after.term > before.term);

    // A map change (a new node joining) commits under the new leader.
    let seeds = live
        .iter()
        .map(|n| n.addr.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let mut args = vec!["--join", seeds.as_str(), "--zone", "z4"];
    args.extend(FAST_RAFT);
    let fourth = TestNode::start_named(dir.path(), "n4", &args);
    let view = wait_for(
        "the new node in every live map",
        Duration::from_secs(60),
        || {
            let views: Vec<_> = live
                .iter()
                .chain([&&fourth])
                .filter_map(|n| status(n))
                .collect();
            let first = views.first()?.clone();
            (views.len() == 3
                && views
                    .iter()
                    .all(|v| v.map.nodes.len() == 4 && v.map.epoch == first.map.epoch))
            .then_some(first)
        },
    );
    assert!(view.map.epoch > before.map.epoch);
}

#[test]
fn a_restarted_node_rejoins_as_itself() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start_cluster(dir.path(), 3);
    let before = wait_for_members(&nodes, 3);
    let id_of_third = before.map.node_by_addr(&nodes[2].addr).unwrap().id;
    nodes[2].kill();
    nodes[2].restart();
    let after = wait_for_members(&nodes, 3);
    assert_eq!(after.map.nodes.len(), 3, "no new node was added");
    assert_eq!(
        after.map.node_by_addr(&nodes[2].addr).unwrap().id,
        id_of_third
    );
    let own = status(&nodes[2]).unwrap();
    assert_eq!(own.node_id, id_of_third);
    assert_eq!(own.map.cluster_id, before.map.cluster_id);
}

#[test]
fn a_full_cluster_restart_keeps_the_map() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start_cluster(dir.path(), 3);
    let before = wait_for_members(&nodes, 3);
    for node in &mut nodes {
        node.kill();
    }
    for node in &mut nodes {
        node.respawn();
    }
    for node in &mut nodes {
        node.wait_ready();
    }
    let after = wait_for_members(&nodes, 3);
    assert_eq!(after.map.cluster_id, before.map.cluster_id);
    assert_eq!(after.map.nodes, before.map.nodes);
    assert_eq!(after.map.assignment, before.map.assignment);
    assert!(after.map.epoch >= before.map.epoch);
}

#[test]
fn a_wiped_node_is_refused_with_a_clear_message_and_the_cluster_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start_cluster(dir.path(), 3);
    let before = wait_for_members(&nodes, 3);
    let wiped_id = before.map.node_by_addr(&nodes[1].addr).unwrap().id;
    nodes[1].kill();
    std::fs::remove_dir_all(&nodes[1].data_dir).unwrap();
    nodes[1].respawn();
    let exit = nodes[1].wait_exit(Duration::from_secs(60));
    assert!(!exit.success());
    let log = nodes[1].log();
    let expected = format!("already belongs to node {wiped_id}");
    assert!(log.contains(&expected), "log lacks {expected:?}:\n{log}");

    // The other two still have a leader and still commit changes.
    let live = [&nodes[0], &nodes[2]];
    let view = wait_for(
        "a leader among the survivors",
        Duration::from_secs(30),
        || status(live[0]).filter(|s| s.leader.is_some()),
    );
    assert_eq!(
        view.map.nodes.len(),
        3,
        "the wiped node was not added again"
    );
    let seeds = format!("{},{}", nodes[0].addr, nodes[2].addr);
    let mut args = vec!["--join", seeds.as_str(), "--zone", "z4"];
    args.extend(FAST_RAFT);
    let _fourth = TestNode::start_named(dir.path(), "n4", &args);
    wait_for(
        "the fourth node in the map",
        Duration::from_secs(60),
        || status(live[0]).filter(|s| s.map.nodes.len() == 4),
    );
}
