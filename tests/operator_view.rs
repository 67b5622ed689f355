//! What an operator reads and types, through the real binaries: health
//! with codes and `status --check` exit codes, settings in human units
//! and as JSON numbers, errors as JSON, the client's own limit check,
//! `delete` of a missing key, completions and the man page, a hung seed
//! that costs a stagger instead of a connect timeout, and a dead peer
//! that is a log line per interval, not two a second.

mod common;

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::{by_id, start_cluster_with, wait_for_members};
use common::{TestNode, bin, wait_for};

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn check(node: &TestNode) -> (i32, String) {
    let out = node.cli(&["status", "--check"], None);
    (out.status.code().unwrap_or(-1), text(&out))
}

#[test]
fn health_names_what_is_wrong_and_status_check_exits_by_it() {
    let dir = tempfile::tempdir().unwrap();
    let flags = [
        "--heartbeat-ms",
        "200",
        "--recovery",
        "suspect_after=400ms,down_after=1200ms",
    ];
    let mut nodes = start_cluster_with(dir.path(), 3, &flags);
    wait_for_members(&nodes, 3);

    // A cluster just formed is healthy once every node's heartbeats have
    // reached the leader (until then a node may show as suspect).
    let shown = wait_for("HEALTH_OK", Duration::from_secs(30), || {
        let (code, shown) = check(&nodes[0]);
        (code == 0).then_some(shown)
    });
    assert!(shown.starts_with("health: HEALTH_OK"), "{shown}");

    // Settings in human units, shown back the same way, and as numbers
    // (ms) in JSON under the keys `admin set` takes.
    let set = nodes[0].cli(&["admin", "set", "down_out_interval=10m", "noout=on"], None);
    assert!(set.status.success(), "{}", text(&set));
    let list = nodes[0].cli(&["admin", "set", "--list"], None);
    assert!(text(&list).contains("10m"), "{}", text(&list));
    let json = nodes[0].cli(&["-o", "json", "admin", "set", "--list"], None);
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(json["down_out_interval"], 600_000, "{json}");
    assert_eq!(json["noout"], true, "{json}");
    let status = nodes[0].cli(&["-o", "json", "status"], None);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["settings"]["down_out_interval"], 600_000, "{status}");
    assert_eq!(status["health"]["status"], "HEALTH_WARN", "{status}");
    let bad = nodes[0].cli(&["admin", "set", "down_after=soon"], None);
    assert!(!bad.status.success());
    assert!(
        text(&bad).contains("takes a duration such as 30s"),
        "{}",
        text(&bad)
    );

    // noout alone is a warning.
    let (code, shown) = check(&nodes[0]);
    assert_eq!(code, 1, "{shown}");
    assert!(shown.contains("NOOUT_SET"), "{shown}");

    // A node down: how long since its last beat, and why it will not be
    // marked out (noout), then when it will be.
    nodes[2].kill();
    let shown = wait_for("NODE_DOWN in the health", Duration::from_secs(30), || {
        let (code, shown) = check(&nodes[0]);
        (code == 1 && shown.contains("NODE_DOWN")).then_some(shown)
    });
    assert!(shown.contains("last beat"), "{shown}");
    assert!(
        shown.contains("not marked out: the noout flag is set"),
        "{shown}"
    );
    assert!(shown.contains("PG_DEGRADED"), "{shown}");
    assert!(
        nodes[0]
            .cli(&["admin", "noout", "off"], None)
            .status
            .success()
    );
    // Without noout, node 3 is still never marked out: it is alone in its
    // zone (and 2 of 3 is below min_in_ratio). Health says so now, not
    // once its out time has come, and says what to do.
    let shown = wait_for("the guard's reason", Duration::from_secs(30), || {
        let (_, shown) = check(&nodes[0]);
        shown.contains("NODE_NOT_OUTABLE").then_some(shown)
    });
    assert!(!shown.contains("NOOUT_SET"), "{shown}");
    assert!(shown.contains("levee admin drain 3"), "{shown}");
    assert!(shown.contains("whole zone is down"), "{shown}");

    // Nothing answers: as bad as HEALTH_ERR for a script, and under
    // -o json the error is JSON too.
    let out = Command::new(bin("levee"))
        .args([
            "--insecure",
            "--endpoints",
            "127.0.0.1:1",
            "--timeout-ms",
            "2000",
        ])
        .args(["-o", "json", "status", "--check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let error: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(error["error"].as_str().is_some(), "{error}");
}

#[test]
fn the_client_checks_sizes_and_says_whether_a_deleted_key_existed() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_cluster_with(dir.path(), 1, &[]);
    let node = &nodes[0];

    // Over the 4 MiB default: refused by the client with the limit's
    // name, not by the node's frame reader with a frame size.
    let big = dir.path().join("big");
    std::fs::write(&big, vec![7u8; 5_000_000]).unwrap();
    let out = node.cli(&["put", "big", "--file", big.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    let shown = text(&out);
    assert!(
        shown.contains("max_value_bytes") && shown.contains("nothing sent"),
        "{shown}"
    );

    let out = node.cli(&["delete", "never-written"], None);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("key not found"), "{}", text(&out));
    assert!(node.cli(&["put", "k", "v"], None).status.success());
    let out = node.cli(&["-o", "json", "delete", "k"], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["existed"], true, "{json}");
    // Deleted: gone, and a second delete says it did not exist.
    assert_eq!(node.cli(&["get", "k"], None).status.code(), Some(3));
    assert_eq!(node.cli(&["delete", "k"], None).status.code(), Some(3));

    // Timeouts in units, as everywhere a person types a duration.
    let out = node.cli(
        &[
            "--timeout-ms",
            "3s",
            "--connect-timeout-ms",
            "500ms",
            "put",
            "k",
            "v",
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = node.cli(&["--timeout-ms", "soon", "get", "k"], None);
    assert_eq!(out.status.code(), Some(2), "a usage error");
    assert!(
        text(&out).contains("takes a duration such as 30s"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_hung_seed_costs_a_stagger_not_a_connect_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_cluster_with(dir.path(), 1, &[]);
    // A seed that accepts connections and never answers the handshake.
    let hung = TcpListener::bind("127.0.0.1:0").unwrap();
    let hung_addr = hung.local_addr().unwrap().to_string();
    let endpoints = format!("{hung_addr},{}", nodes[0].addr);
    let mut child = Command::new(bin("levee"))
        .env_remove("LEVEE_ENDPOINTS")
        .env("LEVEE_CERTS_DIR", common::certs::certs_dir())
        .args(["--endpoints", &endpoints])
        .args(["--connect-timeout-ms", "120000", "--timeout-ms", "120000"])
        .args(["put", "via-second-seed", "v"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Tried one after the other, the hung seed would hold the CLI for its
    // whole 120 s connect timeout; dialled side by side after a stagger,
    // the second seed answers at once. 60 s is only a bound on the wait.
    let started = Instant::now();
    let status = wait_for(
        "the put through the second seed",
        Duration::from_secs(60),
        || child.try_wait().ok().flatten(),
    );
    assert!(
        status.success(),
        "exit {status} after {:?}",
        started.elapsed()
    );
    drop(hung);
}

#[test]
fn status_watch_redraws_until_stopped() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_cluster_with(dir.path(), 1, &[]);
    let mut child = Command::new(bin("levee"))
        .env_remove("LEVEE_ENDPOINTS")
        .env("LEVEE_CERTS_DIR", common::certs::certs_dir())
        .args(["--endpoints", &nodes[0].addr])
        .args(["status", "--watch", "--interval", "200ms"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let views = wait_for("three views", Duration::from_secs(30), || {
        lines.extend(rx.try_iter());
        let views = lines.iter().filter(|l| l.starts_with("health: ")).count();
        (views >= 3).then_some(lines.clone())
    });
    // Each view is the full status, with the nodes' load column.
    assert!(
        views
            .iter()
            .any(|l| l.starts_with("levee status --watch  every 200ms")),
        "{views:?}"
    );
    assert!(views.iter().any(|l| l.contains("LOAD")), "{views:?}");
    // And each node asked directly, with rates from one view to the
    // next: from the second view on, its requests per second.
    assert!(views.iter().any(|l| l.starts_with("ENDPOINT")), "{views:?}");
    let rows: Vec<Vec<&str>> = views
        .iter()
        .filter(|l| l.starts_with(&nodes[0].addr))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(rows.len() >= 3, "{views:?}");
    // ENDPOINT ID VERSION UPTIME DATA (n unit) HINTS (n unit) LIMIT OPS/S
    let ops = rows.last().unwrap().get(9).copied().unwrap_or_default();
    assert!(ops.parse::<f64>().is_ok(), "OPS/S {ops:?} in {views:?}");
    // SIGTERM stops it cleanly.
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = wait_for(
        "levee status --watch to stop",
        Duration::from_secs(10),
        || child.try_wait().ok().flatten(),
    );
    assert!(status.success(), "{status}");
}

#[test]
fn completions_and_a_man_page() {
    let run = |args: &[&str]| Command::new(bin("levee")).args(args).output().unwrap();
    let bash = run(&["completions", "bash"]);
    assert!(bash.status.success());
    let bash = String::from_utf8_lossy(&bash.stdout);
    assert!(
        bash.contains("_levee()") && bash.contains("status"),
        "{bash}"
    );
    let fish = run(&["completions", "fish"]);
    assert!(String::from_utf8_lossy(&fish.stdout).contains("complete -c levee"));
    let man = run(&["man"]);
    assert!(man.status.success());
    let man = String::from_utf8_lossy(&man.stdout);
    assert!(
        man.contains(".TH levee 1") && man.contains("status"),
        "{man}"
    );
}

#[test]
fn a_dead_peer_is_one_log_line_per_interval_with_a_count() {
    let dir = tempfile::tempdir().unwrap();
    let interval = Duration::from_secs(2);
    let mut nodes = start_cluster_with(dir.path(), 3, &["--log-repeat-interval-ms", "2000"]);
    let status = wait_for_members(&nodes, 3);
    let leader = by_id(&nodes, &status, status.leader.expect("a leader"));
    let (victim_id, _) = status
        .map
        .nodes
        .iter()
        .find(|(id, _)| Some(**id) != status.leader)
        .expect("a follower");
    let victim = by_id(&nodes, &status, *victim_id);
    nodes[victim].kill();
    let killed = Instant::now();
    // openraft retries a dead peer every 500 ms and logs each failure;
    // the leader's log gets the first, then a count per interval.
    let peer = format!("peer {victim_id} ");
    let summaries = |log: &str| {
        log.lines()
            .filter(|l| l.contains("more like this") && l.contains(&peer))
            .count()
    };
    let log = wait_for(
        "two summaries of the dead peer's errors",
        Duration::from_secs(60),
        || {
            let log = nodes[leader].log();
            (summaries(&log) >= 2).then_some(log)
        },
    );
    let elapsed = killed.elapsed();
    // A log written to a file carries no colour codes.
    assert!(!log.contains('\x1b'), "ANSI escape codes in a log file");
    let repeated: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("RPCError") && l.contains(&peer) && !l.contains("more like this"))
        .collect();
    let intervals = (elapsed.as_millis() / interval.as_millis()) as usize;
    // Unlimited, it would be two a second: about 4 × intervals.
    assert!(
        !repeated.is_empty() && repeated.len() <= intervals + 2,
        "{} errors logged in {elapsed:?}: {repeated:#?}",
        repeated.len()
    );
    let summary = log
        .lines()
        .find(|l| l.contains("more like this") && l.contains(&peer))
        .unwrap();
    assert!(summary.contains("in the last 2s"), "{summary}");
}

#[test]
fn endpoint_status_asks_every_node_and_names_one_that_does_not_answer() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start_cluster_with(dir.path(), 3, &[]);
    let status = wait_for_members(&nodes, 3);
    let leader = status.leader.expect("a leader");

    let out = nodes[0].cli(&["endpoint", "status"], None);
    assert!(out.status.success(), "{}", text(&out));
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(table.starts_with("ENDPOINT"), "{table}");
    assert_eq!(table.lines().count(), 4, "a row per node: {table}");

    let out = nodes[0].cli(&["-o", "json", "endpoint", "status"], None);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = rows.as_array().expect("an array");
    assert_eq!(rows.len(), 3);
    for row in rows {
        assert_eq!(row["version"], env!("CARGO_PKG_VERSION"), "{row}");
        assert_eq!(row["leader"], leader, "{row}");
        assert!(row["term"].as_u64() >= Some(1), "{row}");
        assert!(row["raft_index"].as_u64() >= Some(1), "{row}");
        assert!(row["data_bytes"].as_u64() > Some(0), "{row}");
        assert!(row["limit"].as_u64() > Some(0), "{row}");
        assert!(row["uptime_ms"].is_u64(), "{row}");
    }

    // A node that does not answer is a row saying so, and the exit code
    // says one is missing.
    let (victim_id, _) = status
        .map
        .nodes
        .iter()
        .find(|(id, _)| **id != leader)
        .expect("a follower");
    let victim = by_id(&nodes, &status, *victim_id);
    nodes[victim].kill();
    let asker = (0..3).find(|i| *i != victim).unwrap();
    let out = nodes[asker].cli(&["endpoint", "status"], None);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    let row = table
        .lines()
        .find(|l| l.starts_with(&nodes[victim].addr))
        .expect("the dead node's row");
    assert!(row.contains("no answer"), "{table}");
}
