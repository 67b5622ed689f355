//! What survives a crash and what a clean shutdown does.

mod common;

use common::{TestNode, http_status, runtime};

#[test]
fn per_write_acknowledged_values_survive_sigkill_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = TestNode::start(dir.path(), &["--durability", "per_write"]);
    let rt = runtime();
    let keys = 400;
    rt.block_on(async {
        let client = std::sync::Arc::new(node.client());
        // Concurrent, so writes share flushes (group commit), but within
        // the node's smallest adaptive limit (32): this test is about
        // durability, not about a burst the node should refuse
        // (tests/admission_overload.rs).
        let in_flight = std::sync::Arc::new(tokio::sync::Semaphore::new(32));
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..keys {
            let client = client.clone();
            let permit = in_flight.clone().acquire_owned().await.unwrap();
            tasks.spawn(async move {
                let result = client
                    .put(format!("k{i}").as_bytes(), format!("v{i}").as_bytes())
                    .await;
                drop(permit);
                result
            });
        }
        while let Some(result) = tasks.join_next().await {
            assert!(result.unwrap().unwrap().applied);
        }
    });
    // Every put above was acknowledged; no flush gets a chance to run.
    node.kill();
    node.restart();
    rt.block_on(async {
        let client = node.client();
        for i in 0..keys {
            let got = client.get(format!("k{i}").as_bytes()).await.unwrap();
            assert_eq!(
                got.map(|v| v.value),
                Some(format!("v{i}").into_bytes()),
                "acknowledged k{i} lost"
            );
        }
    });
}

#[test]
fn sigterm_finishes_in_flight_requests_flushes_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    // Periodic durability with a long interval: only the shutdown flush can
    // make these writes durable.
    let mut node = TestNode::start(
        dir.path(),
        &["--durability", "periodic", "--flush-every-ms", "600000"],
    );
    let rt = runtime();
    rt.block_on(async {
        let client = node.client();
        for i in 0..100 {
            client.put(format!("k{i}").as_bytes(), b"v").await.unwrap();
        }
    });
    let status = node.terminate();
    assert!(status.success(), "exit status {status}");
    assert!(node.log().contains("levee-node stopped"), "{}", node.log());
    assert_eq!(
        http_status(&node.admin, "/health/live"),
        None,
        "admin port closed after exit"
    );
    node.restart();
    rt.block_on(async {
        let client = node.client();
        for i in 0..100 {
            assert!(
                client
                    .get(format!("k{i}").as_bytes())
                    .await
                    .unwrap()
                    .is_some(),
                "k{i} lost on clean shutdown"
            );
        }
    });
}
