use levee_node::cluster::map::{ClusterMap, Command, NodeSpec, Settings};
use levee_node::cluster::status::{ClusterStatus, RecoveryStatus};

use super::*;

const NOW: u64 = 1_000_000;

/// A status of `nodes` Up nodes in three zones (node i in zone i % 3),
/// R = 3, from leader 1, built with the map's own commands.
fn status(nodes: u64) -> ClusterStatus {
    let spec = |i: u64| NodeSpec {
        addr: format!("127.0.0.{i}:7400"),
        admin: String::new(),
        zone: format!("zone-{}", i % 3 + 1),
        capacity: 1,
        join_token: i,
    };
    let mut map = ClusterMap::default();
    map.apply(&Command::Init {
        cluster_id: 1,
        partitions: 16,
        settings: Settings::default(),
        first: spec(1),
    });
    for i in 2..=nodes {
        map.apply(&Command::AddNode(spec(i)));
    }
    ClusterStatus {
        node_id: 1,
        leader: Some(1),
        term: 1,
        voters: vec![1, 2, 3],
        learners: Vec::new(),
        last_log_index: None,
        last_applied: None,
        replication: None,
        map,
        recovery: Some(RecoveryStatus {
            at_ms: NOW,
            ..RecoveryStatus::default()
        }),
        report: None,
    }
}

fn mark(s: &mut ClusterStatus, id: u64, state: NodeState) {
    s.map.apply(&Command::SetNodeState {
        id,
        state,
        at_ms: NOW - 20_000,
    });
}

/// `status(nodes)` with node `id` down, silent for `silence_ms`.
fn with_down(nodes: u64, id: u64, silence_ms: u64) -> ClusterStatus {
    let mut s = status(nodes);
    mark(&mut s, id, NodeState::Down);
    if let Some(r) = s.recovery.as_mut() {
        r.silence_ms.insert(id, silence_ms);
    }
    s
}

/// The check `code` of `h`; fails the test if there is none.
fn check<'a>(h: &'a Health, code: &str) -> &'a Check {
    h.checks
        .iter()
        .find(|c| c.code == code)
        .unwrap_or_else(|| panic!("no {code} in {h:?}"))
}

fn codes(h: &Health) -> Vec<&'static str> {
    h.checks.iter().map(|c| c.code).collect()
}

#[test]
fn a_healthy_cluster_is_ok_and_exits_0() {
    let h = evaluate(&status(5), NOW);
    assert_eq!(h.status, Severity::Ok);
    assert_eq!(h.status.exit_code(), 0);
    assert!(h.to_text(&status(5)).starts_with("health: HEALTH_OK"));
}

#[test]
fn a_down_node_says_since_its_last_beat_and_when_it_goes_out() {
    let s = with_down(5, 4, 42_000);
    let h = evaluate(&s, NOW);
    assert_eq!(h.status, Severity::Warn);
    assert_eq!(h.status.exit_code(), 1);
    let down = check(&h, "NODE_DOWN");
    let line = &down.detail[0];
    // Down for 42 s (the silence), not 20 s (the mark); out at 600 s.
    assert!(line.contains("down for 42s (last beat 42s ago)"), "{line}");
    assert!(line.contains("marked out in 9m18s"), "{line}");
    assert!(codes(&h).contains(&"PG_DEGRADED"), "{:?}", codes(&h));
}

#[test]
fn a_node_a_guard_holds_says_so_and_what_to_do() {
    let mut s = with_down(5, 3, 700_000);
    if let Some(r) = s.recovery.as_mut() {
        r.held.push((3, guard::ZONE.to_owned()));
    }
    let h = evaluate(&s, NOW);
    let stuck = check(&h, "NODE_NOT_OUTABLE");
    assert!(stuck.detail[0].contains("levee admin drain 3"), "{stuck:?}");
    assert!(stuck.detail[0].contains("whole zone is down"), "{stuck:?}");
    let down = check(&h, "NODE_DOWN");
    assert!(
        down.detail[0].contains("not marked out (see NODE_NOT_OUTABLE)"),
        "{down:?}"
    );
}

#[test]
fn a_node_alone_in_its_zone_is_known_not_outable_before_its_time_comes() {
    // 5 nodes: node 3 is alone in zone-1 (zones are i % 3 + 1).
    let s = with_down(5, 3, 30_000);
    let h = evaluate(&s, NOW);
    let stuck = check(&h, "NODE_NOT_OUTABLE");
    assert!(stuck.detail[0].contains("levee admin drain 3"), "{stuck:?}");
    let down = check(&h, "NODE_DOWN");
    assert!(!down.detail[0].contains("marked out in"), "{down:?}");
}

#[test]
fn a_cluster_smaller_than_r_is_degraded_not_unavailable() {
    // One node, R = 3: each partition has one replica, and W counts
    // over the replicas a partition has, so writes work.
    let h = evaluate(&status(1), NOW);
    assert_eq!(codes(&h), ["PG_DEGRADED"], "{h:?}");
}

#[test]
fn noout_is_a_warning() {
    let mut s = status(3);
    s.map.recovery.noout = true;
    let h = evaluate(&s, NOW);
    assert_eq!(codes(&h), ["NOOUT_SET"]);
    assert_eq!(h.status, Severity::Warn);
}

#[test]
fn no_leader_or_partitions_below_quorum_are_errors_and_exit_2() {
    let mut s = status(3);
    s.leader = None;
    let h = evaluate(&s, NOW);
    assert_eq!(h.status, Severity::Err);
    assert_eq!(h.status.exit_code(), 2);
    assert_eq!(codes(&h)[0], "NO_LEADER");

    // Two of three replicas down: one live, below W = 2.
    let mut s = status(3);
    mark(&mut s, 2, NodeState::Down);
    mark(&mut s, 3, NodeState::Down);
    let h = evaluate(&s, NOW);
    assert_eq!(h.status, Severity::Err);
    assert_eq!(
        codes(&h)[0],
        "PG_UNAVAILABLE",
        "errors first: {:?}",
        codes(&h)
    );
    let text = h.to_text(&s);
    assert!(
        text.starts_with(
            "health: HEALTH_ERR\n  PG_UNAVAILABLE: 16 partitions below their write quorum: writes to them fail"
        ),
        "{text}"
    );
}

#[test]
fn an_expired_certificate_is_an_error_an_expiring_one_a_warning() {
    use levee_node::cluster::status::{CertReport, NodeReport};
    let mut s = status(3);
    if let Some(r) = s.recovery.as_mut() {
        for (id, at) in [(1, NOW - 1000), (2, NOW + 86_400_000)] {
            r.reports.insert(
                id,
                NodeReport {
                    cert: Some(CertReport {
                        not_after_ms: at,
                        warn: true,
                    }),
                    ..NodeReport::default()
                },
            );
        }
    }
    let h = evaluate(&s, NOW);
    assert_eq!(codes(&h), ["CERT_EXPIRED", "CERT_EXPIRING"]);
    assert!(
        h.checks[1].detail[0].contains("expires in 24h00m"),
        "{:?}",
        h.checks[1]
    );
}
