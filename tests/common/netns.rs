//! Hosts for partition tests: one network namespace per node, each with a
//! veth into a bridge in the test's own namespace, so clients (here) reach
//! every node, and nftables rules inside a node's namespace cut it off
//! from chosen peers. Needs root (CI runs as root; the docker smoke test
//! needs it too). Everything is removed when the `Hosts` is dropped.

use std::process::Command;

/// The namespaces, veths and bridge of one test.
pub struct Hosts {
    tag: String,
    n: usize,
}

/// The subnet's first three octets: the bridge is `.254`, node `i` (1-based)
/// is `.i`.
const SUBNET: &str = "10.213.0";

fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Hosts {
    /// `n` hosts (namespaces) on one bridge.
    pub fn create(n: usize) -> Self {
        let tag = format!("{}", std::process::id() % 100_000);
        let hosts = Self { tag, n };
        let bridge = hosts.bridge();
        run(&["ip", "link", "add", &bridge, "type", "bridge"]);
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{SUBNET}.254/24"),
            "dev",
            &bridge,
        ]);
        run(&["ip", "link", "set", &bridge, "up"]);
        // Bridged frames pass through iptables' FORWARD chain when
        // br_netfilter is loaded, and docker sets its policy to DROP.
        run(&[
            "iptables", "-I", "FORWARD", "-i", &bridge, "-o", &bridge, "-j", "ACCEPT",
        ]);
        for i in 1..=n {
            let (ns, veth) = (hosts.netns(i), hosts.veth(i));
            run(&["ip", "netns", "add", &ns]);
            run(&[
                "ip", "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ]);
            run(&["ip", "link", "set", &veth, "master", &bridge, "up"]);
            run(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", Self::ip(i)),
                "dev",
                "eth0",
            ]);
            run(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
            run(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
            // The cuts live in this table, empty until a partition.
            for command in [
                "add table inet levee",
                "add chain inet levee inbound { type filter hook input priority 0; }",
                "add chain inet levee outbound { type filter hook output priority 0; }",
            ] {
                run(&["ip", "netns", "exec", &ns, "nft", command]);
            }
        }
        hosts
    }

    fn bridge(&self) -> String {
        format!("lvb{}", self.tag)
    }

    fn veth(&self, i: usize) -> String {
        format!("lv{}h{i}", self.tag)
    }

    /// Node `i`'s namespace (1-based).
    pub fn netns(&self, i: usize) -> String {
        format!("levee-{}-{i}", self.tag)
    }

    /// Node `i`'s address (1-based).
    pub fn ip(i: usize) -> String {
        format!("{SUBNET}.{i}")
    }

    /// Cuts hosts `a` and `b` (1-based) off from each other, both ways.
    pub fn cut(&self, a: usize, b: usize) {
        for (me, other) in [(a, b), (b, a)] {
            let ns = self.netns(me);
            let peer = Self::ip(other);
            for rule in [
                format!("add rule inet levee inbound ip saddr {peer} drop"),
                format!("add rule inet levee outbound ip daddr {peer} drop"),
            ] {
                run(&["ip", "netns", "exec", &ns, "nft", &rule]);
            }
        }
    }

    /// Removes every cut.
    pub fn heal(&self) {
        for i in 1..=self.n {
            let ns = self.netns(i);
            for chain in ["inbound", "outbound"] {
                run(&[
                    "ip", "netns", "exec", &ns, "nft", "flush", "chain", "inet", "levee", chain,
                ]);
            }
        }
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        // Best effort: a namespace's processes are the test's to kill.
        for i in 1..=self.n {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.netns(i)])
                .status();
            let _ = Command::new("ip")
                .args(["link", "del", &self.veth(i)])
                .status();
        }
        let bridge = self.bridge();
        let removed = Command::new("iptables")
            .args([
                "-w", "10", "-D", "FORWARD", "-i", &bridge, "-o", &bridge, "-j", "ACCEPT",
            ])
            .output();
        if let Ok(out) = removed
            && !out.status.success()
        {
            eprintln!(
                "could not remove the FORWARD rule of {bridge}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let _ = Command::new("ip").args(["link", "del", &bridge]).status();
    }
}
