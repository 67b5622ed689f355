//! Bad input gets a clear error, and the node keeps serving everyone else.

mod common;

use common::raw::RawConn;
use common::{TestNode, http_status, runtime};
use levee_node::proto::handshake::{self, Status};
use levee_node::proto::{ClientRequest, Request, RequestFrame, Response, WireError};
use levee_node::storage::Version;

/// A second client, on its own connection, that must keep getting correct
/// answers while the first misbehaves.
fn assert_still_serving(
    node: &TestNode,
    rt: &tokio::runtime::Runtime,
    client: &levee_node::client::Client,
) {
    rt.block_on(async {
        let value = client.get(b"witness").await.unwrap().expect("witness key");
        assert_eq!(value.value, b"still here");
    });
    assert_eq!(http_status(&node.admin, "/health/live"), Some(200));
}

fn setup() -> (
    tempfile::TempDir,
    TestNode,
    tokio::runtime::Runtime,
    levee_node::client::Client,
) {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &[]);
    let rt = runtime();
    let client = node.client();
    rt.block_on(client.put(b"witness", b"still here")).unwrap();
    (dir, node, rt, client)
}

fn pseudo_random_bytes(n: usize, mut seed: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

#[test]
fn random_bytes_instead_of_a_handshake_are_refused() {
    let (_dir, mut node, rt, client) = setup();
    let mut conn = RawConn::connect(&node.addr);
    conn.send(&pseudo_random_bytes(4096, 0x5eed));
    let reply = conn.read_handshake_reply();
    let (magic_ok, _, status) = handshake::parse_reply(reply);
    assert!(magic_ok);
    assert_eq!(status, Some(Status::BadMagic));
    assert!(conn.is_closed_by_server());
    assert_still_serving(&node, &rt, &client);
    assert!(node.is_running());
}

#[test]
fn random_bytes_after_the_handshake_get_an_error_and_a_close() {
    let (_dir, mut node, rt, client) = setup();
    for seed in 1..20u64 {
        let mut conn = RawConn::handshaken(&node.addr);
        let mut garbage = pseudo_random_bytes(2048, seed);
        // Make the announced length fit, so the payload itself is garbage.
        garbage[..4].copy_from_slice(&100u32.to_be_bytes());
        conn.send(&garbage[..104]);
        let response = conn.read_response();
        assert!(
            matches!(response.result, Err(WireError::Malformed { .. })),
            "seed {seed}: {:?}",
            response.result
        );
        // Then the rest of the garbage announces an absurd frame.
        conn.send(&[0xff, 0xff, 0xff, 0xff]);
        let response = conn.read_response();
        assert_eq!(response.id, 0);
        assert!(
            matches!(response.result, Err(WireError::FrameTooLarge { .. })),
            "{:?}",
            response.result
        );
        assert!(conn.is_closed_by_server());
    }
    assert_still_serving(&node, &rt, &client);
    assert!(node.is_running());
}

#[test]
fn a_frame_announcing_2_gib_is_refused_without_reading_it() {
    let (_dir, mut node, rt, client) = setup();
    let mut conn = RawConn::handshaken(&node.addr);
    conn.send(&(2u32 << 30).to_be_bytes());
    let response = conn.read_response();
    assert_eq!(response.id, 0, "a connection-level error");
    match response.result {
        Err(WireError::FrameTooLarge { len, max }) => {
            assert_eq!(len, 2 << 30);
            assert!(max < 8 << 20);
        }
        other => panic!("expected FrameTooLarge, got {other:?}"),
    }
    assert!(
        conn.is_closed_by_server(),
        "the stream cannot be trusted after an unread frame"
    );
    assert_still_serving(&node, &rt, &client);
    assert!(node.is_running());
}

#[test]
fn a_10_kib_key_is_refused_and_the_connection_goes_on() {
    let (_dir, mut node, rt, client) = setup();
    let mut conn = RawConn::handshaken(&node.addr);
    conn.send_request(&RequestFrame {
        id: 41,
        timeout_ms: 5000,
        request: Request::Client(ClientRequest::Put {
            key: vec![b'k'; 10 * 1024],
            value: b"v".to_vec(),
            version: Version { hlc: 1, writer: 1 },
            epoch: 0,
        }),
    });
    let response = conn.read_response();
    assert_eq!(response.id, 41);
    assert_eq!(
        response.result,
        Err(WireError::KeyTooLarge {
            len: 10 * 1024,
            max: 1024
        })
    );
    let message = WireError::KeyTooLarge {
        len: 10 * 1024,
        max: 1024,
    }
    .to_string();
    assert!(
        message.contains("max_key_bytes"),
        "the error names the setting: {message}"
    );

    // Same connection, next request: served.
    conn.send_request(&RequestFrame {
        id: 42,
        timeout_ms: 5000,
        request: Request::Client(ClientRequest::Ping),
    });
    let response = conn.read_response();
    assert_eq!(response.id, 42);
    assert!(matches!(response.result, Ok(Response::Pong { .. })));
    assert_still_serving(&node, &rt, &client);
    assert!(node.is_running());
}

#[test]
fn an_unknown_message_type_and_a_missing_deadline_are_answered_by_id() {
    let (_dir, mut node, rt, client) = setup();
    let mut conn = RawConn::handshaken(&node.addr);
    // id 7, timeout 5, then a message tag no build defines.
    conn.send(&[0, 0, 0, 3, 7, 5, 99]);
    let response = conn.read_response();
    assert_eq!(
        response.id, 7,
        "the id is recovered from a payload that fails to decode"
    );
    assert!(
        matches!(response.result, Err(WireError::Malformed { .. })),
        "{:?}",
        response.result
    );

    conn.send_request(&RequestFrame {
        id: 8,
        timeout_ms: 0,
        request: Request::Client(ClientRequest::Get {
            key: b"witness".to_vec(),
            epoch: 0,
        }),
    });
    let response = conn.read_response();
    assert_eq!(
        (response.id, response.result),
        (8, Err(WireError::MissingDeadline))
    );
    assert_still_serving(&node, &rt, &client);
    assert!(node.is_running());
}

#[test]
fn a_value_over_the_limit_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let limited = TestNode::start(dir.path(), &["--max-value-bytes", "1000"]);
    let client = limited.client();
    let err = rt.block_on(client.put(b"k", &[0u8; 1001])).unwrap_err();
    assert!(
        err.to_string()
            .contains("value is 1001 bytes; the limit is 1000"),
        "{err}"
    );
}
