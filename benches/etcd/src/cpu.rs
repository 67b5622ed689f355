//! CPU time of processes, read from `/proc`: the servers' and the load
//! generator's own over the measured window. On a machine whose few cores
//! the servers and the generator share, CPU seconds per put says more
//! than puts/s alone, and the generator's share says how much of the
//! machine the measurement itself took.

use std::path::Path;

/// Clock ticks per second of `/proc/stat`'s times: `USER_HZ`, 100 on
/// every Linux architecture (the kernel's own tick rate may differ; this
/// unit does not).
const USER_HZ: f64 = 100.0;

/// User + system CPU seconds used so far by process `pid` (`self` for
/// this one), or `None` if it is gone or unreadable.
pub fn seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(Path::new("/proc").join(pid).join("stat")).ok()?;
    levee_node::metrics::process::cpu_seconds(&stat)
}

/// The CPU seconds of the processes `pids` together; `None` if any is
/// gone.
pub fn total_seconds(pids: &[String]) -> Option<f64> {
    pids.iter().map(|p| seconds(p)).sum()
}

/// CPU seconds the whole machine has spent busy so far (every CPU's user,
/// nice, system, irq, softirq and steal time in `/proc/stat`; idle and
/// iowait are not busy). Less the servers' and the generator's, what is
/// left over a window is what other processes took from the run.
pub fn machine_busy_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    parse_machine_busy(stat.lines().next()?)
}

/// Busy seconds from `/proc/stat`'s first (`cpu`) line.
fn parse_machine_busy(line: &str) -> Option<f64> {
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let ticks: Vec<u64> = fields
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let [user, nice, system, _idle, _iowait, irq, softirq, steal] = ticks[..] else {
        return None;
    };
    let busy = [user, nice, system, irq, softirq, steal]
        .into_iter()
        .fold(0u64, u64::saturating_add);
    Some(busy as f64 / USER_HZ)
}

/// The 1-minute load average (`/proc/loadavg`). It counts threads waiting
/// for the disk too, so a run that fsyncs raises it by itself.
pub fn load_average() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_busy_time_leaves_out_idle_and_iowait() {
        let line = "cpu  100 20 30 5000 400 5 6 7 0 0";
        assert_eq!(parse_machine_busy(line), Some(1.68));
        assert_eq!(parse_machine_busy("cpu0 1 2 3 4 5 6 7 8"), None);
        assert!(machine_busy_seconds().is_some());
    }

    #[test]
    fn this_process_has_a_cpu_time() {
        assert!(seconds("self").is_some());
        assert!(total_seconds(&["self".to_owned()]).is_some());
        assert_eq!(total_seconds(&["0".to_owned()]), None);
    }
}
