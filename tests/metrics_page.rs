//! `/metrics` as a real node serves it: the whole page passes the format
//! and naming lint (`levee_node::metrics::lint`), and the build and
//! process families a dashboard starts from are there with values a
//! running process has.

mod common;

use common::{TestNode, metric, runtime};
use levee_node::metrics::lint::lint;
use levee_node::proto::PROTOCOL_VERSION;

#[test]
fn a_running_node_serves_a_clean_page_with_build_and_process_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &[]);
    // A request answered, so the request families carry a real sample;
    // the client and its runtime kept, so its connection still holds a
    // slot.
    let (rt, client) = (runtime(), node.client());
    rt.block_on(client.put(b"metrics-page", b"v"))
        .expect("a put on a ready node");
    let answer = node.admin_get("/metrics").expect("/metrics answers");
    assert_eq!(answer.status, 200);
    let text = answer.body;

    assert_eq!(lint(&text), Vec::<String>::new(), "{text}");

    let build_info = format!(
        "levee_build_info{{version=\"{}\",protocol=\"{PROTOCOL_VERSION}\"}} 1\n",
        env!("CARGO_PKG_VERSION")
    );
    assert!(
        text.contains(&build_info),
        "{build_info:?} missing:\n{text}"
    );

    let value = |name: &str| metric(&text, name).unwrap_or_else(|| panic!("{name}:\n{text}"));
    assert!(value("process_resident_memory_bytes") > 0.0);
    assert!(value("process_virtual_memory_bytes") >= value("process_resident_memory_bytes"));
    let open_fds = value("process_open_fds");
    assert!(open_fds > 0.0);
    assert!(value("process_max_fds") >= open_fds);
    assert!(value("process_cpu_seconds_total") >= 0.0);
    // Started within the last day by the wall clock: not 0, not ticks.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let started = value("process_start_time_seconds");
    assert!(
        started <= now && started > now - 86_400.0,
        "{started} vs {now}"
    );
    assert!(value("levee_requests_total") >= 1.0);
    // What the leak soak samples (BENCHMARKS.md, "Leak soak"): the
    // runtime has tasks (this very scrape's among them), the client's
    // connection holds its slot, and no hint is held on one node.
    assert!(value("levee_runtime_alive_tasks") >= 1.0);
    assert!(value("levee_open_connections") >= 1.0);
    assert_eq!(value("levee_hints_pending_bytes"), 0.0);
    assert!(value("levee_cert_expiry_timestamp_seconds") > now);
    drop((client, rt));
}
