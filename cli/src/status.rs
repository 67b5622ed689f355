//! `levee status`: what the cluster looks like, from its leader when it
//! can be reached.

use levee_node::client::{Client, ClientConfig};
use levee_node::cluster::map::NodeState;
use levee_node::cluster::status::ClusterStatus;

use crate::Output;
use crate::endpoint::{self, Sample};
use crate::health::{self, Health, MAX_LAG, bytes, duration};

/// Recovery as the live view has seen it: the most work it saw pending,
/// so what is left can be drawn as a bar.
#[derive(Debug, Default)]
pub struct Progress {
    peak: u64,
}

impl Progress {
    /// The bar for this view, `None` when nothing is pending (and the
    /// next recovery starts a new bar).
    pub fn update(&mut self, status: &ClusterStatus) -> Option<String> {
        let pending =
            status.map.moves.len() as u64 + status.recovery.as_ref().map_or(0, |r| r.waiting);
        if pending == 0 {
            self.peak = 0;
            return None;
        }
        self.peak = self.peak.max(pending);
        let done = self.peak - pending;
        const WIDTH: u64 = 30;
        let filled = done * WIDTH / self.peak;
        let rate = status.recovery.as_ref().map_or(0, |r| r.bytes_per_sec);
        let eta = status
            .recovery
            .as_ref()
            .and_then(|r| r.eta_s)
            .map_or("unknown".into(), |s| duration(s * 1000));
        Some(format!(
            "recovery [{}{}] {}%  {done} of {} moves done, {pending} left  {}/s of {}/s per sender  eta {eta}\n",
            "#".repeat(filled as usize),
            ".".repeat((WIDTH - filled) as usize),
            done * 100 / self.peak,
            self.peak,
            bytes(rate),
            bytes(status.map.recovery.bytes_per_sec),
        ))
    }
}

/// `levee status`'s options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print only the health, and exit 0 for HEALTH_OK, 1 for
    /// HEALTH_WARN, 2 for HEALTH_ERR (or when no node answers), for
    /// scripts and monitoring.
    #[arg(long)]
    pub check: bool,
    /// Show the status again every --interval until Ctrl-C: a live view
    /// during an incident (the screen is redrawn on a terminal; into a
    /// pipe, each view follows the last).
    #[arg(long, conflicts_with = "check")]
    pub watch: bool,
    /// How often --watch refreshes (30s, 500ms…).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration, requires = "watch")]
    pub interval: std::time::Duration,
}

/// Shows the status every `args.interval` until Ctrl-C or SIGTERM; a
/// node that does not answer is shown as an error line, and the next
/// refresh tries again.
pub async fn watch(config: ClientConfig, output: Output, args: &Args) -> anyhow::Result<()> {
    use std::io::{IsTerminal, Write};
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let terminal = std::io::stdout().is_terminal();
    let mut tick = tokio::time::interval(args.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = Sample::default();
    let mut progress = Progress::default();
    let mut clients = endpoint::Clients::default();
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = term.recv() => return Ok(()),
            _ = tick.tick() => {}
        }
        let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
        let view = match fetch(config.clone()).await {
            Ok(status) => {
                let health = health::evaluate(&status, levee_node::hlc::wall_ms());
                // Every node asked directly, for its own counters: rates
                // come from the difference with the last view.
                let rows = endpoint::ask_all(&config, &status, &mut clients).await;
                let sample = Sample::of(&rows, std::time::Instant::now());
                let bar = progress.update(&status);
                let view = match output {
                    Output::Json => {
                        let mut json = to_json(&status, &health);
                        json["endpoints"] = endpoint::to_json(&rows);
                        format!("{json}\n")
                    }
                    Output::Text => format!(
                        "{}{}\n{}",
                        to_text(&status, &health),
                        bar.unwrap_or_default(),
                        endpoint::to_text(&rows, Some((&sample, &last)), status.map.nodes.len())
                    ),
                };
                last = sample;
                view
            }
            Err(e) => match output {
                Output::Json => format!("{}\n", serde_json::json!({"error": format!("{e:#}")})),
                Output::Text => format!("levee: {e:#}\n"),
            },
        };
        let mut stdout = std::io::stdout().lock();
        if output == Output::Text {
            // Home and clear: the view replaces the last one in place.
            let clear = if terminal { "\x1b[H\x1b[2J" } else { "\n" };
            let every = humantime::format_duration(args.interval);
            write!(
                stdout,
                "{clear}levee status --watch  every {every}  {now}  (Ctrl-C to stop)\n\n"
            )?;
        }
        stdout.write_all(view.as_bytes())?;
        stdout.flush()?;
    }
}

/// Prints the status; returns the health (so `--check` can exit by it),
/// or fails if no node answers.
pub async fn run(config: ClientConfig, output: Output, args: &Args) -> anyhow::Result<Health> {
    let status = fetch(config).await?;
    let health = health::evaluate(&status, levee_node::hlc::wall_ms());
    match (output, args.check) {
        (Output::Json, false) => println!(
            "{}",
            serde_json::to_string_pretty(&to_json(&status, &health))?
        ),
        (Output::Json, true) => println!("{}", serde_json::to_string_pretty(&health)?),
        (Output::Text, false) => print!("{}", to_text(&status, &health)),
        (Output::Text, true) => print!("{}", health.to_text(&status)),
    }
    Ok(health)
}

/// The status from the leader if the answering node knows one (only the
/// leader knows how far each member has replicated, who is silent and
/// how recovery goes), else from whichever node answered.
async fn fetch(config: ClientConfig) -> anyhow::Result<ClusterStatus> {
    Ok(Client::new(config).leader_status().await?)
}

/// A node's state as shown: "down 42s", "up (suspect)".
fn state_text(status: &ClusterStatus, id: u64) -> String {
    let Some(node) = status.map.nodes.get(&id) else {
        return "-".into();
    };
    let recovery = status.recovery.as_ref();
    let silent = recovery.and_then(|r| r.silence_ms.get(&id));
    match node.state {
        NodeState::Up if recovery.is_some_and(|r| r.suspects.contains(&id)) => {
            "up (suspect)".into()
        }
        // Down for as long as it has been silent (the mark comes
        // `down_after` later).
        NodeState::Down if silent.is_some() => {
            format!("down {}", duration(silent.copied().unwrap_or_default()))
        }
        NodeState::Down | NodeState::Out | NodeState::Draining => match recovery {
            Some(r) if node.since_ms > 0 => format!(
                "{} {}",
                node.state,
                duration(r.at_ms.saturating_sub(node.since_ms))
            ),
            _ => node.state.to_string(),
        },
        state => state.to_string(),
    }
}

/// The recovery section of the text status.
fn recovery_text(status: &ClusterStatus) -> String {
    let map = &status.map;
    let mut out = String::new();
    let groups = map.under_replicated_by_live();
    if !groups.is_empty() {
        let parts: Vec<String> = groups
            .iter()
            .map(|(live, n)| format!("{n} with {live} live"))
            .collect();
        out.push_str(&format!(
            "under-replicated: {} partitions ({})\n",
            groups.values().sum::<usize>(),
            parts.join(", ")
        ));
    }
    let settings = &map.recovery;
    let Some(r) = &status.recovery else {
        if !map.moves.is_empty() {
            out.push_str(&format!("moves in flight: {}\n", map.moves.len()));
        }
        return out;
    };
    if !map.moves.is_empty() || r.waiting > 0 {
        out.push_str(&format!(
            "moves: {} in flight (max {}), {} waiting, {} finished in the last minute; eta {}\n",
            map.moves.len(),
            settings.max_moves,
            r.waiting,
            r.finished_last_min,
            r.eta_s.map_or("unknown".into(), |s| duration(s * 1000)),
        ));
        let progress: std::collections::BTreeMap<u32, (u64, u64)> = r
            .reports
            .values()
            .flat_map(|rep| rep.transfers.iter())
            .map(|t| (t.partition, (t.keys, t.bytes)))
            .collect();
        for (p, m) in map.moves.iter().take(10) {
            let (keys, copied) = progress.get(p).copied().unwrap_or_default();
            out.push_str(&format!(
                "  partition {p:>5}: {} -> {} from {}  {keys} keys, {} copied, {}\n",
                m.from.map_or("-".into(), |f| f.to_string()),
                m.to,
                m.source,
                bytes(copied),
                duration(r.at_ms.saturating_sub(m.started_ms)),
            ));
        }
        if map.moves.len() > 10 {
            out.push_str(&format!("  ... and {} more\n", map.moves.len() - 10));
        }
    }
    if !r.unrecoverable.is_empty() {
        out.push_str(&format!(
            "NO LIVE REPLICA: {} partitions ({:?}...)\n",
            r.unrecoverable.len(),
            &r.unrecoverable[..r.unrecoverable.len().min(8)]
        ));
    }
    if r.bytes_per_sec > 0 || !map.moves.is_empty() {
        out.push_str(&format!(
            "recovery: {}/s sent (limit {}/s per sending node)\n",
            bytes(r.bytes_per_sec),
            bytes(settings.bytes_per_sec)
        ));
    }
    out
}

fn to_text(status: &ClusterStatus, health: &Health) -> String {
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
        "{:<4} {:<22} {:<10} {:<14} {:<8} {:>10} {:>10} {:>6}\n",
        "ID", "ADDRESS", "ZONE", "STATE", "ROLE", "PARTITIONS", "LAST BEAT", "LOAD"
    ));
    for node in map.nodes.values() {
        let recovery = status.recovery.as_ref();
        let beat = recovery
            .and_then(|r| r.silence_ms.get(&node.id))
            .map_or("-".into(), |ms| format!("{:.1}s ago", *ms as f64 / 1000.0));
        // Its foreground work against its concurrency limit, from its
        // last heartbeat: 100% is a node at its limit, about to shed.
        // A node that is not up has no current load: its last report is
        // from before it went silent.
        let load = recovery
            .filter(|_| node.state == NodeState::Up)
            .and_then(|r| r.reports.get(&node.id))
            .map_or("-".into(), |rep| {
                format!("{}%", (rep.pressure_permille + 5) / 10)
            });
        out.push_str(&format!(
            "{:<4} {:<22} {:<10} {:<14} {:<8} {:>10} {:>10} {:>6}\n",
            node.id,
            node.spec.addr,
            node.spec.zone,
            state_text(status, node.id),
            status.role(node.id).to_string(),
            map.partitions_held(node.id),
            beat,
            load,
        ));
    }
    out.push_str(&recovery_text(status));
    out.push_str(&quarantine_text(status));
    out.push_str(&health.to_text(status));
    out
}

/// The quarantined request shapes, with what struck them and for how
/// much longer they are refused; empty when there are none.
fn quarantine_text(status: &ClusterStatus) -> String {
    let now = levee_node::hlc::wall_ms();
    let mut out = String::new();
    for entry in status.map.quarantine.active(now) {
        let nodes: Vec<String> = entry.strikes.iter().map(|s| s.node.to_string()).collect();
        let remaining = entry.until_ms.unwrap_or(now).saturating_sub(now);
        out.push_str(&format!(
            "quarantined: {} (crashed handlers on nodes {}; refused for {}s more; `levee admin quarantine clear` lifts it)\n",
            entry.shape,
            nodes.join(", "),
            remaining / 1000,
        ));
    }
    out
}

fn quarantine_json(status: &ClusterStatus) -> serde_json::Value {
    let now = levee_node::hlc::wall_ms();
    status
        .map
        .quarantine
        .active(now)
        .map(|e| {
            serde_json::json!({
                "shape": e.shape.to_string(),
                "op": e.shape.op,
                "hash": format!("{:016x}", e.shape.hash),
                "until_ms": e.until_ms,
                "remaining_ms": e.until_ms.unwrap_or(now).saturating_sub(now),
                "strikes": e.strikes.iter().map(|s| serde_json::json!({"node": s.node, "at_ms": s.at_ms})).collect::<Vec<_>>(),
            })
        })
        .collect::<Vec<_>>()
        .into()
}

fn to_json(status: &ClusterStatus, health: &Health) -> serde_json::Value {
    let map = &status.map;
    let lagging = status.lagging(MAX_LAG);
    let recovery = status.recovery.as_ref();
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
                "pressure_permille": recovery
                    .filter(|_| node.state == NodeState::Up)
                    .and_then(|r| r.reports.get(&node.id))
                    .map(|rep| rep.pressure_permille),
                "replicating": status.replication.as_ref().map(|_| !lagging.contains(&node.id)),
                "state_since_ms": node.since_ms,
                "silence_ms": recovery.and_then(|r| r.silence_ms.get(&node.id)),
                "suspect": recovery.map(|r| r.suspects.contains(&node.id)),
                "cert_not_after_ms": recovery
                    .and_then(|r| r.reports.get(&node.id))
                    .and_then(|rep| rep.cert.as_ref())
                    .map(|c| c.not_after_ms),
                "cert_expiring": recovery
                    .and_then(|r| r.reports.get(&node.id))
                    .and_then(|rep| rep.cert.as_ref())
                    .map(|c| c.warn),
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
        "under_replicated_by_live": map
            .under_replicated_by_live()
            .iter()
            .map(|(live, n)| (live.to_string(), serde_json::json!(n)))
            .collect::<serde_json::Map<_, _>>(),
        "moves_in_flight": map.moves.len(),
        "moves": map.moves.iter().map(|(p, m)| serde_json::json!({
            "partition": p, "from": m.from, "to": m.to, "source": m.source,
            "started_ms": m.started_ms,
        })).collect::<Vec<_>>(),
        "moves_waiting": recovery.map(|r| r.waiting),
        "moves_finished_last_min": recovery.map(|r| r.finished_last_min),
        "eta_s": recovery.and_then(|r| r.eta_s),
        "unrecoverable": recovery.map(|r| r.unrecoverable.clone()),
        "recovery_bytes_per_sec": recovery.map_or(0, |r| r.bytes_per_sec),
        "recovery_bytes_sent": recovery.map(|r| r.reports.values().map(|x| x.recovery_bytes_sent).sum::<u64>()),
        "held_by_guard": recovery.map(|r| r.held.clone()),
        "settings": crate::admin::settings_json(&map.recovery),
        "quarantine": quarantine_json(status),
        "health": health,
        "nodes": nodes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use levee_node::cluster::status::RecoveryStatus;

    fn with_waiting(waiting: u64) -> ClusterStatus {
        ClusterStatus {
            node_id: 1,
            leader: Some(1),
            term: 1,
            voters: vec![1],
            learners: Vec::new(),
            last_log_index: None,
            last_applied: None,
            replication: None,
            map: levee_node::cluster::map::ClusterMap::default(),
            recovery: Some(RecoveryStatus {
                waiting,
                eta_s: Some(90),
                ..RecoveryStatus::default()
            }),
            report: None,
        }
    }

    #[test]
    fn the_recovery_bar_fills_as_the_work_seen_pending_is_done() {
        let mut progress = Progress::default();
        assert_eq!(progress.update(&with_waiting(0)), None);
        let first = progress.update(&with_waiting(40)).unwrap();
        assert!(first.starts_with("recovery [......"), "{first}");
        assert!(first.contains("0%  0 of 40 moves done, 40 left"), "{first}");
        let half = progress.update(&with_waiting(20)).unwrap();
        assert!(
            half.contains("[###############...............] 50%"),
            "{half}"
        );
        assert!(half.contains("eta 1m30s"), "{half}");
        // More found pending than ever: the bar's whole grows, never
        // goes past full.
        let more = progress.update(&with_waiting(60)).unwrap();
        assert!(more.contains("0 of 60"), "{more}");
        assert_eq!(progress.update(&with_waiting(0)), None);
        assert!(
            progress
                .update(&with_waiting(5))
                .unwrap()
                .contains("0 of 5")
        );
    }
}
