//! Slow input is bounded: connections that never finish their handshake,
//! or finish it and then sit idle, cannot take every connection slot;
//! those ended to make room before they ever made a request are held open
//! a while (the tarpit) rather than closed at once; and a client that
//! never reads its answers is dropped instead of holding its connection
//! for ever. (How
//! much latency the attacks cost a well-behaved client is measured by
//! `benches/slow_input.rs`, not asserted here.)

mod common;

use std::io::{ErrorKind, Write};
use std::time::{Duration, Instant};

use common::raw::RawConn;
use common::{TestNode, metric, runtime, wait_for};
use levee_node::proto::{ClientRequest, Request, RequestFrame, codec};

/// A node whose config file sets `settings` (TOML lines).
fn node_with(dir: &std::path::Path, settings: &str) -> TestNode {
    let file = dir.join("levee.toml");
    std::fs::write(&file, settings).unwrap();
    TestNode::start(dir, &["--config", file.to_str().unwrap()])
}

#[test]
fn silent_connections_cannot_take_every_slot() {
    let dir = tempfile::tempdir().unwrap();
    // Eight slots, and a handshake timeout far longer than the test: on
    // timeouts alone, the silent connections would hold every slot.
    let node = node_with(
        dir.path(),
        "max_connections = 8\nhandshake_timeout_ms = 600000\n",
    );
    // Ten: more than the handshakes allowed at once (a quarter of the
    // slots), fewer than the tarpit holds (twice the slots; past that it
    // closes the one held longest).
    let mut silent: Vec<RawConn> = (0..10).map(|_| RawConn::connect(&node.addr)).collect();

    let rt = runtime();
    let client = node.client();
    rt.block_on(async {
        client.put(b"k", b"v").await.expect("a new client gets in");
        let found = client.get(b"k").await.unwrap().expect("the key");
        assert_eq!(found.value, b"v");
    });
    // The oldest handshakes were ended to make room for newer ones, and
    // held open (for the handshake timeout, ten minutes here), not
    // closed: a crowd that replaces what is closed gets nothing to
    // replace.
    assert!(
        held_total(&node) >= 1.0,
        "ended handshakes went to the tarpit"
    );
    silent[0]
        .tcp()
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(!silent[0].is_closed_by_server(), "held, not closed");
}

/// `levee_held_connections_total` from the node's `/metrics`.
fn held_total(node: &TestNode) -> f64 {
    let page = node.admin_get("/metrics").expect("metrics page");
    metric(&page.body, "levee_held_connections_total").expect("the held-connections counter")
}

#[test]
fn held_connections_are_closed_once_their_hold_is_over() {
    let dir = tempfile::tempdir().unwrap();
    // A short handshake timeout: the hold is as long.
    let node = node_with(
        dir.path(),
        "max_connections = 8\nhandshake_timeout_ms = 1500\n",
    );
    let mut silent: Vec<RawConn> = (0..12).map(|_| RawConn::connect(&node.addr)).collect();
    // Every one of them ends (made room for, or timed out) and is held,
    // then closed.
    for conn in &mut silent {
        conn.tcp()
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        wait_for(
            "a held connection to close",
            Duration::from_secs(60),
            || conn.is_closed_by_server().then_some(()),
        );
    }
    assert!(held_total(&node) >= 12.0, "each went through the tarpit");
    let page = node.admin_get("/metrics").expect("metrics page");
    let gauge = metric(&page.body, "levee_held_connections").expect("the held gauge");
    assert!(gauge <= 12.0);
}

#[test]
fn idle_connections_give_their_slots_to_newcomers() {
    let dir = tempfile::tempdir().unwrap();
    let node = node_with(dir.path(), "max_connections = 8\n");
    // Every slot taken by a connection past its handshake that made a
    // request and then says nothing (a pooled client between bursts):
    // ending handshakes cannot make room.
    let mut idle: Vec<RawConn> = (0..8)
        .map(|_| {
            let mut conn = RawConn::handshaken(&node.addr);
            conn.send_request(&RequestFrame {
                id: 1,
                timeout_ms: 10_000,
                request: Request::Client(ClientRequest::Ping),
            });
            assert!(conn.read_response().result.is_ok());
            conn
        })
        .collect();

    // A new client gets in once they have been idle for IDLE_MIN (a
    // second); until then it is refused, as before.
    // (A new client each time: one refused over and over opens its
    // breaker and would wait out the cool-down instead.)
    let rt = runtime();
    let client = wait_for("a new client to get in", Duration::from_secs(30), || {
        let client = node.client();
        rt.block_on(client.put(b"k", b"v")).ok().map(|_| client)
    });
    let found = rt.block_on(client.get(b"k")).unwrap().expect("the key");
    assert_eq!(found.value, b"v");
    // The ended ones were closed (not held: they had made requests, so
    // their client must learn at once) before their slots went to the
    // client; the others are still open (a short read finds nothing).
    let mut ended = 0;
    for conn in &mut idle {
        conn.tcp()
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        if conn.is_closed_by_server() {
            ended += 1;
        }
    }
    assert!(ended >= 1, "an idle connection was ended for the newcomer");
    assert!(ended < 8, "not every one: only as many as newcomers needed");
}

#[test]
fn idle_connections_that_never_made_a_request_are_held_when_ended() {
    let dir = tempfile::tempdir().unwrap();
    let node = node_with(
        dir.path(),
        "max_connections = 8\nhandshake_timeout_ms = 600000\n",
    );
    let mut idle: Vec<RawConn> = (0..8).map(|_| RawConn::handshaken(&node.addr)).collect();
    let rt = runtime();
    wait_for("a new client to get in", Duration::from_secs(30), || {
        rt.block_on(node.client().put(b"k", b"v")).ok()
    });
    assert!(held_total(&node) >= 1.0, "the ended one went to the tarpit");
    // None of them sees a close: the one ended is held for ten minutes.
    for conn in &mut idle {
        conn.tcp()
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        assert!(!conn.is_closed_by_server());
    }
}

#[test]
fn a_client_that_never_reads_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    // Writes get the frame timeout: one second here.
    let node = node_with(dir.path(), "frame_timeout_ms = 1000\n");
    let rt = runtime();
    let client = node.client();
    rt.block_on(client.put(b"big", &vec![7u8; 64 * 1024]))
        .unwrap();

    // Gets of a 64 KiB value, back to back, as one endless byte stream:
    // written with `write` (never `write_all`, which could stop inside a
    // frame) so the stream stays at frame boundaries whatever happens.
    let mut requests = Vec::new();
    for id in 1..=32 {
        let frame = RequestFrame {
            id,
            timeout_ms: 60_000,
            request: Request::Client(ClientRequest::Get {
                key: b"big".to_vec(),
                epoch: 0,
            }),
        };
        requests.extend(codec::encode(&frame).unwrap());
    }
    let mut conn = RawConn::handshaken(&node.addr);
    conn.tcp()
        .set_write_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let stream = &mut conn;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut at = 0;
    // Until the node drops the connection (a reset or a broken pipe).
    loop {
        assert!(
            Instant::now() < deadline,
            "the node still holds a peer that has read nothing"
        );
        match stream.write(requests.get(at..).unwrap_or_default()) {
            Ok(0) => break,
            Ok(n) => at = (at + n) % requests.len(),
            // The node stopped reading us (backpressure): keep pushing.
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(_) => break,
        }
    }
    // Everyone else is still served.
    rt.block_on(async {
        let found = client.get(b"big").await.unwrap().expect("the key");
        assert_eq!(found.value.len(), 64 * 1024);
    });
}
