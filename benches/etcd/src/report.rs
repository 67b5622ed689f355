//! What a run writes (`run.json`, one per system) and the comparison of
//! two of them: a table on stdout, `compare.md` and `compare.json`.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// Issue #17's target: levee's 3-node put throughput at least this many
/// times a 3-node etcd's on the same machine.
pub const TARGET_RATIO: f64 = 3.0;

/// CPUs other processes may take during a window (CPU seconds per second)
/// before the notes warn that the run measured a shared machine: a tenth
/// of a core is background noise, a quarter is someone's build.
const OTHERS_WARNING_CPUS: f64 = 0.25;

/// One system's run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// `levee` or `etcd`.
    pub system: String,
    /// What was measured (`etcd --version`, levee's git revision).
    pub version: String,
    /// Servers the load went to.
    pub endpoints: Vec<String>,
    /// Puts in flight (closed-loop workers).
    pub clients: usize,
    /// Client instances the workers share.
    pub connections: usize,
    /// Bytes per value.
    pub value_bytes: usize,
    /// Seconds before the window.
    pub warmup_s: f64,
    /// Seconds measured.
    pub duration_s: f64,
    /// Puts answered with success in the window.
    pub puts: u64,
    /// Puts failed in the window.
    pub errors: u64,
    /// One failure's message.
    pub last_error: Option<String>,
    /// `puts / duration_s`.
    pub puts_per_s: f64,
    /// Latency percentiles of the successful puts (ms).
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// CPU seconds the servers used in the window (all of them), if
    /// their process ids were given.
    pub server_cpu_s: Option<f64>,
    /// CPU seconds the load generator used in the window.
    pub generator_cpu_s: Option<f64>,
    /// CPU seconds the rest of the machine used in the window: other
    /// people's work, which the servers and the generator did not get.
    #[serde(default)]
    pub other_cpu_s: Option<f64>,
    /// 1-minute load average at the end of the window.
    pub load_average: Option<f64>,
}

impl Run {
    /// Server CPU milliseconds per successful put.
    pub fn server_cpu_ms_per_put(&self) -> Option<f64> {
        let cpu = self.server_cpu_s?;
        (self.puts > 0).then(|| cpu * 1000.0 / self.puts as f64)
    }
}

/// Two runs side by side.
#[derive(Debug, Serialize)]
pub struct Comparison<'a> {
    pub levee: &'a Run,
    pub etcd: &'a Run,
    /// levee's puts/s over etcd's.
    pub ratio: f64,
    /// Issue #17's target ratio.
    pub target: f64,
    /// Whether the ratio meets it.
    pub met: bool,
    /// What the machine is (`nproc`, CPU model), as the script saw it.
    pub machine: String,
}

impl<'a> Comparison<'a> {
    pub fn new(levee: &'a Run, etcd: &'a Run, machine: String) -> Self {
        let ratio = if etcd.puts_per_s > 0.0 {
            levee.puts_per_s / etcd.puts_per_s
        } else {
            f64::INFINITY
        };
        Self {
            levee,
            etcd,
            ratio,
            target: TARGET_RATIO,
            met: ratio >= TARGET_RATIO,
            machine,
        }
    }

    /// The table, as markdown (it reads as plain text too).
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "| system | version | puts/s | p50 ms | p99 ms | p99.9 ms | errors | server CPU ms/put | ratio levee/etcd |"
        );
        let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---:|");
        for (run, ratio) in [
            (self.etcd, String::new()),
            (self.levee, format!("×{:.2}", self.ratio)),
        ] {
            let cpu = run
                .server_cpu_ms_per_put()
                .map_or("–".to_owned(), |c| format!("{c:.3}"));
            let _ = writeln!(
                out,
                "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {cpu} | {ratio} |",
                run.system,
                run.version,
                run.puts_per_s,
                run.p50_ms,
                run.p99_ms,
                run.p999_ms,
                run.errors
            );
        }
        out
    }

    /// The setup and the verdict, under the table.
    pub fn notes(&self) -> String {
        let r = self.levee;
        format!(
            "{} closed-loop clients ({} client instances), put only, {} B values, a new key per put, \
             {:.0} s warm-up then {:.0} s measured, one system at a time on {}.\n\
             CPUs busy in the window: {}; {}.\n\
             Target (issue #17): levee ≥ ×{:.0} etcd — {} (×{:.2}).\n",
            r.clients,
            r.connections,
            r.value_bytes,
            r.warmup_s,
            r.duration_s,
            self.machine,
            usage(self.etcd),
            usage(self.levee),
            self.target,
            if self.met { "met" } else { "not met" },
            self.ratio,
        ) + &self.shared_warning()
    }

    /// A warning if other processes took a share of the machine during
    /// either window: then both systems ran short of CPU, by different
    /// amounts, and the figures are of that machine, not of an idle one.
    fn shared_warning(&self) -> String {
        let busy = |run: &Run| run.other_cpu_s.map_or(0.0, |s| s / run.duration_s);
        let most = busy(self.etcd).max(busy(self.levee));
        if most < OTHERS_WARNING_CPUS {
            return String::new();
        }
        format!(
            "Warning: other processes took up to {most:.2} CPUs during a window; \
             the figures are of a shared machine (run again when it is idle).\n"
        )
    }

    /// Writes `compare.md` and `compare.json` into `dir`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        let md = format!(
            "# Durable puts: levee beside etcd\n\n{}\n{}",
            self.table(),
            self.notes()
        );
        let path = dir.join("compare.md");
        std::fs::write(&path, md).with_context(|| format!("cannot write {}", path.display()))?;
        let path = dir.join("compare.json");
        let json = serde_json::to_string_pretty(self)?;
        std::fs::write(&path, json + "\n")
            .with_context(|| format!("cannot write {}", path.display()))
    }
}

/// "etcd run: servers 1.2, generator 0.2, other processes 0.4; load
/// average 3.1": CPU seconds per second of the window.
fn usage(run: &Run) -> String {
    let cpus =
        |s: Option<f64>| s.map_or("–".to_owned(), |s| format!("{:.2}", s / run.duration_s));
    let load = run
        .load_average
        .map_or("–".to_owned(), |l| format!("{l:.1}"));
    format!(
        "{} run: servers {}, generator {}, other processes {}; load average {load}",
        run.system,
        cpus(run.server_cpu_s),
        cpus(run.generator_cpu_s),
        cpus(run.other_cpu_s),
    )
}

/// Reads a run written by `put-load run`.
pub fn read(path: &Path) -> anyhow::Result<Run> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a put-load run", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(system: &str, puts_per_s: f64) -> Run {
        Run {
            system: system.to_owned(),
            version: "v".to_owned(),
            endpoints: vec!["127.0.0.1:1".to_owned()],
            clients: 64,
            connections: 4,
            value_bytes: 256,
            warmup_s: 3.0,
            duration_s: 20.0,
            puts: (puts_per_s * 20.0) as u64,
            errors: 0,
            last_error: None,
            puts_per_s,
            p50_ms: 5.0,
            p99_ms: 20.0,
            p999_ms: 30.0,
            max_ms: 40.0,
            server_cpu_s: Some(20.0),
            generator_cpu_s: Some(4.0),
            other_cpu_s: Some(1.0),
            load_average: Some(2.5),
        }
    }

    #[test]
    fn the_ratio_is_levee_over_etcd_and_judged_against_the_target() {
        let (levee, etcd) = (run("levee", 9000.0), run("etcd", 3000.0));
        let c = Comparison::new(&levee, &etcd, "2 CPUs".to_owned());
        assert!((c.ratio - 3.0).abs() < 1e-9);
        assert!(c.met);
        let slow = run("levee", 3500.0);
        assert!(!Comparison::new(&slow, &etcd, String::new()).met);
    }

    #[test]
    fn the_table_has_a_row_per_system_etcd_first() {
        let (levee, etcd) = (run("levee", 6000.0), run("etcd", 3000.0));
        let table = Comparison::new(&levee, &etcd, String::new()).table();
        let rows: Vec<&str> = table.lines().collect();
        assert_eq!(rows.len(), 4);
        assert!(rows[2].starts_with("| etcd |"));
        assert!(rows[3].starts_with("| levee |") && rows[3].ends_with("×2.00 |"));
        // 20 CPU s over 120,000 puts.
        assert!(rows[3].contains("| 0.167 |"));
    }

    #[test]
    fn the_notes_give_each_runs_cpus_and_the_verdict() {
        let (levee, etcd) = (run("levee", 6000.0), run("etcd", 3000.0));
        let notes = Comparison::new(&levee, &etcd, "2 CPUs".to_owned()).notes();
        assert!(notes.contains(
            "etcd run: servers 1.00, generator 0.20, other processes 0.05; load average 2.5"
        ));
        assert!(notes.contains("not met (×2.00)"));
        assert!(!notes.contains("Warning"));
        let busy = Run {
            other_cpu_s: Some(10.0),
            ..run("etcd", 3000.0)
        };
        let notes = Comparison::new(&levee, &busy, String::new()).notes();
        assert!(notes.contains("Warning: other processes took up to 0.50 CPUs"));
    }

    #[test]
    fn a_run_reads_back_as_written() {
        let dir = std::env::temp_dir().join(format!("put-load-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("run.json");
        let original = run("etcd", 1234.0);
        std::fs::write(&path, serde_json::to_string(&original).unwrap()).unwrap();
        assert_eq!(read(&path).unwrap(), original);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
