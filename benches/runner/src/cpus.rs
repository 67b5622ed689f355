//! Keeping the load generator off the nodes' CPUs. On a small machine the
//! generator and the nodes compete for the same cores, and past the
//! cluster's peak the generator's own work grows with the offered load
//! until it, not the cluster, decides what is measured. With
//! `cluster.cpus` and `workload.cpus` the nodes run on one set of CPUs
//! and the generator on another.
//!
//! The runner moves itself: onto the cluster's CPUs while it starts the
//! node processes (a child inherits its parent's CPUs), then onto the
//! generator's for the rest of the run. `taskset` (util-linux) does the
//! moving, for every thread of the process.

use anyhow::{Context, bail};

/// Whether `list` is a CPU list as `taskset -c` reads it: numbers and
/// ranges separated by commas (`0`, `0-1`, `0,2-3`).
pub fn is_cpu_list(list: &str) -> bool {
    let number = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    !list.is_empty()
        && list.split(',').all(|part| match part.split_once('-') {
            Some((a, b)) => {
                number(a) && number(b) && a.parse::<u32>().ok() <= b.parse::<u32>().ok()
            }
            None => number(part),
        })
}

/// Moves every thread of this process onto `list`; its future children
/// start there too.
pub fn move_self(list: &str) -> anyhow::Result<()> {
    let pid = std::process::id().to_string();
    let output = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", list, &pid])
        .output()
        .context("cannot run taskset (util-linux) to pin the runner's CPUs")?;
    if !output.status.success() {
        bail!(
            "taskset -a -p -c {list} {pid} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_are_numbers_and_ranges() {
        for good in ["0", "1", "0-1", "0,2-3", "12"] {
            assert!(is_cpu_list(good), "{good}");
        }
        for bad in ["", "a", "1-", "-1", "3-1", "0,,1", "0 1", "0;1"] {
            assert!(!is_cpu_list(bad), "{bad}");
        }
    }
}
