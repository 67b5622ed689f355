//! `levee status`: what the cluster looks like, from its leader when it
//! can be reached.

use levee_node::client::{Client, ClientConfig};
use levee_node::cluster::map::NodeState;
use levee_node::cluster::status::ClusterStatus;

use crate::Output;

/// Log entries a member may trail the leader by and still count as
/// keeping up.
const MAX_LAG: u64 = 64;

/// Prints the status; fails if no node answers.
pub async fn run(config: ClientConfig, output: Output) -> anyhow::Result<()> {
    let status = fetch(config).await?;
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&to_json(&status))?),
        Output::Text => print!("{}", to_text(&status)),
    }
    Ok(())
}

/// The status from the leader if the answering node knows one (only the
/// leader knows how far each member has replicated), else from whichever
/// node answered.
async fn fetch(config: ClientConfig) -> anyhow::Result<ClusterStatus> {
    let first = Client::new(config.clone()).status().await?;
    if first.leader == Some(first.node_id) {
        return Ok(first);
    }
    let leader_addr = first
        .leader
        .and_then(|id| first.map.nodes.get(&id))
        .map(|n| n.spec.addr.clone());
    let Some(addr) = leader_addr else {
        return Ok(first);
    };
    let leader = Client::new(ClientConfig {
        endpoints: vec![addr],
        ..config
    });
    Ok(leader.status().await.unwrap_or(first))
}

fn health(status: &ClusterStatus) -> String {
    let map = &status.map;
    let live: Vec<_> = map
        .nodes
        .values()
        .filter(|n| n.state != NodeState::Removed)
        .collect();
    let up = live.iter().filter(|n| n.state == NodeState::Up).count();
    let lagging = status.lagging(MAX_LAG);
    let under = map.under_replicated();
    let mut problems = Vec::new();
    if status.leader.is_none() {
        problems.push("no leader".to_string());
    }
    if up < live.len() {
        problems.push(format!(
            "{} of {} nodes not up",
            live.len() - up,
            live.len()
        ));
    }
    if !lagging.is_empty() {
        problems.push(format!("not replicating: nodes {lagging:?}"));
    }
    if under > 0 {
        problems.push(format!("{under} partitions under-replicated"));
    }
    if problems.is_empty() {
        format!(
            "ok: {up}/{} nodes up, leader {}, 0 under-replicated partitions",
            live.len(),
            status.leader.map_or("-".into(), |l| l.to_string())
        )
    } else {
        format!("degraded: {}", problems.join("; "))
    }
}

fn to_text(status: &ClusterStatus) -> String {
    let map = &status.map;
    let mut out = format!(
        "cluster {:016x}  epoch {}  leader {}  term {}  partitions {}  R={} W={}\n",
        map.cluster_id,
        map.epoch,
        status.leader.map_or("-".into(), |l| l.to_string()),
        status.term,
        map.partitions,
        map.settings.replicas,
        map.settings.write_quorum,
    );
    out.push_str(&format!(
        "{:<4} {:<22} {:<10} {:<9} {:<8} {:>10}\n",
        "ID", "ADDRESS", "ZONE", "STATE", "ROLE", "PARTITIONS"
    ));
    for node in map.nodes.values() {
        out.push_str(&format!(
            "{:<4} {:<22} {:<10} {:<9} {:<8} {:>10}\n",
            node.id,
            node.spec.addr,
            node.spec.zone,
            node.state.to_string(),
            status.role(node.id).to_string(),
            map.partitions_held(node.id)
        ));
    }
    out.push_str(&format!("health: {}\n", health(status)));
    out
}

fn to_json(status: &ClusterStatus) -> serde_json::Value {
    let map = &status.map;
    let lagging = status.lagging(MAX_LAG);
    let nodes: Vec<_> = map
        .nodes
        .values()
        .map(|node| {
            serde_json::json!({
                "id": node.id,
                "addr": node.spec.addr,
                "admin": node.spec.admin,
                "zone": node.spec.zone,
                "capacity": node.spec.capacity,
                "state": node.state.to_string(),
                "role": status.role(node.id).to_string(),
                "partitions": map.partitions_held(node.id),
                "replicating": status.replication.as_ref().map(|_| !lagging.contains(&node.id)),
            })
        })
        .collect();
    serde_json::json!({
        "cluster_id": format!("{:016x}", map.cluster_id),
        "epoch": map.epoch,
        "leader": status.leader,
        "term": status.term,
        "answered_by": status.node_id,
        "partitions": map.partitions,
        "replicas": map.settings.replicas,
        "write_quorum": map.settings.write_quorum,
        "read_quorum": map.settings.read_quorum,
        "under_replicated": map.under_replicated(),
        "health": health(status),
        "nodes": nodes,
    })
}
