//! `levee bench` with `[resources]`: the short leak soak runs end to end
//! on real processes, samples every node every second (a killed or
//! stopped node a gap, not a zero), judges each series and draws it. The
//! 30-minute soak (`leak-soak.toml`) is the same machinery, run by hand
//! (BENCHMARKS.md, "Leak soak").

mod common;

use std::time::Duration;

use common::bench;

const SERIES: [&str; 6] = [
    "rss_bytes",
    "heap_bytes",
    "open_fds",
    "alive_tasks",
    "open_connections",
    "hint_bytes",
];

#[test]
fn short_soak_samples_every_node_each_second_and_judges_each_series() {
    let out = tempfile::tempdir().unwrap();
    // Bounded: 40 s of load plus startup, preload and shutdown.
    bench("leak-soak-short.toml", out.path(), Duration::from_secs(180));

    let text = std::fs::read_to_string(out.path().join("result.json")).expect("result.json");
    let result: serde_json::Value = serde_json::from_str(&text).expect("result.json is JSON");
    let resources = &result["resources"];
    assert_eq!(resources["config"]["warmup_s"], 10);
    let nodes = resources["nodes"].as_array().expect("resources.nodes");
    assert_eq!(nodes.len(), 3, "{resources}");
    let values = |node: usize, series: &str| -> Vec<Option<f64>> {
        let all = nodes[node][series].as_array().expect(series);
        all.iter().map(serde_json::Value::as_f64).collect()
    };
    for series in SERIES {
        for node in 0..3 {
            assert_eq!(values(node, series).len(), 40, "node {} {series}", node + 1);
        }
        // Node 1 is never touched: it answers (nearly) every second.
        let answered = values(0, series).iter().flatten().count();
        assert!(answered >= 36, "node 1 {series}: {answered} of 40");
    }
    let rss = values(0, "rss_bytes");
    assert!(
        rss.iter().flatten().all(|v| *v > 1e6),
        "RSS in bytes: {rss:?}"
    );
    // The node runs on jemalloc: its heap in use is read whenever its RSS
    // is (the same scrape), in bytes.
    let heap = values(0, "heap_bytes");
    assert!(
        heap.iter()
            .zip(&rss)
            .all(|(heap, rss)| heap.is_some() == rss.is_some() && heap.is_none_or(|h| h > 1e5)),
        "heap in use in bytes: {heap:?} {rss:?}"
    );
    // Node 3 was dead from 5 to 10 s, node 2 stopped from 28 to 31 s:
    // gaps, not zeros.
    let dead = values(2, "open_fds");
    assert!(dead[6..9].iter().all(Option::is_none), "{dead:?}");
    assert!(dead[15..].iter().flatten().count() >= 20, "back: {dead:?}");
    // Stopped for the seconds 28–31 (two or three whole seconds of the
    // sampler's, which a loaded machine may shift by one).
    let stopped = values(1, "alive_tasks");
    let gaps = stopped[28..33].iter().filter(|v| v.is_none()).count();
    assert!(gaps >= 2, "{stopped:?}");

    let figures = resources["flatness"].as_array().expect("flatness");
    assert_eq!(figures.len(), 18, "a figure per node and series");
    let figure = |node: u64, series: &str| {
        figures
            .iter()
            .find(|f| f["node"] == node && f["series"] == series)
            .unwrap_or_else(|| panic!("node {node} {series} in {figures:?}"))
    };
    for series in SERIES {
        let f = figure(1, series);
        assert_eq!(f["reference_window"], serde_json::json!([10, 15]), "{f}");
        assert_eq!(f["final_window"], serde_json::json!([35, 40]), "{f}");
        assert!(f["reference"].is_number(), "{f}");
        assert!(f["final_value"].is_number(), "{f}");
    }
    // The restarted node is measured within its new process.
    let from = figure(3, "rss_bytes")["process_from_s"].as_u64();
    assert!(matches!(from, Some(10 | 11)), "node 3 from {from:?}");

    let summary = std::fs::read_to_string(out.path().join("summary.md")).expect("summary.md");
    assert!(summary.contains("## Resources (leak soak)"), "{summary}");
    assert!(
        summary.contains("| node | RSS | heap in use | open fds |"),
        "{summary}"
    );
    assert!(
        summary.contains("worst node's tokio tasks at the end / after warm-up ≤ ×1.10"),
        "{summary}"
    );
    let png = std::fs::metadata(out.path().join("resources.png")).expect("resources.png");
    assert!(png.len() > 0);
}
