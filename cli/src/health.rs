//! Cluster health as Ceph reports it: `HEALTH_OK`, `HEALTH_WARN` or
//! `HEALTH_ERR`, one check per kind of problem with a code and a summary,
//! and a detail line per node or group of partitions saying what is
//! wrong, what the cluster will do about it and when, and what an
//! operator can do. `levee status --check` exits 0, 1 or 2 by it, like
//! `etcdctl endpoint health` and `ceph health`.
//!
//! Pure: a status and the time in, checks out.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use levee_node::cluster::map::NodeState;
use levee_node::cluster::status::ClusterStatus;
use levee_node::recovery::detector::guard;
use serde::Serialize;

/// Log entries a member may trail the leader by and still count as
/// keeping up.
pub const MAX_LAG: u64 = 64;

/// How bad a check is; the cluster's health is its worst check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Severity {
    /// Nothing to do.
    #[serde(rename = "HEALTH_OK")]
    Ok,
    /// Degraded but serving: redundancy lost, a guard holding, a flag set.
    #[serde(rename = "HEALTH_WARN")]
    Warn,
    /// Some requests fail, or will: no leader, partitions below their
    /// write quorum, an expired certificate.
    #[serde(rename = "HEALTH_ERR")]
    Err,
}

impl Severity {
    /// `HEALTH_OK`, `HEALTH_WARN`, `HEALTH_ERR`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ok => "HEALTH_OK",
            Self::Warn => "HEALTH_WARN",
            Self::Err => "HEALTH_ERR",
        }
    }

    /// The exit code of `levee status --check`: 0, 1, 2.
    pub fn exit_code(self) -> u8 {
        self as u8
    }
}

/// One kind of problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Stable name, for scripts and alerts: `NODE_DOWN`, `NOOUT_SET`…
    pub code: &'static str,
    /// How bad.
    pub severity: Severity,
    /// One line.
    pub summary: String,
    /// One line per node, partition group or item.
    pub detail: Vec<String>,
}

/// Every check that fails, worst first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Health {
    /// The worst severity among the checks, `HEALTH_OK` when none.
    pub status: Severity,
    /// The failing checks.
    pub checks: Vec<Check>,
}

impl Health {
    /// The text of `levee status`'s health section.
    pub fn to_text(&self, status: &ClusterStatus) -> String {
        let mut out = String::new();
        if self.checks.is_empty() {
            let live = live_nodes(status);
            let _ = writeln!(
                out,
                "health: HEALTH_OK ({live}/{live} nodes up, leader {}, every partition fully replicated)",
                status.leader.map_or("-".into(), |l| l.to_string())
            );
            return out;
        }
        let _ = writeln!(out, "health: {}", self.status.name());
        for check in &self.checks {
            let _ = writeln!(out, "  {}: {}", check.code, check.summary);
            for line in &check.detail {
                let _ = writeln!(out, "    {line}");
            }
        }
        out
    }
}

fn live_nodes(status: &ClusterStatus) -> usize {
    status
        .map
        .nodes
        .values()
        .filter(|n| n.state != NodeState::Removed)
        .count()
}

/// "42s", "3m05s", "2h10m".
pub fn duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// "31.0 MiB", "12.5 KiB".
pub fn bytes(n: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    if n as f64 >= MIB {
        format!("{:.1} MiB", n as f64 / MIB)
    } else {
        format!("{:.1} KiB", n as f64 / 1024.0)
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// The cluster's health from `status` at `now_ms` (Unix ms).
pub fn evaluate(status: &ClusterStatus, now_ms: u64) -> Health {
    let mut checks = Vec::new();
    let map = &status.map;
    let settings = &map.recovery;
    let recovery = status.recovery.as_ref();
    let node_name = |id: u64| match map.nodes.get(&id) {
        Some(n) => format!("node {id} ({}, {})", n.spec.addr, n.spec.zone),
        None => format!("node {id}"),
    };
    if status.leader.is_none() {
        checks.push(Check {
            code: "NO_LEADER",
            severity: Severity::Err,
            summary: "no Raft leader: the map cannot change (no node marked down or out, no copy started, no admin command applied)".into(),
            detail: vec![format!(
                "asked node {}; a majority of the voters ({:?}) must be up and reachable to elect one",
                status.node_id, status.voters
            )],
        });
    }

    // Why a down node will not be marked out: the guard the leader
    // reports holding it, or, before its out time comes (the leader only
    // reports a guard once it applies), the one that will: so the reason
    // and the remedy show from the first minute, not after ten.
    let held = |id: u64| -> Option<String> {
        if let Some((_, why)) = recovery.and_then(|r| r.held.iter().find(|(n, _)| *n == id)) {
            return Some(why.clone());
        }
        predicted_guard(status, id).map(str::to_owned)
    };
    let silence = |id: u64| recovery.and_then(|r| r.silence_ms.get(&id).copied());
    let down: Vec<u64> = map
        .nodes
        .values()
        .filter(|n| n.state == NodeState::Down)
        .map(|n| n.id)
        .collect();
    if !down.is_empty() {
        let detail = down
            .iter()
            .map(|&id| {
                // Down for as long as it has been silent: the mark came
                // `down_after` later than the silence began.
                let (down_for, last_beat) = match silence(id) {
                    Some(ms) => (duration(ms), format!("last beat {} ago", duration(ms))),
                    None => ("?".into(), "no heartbeat seen by this leader".into()),
                };
                let outlook = match held(id) {
                    Some(why) if why == guard::NOOUT => {
                        "not marked out: the noout flag is set".to_owned()
                    }
                    Some(_) => "not marked out (see NODE_NOT_OUTABLE)".to_owned(),
                    None => match silence(id) {
                        Some(ms) => format!(
                            "marked out in {} (down_out_interval {}), then its partitions are copied elsewhere",
                            duration(settings.down_out_interval_ms.saturating_sub(ms)),
                            duration(settings.down_out_interval_ms)
                        ),
                        None => "marked out after down_out_interval of silence".into(),
                    },
                };
                format!("{}: down for {down_for} ({last_beat}); {outlook}", node_name(id))
            })
            .collect();
        checks.push(Check {
            code: "NODE_DOWN",
            severity: Severity::Warn,
            summary: format!("{} down", plural(down.len(), "node", "nodes")),
            detail,
        });
    }

    // A guard holding a node that will never be marked out on its own:
    // nothing will be copied, and only the operator can change that.
    let stuck: Vec<(u64, String)> = down
        .iter()
        .filter_map(|&id| held(id).map(|why| (id, why)))
        .filter(|(_, why)| why != guard::NOOUT)
        .collect();
    if !stuck.is_empty() {
        checks.push(Check {
            code: "NODE_NOT_OUTABLE",
            severity: Severity::Warn,
            summary: format!(
                "{} held in by a guard: nothing will be re-replicated unless you act",
                plural(stuck.len(), "node", "nodes")
            ),
            detail: stuck
                .iter()
                .map(|(id, why)| {
                    format!(
                        "{}: {}; if it is gone for good, `levee admin drain {id}`",
                        node_name(*id),
                        guard_text(why)
                    )
                })
                .collect(),
        });
    }

    if settings.noout {
        checks.push(Check {
            code: "NOOUT_SET",
            severity: Severity::Warn,
            summary: "noout flag set: no down node will be marked out, nothing is re-replicated"
                .into(),
            detail: vec!["`levee admin noout off` when the maintenance is over".into()],
        });
    }

    for (state, code, what) in [
        (
            NodeState::Out,
            "NODE_OUT",
            "out: its partitions are copied to other nodes",
        ),
        (
            NodeState::Draining,
            "NODE_DRAINING",
            "draining: its partitions are copied off it",
        ),
    ] {
        let nodes: Vec<String> = map
            .nodes
            .values()
            .filter(|n| n.state == state)
            .map(|n| {
                let since = recovery
                    .filter(|_| n.since_ms > 0)
                    .map(|r| format!(" for {}", duration(r.at_ms.saturating_sub(n.since_ms))))
                    .unwrap_or_default();
                format!(
                    "{}: {state}{since}, holds {} partitions",
                    node_name(n.id),
                    map.partitions_held(n.id)
                )
            })
            .collect();
        if !nodes.is_empty() {
            checks.push(Check {
                code,
                severity: Severity::Warn,
                summary: format!("{} {what}", plural(nodes.len(), "node", "nodes")),
                detail: nodes,
            });
        }
    }

    let suspects: Vec<String> = recovery
        .map(|r| {
            r.suspects
                .iter()
                .map(|id| {
                    format!(
                        "{}: silent for {} (marked down after {})",
                        node_name(*id),
                        silence(*id).map_or("?".into(), duration),
                        duration(settings.down_after_ms)
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    if !suspects.is_empty() {
        checks.push(Check {
            code: "NODE_SUSPECT",
            severity: Severity::Warn,
            summary: format!(
                "{} missing heartbeats",
                plural(suspects.len(), "node", "nodes")
            ),
            detail: suspects,
        });
    }

    // Below its write quorum, a partition refuses writes; the quorum is
    // W of the replicas it has (a cluster smaller than R has fewer), as
    // the coordinator counts it.
    let quorum = usize::from(map.settings.write_quorum);
    let mut below: BTreeMap<usize, usize> = BTreeMap::new();
    let mut degraded: BTreeMap<usize, usize> = BTreeMap::new();
    for p in 0..map.partitions {
        let live = map.live_replicas(p);
        let needed = quorum.clamp(1, map.replicas(p).len().max(1));
        if live < needed {
            *below.entry(live).or_default() += 1;
        } else if live < usize::from(map.settings.replicas) {
            *degraded.entry(live).or_default() += 1;
        }
    }
    // One check per group of partitions by live replicas left.
    let groups = |code: &'static str,
                  severity,
                  summary: String,
                  by_live: BTreeMap<usize, usize>| Check {
        code,
        severity,
        summary,
        detail: by_live
            .iter()
            .map(|(live, n)| format!("{} with {live} live", plural(*n, "partition", "partitions")))
            .collect(),
    };
    let count = |by_live: &BTreeMap<usize, usize>| {
        plural(by_live.values().sum(), "partition", "partitions")
    };
    if !below.is_empty() {
        let summary = format!(
            "{} below their write quorum: writes to them fail",
            count(&below)
        );
        checks.push(groups("PG_UNAVAILABLE", Severity::Err, summary, below));
    }
    if !degraded.is_empty() {
        let summary = format!(
            "{} with fewer than {} live replicas",
            count(&degraded),
            map.settings.replicas
        );
        checks.push(groups("PG_DEGRADED", Severity::Warn, summary, degraded));
    }

    if let Some(r) = recovery
        && (!map.moves.is_empty() || r.waiting > 0)
    {
        let eta = match r.eta_s {
            Some(s) => format!("ETA {}", duration(s * 1000)),
            None => "ETA unknown until a copy finishes".into(),
        };
        checks.push(Check {
            code: "RECOVERY",
            severity: Severity::Warn,
            summary: format!(
                "{} in flight (max {}), {} waiting; {}/s sent (limit {}/s per sending node); {eta}",
                plural(map.moves.len(), "copy", "copies"),
                settings.max_moves,
                r.waiting,
                bytes(r.bytes_per_sec),
                bytes(settings.bytes_per_sec)
            ),
            detail: Vec::new(),
        });
    }
    if let Some(r) = recovery
        && !r.unrecoverable.is_empty()
    {
        checks.push(Check {
            code: "PG_LOST",
            severity: Severity::Err,
            summary: format!(
                "{} with no live replica to copy from",
                plural(r.unrecoverable.len(), "partition", "partitions")
            ),
            detail: vec![format!(
                "partitions {:?}{}: bring back a node that held them",
                &r.unrecoverable[..r.unrecoverable.len().min(8)],
                if r.unrecoverable.len() > 8 { "…" } else { "" }
            )],
        });
    }

    let lagging = status.lagging(MAX_LAG);
    if !lagging.is_empty() {
        checks.push(Check {
            code: "RAFT_LAGGING",
            severity: Severity::Warn,
            summary: format!(
                "{} more than {MAX_LAG} entries behind the leader's log",
                plural(lagging.len(), "member", "members")
            ),
            detail: lagging.iter().map(|id| node_name(*id)).collect(),
        });
    }

    let certs: Vec<(u64, u64)> = recovery
        .map(|r| {
            r.reports
                .iter()
                .filter_map(|(id, rep)| {
                    let cert = rep.cert.as_ref()?;
                    cert.warn.then_some((*id, cert.not_after_ms))
                })
                .collect()
        })
        .unwrap_or_default();
    let (expired, expiring): (Vec<_>, Vec<_>) = certs.iter().partition(|(_, at)| *at <= now_ms);
    for (list, code, severity, what) in [
        (
            expired,
            "CERT_EXPIRED",
            Severity::Err,
            "certificate expired",
        ),
        (
            expiring,
            "CERT_EXPIRING",
            Severity::Warn,
            "certificate expiring",
        ),
    ] {
        if list.is_empty() {
            continue;
        }
        checks.push(Check {
            code,
            severity,
            summary: format!("{} with a {what}", plural(list.len(), "node", "nodes")),
            detail: list
                .iter()
                .map(|(id, at)| {
                    let when = if *at <= now_ms {
                        format!("expired {} ago", duration(now_ms - at))
                    } else {
                        format!("expires in {}", duration(at - now_ms))
                    };
                    format!(
                        "{}: {when}; `levee cert rotate --certs-dir DIR` on that node, no restart needed",
                        node_name(*id)
                    )
                })
                .collect(),
        });
    }

    let quarantined = map.quarantine.active(now_ms).count();
    if quarantined > 0 {
        checks.push(Check {
            code: "QUARANTINE",
            severity: Severity::Warn,
            summary: format!(
                "{} quarantined (they crashed node handlers)",
                plural(quarantined, "request shape", "request shapes")
            ),
            detail: vec!["`levee admin quarantine clear` lifts it once the cause is fixed".into()],
        });
    }

    checks.sort_by_key(|c| std::cmp::Reverse(c.severity));
    Health {
        status: checks
            .iter()
            .map(|c| c.severity)
            .max()
            .unwrap_or(Severity::Ok),
        checks,
    }
}

/// The guard that will keep down node `id` in when its out time comes,
/// from the map alone (the detector's own rules, simplified: it also
/// waits for a zone-mate that came back to stay up).
fn predicted_guard(status: &ClusterStatus, id: u64) -> Option<&'static str> {
    let map = &status.map;
    let settings = &map.recovery;
    if settings.noout {
        return Some(guard::NOOUT);
    }
    let node = map.nodes.get(&id)?;
    let zone_up = map
        .nodes
        .values()
        .any(|n| n.id != id && n.spec.zone == node.spec.zone && n.state == NodeState::Up);
    if settings.zone_guard && !zone_up {
        return Some(guard::ZONE);
    }
    let counted: Vec<_> = map
        .nodes
        .values()
        .filter(|n| n.state != NodeState::Removed)
        .collect();
    let staying = counted
        .iter()
        .filter(|n| n.id != id && n.state != NodeState::Out)
        .count();
    let total = counted.len();
    (total > 0 && (staying as f64 / total as f64) < settings.min_in_ratio)
        .then_some(guard::MIN_IN_RATIO)
}

/// What a guard holding a node in means, and what follows.
fn guard_text(why: &str) -> String {
    match why {
        guard::ZONE => {
            "its whole zone is down (likelier a network or power problem that ends than every disk of the zone at once)".into()
        }
        guard::MIN_IN_RATIO => {
            "marking it out would leave fewer than min_in_ratio of the nodes in".into()
        }
        guard::NOOUT => "the noout flag is set".into(),
        other => format!("held by the {other} guard"),
    }
}

#[cfg(test)]
mod tests;
