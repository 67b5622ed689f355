//! The query of death, with real processes: a request that panics its
//! handler (injected with the `server-handler-panic` failpoint) is
//! answered `Internal`, logged once, counted, and never takes the node or
//! its connection's other requests down; once it has crashed handlers
//! twice, every node refuses it on arrival with `Quarantined` until an
//! operator clears the quarantine; and the client does not carry it to a
//! third replica. A request that aborts the process (`server-handler-abort`)
//! is struck from the node's last words when it restarts.

mod common;

use std::time::Duration;

use common::cluster::{start_cluster_failing, status};
use common::{TestNode, http_body, metric, runtime, wait_for};
use levee_node::client::{Client, ClientConfig, ClientError, Connection};
use levee_node::failpoint;
use levee_node::proto::{ClientRequest, Request, Response, WireError};
use levee_node::storage::Version;

const TIMEOUT: Duration = Duration::from_secs(5);

fn put(key: &str) -> Request {
    Request::Client(ClientRequest::Put {
        key: key.as_bytes().to_vec(),
        value: b"v".to_vec(),
        version: Version {
            hlc: levee_node::hlc::wall_ms() << 16,
            writer: 1,
        },
        epoch: 0,
    })
}

/// One put sent straight to `node` on a fresh connection, no retries.
async fn put_on(node: &TestNode, key: &str) -> Result<Response, ClientError> {
    let conn = Connection::connect(&node.addr, &node.transport, TIMEOUT, 8 << 20).await?;
    conn.request(put(key), TIMEOUT).await
}

/// A 3-node cluster whose handlers all hit `failpoint` on the key `qod`,
/// and a client over it that has stored a healthy key.
fn cluster_failing_on_qod(
    rt: &tokio::runtime::Runtime,
    dir: &std::path::Path,
    failpoint: &str,
) -> (Vec<TestNode>, Client) {
    let failpoints = format!("{failpoint}=return(qod)");
    let nodes = start_cluster_failing(dir, 3, &[], Some(&failpoints));
    let client = Client::new(ClientConfig {
        endpoints: nodes.iter().map(|n| n.addr.clone()).collect(),
        ..common::certs::client_config()
    });
    rt.block_on(client.put(b"fine", b"v"))
        .expect("a healthy key");
    (nodes, client)
}

/// Waits until every node's map quarantines one shape, then checks that
/// each refuses a put of `key` on arrival.
fn quarantined_everywhere(nodes: &[TestNode], key: &str, within: Duration) {
    let rt = runtime();
    for node in nodes {
        wait_for("the quarantine in every node's map", within, || {
            let map = status(node)?.map;
            (map.quarantine.active(levee_node::hlc::wall_ms()).count() == 1).then_some(())
        });
        let refused = rt.block_on(put_on(node, key));
        assert!(
            matches!(
                refused,
                Err(ClientError::Server(WireError::Quarantined { .. }))
            ),
            "{refused:?}"
        );
    }
}

fn panics_counted(node: &TestNode) -> f64 {
    let text = http_body(&node.admin, "/metrics").unwrap_or_default();
    metric(&text, "levee_request_panics_total").unwrap_or(0.0)
}

#[test]
fn a_handler_panic_is_answered_internal_and_the_connection_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let failpoints = format!("{}=return(qod)", failpoint::HANDLER_PANIC);
    let mut node = TestNode::start_with_failpoints(dir.path(), &[], &failpoints);
    runtime().block_on(async {
        let conn = Connection::connect(&node.addr, &node.transport, TIMEOUT, 8 << 20)
            .await
            .unwrap();
        // The poisoned request and healthy ones share the connection, in
        // flight together.
        let (a, bad, b) = tokio::join!(
            conn.request(put("fine-a"), TIMEOUT),
            conn.request(put("qod"), TIMEOUT),
            conn.request(put("fine-b"), TIMEOUT),
        );
        assert!(matches!(a, Ok(Response::Written { .. })), "{a:?}");
        assert!(matches!(b, Ok(Response::Written { .. })), "{b:?}");
        let Err(ClientError::Server(WireError::Internal { incident })) = bad else {
            panic!("the panicking request gets Internal: {bad:?}");
        };
        assert_eq!(incident.len(), 8, "a short id: {incident}");
        // The same connection still serves.
        let after = conn.request(put("fine-c"), TIMEOUT).await;
        assert!(matches!(after, Ok(Response::Written { .. })), "{after:?}");
        // Logged once, with the incident id and the shape, not by the
        // default panic hook as well.
        let log = node.log();
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(&incident)).collect();
        assert_eq!(lines.len(), 1, "{log}");
        assert!(lines[0].contains("put/"), "{}", lines[0]);
        assert!(lines[0].contains("failpoint server-handler-panic fired"));
        assert!(!log.contains("panicked at"), "{log}");
    });
    assert_eq!(panics_counted(&node), 1.0);
    let text = http_body(&node.admin, "/metrics").unwrap();
    assert!(text.contains("levee_request_panics_total{op=\"put\"} 1"));
    assert!(node.is_running());
}

#[test]
fn a_request_that_crashed_two_handlers_is_quarantined_on_every_node_until_cleared() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let (mut nodes, client) = cluster_failing_on_qod(&rt, dir.path(), failpoint::HANDLER_PANIC);
    let before = client.attempts();
    let error = rt.block_on(client.put(b"qod", b"v")).unwrap_err();
    // The client tried two replicas, saw both crash, and stopped.
    assert_eq!(client.attempts() - before, 2, "{error}");
    assert!(
        matches!(&error, ClientError::QueryOfDeath { .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("not tried on a third"),
        "{error}"
    );

    // Both strikes reach the map on every node; every node then refuses
    // the shape on arrival, before any work.
    quarantined_everywhere(&nodes, "qod", TIMEOUT * 6);
    let panics: f64 = nodes.iter().map(panics_counted).sum();
    assert_eq!(panics, 2.0, "no third crash anywhere");
    rt.block_on(client.put(b"fine", b"v2"))
        .expect("other keys unaffected");
    for node in &nodes {
        wait_for("the quarantine gauge", TIMEOUT * 2, || {
            let text = http_body(&node.admin, "/metrics")?;
            (metric(&text, "levee_quarantined_shapes") == Some(1.0)).then_some(())
        });
    }
    let text = http_body(&nodes[0].admin, "/metrics").unwrap();
    assert!(metric(&text, "levee_quarantine_refused_requests_total").unwrap() >= 1.0);

    // An operator sees it, and why the cluster is not healthy.
    let status = nodes[0].cli(&["status"], None);
    let shown = String::from_utf8_lossy(&status.stdout);
    assert!(shown.contains("quarantined: put/"), "{shown}");
    assert!(
        shown.contains("QUARANTINE: 1 request shape quarantined"),
        "{shown}"
    );
    let json = nodes[0].cli(&["-o", "json", "status"], None);
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(
        json["quarantine"].as_array().map(Vec::len),
        Some(1),
        "{json}"
    );
    assert_eq!(json["quarantine"][0]["op"], "put");

    // Cleared, the request runs again (and crashes again: the bug is
    // still there, which is how the test can see it ran).
    let cleared = nodes[0].cli(&["admin", "quarantine", "clear"], None);
    assert!(cleared.status.success(), "{cleared:?}");
    wait_for("the quarantine lifted", TIMEOUT * 6, || {
        let answer = rt.block_on(put_on(&nodes[1], "qod"));
        matches!(answer, Err(ClientError::Server(WireError::Internal { .. }))).then_some(())
    });
    for node in &mut nodes {
        assert!(node.is_running(), "no node went down");
    }
}

#[test]
fn a_request_that_aborted_two_nodes_is_struck_from_their_last_words_and_quarantined() {
    let dir = tempfile::tempdir().unwrap();
    // An abort no handler can catch (a stack overflow, a panic while
    // panicking): the process dies, and only its last words are left.
    let rt = runtime();
    let (mut nodes, client) = cluster_failing_on_qod(&rt, dir.path(), failpoint::HANDLER_ABORT);
    let error = rt.block_on(client.put(b"qod", b"v")).unwrap_err();
    assert!(
        matches!(&error, ClientError::QueryOfDeath { .. }),
        "two connections closed under the request: {error:?}"
    );
    // Two nodes died of it; the client spared the third.
    let dead = wait_for("the two aborted nodes to exit", TIMEOUT * 6, || {
        let dead: Vec<usize> = (0..nodes.len())
            .filter(|&i| !nodes[i].is_running())
            .collect();
        (dead.len() == 2).then_some(dead)
    });
    for &i in &dead {
        nodes[i].restart();
        let log = nodes[i].log();
        assert!(
            log.contains("aborted while handling a request of this shape"),
            "{log}"
        );
    }
    // Their last words became two strikes: the shape is quarantined on
    // every node, the one that never ran it included.
    quarantined_everywhere(&nodes, "qod", TIMEOUT * 12);
    for node in &mut nodes {
        assert!(node.is_running(), "no third crash");
    }
}
