//! [`Scenario::validate`]'s checks, one per table: every inconsistency a
//! run would otherwise trip over halfway becomes one line that names the
//! key.

use anyhow::bail;

use super::{Fault, FaultAction, KeyDistribution, Peak, Scenario, ValueSize};
use crate::cpus::is_cpu_list;

impl Scenario {
    pub(super) fn validate_cluster(&self) -> anyhow::Result<()> {
        let c = &self.cluster;
        if !c.endpoints.is_empty() {
            if c.nodes.is_some() || c.zones.is_some() || c.replicas.is_some() {
                bail!(
                    "cluster: give either endpoints (an existing cluster) or nodes/zones/replicas (local processes), not both"
                );
            }
            if c.durability.is_some()
                || c.port.is_some()
                || c.cpus.is_some()
                || !c.node_flags.is_empty()
            {
                bail!(
                    "cluster: durability, port, cpus and node_flags configure local processes; an existing cluster (endpoints) keeps its own settings"
                );
            }
            return Ok(());
        }
        let Some(nodes) = c.nodes else {
            bail!("cluster: give nodes = N (local processes) or endpoints = [\"HOST:PORT\", ...]");
        };
        if !(1..=250).contains(&nodes) {
            bail!(
                "cluster.nodes is {nodes}; local clusters have 1 to 250 nodes (one 127.0.0.i each)"
            );
        }
        if c.zones.is_some_and(|z| z == 0 || z > nodes) {
            bail!("cluster.zones must be between 1 and nodes ({nodes})");
        }
        if c.replicas.is_some_and(|r| r == 0 || r > nodes) {
            bail!("cluster.replicas must be between 1 and nodes ({nodes})");
        }
        if let Some(d) = &c.durability
            && d != "per_write"
            && d != "periodic"
        {
            bail!("cluster.durability is {d:?}; use \"per_write\" or \"periodic\"");
        }
        if c.port.is_some_and(|p| p == 0 || p == u16::MAX) {
            bail!("cluster.port must be between 1 and 65534 (the admin port is port + 1)");
        }
        Ok(())
    }

    /// Pinning needs both lists, local processes, and no restarts: a
    /// restarted node is started by the runner, which by then runs on the
    /// generator's CPUs.
    pub(super) fn validate_cpu_quota(&self) -> anyhow::Result<()> {
        let Some(cpus) = self.cluster.cpu_quota else {
            return Ok(());
        };
        if levee_cli::cpu_quota::quota_us(cpus).is_none() {
            bail!("cluster.cpu_quota is {cpus}; give the CPUs each node may use, such as 0.3");
        }
        if self.cluster.nodes.is_none() {
            bail!("cluster.cpu_quota needs local nodes (cluster.nodes), not an existing cluster");
        }
        Ok(())
    }

    pub(super) fn validate_cpus(&self) -> anyhow::Result<()> {
        match (&self.cluster.cpus, &self.workload.cpus) {
            (None, None) => return Ok(()),
            (Some(nodes), Some(generator)) => {
                for (key, list) in [("cluster.cpus", nodes), ("workload.cpus", generator)] {
                    if !is_cpu_list(list) {
                        bail!(
                            "{key} is {list:?}; give a CPU list such as \"0\", \"0-1\" or \"0,2\""
                        );
                    }
                }
            }
            _ => bail!(
                "give cluster.cpus and workload.cpus together: the nodes on one set of CPUs, the load generator on another"
            ),
        }
        if self.faults.iter().any(|f| f.action == FaultAction::Restart) {
            bail!(
                "restart faults and cpus together are not supported: the restarted node would start on the generator's CPUs"
            );
        }
        Ok(())
    }

    pub(super) fn validate_workload(&self) -> anyhow::Result<()> {
        let w = &self.workload;
        match (w.rate, w.ramp, w.steps.is_empty()) {
            (None, None, false) => {}
            (Some(_), None, true) | (None, Some(_), true) => {
                let (from, to) = self.rates();
                if !(from.is_finite() && to.is_finite())
                    || from < 0.0
                    || to < 0.0
                    || from + to <= 0.0
                {
                    bail!("workload rate must be positive ops/s (ramp ends may be 0, not both)");
                }
            }
            (None, None, true) => bail!(
                "workload: give rate = OPS_PER_S, ramp = [FROM, TO] or steps = [MULTIPLES] of peak"
            ),
            _ => bail!("workload: give only one of rate, ramp and steps"),
        }
        if w.duration_s == 0 {
            bail!("workload.duration_s must be at least 1");
        }
        if w.keys == 0 {
            bail!("workload.keys must be at least 1");
        }
        if self.preload.keys > w.keys {
            bail!(
                "preload.keys ({}) is more than workload.keys ({}); the preload writes the workload's keys",
                self.preload.keys,
                w.keys
            );
        }
        let m = w.mix;
        if [m.get, m.put, m.delete]
            .iter()
            .any(|f| !f.is_finite() || *f < 0.0)
            || ((m.get + m.put + m.delete) - 1.0).abs() > 1e-6
        {
            bail!(
                "workload.mix fractions must be non-negative and sum to 1 (get {} + put {} + delete {})",
                m.get,
                m.put,
                m.delete
            );
        }
        if w.distribution == KeyDistribution::Zipfian && !(w.theta > 0.0 && w.theta < 1.0) {
            bail!(
                "workload.theta is {}; zipfian skew must be between 0 and 1 (exclusive)",
                w.theta
            );
        }
        for (what, size) in [
            ("workload.value_bytes", w.value_bytes),
            ("preload.value_bytes", self.preload.value_bytes),
        ] {
            if let ValueSize::Uniform { min, max } = size
                && min > max
            {
                bail!("{what}: min ({min}) is more than max ({max})");
            }
            if size.max() > 4 * 1024 * 1024 {
                bail!("{what}: values over 4 MiB are refused by nodes (max_value_bytes)");
            }
        }
        if w.connections == 0 || self.preload.concurrency == 0 || w.max_in_flight == 0 {
            bail!(
                "workload.connections, workload.max_in_flight and preload.concurrency must be at least 1"
            );
        }
        if w.request_timeout_ms == 0 {
            bail!("workload.request_timeout_ms must be at least 1");
        }
        if w.attempt_timeout_ms == Some(0) || w.max_attempts == Some(0) {
            bail!("workload.attempt_timeout_ms and workload.max_attempts must be at least 1");
        }
        if w.throttle_k.is_some_and(|k| !(k.is_finite() && k >= 0.0)) {
            bail!("workload.throttle_k must be a number ≥ 0 (0 turns the throttle off)");
        }
        if w.overload_retry_below
            .is_some_and(|b| !(b.is_finite() && b >= 0.0))
        {
            bail!("workload.overload_retry_below must be a number ≥ 0 (1 retries always)");
        }
        if w.warmup_s >= w.duration_s {
            bail!("workload.warmup_s must be shorter than duration_s");
        }
        Ok(())
    }

    pub(super) fn validate_steps(&self) -> anyhow::Result<()> {
        let w = &self.workload;
        if w.steps.is_empty() {
            if w.step_s.is_some() || w.peak.is_some() {
                bail!("workload.step_s and workload.peak go with steps = [MULTIPLES]");
            }
            return Ok(());
        }
        let Some(step_s) = w.step_s.filter(|s| *s > 0) else {
            bail!("workload.steps needs step_s = SECONDS (each step's length, at least 1)");
        };
        if let Some(m) = w.steps.iter().find(|m| !(m.is_finite() && **m > 0.0)) {
            bail!("workload.steps: {m} is not a positive multiple of the peak");
        }
        match w.peak {
            None => bail!(
                "workload.steps needs peak = OPS_PER_S or peak = {{ calibrate_s = 10, concurrency = 64 }}"
            ),
            Some(Peak::Fixed(r)) if !(r.is_finite() && r > 0.0) => {
                bail!("workload.peak is {r}; give a positive rate in ops/s")
            }
            Some(Peak::Calibrate(c)) if c.calibrate_s == 0 || c.concurrency == 0 => {
                bail!("workload.peak: calibrate_s and concurrency must be at least 1")
            }
            _ => {}
        }
        if w.warmup_s >= step_s {
            bail!(
                "workload.warmup_s ({}) must be shorter than step_s ({step_s}): it is left out of every step",
                w.warmup_s
            );
        }
        // One step is a constant load at a multiple of a measured peak,
        // which faults can cut into phases; with several, the phases are
        // the steps.
        if !self.faults.is_empty() && w.steps.len() > 1 {
            bail!(
                "faults and several steps together are not supported: the phases of a step load are its steps (one step, e.g. steps = [0.7], may have faults)"
            );
        }
        Ok(())
    }

    /// The warm-up and both windows fit in the run, the windows apart.
    pub(super) fn validate_resources(&self) -> anyhow::Result<()> {
        let Some(r) = self.resources else {
            return Ok(());
        };
        if r.window_s == 0 {
            bail!("resources.window_s must be at least 1 (s)");
        }
        let needed = r.warmup_s + 2 * r.window_s;
        if needed > self.workload.duration_s {
            bail!(
                "resources: warmup_s ({}) and two windows of window_s ({}) need {needed} s; the run lasts {} s (workload.duration_s)",
                r.warmup_s,
                r.window_s,
                self.workload.duration_s
            );
        }
        Ok(())
    }

    pub(super) fn validate_faults(&self) -> anyhow::Result<()> {
        if self.faults.is_empty() {
            return Ok(());
        }
        let docker = self.cluster.docker.is_some();
        if !self.is_local() && !docker {
            bail!(
                "faults need local processes or the docker cluster (cluster.docker = \"docker/cluster.sh\"); with plain cluster.endpoints only faults = [] is supported"
            );
        }
        if !docker
            && let Some(f) = self
                .faults
                .iter()
                .find(|f| matches!(f.action, FaultAction::Partition | FaultAction::Heal))
        {
            bail!(
                "fault at {} s: {} needs the docker cluster (cluster.docker); local processes share one network",
                f.at_s,
                f.action
            );
        }
        let nodes = if docker {
            u8::try_from(self.cluster.endpoints.len()).unwrap_or(u8::MAX)
        } else {
            self.cluster.nodes.unwrap_or(0)
        };
        for f in &self.faults {
            if !(1..=nodes).contains(&f.node) {
                bail!(
                    "fault at {} s: node {} does not exist (nodes are 1..={nodes})",
                    f.at_s,
                    f.node
                );
            }
            if !f.at_s.is_finite() || f.at_s < 0.0 || f.at_s >= self.workload.duration_s as f64 {
                bail!(
                    "fault at {} s: at_s must be within the run (0 to duration_s = {})",
                    f.at_s,
                    self.workload.duration_s
                );
            }
            validate_slow(f, docker)?;
        }
        Ok(())
    }
}

/// The shortest duty cycle period (ms): signals and timers are
/// millisecond-grained, so below this the cycle is mostly timer jitter.
const MIN_PERIOD_MS: u64 = 10;

/// `stop_ms`, `period_ms` and `for_s` belong to `slow`, which needs them
/// (but `for_s`) consistent and local processes to signal.
fn validate_slow(f: &Fault, docker: bool) -> anyhow::Result<()> {
    let at = f.at_s;
    if f.action != FaultAction::Slow {
        if f.stop_ms.is_some() || f.period_ms.is_some() || f.for_s.is_some() {
            bail!(
                "fault at {at} s: stop_ms, period_ms and for_s go with action = \"slow\", not {}",
                f.action
            );
        }
        return Ok(());
    }
    if docker {
        bail!(
            "fault at {at} s: slow is a SIGSTOP/SIGCONT duty cycle on a local process; the docker cluster has no equivalent (use stop and cont)"
        );
    }
    let (Some(stop), Some(period)) = (f.stop_ms, f.period_ms) else {
        bail!("fault at {at} s: slow needs stop_ms and period_ms (e.g. 50 and 100)");
    };
    if period < MIN_PERIOD_MS || stop == 0 || stop >= period {
        bail!(
            "fault at {at} s: slow needs 0 < stop_ms < period_ms and period_ms ≥ {MIN_PERIOD_MS} (stop_ms is {stop}, period_ms {period})"
        );
    }
    if f.for_s.is_some_and(|s| !(s.is_finite() && s > 0.0)) {
        bail!(
            "fault at {at} s: for_s must be a positive number of seconds (or left out: to the end)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::tests::{DOCKER, MINIMAL, REMOTE};
    use super::*;

    #[test]
    fn faults_against_endpoints_are_refused_for_now() {
        let text = format!("{REMOTE}\n[[faults]]\nat_s = 5\naction = \"kill\"\nnode = 1\n");
        let err = Scenario::parse(&text).unwrap_err().to_string();
        assert!(err.contains("faults need local processes"), "{err}");
    }

    #[test]
    fn a_cpu_quota_is_a_positive_share_for_local_nodes() {
        let with =
            |quota: &str| MINIMAL.replace("[cluster]", &format!("[cluster]\ncpu_quota = {quota}"));
        assert_eq!(
            Scenario::parse(&with("0.3")).unwrap().cluster.cpu_quota,
            Some(0.3)
        );
        for bad in ["0", "-1", "5000"] {
            let err = Scenario::parse(&with(bad)).unwrap_err().to_string();
            assert!(err.contains("cpu_quota"), "{bad}: {err}");
        }
        let remote = REMOTE.replace("[cluster]", "[cluster]\ncpu_quota = 0.3");
        let err = Scenario::parse(&remote).unwrap_err().to_string();
        assert!(err.contains("local nodes"), "{err}");
    }

    #[test]
    fn the_resource_windows_must_fit_in_the_run() {
        let fits = format!("{MINIMAL}\n[resources]\nwarmup_s = 4\nwindow_s = 3\n");
        let s = Scenario::parse(&fits).unwrap();
        assert_eq!(s.resources.map(|r| (r.warmup_s, r.window_s)), Some((4, 3)));
        let long = fits.replace("window_s = 3", "window_s = 4");
        let err = format!("{:#}", Scenario::parse(&long).unwrap_err());
        assert!(err.contains("need 12 s"), "{err}");
        let zero = fits.replace("window_s = 3", "window_s = 0");
        assert!(Scenario::parse(&zero).is_err());
        let unknown = fits.replace("window_s = 3", "window_s = 3\nwindows = 2");
        assert!(Scenario::parse(&unknown).is_err());
    }

    #[test]
    fn faults_are_checked_and_sorted() {
        let text = format!(
            "{MINIMAL}\n[[faults]]\nat_s = 6\naction = \"restart\"\nnode = 2\n[[faults]]\nat_s = 3\naction = \"kill\"\nnode = 2\n"
        );
        let s = Scenario::parse(&text).unwrap();
        assert_eq!(s.faults[0].action, FaultAction::Kill);
        let bad = text.replace("node = 2", "node = 4");
        let err = Scenario::parse(&bad).unwrap_err().to_string();
        assert!(err.contains("node 4 does not exist"), "{err}");
        let late = text.replace("at_s = 6", "at_s = 60");
        assert!(Scenario::parse(&late).is_err());
    }

    #[test]
    fn mix_must_sum_to_one_and_rate_xor_ramp() {
        let text = format!("{MINIMAL}mix = {{ get = 0.5, put = 0.2 }}\n");
        assert!(Scenario::parse(&text).is_err());
        let both = MINIMAL.replace("rate = 100", "rate = 100\nramp = [1, 2]");
        assert!(Scenario::parse(&both).is_err());
    }

    const STEPS: &str = r#"
        [cluster]
        nodes = 3
        [workload]
        steps = [0.5, 1, 4]
        step_s = 10
        peak = { calibrate_s = 5 }
        keys = 1000
    "#;

    #[test]
    fn a_step_load_lasts_its_steps_and_measures_its_peak() {
        let s = Scenario::parse(STEPS).unwrap();
        assert_eq!(s.workload.duration_s, 30);
        assert_eq!(
            s.workload.peak,
            Some(Peak::Calibrate(super::super::Calibration {
                calibrate_s: 5,
                concurrency: 64
            }))
        );
        assert_eq!(s.fixed_peak(), None);
        let fixed = STEPS.replace("peak = { calibrate_s = 5 }", "peak = 200");
        let s = Scenario::parse(&fixed).unwrap();
        assert_eq!(s.fixed_peak(), Some(200.0));
        let rates = match s.profile(s.fixed_peak()) {
            crate::schedule::Profile::Steps(p) => p.rates,
            other => panic!("{other:?}"),
        };
        assert_eq!(rates, [100.0, 200.0, 800.0]);
    }

    #[test]
    fn step_loads_are_checked() {
        let cases = [
            ("step_s = 10", "step_s = 0", "step_s"),
            ("peak = { calibrate_s = 5 }", "", "needs peak"),
            (
                "steps = [0.5, 1, 4]",
                "steps = [0.5, -1]",
                "positive multiple",
            ),
            (
                "keys = 1000",
                "keys = 1000\nwarmup_s = 10",
                "shorter than step_s",
            ),
            (
                "keys = 1000",
                "keys = 1000\nduration_s = 20",
                "leave duration_s out",
            ),
            ("keys = 1000", "keys = 1000\nrate = 5", "only one of"),
            (
                "keys = 1000",
                "keys = 1000\n[[faults]]\nat_s = 1\naction = \"kill\"\nnode = 1",
                "faults and several steps",
            ),
        ];
        for (from, to, expected) in cases {
            let err = Scenario::parse(&STEPS.replace(from, to))
                .map(|_| ())
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{to}: {err}");
        }
        let stray = MINIMAL.replace("keys = 1000", "keys = 1000\nstep_s = 3");
        assert!(Scenario::parse(&stray).is_err(), "step_s without steps");
    }

    #[test]
    fn cpus_come_in_pairs_of_valid_lists() {
        let pinned = MINIMAL
            .replace("nodes = 3", "nodes = 3\ncpus = \"0\"")
            .replace("keys = 1000", "keys = 1000\ncpus = \"1\"");
        let s = Scenario::parse(&pinned).unwrap();
        assert_eq!(s.cluster.cpus.as_deref(), Some("0"));
        let alone = MINIMAL.replace("nodes = 3", "nodes = 3\ncpus = \"0\"");
        assert!(Scenario::parse(&alone).is_err());
        let bad = pinned.replace("cpus = \"1\"", "cpus = \"one\"");
        assert!(Scenario::parse(&bad).is_err());
        let restart = format!("{pinned}\n[[faults]]\nat_s = 1\naction = \"restart\"\nnode = 1\n");
        let err = Scenario::parse(&restart).unwrap_err().to_string();
        assert!(err.contains("restart"), "{err}");
    }

    fn slow(keys: &str) -> String {
        format!("{MINIMAL}\n[[faults]]\nat_s = 3\naction = \"slow\"\nnode = 2\n{keys}\n")
    }

    #[test]
    fn a_slow_fault_needs_a_consistent_duty_cycle() {
        let s = Scenario::parse(&slow("stop_ms = 50\nperiod_ms = 100")).unwrap();
        let f = s.faults[0];
        assert_eq!(
            (f.action, f.stop_ms, f.period_ms, f.for_s),
            (FaultAction::Slow, Some(50), Some(100), None)
        );
        assert!(Scenario::parse(&slow("stop_ms = 50\nperiod_ms = 100\nfor_s = 4")).is_ok());
        for (keys, expected) in [
            ("stop_ms = 50", "needs stop_ms and period_ms"),
            ("stop_ms = 100\nperiod_ms = 100", "0 < stop_ms < period_ms"),
            ("stop_ms = 0\nperiod_ms = 100", "0 < stop_ms < period_ms"),
            ("stop_ms = 2\nperiod_ms = 5", "period_ms ≥ 10"),
            ("stop_ms = 50\nperiod_ms = 100\nfor_s = 0", "for_s"),
            ("stop_ms = 50\nperiod_ms = 100\nduty = 0.5", "duty"),
        ] {
            let err = format!("{:#}", Scenario::parse(&slow(keys)).unwrap_err());
            assert!(err.contains(expected), "{keys}: {err}");
        }
    }

    #[test]
    fn duty_cycle_keys_belong_to_slow_and_slow_to_local_processes() {
        let kill = slow("stop_ms = 50\nperiod_ms = 100").replace("\"slow\"", "\"kill\"");
        let err = Scenario::parse(&kill).unwrap_err().to_string();
        assert!(err.contains("go with action = \"slow\""), "{err}");
        let docker = DOCKER.replace(
            "action = \"partition\"",
            "action = \"slow\"\nstop_ms = 50\nperiod_ms = 100",
        );
        let err = Scenario::parse(&docker).unwrap_err().to_string();
        assert!(err.contains("docker cluster has no equivalent"), "{err}");
    }

    #[test]
    fn one_step_with_faults_is_cut_at_its_faults() {
        let one = STEPS
            .replace("steps = [0.5, 1, 4]", "steps = [0.7]")
            .replace("step_s = 10", "step_s = 30");
        let s = Scenario::parse(&format!(
            "{one}\n[[faults]]\nat_s = 10\naction = \"kill\"\nnode = 2\n"
        ))
        .unwrap();
        assert!(s.phases_by_fault());
        assert_eq!(s.workload.duration_s, 30);
        assert!(!Scenario::parse(STEPS).unwrap().phases_by_fault());
        assert!(Scenario::parse(MINIMAL).unwrap().phases_by_fault());
    }
}
