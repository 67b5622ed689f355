//! A CPU quota per local node (Linux cgroups): each node process gets its
//! own share of a CPU, as each node of a real cluster has its own
//! machine. Without it, local nodes share the machine's cores, and losing
//! a node frees CPU for the survivors instead of leaving them its load:
//! a zone-loss benchmark would then measure the opposite of a real zone
//! loss. With it, a node's capacity is its quota, and load that moves to
//! a node past its quota queues there, as on its own machine.
//!
//! One cgroup per node under one per cluster (`levee-<pid>-<n>/node-i`),
//! cgroup v2 (`cpu.max`) or v1 (`cpu.cfs_quota_us`), whichever the
//! machine mounts; a node process is moved into its cgroup right after it
//! is spawned (all its threads, and those it starts later follow). The
//! groups are removed when the cluster is dropped, once empty.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, bail};

/// The scheduler period quotas are expressed in: 100 ms, the kernel's
/// default. A node may use `cpus × period` of CPU time in each period.
const PERIOD_US: u64 = 100_000;

/// The smallest quota the kernel accepts (1 ms per period).
const MIN_QUOTA_US: u64 = 1_000;

/// Microseconds of CPU per period for `cpus` CPUs (0.5 = half a core),
/// or `None` if `cpus` is not a positive, finite number of at most 1024.
pub fn quota_us(cpus: f64) -> Option<u64> {
    (cpus.is_finite() && cpus > 0.0 && cpus <= 1024.0)
        .then(|| ((cpus * PERIOD_US as f64).round() as u64).max(MIN_QUOTA_US))
}

/// Which cgroup hierarchy the machine mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    /// The unified hierarchy: `cpu.max` in `/sys/fs/cgroup/<group>`.
    V2,
    /// The cpu controller's own hierarchy: `cpu.cfs_*` in
    /// `/sys/fs/cgroup/cpu/<group>`.
    V1,
}

/// The per-node cgroups of one local cluster.
#[derive(Debug)]
pub struct CpuQuota {
    /// The cluster's group; the nodes' groups are `node-i` inside it.
    root: PathBuf,
    nodes: u8,
}

impl CpuQuota {
    /// Creates a group for each of `nodes` nodes, each limited to `cpus`
    /// CPUs. Needs write access to the cgroup file system (root, or a
    /// delegated subtree); the error says which file refused.
    pub fn create(nodes: u8, cpus: f64) -> anyhow::Result<Self> {
        let quota = quota_us(cpus).with_context(|| {
            format!("a CPU quota must be a positive number of CPUs, not {cpus}")
        })?;
        static SEQUENCE: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "levee-{}-{}",
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        );
        let base = Path::new("/sys/fs/cgroup");
        let (version, root) = if base.join("cgroup.controllers").exists() {
            (Version::V2, base.join(&name))
        } else if base.join("cpu").join("cpu.cfs_quota_us").exists() {
            (Version::V1, base.join("cpu").join(&name))
        } else {
            bail!("no cgroup cpu controller under {}", base.display());
        };
        let this = Self { root, nodes };
        mkdir(&this.root)?;
        if version == Version::V2 {
            // The nodes' groups get the cpu controller from their parent.
            write(&this.root.join("cgroup.subtree_control"), "+cpu")?;
        }
        for index in 1..=nodes {
            let dir = this.node_dir(index);
            mkdir(&dir)?;
            match version {
                Version::V2 => write(&dir.join("cpu.max"), &format!("{quota} {PERIOD_US}"))?,
                Version::V1 => {
                    write(&dir.join("cpu.cfs_period_us"), &PERIOD_US.to_string())?;
                    write(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
                }
            }
        }
        Ok(this)
    }

    /// Moves process `pid` (node `index`, 1-based) into its node's group.
    pub fn place(&self, index: u8, pid: u32) -> anyhow::Result<()> {
        if index == 0 || index > self.nodes {
            bail!("no CPU quota group for node {index}");
        }
        write(&self.node_dir(index).join("cgroup.procs"), &pid.to_string())
    }

    fn node_dir(&self, index: u8) -> PathBuf {
        self.root.join(format!("node-{index}"))
    }
}

impl Drop for CpuQuota {
    fn drop(&mut self) {
        // Only empty groups can go; a node still exiting keeps its group
        // (an empty directory left behind, harmless).
        for index in 1..=self.nodes {
            let _ = std::fs::remove_dir(self.node_dir(index));
        }
        let _ = std::fs::remove_dir(&self.root);
    }
}

fn mkdir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir(dir).with_context(|| {
        format!(
            "cannot create the cgroup {} (a CPU quota needs root or a delegated cgroup)",
            dir.display()
        )
    })
}

fn write(file: &Path, value: &str) -> anyhow::Result<()> {
    std::fs::write(file, value)
        .with_context(|| format!("cannot write {value} to {}", file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_are_cpu_time_per_period() {
        assert_eq!(quota_us(1.0), Some(100_000));
        assert_eq!(quota_us(0.3), Some(30_000));
        assert_eq!(quota_us(2.5), Some(250_000));
        assert_eq!(
            quota_us(0.001),
            Some(MIN_QUOTA_US),
            "raised to the kernel's minimum"
        );
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 5000.0] {
            assert_eq!(quota_us(bad), None, "{bad}");
        }
    }
}
