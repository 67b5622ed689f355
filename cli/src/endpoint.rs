//! `levee endpoint status`: every node asked directly, one row each, as
//! `etcdctl endpoint status` does: what each process says of itself
//! (build, uptime, data on disk, hints held, its limit, the Raft term and
//! index it has), so a node that answers but disagrees with the others
//! shows up, and one that does not answer is a row saying why.

use std::collections::BTreeMap;
use std::time::Instant;

use levee_node::client::{Client, ClientConfig};
use levee_node::cluster::status::{ClusterStatus, NodeReport};

use crate::Output;
use crate::health::{bytes, duration};

/// Nodes asked at most: a live view of a larger cluster shows the first
/// ones (and says how many it left out).
pub const MAX_ASKED: usize = 64;

/// One node's answer, or why there is none.
#[derive(Debug, Clone)]
pub struct Row {
    /// The node's id in the map.
    pub id: u64,
    /// Its protocol address.
    pub addr: String,
    /// What it said of itself.
    pub answer: Result<Answer, String>,
}

/// What a node says of itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The leader it follows.
    pub leader: Option<u64>,
    /// Its Raft term.
    pub term: u64,
    /// Last log index it holds.
    pub index: Option<u64>,
    /// Last log index applied to its map.
    pub applied: Option<u64>,
    /// Its map's epoch.
    pub epoch: u64,
    /// Its own report (build, uptime, disk, hints, limit, counters).
    pub report: NodeReport,
}

impl Answer {
    fn from_status(status: &ClusterStatus) -> Result<Self, String> {
        let report = status
            .report
            .clone()
            .ok_or_else(|| "the node sent no report of itself".to_owned())?;
        Ok(Self {
            leader: status.leader,
            term: status.term,
            index: status.last_log_index,
            applied: status.last_applied,
            epoch: status.map.epoch,
            report,
        })
    }
}

/// A client per node address, kept from one ask to the next so a live
/// view refreshing every second reuses its connections instead of
/// opening (and TLS-handshaking) one per node per refresh.
#[derive(Default)]
pub struct Clients(std::collections::HashMap<String, std::sync::Arc<Client>>);

impl Clients {
    fn of(&mut self, config: &ClientConfig, addr: &str) -> std::sync::Arc<Client> {
        self.0
            .entry(addr.to_owned())
            .or_insert_with(|| {
                std::sync::Arc::new(Client::new(ClientConfig {
                    endpoints: vec![addr.to_owned()],
                    ..config.clone()
                }))
            })
            .clone()
    }
}

/// Asks every node of the map `status` came from (at most [`MAX_ASKED`]),
/// in parallel, each within the client's request timeout.
pub async fn ask_all(
    config: &ClientConfig,
    status: &ClusterStatus,
    clients: &mut Clients,
) -> Vec<Row> {
    let asked: Vec<&str> = status
        .map
        .nodes
        .values()
        .take(MAX_ASKED)
        .map(|n| n.spec.addr.as_str())
        .collect();
    // Nodes gone from the map are forgotten.
    clients.0.retain(|addr, _| asked.contains(&addr.as_str()));
    let mut asks = tokio::task::JoinSet::new();
    for node in status.map.nodes.values().take(MAX_ASKED) {
        let id = node.id;
        let addr = node.spec.addr.clone();
        let client = clients.of(config, &addr);
        asks.spawn(async move {
            let answer = match client.status().await {
                Ok(s) => Answer::from_status(&s),
                Err(e) => Err(e.to_string()),
            };
            Row { id, addr, answer }
        });
    }
    let mut rows = asks.join_all().await;
    rows.sort_by_key(|r| r.id);
    rows
}

/// Each node's counters at one moment, to turn the next sample into
/// rates.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    at: BTreeMap<u64, (Instant, u64, u64)>,
}

impl Sample {
    /// The counters of the rows that answered, taken at `now`.
    pub fn of(rows: &[Row], now: Instant) -> Self {
        Self {
            at: rows
                .iter()
                .filter_map(|r| {
                    let a = r.answer.as_ref().ok()?;
                    Some((r.id, (now, a.report.requests_total, a.report.shed_total)))
                })
                .collect(),
        }
    }

    /// Requests and refusals per second of node `id` between `earlier` and
    /// this sample; `None` without two samples of it (or if it restarted:
    /// its counters went back).
    pub fn rates(&self, earlier: &Sample, id: u64) -> Option<(f64, f64)> {
        let (now, requests, shed) = self.at.get(&id)?;
        let (then, requests0, shed0) = earlier.at.get(&id)?;
        let secs = now.saturating_duration_since(*then).as_secs_f64();
        if secs <= 0.0 || requests < requests0 || shed < shed0 {
            return None;
        }
        Some((
            (requests - requests0) as f64 / secs,
            (shed - shed0) as f64 / secs,
        ))
    }
}

/// The table: one row per node; with an earlier sample, its request and
/// refusal rates too.
pub fn to_text(rows: &[Row], rates: Option<(&Sample, &Sample)>, total: usize) -> String {
    let mut out = format!(
        "{:<22} {:>3} {:<8} {:>8} {:>10} {:>10} {:>6} {:>8} {:>7} {:>6} {:>7} {:>7}  {}\n",
        "ENDPOINT",
        "ID",
        "VERSION",
        "UPTIME",
        "DATA",
        "HINTS",
        "LIMIT",
        "OPS/S",
        "SHED/S",
        "TERM",
        "INDEX",
        "APPLIED",
        "LEADER"
    );
    for row in rows {
        let Ok(a) = &row.answer else {
            let error = row.answer.as_ref().err().map_or("", String::as_str);
            out.push_str(&format!(
                "{:<22} {:>3} no answer: {error}\n",
                row.addr, row.id
            ));
            continue;
        };
        let r = &a.report;
        let (ops, shed) = rates
            .and_then(|(now, then)| now.rates(then, row.id))
            .map_or(("-".into(), "-".into()), |(ops, shed)| {
                (format!("{ops:.0}"), format!("{shed:.0}"))
            });
        let opt = |v: Option<u64>| v.map_or("-".into(), |v| v.to_string());
        out.push_str(&format!(
            "{:<22} {:>3} {:<8} {:>8} {:>10} {:>10} {:>6} {:>8} {:>7} {:>6} {:>7} {:>7}  {}\n",
            row.addr,
            row.id,
            r.version,
            duration(r.uptime_ms),
            bytes(r.data_bytes),
            bytes(r.hints_pending_bytes),
            r.limit,
            ops,
            shed,
            a.term,
            opt(a.index),
            opt(a.applied),
            match a.leader {
                Some(l) if l == row.id => "self".to_owned(),
                Some(l) => l.to_string(),
                None => "none".to_owned(),
            },
        ));
    }
    if total > rows.len() {
        out.push_str(&format!("({} more nodes not asked)\n", total - rows.len()));
    }
    out
}

/// The rows as JSON: numbers as numbers, an `error` for a node that did
/// not answer.
pub fn to_json(rows: &[Row]) -> serde_json::Value {
    rows.iter()
        .map(|row| match &row.answer {
            Err(e) => serde_json::json!({"id": row.id, "endpoint": row.addr, "error": e}),
            Ok(a) => serde_json::json!({
                "id": row.id,
                "endpoint": row.addr,
                "version": a.report.version,
                "uptime_ms": a.report.uptime_ms,
                "data_bytes": a.report.data_bytes,
                "hints_pending_bytes": a.report.hints_pending_bytes,
                "limit": a.report.limit,
                "pressure_permille": a.report.pressure_permille,
                "requests_total": a.report.requests_total,
                "shed_total": a.report.shed_total,
                "leader": a.leader,
                "term": a.term,
                "raft_index": a.index,
                "raft_applied": a.applied,
                "epoch": a.epoch,
            }),
        })
        .collect::<Vec<_>>()
        .into()
}

/// `levee endpoint status`: the table once. Fails only if no node
/// answers for the map; a node that does not answer is a row.
pub async fn run(config: ClientConfig, output: Output) -> anyhow::Result<bool> {
    let status = Client::new(config.clone()).leader_status().await?;
    let rows = ask_all(&config, &status, &mut Clients::default()).await;
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&to_json(&rows))?),
        Output::Text => print!("{}", to_text(&rows, None, status.map.nodes.len())),
    }
    Ok(rows.iter().all(|r| r.answer.is_ok()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ago(now: Instant, secs: u64) -> Instant {
        now - Duration::from_secs(secs)
    }

    fn row(id: u64, requests: u64, shed: u64) -> Row {
        Row {
            id,
            addr: format!("127.0.0.{id}:7400"),
            answer: Ok(Answer {
                leader: Some(1),
                term: 4,
                index: Some(90),
                applied: Some(89),
                epoch: 7,
                report: NodeReport {
                    node: id,
                    version: "0.1.0".into(),
                    uptime_ms: 3_723_000,
                    data_bytes: 3 << 20,
                    limit: 180,
                    requests_total: requests,
                    shed_total: shed,
                    ..NodeReport::default()
                },
            }),
        }
    }

    #[test]
    fn rates_come_from_two_samples_and_never_go_negative() {
        let now = Instant::now();
        let then = Sample::of(&[row(1, 1_000, 10), row(2, 500, 0)], ago(now, 2));
        let later = Sample::of(&[row(1, 3_000, 50), row(2, 100, 0)], now);
        let (ops, shed) = later.rates(&then, 1).unwrap();
        assert!((ops - 1_000.0).abs() < 1.0 && (shed - 20.0).abs() < 0.1);
        // Node 2 restarted (its counters went back): no rate, not a
        // negative one.
        assert_eq!(later.rates(&then, 2), None);
        assert_eq!(later.rates(&then, 3), None);
    }

    #[test]
    fn the_table_has_a_row_per_node_and_says_why_one_is_missing() {
        let now = Instant::now();
        let rows = vec![
            row(1, 3_000, 50),
            Row {
                id: 2,
                addr: "127.0.0.2:7400".into(),
                answer: Err("connection refused".into()),
            },
        ];
        let then = Sample::of(&[row(1, 1_000, 10)], ago(now, 2));
        let sample = Sample::of(&rows, now);
        let text = to_text(&rows, Some((&sample, &then)), 3);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("ENDPOINT"), "{text}");
        assert!(
            lines[1].contains("1h02m") && lines[1].contains("3.0 MiB"),
            "{text}"
        );
        assert!(
            lines[1].contains(" 1000 ") && lines[1].trim_end().ends_with("self"),
            "{text}"
        );
        assert!(lines[2].contains("no answer: connection refused"), "{text}");
        assert_eq!(lines[3], "(1 more nodes not asked)");
        let json = to_json(&rows);
        assert_eq!(json[0]["data_bytes"], 3 << 20);
        assert_eq!(json[0]["raft_index"], 90);
        assert_eq!(json[1]["error"], "connection refused");
    }
}
