//! Put, get and delete against one real node, through the CLI and the
//! library.

mod common;

use common::{TestNode, runtime};
use levee_node::storage::Version;

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn cli_put_get_delete_round_trip_with_documented_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &[]);

    let out = node.cli(&["put", "greeting", "hello world"], None);
    assert!(out.status.success(), "{out:?}");
    let out = node.cli(&["get", "greeting"], None);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        out.stdout, b"hello world",
        "get prints the raw bytes, nothing else"
    );

    // Value from stdin, binary included.
    let binary: Vec<u8> = (0..=255u8).collect();
    let out = node.cli(&["put", "bin"], Some(&binary));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(node.cli(&["get", "bin"], None).stdout, binary);

    // Value from a file, read back into a file.
    let src = dir.path().join("in.bin");
    let dst = dir.path().join("out.bin");
    std::fs::write(&src, vec![7u8; 100_000]).unwrap();
    assert!(
        node.cli(&["put", "file", "--file", src.to_str().unwrap()], None)
            .status
            .success()
    );
    let out = node.cli(&["get", "file", "--out", dst.to_str().unwrap()], None);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(std::fs::read(&dst).unwrap(), vec![7u8; 100_000]);

    // JSON shows the version.
    let out = node.cli(&["get", "greeting", "-o", "json"], None);
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json["value"], "hello world");
    assert!(json["version"]["hlc"].as_u64().unwrap() > 0);

    let out = node.cli(&["delete", "greeting", "-o", "json"], None);
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json["applied"], true);
    let out = node.cli(&["get", "greeting"], None);
    assert_eq!(out.status.code(), Some(3), "a missing key exits 3");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));

    let out = node.cli(&["get"], None);
    assert_eq!(out.status.code(), Some(2), "a usage error exits 2");
}

#[test]
fn cli_errors_are_one_line_with_exit_code_1() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &[]);
    let long_key = "k".repeat(2000);
    let out = node.cli(&["put", &long_key, "v"], None);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("key is 2000 bytes; the limit is 1024"),
        "{stderr}"
    );
}

#[test]
fn library_put_get_delete_and_idempotent_retries() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &[]);
    let rt = runtime();
    rt.block_on(async {
        let client = node.client();
        client.ping().await.unwrap();
        assert_eq!(client.get(b"absent").await.unwrap(), None);

        let first = client.put(b"k", b"v1").await.unwrap();
        assert!(first.applied);
        assert_eq!(client.get(b"k").await.unwrap().unwrap().value, b"v1");

        // A retry carries the same version: it changes nothing.
        let retry = client
            .put_version(b"k", b"v1", first.version)
            .await
            .unwrap();
        assert!(!retry.applied);
        assert_eq!(retry.stored, first.version);

        // An older version loses to the stored one.
        let older = Version {
            hlc: first.version.hlc - 1,
            writer: first.version.writer,
        };
        let stale = client.put_version(b"k", b"old", older).await.unwrap();
        assert!(!stale.applied);
        assert_eq!(client.get(b"k").await.unwrap().unwrap().value, b"v1");

        let deleted = client.delete(b"k").await.unwrap();
        assert!(deleted.applied && deleted.version > first.version);
        assert_eq!(client.get(b"k").await.unwrap(), None);
    });
}

#[test]
fn many_requests_share_one_connection_and_each_gets_its_own_answer() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &[]);
    let rt = runtime();
    rt.block_on(async {
        let client = std::sync::Arc::new(node.client());
        let conn = client.connection().await.unwrap();
        // Many at once on one connection, yet within the node's smallest
        // adaptive limit (32), so no request is refused as a burst (that
        // is tests/admission_overload.rs's subject).
        let in_flight = std::sync::Arc::new(tokio::sync::Semaphore::new(32));
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..300u32 {
            let client = client.clone();
            let permit = in_flight.clone().acquire_owned().await.unwrap();
            tasks.spawn(async move {
                let _permit = permit;
                let key = format!("key-{i}");
                // Sizes differ so that requests finish in mixed order.
                let value = vec![(i % 251) as u8; 1 + (i as usize * 997) % 50_000];
                client.put(key.as_bytes(), &value).await.unwrap();
                let read = client.get(key.as_bytes()).await.unwrap().unwrap();
                assert_eq!(
                    read.value, value,
                    "answer for {key} belongs to another request"
                );
            });
        }
        while let Some(result) = tasks.join_next().await {
            result.unwrap();
        }
        let after = client.connection().await.unwrap();
        assert!(
            std::sync::Arc::ptr_eq(&conn, &after),
            "all requests went over one connection"
        );
    });
}

/// A request routed by an older map than the node's is served by the
/// node's own map, and the answer carries the node's epoch so that the
/// client learns the newer map (protocol 5). It used to be refused with
/// `StaleMap` and cost a second attempt each time the map changed.
#[test]
fn a_request_on_an_older_map_is_served_and_the_answer_names_the_newer_epoch() {
    use common::raw::RawConn;
    use levee_node::proto::{AdminCommand, ClientRequest, Request, RequestFrame, Response};

    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &[]);
    let mut conn = RawConn::handshaken(&node.addr);
    let mut ask = |id: u64, request: ClientRequest| {
        conn.send_request(&RequestFrame {
            id,
            timeout_ms: 5000,
            request: Request::Client(request),
        });
        let answer = conn.read_response();
        assert_eq!(answer.id, id);
        answer
    };
    let first = ask(1, ClientRequest::GetMap);
    let Ok(Response::Map(map)) = first.result else {
        panic!("GetMap answered {:?}", first.result)
    };
    let old = map.epoch;
    assert_eq!(first.epoch, old, "the frame carries the map's epoch");
    // Any map change moves the epoch on.
    let set = ask(
        2,
        ClientRequest::Admin(AdminCommand::Set {
            key: "recovery.moves_per_sec".into(),
            value: "3".into(),
        }),
    );
    assert!(matches!(set.result, Ok(Response::Proposed(_))), "{set:?}");
    assert!(set.epoch > old, "{} after {old}", set.epoch);

    let put = ask(
        3,
        ClientRequest::Put {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            version: Version { hlc: 1, writer: 7 },
            epoch: old,
        },
    );
    assert!(
        matches!(put.result, Ok(Response::Written { .. })),
        "{:?}",
        put.result
    );
    assert!(put.epoch > old);
    let get = ask(
        4,
        ClientRequest::Get {
            key: b"k".to_vec(),
            epoch: old,
        },
    );
    let Ok(Response::Get(Some(found))) = get.result else {
        panic!("get answered {:?}", get.result)
    };
    assert_eq!(found.value.as_deref(), Some(&b"v"[..]));
    assert!(get.epoch > old);
}
