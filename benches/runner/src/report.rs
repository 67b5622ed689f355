//! The outputs of a run: `result.json` (everything), `summary.md` (the
//! phase table with ratios) and, through [`super::plot`], `timeline.png`.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;

use super::cluster::Event;
use super::node_figures;
use super::phases::{PhaseKind, PhaseSummary};
use super::recovery::{self, RecoveryFigures};
use super::resources::{self, Resources};
use super::restarts::{self, RestartFigures};
use super::scenario::Scenario;
use super::server_figures::ServerFigures;
use super::targets;
use super::timeline::SecondRow;

/// Everything a run produced, as written to `result.json`.
#[derive(Debug, Serialize)]
pub struct BenchResult {
    /// Format version of this file.
    pub format: u32,
    /// The scenario as run (defaults filled in).
    pub scenario: Scenario,
    /// Where it ran.
    pub machine: Machine,
    /// When the measured run started (UTC, ISO 8601).
    pub started_at: String,
    /// Totals over the whole run.
    pub totals: Totals,
    /// One row per second.
    pub timeline: Vec<SecondRow>,
    /// Faults and recoveries, in time order.
    pub events: Vec<Event>,
    /// Before / during / after (or the steps), with ratios to the first.
    pub phases: Vec<PhaseSummary>,
    /// The variant this run was, when the scenario compares several.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// The peak a step load multiplied, and where it came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak: Option<PeakUsed>,
    /// What the nodes said about the run (metrics, terms, map), when they
    /// could be asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerFigures>,
    /// How the cluster recovered from the run's faults (from the status
    /// samples), for a run with faults.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery: Option<RecoveryFigures>,
    /// Each restarted node's startup and the p99 after it rejoined.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub restarts: Vec<RestartFigures>,
    /// The client error messages of the failed requests, most frequent
    /// first, with their counts.
    pub error_messages: Vec<(String, u64)>,
    /// Each node's memory, descriptors, tasks, connections and hint bytes
    /// every second, and whether each stayed flat (a scenario with
    /// `[resources]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
}

/// The peak of a step load.
#[derive(Debug, Clone, Serialize)]
pub struct PeakUsed {
    /// Ops/s.
    pub ops_per_s: f64,
    /// `given` (in the scenario) or how it was measured.
    pub source: String,
}

/// Totals over the run.
#[derive(Debug, Serialize)]
pub struct Totals {
    /// Requests due.
    pub offered: u64,
    /// Answered without error.
    pub ok: u64,
    /// Failed.
    pub errors: u64,
    /// Not sent (in-flight cap).
    pub dropped: u64,
}

impl Totals {
    /// Sums the rows.
    pub fn of(rows: &[SecondRow]) -> Self {
        Self {
            offered: rows.iter().map(|r| r.offered).sum(),
            ok: rows.iter().map(|r| r.ok).sum(),
            errors: rows.iter().flat_map(|r| r.errors.values()).sum(),
            dropped: rows.iter().map(|r| r.dropped).sum(),
        }
    }
}

/// The machine a run happened on, so figures from two machines are not
/// compared by mistake.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Machine {
    /// Host name.
    pub hostname: String,
    /// Logical CPUs.
    pub cpus: usize,
    /// CPU model, from /proc/cpuinfo.
    pub cpu_model: String,
    /// Total memory (bytes), from /proc/meminfo.
    pub memory_bytes: Option<u64>,
    /// Kernel release.
    pub kernel: String,
    /// levee version.
    pub levee_version: String,
    /// `release` or `debug`: debug builds are many times slower.
    pub build: String,
}

impl Machine {
    /// Reads what this machine says about itself; missing facts stay empty.
    pub fn describe() -> Self {
        let read = |path: &str| {
            std::fs::read_to_string(path)
                .map(|s| s.trim().to_owned())
                .unwrap_or_default()
        };
        let cpuinfo = read("/proc/cpuinfo");
        let meminfo = read("/proc/meminfo");
        Self {
            hostname: read("/proc/sys/kernel/hostname"),
            // The machine's CPUs, not this process's share of them (the
            // runner may have pinned itself to some).
            cpus: match cpuinfo
                .lines()
                .filter(|l| l.starts_with("processor"))
                .count()
            {
                0 => std::thread::available_parallelism().map_or(0, |n| n.get()),
                n => n,
            },
            cpu_model: field(&cpuinfo, "model name").unwrap_or_default(),
            memory_bytes: field(&meminfo, "MemTotal")
                .and_then(|v| v.trim_end_matches("kB").trim().parse::<u64>().ok())
                .map(|kb| kb * 1024),
            kernel: read("/proc/sys/kernel/osrelease"),
            levee_version: env!("CARGO_PKG_VERSION").to_owned(),
            build: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
            .to_owned(),
        }
    }

    /// One line for reports.
    pub fn line(&self) -> String {
        let gib = self.memory_bytes.map_or("? GiB".to_owned(), |b| {
            format!("{:.0} GiB", b as f64 / (1u64 << 30) as f64)
        });
        format!(
            "{} — {} CPUs ({}), {gib}, Linux {}, {} build",
            self.hostname, self.cpus, self.cpu_model, self.kernel, self.build
        )
    }
}

/// The value of `key: value` in a /proc file.
fn field(text: &str, key: &str) -> Option<String> {
    text.lines()
        .find(|l| l.split(':').next().is_some_and(|k| k.trim() == key))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
}

/// Writes `result.json` and `summary.md` into `dir`.
pub fn write(dir: &Path, result: &BenchResult) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(result).context("cannot encode result.json")?;
    let path = dir.join("result.json");
    std::fs::write(&path, json).with_context(|| format!("cannot write {}", path.display()))?;
    let path = dir.join("summary.md");
    std::fs::write(&path, summary(result))
        .with_context(|| format!("cannot write {}", path.display()))
}

/// A figure with `digits` decimals, `–` when missing.
pub fn num(v: Option<f64>, digits: usize) -> String {
    v.map_or("–".to_owned(), |v| format!("{v:.digits$}"))
}

/// A ratio as `×1.23`, `–` when missing.
pub fn times(v: Option<f64>) -> String {
    v.map_or("–".to_owned(), |v| format!("×{v:.2}"))
}

/// The markdown summary: what ran, where, the phase table, the events.
pub fn summary(result: &BenchResult) -> String {
    let s = &result.scenario;
    let mut out = String::new();
    let _ = writeln!(out, "# levee bench: {}\n", s.name);
    if !s.description.is_empty() {
        let _ = writeln!(out, "{}\n", s.description);
    }
    let rate = s
        .profile(result.peak.as_ref().map(|p| p.ops_per_s))
        .to_string();
    let m = s.workload.mix;
    let _ = writeln!(
        out,
        "- started {}, {} s, open loop at {rate}; mix get {} / put {} / delete {}; {} keys ({:?}); timeout {} ms; {} client instances",
        result.started_at,
        s.workload.duration_s,
        m.get,
        m.put,
        m.delete,
        s.workload.keys,
        s.workload.distribution,
        s.workload.request_timeout_ms,
        s.workload.connections,
    );
    let w = &s.workload;
    let _ = writeln!(
        out,
        "- client: retry {}, routing {}, max attempts {}, attempt timeout {}",
        w.retry.name(),
        w.routing.name(),
        w.max_attempts
            .map_or("default".to_owned(), |n| n.to_string()),
        w.attempt_timeout_ms
            .map_or("default".to_owned(), |ms| format!("{ms} ms")),
    );
    if let (Some(nodes), Some(generator)) = (&s.cluster.cpus, &w.cpus) {
        let _ = writeln!(
            out,
            "- CPUs: nodes on {nodes}, load generator on {generator}"
        );
    }
    if let Some(cpus) = s.cluster.cpu_quota {
        let _ = writeln!(out, "- CPU quota: {cpus} CPU per node (cgroup)");
    }
    if !s.cluster.node_flags.is_empty() {
        let _ = writeln!(out, "- node flags: `{}`", s.cluster.node_flags.join(" "));
    }
    if let Some(p) = &result.peak {
        let _ = writeln!(out, "- peak: {:.0} ops/s ({})", p.ops_per_s, p.source);
    }
    let _ = writeln!(out, "- machine: {}", result.machine.line());
    let t = &result.totals;
    let _ = writeln!(
        out,
        "- totals: {} offered, {} ok, {} failed, {} dropped by the generator\n",
        t.offered, t.ok, t.errors, t.dropped
    );
    out.push_str(&phases_table(&result.phases));
    out.push_str(&by_op_section(&[(None, result.phases.as_slice())]));
    if let Some(server) = &result.server {
        let _ = writeln!(out, "\n## Server side\n");
        out.push_str(&server_lines(server));
    }
    if let Some(r) = &result.recovery {
        let _ = writeln!(out, "\n## Recovery\n");
        out.push_str(&recovery::lines(r));
    }
    out.push_str(&restarts::section(&result.restarts));
    if let Some(r) = &result.resources {
        out.push_str(&resources::section(r, &result.scenario.targets));
    }
    out.push_str(&targets_section(result));
    out.push_str(&messages_section(&result.error_messages));
    if !result.events.is_empty() {
        let _ = writeln!(out, "\n## Events\n");
        for e in &result.events {
            let _ = writeln!(out, "- {:.1} s: {}", e.t_s, e.detail);
        }
    }
    let _ = writeln!(
        out,
        "\nLatency is of successful requests, from when each was due (open loop). Ratios (×) are to the first phase of this run."
    );
    out
}

/// The scenario's targets that concern this run, checked, under a
/// heading; empty without any.
pub fn targets_section(result: &BenchResult) -> String {
    let verdicts = targets::evaluate(&result.scenario.targets, std::slice::from_ref(result));
    if verdicts.is_empty() {
        return String::new();
    }
    format!("\n## Targets\n\n{}", targets::table(&verdicts))
}

/// The most frequent client error messages, under a heading; empty
/// without failures.
pub fn messages_section(messages: &[(String, u64)]) -> String {
    if messages.is_empty() {
        return String::new();
    }
    let mut out = String::from("\n## Client errors\n\n");
    for (message, count) in messages.iter().take(MESSAGES_SHOWN) {
        let _ = writeln!(out, "- {count} × `{message}`");
    }
    if messages.len() > MESSAGES_SHOWN {
        let _ = writeln!(
            out,
            "- … {} more messages (all in result.json)",
            messages.len() - MESSAGES_SHOWN
        );
    }
    out
}

/// Error messages listed in summary.md; the rest are in result.json.
const MESSAGES_SHOWN: usize = 8;

/// The phases in markdown: the step table for a step load, the phase
/// table otherwise.
pub fn phases_table(phases: &[PhaseSummary]) -> String {
    if phases.first().is_some_and(|p| p.kind == PhaseKind::Step) {
        step_table(phases)
    } else {
        phase_table(phases)
    }
}

/// The phase table in markdown.
pub fn phase_table(phases: &[PhaseSummary]) -> String {
    let mut out = String::from(
        "| phase | seconds | offered/s | goodput/s | goodput ratio | worst second | ok % | timeout | unavailable | overloaded | other | dropped | p50 ms | p99 ms | p99.9 ms | p99 ratio | p99.9 ratio | attempts/request |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for p in phases {
        let _ = writeln!(
            out,
            "| {} | {}–{} | {:.0} | {:.0} | {} | {:.0} ({}) | {:.2} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            p.label,
            p.from_s,
            p.to_s,
            p.offered_per_s,
            p.goodput_per_s,
            times(p.vs_baseline.goodput),
            p.min_goodput_per_s,
            times(p.vs_baseline.min_goodput),
            p.success_ratio * 100.0,
            p.errors.get("timeout").copied().unwrap_or(0),
            p.errors.get("unavailable").copied().unwrap_or(0),
            p.errors.get("overloaded").copied().unwrap_or(0),
            p.errors.get("other").copied().unwrap_or(0),
            p.dropped,
            num(p.p50_ms, 2),
            num(p.p99_ms, 2),
            num(p.p999_ms, 2),
            times(p.vs_baseline.p99),
            times(p.vs_baseline.p999),
            num(p.attempts_per_request, 2),
        );
    }
    out
}

/// The step table in markdown: each step's goodput against the peak, and
/// its latency against the lowest (unloaded) step's.
pub fn step_table(phases: &[PhaseSummary]) -> String {
    let mut out = String::from(
        "| step | seconds | offered/s | goodput/s | goodput / peak | p50 ms | p99 ms | p99 / unloaded p99 | refused | failed | dropped | attempts/request |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for p in phases {
        let _ = writeln!(
            out,
            "| {} | {}–{} | {:.0} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} |",
            p.label,
            p.from_s,
            p.to_s,
            p.offered_per_s,
            p.goodput_per_s,
            percent(p.goodput_vs_peak),
            num(p.p50_ms, 2),
            num(p.p99_ms, 2),
            times(p.vs_baseline.p99),
            p.refused(),
            p.failed(),
            p.dropped,
            num(p.attempts_per_request, 2),
        );
    }
    out
}

/// The phases' latencies of reads and of writes apart, for each run named
/// (`None`: a single run, no variant column), under a heading; empty
/// unless some phase had both. Equal figures say the latency is waiting
/// that both share, not the work that differs (a write's journal sync).
pub fn by_op_section(runs: &[(Option<&str>, &[PhaseSummary])]) -> String {
    if !runs
        .iter()
        .any(|(_, phases)| phases.iter().any(|p| p.by_op.has_both()))
    {
        return String::new();
    }
    let named = runs.iter().any(|(name, _)| name.is_some());
    let mut out = String::from(
        "
## Latency by operation

",
    );
    out.push_str(if named {
        "| phase | variant | get p50 ms | get p99 ms | put/delete p50 ms | put/delete p99 ms |\n|---|---|---|---|---|---|\n"
    } else {
        "| phase | get p50 ms | get p99 ms | put/delete p50 ms | put/delete p99 ms |\n|---|---|---|---|---|\n"
    });
    let phases = runs.iter().map(|(_, p)| p.len()).max().unwrap_or(0);
    for i in 0..phases {
        for (name, run) in runs {
            let Some(p) = run.get(i) else { continue };
            let b = &p.by_op;
            let variant = name.map(|n| format!(" {n} |")).unwrap_or_default();
            let _ = writeln!(
                out,
                "| {} |{variant} {} | {} | {} | {} |",
                p.label,
                num(b.read_p50_ms, 2),
                num(b.read_p99_ms, 2),
                num(b.write_p50_ms, 2),
                num(b.write_p99_ms, 2),
            );
        }
    }
    out.push_str("\nSuccessful requests only, from when each was due; two significant digits.\n");
    out
}

/// A ratio as a percentage.
pub fn percent(v: Option<f64>) -> String {
    v.map_or("–".to_owned(), |v| format!("{:.0}%", v * 100.0))
}

/// The server-side figures as a markdown list.
pub fn server_lines(f: &ServerFigures) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "- refusal time p99: {} µs over {} immediate refusals ({} within 50 µs)",
        num(f.refusal_p99_us, 1),
        f.refusals_timed,
        f.refusals_within_50us
            .map_or("–".to_owned(), |s| format!("{:.2}%", s * 100.0)),
    );
    let reasons: Vec<String> = f
        .shed_by_reason
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(r, n)| format!("{r} {n}"))
        .collect();
    let _ = writeln!(
        out,
        "- shed: {}{}; deadline drops: {}; foreground ok: {}",
        f.shed,
        if reasons.is_empty() {
            String::new()
        } else {
            format!(" ({})", reasons.join(", "))
        },
        f.deadline_dropped,
        f.foreground_ok,
    );
    let _ = writeln!(
        out,
        "- recovery bytes (nodes readable at the end): sent {}, received {}",
        f.recovery_bytes_sent, f.recovery_bytes_received,
    );
    let _ = writeln!(
        out,
        "- Raft elections: {} (term {} → {})",
        f.elections.map_or("unknown".to_owned(), |e| e.to_string()),
        f.term_start.map_or("?".to_owned(), |t| t.to_string()),
        f.term_end.map_or("?".to_owned(), |t| t.to_string()),
    );
    let _ = writeln!(
        out,
        "- nodes not up at the end: {}",
        match &f.nodes_not_up {
            None => "unknown (no node gave its map)".to_owned(),
            Some(m) if m.is_empty() => "none".to_owned(),
            Some(m) => m
                .iter()
                .map(|(id, s)| format!("node {id} {s}"))
                .collect::<Vec<_>>()
                .join(", "),
        }
    );
    for p in &f.problems {
        let _ = writeln!(out, "- not read: {p}");
    }
    if !f.nodes.is_empty() {
        let _ = writeln!(out, "\n### Per node\n");
        out.push_str(&node_figures::table(&[(None, &f.nodes)]));
    }
    out
}

/// Now as `YYYY-MM-DDTHH:MM:SSZ` (UTC), without a date crate.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, mo, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day): Howard Hinnant's
/// `civil_from_days`.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_are_right() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }

    #[test]
    fn proc_fields_are_found() {
        let text = "processor\t: 0\nmodel name\t: Some CPU @ 2GHz\n";
        assert_eq!(
            field(text, "model name").as_deref(),
            Some("Some CPU @ 2GHz")
        );
        assert_eq!(
            field("MemTotal:  16 kB", "MemTotal").as_deref(),
            Some("16 kB")
        );
        assert_eq!(field(text, "missing"), None);
    }

    #[test]
    fn the_by_operation_table_shows_only_runs_with_reads_and_writes() {
        use crate::phases::{spans, summarise};
        use crate::timeline::{OpKind, Outcome, Timeline};
        use std::time::Duration;
        let mut t = Timeline::new(1);
        t.record_op(
            Duration::ZERO,
            Duration::from_millis(3),
            Outcome::Ok,
            OpKind::Read,
        );
        t.record_op(
            Duration::ZERO,
            Duration::from_millis(40),
            Outcome::Ok,
            OpKind::Write,
        );
        let both = summarise(t.buckets(), &spans(1, 0, &[]), None);
        let single = by_op_section(&[(None, both.as_slice())]);
        assert!(single.contains("## Latency by operation"), "{single}");
        let row: Vec<f64> = single
            .lines()
            .find(|l| l.starts_with("| steady"))
            .unwrap()
            .split('|')
            .filter_map(|f| f.trim().parse().ok())
            .collect();
        let want = [3.0, 3.0, 40.0, 40.0];
        assert!(
            row.len() == 4 && row.iter().zip(want).all(|(v, w)| (v - w).abs() < w * 0.01),
            "{single}"
        );
        assert!(!single.contains("variant"), "{single}");
        let named = by_op_section(&[(Some("on"), both.as_slice())]);
        assert!(named.contains("| steady | on | 3."), "{named}");

        let mut reads_only = Timeline::new(1);
        reads_only.record_op(
            Duration::ZERO,
            Duration::from_millis(3),
            Outcome::Ok,
            OpKind::Read,
        );
        let reads = summarise(reads_only.buckets(), &spans(1, 0, &[]), None);
        assert_eq!(by_op_section(&[(None, reads.as_slice())]), "");
    }
}
