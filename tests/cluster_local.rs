//! `levee local`: the README's "run it" command.

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{bin, wait_for};

/// A port free for protocol and admin on 127.0.0.1..=3.
fn free_port_on_three_hosts() -> u16 {
    wait_for(
        "a port free on 127.0.0.1-3",
        Duration::from_secs(10),
        || {
            let probe = TcpListener::bind("127.0.0.1:0").ok()?;
            let port = probe.local_addr().ok()?.port();
            drop(probe);
            let free = (1..=3).all(|h| {
                TcpListener::bind(format!("127.0.0.{h}:{port}")).is_ok()
                    && TcpListener::bind(format!("127.0.0.{h}:{}", port + 1)).is_ok()
            });
            (free && port < u16::MAX).then_some(port)
        },
    )
}

struct StopOnDrop(u32);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.to_string()])
            .status();
    }
}

/// The CLI as the README shows it after `levee local --certs-dir`.
fn levee(endpoint: &str, args: &[&str]) -> std::process::Output {
    Command::new(bin("levee"))
        .env("LEVEE_CERTS_DIR", common::certs::certs_dir())
        .env_remove("LEVEE_INSECURE")
        .args(["--endpoints", endpoint])
        .args(args)
        .output()
        .expect("run levee")
}

/// `levee local` with 3 nodes on `dir`, mutual TLS with the test run's
/// certificates.
fn local_command(dir: &std::path::Path, port: u16) -> Command {
    let mut command = Command::new(bin("levee"));
    command
        .args(["local", "--nodes", "3", "--port", &port.to_string()])
        .arg("--data-dir")
        .arg(dir)
        .arg("--certs-dir")
        .arg(common::certs::certs_dir())
        .env_remove("LEVEE_INSECURE");
    command
}

/// Runs `levee local` (mutual TLS with the test run's certificates) until
/// it prints that the cluster is ready, runs `during`, then stops it with
/// SIGTERM and checks it exits cleanly.
fn with_local_cluster(dir: &std::path::Path, port: u16, during: impl FnOnce(&str)) {
    let mut child = local_command(dir, port)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn levee local");
    let stdout = child.stdout.take().expect("stdout");
    // If an assertion fails, still stop the cluster (SIGTERM makes levee
    // local stop its nodes).
    let _guard = StopOnDrop(child.id());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut printed = Vec::new();
    wait_for(
        "levee local to print its whole banner",
        Duration::from_secs(90),
        || {
            while let Ok(line) = rx.try_recv() {
                printed.push(line);
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("levee local exited early with {status}: {printed:?}");
            }
            // The last line of the banner: the lines checked below come
            // before it, so none is still in the pipe when the wait ends.
            printed
                .iter()
                .any(|l| l.contains("Ctrl-C stops the cluster"))
                .then_some(())
        },
    );
    assert!(
        printed.iter().any(|l| l.contains("mutual TLS")),
        "says it is secured: {printed:?}"
    );
    assert!(
        printed.iter().any(|l| l.contains("levee put")),
        "prints how to use it: {printed:?}"
    );
    during(&format!("127.0.0.1:{port}"));
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = wait_for("levee local to stop", Duration::from_secs(60), || {
        child.try_wait().ok().flatten()
    });
    assert!(status.success(), "levee local exit status {status}");
}

#[test]
fn levee_local_runs_a_cluster_and_a_second_run_restarts_it_with_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port_on_three_hosts();
    let mut cluster_id = String::new();
    with_local_cluster(dir.path(), port, |endpoint| {
        let out = levee(endpoint, &["status", "-o", "json"]);
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status json");
        assert_eq!(
            status["nodes"].as_array().map(Vec::len),
            Some(3),
            "{status}"
        );
        assert!(status["leader"].as_u64().is_some());
        // One numbering: the node `levee local` calls i (on 127.0.0.i)
        // is node i in the map, so `levee admin drain i` hits it.
        for node in status["nodes"].as_array().unwrap() {
            let id = node["id"].as_u64().unwrap();
            let addr = node["addr"].as_str().unwrap();
            assert_eq!(addr, format!("127.0.0.{id}:{port}"), "{status}");
        }
        cluster_id = status["cluster_id"].as_str().unwrap().to_owned();
        assert!(
            levee(endpoint, &["put", "kept", "across runs"])
                .status
                .success()
        );
    });
    with_local_cluster(dir.path(), port, |endpoint| {
        let out = levee(endpoint, &["status", "-o", "json"]);
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status json");
        assert_eq!(
            status["cluster_id"].as_str(),
            Some(cluster_id.as_str()),
            "same cluster"
        );
        assert_eq!(
            status["nodes"].as_array().map(Vec::len),
            Some(3),
            "no node added: {status}"
        );
        assert_eq!(levee(endpoint, &["get", "kept"]).stdout, b"across runs");
    });
}

/// `levee local ctl` on the running cluster's directory.
fn ctl(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(bin("levee"))
        .args(["local", "ctl", "--data-dir"])
        .arg(dir)
        .args(args)
        .output()
        .expect("run levee local ctl")
}

fn node_states(dir: &std::path::Path) -> Vec<(u64, String, bool)> {
    let out = ctl(dir, &["ps", "-o", "json"]);
    assert!(out.status.success(), "{out:?}");
    let ps: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ps json");
    ps["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| {
            (
                n["node"].as_u64().unwrap(),
                n["state"].as_str().unwrap().to_owned(),
                n["pid"].as_u64().is_some(),
            )
        })
        .collect()
}

fn health_exit(endpoint: &str) -> Option<i32> {
    levee(endpoint, &["status", "--check"]).status.code()
}

#[test]
fn levee_local_ctl_stops_kills_pauses_and_starts_one_node() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port_on_three_hosts();
    with_local_cluster(dir.path(), port, |endpoint| {
        let running = |n: u64| (n, "running".to_owned(), true);
        assert_eq!(
            node_states(dir.path()),
            vec![running(1), running(2), running(3)]
        );

        // A second run on the same directory is refused at once, naming
        // the first and how to act on it, before it starts any node.
        let second = local_command(dir.path(), port)
            .output()
            .expect("run a second levee local");
        let said = String::from_utf8_lossy(&second.stderr);
        assert_eq!(second.status.code(), Some(1), "{said}");
        assert!(
            said.contains("already runs") && said.contains("levee local ctl"),
            "{said}"
        );

        // A crash: the cluster sees node 3 down and says so.
        let out = ctl(dir.path(), &["kill", "3"]);
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "node 3 killed");
        assert_eq!(node_states(dir.path())[2], (3, "stopped".to_owned(), false));
        wait_for(
            "status to show node 3 down",
            Duration::from_secs(60),
            || {
                let out = levee(endpoint, &["status", "-o", "json"]);
                let status: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
                let node = status["nodes"]
                    .as_array()?
                    .iter()
                    .find(|n| n["id"] == 3)?
                    .clone();
                (node["state"] == "down").then_some(())
            },
        );
        assert_eq!(
            health_exit(endpoint),
            Some(1),
            "HEALTH_WARN while node 3 is down"
        );
        let again = ctl(dir.path(), &["kill", "3"]);
        assert_eq!(again.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&again.stderr).contains("node 3 is not running"));

        // Started again on its data: the cluster heals.
        let out = ctl(dir.path(), &["start", "3"]);
        assert!(out.status.success(), "{out:?}");
        wait_for(
            "HEALTH_OK after node 3 is back",
            Duration::from_secs(60),
            || (health_exit(endpoint) == Some(0)).then_some(()),
        );

        // A hang: the process is frozen, and ps says so.
        assert!(ctl(dir.path(), &["pause", "2"]).status.success());
        assert_eq!(node_states(dir.path())[1], (2, "paused".to_owned(), true));
        assert!(ctl(dir.path(), &["resume", "2"]).status.success());
        assert_eq!(node_states(dir.path())[1], running(2));

        // A clean stop, then a start.
        let out = ctl(dir.path(), &["stop", "2"]);
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("node 2 stopped cleanly"),
            "{out:?}"
        );
        assert!(ctl(dir.path(), &["start", "2"]).status.success());
        assert_eq!(node_states(dir.path())[1], running(2));

        let wrong = ctl(dir.path(), &["kill", "9"]);
        assert_eq!(wrong.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&wrong.stderr).contains("no node 9"));
    });
    // levee local stopped: nothing answers on its directory any more.
    let gone = ctl(dir.path(), &["ps"]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&gone.stderr).contains("no levee local runs"));
}
