//! The outputs of a run: `result.json` (everything), `summary.md` (the
//! phase table with ratios) and, through [`super::plot`], `timeline.png`.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;

use super::cluster::Event;
use super::phases::PhaseSummary;
use super::scenario::Scenario;
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
    /// Before / during / after, with ratios to the first.
    pub phases: Vec<PhaseSummary>,
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
#[derive(Debug, Clone, Serialize)]
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
    pub levee_version: &'static str,
    /// `release` or `debug`: debug builds are many times slower.
    pub build: &'static str,
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
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model: field(&cpuinfo, "model name").unwrap_or_default(),
            memory_bytes: field(&meminfo, "MemTotal")
                .and_then(|v| v.trim_end_matches("kB").trim().parse::<u64>().ok())
                .map(|kb| kb * 1024),
            kernel: read("/proc/sys/kernel/osrelease"),
            levee_version: env!("CARGO_PKG_VERSION"),
            build: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
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

fn num(v: Option<f64>, digits: usize) -> String {
    v.map_or("–".to_owned(), |v| format!("{v:.digits$}"))
}

fn times(v: Option<f64>) -> String {
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
    let (from, to) = s.rates();
    let rate = if from == to {
        format!("{from} ops/s")
    } else {
        format!("{from} → {to} ops/s")
    };
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
    let _ = writeln!(out, "- machine: {}", result.machine.line());
    let t = &result.totals;
    let _ = writeln!(
        out,
        "- totals: {} offered, {} ok, {} failed, {} dropped by the generator\n",
        t.offered, t.ok, t.errors, t.dropped
    );
    out.push_str(&phase_table(&result.phases));
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

/// The phase table in markdown.
pub fn phase_table(phases: &[PhaseSummary]) -> String {
    let mut out = String::from(
        "| phase | seconds | offered/s | goodput/s | goodput ratio | worst second | ok % | timeout | unavailable | overloaded | other | dropped | p50 ms | p99 ms | p99.9 ms | p99 ratio | p99.9 ratio |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for p in phases {
        let _ = writeln!(
            out,
            "| {} | {}–{} | {:.0} | {:.0} | {} | {:.0} ({}) | {:.2} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
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
        );
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
}
