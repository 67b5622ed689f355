//! The standard `process_*` metrics every Prometheus client exports
//! (CPU time, memory, file descriptors), read from `/proc/self` at scrape
//! time. Linux only: elsewhere, or when a file cannot be read or parsed,
//! the metric is left out, never guessed and never a panic.
//! `process_start_time_seconds` is written with the startup timeline
//! (`startup.rs`), which owns the process's start.

use std::path::Path;

use super::exposition::{Exposition, Kind};

/// Clock ticks per second of the times in `/proc/self/stat` (`USER_HZ`).
/// The kernel fixes it at 100 for user space on every architecture Linux
/// runs levee on, whatever its internal `HZ`; Prometheus' own procfs
/// library makes the same assumption rather than call `sysconf`.
const USER_HZ: f64 = 100.0;

/// One reading of the process's figures; `None` where it could not be read.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessSample {
    /// User plus system CPU time, in seconds.
    pub cpu_seconds: Option<f64>,
    /// Resident set size, in bytes.
    pub resident_bytes: Option<u64>,
    /// Virtual memory size, in bytes.
    pub virtual_bytes: Option<u64>,
    /// File descriptors open.
    pub open_fds: Option<u64>,
    /// The soft limit on open file descriptors.
    pub max_fds: Option<u64>,
}

impl ProcessSample {
    /// Reads `/proc/self`. A few small reads of kernel-generated files,
    /// cheap enough to do on the scrape's task.
    pub fn read() -> Self {
        let proc = Path::new("/proc/self");
        let read = |file: &str| std::fs::read_to_string(proc.join(file)).ok();
        let status = read("status");
        Self {
            cpu_seconds: read("stat").as_deref().and_then(cpu_seconds),
            resident_bytes: status.as_deref().and_then(|s| status_bytes(s, "VmRSS")),
            virtual_bytes: status.as_deref().and_then(|s| status_bytes(s, "VmSize")),
            open_fds: std::fs::read_dir(proc.join("fd"))
                .ok()
                .map(|dir| dir.filter(Result::is_ok).count() as u64),
            max_fds: read("limits").as_deref().and_then(max_open_files),
        }
    }

    /// Writes the figures that were read.
    pub fn render(&self, text: &mut Exposition) {
        if let Some(v) = self.cpu_seconds {
            text.single(
                "process_cpu_seconds_total",
                Kind::Counter,
                "Total user and system CPU time spent in seconds.",
                v,
            );
        }
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                self.resident_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                self.virtual_bytes,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                self.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors.",
                self.max_fds,
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(v) = value {
                text.single(name, Kind::Gauge, help, v);
            }
        }
    }
}

/// utime + stime of a `/proc/PID/stat` line, in seconds. The command
/// name (field 2) is in parentheses and may hold spaces and parentheses
/// itself, so the fields are counted from the last `)`. Public for the
/// benchmarks that read other processes' CPU (`benches/etcd`).
pub fn cpu_seconds(stat: &str) -> Option<f64> {
    let (_, after_comm) = stat.rsplit_once(')')?;
    // After the name come field 3 (state) onwards: utime is field 14,
    // stime field 15 (proc(5)).
    let mut fields = after_comm.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime.saturating_add(stime) as f64 / USER_HZ)
}

/// A `Key:   1234 kB` line of `/proc/self/status`, in bytes.
fn status_bytes(status: &str, key: &str) -> Option<u64> {
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))?;
    let mut words = line.split_whitespace();
    let value: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => value.checked_mul(1024),
        _ => None,
    }
}

/// The soft limit of `Max open files` in `/proc/self/limits`; `None` when
/// it is `unlimited` (no number to export).
fn max_open_files(limits: &str) -> Option<u64> {
    let line = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?;
    line.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_counted_from_the_last_parenthesis() {
        let stat = "4242 (levee (node) x) S 1 4242 4242 0 -1 4194560 2500 0 0 0 150 75 0 0 20 0 9 0 12345 1000 200";
        assert_eq!(cpu_seconds(stat), Some(2.25));
        assert_eq!(cpu_seconds("4242 (cut) S 1 2"), None);
        assert_eq!(cpu_seconds("no parenthesis"), None);
    }

    #[test]
    fn memory_is_read_in_kilobytes_and_given_in_bytes() {
        let status = "Name:\tlevee-node\nVmSize:\t  20000 kB\nVmRSS:\t    1500 kB\n";
        assert_eq!(status_bytes(status, "VmRSS"), Some(1_536_000));
        assert_eq!(status_bytes(status, "VmSize"), Some(20_480_000));
        assert_eq!(status_bytes(status, "VmSwap"), None);
        assert_eq!(status_bytes("VmRSS:\t12 pages\n", "VmRSS"), None);
    }

    #[test]
    fn the_soft_open_files_limit_is_read_and_unlimited_is_left_out() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max cpu time              unlimited            unlimited            seconds\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(max_open_files(limits), Some(1024));
        assert_eq!(
            max_open_files("Max open files  unlimited  unlimited  files\n"),
            None
        );
        assert_eq!(max_open_files(""), None);
    }

    #[test]
    fn what_could_not_be_read_is_left_out() {
        let mut text = Exposition::new();
        ProcessSample {
            open_fds: Some(7),
            ..Default::default()
        }
        .render(&mut text);
        let text = text.finish();
        assert!(text.contains("process_open_fds 7\n"), "{text}");
        assert!(!text.contains("process_cpu_seconds_total"), "{text}");
        assert!(!text.contains("process_max_fds"), "{text}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_reads_as_running() {
        let s = ProcessSample::read();
        assert!(s.resident_bytes.is_some_and(|b| b > 0), "{s:?}");
        assert!(s.open_fds.is_some_and(|n| n > 0), "{s:?}");
        assert!(s.cpu_seconds.is_some_and(|c| c >= 0.0), "{s:?}");
        assert!(
            s.max_fds.is_some_and(|m| m >= s.open_fds.unwrap_or(0)),
            "{s:?}"
        );
    }
}
