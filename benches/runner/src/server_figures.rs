//! What the nodes themselves say about a run: their `/metrics` (refusal
//! times, shed and deadline-drop counts) and their Raft terms and map,
//! read once before the measured run and once at its end, before the
//! cluster stops (and the metrics once more at the first fault, for the
//! per-node figures of `node_figures.rs`). The figures are the
//! differences, so the preload and the calibration do not count.
//!
//! Fetching is here ([`snapshot`]); turning two snapshots into figures
//! ([`figures`]) is pure.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;

use super::node_figures::{self, NodeFigures};
use super::prometheus::{Histogram, Scrape};
use levee_cli::local_cluster::probe;
use levee_node::client::admin_http;
use levee_node::tls::Transport;

/// Time allowed for one node's `/metrics` or status. A node too busy to
/// answer in 3 s is reported as not answering.
const ASK_TIMEOUT: Duration = Duration::from_secs(3);

/// The histogram of refusal times (node/src/metrics.rs).
const REFUSAL: &str = "levee_refusal_duration_seconds";
/// Refusals by reason.
const SHED: &str = "levee_shed_requests_total";
/// Requests not run because their deadline had passed.
const DEADLINE_DROPPED: &str = "levee_deadline_dropped_requests_total";
/// Requests by class, op and outcome.
const REQUESTS: &str = "levee_requests_total";
/// Recovery bytes a node sent (paced by its byte budget).
const RECOVERY_SENT: &str = "levee_recovery_sent_bytes_total";
/// Recovery bytes a node received and applied.
const RECOVERY_RECEIVED: &str = "levee_recovery_received_bytes_total";

/// The refusal-time bound of the overload target (s); also a bucket bound
/// of the node's histogram, so the share within it is exact.
pub const REFUSAL_TARGET_S: f64 = 50e-6;

/// One node, at one moment.
#[derive(Debug, Clone)]
pub struct NodeSnapshot {
    /// Its metrics, or why they could not be read.
    pub metrics: Result<Scrape, String>,
    /// The text they were read from, kept for the reports.
    pub text: Option<String>,
    /// Its Raft term, if it answered the status request.
    pub term: Option<u64>,
    /// Node id → protocol address, from its map if it answered: how the
    /// map's ids match the runner's node numbers (nodes join in any
    /// order, so node 2 need not have id 2).
    pub addrs: BTreeMap<u64, String>,
    /// Its map's epoch and node states (id → state), if it answered.
    pub map: Option<(u64, BTreeMap<u64, String>)>,
}

/// Every node, at one moment.
pub type Snapshot = Vec<NodeSnapshot>;

/// Asks every node, all at once, for its metrics (`admin[i]`) and its
/// status (`endpoints[i]`).
pub async fn snapshot(admin: &[String], endpoints: &[String], transport: &Transport) -> Snapshot {
    let asks: Vec<_> = admin
        .iter()
        .zip(endpoints)
        .map(|(admin, addr)| tokio::spawn(ask(admin.clone(), addr.clone(), transport.clone())))
        .collect();
    let mut out = Vec::with_capacity(asks.len());
    for ask in asks {
        out.push(ask.await.unwrap_or_else(|e| NodeSnapshot {
            metrics: Err(format!("the request task failed: {e}")),
            text: None,
            term: None,
            addrs: BTreeMap::new(),
            map: None,
        }));
    }
    out
}

/// Asks every node, all at once, for its metrics only, each within
/// `within`: a mid-run snapshot that must not hold up what waits for it.
pub async fn metrics_snapshot(
    admin: &[String],
    transport: &Transport,
    within: Duration,
) -> Snapshot {
    let asks: Vec<_> = admin
        .iter()
        .map(|admin| {
            let (admin, transport) = (admin.clone(), transport.clone());
            tokio::spawn(async move { metrics_of(&admin, within, &transport).await })
        })
        .collect();
    let mut out = Vec::with_capacity(asks.len());
    for ask in asks {
        let (metrics, text) = ask
            .await
            .unwrap_or_else(|e| (Err(format!("the request task failed: {e}")), None));
        out.push(NodeSnapshot {
            metrics,
            text,
            term: None,
            addrs: BTreeMap::new(),
            map: None,
        });
    }
    out
}

/// One node's metrics, parsed, and their text; or why they could not be
/// read within `within`.
async fn metrics_of(
    admin: &str,
    within: Duration,
    transport: &Transport,
) -> (Result<Scrape, String>, Option<String>) {
    match http_get_within(admin, "/metrics", within, transport).await {
        Ok(text) => (Ok(Scrape::parse(&text)), Some(text)),
        Err(e) => (Err(format!("{admin}: {e:#}")), None),
    }
}

/// One node's metrics and status.
async fn ask(admin: String, addr: String, transport: Transport) -> NodeSnapshot {
    let (metrics, text) = metrics_of(&admin, ASK_TIMEOUT, &transport).await;
    let status = tokio::time::timeout(ASK_TIMEOUT, probe(&addr, &transport).status()).await;
    let (term, addrs, map) = match status {
        Ok(Ok(s)) => {
            let nodes = s.map.nodes.values();
            let states = nodes.clone().map(|n| (n.id, n.state.to_string())).collect();
            let addrs = nodes.map(|n| (n.id, n.spec.addr.clone())).collect();
            (Some(s.term), addrs, Some((s.map.epoch, states)))
        }
        _ => (None, BTreeMap::new(), None),
    };
    NodeSnapshot {
        metrics,
        text,
        term,
        addrs,
        map,
    }
}

/// Node id → the runner's node number (1-based: the position of the
/// node's address in `endpoints`), from the maps of the snapshot.
pub fn node_numbers(snapshot: &Snapshot, endpoints: &[String]) -> BTreeMap<u64, u8> {
    snapshot
        .iter()
        .flat_map(|n| &n.addrs)
        .filter_map(|(id, addr)| {
            let at = endpoints.iter().position(|e| e == addr)?;
            Some((*id, u8::try_from(at + 1).ok()?))
        })
        .collect()
}

/// Writes each node's metrics text of `snapshot` to
/// `dir/node-i.<suffix>`, for a reader who wants more than the figures.
pub fn keep(dir: &std::path::Path, snapshot: &Snapshot, suffix: &str) {
    for (i, node) in snapshot.iter().enumerate() {
        let Some(text) = &node.text else { continue };
        let path = dir.join(format!("node-{}.{suffix}", i + 1));
        if let Err(e) = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&path, text)) {
            eprintln!("levee bench: cannot write {}: {e}", path.display());
        }
    }
}

/// `GET path` from the admin port at `addr` (HTTPS with the run's client
/// certificate when the cluster has certificates), given up after
/// `within`; the body if the answer is 200.
pub(super) async fn http_get_within(
    addr: &str,
    path: &str,
    within: Duration,
    transport: &Transport,
) -> anyhow::Result<String> {
    let answer = admin_http::get(addr, path, transport.admin_tls(), within)
        .await
        .with_context(|| format!("GET {path}"))?;
    if answer.status != 200 {
        bail!("answered {}", answer.status);
    }
    Ok(answer.body)
}

/// The server-side figures of a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServerFigures {
    /// Immediate refusals timed by the nodes during the run.
    pub refusals_timed: u64,
    /// Their p99 (µs), over all nodes, estimated from the histogram
    /// buckets as Prometheus' `histogram_quantile` does.
    pub refusal_p99_us: Option<f64>,
    /// The share of them that took at most 50 µs: exact (a bucket bound).
    pub refusals_within_50us: Option<f64>,
    /// Requests refused with `Overloaded`, all reasons, all nodes.
    pub shed: u64,
    /// By reason.
    pub shed_by_reason: BTreeMap<String, u64>,
    /// Requests the nodes did not run because their deadline had passed.
    pub deadline_dropped: u64,
    /// Foreground requests the nodes answered successfully.
    pub foreground_ok: u64,
    /// Recovery bytes the nodes sent during the run (a node that could
    /// not be read at the end, such as a killed one, is left out).
    pub recovery_bytes_sent: u64,
    /// Recovery bytes the nodes received and applied.
    pub recovery_bytes_received: u64,
    /// The highest Raft term any node reported before the run.
    pub term_start: Option<u64>,
    /// The highest at its end.
    pub term_end: Option<u64>,
    /// Raft elections during the run: `term_end − term_start` (every
    /// election, won or not, starts a new term).
    pub elections: Option<u64>,
    /// Nodes not `up` in the map at the end and their state, from the
    /// newest map any node gave; by map id until [`ServerFigures::renumber`]
    /// gives them the runner's node numbers.
    pub nodes_not_up: Option<BTreeMap<u64, String>>,
    /// Per node (the runner's numbers): its share of the client
    /// operations and its foreground p99, before and after the first
    /// fault.
    pub nodes: Vec<NodeFigures>,
    /// Nodes whose metrics could not be read, and why: their figures are
    /// missing from the sums.
    pub problems: Vec<String>,
}

impl ServerFigures {
    /// Names the nodes by the runner's numbers (`numbers`: id → number)
    /// instead of their map ids; an unknown id stays as it is.
    pub fn renumber(mut self, numbers: &BTreeMap<u64, u8>) -> Self {
        self.nodes_not_up = self.nodes_not_up.map(|nodes| {
            nodes
                .into_iter()
                .map(|(id, state)| (numbers.get(&id).map_or(id, |n| u64::from(*n)), state))
                .collect()
        });
        self
    }
}

/// The figures of a run from the snapshots before it, at its first fault
/// (if it had one) and after it (the same nodes in the same order).
pub fn figures(before: &Snapshot, at_fault: Option<&Snapshot>, after: &Snapshot) -> ServerFigures {
    let mut f = ServerFigures {
        nodes: node_figures::of(before, at_fault, after),
        ..ServerFigures::default()
    };
    for (i, node) in at_fault.into_iter().flatten().enumerate() {
        if let Err(e) = &node.metrics {
            f.problems
                .push(format!("node {} at the first fault: {e}", i + 1));
        }
    }
    let mut refusals = Histogram::default();
    for (i, (b, a)) in before.iter().zip(after).enumerate() {
        let (b, a) = match (&b.metrics, &a.metrics) {
            (Ok(b), Ok(a)) => (b, a),
            (Err(e), _) | (_, Err(e)) => {
                f.problems.push(format!("node {}: {e}", i + 1));
                continue;
            }
        };
        let delta = |name: &str, filter: &[(&str, &str)]| {
            (a.sum(name, filter) - b.sum(name, filter)).max(0.0) as u64
        };
        refusals.merge(&a.histogram(REFUSAL).since(&b.histogram(REFUSAL)));
        f.shed += delta(SHED, &[]);
        f.deadline_dropped += delta(DEADLINE_DROPPED, &[]);
        f.foreground_ok += delta(REQUESTS, &[("class", "foreground"), ("outcome", "ok")]);
        f.recovery_bytes_sent += delta(RECOVERY_SENT, &[]);
        f.recovery_bytes_received += delta(RECOVERY_RECEIVED, &[]);
        let earlier = b.by_label(SHED, "reason");
        for (reason, count) in a.by_label(SHED, "reason") {
            let d = (count - earlier.get(&reason).copied().unwrap_or(0.0)).max(0.0) as u64;
            *f.shed_by_reason.entry(reason).or_default() += d;
        }
    }
    f.refusals_timed = refusals.count() as u64;
    f.refusal_p99_us = refusals.quantile(0.99).map(|s| s * 1e6);
    f.refusals_within_50us = refusals.share_within(REFUSAL_TARGET_S);
    f.term_start = before.iter().filter_map(|n| n.term).max();
    f.term_end = after.iter().filter_map(|n| n.term).max();
    f.elections = match (f.term_start, f.term_end) {
        (Some(s), Some(e)) => Some(e.saturating_sub(s)),
        _ => None,
    };
    f.nodes_not_up = after
        .iter()
        .filter_map(|n| n.map.as_ref())
        .max_by_key(|(epoch, _)| *epoch)
        .map(|(_, states)| {
            states
                .iter()
                .filter(|(_, state)| state.as_str() != "up")
                .map(|(id, state)| (*id, state.clone()))
                .collect()
        });
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(text: &str, term: u64, states: &[(u64, &str)], epoch: u64) -> NodeSnapshot {
        NodeSnapshot {
            metrics: Ok(Scrape::parse(text)),
            text: None,
            term: Some(term),
            addrs: BTreeMap::new(),
            map: Some((
                epoch,
                states.iter().map(|(i, s)| (*i, s.to_string())).collect(),
            )),
        }
    }

    fn metrics(fast: u64, slow: u64, shed: u64, dropped: u64) -> String {
        format!(
            "{REFUSAL}_bucket{{le=\"0.00005\"}} {fast}\n{REFUSAL}_bucket{{le=\"0.0001\"}} {}\n{REFUSAL}_bucket{{le=\"+Inf\"}} {}\n{SHED}{{reason=\"queue_full\"}} {shed}\n{DEADLINE_DROPPED} {dropped}\n{RECOVERY_SENT} {}\n{RECOVERY_RECEIVED} {}\n",
            fast + slow,
            fast + slow,
            shed * 2,
            shed * 3,
        )
    }

    #[test]
    fn figures_are_the_run_only_summed_over_nodes() {
        let up = [(1, "up"), (2, "up")];
        let before = vec![
            node(&metrics(100, 100, 50, 5), 3, &up, 7),
            node(&metrics(0, 0, 0, 0), 3, &up, 7),
        ];
        let after = vec![
            node(&metrics(1090, 110, 1250, 6), 4, &up, 7),
            node(&metrics(990, 0, 1000, 0), 4, &[(1, "up"), (2, "down")], 9),
        ];
        let f = figures(&before, None, &after);
        // The run: 990 + 990 fast, 10 slow.
        assert_eq!(f.refusals_timed, 1990);
        let within = f.refusals_within_50us.unwrap();
        assert!((within - 1980.0 / 1990.0).abs() < 1e-12, "{within}");
        assert!(f.refusal_p99_us.unwrap() <= 50.0 + 1e-9);
        assert_eq!((f.shed, f.deadline_dropped), (2200, 1));
        assert_eq!(f.shed_by_reason["queue_full"], 2200);
        assert_eq!(f.elections, Some(1));
        assert_eq!(
            (f.recovery_bytes_sent, f.recovery_bytes_received),
            (4400, 6600)
        );
        // Ids follow the order of joins, not the node numbers.
        let mut ids = after.clone();
        ids[1].addrs = BTreeMap::from([(1, "h1:7".into()), (3, "h2:7".into()), (9, "x:7".into())]);
        let endpoints = ["h1:7".to_owned(), "h2:7".to_owned()];
        assert_eq!(
            node_numbers(&ids, &endpoints),
            BTreeMap::from([(1, 1), (3, 2)])
        );
        let down = f.nodes_not_up.clone().unwrap();
        assert_eq!(down.into_iter().collect::<Vec<_>>(), [(2, "down".into())]);
        let renumbered = f.clone().renumber(&BTreeMap::from([(2, 5)]));
        let renumbered = renumbered.nodes_not_up.unwrap();
        assert_eq!(renumbered.into_keys().collect::<Vec<_>>(), [5]);
        assert!(f.problems.is_empty());
    }

    #[test]
    fn a_silent_node_is_a_problem_not_a_zero() {
        let ok = node(&metrics(1, 0, 1, 0), 2, &[(1, "up")], 1);
        let silent = NodeSnapshot {
            metrics: Err("127.0.0.2:7401: no answer within 3 s".into()),
            text: None,
            term: None,
            addrs: BTreeMap::new(),
            map: None,
        };
        let f = figures(&vec![ok.clone(), ok.clone()], None, &vec![ok, silent]);
        assert_eq!(f.problems.len(), 1);
        assert!(f.problems[0].starts_with("node 2"), "{:?}", f.problems);
        assert_eq!(f.elections, Some(0));
        assert_eq!(f.nodes_not_up.map(|m| m.len()), Some(0));
    }
}
