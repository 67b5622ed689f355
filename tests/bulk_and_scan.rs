//! Bulk writes and listings through the real binaries: `levee load` and
//! `levee put --from-dir` store what they read (bad lines and oversize
//! files reported by line and path, the exit code 1), and `levee keys` /
//! `levee scan` list exactly the live keys with a prefix, bounded by
//! `--limit`, also with a replica down.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::cluster::start_cluster;
use common::{TestNode, wait_for};

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// stdout's lines as a set.
fn lines(out: &Output) -> BTreeSet<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// `levee keys PREFIX` on `node`, which must succeed.
fn keys(node: &TestNode, prefix: &str) -> BTreeSet<String> {
    let out = node.cli(&["keys", prefix], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    lines(&out)
}

fn logs(range: impl Iterator<Item = u32>) -> BTreeSet<String> {
    range.map(|i| format!("logs/{i}")).collect()
}

fn write_jsonl(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

#[test]
fn loaded_keys_are_listed_by_prefix_and_deleted_ones_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start_cluster(dir.path(), 3);

    let mut jsonl: Vec<String> = (0..25)
        .map(|i| {
            serde_json::json!({"key": format!("logs/{i}"), "value": format!("entry {i}")})
                .to_string()
        })
        .collect();
    // Share a beginning with "logs/" without carrying the prefix.
    jsonl.push(r#"{"key": "logz", "value": "z"}"#.into());
    jsonl.push(r#"{"key": "other/x", "value": "x"}"#.into());
    jsonl.push(r#"{"key": "bin/blob", "value_base64": "AP8="}"#.into());
    let file = dir.path().join("load.jsonl");
    write_jsonl(&file, &jsonl);
    let out = nodes[0].cli(&["load", file.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("written 28 ("), "{}", text(&out));

    let site = dir.path().join("upload");
    std::fs::create_dir_all(site.join("site/css")).unwrap();
    std::fs::write(site.join("site/index.html"), "<html>").unwrap();
    std::fs::write(site.join("site/css/a.css"), "a{}").unwrap();
    let out = nodes[0].cli(&["put", "--from-dir", site.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    assert_eq!(keys(&nodes[0], "logs/"), logs(0..25));
    assert_eq!(
        keys(&nodes[0], "site/"),
        BTreeSet::from(["site/css/a.css".to_string(), "site/index.html".to_string()])
    );
    assert!(keys(&nodes[0], "nothing-here/").is_empty());
    let everything = keys(&nodes[0], "");
    assert_eq!(everything.len(), 30, "{everything:?}");

    // Values, as JSON lines: text as it is, other bytes as base64.
    let out = nodes[0].cli(&["-o", "json", "scan", "logs/1"], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let scanned: BTreeSet<(String, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["key"].as_str().unwrap().into(),
                v["value"].as_str().unwrap().into(),
            )
        })
        .collect();
    let expected: BTreeSet<(String, String)> = [1, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19]
        .into_iter()
        .map(|i| (format!("logs/{i}"), format!("entry {i}")))
        .collect();
    assert_eq!(scanned, expected);
    let out = nodes[0].cli(&["-o", "json", "scan", "bin/"], None);
    let blob: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(blob["value_base64"], "AP8=", "{blob}");
    let out = nodes[0].cli(&["scan", "site/index"], None);
    assert_eq!(
        lines(&out),
        BTreeSet::from(["site/index.html\t<html>".to_string()])
    );

    // --limit bounds the listing and says more may match.
    let out = nodes[0].cli(&["keys", "logs/", "--limit", "5"], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let listed = lines(&out);
    assert_eq!(listed.len(), 5, "{listed:?}");
    assert!(listed.is_subset(&logs(0..25)), "{listed:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("stopped at --limit 5"),
        "{}",
        text(&out)
    );

    assert_eq!(
        nodes[0].cli(&["delete", "logs/3"], None).status.code(),
        Some(0)
    );
    assert_eq!(keys(&nodes[0], "logs/"), logs((0..25).filter(|i| *i != 3)));

    // With a replica gone, each partition's page comes from another.
    nodes[2].kill();
    let listed = wait_for(
        "a full listing with node 3 down",
        Duration::from_secs(60),
        || {
            let out = nodes[0].cli(&["keys", "logs/"], None);
            out.status.success().then(|| lines(&out))
        },
    );
    assert_eq!(listed, logs((0..25).filter(|i| *i != 3)));
}

#[test]
fn inputs_not_stored_are_reported_and_the_exit_code_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_cluster(dir.path(), 1);
    let node = &nodes[0];

    let file = dir.path().join("mixed.jsonl");
    write_jsonl(
        &file,
        &[
            r#"{"key": "good/1", "value": "one"}"#.into(),
            "{this is not json".into(),
            r#"{"key": "good/2", "value": "two"}"#.into(),
            r#"{"key": "good/3"}"#.into(),
        ],
    );
    let out = node.cli(&["load", file.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let shown = text(&out);
    assert!(shown.contains("line 2: not a JSON object"), "{shown}");
    assert!(shown.contains("line 4: has no value"), "{shown}");
    assert!(
        shown.contains("written 2 (") && shown.contains("failed 2"),
        "{shown}"
    );
    let out = node.cli(&["-o", "json", "load", file.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (summary["written"].as_u64(), summary["failed"].as_u64()),
        (Some(2), Some(2)),
        "{summary}"
    );
    assert_eq!(
        keys(node, "good/"),
        BTreeSet::from(["good/1".to_string(), "good/2".to_string()])
    );

    // Standard input, a line at a time.
    let out = node.cli(&["load", "-"], Some(br#"{"key": "piped", "value": "p"}"#));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(node.cli(&["get", "piped"], None).stdout, b"p");

    // Over the 4 MiB value limit: refused by its size, the rest stored.
    let upload = dir.path().join("upload");
    std::fs::create_dir_all(&upload).unwrap();
    std::fs::write(upload.join("big"), vec![7u8; 5_000_000]).unwrap();
    std::fs::write(upload.join("small"), "s").unwrap();
    let out = node.cli(&["put", "--from-dir", upload.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let shown = text(&out);
    assert!(
        shown.contains("big: 5000000 bytes; the limit is 4194304 (max_value_bytes)"),
        "{shown}"
    );
    assert!(
        shown.contains("written 1 (") && shown.contains("failed 1 (1 too large)"),
        "{shown}"
    );
    assert_eq!(node.cli(&["get", "small"], None).stdout, b"s");

    // Usage errors.
    assert_eq!(node.cli(&["put"], None).status.code(), Some(2));
    assert_eq!(
        node.cli(&["keys", "--limit", "0"], None).status.code(),
        Some(2)
    );
    let missing = dir.path().join("missing.jsonl");
    assert_eq!(
        node.cli(&["load", missing.to_str().unwrap()], None)
            .status
            .code(),
        Some(1)
    );
}
