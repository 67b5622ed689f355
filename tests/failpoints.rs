//! The failpoints that fault-injection tests rely on (node/src/failpoint.rs)
//! fire where they say, in a real node process, for what their argument
//! names and nothing else; so a test that breaks one key on purpose breaks
//! only that key.

mod common;

use std::time::Duration;

use common::{TestNode, runtime};
use levee_node::client::pool::Pool;
use levee_node::client::{Client, ClientConfig};
use levee_node::failpoint;
use levee_node::partition::partition_of;
use levee_node::proto::{NodeRequest, Response};

/// A client that gives up after one short attempt: a request that fails on
/// purpose should not cost the test the default request timeout.
fn impatient(node: &TestNode) -> Client {
    Client::new(ClientConfig {
        endpoints: vec![node.addr.clone()],
        request_timeout: Duration::from_secs(2),
        attempt_timeout: Duration::from_secs(2),
        max_attempts: 1,
        ..common::certs::client_config()
    })
}

#[test]
fn storage_apply_failpoints_fail_their_key_before_or_after_the_write() {
    let dir = tempfile::tempdir().unwrap();
    let failpoints = format!(
        "{}=return(fp-before);{}=return(fp-after)",
        failpoint::STORAGE_APPLY_BEFORE,
        failpoint::STORAGE_APPLY_AFTER
    );
    let node = TestNode::start_with_failpoints(dir.path(), &[], &failpoints);
    runtime().block_on(async {
        let client = impatient(&node);
        client.put(b"fine", b"v").await.expect("an untargeted key");
        let before = client.put(b"fp-before", b"v").await;
        assert!(before.is_err(), "{before:?}");
        assert_eq!(client.get(b"fp-before").await.unwrap(), None, "not stored");
        let after = client.put(b"fp-after", b"v").await;
        assert!(after.is_err(), "{after:?}");
        let stored = client.get(b"fp-after").await.unwrap().expect("stored");
        assert_eq!(stored.value, b"v", "written, then reported failed");
    });
}

#[test]
fn a_group_commit_flush_failpoint_fails_the_writers_of_its_shard_only() {
    let dir = tempfile::tempdir().unwrap();
    // Default layout: 256 partitions in 16 shards, partition p in shard p % 16.
    let shard = |key: &[u8]| partition_of(key, 256) % 16;
    let key = b"fp-flush".as_slice();
    let other = (0..)
        .map(|i| format!("other-{i}").into_bytes())
        .find(|k| shard(k) != shard(key))
        .unwrap();
    let failpoints = format!("{}=return({})", failpoint::GROUP_COMMIT_FLUSH, shard(key));
    let node =
        TestNode::start_with_failpoints(dir.path(), &["--durability", "per_write"], &failpoints);
    runtime().block_on(async {
        let client = impatient(&node);
        client
            .put(&other, b"v")
            .await
            .expect("another shard flushes");
        let failed = client.put(key, b"v").await;
        assert!(failed.is_err(), "{failed:?}");
        client.put(&other, b"v2").await.expect("still");
    });
    assert!(node.log().contains(failpoint::GROUP_COMMIT_FLUSH));
}

#[test]
fn a_handler_panic_failpoint_panics_the_request_of_its_key_only() {
    let dir = tempfile::tempdir().unwrap();
    let failpoints = format!("{}=return(fp-panic)", failpoint::HANDLER_PANIC);
    let mut node = TestNode::start_with_failpoints(dir.path(), &[], &failpoints);
    runtime().block_on(async {
        let client = impatient(&node);
        client.put(b"fine", b"v").await.expect("an untargeted key");
        let panicked = client.put(b"fp-panic", b"v").await;
        assert!(panicked.is_err(), "{panicked:?}");
        client
            .put(b"fine", b"v2")
            .await
            .expect("the node still serves");
    });
    assert!(node.is_running());
    let log = node.log();
    assert!(
        log.contains(&format!("failpoint {} fired", failpoint::HANDLER_PANIC)),
        "{log}"
    );
}

#[test]
fn a_transfer_page_failpoint_refuses_the_pages_of_its_partition() {
    let dir = tempfile::tempdir().unwrap();
    let failpoints = format!("{}=return(7)", failpoint::TRANSFER_PAGE);
    let node = TestNode::start_with_failpoints(dir.path(), &[], &failpoints);
    runtime().block_on(async {
        let peers = Pool::new(
            Duration::from_millis(500),
            64 << 20,
            common::certs::node_transport(),
        );
        let fetch = |partition| NodeRequest::FetchRange {
            partition,
            after: None,
            max_bytes: 4096,
        };
        let timeout = Duration::from_secs(5);
        let served = peers.request(&node.addr, fetch(6), timeout).await;
        assert!(
            matches!(served, Ok(Response::Range { .. })),
            "a one-node cluster holds partition 6: {served:?}"
        );
        let refused = peers.request(&node.addr, fetch(7), timeout).await;
        let message = format!("{:?}", refused.expect_err("partition 7 is broken"));
        assert!(message.contains(failpoint::TRANSFER_PAGE), "{message}");
    });
}
