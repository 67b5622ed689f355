//! The replicated data path with real processes: quorum writes and reads
//! through node loss, catch-up of a returning node, idempotent retries.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::cluster::{start_cluster, start_cluster_with, wait_for_members};
use common::{TestNode, runtime, wait_for};
use levee_node::client::{Client, ClientConfig};

fn client_for(nodes: &[TestNode]) -> Client {
    Client::new(ClientConfig {
        endpoints: nodes.iter().map(|n| n.addr.clone()).collect(),
        ..common::certs::client_config()
    })
}

#[test]
fn a_killed_replica_misses_nothing_once_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start_cluster(dir.path(), 3);
    let view = wait_for_members(&nodes, 3);
    let rt = runtime();
    let client = Arc::new(client_for(&nodes));
    rt.block_on(async {
        for i in 0..100 {
            client
                .put(format!("k{i}").as_bytes(), b"before")
                .await
                .unwrap();
        }
    });

    let victim_id = view.map.node_by_addr(&nodes[2].addr).unwrap().id;
    nodes[2].kill();
    rt.block_on(async {
        for i in 0..100 {
            let key = format!("k{i}");
            client
                .put(key.as_bytes(), format!("during-{i}").as_bytes())
                .await
                .unwrap_or_else(|e| panic!("put {key} with one node down: {e}"));
            let read = client
                .get(key.as_bytes())
                .await
                .unwrap()
                .expect("key present");
            assert_eq!(
                read.value,
                format!("during-{i}").into_bytes(),
                "read-your-write on {key}"
            );
        }
        for i in 100..150 {
            client
                .put(format!("k{i}").as_bytes(), b"new while down")
                .await
                .unwrap();
        }
    });

    nodes[2].restart();
    // Catch-up (hints, then anti-entropy) runs in the background; poll the
    // returning node's own copy until it has every newest value.
    rt.block_on(async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let mut missing = Vec::new();
            for i in 0..150 {
                let key = format!("k{i}");
                let want = if i < 100 {
                    format!("during-{i}").into_bytes()
                } else {
                    b"new while down".to_vec()
                };
                let got = client
                    .get_from(victim_id, key.as_bytes())
                    .await
                    .ok()
                    .flatten()
                    .map(|v| v.value);
                if got.as_deref() != Some(want.as_slice()) {
                    missing.push(key);
                }
            }
            if missing.is_empty() {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "node {victim_id} still lacks {} keys, e.g. {:?}",
                missing.len(),
                &missing[..missing.len().min(5)]
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
}

#[test]
fn retries_of_one_write_leave_one_record_on_every_replica() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_cluster(dir.path(), 3);
    let view = wait_for_members(&nodes, 3);
    let rt = runtime();
    rt.block_on(async {
        // Three clients, each entering through a different node, send the
        // same write (same version) as retries would.
        let clients: Vec<Client> = (0..3)
            .map(|i| {
                Client::new(ClientConfig {
                    endpoints: vec![nodes[i].addr.clone()],
                    ..common::certs::client_config()
                })
            })
            .collect();
        let version = clients[0].next_version();
        let first = clients[0]
            .put_version(b"once", b"value", version)
            .await
            .unwrap();
        assert!(first.applied);
        // The put returned after W = 2 acks; the third replica's copy may
        // still be on its way, and a retry reaching it first would apply
        // there (correctly: it is that replica's first copy). Retries are
        // sent once every replica holds the write.
        for id in view.map.nodes.keys() {
            wait_for_record(&clients[0], *id, version).await;
        }
        for c in &clients {
            let retry = c.put_version(b"once", b"value", version).await.unwrap();
            assert!(!retry.applied, "a retry must not apply again");
            assert_eq!(retry.stored, version);
        }
        let later = clients[1].next_version();
        assert!(later > version);
        for id in view.map.nodes.keys() {
            let held = wait_for_record(&clients[0], *id, version).await;
            assert_eq!(held.value, b"value");
        }
    });
}

async fn wait_for_record(
    client: &Client,
    node: u64,
    version: levee_node::storage::Version,
) -> levee_node::client::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(v)) = client.get_from(node, b"once").await
            && v.version == version
        {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node {node} never got the record"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn a_read_repairs_a_stale_replica() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start_cluster(dir.path(), 3);
    let view = wait_for_members(&nodes, 3);
    let rt = runtime();
    let client = client_for(&nodes);
    let victim = view.map.node_by_addr(&nodes[1].addr).unwrap().id;
    rt.block_on(client.put(b"r", b"old")).unwrap();
    nodes[1].kill();
    rt.block_on(client.put(b"r", b"new")).unwrap();
    nodes[1].restart();
    // Reads through the quorum answer the newest value whichever replicas
    // they ask, and a read that meets the stale one repairs it.
    wait_for(
        "the stale replica to be repaired",
        Duration::from_secs(60),
        || {
            rt.block_on(async {
                assert_eq!(
                    client.get(b"r").await.ok().flatten().map(|v| v.value),
                    Some(b"new".to_vec())
                );
                let held = client.get_from(victim, b"r").await.ok().flatten()?;
                (held.value == b"new").then_some(())
            })
        },
    );
}

#[test]
fn a_write_that_cannot_reach_its_quorum_says_how_many_acked() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start_cluster(dir.path(), 3);
    wait_for_members(&nodes, 3);
    nodes[1].kill();
    nodes[2].kill();
    let rt = runtime();
    let client = Client::new(ClientConfig {
        endpoints: vec![nodes[0].addr.clone()],
        request_timeout: Duration::from_secs(3),
        ..common::certs::client_config()
    });
    let err = rt.block_on(client.put(b"k", b"v")).unwrap_err().to_string();
    assert!(err.contains("quorum not reached: 1 of 2"), "{err}");
}

#[test]
fn anti_entropy_repairs_what_no_hint_carried() {
    let dir = tempfile::tempdir().unwrap();
    // One byte of hints per node: every missed write is dropped, so only
    // anti-entropy can bring the returning node up to date.
    let mut nodes = start_cluster_with(
        dir.path(),
        3,
        &[
            "--hint-max-bytes-per-node",
            "1",
            "--anti-entropy-startup-delay-ms",
            "200",
        ],
    );
    let view = wait_for_members(&nodes, 3);
    let victim = view.map.node_by_addr(&nodes[2].addr).unwrap().id;
    let rt = runtime();
    let client = client_for(&nodes);
    // The victim holds ae0 before it goes down; the delete it misses must
    // reach it as a tombstone.
    rt.block_on(client.put(b"ae0", b"before")).unwrap();
    wait_for("the victim to hold ae0", Duration::from_secs(30), || {
        rt.block_on(client.get_from(victim, b"ae0"))
            .ok()
            .flatten()
            .map(|_| ())
    });
    nodes[2].kill();
    rt.block_on(async {
        for i in 1..200 {
            client
                .put(format!("ae{i}").as_bytes(), b"missed")
                .await
                .unwrap();
        }
        client.delete(b"ae0").await.unwrap();
    });
    nodes[2].restart();
    wait_for(
        "anti-entropy to bring the node up to date",
        Duration::from_secs(60),
        || {
            rt.block_on(async {
                for i in 1..200 {
                    let held = client
                        .get_from(victim, format!("ae{i}").as_bytes())
                        .await
                        .ok()
                        .flatten()?;
                    if held.value != b"missed" {
                        return None;
                    }
                }
                Some(())
            })
        },
    );
    let log = nodes[2].log();
    assert!(
        log.contains("anti-entropy round done"),
        "the node's log shows the round:\n{log}"
    );
    wait_for(
        "the missed delete to reach the victim",
        Duration::from_secs(30),
        || {
            rt.block_on(client.get_from(victim, b"ae0"))
                .ok()
                .and_then(|v| v.is_none().then_some(()))
        },
    );
}

#[test]
fn tombstones_every_replica_holds_are_collected_after_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_cluster_with(
        dir.path(),
        3,
        &[
            "--tombstone-grace-ms",
            "300",
            "--anti-entropy-interval-ms",
            "300",
            "--anti-entropy-startup-delay-ms",
            "100",
        ],
    );
    let view = wait_for_members(&nodes, 3);
    let rt = runtime();
    let client = client_for(&nodes);
    rt.block_on(async {
        client.put(b"gone", b"soon").await.unwrap();
        client.delete(b"gone").await.unwrap();
    });
    // Past the grace period, with every replica holding the tombstone, no
    // replica holds any record for the key (not even a tombstone).
    let ids: Vec<u64> = view.map.nodes.keys().copied().collect();
    wait_for(
        "the tombstone to be collected everywhere",
        Duration::from_secs(60),
        || {
            rt.block_on(async {
                for id in &ids {
                    if client.record_from(*id, b"gone").await.ok()?.is_some() {
                        return None;
                    }
                }
                Some(())
            })
        },
    );
    assert_eq!(rt.block_on(client.get(b"gone")).unwrap(), None);
}

#[test]
fn a_damaged_record_is_counted_and_replaced_from_a_replica() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start_cluster_with(dir.path(), 3, &["--anti-entropy-startup-delay-ms", "200"]);
    // Node 3 writes the key's record damaged once (its value's last byte
    // flipped: disk rot under a valid header).
    let failpoints = format!("{}=1*return(rot)", levee_node::failpoint::STORAGE_DAMAGE);
    nodes[2].set_failpoints(Some(&failpoints));
    nodes[2].restart();
    let view = wait_for_members(&nodes, 3);
    let victim = view.map.node_by_addr(&nodes[2].addr).unwrap().id;
    let rt = runtime();
    let client = client_for(&nodes);
    rt.block_on(client.put(b"rot", b"the value")).unwrap();
    // The write may reach node 3 after the client's quorum did. Once it
    // has, its copy cannot be read (the crc fails: an error, never data)
    // until a replica's copy replaces it, and meeting it is counted.
    wait_for(
        "node 3 to hold its damaged copy",
        Duration::from_secs(30),
        || match rt.block_on(client.get_from(victim, b"rot")) {
            Ok(None) => None,
            Ok(Some(found)) => {
                assert_eq!(found.value, b"the value", "never the damaged bytes");
                Some(())
            }
            Err(_) => Some(()),
        },
    );
    let damaged = || {
        let page = nodes[2].admin_get("/metrics").expect("metrics page");
        common::metric(&page.body, "levee_storage_damaged_records_total").unwrap_or(0.0)
    };
    assert!(damaged() >= 1.0);
    // Clients still read the value (another replica answers), and the
    // copy comes back whole from a replica: by the read's repair or by
    // anti-entropy, whichever comes first.
    wait_for("the damaged copy replaced", Duration::from_secs(60), || {
        let read = rt.block_on(client.get(b"rot")).ok().flatten()?;
        assert_eq!(read.value, b"the value");
        let held = rt
            .block_on(client.get_from(victim, b"rot"))
            .ok()
            .flatten()?;
        (held.value == b"the value").then_some(())
    });
}
