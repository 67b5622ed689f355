//! The heartbeat every node sends the Raft leader: "alive", with its load
//! and the progress of the copies it is receiving.
//!
//! Separate from Raft's own heartbeats on purpose: Raft only reaches
//! voters and learners it replicates to, says nothing about load, and its
//! timing is tuned for elections, not for deciding that a node's data must
//! be rebuilt.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::cluster::map::NodeState;
use crate::cluster::status::NodeReport;
use crate::metrics::ClusterGauges;
use crate::node::Node;
use crate::proto::{NodeRequest, Response};
use crate::raft::Cluster;

/// What this node would report now.
pub fn report(node: &Node, cluster: &Cluster) -> NodeReport {
    let pressure = node.admission().pressure();
    let pressure_permille = if pressure.is_finite() {
        (pressure.clamp(0.0, 1.0) * 1000.0).round() as u16
    } else {
        1000
    };
    let metrics = node.admission().metrics();
    NodeReport {
        node: cluster.node_id(),
        epoch: cluster.map().epoch,
        pressure_permille,
        recovery_bytes_sent: metrics.recovery_bytes_sent(),
        recovery_bytes_received: metrics.recovery_bytes_received(),
        transfers: node.transfers().progress(),
        cert: node.cert_report(std::time::SystemTime::now()),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        uptime_ms: u64::try_from(node.uptime().as_millis()).unwrap_or(u64::MAX),
        data_bytes: node.storage().bytes_on_disk(),
        hints_pending_bytes: node.hints().pending().iter().map(|(_, bytes)| bytes).sum(),
        limit: u32::try_from(node.admission().limit()).unwrap_or(u32::MAX),
        requests_total: metrics.requests_total(),
        shed_total: metrics.shed_total(),
    }
}

/// Puts this node's view of the cluster, and the hints it holds, into
/// its metrics.
fn export_gauges(node: &Node, cluster: &Cluster) {
    let hints = node.hints().pending().iter().map(|(_, bytes)| bytes).sum();
    node.admission().metrics().set_hints_pending(hints);
    let map = cluster.map();
    let count = |state| map.nodes.values().filter(|n| n.state == state).count() as u64;
    node.admission().metrics().set_cluster(ClusterGauges {
        under_replicated: map.under_replicated() as u64,
        moves_in_flight: map.moves.len() as u64,
        nodes_up: count(NodeState::Up),
        nodes_down: count(NodeState::Down),
        nodes_out: count(NodeState::Out),
        nodes_draining: count(NodeState::Draining),
        quarantined_shapes: map.quarantine.active(crate::hlc::wall_ms()).count() as u64,
    });
}

/// Sends a heartbeat every `every` until shutdown. The leader records its
/// own directly. A beat that cannot be delivered is simply lost: the next
/// one follows, and silence is exactly what the detector measures.
pub async fn run(
    node: Arc<Node>,
    cluster: Arc<Cluster>,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        export_gauges(&node, &cluster);
        // A breaker's open → half-open turn comes with time alone, not
        // with a call: the gauge is refreshed here too.
        node.peers().export();
        let report = report(&node, &cluster);
        if cluster.is_leader() {
            cluster.handle_heartbeat(report);
            continue;
        }
        let Some((leader, addr)) = cluster.leader() else {
            continue;
        };
        // One interval at most: a beat later than that is worth less than
        // the next one. Past the breaker: silence is what the leader's
        // detector measures, so a beat is never held back here.
        match node
            .peers()
            .request_past_breaker(&addr, NodeRequest::Heartbeat(report), every)
            .await
        {
            Ok(Response::Ack) => {}
            Ok(other) => tracing::debug!(leader, ?other, "unexpected answer to a heartbeat"),
            Err(e) => tracing::debug!(leader, error = %e, "heartbeat not delivered"),
        }
    }
}
