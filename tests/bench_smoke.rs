//! `levee bench`: the shipped smoke scenario runs end to end on real
//! processes and its reports have the promised shape.

mod common;

use std::path::Path;
use std::time::Duration;

use common::bench;

/// A file that exists and is not empty.
fn non_empty(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.len() > 0)
}

#[test]
fn smoke_scenario_completes_with_a_fault_event_phases_and_a_plot() {
    let out = tempfile::tempdir().unwrap();
    // Bounded: 15 s of load plus startup, preload and shutdown.
    let output = bench("smoke.toml", out.path(), Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("| before fault |"),
        "phase table printed: {stdout}"
    );

    let text = std::fs::read_to_string(out.path().join("result.json")).expect("result.json");
    let result: serde_json::Value = serde_json::from_str(&text).expect("result.json is JSON");

    assert_eq!(result["scenario"]["name"], "smoke");
    assert!(
        result["machine"]["cpus"].as_u64().unwrap_or(0) > 0,
        "machine described"
    );
    let ok = result["totals"]["ok"].as_u64().unwrap_or(0);
    assert!(ok > 0, "ops completed: {}", result["totals"]);
    let offered = result["totals"]["offered"].as_u64().unwrap_or(0);
    // 200 ops/s for 15 s, open loop: the generator offers the whole schedule.
    assert!(
        (2900..=3100).contains(&offered),
        "offered {offered}, expected ~3000"
    );
    assert!(
        ok * 10 >= offered * 9,
        "at least 90% succeed with one of three nodes down: {}",
        result["totals"]
    );

    let timeline = result["timeline"].as_array().expect("timeline array");
    assert_eq!(timeline.len(), 15, "one row per second");
    for row in timeline {
        for key in [
            "t", "offered", "ok", "goodput", "errors", "p99_ms", "dropped",
        ] {
            assert!(row.get(key).is_some(), "row has {key}: {row}");
        }
    }
    assert!(
        timeline.iter().any(|r| r["cluster"]["nodes"].is_object()),
        "the status sampler recorded node states"
    );

    let events = result["events"].as_array().expect("events array");
    let fault = |action: &str| {
        events
            .iter()
            .find(|e| e["kind"] == "fault" && e["action"] == action)
            .and_then(|e| e["t_s"].as_f64())
    };
    let kill = fault("kill").expect("kill event recorded");
    let restart = fault("restart").expect("restart event recorded");
    assert!((4.5..6.0).contains(&kill), "kill at ~5 s: {kill}");
    assert!(
        (9.5..11.0).contains(&restart),
        "restart at ~10 s: {restart}"
    );

    let phases = result["phases"].as_array().expect("phases array");
    let kinds: Vec<&str> = phases.iter().filter_map(|p| p["kind"].as_str()).collect();
    assert_eq!(kinds, ["before_fault", "during_fault", "after_fault"]);
    assert_eq!(phases[0]["vs_baseline"]["goodput"].as_f64(), Some(1.0));
    assert!(phases[0]["p99_ms"].as_f64().is_some_and(|v| v > 0.0));

    let summary = std::fs::read_to_string(out.path().join("summary.md")).expect("summary.md");
    assert!(summary.contains("| during fault |"), "{summary}");
    assert!(non_empty(&out.path().join("timeline.png")));
    assert!(
        !out.path().join("cluster/node-1").exists(),
        "node data removed after the run"
    );
    assert!(non_empty(&out.path().join("cluster/node-1.log")));
}
